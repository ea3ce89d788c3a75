//! Rows of `executions` and `execution_events`.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::{Insertable, Queryable, QueryableByName, Selectable};
use serde_json::Value;
use uuid::Uuid;

use crate::shared::schema::{execution_events, executions};

crate::text_enum! {
    /// Where an execution is in its life.
    pub enum Status {
        /// Waiting for a worker (possibly until `run_at`).
        Queued => "queued",
        /// A worker holds it under a lease.
        Running => "running",
        /// Finished with a result.
        Succeeded => "succeeded",
        /// Every attempt failed.
        Failed => "failed",
        /// Cancelled by its owner or an admin.
        Cancelled => "cancelled",
    }
}

impl Status {
    /// Whether nothing more will happen to it.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// An execution, as stored.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = executions, check_for_backend(Pg))]
pub struct Execution {
    /// Its id (UUIDv7).
    pub id: Uuid,
    /// Whose it is.
    pub owner_id: Uuid,
    /// Which kind of work.
    pub kind: String,
    /// Which worker queue runs it.
    pub queue: String,
    /// A short human name.
    pub name: String,
    /// The kind's input, validated at submission.
    pub input: Value,
    /// Where it is in its life.
    pub status: Status,
    /// Higher runs first.
    pub priority: i16,
    /// Not before this time.
    pub run_at: DateTime<Utc>,
    /// The current (or last) attempt, from 1.
    pub attempt: i32,
    /// Attempts allowed before it fails for good.
    pub max_attempts: i32,
    /// Per-attempt time limit.
    pub timeout_s: Option<i32>,
    /// 0 to 100.
    pub progress: i16,
    /// What the work says it is doing.
    pub progress_message: Option<String>,
    /// The kind's output, once succeeded.
    pub result: Option<Value>,
    /// Every failed attempt.
    pub errors: Value,
    /// The worker holding the lease.
    pub worker_id: Option<Uuid>,
    /// When the lease lapses unless renewed.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Cancellation asked while running.
    pub cancel_requested: bool,
    /// The client's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// Hash of the request that used the key.
    pub request_hash: Option<Vec<u8>>,
    /// Submitted at.
    pub created_at: DateTime<Utc>,
    /// First claimed at.
    pub started_at: Option<DateTime<Utc>>,
    /// Finished at.
    pub finished_at: Option<DateTime<Utc>>,
    /// Last changed at.
    pub updated_at: DateTime<Utc>,
    /// How often it was re-run (`POST /executions/{id}/retry`).
    pub reruns: i32,
    /// Enqueued by the service itself (an internal kind): only admins see it.
    pub internal: bool,
}

/// The columns of an execution a list shows: everything small, never the
/// input, the result or the error history, so a page costs the same whatever
/// the work was.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = executions, check_for_backend(Pg))]
pub struct ExecutionSummaryRow {
    /// Its id (UUIDv7).
    pub id: Uuid,
    /// Whose it is.
    pub owner_id: Uuid,
    /// Which kind of work.
    pub kind: String,
    /// A short human name.
    pub name: String,
    /// Where it is in its life.
    pub status: Status,
    /// Higher runs first.
    pub priority: i16,
    /// Not before this time.
    pub run_at: DateTime<Utc>,
    /// The current (or last) attempt, from 1.
    pub attempt: i32,
    /// Attempts allowed before it fails for good.
    pub max_attempts: i32,
    /// Per-attempt time limit.
    pub timeout_s: Option<i32>,
    /// 0 to 100.
    pub progress: i16,
    /// What the work says it is doing.
    pub progress_message: Option<String>,
    /// Cancellation asked while running.
    pub cancel_requested: bool,
    /// How often it was re-run.
    pub reruns: i32,
    /// Submitted at.
    pub created_at: DateTime<Utc>,
    /// First claimed at.
    pub started_at: Option<DateTime<Utc>>,
    /// Finished at.
    pub finished_at: Option<DateTime<Utc>>,
    /// Last changed at.
    pub updated_at: DateTime<Utc>,
}

/// A new execution row.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = executions)]
pub struct NewExecution {
    /// Its id.
    pub id: Uuid,
    /// Whose it is.
    pub owner_id: Uuid,
    /// Which kind.
    pub kind: String,
    /// Which queue.
    pub queue: String,
    /// Its name.
    pub name: String,
    /// Validated input.
    pub input: Value,
    /// Priority.
    pub priority: i16,
    /// Not before.
    pub run_at: DateTime<Utc>,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Per-attempt limit.
    pub timeout_s: Option<i32>,
    /// The client's key, if any.
    pub idempotency_key: Option<String>,
    /// Hash of the request body, with the key.
    pub request_hash: Option<Vec<u8>>,
    /// Enqueued by the service itself (an internal kind): only admins see it.
    pub internal: bool,
}

/// One entry of an execution's event log.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = execution_events, check_for_backend(Pg))]
pub struct ExecutionEvent {
    /// Its position in the log (the SSE event id).
    pub id: i64,
    /// Which execution.
    pub execution_id: Uuid,
    /// `status` or `progress`.
    pub event: String,
    /// The event's payload.
    pub data: Value,
    /// When it happened.
    pub created_at: DateTime<Utc>,
}
