-- Announce every change to a user's row, not only the ones that end access:
-- the access check remembers the account it read (src/auth/access_cache.rs)
-- and hands it to the request, so a new name, email or verification must
-- reach every process as soon as a revocation does.

DROP TRIGGER users_access_changed ON users;

CREATE TRIGGER users_changed
    AFTER UPDATE ON users
    FOR EACH ROW
    WHEN (OLD IS DISTINCT FROM NEW)
    EXECUTE FUNCTION notify_user_access_changed();
