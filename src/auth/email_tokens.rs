//! Tokens mailed to an address, and the log that rate-limits asking for them
//! (the `email_tokens` and `email_requests` queries; nothing else touches
//! those tables).
//!
//! A token is 256 random bits, sent as 43 characters of unpadded base64url
//! and stored only as its SHA-256, so a copy of the database holds no link
//! that works. Each is single-use, expires, and is superseded by a newer one
//! of the same purpose for the same account.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use diesel::dsl::count_star;
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::core::db::DbPool;
use crate::shared::error::{AppError, FieldError};
use crate::shared::schema::{email_requests, email_tokens};
use crate::shared::validation::Validator;

/// The length of a token as sent: 32 bytes of unpadded base64url.
pub const TOKEN_CHARS: usize = 43;

/// The pattern a token matches (the document states it too).
pub const TOKEN_PATTERN: &str = "^[A-Za-z0-9_-]{43}$";

/// The longest window requests for mail may be counted in: what the pruner
/// keeps of the request log.
pub const MAX_REQUEST_WINDOW: Duration = Duration::from_secs(86_400);

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Set a new password.
    PasswordReset,
    /// Prove the address it was mailed to (the account's, or the one it is changing to).
    VerifyEmail,
}

impl Purpose {
    /// Its name in `email_tokens.purpose`.
    fn as_str(self) -> &'static str {
        match self {
            Self::PasswordReset => "password_reset",
            Self::VerifyEmail => "verify_email",
        }
    }
}

/// A new token: the value to mail and the hash to store.
pub struct IssuedToken {
    /// What the link carries.
    pub value: String,
    /// What the database keeps.
    pub hash: Vec<u8>,
}

impl IssuedToken {
    /// 256 bits from the operating system's random source.
    pub fn generate() -> Result<Self, AppError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(AppError::internal)?;
        let value = URL_SAFE_NO_PAD.encode(bytes);
        let hash = hash(&value);
        Ok(Self { value, hash })
    }
}

/// The stored form of a token.
pub fn hash(value: &str) -> Vec<u8> {
    Sha256::digest(value.as_bytes()).to_vec()
}

