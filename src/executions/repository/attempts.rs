//! The queries a worker makes on an attempt it holds: claim, heartbeat,
//! progress, the outcome (one at a time or a batch of successes), and the
//! maintenance queries (rescue, prune, counts). Every write is fenced on the
//! claim's token, minted at random by each claim and cleared when the
//! execution leaves `running`, so a worker that lost its lease changes nothing
//! even when a later claim repeats its worker id and attempt number.
//!
//! Cancellation is durable: once requested for a running execution, any end
//! of that attempt other than a success is `cancelled` — a failure that would
//! retry, a failure for good, a hand-back at shutdown and a rescue after the
//! lease lapsed. A success that races the request still counts: the work is
//! done, and its result is worth more than the request to stop it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Int2, Int4, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use uuid::Uuid;

use super::{EVENTS_CHANNEL, QUEUED_CHANNEL};
use crate::executions::models::{Execution, Status};
use crate::shared::schema::executions;

/// Most errors an execution's history keeps (the last ones): a 25-attempt
/// execution's row stays small. The migration that added the bound cut older
/// histories to the same length.
const ERRORS_KEPT: i32 = 10;

/// One claimed attempt: which execution, which attempt, and the token that
/// fences every write made for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The execution.
    pub execution_id: Uuid,
    /// The attempt it runs, from 1 (for the job and the logs; the token is the fence).
    pub attempt: i32,
    /// The random token the claim minted; a write without it changes nothing.
    pub token: Uuid,
}

/// An execution a worker just claimed, with the token of its claim (kept out
/// of [`Execution`], which clients see).
#[derive(Debug, Clone, QueryableByName)]
pub struct Claimed {
    /// The execution, as the claim left it (`running`, its attempt counted).
    #[diesel(embed)]
    pub execution: Execution,
    /// The claim's token.
    #[diesel(sql_type = SqlUuid)]
    pub claim_token: Uuid,
}

impl Claimed {
    /// The claim this worker writes under.
    pub fn claim(&self) -> Claim {
        Claim {
            execution_id: self.execution.id,
            attempt: self.execution.attempt,
            token: self.claim_token,
        }
    }
}

/// How an attempt ended, as the worker records it.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Done, with the kind's output.
    Succeeded(Value),
    /// Failed; queued again at `retry_at`, or failed for good when `None`.
    Failed {
        /// What went wrong.
        message: String,
        /// When to try again, if attempts remain.
        retry_at: Option<DateTime<Utc>>,
    },
    /// Stopped by a cancellation request.
    Cancelled,
    /// Not finished when the worker shut down: back to the queue, the attempt uncounted.
    HandedBack,
}

/// Claims up to `limit` due executions of `kinds` on `queue` for `worker_id`,
/// in one short statement (`FOR UPDATE SKIP LOCKED`: concurrent workers never
/// wait for or take each other's rows), minting each claim's token. No
/// transaction stays open while the work runs; the lease is what holds the claim.
pub async fn claim(
    conn: &mut AsyncPgConnection,
    queue: &str,
    kinds: &[&str],
    worker_id: Uuid,
    lease: Duration,
    limit: i64,
) -> QueryResult<Vec<Claimed>> {
    let kinds: Vec<String> = kinds.iter().map(|kind| (*kind).to_owned()).collect();
    diesel::sql_query(
        "WITH picked AS (
             SELECT id FROM executions
             WHERE status = 'queued' AND queue = $1 AND kind = ANY($2) AND run_at <= now()
             ORDER BY priority DESC, run_at, id
             LIMIT $3
             FOR UPDATE SKIP LOCKED
         ), claimed AS (
             UPDATE executions e
             SET status = 'running', attempt = e.attempt + 1, worker_id = $4,
                 lease_expires_at = now() + $5 * interval '1 millisecond',
                 started_at = coalesce(e.started_at, now()), claim_token = gen_random_uuid()
             FROM picked WHERE e.id = picked.id
             RETURNING e.*
         ), logged AS (
             INSERT INTO execution_events (execution_id, event, data)
             SELECT id, 'status', jsonb_build_object('status', 'running', 'attempt', attempt) FROM claimed
         )
         SELECT claimed.* FROM claimed, LATERAL (SELECT pg_notify($6, claimed.id::text)) AS notified",
    )
    .bind::<Text, _>(queue)
    .bind::<Array<Text>, _>(kinds)
    .bind::<BigInt, _>(limit)
    .bind::<SqlUuid, _>(worker_id)
    .bind::<BigInt, _>(millis(lease))
    .bind::<Text, _>(EVENTS_CHANNEL)
    .load(conn)
    .await
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[derive(QueryableByName)]
struct CancelFlag {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    cancel_requested: bool,
}

