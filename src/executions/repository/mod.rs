//! Queries on `executions` and `execution_events`; nothing else touches them.
//!
//! Every state change writes its event and a `NOTIFY` in the same statement,
//! so the event log, the row and the wake-ups can never disagree. Every write
//! a worker makes is fenced on its claim's token: a worker that lost its
//! lease changes nothing.

use chrono::{DateTime, Utc};
use diesel::dsl::count_star;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::executions::models::{
    Execution, ExecutionEvent, ExecutionSummaryRow, NewExecution, Status,
};
use crate::shared::schema::{execution_events, execution_usage, executions};

mod attempts;

pub use attempts::{
    Claim, Claimed, Outcome, claim, count_by_status, finish, finish_succeeded_batch, heartbeat,
    hold_claim, prune_finished, report_progress, rescue_expired,
};

/// The channel carrying "execution X changed" (payload: its id).
pub const EVENTS_CHANNEL: &str = "tessera_execution_events";

/// The channel carrying "work was queued on Q" (payload: the queue).
pub const QUEUED_CHANNEL: &str = "tessera_executions_queued";

/// The channel carrying "cancel X" to the worker running it (payload: its id).
pub const CANCEL_CHANNEL: &str = "tessera_execution_cancel";

/// Inserts an execution, unless its owner already used its idempotency key
/// (then `None`). Notifies workers of its queue when the transaction commits.
pub async fn insert(
    conn: &mut AsyncPgConnection,
    new: &NewExecution,
) -> QueryResult<Option<Execution>> {
    let inserted: Option<Execution> = diesel::insert_into(executions::table)
        .values(new)
        .on_conflict_do_nothing()
        .returning(Execution::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    if let Some(execution) = &inserted {
        log_event(
            conn,
            execution.id,
            "status",
            &json!({"status": Status::Queued, "attempt": 0}),
        )
        .await?;
        notify(conn, QUEUED_CHANNEL, &execution.queue).await?;
    }
    Ok(inserted)
}

/// The execution with this id.
pub async fn find(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<Execution>> {
    executions::table
        .find(id)
        .select(Execution::as_select())
        .first(conn)
        .await
        .optional()
}

/// The owner's execution submitted with `key`.
pub async fn find_by_idempotency_key(
    conn: &mut AsyncPgConnection,
    owner_id: Uuid,
    key: &str,
) -> QueryResult<Option<Execution>> {
    executions::table
        .filter(executions::owner_id.eq(owner_id))
        .filter(executions::idempotency_key.eq(key))
        .select(Execution::as_select())
        .first(conn)
        .await
        .optional()
}

/// Filters of a list.
#[derive(Debug, Default)]
pub struct ExecutionFilter {
    /// Only this owner's (`None`: everyone's).
    pub owner_id: Option<Uuid>,
    /// Only this status.
    pub status: Option<Status>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Internal executions too (admins only see them).
    pub with_internal: bool,
}

/// Up to `limit` executions older than `before`, newest first, as summaries:
/// the input, result and errors are not even read.
pub async fn list(
    conn: &mut AsyncPgConnection,
    filter: &ExecutionFilter,
    before: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<ExecutionSummaryRow>> {
    let mut query = executions::table
        .select(ExecutionSummaryRow::as_select())
        .into_boxed();
    if let Some(owner) = filter.owner_id {
        query = query.filter(executions::owner_id.eq(owner));
    }
    if let Some(status) = filter.status {
        query = query.filter(executions::status.eq(status.as_str()));
    }
    if let Some(kind) = &filter.kind {
        query = query.filter(executions::kind.eq(kind));
    }
    if !filter.with_internal {
        query = query.filter(executions::internal.eq(false));
    }
    if let Some(before) = before {
        query = query.filter(executions::id.lt(before));
    }
    query
        .order(executions::id.desc())
        .limit(limit)
        .load(conn)
        .await
}

/// Serialises the quota checks of one user until the transaction ends, so
/// concurrent submissions cannot all count the same room.
pub async fn lock_quotas_of(conn: &mut AsyncPgConnection, owner_id: Uuid) -> QueryResult<()> {
    diesel::sql_query(
        "SELECT pg_advisory_xact_lock(hashtextextended('execution-quotas:' || $1::text, 0))",
    )
    .bind::<SqlUuid, _>(owner_id)
    .execute(conn)
    .await
    .map(drop)
}

/// How many of the owner's executions are queued or running (internal ones,
/// which the service queued, count against nobody).
pub async fn count_unfinished(conn: &mut AsyncPgConnection, owner_id: Uuid) -> QueryResult<i64> {
    executions::table
        .filter(executions::owner_id.eq(owner_id))
        .filter(executions::internal.eq(false))
        .filter(executions::status.eq_any([Status::Queued.as_str(), Status::Running.as_str()]))
        .select(count_star())
        .get_result(conn)
        .await
}

/// What a user spent of a kind's allowance in a window.
#[derive(Debug, Clone, Copy, Default, QueryableByName)]
pub struct Usage {
    /// Units spent.
    #[diesel(sql_type = BigInt)]
    pub units: i64,
    /// When the oldest spending in the window happened (it leaves the window first).
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub oldest: Option<DateTime<Utc>>,
}

/// The units of `kind` the owner spent since `since`.
pub async fn usage_since(
    conn: &mut AsyncPgConnection,
    owner_id: Uuid,
    kind: &str,
    since: DateTime<Utc>,
) -> QueryResult<Usage> {
    // SQL, not the DSL: diesel types a bigint SUM as numeric.
    diesel::sql_query(
        "SELECT COALESCE(SUM(units), 0)::bigint AS units, MIN(created_at) AS oldest
         FROM execution_usage WHERE owner_id = $1 AND kind = $2 AND created_at > $3",
    )
    .bind::<SqlUuid, _>(owner_id)
    .bind::<Text, _>(kind)
    .bind::<Timestamptz, _>(since)
    .get_result(conn)
    .await
}

/// Records `units` of `kind` spent by the owner now, and forgets what the
/// owner spent before `forget_before` (it no longer counts), so the ledger
/// holds about a day per user.
pub async fn record_usage(
    conn: &mut AsyncPgConnection,
    owner_id: Uuid,
    kind: &str,
    units: i64,
    forget_before: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::delete(
        execution_usage::table
            .filter(execution_usage::owner_id.eq(owner_id))
            .filter(execution_usage::created_at.le(forget_before)),
    )
    .execute(conn)
    .await?;
    diesel::insert_into(execution_usage::table)
        .values((
            execution_usage::owner_id.eq(owner_id),
            execution_usage::kind.eq(kind),
            execution_usage::units.eq(units),
        ))
        .execute(conn)
        .await
        .map(drop)
}

/// The execution's events after `after` (an event id), oldest first.
pub async fn events_after(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    after: i64,
) -> QueryResult<Vec<ExecutionEvent>> {
    execution_events::table
        .filter(execution_events::execution_id.eq(id))
        .filter(execution_events::id.gt(after))
        .order(execution_events::id.asc())
        .select(ExecutionEvent::as_select())
        .load(conn)
        .await
}

/// The id of the newest event of execution `id` (0 without any): where an
/// event feed starts, so that it reads only what comes next.
pub async fn last_event_id(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<i64> {
    execution_events::table
        .filter(execution_events::execution_id.eq(id))
        .select(diesel::dsl::max(execution_events::id))
        .first::<Option<i64>>(conn)
        .await
        .map(|newest| newest.unwrap_or(0))
}

async fn log_event(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    event: &str,
    data: &Value,
) -> QueryResult<()> {
    diesel::sql_query(
        "WITH logged AS (INSERT INTO execution_events (execution_id, event, data) VALUES ($1, $2, $3) RETURNING execution_id)
         SELECT pg_notify($4, execution_id::text) FROM logged",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(event)
    .bind::<Jsonb, _>(data)
    .bind::<Text, _>(EVENTS_CHANNEL)
    .execute(conn)
    .await
    .map(drop)
}

/// Sends `NOTIFY channel, payload` (delivered when the transaction commits).
pub async fn notify(conn: &mut AsyncPgConnection, channel: &str, payload: &str) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_notify($1, $2)")
        .bind::<Text, _>(channel)
        .bind::<Text, _>(payload)
        .execute(conn)
        .await
        .map(drop)
}

/// Cancels a queued execution at once, or asks the worker of a running one
/// to stop. Returns the execution after the change; `None` if it was
/// already finished (or does not exist). One statement, so an execution that
/// moves between queued and running meanwhile (a retry, a hand-back, a
/// rescue) is still caught in one state or the other.
pub async fn request_cancel(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<Execution>> {
    let changed: Option<Execution> = diesel::sql_query(
        "UPDATE executions SET
             cancel_requested = cancel_requested OR status = 'running',
             finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END,
             status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END
         WHERE id = $1 AND status IN ('queued', 'running') RETURNING *",
    )
    .bind::<SqlUuid, _>(id)
    .get_result(conn)
    .await
    .optional()?;
    match &changed {
        Some(execution) if execution.status == Status::Cancelled => {
            let data = json!({"status": Status::Cancelled, "attempt": execution.attempt});
            log_event(conn, id, "status", &data).await?;
        }
        Some(_) => notify(conn, CANCEL_CHANNEL, &id.to_string()).await?,
        None => {}
    }
    Ok(changed)
}

/// Queues a failed or cancelled execution again, with a fresh set of attempts,
/// counting the re-run. `None` if it is not failed or cancelled, or was
/// re-run `max_reruns` times already.
pub async fn retry(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    max_reruns: i32,
) -> QueryResult<Option<Execution>> {
    let queued: Option<Execution> = diesel::sql_query(
        "UPDATE executions SET status = 'queued', attempt = 0, run_at = now(), finished_at = NULL,
                result = NULL, progress = 0, progress_message = NULL, cancel_requested = false,
                reruns = reruns + 1
         WHERE id = $1 AND status IN ('failed', 'cancelled') AND reruns < $2 RETURNING *",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Integer, _>(max_reruns)
    .get_result(conn)
    .await
    .optional()?;
    if let Some(execution) = &queued {
        log_event(
            conn,
            id,
            "status",
            &json!({"status": Status::Queued, "attempt": 0, "retried": true}),
        )
        .await?;
        notify(conn, QUEUED_CHANNEL, &execution.queue).await?;
    }
    Ok(queued)
}

/// Deletes a finished execution; returns whether one went.
pub async fn delete_finished(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<bool> {
    let deleted = diesel::delete(executions::table.filter(executions::id.eq(id)).filter(
        executions::status.eq_any([
            Status::Succeeded.as_str(),
            Status::Failed.as_str(),
            Status::Cancelled.as_str(),
        ]),
    ))
    .execute(conn)
    .await?;
    Ok(deleted == 1)
}
