//! Responses that carry credentials.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// A JSON response holding a credential (a token pair, a new API key):
/// `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 §5.1), so no
/// browser or proxy keeps a copy.
pub struct NoStore<T>(pub T);

impl<T: serde::Serialize> IntoResponse for NoStore<T> {
    fn into_response(self) -> Response {
        let mut response = axum::Json(self.0).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        response
    }
}
