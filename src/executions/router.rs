//! `/api/v1/executions`: submit, track, cancel, retry, delete, and stream
//! background work.

use std::convert::Infallible;

use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::extract::{ExecutionsReadScope, ExecutionsWriteScope, ScopedUser};
use crate::auth::service::AuthState;
use crate::core::http::HeldPermit;
use crate::core::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::core::platform::Platform;
use crate::executions::events;
use crate::executions::schemas::{
    CreateExecutionRequest, ExecutionListQuery, ExecutionResponse, ExecutionStreamEvent,
    ExecutionSummary, GenerateNameRequest, GeneratedName,
};
use crate::executions::service::{self, ExecutionsState};
use crate::shared::error::{AppError, FieldError, Problem};
use crate::shared::pagination::Page;

/// The OpenAPI tag of these routes.
pub const TAG: &str = "executions";

/// The executions routes.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    Platform: FromRef<S>,
    AuthState: FromRef<S>,
    ExecutionsState: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(create_execution, list_executions))
        .routes(routes!(generate_name))
        .routes(routes!(get_execution, delete_execution))
        .routes(routes!(cancel_execution))
        .routes(routes!(retry_execution))
        .routes(routes!(stream_events))
}

fn execution_location(id: Uuid) -> String {
    format!("/api/v1/executions/{id}")
}

/// Submit work to run in the background.
///
/// Answers `202` at once; an `Idempotency-Key` makes retries safe.
///
/// Bounded per user (admins are exempt): at most `MAX_UNFINISHED_EXECUTIONS_PER_USER`
/// queued or running executions, and for metered kinds a daily allowance
/// (`embed_texts`: `MAX_EMBED_TEXTS_PER_DAY` texts in any 24 hours). A `priority`
/// above 0 and a `sleep` over a minute are for admins. The input may take at most
/// 64 KiB as compact JSON (`embed_texts`: 8 MiB, within `REQUEST_BODY_LIMIT_BYTES`).
#[utoipa::path(post, path = "/executions", tag = TAG, operation_id = "executions-create",
    request_body = CreateExecutionRequest,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = r"^[\x21-\x7e]+$",
        description = "Makes the request safe to retry: the same key and body return the same execution (1 to 255 visible ASCII characters).")),
    security(("bearer" = []), ("api_key" = ["executions:write"])),
    responses(
        (status = 202, description = "Accepted; `Location` names the execution.", body = ExecutionResponse, headers(("Location" = String))),
        (status = 200, description = "A retry with the same Idempotency-Key and body: the original execution.", body = ExecutionResponse),
        (status = 403, description = "`admin_required`: a `priority` above 0, or an input only admins may submit (a `sleep` over a minute); the detail names the field.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The Idempotency-Key was used for a different request.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown kind, an input over its kind's size limit (`too_large`, checked first), an input that does not fit the kind's schema, or more metered work than one day allows.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_executions`: as many unfinished executions as one user may have; `daily_allowance_exceeded`: the kind's daily allowance is spent. `Retry-After` says when to try again.", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ))]
async fn create_execution(
    State(platform): State<Platform>,
    State(executions): State<ExecutionsState>,
    ScopedUser(user, _): ScopedUser<ExecutionsWriteScope>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CreateExecutionRequest>,
) -> Result<Response, AppError> {
    let key = idempotency_key(&headers)?;
    let (execution, created) =
        service::submit(&platform, &executions, &user, &request, key.as_deref()).await?;
    let location = execution_location(execution.id);
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let mut response = (status, axum::Json(ExecutionResponse::from(execution))).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    if !created {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(value) => value.to_str().map(|key| Some(key.to_owned())).map_err(|_| {
            AppError::Validation(vec![
                FieldError::header("Idempotency-Key").because("must be visible ASCII"),
            ])
        }),
    }
}