/// Extends the lease. `None`: the claim is gone (the lease expired and the
/// execution was rescued); `Some(true)`: cancellation was requested.
pub async fn heartbeat(
    conn: &mut AsyncPgConnection,
    claim: &Claim,
    lease: Duration,
) -> QueryResult<Option<bool>> {
    let row: Option<CancelFlag> = diesel::sql_query(
        "UPDATE executions SET lease_expires_at = now() + $3 * interval '1 millisecond'
         WHERE id = $1 AND claim_token = $2 AND status = 'running'
         RETURNING cancel_requested",
    )
    .bind::<SqlUuid, _>(claim.execution_id)
    .bind::<SqlUuid, _>(claim.token)
    .bind::<BigInt, _>(millis(lease))
    .get_result(conn)
    .await
    .optional()?;
    Ok(row.map(|flag| flag.cancel_requested))
}

/// Records progress, fenced. Returns whether the claim still holds.
pub async fn report_progress(
    conn: &mut AsyncPgConnection,
    claim: &Claim,
    percent: u8,
    message: &str,
) -> QueryResult<bool> {
    let updated = diesel::sql_query(
        "WITH updated AS (
             UPDATE executions SET progress = $3, progress_message = $4
             WHERE id = $1 AND claim_token = $2 AND status = 'running'
             RETURNING id
         ), logged AS (
             INSERT INTO execution_events (execution_id, event, data)
             SELECT id, 'progress', jsonb_build_object('progress', $3, 'message', $4) FROM updated
         )
         SELECT pg_notify($5, id::text) FROM updated",
    )
    .bind::<SqlUuid, _>(claim.execution_id)
    .bind::<SqlUuid, _>(claim.token)
    .bind::<Int2, _>(i16::from(percent))
    .bind::<Text, _>(message)
    .bind::<Text, _>(EVENTS_CHANNEL)
    .execute(conn)
    .await?;
    Ok(updated == 1)
}

/// What an outcome writes: the new status, the result, an error to append to
/// the history, when to run again, and whether the attempt is uncounted (a
/// hand-back at shutdown is not the job's fault).
struct OutcomeColumns {
    status: Status,
    result: Option<Value>,
    error: Option<String>,
    retry_at: Option<DateTime<Utc>>,
    uncount: bool,
}

impl OutcomeColumns {
    fn of(outcome: &Outcome) -> Self {
        let plain = |status| Self {
            status,
            result: None,
            error: None,
            retry_at: None,
            uncount: false,
        };
        match outcome {
            Outcome::Succeeded(value) => Self {
                result: Some(value.clone()),
                ..plain(Status::Succeeded)
            },
            Outcome::Failed { message, retry_at } => Self {
                error: Some(message.clone()),
                retry_at: *retry_at,
                ..plain(if retry_at.is_some() {
                    Status::Queued
                } else {
                    Status::Failed
                })
            },
            Outcome::Cancelled => plain(Status::Cancelled),
            Outcome::HandedBack => Self {
                uncount: true,
                ..plain(Status::Queued)
            },
        }
    }
}

#[derive(QueryableByName)]
struct Recorded {
    #[diesel(sql_type = Text)]
    status: Status,
}

