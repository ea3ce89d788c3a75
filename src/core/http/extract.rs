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
use serde_json::Value;

use crate::shared::error::{AppError, FieldError, LocSegment};

/// A JSON request body, deserialised into `T` by [`parse_json`].
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
    value: &Value,
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

/// Parses `bytes` as `T`: syntax errors are 400, shape errors 422 with a
/// location. Numbers are read as JSON Schema reads them: one with no
/// fractional part (`8.0`) is the integer it equals, so a body the document
/// allows is not refused by serde's stricter integer fields.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    let mut body: Value = serde_json::from_slice(bytes).map_err(|error| malformed(&error))?;
    whole_numbers_as_integers(&mut body);
    parse_nested_json(&body, &["body"]).map_err(AppError::Validation)
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

/// Rewrites every float in `value` that equals an integer as that integer.
fn whole_numbers_as_integers(value: &mut Value) {
    match value {
        Value::Number(number) => {
            if let Some(integer) = number.as_f64().and_then(exact_integer) {
                *number = integer;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(whole_numbers_as_integers),
        _ => {}
    }
}

/// `float` as a JSON integer when it is one within `i64` or `u64`.
fn exact_integer(float: f64) -> Option<serde_json::Number> {
    if float.fract() != 0.0 {
        return None;
    }
    // Casts saturate; a float that is not exactly the integer it casts to is out of range.
    let signed = float as i64;
    if signed as f64 == float {
        return Some(signed.into());
    }
    let unsigned = float as u64;
    (unsigned as f64 == float).then(|| unsigned.into())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

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
    fn whole_floats_fill_integer_fields_and_fractions_do_not() {
        let probe: Probe = parse_json(br#"{"name": "x", "tags": [8.0, 9]}"#).unwrap();
        assert_eq!(probe.tags, [8, 9]);
        let fraction = errors_of(r#"{"name": "x", "tags": [8.5]}"#);
        assert_eq!(
            fraction[0].loc,
            vec!["body".into(), "tags".into(), LocSegment::Index(0)]
        );
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

    #[test]
    fn floats_that_equal_integers_become_those_integers_and_no_others() {
        let mut body = json!({
            "a": 8.0, "b": [-3.0, 2.5, 0.0, -0.0], "c": {"d": 1e300, "e": 18_446_744_073_709_549_568.0},
            "f": 7, "g": "8.0", "h": -9_223_372_036_854_775_808.0_f64,
        });
        whole_numbers_as_integers(&mut body);
        assert_eq!(body["a"], json!(8));
        assert!(body["a"].is_u64() || body["a"].is_i64());
        assert_eq!(body["b"], json!([-3, 2.5, 0, 0]));
        assert!(body["c"]["d"].is_f64(), "out of every integer range");
        assert!(body["c"]["e"].is_u64(), "within u64 only");
        assert_eq!(body["f"], json!(7));
        assert_eq!(body["g"], json!("8.0"), "strings are left alone");
        assert_eq!(body["h"], json!(i64::MIN));
    }
}
