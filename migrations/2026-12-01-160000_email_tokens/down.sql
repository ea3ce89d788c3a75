ALTER TABLE executions DROP COLUMN internal;
ALTER TABLE users DROP COLUMN pending_email;
ALTER TABLE users DROP COLUMN email_verified_at;
DROP TABLE email_requests;
DROP TABLE email_tokens;
