//! Request extractors whose failures speak the one error shape.
//!
//! axum's own `Json`, `Form` and `Query` reject with plain-text bodies and lump
//! every failure into one status; these tell the client precisely what is
//! wrong: 415 for a wrong content type, 413 for an oversized body, 400 for JSON
//! that does not parse, and 422 with the location of each field that does not fit.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::shared::error::{AppError, FieldError, LocSegment};

/// A JSON request body, deserialised into `T`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !content_type_is(&request, |essence| {
            essence == "application/json"
                || (essence.starts_with("application/") && essence.ends_with("+json"))
        }) {
            return Err(AppError::UnsupportedMediaType(
                "Send the body as JSON with `Content-Type: application/json`.".to_owned(),
            ));
        }
        let bytes = read_body(request, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A form-encoded request body (`application/x-www-form-urlencoded`),
/// deserialised into `T`; field errors are 422 located under `body`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiForm<T>(pub T);

impl<T, S> FromRequest<S> for ApiForm<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !content_type_is(&request, |essence| {
            essence == "application/x-www-form-urlencoded"
        }) {
            return Err(AppError::UnsupportedMediaType(
                "Send the body form-encoded with `Content-Type: application/x-www-form-urlencoded`."
                    .to_owned(),
            ));
        }
        let bytes = read_body(request, state).await?;
        parse_urlencoded(&bytes, "body").map(ApiForm)
    }
}

/// The query string, deserialised into `T`; field errors are 422 located under `query`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        parse_urlencoded(query.as_bytes(), "query").map(ApiQuery)
    }
}

async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, AppError> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| match rejection.status() {
            axum::http::StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge,
            _ => AppError::BadRequest {
                code: "unreadable_body",
                detail: "The request body could not be read.".to_owned(),
            },
        })
}

/// Whether the request's media type (without parameters, lowercased) passes `accept`.
fn content_type_is(request: &Request, accept: impl Fn(&str) -> bool) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|content_type| {
            content_type
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|essence| accept(&essence))
}

/// Parses URL-encoded pairs as `T`; every failure is a located 422.
fn parse_urlencoded<T: DeserializeOwned>(bytes: &[u8], source: &str) -> Result<T, AppError> {
    let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(bytes));
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().clone();
        AppError::Validation(vec![field_error(
            source,
            &path,
            &error.into_inner().to_string(),
        )])
    })
}

/// Deserialises a JSON value nested in a request (e.g. `input` of an
/// execution) as `T`; field errors are located under `prefix`.
pub fn parse_nested_json<T: DeserializeOwned>(
    value: &serde_json::Value,
    prefix: &[&str],
) -> Result<T, Vec<FieldError>> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().clone();
        let message = error.into_inner().to_string();
        let mut located = field_error(prefix.first().copied().unwrap_or("body"), &path, &message);
        let nested: Vec<LocSegment> = prefix
            .iter()
            .skip(1)
            .map(|key| LocSegment::from(*key))
            .collect();
        located.loc.splice(1..1, nested);
        vec![located]
    })
}

/// A UUID path parameter (the route's only one). A malformed value is a
/// located 422 — the route exists, the value is wrong — never a 404 or a bare
/// 400 (crates.io's `CratePath` does the same for crate names).
#[derive(Debug, Clone, Copy)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync> FromRequestParts<S> for ApiPath<uuid::Uuid> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = match Path::<Vec<(String, String)>>::from_request_parts(parts, state).await {
            Ok(Path(params)) => params,
            Err(PathRejection::MissingPathParams(missing)) => {
                return Err(AppError::internal(missing.body_text()));
            }
            Err(rejection) => {
                let error = FieldError::part("path").because(rejection.body_text());
                return Err(AppError::Validation(vec![error]));
            }
        };
        let Some((name, raw)) = params.into_iter().next() else {
            return Err(AppError::internal(
                "ApiPath on a route without a path parameter",
            ));
        };
        uuid::Uuid::parse_str(&raw).map(Self).map_err(|_| {
            AppError::Validation(vec![
                FieldError::path(&name)
                    .because("is not a valid UUID")
                    .kind("uuid_parsing"),
            ])
        })
    }
}

/// Parses `bytes` as `T`: syntax errors are 400, shape errors 422 with a location.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().clone();
        let inner = error.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                AppError::Validation(vec![field_error("body", &path, &inner.to_string())])
            }
            _ => malformed(&inner),
        }
    })?;
    deserializer.end().map_err(|error| malformed(&error))?;
    Ok(value)
}

fn malformed(error: &serde_json::Error) -> AppError {
    AppError::BadRequest {
        code: "malformed_json",
        detail: format!("The body is not valid JSON: {error}."),
    }
}

/// A field error located at `path` under `source`, with serde's message tidied.
fn field_error(source: &str, path: &serde_path_to_error::Path, message: &str) -> FieldError {
    let mut loc = vec![LocSegment::from(source)];
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => loc.push(LocSegment::Index(*index)),
            serde_path_to_error::Segment::Map { key } => loc.push(LocSegment::Key(key.clone())),
            serde_path_to_error::Segment::Enum { variant } => {
                loc.push(LocSegment::Key(variant.clone()));
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    // serde_json appends " at line L column C"; the location already says where.
    let message = message
        .rsplit_once(" at line ")
        .map_or(message, |(head, _)| head)
        .to_owned();
    let kind = if message.starts_with("missing field") {
        if let Some(field) = message.split('`').nth(1) {
            loc.push(LocSegment::Key(field.to_owned()));
        }
        "missing"
    } else if message.starts_with("unknown field") {
        // serde_path_to_error's path already ends at the unknown key.
        "extra_forbidden"
    } else if message.starts_with("invalid type") {
        "type_error"
    } else {
        "value_error"
    };
    FieldError::new(loc, message, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Probe {
        name: String,
        tags: Vec<u32>,
    }

    fn errors_of(body: &str) -> Vec<FieldError> {
        match parse_json::<Probe>(body.as_bytes()) {
            Err(AppError::Validation(errors)) => errors,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn shape_errors_are_located() {
        let missing = errors_of(r#"{"tags": []}"#);
        assert_eq!(missing[0].loc, vec!["body".into(), "name".into()]);
        assert_eq!(missing[0].kind, "missing");
        let wrong = errors_of(r#"{"name": "x", "tags": [1, "two"]}"#);
        assert_eq!(
            wrong[0].loc,
            vec!["body".into(), "tags".into(), LocSegment::Index(1)]
        );
        assert_eq!(wrong[0].kind, "type_error");
        let extra = errors_of(r#"{"name": "x", "tags": [], "admin": true}"#);
        assert_eq!(extra[0].loc, vec!["body".into(), "admin".into()]);
        assert_eq!(extra[0].kind, "extra_forbidden");
    }

    #[test]
    fn syntax_errors_are_bad_requests() {
        for body in [
            r#"{"name": "#,
            "not json",
            r#"{"name": "x", "tags": []} trailing"#,
        ] {
            assert!(matches!(
                parse_json::<Probe>(body.as_bytes()),
                Err(AppError::BadRequest {
                    code: "malformed_json",
                    ..
                })
            ));
        }
    }
}
