-- Email flows (auth domain): single-use tokens mailed to an address, the log
-- that rate-limits asking for them, and executions the service enqueues
-- itself (send_email), which only admins see.

-- Tokens are stored only as SHA-256 hashes of 256 random bits. `email` is the
-- address the token was mailed to (for a verification, the one it verifies).
CREATE TABLE email_tokens (
    id         uuid        PRIMARY KEY,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    text        NOT NULL CHECK (purpose IN ('password_reset', 'verify_email')),
    token_hash bytea       NOT NULL UNIQUE,
    email      text        NOT NULL CHECK (octet_length(email) <= 1024),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
-- Superseding a user's older tokens of a purpose.
CREATE INDEX email_tokens_user ON email_tokens (user_id, purpose);
-- Pruning expired tokens.
CREATE INDEX email_tokens_expires ON email_tokens (expires_at);

-- Requests for an email, by key (`reset:address:<SHA-256 of the address>`,
-- `reset:client:<address>`), shared by every replica so the limits hold
-- across them. Keys are built by the service from bounded parts.
CREATE TABLE email_requests (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key          text        NOT NULL CHECK (octet_length(key) <= 512),
    requested_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX email_requests_key ON email_requests (key, requested_at);
CREATE INDEX email_requests_time ON email_requests (requested_at);

-- When the account's address was last proven (a verification link, or a
-- reset link, used); NULL: never. An email change waits in pending_email
-- until a link mailed to the new address is used.
ALTER TABLE users ADD COLUMN email_verified_at timestamptz;
ALTER TABLE users ADD COLUMN pending_email text CHECK (octet_length(pending_email) <= 1024);

-- Work the service enqueues itself (an internal kind, e.g. send_email): its
-- owner neither sees it nor has it counted against their quotas.
ALTER TABLE executions ADD COLUMN internal boolean NOT NULL DEFAULT false;
