//! The `api_keys` rows and the scopes a key can hold.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::{Insertable, Queryable, Selectable};
use uuid::Uuid;

use crate::shared::schema::api_keys;

crate::text_enum! {
    /// What an API key may reach. A key never reaches account or credential
    /// management, whatever its scopes: those need a signed-in person.
    pub enum Scope {
        /// Embeddings, similarity, tokenization, the model list and the
        /// vectors of one's `embed_texts` executions.
        Inference => "inference",
        /// Listing, reading and following one's executions.
        ExecutionsRead => "executions:read",
        /// Submitting, cancelling, retrying and deleting one's executions.
        ExecutionsWrite => "executions:write",
    }
}

/// A stored key (its secret only as a hash).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_keys, check_for_backend(Pg))]
pub struct ApiKeyRow {
    /// Its id (UUIDv7), embedded in the key.
    pub id: Uuid,
    /// Whose.
    pub user_id: Uuid,
    /// What its owner calls it.
    pub name: String,
    /// SHA-256 of the secret part.
    pub secret_hash: Vec<u8>,
    /// What it may reach.
    pub scopes: Vec<Scope>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops working; `None` for never.
    pub expires_at: Option<DateTime<Utc>>,
    /// Roughly when it was last used (recorded at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A key to store.
#[derive(Debug, Insertable)]
#[diesel(table_name = api_keys)]
pub struct NewApiKey {
    /// Its id, embedded in the key.
    pub id: Uuid,
    /// Whose.
    pub user_id: Uuid,
    /// What its owner calls it.
    pub name: String,
    /// SHA-256 of the secret part.
    pub secret_hash: Vec<u8>,
    /// What it may reach.
    pub scopes: Vec<Scope>,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
}
