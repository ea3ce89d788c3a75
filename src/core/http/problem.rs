//! Makes every error response a problem-details body.
//!
//! Handlers and extractors return [`AppError`](crate::shared::error::AppError),
//! which leaves a [`Problem`] in the response's extensions; this layer writes it
//! with the request id. Error responses that other layers produce bare (axum's
//! 404 and 405, the body limit's 413, a caught panic's 500) get a problem built
//! from their status, so clients always see one shape.

use std::any::Any;

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::response::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::request_id::RequestId;
use crate::shared::error::{PROBLEM_CONTENT_TYPE, Problem, problem_response};

/// Bare client-error bodies up to this size are kept as the problem's detail.
const MAX_DETAIL_BYTES: usize = 512;

/// Middleware: turns error responses into problem-details bodies. Under a
/// path that starts with one of `openai_prefixes`, the body also carries
/// OpenAI's `error` member, which OpenAI's SDKs build their exceptions from.
pub async fn write_problem_bodies(
    openai_prefixes: &[&str],
    request: Request,
    next: Next,
) -> Response {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.0.clone());
    let path = request.uri().path();
    let for_openai_clients = openai_prefixes
        .iter()
        .any(|prefix| path.starts_with(prefix));
    let response = next.run(request).await;
    let (parts, mut problem) = match response.extensions().get::<Problem>().cloned() {
        Some(problem) => (response.into_parts().0, problem),
        None if is_bare_error(&response) => {
            let (parts, body) = response.into_parts();
            let problem = bare_problem(&parts, body).await;
            (parts, problem)
        }
        None => return response,
    };
    if for_openai_clients {
        problem.add_openai_error();
    }
    with_problem_body(parts, problem, request_id)
}

/// The response for a caught panic. The panic's message goes to the log only.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "a request handler panicked");
    problem_response(Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "An unexpected error occurred; it has been logged.",
    ))
}

/// Error statuses whose body is not already a problem.
fn is_bare_error(response: &Response) -> bool {
    let status = response.status();
    (status.is_client_error() || status.is_server_error())
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_none_or(|value| {
                !value
                    .as_bytes()
                    .starts_with(PROBLEM_CONTENT_TYPE.as_bytes())
            })
}

/// Builds a problem for a bare error response. A short plain-text client-error
/// message (an axum rejection, say) is kept as the detail; server errors never
/// leak their bodies.
async fn bare_problem(parts: &Parts, body: Body) -> Problem {
    let status = parts.status;
    let is_plain_text = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/plain"))
        && !parts.headers.contains_key(header::CONTENT_ENCODING);
    let text = if status.is_client_error() && is_plain_text {
        to_bytes(body, MAX_DETAIL_BYTES)
            .await
            .ok()
            .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty())
    } else {
        None
    };
    let (code, default_detail) = describe(status);
    Problem::new(
        status,
        code,
        text.unwrap_or_else(|| default_detail.to_owned()),
    )
}

/// A stable code and a default message for statuses that arrive bare.
fn describe(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::BAD_REQUEST => ("bad_request", "The request is malformed."),
        StatusCode::UNAUTHORIZED => ("unauthorized", "Authentication is required."),
        StatusCode::FORBIDDEN => ("forbidden", "You may not do this."),
        StatusCode::NOT_FOUND => ("not_found", "No resource lives at this path."),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "This path does not support the request's method; the Allow header lists those it does.",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "The request body is larger than this server accepts.",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "The request's content type is not supported here.",
        ),
        StatusCode::UNPROCESSABLE_ENTITY => ("validation_failed", "The request is invalid."),
        StatusCode::TOO_MANY_REQUESTS => ("rate_limited", "Too many requests; slow down."),
        StatusCode::SERVICE_UNAVAILABLE => (
            "service_unavailable",
            "The service cannot answer right now; try again shortly.",
        ),
        status if status.is_server_error() => (
            "internal_error",
            "An unexpected error occurred; it has been logged.",
        ),
        _ => ("client_error", "The request cannot be served."),
    }
}

/// Replaces the body with the problem, keeping the status and headers
/// (`Allow`, `Retry-After`, CORS and security headers) of the original.
fn with_problem_body(
    mut parts: Parts,
    mut problem: Problem,
    request_id: Option<String>,
) -> Response {
    problem.request_id = request_id;
    let body = serde_json::to_vec(&problem).unwrap_or_else(|_| {
        br#"{"type":"urn:tessera:problem:internal_error","title":"Internal Server Error","status":500,"detail":"An unexpected error occurred.","code":"internal_error"}"#.to_vec()
    });
    parts.status = problem.status_code();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    Response::from_parts(parts, Body::from(body))
}
