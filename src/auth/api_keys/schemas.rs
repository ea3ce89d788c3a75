//! Request and response bodies of `/api/v1/auth/api-keys`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::ArrayBuilder;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{IntoParams, PartialSchema, ToSchema};
use uuid::Uuid;

use super::models::{ApiKeyRow, Scope};
use super::secret;
use crate::core::config::REDACTED;
use crate::shared::pagination::Cursor;
use crate::shared::validation::label_schema;

/// Longest key name, in characters.
pub const MAX_KEY_NAME_CHARS: usize = 100;

/// Longest lifetime a key may be given, in days (ten years).
pub const MAX_EXPIRES_IN_DAYS: u32 = 3650;

/// What a key is called, as its owner sees it in lists.
pub struct KeyName;

impl PartialSchema for KeyName {
    fn schema() -> RefOr<Schema> {
        label_schema(
            MAX_KEY_NAME_CHARS,
            "What the key is for: 1 to 100 characters, no control characters, not only \
             whitespace (surrounding whitespace is dropped).",
            "nightly embedding pipeline",
        )
    }
}

impl ToSchema for KeyName {}

/// The scopes a key is created with, as the document states them: one to
/// three, none twice.
pub struct ScopeList;

impl PartialSchema for ScopeList {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(Scope::schema())
            .min_items(Some(1))
            .max_items(Some(3))
            .unique_items(true)
            .into()
    }
}

impl ToSchema for ScopeList {}

/// A key to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// What the key is for.
    #[schema(value_type = KeyName)]
    pub name: String,
    /// What the key may reach: one to three distinct scopes.
    #[schema(value_type = ScopeList)]
    pub scopes: Vec<Scope>,
    /// Days until the key stops working (1 to 3650); omit it or send `null`
    /// for a key that works until revoked.
    #[schema(minimum = 1, maximum = 3650)]
    pub expires_in_days: Option<u32>,
    /// The caller's password (at most 1024 characters): a stolen access token
    /// alone must not mint a credential that outlives its sign-in.
    #[schema(format = Password, max_length = 1024)]
    pub current_password: String,
}

impl std::fmt::Debug for CreateApiKeyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateApiKeyRequest")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("expires_in_days", &self.expires_in_days)
            .field("current_password", &REDACTED)
            .finish()
    }
}

/// An API key as lists show it: everything but the secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyResponse {
    /// Its id.
    pub id: Uuid,
    /// Whose it is.
    pub user_id: Uuid,
    /// What its owner calls it.
    pub name: String,
    /// The start of the key, `tsk_<id>`, which is not secret: how to tell
    /// which key a program holds.
    pub prefix: String,
    /// What it may reach.
    pub scopes: Vec<Scope>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops working; `null` for never.
    pub expires_at: Option<DateTime<Utc>>,
    /// Roughly when it was last used (to the minute); `null` if never.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<ApiKeyRow> for ApiKeyResponse {
    fn from(row: ApiKeyRow) -> Self {
        Self {
            prefix: secret::display_prefix(row.id),
            id: row.id,
            user_id: row.user_id,
            name: row.name,
            scopes: row.scopes,
            created_at: row.created_at,
            expires_at: row.expires_at,
            last_used_at: row.last_used_at,
        }
    }
}

/// A key just created, with its secret: shown this once and never again.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    /// The key, as it lists.
    #[serde(flatten)]
    pub key: ApiKeyResponse,
    /// The whole key (`tsk_…`), for `Authorization: Bearer …`. Store it now:
    /// only a hash is kept, so nobody can show it again.
    pub secret: String,
}

impl std::fmt::Debug for CreatedApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedApiKey")
            .field("key", &self.key)
            .field("secret", &REDACTED)
            .finish()
    }
}

/// Which keys to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ApiKeyListQuery {
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(inline, value_type = Option<Cursor>)]
    pub cursor: Option<String>,
    /// Whose keys (admins only; default: the caller's own).
    pub user_id: Option<Uuid>,
}
