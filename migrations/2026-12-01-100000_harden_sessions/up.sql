-- Sessions that revocation and an absolute lifetime can end, and sign-in
-- attempts that are reserved before the password is checked.

-- The account's token version when the token was issued: logout-all, a password
-- change and deactivation bump the account's version, so every older refresh
-- token dies with them, whatever refresh raced the change.
ALTER TABLE refresh_tokens ADD COLUMN token_version bigint NOT NULL DEFAULT 0;
-- When the sign-in the token descends from ends, however often it rotates.
ALTER TABLE refresh_tokens ADD COLUMN session_expires_at timestamptz;
UPDATE refresh_tokens SET session_expires_at = expires_at;
ALTER TABLE refresh_tokens ALTER COLUMN session_expires_at SET NOT NULL;
-- Pruning expired tokens.
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);

-- Keys are built by the service from bounded parts; the check keeps any key
-- well inside btree's entry limit.
ALTER TABLE login_failures ADD CONSTRAINT login_failures_key_length CHECK (octet_length(key) <= 512);
-- Pruning old attempts.
CREATE INDEX login_failures_time ON login_failures (failed_at);
