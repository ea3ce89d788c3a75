DROP TRIGGER users_changed ON users;

CREATE TRIGGER users_access_changed
    AFTER UPDATE OF token_version, is_active, role ON users
    FOR EACH ROW
    WHEN (OLD.token_version IS DISTINCT FROM NEW.token_version
          OR OLD.is_active IS DISTINCT FROM NEW.is_active
          OR OLD.role IS DISTINCT FROM NEW.role)
    EXECUTE FUNCTION notify_user_access_changed();
