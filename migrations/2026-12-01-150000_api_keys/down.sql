DROP TRIGGER api_keys_revoked ON api_keys;
DROP FUNCTION notify_api_key_revoked();
DROP TRIGGER users_deactivated_revoke_api_keys ON users;
DROP FUNCTION revoke_api_keys_of_deactivated_user();
DROP TABLE api_keys;
