//! Request extractors whose failures speak the one error shape.
//!
//! axum's own `Json` rejects with plain-text bodies and lumps every failure
//! into one status; [`ApiJson`] tells the client precisely what is wrong:
//! 415 for a wrong content type, 413 for an oversized body, 400 for JSON that
//! does not parse, and 422 with the location of each field that does not fit.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
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
        if !has_json_content_type(&request) {
            return Err(AppError::UnsupportedMediaType(
                "Send the body as JSON with `Content-Type: application/json`.".to_owned(),
            ));
        }
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection| match rejection.status() {
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge,
                    _ => AppError::BadRequest {
                        code: "unreadable_body",
                        detail: "The request body could not be read.".to_owned(),
                    },
                })?;
        parse_json(&bytes).map(ApiJson)
    }
}

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn has_json_content_type(request: &Request) -> bool {
    let Some(content_type) = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses `bytes` as `T`: syntax errors are 400, shape errors 422 with a location.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().clone();
        let inner = error.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                AppError::Validation(vec![field_error(&path, &inner)])
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

/// A field error located at `path` under `body`, with serde's message tidied.
fn field_error(path: &serde_path_to_error::Path, error: &serde_json::Error) -> FieldError {
    let mut loc = vec![LocSegment::from("body")];
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
    // serde appends " at line L column C"; the location already says where.
    let message = error.to_string();
    let message = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(head, _)| head)
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
