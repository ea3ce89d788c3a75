//! Execution rules: validation against the kind's schema, idempotency keys,
//! who may see what, and which transitions a client may ask for.

use std::sync::Arc;

use chrono::Utc;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::core::platform::Platform;
use crate::executions::events::EventStreams;
use crate::executions::kinds::KindRegistry;
use crate::executions::models::{Execution, ExecutionEvent, NewExecution};
use crate::executions::queue::NotificationHub;
use crate::executions::repository::{self, ExecutionFilter};
use crate::executions::schemas::{CreateExecutionRequest, ExecutionListQuery, ExecutionResponse};
use crate::shared::error::{AppError, FieldError};
use crate::shared::pagination::{Page, checked_limit, fetch_limit};
use crate::shared::validation::{Invalid, Validator};
use crate::users::models::{Role, User};

/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// What the executions domain keeps for the life of the process.
#[derive(Clone)]
pub struct ExecutionsState {
    /// The kinds this deployment runs.
    pub registry: Arc<KindRegistry>,
    /// Notifications from other processes (and this one).
    pub hub: Arc<NotificationHub>,
    /// The open event streams: their limits and the feeds that push to them.
    pub streams: Arc<EventStreams>,
}

/// A validated submission.
pub struct Submission {
    new: NewExecution,
}

/// Checks a submission against the kind's schema and the API's bounds; every
/// problem is reported at once.
pub fn validate(
    registry: &KindRegistry,
    owner_id: Uuid,
    request: &CreateExecutionRequest,
    idempotency_key: Option<&str>,
) -> Result<Submission, AppError> {
    let mut errors = bounds(request, idempotency_key);
    let input = match registry.parse_input(&request.kind, &request.input) {
        Ok(input) => Some(input),
        Err(kind_errors) => {
            errors.splice(0..0, kind_errors);
            None
        }
    };
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let (Some(input), Some(queue)) = (input, registry.queue_of(&request.kind)) else {
        return Err(AppError::internal("a validated kind has no queue"));
    };
    let name = match &request.name {
        Some(name) => name.trim().to_owned(),
        None => generated_name(registry, &request.kind, &input),
    };
    Ok(Submission {
        new: NewExecution {
            id: Uuid::now_v7(),
            owner_id,
            kind: request.kind.clone(),
            queue: queue.to_owned(),
            name,
            input,
            priority: request.priority.unwrap_or(0),
            run_at: request.run_at.unwrap_or_else(Utc::now),
            max_attempts: request.max_attempts.unwrap_or(3),
            timeout_s: request.timeout_s,
            idempotency_key: idempotency_key.map(str::to_owned),
            request_hash: idempotency_key.map(|_| request_hash(request)),
        },
    })
}

/// The checks that do not depend on the kind.
fn bounds(request: &CreateExecutionRequest, idempotency_key: Option<&str>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut fail = |loc: &[&str], message: &str| {
        errors.push(FieldError::new(
            loc.iter().map(|key| (*key).into()).collect(),
            message,
            "value_error",
        ));
    };
    if let Some(name) = &request.name {
        let length = name.trim().chars().count();
        if length == 0 || length > 100 || name.chars().any(char::is_control) {
            fail(
                &["body", "name"],
                "must be 1 to 100 characters, without control characters",
            );
        }
    }
    if request
        .priority
        .is_some_and(|priority| !(-100..=100).contains(&priority))
    {
        fail(&["body", "priority"], "must be between -100 and 100");
    }
    if request
        .max_attempts
        .is_some_and(|attempts| !(1..=25).contains(&attempts))
    {
        fail(&["body", "max_attempts"], "must be between 1 and 25");
    }
    if request
        .timeout_s
        .is_some_and(|seconds| !(1..=86_400).contains(&seconds))
    {
        fail(
            &["body", "timeout_s"],
            "must be between 1 and 86400 seconds",
        );
    }
    if request
        .run_at
        .is_some_and(|run_at| run_at > Utc::now() + chrono::Duration::days(366))
    {
        fail(&["body", "run_at"], "must be at most a year ahead");
    }
    if let Some(key) = idempotency_key {
        let visible = key.bytes().all(|byte| (0x21..=0x7e).contains(&byte));
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN || !visible {
            fail(
                &["header", "Idempotency-Key"],
                "must be 1 to 255 visible ASCII characters",
            );
        }
    }
    errors
}

/// A fingerprint of the submission, to tell a retry from a different request
/// reusing the same idempotency key.
fn request_hash(request: &CreateExecutionRequest) -> Vec<u8> {
    let canonical = serde_json::to_vec(request).unwrap_or_default();
    Sha256::digest(canonical).to_vec()
}

/// `"<kind> · <description of the input>"`, at most 100 characters.
pub fn generated_name(registry: &KindRegistry, kind: &str, input: &serde_json::Value) -> String {
    let name = format!("{kind} · {}", registry.describe(kind, input));
    name.chars().take(100).collect()
}

