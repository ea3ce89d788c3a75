//! Execution rules: validation against the kind's schema, idempotency keys,
//! who may see what, which transitions a client may ask for, and the quotas
//! that keep one user from filling the queues (admins are exempt from them):
//! a cap on unfinished executions, daily allowances of metered work, and what
//! only admins may ask for (priority above 0, a kind's reserved inputs).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::core::platform::Platform;
use crate::executions::config::QuotaConfig;
use crate::executions::events::EventStreams;
use crate::executions::kinds::KindRegistry;
use crate::executions::models::{Execution, ExecutionEvent, NewExecution, Status};
use crate::executions::queue::NotificationHub;
use crate::executions::repository::{self, ExecutionFilter};
use crate::executions::schemas::{CreateExecutionRequest, ExecutionListQuery, ExecutionSummary};
use crate::shared::error::{AppError, FieldError, LocSegment};
use crate::shared::pagination::{Cursor, Page, checked_limit, fetch_limit};
use crate::shared::validation::Validator;
use crate::users::models::{Role, User};

/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// When a user at the unfinished cap is told to try again: work of the
/// default kinds finishes in seconds to minutes, and nothing says which.
const UNFINISHED_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The window of the daily allowances.
const ALLOWANCE_WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// What the executions domain keeps for the life of the process.
#[derive(Clone)]
pub struct ExecutionsState {
    /// The kinds this deployment runs.
    pub registry: Arc<KindRegistry>,
    /// Notifications from other processes (and this one).
    pub hub: Arc<NotificationHub>,
    /// What one user may ask of the queues.
    pub quotas: Arc<QuotaConfig>,
    /// The open event streams: their limits and the feeds that push to them.
    pub streams: Arc<EventStreams>,
}