/// List the caller's executions, newest first.
///
/// Admins see everyone's with `all=true`.
///
/// Items are summaries, without `input`, `result` and `errors` (`GET
/// /executions/{id}` has them), so a page is small whatever the work was.
#[utoipa::path(get, path = "/executions", tag = TAG, operation_id = "executions-list",
    params(ExecutionListQuery),
    security(("bearer" = []), ("api_key" = ["executions:read"])),
    responses(
        (status = 200, description = "One page of execution summaries (no `input`, `result` or `errors`).", body = Page<ExecutionSummary>),
        (status = 403, description = "`all=true` from a non-admin.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filters: a `limit` out of range, a `cursor` this API did not return, an unknown `status` or `kind`, an unknown parameter.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_executions(
    State(platform): State<Platform>,
    State(executions): State<ExecutionsState>,
    ScopedUser(user, _): ScopedUser<ExecutionsReadScope>,
    ApiQuery(query): ApiQuery<ExecutionListQuery>,
) -> Result<axum::Json<Page<ExecutionSummary>>, AppError> {
    Ok(axum::Json(
        service::list(&platform, &executions.registry, &user, query).await?,
    ))
}

/// Preview the name the service would give a submission.
#[utoipa::path(post, path = "/executions/generate-name", tag = TAG, operation_id = "executions-generate-name",
    request_body = GenerateNameRequest,
    security(("bearer" = []), ("api_key" = ["executions:write"])),
    responses(
        (status = 200, description = "The generated name.", body = GeneratedName),
        (status = 422, description = "Unknown kind or invalid input.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn generate_name(
    State(executions): State<ExecutionsState>,
    ScopedUser(_user, _): ScopedUser<ExecutionsWriteScope>,
    ApiJson(request): ApiJson<GenerateNameRequest>,
) -> Result<axum::Json<GeneratedName>, AppError> {
    let checked = executions
        .registry
        .check_input(&request.kind, &request.input)
        .map_err(AppError::Validation)?;
    Ok(axum::Json(GeneratedName {
        name: service::generated_name(&executions.registry, &request.kind, &checked.value),
    }))
}

/// Read one execution: status, attempt, progress, result and error history.
#[utoipa::path(get, path = "/executions/{id}", tag = TAG, operation_id = "executions-get",
    params(("id" = Uuid, Path, description = "The execution's id.")),
    security(("bearer" = []), ("api_key" = ["executions:read"])),
    responses(
        (status = 200, description = "The execution.", body = ExecutionResponse),
        (status = 404, description = "No execution of yours has this id.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_execution(
    State(platform): State<Platform>,
    ScopedUser(user, _): ScopedUser<ExecutionsReadScope>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<ExecutionResponse>, AppError> {
    Ok(axum::Json(service::get(&platform, &user, id).await?.into()))
}

/// Delete a finished execution.
#[utoipa::path(delete, path = "/executions/{id}", tag = TAG, operation_id = "executions-delete",
    params(("id" = Uuid, Path, description = "The execution's id.")),
    security(("bearer" = []), ("api_key" = ["executions:write"])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No execution of yours has this id.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not finished yet.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn delete_execution(
    State(platform): State<Platform>,
    ScopedUser(user, _): ScopedUser<ExecutionsWriteScope>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, AppError> {
    service::delete(&platform, &user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Cancel an execution: queued work at once, running work by signal.
#[utoipa::path(post, path = "/executions/{id}/cancel", tag = TAG, operation_id = "executions-cancel",
    params(("id" = Uuid, Path, description = "The execution's id.")),
    security(("bearer" = []), ("api_key" = ["executions:write"])),
    responses(
        (status = 202, description = "Cancelled (if it was queued) or signalled (if running; it ends `cancelled` shortly).", body = ExecutionResponse),
        (status = 404, description = "No execution of yours has this id.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already finished.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn cancel_execution(
    State(platform): State<Platform>,
    ScopedUser(user, _): ScopedUser<ExecutionsWriteScope>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, axum::Json<ExecutionResponse>), AppError> {
    let execution = service::cancel(&platform, &user, id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(execution.into())))
}

/// Queue a failed or cancelled execution again.
///
/// One execution may be re-run at most `MAX_EXECUTION_RERUNS` times (`reruns`
/// counts them); a re-run passes the same per-user quotas as a submission.
#[utoipa::path(post, path = "/executions/{id}/retry", tag = TAG, operation_id = "executions-retry",
    params(("id" = Uuid, Path, description = "The execution's id.")),
    security(("bearer" = []), ("api_key" = ["executions:write"])),
    responses(
        (status = 202, description = "Queued again, with a fresh set of attempts.", body = ExecutionResponse),
        (status = 404, description = "No execution of yours has this id.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`invalid_transition`: not failed or cancelled; `rerun_limit_reached`: re-run `MAX_EXECUTION_RERUNS` times already.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_executions` or `daily_allowance_exceeded`, as for a submission.", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ))]
async fn retry_execution(
    State(platform): State<Platform>,
    State(executions): State<ExecutionsState>,
    ScopedUser(user, _): ScopedUser<ExecutionsWriteScope>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, axum::Json<ExecutionResponse>), AppError> {
    let execution = service::retry(&platform, &executions, &user, id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(execution.into())))
}

/// Follow an execution's status and progress as Server-Sent Events.
///
/// Resumable with `Last-Event-ID`; ends when the execution finishes, after the stream's maximum lifetime, or when the caller's access ends.
#[utoipa::path(get, path = "/executions/{id}/events", tag = TAG, operation_id = "executions-events",
    description = "Server-Sent Events of every status and progress change of the execution, \
        pushed as they happen. The stream ends when the execution finishes and every event was sent. \
        It also ends cleanly after `EVENT_STREAM_MAX_SECONDS` (an hour by default): reconnect with \
        `Last-Event-ID` (browsers' `EventSource` does so by itself) to carry on without gaps or \
        repeats. It ends as soon as the caller's access does: logout (of that sign-in or all), a \
        password change, deactivation, or losing the admin role while watching someone else's \
        execution; and at the latest `EVENT_STREAM_ACCESS_RECHECK_SECONDS` after the access token \
        expires. One account may hold `MAX_EVENT_STREAMS_PER_USER` streams at once (8 by default) \
        on each replica; a stream's slot is free again as soon as its connection closes.",
    params(
        ("id" = Uuid, Path, description = "The execution's id."),
        ("Last-Event-ID" = Option<i64>, Header, nullable = false, minimum = 0, maximum = 9_223_372_036_854_775_807_i64, description = "Resume after this event: the `id` of the last event received."),
    ),
    security(("bearer" = []), ("api_key" = ["executions:read"])),
    responses(
        (status = 200, description = "`event: status` and `event: progress` messages; `data` is JSON with `execution_id` and the change.", body = ExecutionStreamEvent, content_type = "text/event-stream"),
        (status = 404, description = "No execution of yours has this id.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_streams`: you have as many streams open as one account may; close one (`Retry-After`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`overloaded`: the service has as many streams (or requests) open as it serves (`Retry-After`).", body = Problem, content_type = "application/problem+json"),
    ))]
async fn stream_events(
    State(platform): State<Platform>,
    State(auth): State<AuthState>,
    State(executions): State<ExecutionsState>,
    ScopedUser(user, _): ScopedUser<ExecutionsReadScope>,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
    permit: HeldPermit,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let request = events::StreamRequest {
        user,
        token: events::bearer_token(&headers)?,
        id,
        after: events::last_event_id(&headers)?,
    };
    let stream =
        events::stream(platform, auth, executions.streams.clone(), request, permit).await?;
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