/// Records how an attempt ended, fenced. Returns the status recorded — which
/// is `cancelled` for any end but a success once cancellation was requested —
/// or `None` if the claim no longer held (a worker that lost its lease
/// changes nothing). Failures append their error to the history, which keeps
/// the last `ERRORS_KEPT` (ten).
pub async fn finish(
    conn: &mut AsyncPgConnection,
    claim: &Claim,
    outcome: &Outcome,
) -> QueryResult<Option<Status>> {
    let OutcomeColumns {
        status,
        result,
        error,
        retry_at,
        uncount,
    } = OutcomeColumns::of(outcome);
    // `held` locks the row and reads the latest `cancel_requested`, so a
    // request committed while this statement waited is not lost.
    let recorded: Option<Recorded> = diesel::sql_query(
        "WITH held AS (
             SELECT id, CASE WHEN cancel_requested AND $3 <> 'succeeded' THEN 'cancelled' ELSE $3 END AS status
             FROM executions WHERE id = $1 AND claim_token = $2 AND status = 'running'
             FOR UPDATE
         ), updated AS (
             UPDATE executions e SET
                 status = held.status,
                 result = coalesce($4, e.result),
                 progress = CASE WHEN held.status = 'succeeded' THEN 100 ELSE e.progress END,
                 errors = CASE WHEN $5::text IS NULL OR held.status = 'cancelled' THEN e.errors
                          ELSE tessera_last_errors(e.errors || jsonb_build_array(jsonb_build_object(
                              'attempt', e.attempt, 'at', now(), 'message', $5::text)), $8) END,
                 run_at = CASE WHEN held.status = 'queued' THEN coalesce($6, e.run_at) ELSE e.run_at END,
                 attempt = CASE WHEN $7 AND held.status = 'queued' THEN e.attempt - 1 ELSE e.attempt END,
                 finished_at = CASE WHEN held.status = 'queued' THEN NULL ELSE now() END,
                 worker_id = NULL, lease_expires_at = NULL, claim_token = NULL, cancel_requested = false
             FROM held WHERE e.id = held.id
             RETURNING e.id, e.status, e.attempt, e.queue
         ), logged AS (
             INSERT INTO execution_events (execution_id, event, data)
             SELECT id, 'status', jsonb_strip_nulls(jsonb_build_object('status', status, 'attempt', attempt,
                 'error', CASE WHEN status = 'cancelled' THEN NULL ELSE $5::text END)) FROM updated
         )
         SELECT updated.status FROM updated, LATERAL (SELECT pg_notify($9, updated.id::text),
             CASE WHEN updated.status = 'queued' THEN pg_notify($10, updated.queue) END) AS notified",
    )
    .bind::<SqlUuid, _>(claim.execution_id)
    .bind::<SqlUuid, _>(claim.token)
    .bind::<Text, _>(status.as_str())
    .bind::<Nullable<Jsonb>, _>(result)
    .bind::<Nullable<Text>, _>(error)
    .bind::<Nullable<Timestamptz>, _>(retry_at)
    .bind::<diesel::sql_types::Bool, _>(uncount)
    .bind::<Int4, _>(ERRORS_KEPT)
    .bind::<Text, _>(EVENTS_CHANNEL)
    .bind::<Text, _>(QUEUED_CHANNEL)
    .get_result(conn)
    .await
    .optional()?;
    Ok(recorded.map(|row| row.status))
}

/// Whether `claim` still holds, checked inside the caller's transaction and
/// kept true until it ends: the row is locked (`FOR SHARE`) so no rescue,
/// claim or outcome can change it meanwhile. Work a job writes in the same
/// transaction is thereby fenced like the worker's own writes.
pub async fn hold_claim(conn: &mut AsyncPgConnection, claim: &Claim) -> QueryResult<bool> {
    let held: Option<Uuid> = executions::table
        .filter(executions::id.eq(claim.execution_id))
        .filter(executions::claim_token.eq(claim.token))
        .filter(executions::status.eq(Status::Running.as_str()))
        .select(executions::id)
        .for_share()
        .first(conn)
        .await
        .optional()?;
    Ok(held.is_some())
}

#[derive(QueryableByName)]
struct Rescued {
    #[diesel(sql_type = SqlUuid)]
    execution_id: Uuid,
}