/// A validated submission.
pub struct Submission {
    new: NewExecution,
    /// Its units of metered work.
    cost: u64,
    /// What in it only admins may ask for.
    reserved_for_admins: Vec<FieldError>,
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
    let checked = match registry.check_input(&request.kind, &request.input) {
        Ok(checked) => Some(checked),
        Err(kind_errors) => {
            errors.splice(0..0, kind_errors);
            None
        }
    };
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let (Some(checked), Some(queue)) = (checked, registry.queue_of(&request.kind)) else {
        return Err(AppError::internal("a validated kind has no queue"));
    };
    let input = checked.value;
    let reserved_for_admins =
        admin_only(request.priority.unwrap_or(0), checked.reserved_for_admins);
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
            internal: false,
        },
        cost: checked.cost,
        reserved_for_admins,
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
    if request
        .name
        .as_deref()
        .is_some_and(|name| !is_valid_name(name))
    {
        fail(
            &["body", "name"],
            "must be 1 to 100 characters, not only whitespace, without control characters",
        );
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

/// Whether `name` may name an execution: 1 to 100 characters as sent (the
/// document's `maxLength` counts them the same way), not only whitespace, no
/// control characters (the pattern of `CreateExecutionRequest::name`).
fn is_valid_name(name: &str) -> bool {
    (1..=100).contains(&name.chars().count())
        && !name.trim().is_empty()
        && !name.chars().any(char::is_control)
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
    let existing = earlier_use_of_key(conn, &new)
        .await?
        .ok_or_else(|| AppError::internal("an idempotency conflict without a row"))?;
    replay(existing, &new).map(|existing| (existing, false))
}

/// The execution the owner submitted earlier with this submission's key, if any.
async fn earlier_use_of_key(
    conn: &mut AsyncPgConnection,
    new: &NewExecution,
) -> Result<Option<Execution>, AppError> {
    let Some(key) = new.idempotency_key.as_deref() else {
        return Ok(None);
    };
    Ok(repository::find_by_idempotency_key(conn, new.owner_id, key).await?)
}

/// The earlier execution, if `new` repeats its request; a conflict if the key
/// was used for a different one.
fn replay(existing: Execution, new: &NewExecution) -> Result<Execution, AppError> {
    if existing.request_hash == new.request_hash {
        Ok(existing)
    } else {
        Err(AppError::Conflict {
            code: "idempotency_key_reused",
            detail: "This Idempotency-Key was used for a different request.".to_owned(),
        })
    }
}

/// `POST /executions`: validates, applies the caller's quotas and enqueues,
/// in one transaction. An admin is held to none of the quotas; for anyone
/// else the quota checks run under a lock of their own, so concurrent
/// submissions cannot all pass a count that only one of them fits under, and
/// a replay of an idempotency key answers before any quota is counted.
pub async fn submit(
    platform: &Platform,
    executions: &ExecutionsState,
    user: &User,
    request: &CreateExecutionRequest,
    idempotency_key: Option<&str>,
) -> Result<(Execution, bool), AppError> {
    let submission = validate(&executions.registry, user.id, request, idempotency_key)?;
    if user.role == Role::Admin {
        let mut conn = platform.pool.get().await?;
        return conn
            .transaction::<_, AppError, _>(async move |conn| enqueue(conn, submission).await)
            .await;
    }
    refuse_reserved_for_admins(&submission.reserved_for_admins)?;
    let quotas = executions.quotas.clone();
    refuse_beyond_any_day(&quotas, &request.kind, submission.cost)?;
    let mut conn = platform.pool.get().await?;
    conn.transaction::<_, AppError, _>(async move |conn| {
        repository::lock_quotas_of(conn, submission.new.owner_id).await?;
        if let Some(existing) = earlier_use_of_key(conn, &submission.new).await? {
            return replay(existing, &submission.new).map(|existing| (existing, false));
        }
        let (owner, kind, cost) = (
            submission.new.owner_id,
            submission.new.kind.clone(),
            submission.cost,
        );
        refuse_past_unfinished_cap(conn, &quotas, owner).await?;
        spend_allowance(conn, &quotas, owner, &kind, cost).await?;
        enqueue(conn, submission).await
    })
    .await
}

/// What of a submission only admins may ask for: a priority above 0, and what
/// the kind reserves (`kind_reserved`, e.g. a sleep longer than a minute).
fn admin_only(priority: i16, mut kind_reserved: Vec<FieldError>) -> Vec<FieldError> {
    if priority > 0 {
        kind_reserved.insert(0, FieldError::body("priority").because("above 0"));
    }
    kind_reserved
}

/// The same rules for a re-run: a user demoted since submitting (or one
/// re-running an admin's work) may not re-queue what only admins may submit.
fn refuse_rerun_reserved_for_admins(
    registry: &KindRegistry,
    execution: &Execution,
) -> Result<(), AppError> {
    // A stored input that no longer parses reserves nothing; it fails when run.
    let kind_reserved = registry
        .check_input(&execution.kind, &execution.input)
        .map(|checked| checked.reserved_for_admins)
        .unwrap_or_default();
    refuse_reserved_for_admins(&admin_only(execution.priority, kind_reserved))
}

/// 403 when the submission asks for what only admins may, naming each field.
fn refuse_reserved_for_admins(reserved: &[FieldError]) -> Result<(), AppError> {
    if reserved.is_empty() {
        return Ok(());
    }
    let what: Vec<String> = reserved
        .iter()
        .map(|error| format!("{} {}", dotted(&error.loc), error.msg))
        .collect();
    Err(AppError::Forbidden {
        code: "admin_required",
        detail: format!("Only admins may submit {}.", what.join("; ")),
    })
}

/// `body.input.duration_ms`, for a message.
fn dotted(loc: &[LocSegment]) -> String {
    let parts: Vec<String> = loc
        .iter()
        .map(|segment| match segment {
            LocSegment::Key(key) => key.clone(),
            LocSegment::Index(index) => index.to_string(),
        })
        .collect();
    parts.join(".")
}

/// 422 for an input that asks for more metered work than one day allows:
/// it could never be accepted, so waiting is no answer.
fn refuse_beyond_any_day(quotas: &QuotaConfig, kind: &str, cost: u64) -> Result<(), AppError> {
    match quotas.daily_allowance(kind) {
        Some(allowance) if cost > allowance.units => Err(AppError::Validation(vec![
            FieldError::body("input")
                .because(format!(
                    "asks for {cost} {unit}; one user may ask for at most {limit} {unit} of {kind} a day",
                    unit = allowance.unit,
                    limit = allowance.units,
                ))
                .kind("too_large"),
        ])),
        _ => Ok(()),
    }
}

/// 429 `too_many_executions` when the owner already has as many queued or
/// running executions as one user may.
async fn refuse_past_unfinished_cap(
    conn: &mut AsyncPgConnection,
    quotas: &QuotaConfig,
    owner_id: Uuid,
) -> Result<(), AppError> {
    let unfinished = repository::count_unfinished(conn, owner_id).await?;
    if unfinished < i64::from(quotas.max_unfinished_per_user) {
        return Ok(());
    }
    Err(AppError::LimitReached {
        code: "too_many_executions",
        detail: format!(
            "You have {unfinished} queued or running executions, the most one user may have; \
             submit more when some finish, or cancel some."
        ),
        retry_after: UNFINISHED_RETRY_AFTER,
    })
}

/// Spends `cost` units of `kind`'s daily allowance, or answers 429
/// `daily_allowance_exceeded` (retry when the oldest spending in the window
/// leaves it) if the owner's last 24 hours leave too little. Unmetered kinds
/// and costless inputs spend nothing.
async fn spend_allowance(
    conn: &mut AsyncPgConnection,
    quotas: &QuotaConfig,
    owner_id: Uuid,
    kind: &str,
    cost: u64,
) -> Result<(), AppError> {
    let Some(allowance) = quotas.daily_allowance(kind).filter(|_| cost > 0) else {
        return Ok(());
    };
    let units = i64::try_from(cost).unwrap_or(i64::MAX);
    let limit = i64::try_from(allowance.units).unwrap_or(i64::MAX);
    let now = Utc::now();
    let since = now - ALLOWANCE_WINDOW;
    let spent = repository::usage_since(conn, owner_id, kind, since).await?;
    if spent.units.saturating_add(units) > limit {
        let frees_at = spent
            .oldest
            .map_or(now + ALLOWANCE_WINDOW, |oldest| oldest + ALLOWANCE_WINDOW);
        return Err(AppError::LimitReached {
            code: "daily_allowance_exceeded",
            detail: format!(
                "{kind} allows {limit} {unit} per user in any 24 hours; you used {used} and this asks for {units}.",
                unit = allowance.unit,
                used = spent.units,
            ),
            retry_after: (frees_at - now).to_std().unwrap_or_default(),
        });
    }
    repository::record_usage(conn, owner_id, kind, units, since).await?;
    Ok(())
}

/// Enqueues work of an internal kind ([`KindRegistry::register_internal`])
/// for `owner_id` on `conn`, inside the caller's transaction: the work exists
/// exactly when the data that caused it does (a transactional outbox). The
/// input is checked as strictly as a client's; no quota applies, since the
/// service, not the owner, asked for it.
pub async fn enqueue_internal(
    conn: &mut AsyncPgConnection,
    registry: &KindRegistry,
    owner_id: Uuid,
    kind: &str,
    input: &serde_json::Value,
    max_attempts: i32,
) -> Result<Execution, AppError> {
    let (Some(queue), true) = (registry.queue_of(kind), registry.is_internal(kind)) else {
        return Err(AppError::internal(format!(
            "{kind} is not a registered internal kind"
        )));
    };
    let checked = registry
        .check_service_input(kind, input)
        .map_err(|errors| AppError::internal(format!("an invalid {kind} input: {errors:?}")))?;
    let name = generated_name(registry, kind, &checked.value);
    let new = NewExecution {
        id: Uuid::now_v7(),
        owner_id,
        kind: kind.to_owned(),
        queue: queue.to_owned(),
        name,
        input: checked.value,
        priority: 0,
        run_at: Utc::now(),
        max_attempts,
        timeout_s: None,
        idempotency_key: None,
        request_hash: None,
        internal: true,
    };
    repository::insert(conn, &new)
        .await?
        .ok_or_else(|| AppError::internal("an execution without a key conflicted"))
}

/// The execution if `user` may see it (its owner, or an admin; only admins
/// see internal executions); 404 otherwise, so ids of other users' work are
/// not confirmed.
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
        .filter(|execution| {
            (execution.owner_id == user.id && !execution.internal) || user.role == Role::Admin
        })
        .ok_or_else(|| AppError::NotFound("No execution of yours has this id.".to_owned()))
}

