ALTER TABLE executions DROP COLUMN internal;
DROP TABLE email_requests;
DROP TABLE email_tokens;
