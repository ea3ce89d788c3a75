//! Every error a client can trigger in the HTTP layer answers in the one
//! problem-details shape: status, content type, body and request id.

// Test code: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::routing::{get, post};
use common::{TestApp, TestRequest, test_settings};
use serde::Deserialize;
use tessera::core::config::AppEnv;
use tessera::core::http::extract::ApiJson;
use tessera::core::http::{RouteNeeds, apply_middleware};
use tokio::sync::Notify;

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Greeting {
    name: String,
    times: u8,
}

/// Routes that exercise the middleware and extractors the way domain routes will.
fn probe_router(overrides: &[(&str, &str)], release: Arc<Notify>) -> Router {
    let config = test_settings("postgres://unused/unused", overrides).platform;
    let routes = Router::new()
        .route(
            "/probe/json",
            post(|ApiJson(greeting): ApiJson<Greeting>| async move { ApiJson(greeting) }),
        )
        .route("/probe/panic", get(panicking_handler))
        .route(
            "/probe/wait",
            get(move || async move {
                release.notified().await;
                "released"
            }),
        );
    apply_middleware(routes, &config.http, AppEnv::Test, RouteNeeds::default())
}

async fn panicking_handler() -> &'static str {
    panic!("secret internal detail /etc/passwd")
}

/// `POST /probe/json` with `body` as it is, declared as JSON.
fn post_json<'a>(router: &'a Router, body: &str) -> TestRequest<'a> {
    TestRequest::new(router, Method::POST, "/probe/json").body(body.to_owned(), "application/json")
}

/// `GET path` on `router`.
fn get_from<'a>(router: &'a Router, path: &str) -> TestRequest<'a> {
    TestRequest::new(router, Method::GET, path)
}

#[tokio::test]
async fn unknown_routes_are_404_problems() {
    let app = TestApp::spawn().await;
    let response = app.get("/api/v1/no-such-thing").send().await;
    response.assert_problem(StatusCode::NOT_FOUND, "route_not_found");
}

