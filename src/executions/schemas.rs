//! Request and response bodies of `/api/v1/executions`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::executions::models::{Execution, ExecutionSummaryRow, Status};

/// Submits background work.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateExecutionRequest {
    /// Which kind of work (`GET /openapi.json` lists each kind's input schema, e.g. `SleepInput`).
    #[schema(example = "sleep")]
    pub kind: String,
    /// The kind's input: at most 64 KiB as compact JSON (`embed_texts`: 8 MiB,
    /// within `REQUEST_BODY_LIMIT_BYTES`).
    #[schema(value_type = Object, example = json!({"duration_ms": 1500}))]
    pub input: Value,
    /// A name to show; generated from the kind and input when absent (1 to 100 characters).
    pub name: Option<String>,
    /// Higher runs first, -100 to 100 (default 0); above 0 is for admins.
    #[schema(minimum = -100, maximum = 100)]
    pub priority: Option<i16>,
    /// Not before this time (UTC; at most a year ahead).
    pub run_at: Option<DateTime<Utc>>,
    /// Attempts before it fails for good, 1 to 25 (default 3).
    #[schema(minimum = 1, maximum = 25)]
    pub max_attempts: Option<i32>,
    /// Per-attempt time limit in seconds, 1 to 86400 (default: none).
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout_s: Option<i32>,
}

/// One failed attempt.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptError {
    /// Which attempt.
    pub attempt: i32,
    /// When it failed.
    pub at: DateTime<Utc>,
    /// What went wrong.
    pub message: String,
}

/// An execution as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecutionResponse {
    /// Its id.
    pub id: Uuid,
    /// Whose it is.
    pub owner_id: Uuid,
    /// Which kind of work.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Where it is in its life.
    pub status: Status,
    /// The input as validated (defaults filled in).
    #[schema(value_type = Object)]
    pub input: Value,
    /// The output, once succeeded.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// 0 to 100.
    pub progress: i16,
    /// What the work last said it was doing.
    pub progress_message: Option<String>,
    /// The current or last attempt (0 before the first).
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Per-attempt time limit.
    pub timeout_s: Option<i32>,
    /// Higher runs first.
    pub priority: i16,
    /// Every failed attempt, oldest first.
    pub errors: Vec<AttemptError>,
    /// Cancellation was asked while it runs.
    pub cancel_requested: bool,
    /// How often it was re-run (at most `MAX_EXECUTION_RERUNS`).
    pub reruns: i32,
    /// Not before.
    pub run_at: DateTime<Utc>,
    /// Submitted at.
    pub created_at: DateTime<Utc>,
    /// First started at.
    pub started_at: Option<DateTime<Utc>>,
    /// Finished at.
    pub finished_at: Option<DateTime<Utc>>,
    /// Last changed at.
    pub updated_at: DateTime<Utc>,
}

impl From<Execution> for ExecutionResponse {
    fn from(execution: Execution) -> Self {
        Self {
            errors: serde_json::from_value(execution.errors).unwrap_or_default(),
            id: execution.id,
            owner_id: execution.owner_id,
            kind: execution.kind,
            name: execution.name,
            status: execution.status,
            input: execution.input,
            result: execution.result,
            progress: execution.progress,
            progress_message: execution.progress_message,
            attempt: execution.attempt,
            max_attempts: execution.max_attempts,
            timeout_s: execution.timeout_s,
            priority: execution.priority,
            cancel_requested: execution.cancel_requested,
            reruns: execution.reruns,
            run_at: execution.run_at,
            created_at: execution.created_at,
            started_at: execution.started_at,
            finished_at: execution.finished_at,
            updated_at: execution.updated_at,
        }
    }
}

/// An execution as a list shows it: everything but the input, the result and
/// the error history (`GET /executions/{id}` has them), so a page stays small
/// whatever the work was.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecutionSummary {
    /// Its id.
    pub id: Uuid,
    /// Whose it is.
    pub owner_id: Uuid,
    /// Which kind of work.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Where it is in its life.
    pub status: Status,
    /// 0 to 100.
    pub progress: i16,
    /// What the work last said it was doing.
    pub progress_message: Option<String>,
    /// The current or last attempt (0 before the first).
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Per-attempt time limit.
    pub timeout_s: Option<i32>,
    /// Higher runs first.
    pub priority: i16,
    /// Cancellation was asked while it runs.
    pub cancel_requested: bool,
    /// How often it was re-run.
    pub reruns: i32,
    /// Not before.
    pub run_at: DateTime<Utc>,
    /// Submitted at.
    pub created_at: DateTime<Utc>,
    /// First started at.
    pub started_at: Option<DateTime<Utc>>,
    /// Finished at.
    pub finished_at: Option<DateTime<Utc>>,
    /// Last changed at.
    pub updated_at: DateTime<Utc>,
}

impl From<ExecutionSummaryRow> for ExecutionSummary {
    fn from(row: ExecutionSummaryRow) -> Self {
        Self {
            id: row.id,
            owner_id: row.owner_id,
            kind: row.kind,
            name: row.name,
            status: row.status,
            progress: row.progress,
            progress_message: row.progress_message,
            attempt: row.attempt,
            max_attempts: row.max_attempts,
            timeout_s: row.timeout_s,
            priority: row.priority,
            cancel_requested: row.cancel_requested,
            reruns: row.reruns,
            run_at: row.run_at,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            updated_at: row.updated_at,
        }
    }
}

/// Filters and paging of the execution list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExecutionListQuery {
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only this status.
    pub status: Option<Status>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Admins only: everyone's executions, not just their own.
    pub all: Option<bool>,
}

/// Asks for the name the service would generate.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateNameRequest {
    /// Which kind of work.
    pub kind: String,
    /// The kind's input.
    #[schema(value_type = Object)]
    pub input: Value,
}

/// A generated name.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GeneratedName {
    /// Short and descriptive, from the kind and the input.
    #[schema(example = "sleep · Sleep 1.5 s")]
    pub name: String,
}
