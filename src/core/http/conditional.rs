//! Conditional requests: `ETag` with `If-None-Match` (304) on reads, and
//! `If-Match` (412) on writes, so two browser tabs cannot overwrite each
//! other's changes unknowingly.
//!
//! A resource's entity tag is `"<id>-<revision>"`, where the revision goes up
//! on every change.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use uuid::Uuid;

use crate::shared::error::AppError;

/// The entity tag of `id` at `revision`.
pub fn etag(id: Uuid, revision: i64) -> String {
    format!("\"{}-{revision}\"", id.simple())
}

/// Whether `If-None-Match` already names `current` (answer 304).
pub fn is_not_modified(headers: &HeaderMap, current: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == current)
}

/// The revision `If-Match` requires for resource `id`: `None` when the header
/// is absent or `*`; a 412 when it names no version of this resource.
pub fn required_revision(headers: &HeaderMap, id: Uuid) -> Result<Option<i64>, AppError> {
    let tags: Vec<&str> = headers
        .get_all(header::IF_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    if tags.is_empty() || tags.contains(&"*") {
        return Ok(None);
    }
    let prefix = format!("\"{}-", id.simple());
    tags.iter()
        .find_map(|tag| {
            tag.strip_prefix(prefix.as_str())?
                .strip_suffix('"')?
                .parse()
                .ok()
        })
        .map(Some)
        .ok_or_else(stale)
}

/// The 412 for an `If-Match` that no longer holds.
pub fn stale() -> AppError {
    AppError::PreconditionFailed(
        "The resource changed since you read it (If-Match does not match its ETag); reload and retry."
            .to_owned(),
    )
}

/// A versioned resource answered with its `ETag` (and, when created, its
/// `Location`); for a conditional `GET`, [`Versioned::unless_current`] turns it
/// into a 304 when the client's copy is current.
pub struct Versioned<T> {
    status: StatusCode,
    etag: String,
    location: Option<String>,
    body: T,
}

impl<T: Serialize> Versioned<T> {
    /// `body`, the representation of `id` at `revision`, answered with `status`.
    pub fn new(status: StatusCode, id: Uuid, revision: i64, body: T) -> Self {
        Self {
            status,
            etag: etag(id, revision),
            location: None,
            body,
        }
    }

    /// Adds the `Location` of a created resource.
    #[must_use]
    pub fn at(mut self, location: String) -> Self {
        self.location = Some(location);
        self
    }

    /// A 304 (with the `ETag`, no body) when `If-None-Match` names this version.
    pub fn unless_current(self, request_headers: &HeaderMap) -> Response {
        if is_not_modified(request_headers, &self.etag) {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            insert_header(&mut response, header::ETAG, &self.etag);
            return response;
        }
        self.into_response()
    }
}

impl<T: Serialize> IntoResponse for Versioned<T> {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        insert_header(&mut response, header::ETAG, &self.etag);
        if let Some(location) = &self.location {
            insert_header(&mut response, header::LOCATION, location);
        }
        response
    }
}

fn insert_header(response: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            name,
            HeaderValue::from_str(value).expect("test header values are visible ASCII"),
        );
        headers
    }

    #[test]
    fn if_match_yields_the_revision_of_this_resource_only() {
        let id = Uuid::now_v7();
        let tag = etag(id, 7);
        assert_eq!(
            required_revision(&headers(header::IF_MATCH, &tag), id)
                .expect("this resource's own ETag is accepted"),
            Some(7)
        );
        assert_eq!(
            required_revision(&HeaderMap::new(), id).expect("no If-Match is accepted"),
            None
        );
        assert_eq!(
            required_revision(&headers(header::IF_MATCH, "*"), id)
                .expect("If-Match: * is accepted"),
            None
        );
        let other = etag(Uuid::now_v7(), 7);
        assert!(required_revision(&headers(header::IF_MATCH, &other), id).is_err());
        assert!(required_revision(&headers(header::IF_MATCH, "\"garbage\""), id).is_err());
    }

    #[test]
    fn if_none_match_matches_current_or_any() {
        let tag = etag(Uuid::now_v7(), 1);
        assert!(is_not_modified(&headers(header::IF_NONE_MATCH, &tag), &tag));
        assert!(is_not_modified(
            &headers(header::IF_NONE_MATCH, &format!("W/{tag}, \"x\"")),
            &tag
        ));
        assert!(is_not_modified(&headers(header::IF_NONE_MATCH, "*"), &tag));
        assert!(!is_not_modified(
            &headers(header::IF_NONE_MATCH, "\"x\""),
            &tag
        ));
    }
}
