//! Request and response bodies of `/api/v1/executions`.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::executions::models::{Execution, ExecutionSummaryRow, Status};
use crate::shared::pagination::Cursor;

/// Submits background work. The document shows it as a union over the
/// registered kinds (`executions::document`); this type's own schema is
/// where the options every kind shares are written.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateExecutionRequest {
    /// Which kind of work.
    #[schema(value_type = KindName)]
    pub kind: String,
    /// The kind's input: at most 64 KiB as compact JSON (`embed_texts`: 8 MiB,
    /// within `REQUEST_BODY_LIMIT_BYTES`).
    #[schema(value_type = Object)]
    pub input: Value,
    /// A name to show (1 to 100 characters, not only whitespace, no control
    /// characters; stored trimmed); generated from the kind and input when absent.
    /// The pattern spells out the whitespace `str::trim` removes, so that every
    /// regex engine reads the same set.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: Option<String>,
    /// Higher runs first, -100 to 100 (default 0); above 0 is for admins (`403 admin_required`).
    #[schema(minimum = -100, maximum = 100)]
    pub priority: Option<i16>,
    /// Not before this time (UTC; a time past runs as soon as a worker is free).
    /// Any time the format allows: a far one only holds one of its owner's
    /// `MAX_UNFINISHED_EXECUTIONS_PER_USER` places until it is cancelled.
    pub run_at: Option<DateTime<Utc>>,
    /// Attempts before it fails for good, 1 to 25 (default 3).
    #[schema(minimum = 1, maximum = 25)]
    pub max_attempts: Option<i32>,
    /// Per-attempt time limit in seconds, 1 to 86400 (default: none).
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout_s: Option<i32>,
}

/// The name of a registered kind. Its own schema is any string; the document
/// lists the registered names in its place (`ExecutionKind`).
pub struct KindName;

impl utoipa::PartialSchema for KindName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A kind of background work this deployment runs; each has its own input and output schema.",
            ))
            .into()
    }
}

impl ToSchema for KindName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ExecutionKind")
    }
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

/// An execution as clients see it: its summary and, what a list leaves out,
/// its input, result and error history. The document shows it per kind
/// (`executions::document`), with each kind's input and output schema.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecutionResponse {
    /// What a list shows of it.
    #[serde(flatten)]
    pub summary: ExecutionSummary,
    /// The input as validated (defaults filled in).
    #[schema(value_type = Object)]
    pub input: Value,
    /// The output once it succeeded; `null` until then.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// The errors of its last 10 failed attempts, oldest first.
    pub errors: Vec<AttemptError>,
}

impl From<Execution> for ExecutionResponse {
    fn from(execution: Execution) -> Self {
        Self {
            errors: serde_json::from_value(execution.errors).unwrap_or_default(),
            summary: ExecutionSummary {
                id: execution.id,
                owner_id: execution.owner_id,
                kind: execution.kind,
                name: execution.name,
                status: execution.status,
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
            },
            input: execution.input,
            result: execution.result,
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
    #[schema(value_type = KindName)]
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Where it is in its life.
    pub status: Status,
    /// 0 to 100.
    #[schema(minimum = 0, maximum = 100)]
    pub progress: i16,
    /// What the work last said it was doing.
    #[schema(required)]
    pub progress_message: Option<String>,
    /// The current or last attempt (0 before the first).
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Per-attempt time limit in seconds.
    #[schema(required)]
    pub timeout_s: Option<i32>,
    /// Higher runs first.
    pub priority: i16,
    /// Cancellation was asked while it runs.
    pub cancel_requested: bool,
    /// How often it was re-run (at most `MAX_EXECUTION_RERUNS`).
    pub reruns: i32,
    /// Not before.
    pub run_at: DateTime<Utc>,
    /// Submitted at.
    pub created_at: DateTime<Utc>,
    /// First started at.
    #[schema(required)]
    pub started_at: Option<DateTime<Utc>>,
    /// Finished at.
    #[schema(required)]
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

/// One Server-Sent Event of `GET /executions/{id}/events`, as `EventSource`
/// delivers it: the document's description of each message on the stream
/// (OpenAPI 3.1 describes a `text/event-stream` response by its events).
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionStreamEvent {
    /// What changed.
    pub event: StreamEventName,
    /// The change as JSON: `execution_id` and `at`, with `status` and `attempt`
    /// for a `status` event, `progress` (0 to 100) and `message` for a `progress` one.
    #[schema(content_media_type = "application/json")]
    pub data: String,
    /// The event's place in the execution's log: send it back as `Last-Event-ID` to resume.
    #[schema(pattern = "^[0-9]+$")]
    pub id: String,
}

/// The events of an execution's stream.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamEventName {
    /// Its status changed (`queued`, `running`, or how it finished).
    Status,
    /// Its work reported progress.
    Progress,
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
    #[param(inline, value_type = Option<Cursor>)]
    pub cursor: Option<String>,
    /// Only this status.
    pub status: Option<Status>,
    /// Only this kind (a registered one).
    #[param(value_type = Option<KindName>)]
    pub kind: Option<String>,
    /// Admins only: everyone's executions, not just their own.
    pub all: Option<bool>,
}

/// Asks for the name the service would generate. The document shows it as a
/// union over the registered kinds (`executions::document`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateNameRequest {
    /// Which kind of work.
    #[schema(value_type = KindName)]
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
