-- Announce, with the user's id, every change that can end a user's access:
-- their token version (logout-all, password change), their active flag, their
-- role, their deletion, and the end of one of their sign-ins. Open event
-- streams listen on this channel and re-check their caller at once, whichever
-- code path made the change. Notifications go out when the transaction
-- commits; identical ones in one transaction are delivered once.

CREATE FUNCTION notify_user_access_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tessera_access_changes', OLD.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER users_access_changed
    AFTER UPDATE OF token_version, is_active, role ON users
    FOR EACH ROW
    WHEN (OLD.token_version IS DISTINCT FROM NEW.token_version
          OR OLD.is_active IS DISTINCT FROM NEW.is_active
          OR OLD.role IS DISTINCT FROM NEW.role)
    EXECUTE FUNCTION notify_user_access_changed();

CREATE TRIGGER users_deleted
    AFTER DELETE ON users
    FOR EACH ROW
    EXECUTE FUNCTION notify_user_access_changed();

CREATE FUNCTION notify_session_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tessera_access_changes', NEW.user_id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER refresh_tokens_revoked
    AFTER UPDATE OF revoked_at ON refresh_tokens
    FOR EACH ROW
    WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION notify_session_ended();
