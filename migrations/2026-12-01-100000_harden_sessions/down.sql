DROP INDEX login_failures_time;
ALTER TABLE login_failures DROP CONSTRAINT login_failures_key_length;
DROP INDEX refresh_tokens_expires;
ALTER TABLE refresh_tokens DROP COLUMN session_expires_at;
ALTER TABLE refresh_tokens DROP COLUMN token_version;