/// Enqueues a validated submission on `conn` — inside the caller's transaction
/// when there is one, so the work exists exactly when the data that caused it
/// does. Returns the execution and whether it is new (an idempotent retry
/// returns the original).
pub async fn enqueue(
    conn: &mut AsyncPgConnection,
    submission: Submission,
) -> Result<(Execution, bool), AppError> {
    let new = submission.new;
    if let Some(inserted) = repository::insert(conn, &new).await? {
        return Ok((inserted, true));
    }
    // The key was used before (or concurrently: the unique index made us wait
    // for that insert to commit).
    let key = new.idempotency_key.as_deref().unwrap_or_default();
    let existing = repository::find_by_idempotency_key(conn, new.owner_id, key)
        .await?
        .ok_or_else(|| AppError::internal("an idempotency conflict without a row"))?;
    if existing.request_hash == new.request_hash {
        Ok((existing, false))
    } else {
        Err(AppError::Conflict {
            code: "idempotency_key_reused",
            detail: "This Idempotency-Key was used for a different request.".to_owned(),
        })
    }
}

/// `POST /executions`: validates and enqueues in one transaction.
pub async fn submit(
    platform: &Platform,
    registry: &KindRegistry,
    user: &User,
    request: &CreateExecutionRequest,
    idempotency_key: Option<&str>,
) -> Result<(Execution, bool), AppError> {
    let submission = validate(registry, user.id, request, idempotency_key)?;
    let mut conn = platform.pool.get().await?;
    conn.transaction::<_, AppError, _>(async move |conn| enqueue(conn, submission).await)
        .await
}

/// The execution if `user` may see it (its owner, or an admin); 404 otherwise,
/// so ids of other users' work are not confirmed.
pub async fn get(platform: &Platform, user: &User, id: Uuid) -> Result<Execution, AppError> {
    let mut conn = platform.pool.get().await?;
    visible(&mut conn, user, id).await
}

async fn visible(
    conn: &mut AsyncPgConnection,
    user: &User,
    id: Uuid,
) -> Result<Execution, AppError> {
    repository::find(conn, id)
        .await?
        .filter(|execution| execution.owner_id == user.id || user.role == Role::Admin)
        .ok_or_else(|| AppError::NotFound("No execution of yours has this id.".to_owned()))
}

/// One page of the caller's executions (everyone's for admins asking `all`).
pub async fn list(
    platform: &Platform,
    user: &User,
    query: ExecutionListQuery,
) -> Result<Page<ExecutionResponse>, AppError> {
    let mut validator = Validator::new();
    let limit = validator.check(FieldError::query("limit"), checked_limit(query.limit));
    let before = validator.check_optional(FieldError::query("cursor"), query.cursor, |cursor| {
        Uuid::parse_str(&cursor).map_err(|_| Invalid::new("is not a cursor this API returned"))
    });
    validator.into_result()?;
    let everyone = query.all.unwrap_or(false);
    if everyone && user.role != Role::Admin {
        return Err(AppError::Forbidden {
            code: "admin_required",
            detail: "Only admins may list everyone's executions.".to_owned(),
        });
    }
    let filter = ExecutionFilter {
        owner_id: (!everyone).then_some(user.id),
        status: query.status,
        kind: query.kind,
    };
    let limit = limit.unwrap_or_default();
    let mut conn = platform.pool.get().await?;
    let rows = repository::list(&mut conn, &filter, before, fetch_limit(limit)).await?;
    Ok(Page::from_rows(
        rows,
        limit,
        |execution| execution.id.to_string(),
        ExecutionResponse::from,
    ))
}

fn already_finished(execution: &Execution, action: &str) -> AppError {
    AppError::Conflict {
        code: "invalid_transition",
        detail: format!(
            "The execution is {}; it cannot be {action}.",
            execution.status.as_str()
        ),
    }
}

/// `POST /executions/{id}/cancel`: a queued execution is cancelled at once; a
/// running one is signalled (its worker stops it within moments).
pub async fn cancel(platform: &Platform, user: &User, id: Uuid) -> Result<Execution, AppError> {
    let mut conn = platform.pool.get().await?;
    let execution = visible(&mut conn, user, id).await?;
    match repository::request_cancel(&mut conn, id).await? {
        Some(changed) => Ok(changed),
        None => Err(already_finished(&execution, "cancelled")),
    }
}

/// `POST /executions/{id}/retry`: queues a failed or cancelled execution again.
pub async fn retry(platform: &Platform, user: &User, id: Uuid) -> Result<Execution, AppError> {
    let mut conn = platform.pool.get().await?;
    let execution = visible(&mut conn, user, id).await?;
    repository::retry(&mut conn, id)
        .await?
        .ok_or_else(|| already_finished(&execution, "retried (only failed or cancelled ones can)"))
}

/// `DELETE /executions/{id}`: removes a finished execution and its events.
pub async fn delete(platform: &Platform, user: &User, id: Uuid) -> Result<(), AppError> {
    let mut conn = platform.pool.get().await?;
    let execution = visible(&mut conn, user, id).await?;
    if repository::delete_finished(&mut conn, id).await? {
        Ok(())
    } else {
        Err(already_finished(
            &execution,
            "deleted before it finishes; cancel it first",
        ))
    }
}

/// The events of a visible execution after `after`, and the execution now.
pub async fn events_after(
    platform: &Platform,
    user: &User,
    id: Uuid,
    after: i64,
) -> Result<(Execution, Vec<ExecutionEvent>), AppError> {
    let mut conn = platform.pool.get().await?;
    let execution = visible(&mut conn, user, id).await?;
    let events = repository::events_after(&mut conn, id, after).await?;
    Ok((execution, events))
}