/// Takes back executions whose lease expired (their worker died or lost the
/// database): queued again while attempts remain, failed otherwise, and
/// cancelled if cancellation was requested. Returns the ids rescued.
pub async fn rescue_expired(conn: &mut AsyncPgConnection) -> QueryResult<Vec<Uuid>> {
    let rows: Vec<Rescued> = diesel::sql_query(
        "WITH expired AS (
             SELECT id FROM executions
             WHERE status = 'running' AND lease_expires_at < now()
             FOR UPDATE SKIP LOCKED
         ), rescued AS (
             UPDATE executions e SET
                 status = CASE WHEN e.cancel_requested THEN 'cancelled'
                               WHEN e.attempt < e.max_attempts THEN 'queued' ELSE 'failed' END,
                 finished_at = CASE WHEN e.attempt < e.max_attempts AND NOT e.cancel_requested THEN NULL ELSE now() END,
                 errors = CASE WHEN e.cancel_requested THEN e.errors
                          ELSE tessera_last_errors(e.errors || jsonb_build_array(jsonb_build_object(
                              'attempt', e.attempt, 'at', now(),
                              'message', 'the worker stopped renewing its lease (it crashed or lost the database)')), $3) END,
                 run_at = now(), worker_id = NULL, lease_expires_at = NULL, claim_token = NULL,
                 cancel_requested = false
             FROM expired WHERE e.id = expired.id
             RETURNING e.id, e.status, e.attempt, e.queue
         ), logged AS (
             INSERT INTO execution_events (execution_id, event, data)
             SELECT id, 'status', jsonb_build_object('status', status, 'attempt', attempt, 'rescued', true) FROM rescued
         )
         SELECT rescued.id AS execution_id FROM rescued, LATERAL (SELECT pg_notify($1, rescued.id::text),
             CASE WHEN rescued.status = 'queued' THEN pg_notify($2, rescued.queue) END) AS notified",
    )
    .bind::<Text, _>(EVENTS_CHANNEL)
    .bind::<Text, _>(QUEUED_CHANNEL)
    .bind::<Int4, _>(ERRORS_KEPT)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|row| row.execution_id).collect())
}

/// Deletes up to `batch` executions finished before `before`; returns how many.
pub async fn prune_finished(
    conn: &mut AsyncPgConnection,
    before: DateTime<Utc>,
    batch: i64,
) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM executions WHERE id IN (
             SELECT id FROM executions WHERE finished_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
    )
    .bind::<Timestamptz, _>(before)
    .bind::<BigInt, _>(batch)
    .execute(conn)
    .await
}

#[derive(QueryableByName)]
struct StatusCount {
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// How many executions are in each status (for the metrics gauge).
pub async fn count_by_status(conn: &mut AsyncPgConnection) -> QueryResult<Vec<(String, i64)>> {
    let rows: Vec<StatusCount> =
        diesel::sql_query("SELECT status, count(*) AS count FROM executions GROUP BY status")
            .load(conn)
            .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.status, row.count))
        .collect())
}

#[derive(QueryableByName)]
struct Finished {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
}

/// Records many successful attempts in one statement, each fenced on its own
/// claim (a success counts even if cancellation was requested meanwhile).
/// Returns the ids whose claim still held. This is the hot path of a busy
/// queue: one round trip and one commit for a whole batch.
pub async fn finish_succeeded_batch(
    conn: &mut AsyncPgConnection,
    batch: &[(Claim, Value)],
) -> QueryResult<Vec<Uuid>> {
    let ids: Vec<Uuid> = batch.iter().map(|(claim, _)| claim.execution_id).collect();
    let tokens: Vec<Uuid> = batch.iter().map(|(claim, _)| claim.token).collect();
    let results: Vec<Value> = batch.iter().map(|(_, result)| result.clone()).collect();
    let rows: Vec<Finished> = diesel::sql_query(
        "WITH input AS (
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::jsonb[]) AS t(id, token, result)
         ), updated AS (
             UPDATE executions e SET status = 'succeeded', result = input.result, progress = 100,
                 finished_at = now(), worker_id = NULL, lease_expires_at = NULL, claim_token = NULL,
                 cancel_requested = false
             FROM input
             WHERE e.id = input.id AND e.claim_token = input.token AND e.status = 'running'
             RETURNING e.id, e.attempt
         ), logged AS (
             INSERT INTO execution_events (execution_id, event, data)
             SELECT id, 'status', jsonb_build_object('status', 'succeeded', 'attempt', attempt) FROM updated
         )
         SELECT updated.id FROM updated, LATERAL (SELECT pg_notify($4, updated.id::text)) AS notified",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<SqlUuid>, _>(tokens)
    .bind::<Array<Jsonb>, _>(results)
    .bind::<Text, _>(EVENTS_CHANNEL)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|row| row.id).collect())
}
