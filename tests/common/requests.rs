//! Requests in the shape a reader expects, and their fully read responses:
//!
//! ```ignore
//! app.patch("/api/v1/users/me")
//!     .bearer(&token)
//!     .if_match(&etag)
//!     .json(json!({"full_name": "Grace Hopper"}))
//!     .send()
//!     .await
//! ```

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header, request};
use http_body_util::BodyExt;
use serde::Serialize;
use serde_json::Value;
use tower::ServiceExt;

/// A request being put together; [`TestRequest::send`] sends it through the
/// router, every middleware included.
#[must_use = "a request does nothing until it is sent"]
pub struct TestRequest<'a> {
    router: &'a Router,
    parts: request::Builder,
    body: Body,
}

impl<'a> TestRequest<'a> {
    /// `method path` to `router`, with no headers and an empty body.
    /// (A [`TestApp`](super::TestApp) has a method for each verb.)
    pub fn new(router: &'a Router, method: Method, path: &str) -> Self {
        Self {
            router,
            parts: Request::builder().method(method).uri(path),
            body: Body::empty(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.parts = self.parts.header(name, value);
        self
    }

    /// Sends `token` as the bearer of the request.
    pub fn bearer(self, token: &str) -> Self {
        self.header(header::AUTHORIZATION.as_str(), &format!("Bearer {token}"))
    }

    /// Makes the request conditional on the resource still having `etag`.
    pub fn if_match(self, etag: &str) -> Self {
        self.header(header::IF_MATCH.as_str(), etag)
    }

    /// Asks for the resource only if it no longer has `etag`.
    pub fn if_none_match(self, etag: &str) -> Self {
        self.header(header::IF_NONE_MATCH.as_str(), etag)
    }

    /// A JSON body, with its content type.
    pub fn json(self, body: impl Serialize) -> Self {
        let json = serde_json::to_string(&body).expect("the test's JSON body serialises");
        self.body(json, "application/json")
    }

    /// An HTML form body (`application/x-www-form-urlencoded`).
    pub fn form(self, fields: &[(&str, &str)]) -> Self {
        let form = serde_urlencoded::to_string(fields).expect("the test's form fields encode");
        self.body(form, "application/x-www-form-urlencoded")
    }

    /// Any body, with the content type given.
    pub fn body(mut self, body: impl Into<Body>, content_type: &str) -> Self {
        self.parts = self.parts.header(header::CONTENT_TYPE, content_type);
        self.body = body.into();
        self
    }

    /// A body sent without a content type.
    pub fn untyped_body(mut self, body: impl Into<Body>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends the request and reads the whole response.
    pub async fn send(self) -> TestResponse {
        let request = self.parts.body(self.body).unwrap_or_else(|error| {
            panic!("the test built an invalid request (a bad method, path or header): {error}")
        });
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router's error type is Infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|error| {
                panic!("the {status} response's body could not be read: {error}")
            })
            .to_bytes();
        TestResponse {
            status,
            headers,
            body,
        }
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct TestResponse {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
}

impl TestResponse {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "the {} response's body is not JSON ({error}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Asserts this is a problem-details response with `status` and `code`, in
    /// the full shape every error must have; returns the body.
    pub fn assert_problem(&self, status: StatusCode, code: &str) -> Value {
        assert_eq!(self.status, status, "status; body: {}", self.text());
        assert_eq!(
            self.header(header::CONTENT_TYPE.as_str()),
            Some("application/problem+json"),
            "content type"
        );
        let body = self.json();
        assert_eq!(body["status"], status.as_u16(), "body status");
        assert_eq!(body["code"], code, "body code: {body}");
        assert_eq!(body["type"], format!("urn:tessera:problem:{code}"));
        assert_eq!(body["title"], status.canonical_reason().unwrap_or_default());
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "detail: {body}"
        );
        let request_id = self
            .header("x-request-id")
            .expect("every response carries an x-request-id header");
        assert_eq!(
            body["request_id"], request_id,
            "request id in body and header"
        );
        body
    }
}

/// `body` with its `request_id`, different on every request, replaced by a
/// placeholder, for snapshots of a problem body that
/// [`TestResponse::assert_problem`] has checked (the id against its header).
pub fn redact_request_id(mut body: Value) -> Value {
    assert!(
        body["request_id"].is_string(),
        "the body has a request_id: {body}"
    );
    body["request_id"] = Value::from("[request_id]");
    body
}
