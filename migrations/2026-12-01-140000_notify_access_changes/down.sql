DROP TRIGGER refresh_tokens_revoked ON refresh_tokens;
DROP FUNCTION notify_session_ended();
DROP TRIGGER users_deleted ON users;
DROP TRIGGER users_access_changed ON users;
DROP FUNCTION notify_user_access_changed();