/// Whether `value` has a token's shape (the length and alphabet of [`TOKEN_PATTERN`]).
pub fn is_well_formed(value: &str) -> bool {
    value.len() == TOKEN_CHARS
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// Records at `body.token` why a presented token is malformed, if it is: a
/// 422 names the shape, before any lookup.
pub fn check_shape(validator: &mut Validator, token: &str) {
    if !is_well_formed(token) {
        validator.push(
            FieldError::body("token")
                .because(format!("must match {TOKEN_PATTERN}"))
                .kind("pattern"),
        );
    }
}

/// A token that can still be used.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = email_tokens, check_for_backend(diesel::pg::Pg))]
pub struct UsableToken {
    /// Its id.
    pub id: Uuid,
    /// The account it acts on.
    pub user_id: Uuid,
    /// The address it was mailed to.
    pub email: String,
}

/// Stores a token for `user_id`, mailed to `email`, usable until `expires_at`,
/// and deletes the account's unused older ones of the same purpose (a newer
/// request supersedes them). Run it in the transaction that mails the token.
pub async fn issue(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    purpose: Purpose,
    token: &IssuedToken,
    email: &str,
    expires_at: DateTime<Utc>,
) -> QueryResult<()> {
    supersede(conn, user_id, purpose).await?;
    diesel::insert_into(email_tokens::table)
        .values((
            email_tokens::id.eq(Uuid::now_v7()),
            email_tokens::user_id.eq(user_id),
            email_tokens::purpose.eq(purpose.as_str()),
            email_tokens::token_hash.eq(&token.hash),
            email_tokens::email.eq(email),
            email_tokens::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .await
        .map(drop)
}

/// Deletes every unused token of `purpose` the account has.
pub async fn supersede(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    purpose: Purpose,
) -> QueryResult<()> {
    diesel::delete(
        email_tokens::table
            .filter(email_tokens::user_id.eq(user_id))
            .filter(email_tokens::purpose.eq(purpose.as_str()))
            .filter(email_tokens::used_at.is_null()),
    )
    .execute(conn)
    .await
    .map(drop)
}

/// The token with this hash, if it is of `purpose`, unused and unexpired at
/// `now`; with `lock`, its row is locked until the transaction ends, so two
/// concurrent uses of one token cannot both succeed.
pub async fn find_usable(
    conn: &mut AsyncPgConnection,
    hash: &[u8],
    purpose: Purpose,
    now: DateTime<Utc>,
    lock: bool,
) -> QueryResult<Option<UsableToken>> {
    let usable = email_tokens::table
        .filter(email_tokens::token_hash.eq(hash))
        .filter(email_tokens::purpose.eq(purpose.as_str()))
        .filter(email_tokens::used_at.is_null())
        .filter(email_tokens::expires_at.gt(now))
        .select(UsableToken::as_select());
    if lock {
        usable.for_update().first(conn).await.optional()
    } else {
        usable.first(conn).await.optional()
    }
}

/// Marks a token used at `now`.
pub async fn mark_used(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::update(email_tokens::table.find(id))
        .set(email_tokens::used_at.eq(now))
        .execute(conn)
        .await
        .map(drop)
}

/// The address as the account lookup compares it (PostgreSQL's `lower()`), for keys.
pub async fn normalise(conn: &mut AsyncPgConnection, email: &str) -> QueryResult<String> {
    diesel::select(lower(email)).get_result(conn).await
}

diesel::define_sql_function!(fn lower(value: Text) -> Text);

/// One limit on asking for mail: at most `max` requests under `key` within the window.
pub struct RequestLimit {
    /// What is counted (`reset:client:192.0.2.1`).
    pub key: String,
    /// How many requests the window allows.
    pub max: u32,
}

/// Records a request under every limit's key, or refuses it (429, with when
/// the oldest counted request leaves the window) when any limit is spent.
/// Refused requests are not recorded, so waiting always helps. Runs in its
/// own transaction under per-key locks, so concurrent requests cannot all
/// pass a count; a limiter that cannot record refuses (503).
pub async fn record_request(
    pool: &DbPool,
    limits: &[RequestLimit],
    window: Duration,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    let window = chrono::Duration::from_std(window).map_err(AppError::internal)?;
    let since = now - window;
    let mut conn = pool.get().await?;
    conn.transaction::<_, AppError, _>(async move |conn| {
        for limit in limits {
            lock_key(conn, &limit.key).await.map_err(unrecordable)?;
        }
        for limit in limits {
            let (count, oldest) = requests_since(conn, &limit.key, since)
                .await
                .map_err(unrecordable)?;
            if count >= i64::from(limit.max) {
                let frees_at = oldest.unwrap_or(now) + window;
                return Err(AppError::RateLimited {
                    detail: "Too many requests for this email; wait before asking again."
                        .to_owned(),
                    retry_after: (frees_at - now).to_std().unwrap_or_default(),
                });
            }
        }
        for limit in limits {
            diesel::insert_into(email_requests::table)
                .values((
                    email_requests::key.eq(&limit.key),
                    email_requests::requested_at.eq(now),
                ))
                .execute(conn)
                .await
                .map_err(unrecordable)?;
        }
        Ok(())
    })
    .await
}

/// Serialises the requests of one key until the transaction ends.
async fn lock_key(conn: &mut AsyncPgConnection, key: &str) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended('email-request:' || $1, 0))")
        .bind::<Text, _>(key)
        .execute(conn)
        .await
        .map(drop)
}

/// How many requests `key` made since `since`, and when the oldest of them was.
async fn requests_since(
    conn: &mut AsyncPgConnection,
    key: &str,
    since: DateTime<Utc>,
) -> QueryResult<(i64, Option<DateTime<Utc>>)> {
    email_requests::table
        .filter(email_requests::key.eq(key))
        .filter(email_requests::requested_at.gt(since))
        .select((count_star(), diesel::dsl::min(email_requests::requested_at)))
        .get_result(conn)
        .await
}

/// The limiter could not record the request: refuse it rather than let it
/// through uncounted (fail closed).
fn unrecordable(error: diesel::result::Error) -> AppError {
    tracing::warn!(%error, "the email request limiter cannot record a request; refusing it");
    AppError::Unavailable {
        code: "email_unavailable",
        detail: "Email requests are unavailable right now; try again shortly.".to_owned(),
        retry_after: Some(Duration::from_secs(1)),
    }
}

/// Deletes what no check will read again: requests older than `requests_before`
/// and tokens that expired before `tokens_before`. Returns how many rows went.
pub async fn prune(
    conn: &mut AsyncPgConnection,
    requests_before: DateTime<Utc>,
    tokens_before: DateTime<Utc>,
) -> QueryResult<usize> {
    let requests = diesel::delete(
        email_requests::table.filter(email_requests::requested_at.lt(requests_before)),
    )
    .execute(conn)
    .await?;
    let tokens =
        diesel::delete(email_tokens::table.filter(email_tokens::expires_at.lt(tokens_before)))
            .execute(conn)
            .await?;
    Ok(requests + tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_256_random_bits_in_43_url_safe_characters() {
        let first = IssuedToken::generate().expect("the OS has randomness");
        let second = IssuedToken::generate().expect("the OS has randomness");
        assert_eq!(first.value.len(), TOKEN_CHARS);
        assert!(is_well_formed(&first.value));
        assert_ne!(first.value, second.value);
        assert_eq!(first.hash, hash(&first.value));
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(&first.value)
                .map(|bytes| bytes.len())
                .ok(),
            Some(32)
        );
        for malformed in [
            "",
            "short",
            &"a".repeat(44),
            &format!("{}=", "a".repeat(42)),
        ] {
            assert!(!is_well_formed(malformed), "{malformed:?}");
        }
    }
}