/// One page of the caller's executions (everyone's for admins asking `all`).
pub async fn list(
    platform: &Platform,
    registry: &KindRegistry,
    user: &User,
    query: ExecutionListQuery,
) -> Result<Page<ExecutionSummary>, AppError> {
    let mut validator = Validator::new();
    if query
        .kind
        .as_deref()
        .is_some_and(|kind| !registry.knows(kind))
    {
        validator.push(registry.unknown_kind(FieldError::query("kind")));
    }
    let limit = validator.check(FieldError::query("limit"), checked_limit(query.limit));
    let before = validator.check_optional(FieldError::query("cursor"), query.cursor, |cursor| {
        Cursor::parse(&cursor).map(Cursor::key)
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
        with_internal: user.role == Role::Admin,
    };
    let limit = limit.unwrap_or_default();
    let mut conn = platform.pool.get().await?;
    let rows = repository::list(&mut conn, &filter, before, fetch_limit(limit)).await?;
    Ok(Page::from_rows(
        rows,
        limit,
        |execution| execution.id.to_string(),
        ExecutionSummary::from,
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

/// `POST /executions/{id}/retry`: queues a failed or cancelled execution
/// again, at most `MAX_EXECUTION_RERUNS` times. For anyone but an admin it
/// passes the same quotas as a submission (a re-run is more work queued and,
/// for metered kinds, spends the allowance again).
pub async fn retry(
    platform: &Platform,
    executions: &ExecutionsState,
    user: &User,
    id: Uuid,
) -> Result<Execution, AppError> {
    let max_reruns = i32::try_from(executions.quotas.max_reruns).unwrap_or(i32::MAX);
    let mut conn = platform.pool.get().await?;
    let execution = visible(&mut conn, user, id).await?;
    if let Some(refusal) = why_not_rerunnable(&execution, max_reruns) {
        return Err(refusal);
    }
    let exempt = user.role == Role::Admin;
    if !exempt {
        refuse_rerun_reserved_for_admins(&executions.registry, &execution)?;
    }
    let cost = executions.registry.cost(&execution.kind, &execution.input);
    let quotas = executions.quotas.clone();
    conn.transaction::<_, AppError, _>(async move |conn| {
        if !exempt {
            repository::lock_quotas_of(conn, user.id).await?;
            refuse_past_unfinished_cap(conn, &quotas, user.id).await?;
            spend_allowance(conn, &quotas, user.id, &execution.kind, cost).await?;
        }
        if let Some(queued) = repository::retry(conn, id, max_reruns).await? {
            return Ok(queued);
        }
        // It changed since it was read (another retry, a deletion): say why now.
        let now = visible(conn, user, id).await?;
        Err(
            why_not_rerunnable(&now, max_reruns).unwrap_or_else(|| AppError::Conflict {
                code: "invalid_transition",
                detail: "The execution changed while it was being retried; try again.".to_owned(),
            }),
        )
    })
    .await
}

/// Why `execution` cannot be re-run: 409 `invalid_transition` unless it
/// failed or was cancelled, 409 `rerun_limit_reached` past the re-run bound.
fn why_not_rerunnable(execution: &Execution, max_reruns: i32) -> Option<AppError> {
    if !matches!(execution.status, Status::Failed | Status::Cancelled) {
        return Some(already_finished(
            execution,
            "retried (only failed or cancelled ones can)",
        ));
    }
    (execution.reruns >= max_reruns).then(|| AppError::Conflict {
        code: "rerun_limit_reached",
        detail: format!(
            "This execution was re-run {} times, the most one execution may be; submit it anew.",
            execution.reruns
        ),
    })
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
