//! Rows of the auth domain's tables: credentials and refresh tokens.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::{Insertable, Queryable, Selectable};
use uuid::Uuid;

use crate::shared::schema::{credentials, refresh_tokens};

/// A user's password hash.
#[derive(Debug, Insertable)]
#[diesel(table_name = credentials)]
pub struct NewCredentials {
    /// Whose.
    pub user_id: Uuid,
    /// argon2id PHC string.
    pub password_hash: String,
}

/// A stored refresh token (only its hash).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = refresh_tokens, check_for_backend(Pg))]
pub struct RefreshTokenRow {
    /// Its id.
    pub id: Uuid,
    /// The login it descends from.
    pub family_id: Uuid,
    /// Whose.
    pub user_id: Uuid,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// When it was exchanged for a new pair (it is single-use).
    pub used_at: Option<DateTime<Utc>>,
    /// When its family was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The account's token version at issue; a bump since kills the token.
    pub token_version: i64,
    /// When its sign-in ends, however often it rotates.
    pub session_expires_at: DateTime<Utc>,
}

/// A refresh token to store.
#[derive(Debug, Insertable)]
#[diesel(table_name = refresh_tokens)]
pub struct NewRefreshToken {
    /// Its id.
    pub id: Uuid,
    /// The login it descends from.
    pub family_id: Uuid,
    /// Whose.
    pub user_id: Uuid,
    /// SHA-256 of the token.
    pub token_hash: Vec<u8>,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// The account's token version at issue.
    pub token_version: i64,
    /// When its sign-in ends (copied on rotation).
    pub session_expires_at: DateTime<Utc>,
}
