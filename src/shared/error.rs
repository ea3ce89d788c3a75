//! The one error type of the service and the one error shape clients see.
//!
//! Every failure, from an extractor, a validation rule, the database or a panic,
//! reaches clients as RFC 9457 problem details (`application/problem+json`).
//! Handlers return [`AppError`]; the HTTP layer fills in the request id and
//! serialises the [`Problem`] (see `core::http::problem`).

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::shared::outage;

/// The media type of every error body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// RFC 9457 problem details, extended with a stable `code`, the `request_id` and,
/// on validation failures, the list of bad fields.
///
/// `detail` carries the human message, so clients written for FastAPI's
/// `{"detail": ...}` keep working.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:tessera:problem:validation_failed",
    "title": "Unprocessable Content",
    "status": 422,
    "detail": "The request has 1 invalid field.",
    "code": "validation_failed",
    "request_id": "0193a4c2-6f1e-7d6a-9c1b-2f0e8a7d5b31",
    "errors": [{"loc": ["body", "email"], "msg": "invalid type: integer `5`, expected a string", "type": "type_error"}]
}))]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:tessera:problem:{code}`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// The HTTP status phrase.
    pub title: String,
    /// The HTTP status code, repeated for clients that only see the body.
    pub status: u16,
    /// What went wrong, for a person.
    pub detail: String,
    /// A stable snake_case code for programs to branch on.
    pub code: String,
    /// The `x-request-id` of the request, to quote when reporting a problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// On `422`: the fields that failed, not just the first — at most
    /// [`MAX_LISTED_FIELD_ERRORS`] of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 20)]
    pub errors: Vec<FieldError>,
    /// On `422`, when more fields failed than are listed: how many more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub errors_not_listed: Option<usize>,
    /// On the OpenAI-compatible routes (`/inference/*`): the same error as
    /// OpenAI's APIs write it, which is where OpenAI's SDKs read the message
    /// they show. An addition: every other member is there too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<OpenAiError>,
}

/// OpenAI's error object, `{"message", "type", "param", "code"}`, so that
/// clients written for OpenAI (its SDKs raise exceptions with `message`,
/// `type`, `param` and `code`) show the reason instead of a bare status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "message": "input[1]: must not be empty",
    "type": "invalid_request_error",
    "param": "input[1]",
    "code": "validation_failed"
}))]
pub struct OpenAiError {
    /// What went wrong, for a person: the problem's `detail`, or on `422` the
    /// first bad field and what is wrong with it.
    pub message: String,
    /// OpenAI's class of error, from the status.
    #[serde(rename = "type")]
    pub kind: OpenAiErrorType,
    /// The first bad field, written as OpenAI writes it (`input`, `input[3]`,
    /// `targets[0]`, `limit`); `null` when the error is not about one field.
    #[schema(required = true)]
    pub param: Option<String>,
    /// The problem's `code`.
    pub code: String,
}

/// OpenAI's classes of error, chosen by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpenAiErrorType {
    /// The request is wrong: 400, 404, 405, 409, 412, 413, 415, 422.
    InvalidRequestError,
    /// No valid access token: 401.
    AuthenticationError,
    /// The token's user may not do this: 403.
    PermissionError,
    /// Over a limit; `Retry-After` says when to try again: 429.
    RateLimitError,
    /// The server failed or is unavailable: 5xx.
    ServerError,
}

impl OpenAiErrorType {
    /// The class of an error answered with `status`.
    pub fn of(status: StatusCode) -> Self {
        match status {
            StatusCode::UNAUTHORIZED => Self::AuthenticationError,
            StatusCode::FORBIDDEN => Self::PermissionError,
            StatusCode::TOO_MANY_REQUESTS => Self::RateLimitError,
            status if status.is_server_error() => Self::ServerError,
            _ => Self::InvalidRequestError,
        }
    }
}

/// Most field errors one 422 lists: a hostile request with a million bad
/// elements gets a small answer, and the count of the rest.
pub const MAX_LISTED_FIELD_ERRORS: usize = 20;

impl Problem {
    /// Builds a problem for `status` with a stable `code` and a human `detail`.
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            type_uri: format!("urn:tessera:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_owned(),
            request_id: None,
            errors: Vec::new(),
            errors_not_listed: None,
            error: None,
        }
    }

    /// Adds OpenAI's `error` member, written from this problem's own fields
    /// (see [`OpenAiError`]), for routes that OpenAI's clients call.
    pub fn add_openai_error(&mut self) {
        let first = self.errors.first();
        let param = first.and_then(|error| openai_param(&error.loc));
        let message = match first {
            None => self.detail.clone(),
            Some(error) => {
                let mut message = match &param {
                    Some(param) => format!("{param}: {}", error.msg),
                    None => error.msg.clone(),
                };
                let others = self.errors.len() - 1 + self.errors_not_listed.unwrap_or(0);
                if others > 0 {
                    message.push_str(&format!(" (and {others} more invalid field(s))"));
                }
                message
            }
        };
        self.error = Some(OpenAiError {
            message,
            kind: OpenAiErrorType::of(self.status_code()),
            param,
            code: self.code.clone(),
        });
    }

    /// The status as an HTTP status code (500 if the stored number is not one).
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// One invalid input field, located the way FastAPI locates it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// Where the value was: `["body", "items", 2, "name"]`, `["query", "limit"]`.
    #[schema(value_type = Vec<serde_json::Value>)]
    pub loc: Vec<LocSegment>,
    /// What is wrong with it.
    pub msg: String,
    /// A stable snake_case kind of error (`missing`, `type_error`, `value_error`, …).
    #[serde(rename = "type")]
    pub kind: String,
}

/// A step in a [`FieldError`] location: an object key or an array index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LocSegment {
    /// An object key, or the part of the request (`body`, `query`, `path`).
    Key(String),
    /// A position in an array.
    Index(usize),
}

impl From<&str> for LocSegment {
    fn from(key: &str) -> Self {
        Self::Key(key.to_owned())
    }
}

impl From<String> for LocSegment {
    fn from(key: String) -> Self {
        Self::Key(key)
    }
}

impl From<usize> for LocSegment {
    fn from(index: usize) -> Self {
        Self::Index(index)
    }
}

/// One way to say a field is wrong: name the part of the request and the
/// field (`FieldError::body("email")`), go deeper if needed (`.at(3)`), then
/// say why (`.because("is not an email")`); the kind defaults to `value_error`.
impl FieldError {
    /// A field error at a computed location (a serde path, a caller-supplied
    /// locator); for a known field, the named constructors below read better.
    pub fn new(loc: Vec<LocSegment>, msg: impl Into<String>, kind: &str) -> Self {
        Self {
            loc,
            msg: msg.into(),
            kind: kind.to_owned(),
        }
    }

    /// A field of the JSON or form body.
    pub fn body(key: &str) -> Self {
        Self::within("body", key)
    }

    /// A query-string parameter.
    pub fn query(key: &str) -> Self {
        Self::within("query", key)
    }

    /// A request header.
    pub fn header(name: &str) -> Self {
        Self::within("header", name)
    }

    /// A path parameter.
    pub fn path(name: &str) -> Self {
        Self::within("path", name)
    }

    /// A field of a nested value (an execution's `input`), located relative to
    /// it: whoever knows where the value sits prefixes the location.
    pub fn field(key: &str) -> Self {
        Self {
            loc: vec![LocSegment::from(key)],
            msg: String::new(),
            kind: "value_error".to_owned(),
        }
    }

    /// The whole of one part of the request (e.g. the body itself).
    pub fn part(part: &str) -> Self {
        Self {
            loc: vec![LocSegment::from(part)],
            msg: String::new(),
            kind: "value_error".to_owned(),
        }
    }

    fn within(part: &str, key: &str) -> Self {
        Self::part(part).at(key)
    }

    /// The same location, one step deeper: an object key or an array index.
    #[must_use]
    pub fn at(mut self, segment: impl Into<LocSegment>) -> Self {
        self.loc.push(segment.into());
        self
    }

    /// What is wrong with the value, for a person.
    #[must_use]
    pub fn because(mut self, message: impl Into<String>) -> Self {
        self.msg = message.into();
        self
    }

    /// The stable kind of error, when it is not `value_error`.
    #[must_use]
    pub fn kind(mut self, kind: &str) -> Self {
        kind.clone_into(&mut self.kind);
        self
    }
}

/// Everything a request can fail with. Each variant maps to one status and code.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The body is not valid JSON (or not valid in another way that is not per field).
    #[error("bad request: {detail}")]
    BadRequest {
        /// Stable code, e.g. `malformed_json`.
        code: &'static str,
        /// Human message.
        detail: String,
    },
    /// The request's content type is not one the route accepts.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// The body is larger than the configured limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// One or more fields are invalid; every one is listed.
    #[error("validation failed on {} field(s)", .0.len())]
    Validation(Vec<FieldError>),
    /// The resource does not exist (or the caller may not know that it does).
    #[error("not found: {0}")]
    NotFound(String),
    /// No valid credentials: answered with `WWW-Authenticate: Bearer`.
    #[error("unauthorized: {detail}")]
    Unauthorized {
        /// Stable code, e.g. `invalid_token`.
        code: &'static str,
        /// Human message.
        detail: String,
    },
    /// Authenticated, but not allowed to do this.
    #[error("forbidden: {detail}")]
    Forbidden {
        /// Stable code, e.g. `admin_required`.
        code: &'static str,
        /// Human message.
        detail: String,
    },
    /// The request conflicts with the current state (a taken email, the last admin).
    #[error("conflict: {detail}")]
    Conflict {
        /// Stable code, e.g. `email_taken`.
        code: &'static str,
        /// Human message.
        detail: String,
    },
    /// `If-Match` named a version that is no longer current.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// Too many attempts; the client must wait.
    #[error("rate limited: {detail}")]
    RateLimited {
        /// Human message.
        detail: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// The caller holds or has spent as much of a bounded resource as they may
    /// (unfinished executions, a daily allowance, open event streams): `429`
    /// with its own code, so clients can tell it from a rate limit.
    #[error("limit reached: {detail}")]
    LimitReached {
        /// Stable code, e.g. `too_many_executions`, `too_many_streams`.
        code: &'static str,
        /// Human message.
        detail: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// A dependency the request needs (the database, a queue) is unavailable now;
    /// the client may retry after the given delay.
    #[error("service unavailable: {detail}")]
    Unavailable {
        /// Stable code, e.g. `database_unavailable`.
        code: &'static str,
        /// Human message.
        detail: String,
        /// When to try again.
        retry_after: Option<Duration>,
    },
    /// A database error that is not the client's fault.
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
    /// Acquiring a database connection failed or timed out.
    #[error("database pool error: {0}")]
    Pool(#[from] diesel_async::pooled_connection::deadpool::PoolError),
    /// A bug or an unexpected failure; the source (with its chain) goes to the
    /// log, never to the client, who sees one stable message.
    #[error("internal error")]
    Internal(#[source] BoxedError),
}

/// Any error, kept whole so the log shows its source chain.
pub type BoxedError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result of anything a request runs.
pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    /// An unexpected failure caused by `source` (an error, or for a broken
    /// invariant a message): logged with its chain, answered as a plain 500.
    pub fn internal(source: impl Into<BoxedError>) -> Self {
        Self::Internal(source.into())
    }

    /// Whether this is the database being unreachable (no connection, or one
    /// lost mid-query) rather than a failure of the request itself: answered
    /// 503 with `Retry-After`, and logged as an outage, not per request.
    pub fn is_database_outage(&self) -> bool {
        match self {
            Self::Pool(_) => true,
            Self::Database(error) => is_connection_lost(error),
            _ => false,
        }
    }

    /// The client-facing problem for this error. Internal details stay out of it.
    pub fn to_problem(&self) -> Problem {
        match self {
            Self::BadRequest { code, detail } => {
                Problem::new(StatusCode::BAD_REQUEST, code, detail)
            }
            Self::UnsupportedMediaType(detail) => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                detail,
            ),
            Self::PayloadTooLarge => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The request body is larger than this server accepts.",
            ),
            Self::Validation(errors) => validation_problem(errors),
            Self::NotFound(detail) => Problem::new(StatusCode::NOT_FOUND, "not_found", detail),
            Self::Unauthorized { code, detail } => {
                Problem::new(StatusCode::UNAUTHORIZED, code, detail)
            }
            Self::Forbidden { code, detail } => Problem::new(StatusCode::FORBIDDEN, code, detail),
            Self::Conflict { code, detail } => Problem::new(StatusCode::CONFLICT, code, detail),
            Self::PreconditionFailed(detail) => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                detail,
            ),
            Self::RateLimited { detail, .. } => {
                Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail)
            }
            Self::LimitReached { code, detail, .. } => {
                Problem::new(StatusCode::TOO_MANY_REQUESTS, code, detail)
            }
            Self::Unavailable { code, detail, .. } => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, code, detail)
            }
            Self::Pool(_) | Self::Database(_) if self.is_database_outage() => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "The database is not reachable right now; a write may or may not have been \
                 applied. Try again shortly (with the same Idempotency-Key, where it takes one).",
            ),
            Self::Pool(_) | Self::Database(_) | Self::Internal(_) => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "An unexpected error occurred; it has been logged.",
            ),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after, .. } => *retry_after,
            Self::RateLimited { retry_after, .. } | Self::LimitReached { retry_after, .. } => {
                Some(*retry_after)
            }
            Self::Pool(_) | Self::Database(_) if self.is_database_outage() => {
                Some(Duration::from_secs(1))
            }
            _ => None,
        }
    }
}

/// A 422 listing the first [`MAX_LISTED_FIELD_ERRORS`] field errors and
/// counting the rest.
fn validation_problem(errors: &[FieldError]) -> Problem {
    let detail = if errors.len() > MAX_LISTED_FIELD_ERRORS {
        format!(
            "The request has {} invalid field(s); the first {MAX_LISTED_FIELD_ERRORS} are listed.",
            errors.len()
        )
    } else {
        format!("The request has {} invalid field(s).", errors.len())
    };
    let mut problem = Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        detail,
    );
    problem.errors = errors
        .iter()
        .take(MAX_LISTED_FIELD_ERRORS)
        .cloned()
        .collect();
    problem.errors_not_listed = errors
        .len()
        .checked_sub(MAX_LISTED_FIELD_ERRORS)
        .filter(|n| *n > 0);
    problem
}

/// A field error's location as OpenAI's `param` writes it: without the part
/// of the request, keys joined by dots and indices in brackets
/// (`["body", "input", 3]` is `input[3]`); `None` for a whole part.
fn openai_param(loc: &[LocSegment]) -> Option<String> {
    let mut param = String::new();
    for segment in loc.iter().skip(1) {
        match segment {
            LocSegment::Key(key) if param.is_empty() => param.push_str(key),
            LocSegment::Key(key) => {
                param.push('.');
                param.push_str(key);
            }
            LocSegment::Index(index) => param.push_str(&format!("[{index}]")),
        }
    }
    (!param.is_empty()).then_some(param)
}

/// Whether a query failed because the server went away rather than because of the query.
fn is_connection_lost(error: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match error {
        Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        ) => true,
        // A commit or rollback that failed with the connection.
        Error::RollbackErrorOnCommit { commit_error, .. } => is_connection_lost(commit_error),
        Error::BrokenTransactionManager => true,
        Error::DatabaseError(DatabaseErrorKind::Unknown, info) => {
            let message = info.message();
            message.contains("connection closed")
                || message.contains("terminating connection")
                || message.contains("the database system is shutting down")
                || message.contains("server closed the connection")
        }
        _ => false,
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let problem = self.to_problem();
        if self.is_database_outage() {
            outage::database_down(&self);
        } else if problem.status >= 500 {
            tracing::error!(error = %ErrorChain(&self), code = %problem.code, "request failed");
        }
        let mut response = problem_response(problem);
        if matches!(self, Self::Unauthorized { .. }) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(delay) = self.retry_after() {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(delay.as_secs().max(1)),
            );
        }
        response
    }
}

/// Writes an error and each of its sources, `outer: inner: innermost`.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

/// A response that carries `problem` for the HTTP layer to finish.
///
/// The body is written by `core::http::problem`, which knows the request id;
/// until then the problem travels as a response extension.
pub fn problem_response(problem: Problem) -> Response {
    let mut response = problem.status_code().into_response();
    response.extensions_mut().insert(problem);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(count: usize) -> Vec<FieldError> {
        (0..count)
            .map(|index| FieldError::body("items").at(index).because("is wrong"))
            .collect()
    }

    #[test]
    fn openais_error_member_names_the_first_field_and_counts_the_rest() {
        let mut problem = AppError::Validation(errors(25)).to_problem();
        problem.add_openai_error();
        assert_eq!(
            problem.error,
            Some(OpenAiError {
                message: "items[0]: is wrong (and 24 more invalid field(s))".to_owned(),
                kind: OpenAiErrorType::InvalidRequestError,
                param: Some("items[0]".to_owned()),
                code: "validation_failed".to_owned(),
            })
        );
        let mut limited = AppError::RateLimited {
            detail: "Slow down.".to_owned(),
            retry_after: Duration::from_secs(3),
        }
        .to_problem();
        limited.add_openai_error();
        let error = limited.error.expect("the member was added");
        assert_eq!(error.message, "Slow down.");
        assert_eq!(error.kind, OpenAiErrorType::RateLimitError);
        assert_eq!(error.param, None);
    }

    #[test]
    fn openai_params_are_written_as_openai_writes_them() {
        let param = |loc: Vec<LocSegment>| openai_param(&loc);
        assert_eq!(param(vec!["body".into()]), None);
        assert_eq!(
            param(vec!["query".into(), "limit".into()]),
            Some("limit".into())
        );
        assert_eq!(
            param(vec!["body".into(), "input".into(), 1.into(), 0.into()]),
            Some("input[1][0]".into())
        );
        assert_eq!(
            param(vec!["body".into(), "texts".into(), 2.into(), "name".into()]),
            Some("texts[2].name".into())
        );
    }

    #[test]
    fn openai_error_types_follow_the_status() {
        for (status, kind) in [
            (
                StatusCode::BAD_REQUEST,
                OpenAiErrorType::InvalidRequestError,
            ),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                OpenAiErrorType::InvalidRequestError,
            ),
            (
                StatusCode::UNAUTHORIZED,
                OpenAiErrorType::AuthenticationError,
            ),
            (StatusCode::FORBIDDEN, OpenAiErrorType::PermissionError),
            (
                StatusCode::TOO_MANY_REQUESTS,
                OpenAiErrorType::RateLimitError,
            ),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                OpenAiErrorType::ServerError,
            ),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                OpenAiErrorType::ServerError,
            ),
        ] {
            assert_eq!(OpenAiErrorType::of(status), kind, "{status}");
        }
    }

    #[test]
    fn a_422_lists_at_most_twenty_field_errors_and_counts_the_rest() {
        let exactly = AppError::Validation(errors(MAX_LISTED_FIELD_ERRORS)).to_problem();
        assert_eq!(exactly.errors.len(), MAX_LISTED_FIELD_ERRORS);
        assert_eq!(exactly.errors_not_listed, None);
        assert_eq!(exactly.detail, "The request has 20 invalid field(s).");

        let flood = AppError::Validation(errors(100_000)).to_problem();
        assert_eq!(flood.errors.len(), MAX_LISTED_FIELD_ERRORS);
        assert_eq!(
            flood.errors_not_listed,
            Some(100_000 - MAX_LISTED_FIELD_ERRORS)
        );
        assert_eq!(
            flood.detail,
            "The request has 100000 invalid field(s); the first 20 are listed."
        );
        let first = &flood.errors[0].loc;
        assert_eq!(
            first,
            &vec![
                LocSegment::from("body"),
                LocSegment::from("items"),
                LocSegment::Index(0)
            ]
        );
    }
}
