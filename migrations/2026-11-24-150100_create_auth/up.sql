-- Credentials, refresh tokens and failed-login counters (the auth domain).

CREATE TABLE credentials (
    user_id       uuid        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    password_hash text        NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Refresh tokens are stored only as SHA-256 hashes. Every token descended from
-- one login shares a family; reusing a rotated token revokes the family.
CREATE TABLE refresh_tokens (
    id         uuid        PRIMARY KEY,
    family_id  uuid        NOT NULL,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash bytea       NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

-- Failed logins by key (`account:<email>` or `client:<address>`), shared by every
-- replica so the brute-force limit holds across them.
CREATE TABLE login_failures (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key       text        NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_key_time ON login_failures (key, failed_at);
