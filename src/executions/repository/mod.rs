//! Queries on `executions` and `execution_events`; nothing else touches them.
//!
//! Every state change writes its event and a `NOTIFY` in the same statement,
//! so the event log, the row and the wake-ups can never disagree. Every write
//! a worker makes is fenced on (worker id, attempt): a worker that lost its
//! lease changes nothing.

use diesel::prelude::*;
use diesel::sql_types::{Jsonb, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::executions::models::{Execution, ExecutionEvent, NewExecution, Status};
use crate::shared::schema::{execution_events, executions};

mod attempts;

pub use attempts::{
    Claim, Outcome, claim, count_by_status, finish, finish_succeeded_batch, heartbeat,
    prune_finished, report_progress, rescue_expired,
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
}

/// Up to `limit` executions older than `before`, newest first.
pub async fn list(
    conn: &mut AsyncPgConnection,
    filter: &ExecutionFilter,
    before: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<Execution>> {
    let mut query = executions::table
        .select(Execution::as_select())
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
    if let Some(before) = before {
        query = query.filter(executions::id.lt(before));
    }
    query
        .order(executions::id.desc())
        .limit(limit)
        .load(conn)
        .await
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
/// already finished (or does not exist).
pub async fn request_cancel(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<Execution>> {
    let cancelled: Option<Execution> = diesel::sql_query(
        "UPDATE executions SET status = 'cancelled', finished_at = now()
         WHERE id = $1 AND status = 'queued' RETURNING *",
    )
    .bind::<SqlUuid, _>(id)
    .get_result(conn)
    .await
    .optional()?;
    if let Some(execution) = cancelled {
        log_event(
            conn,
            id,
            "status",
            &json!({"status": Status::Cancelled, "attempt": execution.attempt}),
        )
        .await?;
        return Ok(Some(execution));
    }
    let running: Option<Execution> = diesel::sql_query(
        "UPDATE executions SET cancel_requested = true WHERE id = $1 AND status = 'running' RETURNING *",
    )
    .bind::<SqlUuid, _>(id)
    .get_result(conn)
    .await
    .optional()?;
    if running.is_some() {
        notify(conn, CANCEL_CHANNEL, &id.to_string()).await?;
    }
    Ok(running)
}

/// Queues a failed or cancelled execution again, with a fresh set of attempts.
/// `None` if it is not failed or cancelled.
pub async fn retry(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<Execution>> {
    let queued: Option<Execution> = diesel::sql_query(
        "UPDATE executions SET status = 'queued', attempt = 0, run_at = now(), finished_at = NULL,
                result = NULL, progress = 0, progress_message = NULL, cancel_requested = false
         WHERE id = $1 AND status IN ('failed', 'cancelled') RETURNING *",
    )
    .bind::<SqlUuid, _>(id)
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
