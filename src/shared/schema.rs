//! The diesel table definitions, one per table the migrations create.
//!
//! Kept in the shared kernel because diesel needs every table in one place to
//! check joins; each table still belongs to one domain, named on it, and only
//! that domain's repository queries it.

diesel::table! {
    /// Accounts (users domain).
    users (id) {
        id -> Uuid,
        email -> Text,
        full_name -> Text,
        role -> Text,
        is_active -> Bool,
        revision -> Int8,
        token_version -> Int8,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        email_verified_at -> Nullable<Timestamptz>,
        pending_email -> Nullable<Text>,
    }
}

diesel::table! {
    /// Password hashes (auth domain).
    credentials (user_id) {
        user_id -> Uuid,
        password_hash -> Text,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    /// Hashed refresh tokens (auth domain).
    refresh_tokens (id) {
        id -> Uuid,
        family_id -> Uuid,
        user_id -> Uuid,
        token_hash -> Bytea,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
        token_version -> Int8,
        session_expires_at -> Timestamptz,
    }
}

diesel::table! {
    /// API keys, their secrets hashed (auth domain).
    api_keys (id) {
        id -> Uuid,
        user_id -> Uuid,
        name -> Text,
        secret_hash -> Bytea,
        scopes -> Array<Text>,
        created_at -> Timestamptz,
        expires_at -> Nullable<Timestamptz>,
        last_used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    /// Failed logins by key (auth domain).
    login_failures (id) {
        id -> Int8,
        key -> Text,
        failed_at -> Timestamptz,
    }
}

diesel::table! {
    /// Background executions (executions domain).
    executions (id) {
        id -> Uuid,
        owner_id -> Uuid,
        kind -> Text,
        queue -> Text,
        name -> Text,
        input -> Jsonb,
        status -> Text,
        priority -> Int2,
        run_at -> Timestamptz,
        attempt -> Int4,
        max_attempts -> Int4,
        timeout_s -> Nullable<Int4>,
        progress -> Int2,
        progress_message -> Nullable<Text>,
        result -> Nullable<Jsonb>,
        errors -> Jsonb,
        worker_id -> Nullable<Uuid>,
        lease_expires_at -> Nullable<Timestamptz>,
        cancel_requested -> Bool,
        idempotency_key -> Nullable<Text>,
        request_hash -> Nullable<Bytea>,
        created_at -> Timestamptz,
        started_at -> Nullable<Timestamptz>,
        finished_at -> Nullable<Timestamptz>,
        updated_at -> Timestamptz,
        reruns -> Int4,
        claim_token -> Nullable<Uuid>,
        internal -> Bool,
    }
}

diesel::table! {
    /// Metered work spent against the daily allowances (executions domain).
    execution_usage (id) {
        id -> Int8,
        owner_id -> Uuid,
        kind -> Text,
        units -> Int8,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    /// The status and progress history of executions (executions domain).
    execution_events (id) {
        id -> Int8,
        execution_id -> Uuid,
        event -> Text,
        data -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    /// The vectors of `embed_texts` executions, one row per text (inference domain).
    inference_embeddings (execution_id, position) {
        execution_id -> Uuid,
        position -> Int4,
        tokens -> Int4,
        embedding -> Array<Float4>,
    }
}

diesel::table! {
    /// Hashed single-use tokens mailed to an address (auth domain).
    email_tokens (id) {
        id -> Uuid,
        user_id -> Uuid,
        purpose -> Text,
        token_hash -> Bytea,
        email -> Text,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    /// Requests for an email, by rate-limit key (auth domain).
    email_requests (id) {
        id -> Int8,
        key -> Text,
        requested_at -> Timestamptz,
    }
}
