//! Queries on `credentials`, `refresh_tokens` and `login_failures`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::auth::models::{NewCredentials, NewRefreshToken, RefreshTokenRow};
use crate::shared::schema::{credentials, login_failures, refresh_tokens};

diesel::define_sql_function! {
    /// PostgreSQL's `lower`, as the account lookup applies it.
    fn lower(value: Text) -> Text;
}

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

/// The refresh token with this hash, after taking its family's lock and then
/// the row's, both held to the end of the transaction (always in that order,
/// so exchanges and revocations of one family queue instead of deadlocking).
pub async fn lock_token_and_family(
    conn: &mut AsyncPgConnection,
    hash: &[u8],
) -> QueryResult<Option<RefreshTokenRow>> {
    let family: Option<Uuid> = refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(hash))
        .select(refresh_tokens::family_id)
        .first(conn)
        .await
        .optional()?;
    let Some(family) = family else {
        return Ok(None);
    };
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 1))")
        .bind::<diesel::sql_types::Uuid, _>(family)
        .execute(conn)
        .await?;
    refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(hash))
        .select(RefreshTokenRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

/// Whether sign-in `family` has been ended (logout, reuse, expiry of the family
/// by revocation). Served by the family index.
pub async fn session_ended(conn: &mut AsyncPgConnection, family: Uuid) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        refresh_tokens::table
            .filter(refresh_tokens::family_id.eq(family))
            .filter(refresh_tokens::revoked_at.is_not_null()),
    ))
    .get_result(conn)
    .await
}

/// Revokes every sign-in of `user_id` but `keep` (the caller's own).
pub async fn revoke_all_but(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    keep: Uuid,
) -> QueryResult<()> {
    diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::user_id.eq(user_id))
            .filter(refresh_tokens::revoked_at.is_null())
            .filter(refresh_tokens::family_id.ne(keep)),
    )
    .set(refresh_tokens::revoked_at.eq(diesel::dsl::now))
    .execute(conn)
    .await
    .map(drop)
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

/// Serialises every attempt on these keys until the transaction ends (taken
/// in one sorted order, so two attempts sharing keys never deadlock).
pub async fn lock_attempt_keys(conn: &mut AsyncPgConnection, keys: &[String]) -> QueryResult<()> {
    diesel::sql_query(
        "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS k ORDER BY k",
    )
    .bind::<Array<Text>, _>(keys)
    .execute(conn)
    .await
    .map(drop)
}

/// PostgreSQL's `lower()` of an email, so an unknown account's limiter key is
/// normalised exactly as the account lookup normalises it.
pub async fn normalise_email(conn: &mut AsyncPgConnection, email: &str) -> QueryResult<String> {
    diesel::select(lower(email)).get_result(conn).await
}

/// Records an attempt under each key; it counts as a failure until forgotten.
pub async fn record_attempts(
    conn: &mut AsyncPgConnection,
    keys: &[String],
) -> QueryResult<Vec<i64>> {
    let rows: Vec<_> = keys.iter().map(|key| login_failures::key.eq(key)).collect();
    diesel::insert_into(login_failures::table)
        .values(&rows)
        .returning(login_failures::id)
        .get_results(conn)
        .await
}

/// Forgets attempts (a password check that succeeded).
pub async fn forget_attempts(conn: &mut AsyncPgConnection, ids: &[i64]) -> QueryResult<()> {
    diesel::delete(login_failures::table.filter(login_failures::id.eq_any(ids)))
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

/// Forgets every failure under `keys` (after the right password).
pub async fn clear_failures(conn: &mut AsyncPgConnection, keys: &[String]) -> QueryResult<()> {
    diesel::delete(login_failures::table.filter(login_failures::key.eq_any(keys)))
        .execute(conn)
        .await
        .map(drop)
}

/// Deletes failures recorded before `before` (outside every window) and
/// refresh tokens that expired before it; returns how many rows went.
pub async fn prune(conn: &mut AsyncPgConnection, before: DateTime<Utc>) -> QueryResult<usize> {
    let failures =
        diesel::delete(login_failures::table.filter(login_failures::failed_at.lt(before)))
            .execute(conn)
            .await?;
    let tokens =
        diesel::delete(refresh_tokens::table.filter(refresh_tokens::expires_at.lt(before)))
            .execute(conn)
            .await?;
    Ok(failures + tokens)
}
