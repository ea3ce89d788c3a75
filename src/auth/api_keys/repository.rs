//! Queries on `api_keys`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::models::{ApiKeyRow, NewApiKey};
use crate::shared::schema::api_keys;

/// How stale `last_used_at` may get, in seconds, before a use records itself
/// again: a busy key costs one write a minute, not one per request.
const LAST_USED_GRANULARITY_SECONDS: i32 = 60;

/// Stores a key.
pub async fn insert(conn: &mut AsyncPgConnection, key: &NewApiKey) -> QueryResult<ApiKeyRow> {
    diesel::insert_into(api_keys::table)
        .values(key)
        .returning(ApiKeyRow::as_returning())
        .get_result(conn)
        .await
}

/// The key with this id.
pub async fn find(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<ApiKeyRow>> {
    api_keys::table
        .find(id)
        .select(ApiKeyRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Serialises key creation for one user until the transaction ends, so that
/// two concurrent creations cannot both slip under the cap.
pub async fn lock_keys_of(conn: &mut AsyncPgConnection, user_id: Uuid) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 2))")
        .bind::<diesel::sql_types::Uuid, _>(user_id)
        .execute(conn)
        .await
        .map(drop)
}

/// How many of the user's keys still work at `now`.
pub async fn count_live(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> QueryResult<i64> {
    api_keys::table
        .filter(api_keys::user_id.eq(user_id))
        .filter(
            api_keys::expires_at
                .is_null()
                .or(api_keys::expires_at.gt(now)),
        )
        .count()
        .get_result(conn)
        .await
}

/// Up to `limit` of the user's keys, newest first, older than `before`.
pub async fn list(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<ApiKeyRow>> {
    let mut query = api_keys::table
        .filter(api_keys::user_id.eq(user_id))
        .select(ApiKeyRow::as_select())
        .order(api_keys::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(before) = before {
        query = query.filter(api_keys::id.lt(before));
    }
    query.load(conn).await
}

/// Deletes key `id` if `owner` is `None` (an admin) or owns it; whether it did.
pub async fn delete(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    owner: Option<Uuid>,
) -> QueryResult<bool> {
    let mut query = diesel::delete(api_keys::table)
        .filter(api_keys::id.eq(id))
        .into_boxed();
    if let Some(owner) = owner {
        query = query.filter(api_keys::user_id.eq(owner));
    }
    Ok(query.execute(conn).await? > 0)
}

/// Whether a use at `now` is worth recording: none is, or the last is stale.
pub fn use_is_news(last_used_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    last_used_at.is_none_or(|last| {
        now - last >= chrono::Duration::seconds(LAST_USED_GRANULARITY_SECONDS.into())
    })
}

/// Records a use of key `id`, unless another request (on any replica) did
/// within the granularity: the condition is checked again in the update.
pub async fn touch(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE api_keys SET last_used_at = now() WHERE id = $1 \
         AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => $2))",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .bind::<diesel::sql_types::Integer, _>(LAST_USED_GRANULARITY_SECONDS)
    .execute(conn)
    .await
    .map(drop)
}

/// Deletes keys that expired before `before`; how many went.
pub async fn prune_expired(
    conn: &mut AsyncPgConnection,
    before: DateTime<Utc>,
) -> QueryResult<usize> {
    diesel::delete(api_keys::table.filter(api_keys::expires_at.lt(before)))
        .execute(conn)
        .await
}
