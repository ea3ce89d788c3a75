-- Accounts. Emails are unique case-insensitively and stored as given.
CREATE TABLE users (
    id            uuid        PRIMARY KEY,
    email         text        NOT NULL,
    full_name     text        NOT NULL,
    role          text        NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    is_active     boolean     NOT NULL DEFAULT true,
    -- Bumped on every change: the ETag, and the guard against lost updates.
    revision      bigint      NOT NULL DEFAULT 1,
    -- Bumped when every outstanding access token must stop working at once
    -- (password change, logout everywhere).
    token_version bigint      NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
-- Admin listing filters by email prefix, case-insensitively.
CREATE INDEX users_email_lower_prefix ON users (lower(email) text_pattern_ops);

CREATE TRIGGER users_touch_updated_at
    BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION tessera_touch_updated_at();