#[tokio::test]
async fn wrong_methods_are_405_problems_with_allow() {
    let app = TestApp::spawn().await;
    let response = app.delete("/health").send().await;
    response.assert_problem(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert!(
        response
            .header("allow")
            .is_some_and(|allow| allow.contains("GET"))
    );
}

#[tokio::test]
async fn valid_json_passes_through() {
    let router = probe_router(&[], Arc::new(Notify::new()));
    let response = post_json(&router, r#"{"name": "Ada", "times": 2}"#)
        .send()
        .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.json()["name"], "Ada");
}

#[tokio::test]
async fn malformed_json_is_a_400_problem() {
    let router = probe_router(&[], Arc::new(Notify::new()));
    let response = post_json(&router, r#"{"name": "Ada", "#).send().await;
    response.assert_problem(StatusCode::BAD_REQUEST, "malformed_json");
}

#[tokio::test]
async fn wrong_content_type_is_a_415_problem() {
    let router = probe_router(&[], Arc::new(Notify::new()));
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let request = TestRequest::new(&router, Method::POST, "/probe/json");
        let body = r#"{"name":"Ada","times":1}"#;
        let response = match content_type {
            Some(content_type) => request.body(body, content_type),
            None => request.untyped_body(body),
        }
        .send()
        .await;
        response.assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    }
}

#[tokio::test]
async fn fields_that_do_not_fit_are_a_422_problem_with_locations() {
    let router = probe_router(&[], Arc::new(Notify::new()));
    let cases = [
        (
            r#"{"times": 1}"#,
            serde_json::json!(["body", "name"]),
            "missing",
        ),
        (
            r#"{"name": "Ada", "times": "x"}"#,
            serde_json::json!(["body", "times"]),
            "type_error",
        ),
        (
            r#"{"name": "Ada", "times": 300}"#,
            serde_json::json!(["body", "times"]),
            "value_error",
        ),
        (
            r#"{"name": "Ada", "times": 1, "admin": true}"#,
            serde_json::json!(["body", "admin"]),
            "extra_forbidden",
        ),
    ];
    for (body, loc, kind) in cases {
        let response = post_json(&router, body).send().await;
        let problem =
            response.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        let errors = problem["errors"]
            .as_array()
            .expect("a validation problem lists its errors");
        assert_eq!(errors.len(), 1, "{problem}");
        assert_eq!(errors[0]["loc"], loc, "{body}");
        assert_eq!(errors[0]["type"], kind, "{body}");
        assert!(errors[0]["msg"].as_str().is_some_and(|msg| !msg.is_empty()));
    }
}

#[tokio::test]
async fn oversized_bodies_are_413_problems() {
    let router = probe_router(
        &[("REQUEST_BODY_LIMIT_BYTES", "64")],
        Arc::new(Notify::new()),
    );
    let big = format!(r#"{{"name": "{}", "times": 1}}"#, "a".repeat(200));
    // With a Content-Length header the body is refused before it is read.
    let response = post_json(&router, &big).send().await;
    response.assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // Streamed without a length, it is refused once it crosses the limit.
    let chunks: Vec<Result<String, std::io::Error>> = vec![Ok(big.clone())];
    let response = TestRequest::new(&router, Method::POST, "/probe/json")
        .body(
            Body::from_stream(futures_util::stream::iter(chunks)),
            "application/json",
        )
        .send()
        .await;
    response.assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
}

#[tokio::test]
async fn panics_are_500_problems_that_leak_nothing() {
    let origin = "https://app.example.com";
    let router = probe_router(&[("CORS_ALLOWED_ORIGINS", origin)], Arc::new(Notify::new()));
    let response = get_from(&router, "/probe/panic")
        .header("origin", origin)
        .send()
        .await;
    response.assert_problem(StatusCode::INTERNAL_SERVER_ERROR, "internal_error");
    assert!(!response.text().contains("secret"));
    assert!(!response.text().contains("/etc/passwd"));
    // A panic's answer is dressed like any other: a browser app can read it,
    // and it carries the security headers.
    assert_eq!(response.header("access-control-allow-origin"), Some(origin));
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
}

#[tokio::test]
async fn overload_is_a_503_problem_with_retry_after() {
    let release = Arc::new(Notify::new());
    let router = probe_router(&[("MAX_IN_FLIGHT_REQUESTS", "1")], release.clone());
    let waiting = {
        let router = router.clone();
        tokio::spawn(async move { get_from(&router, "/probe/wait").send().await })
    };
    // Until the first request holds the only slot, the second may still get in; poll.
    let mut shed = None;
    for _ in 0..200 {
        let response = get_from(&router, "/probe/json").send().await;
        if response.status == StatusCode::SERVICE_UNAVAILABLE {
            shed = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let shed = shed.expect("a request beyond capacity is shed");
    shed.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    assert_eq!(shed.header("retry-after"), Some("1"));
    release.notify_one();
    assert_eq!(waiting.await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn slow_requests_time_out_as_503_problems() {
    let router = probe_router(&[("REQUEST_TIMEOUT_MS", "50")], Arc::new(Notify::new()));
    let response = get_from(&router, "/probe/wait").send().await;
    response.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "request_timeout");
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = TestApp::spawn().await;
    let given = app
        .get("/health")
        .header("x-request-id", "client-id-42")
        .send()
        .await;
    assert_eq!(given.header("x-request-id"), Some("client-id-42"));
    let generated = app.get("/health").send().await;
    let id = generated
        .header("x-request-id")
        .expect("a response to a request without an id gets a generated x-request-id");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let hostile = app
        .get("/health")
        .header("x-request-id", "a b\tc")
        .send()
        .await;
    assert_ne!(hostile.header("x-request-id"), Some("a b\tc"));
}

#[tokio::test]
async fn responses_carry_security_headers() {
    let app = TestApp::spawn().await;
    let response = app.get("/health").send().await;
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(response.header("x-frame-options"), Some("DENY"));
    assert_eq!(response.header("referrer-policy"), Some("no-referrer"));
    let csp = response
        .header("content-security-policy")
        .expect("every response carries a Content-Security-Policy");
    assert!(csp.contains("default-src 'self'"));
    // Errors carry them too.
    let missing = app.get("/nowhere").send().await;
    assert_eq!(missing.header("x-content-type-options"), Some("nosniff"));
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let app = TestApp::spawn_with(&[("CORS_ALLOWED_ORIGINS", "https://app.example.com")]).await;
    let preflight = |origin: &'static str| {
        app.request(Method::OPTIONS, "/health")
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let allowed = preflight("https://app.example.com").await;
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let refused = preflight("https://evil.example.com").await;
    assert_eq!(refused.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn large_responses_are_compressed_when_asked() {
    let app = TestApp::spawn().await;
    let response = app
        .get("/openapi.json")
        .header("accept-encoding", "gzip")
        .send()
        .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.header("content-encoding"), Some("gzip"));
}
