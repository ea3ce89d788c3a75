//! Queries on `credentials`, `refresh_tokens` and `login_failures`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::auth::models::{NewCredentials, NewRefreshToken, RefreshTokenRow};
use crate::shared::schema::{credentials, login_failures, refresh_tokens};

/// Stores or replaces a user's password hash.
pub async fn upsert_credentials(
    conn: &mut AsyncPgConnection,
    new: &NewCredentials,
) -> QueryResult<()> {
    diesel::insert_into(credentials::table)
        .values(new)
        .on_conflict(credentials::user_id)
        .do_update()
        .set((
            credentials::password_hash.eq(&new.password_hash),
            credentials::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await
        .map(drop)
}

/// A user's password hash.
pub async fn password_hash(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
) -> QueryResult<Option<String>> {
    credentials::table
        .find(user_id)
        .select(credentials::password_hash)
        .first(conn)
        .await
        .optional()
}

/// Stores a refresh token.
pub async fn insert_refresh_token(
    conn: &mut AsyncPgConnection,
    token: &NewRefreshToken,
) -> QueryResult<()> {
    diesel::insert_into(refresh_tokens::table)
        .values(token)
        .execute(conn)
        .await
        .map(drop)
}

/// The refresh token with this hash, locked for the rest of the transaction
/// so that two concurrent exchanges of one token cannot both succeed.
pub async fn lock_refresh_token(
    conn: &mut AsyncPgConnection,
    hash: &[u8],
) -> QueryResult<Option<RefreshTokenRow>> {
    refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(hash))
        .select(RefreshTokenRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

/// Marks a refresh token as exchanged.
pub async fn mark_used(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<()> {
    diesel::update(refresh_tokens::table.find(id))
        .set(refresh_tokens::used_at.eq(diesel::dsl::now))
        .execute(conn)
        .await
        .map(drop)
}

/// Revokes every token of a family.
pub async fn revoke_family(conn: &mut AsyncPgConnection, family_id: Uuid) -> QueryResult<()> {
    diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::family_id.eq(family_id))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(diesel::dsl::now))
    .execute(conn)
    .await
    .map(drop)
}

/// Revokes every token of a user.
pub async fn revoke_all(conn: &mut AsyncPgConnection, user_id: Uuid) -> QueryResult<()> {
    diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::user_id.eq(user_id))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(diesel::dsl::now))
    .execute(conn)
    .await
    .map(drop)
}

/// Records a failed login under each key.
pub async fn record_failures(conn: &mut AsyncPgConnection, keys: &[String]) -> QueryResult<()> {
    let rows: Vec<_> = keys.iter().map(|key| login_failures::key.eq(key)).collect();
    diesel::insert_into(login_failures::table)
        .values(&rows)
        .execute(conn)
        .await
        .map(drop)
}

/// For the key with the most failures since `since`: how many, and the oldest.
pub async fn failures_since(
    conn: &mut AsyncPgConnection,
    keys: &[String],
    since: DateTime<Utc>,
) -> QueryResult<Vec<(String, i64, Option<DateTime<Utc>>)>> {
    login_failures::table
        .filter(login_failures::key.eq_any(keys))
        .filter(login_failures::failed_at.gt(since))
        .group_by(login_failures::key)
        .select((
            login_failures::key,
            diesel::dsl::count_star(),
            diesel::dsl::min(login_failures::failed_at),
        ))
        .load(conn)
        .await
}

/// Forgets failures under `key` (after a successful login) and everything
/// older than `before` (expired counters).
pub async fn clear_failures(
    conn: &mut AsyncPgConnection,
    key: &str,
    before: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::delete(
        login_failures::table.filter(
            login_failures::key
                .eq(key)
                .or(login_failures::failed_at.lt(before)),
        ),
    )
    .execute(conn)
    .await
    .map(drop)
}
