-- API keys: long-lived credentials for programs (auth domain). Only a SHA-256
-- of the secret is stored; the key's id, embedded in the key itself, finds the
-- row. A revoked key is deleted.
CREATE TABLE api_keys (
    id           uuid        PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    secret_hash  bytea       NOT NULL CHECK (octet_length(secret_hash) = 32),
    scopes       text[]      NOT NULL CHECK (
        cardinality(scopes) >= 1
        AND scopes <@ ARRAY['inference', 'executions:read', 'executions:write']::text[]
    ),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz
);
-- A user's keys, newest first (listing, counting against the cap).
CREATE INDEX api_keys_user ON api_keys (user_id, id);
-- Pruning expired keys.
CREATE INDEX api_keys_expires ON api_keys (expires_at) WHERE expires_at IS NOT NULL;

-- A deactivated account's keys die with it, whichever code path deactivated
-- it: a reactivation must not bring old keys back.
CREATE FUNCTION revoke_api_keys_of_deactivated_user() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM api_keys WHERE user_id = NEW.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER users_deactivated_revoke_api_keys
    AFTER UPDATE OF is_active ON users
    FOR EACH ROW
    WHEN (OLD.is_active AND NOT NEW.is_active)
    EXECUTE FUNCTION revoke_api_keys_of_deactivated_user();

-- A revoked (deleted) key ends the event streams it opened at once, like an
-- ended sign-in (see notify_access_changes).
CREATE FUNCTION notify_api_key_revoked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tessera_access_changes', OLD.user_id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_revoked
    AFTER DELETE ON api_keys
    FOR EACH ROW
    EXECUTE FUNCTION notify_api_key_revoked();
