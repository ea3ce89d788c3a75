//! Liveness, readiness and metrics.

// Test code: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::StatusCode;
use common::{TestApp, real_model_dir, settled_inference_report, skip};
use tessera::core::db::Migrator;
use tessera_kernels::{Kernels, Precision};

#[tokio::test]
async fn health_answers_without_the_database() {
    let app = TestApp::spawn().await;
    let response = app.get("/health").send().await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.json(), serde_json::json!({"status": "ok"}));
}

#[tokio::test]
async fn ready_when_the_database_answers_and_is_migrated() {
    let app = TestApp::spawn().await;
    let response = app.get("/ready").send().await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(response.json()["status"], "ready");
}

#[tokio::test]
async fn without_a_model_the_service_is_ready_and_reports_inference_unavailable() {
    let app = TestApp::spawn().await;
    let report = settled_inference_report(&app).await;
    assert_eq!(report["state"], "unavailable", "{report}");
    assert!(
        report["reason"]
            .as_str()
            .expect("an unavailable engine reports a reason")
            .contains("config.json"),
        "the reason names the missing file: {report}"
    );
}

#[tokio::test]
async fn ready_reports_the_loaded_engine_and_its_backend() {
    let model_dir = real_model_dir();
    if !model_dir.join("model.safetensors").is_file() {
        skip(
            "ready_reports_the_loaded_engine_and_its_backend",
            "no model (run `task model-fetch`)",
        );
        return;
    }
    let model_dir = model_dir.to_string_lossy();
    let app = TestApp::spawn_with(&[
        ("INFERENCE_MODEL_DIR", model_dir.as_ref()),
        ("INFERENCE_DEVICE", "cpu"),
        ("INFERENCE_PRECISION", "bf16"),
    ])
    .await;
    let report = settled_inference_report(&app).await;
    assert_eq!(report["state"], "ready", "{report}");
    assert_eq!(report["backend"], "cpu", "{report}");
    assert_eq!(report["device_type"], "cpu", "{report}");
    // bf16 where the CPU has SIMD kernels for it (any x86-64 with AVX2), else f32.
    let stored = if Kernels::detect().stores(Precision::Bf16) {
        "bf16"
    } else {
        "f32"
    };
    assert_eq!(report["precision"], stored, "{report}");
    assert_eq!(report["dimensions"], 384, "{report}");
    assert_eq!(report["max_tokens"], 256, "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn not_ready_while_a_migration_is_pending() {
    let app = TestApp::spawn().await;
    let mut migrator = Migrator::connect(&app.database.url).await.unwrap();
    migrator.revert(1).unwrap();
    let response = app.get("/ready").send().await;
    let body = response.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    assert!(
        body["detail"]
            .as_str()
            .expect("a problem has a detail string")
            .contains("migration"),
        "{body}"
    );
    migrator.run_pending().expect("the migrations apply");
    assert_eq!(app.get("/ready").send().await.status, StatusCode::OK);
}

#[tokio::test]
async fn not_ready_while_shutting_down() {
    let app = TestApp::spawn().await;
    app.lifecycle.begin_draining();
    let response = app.get("/ready").send().await;
    let body = response.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    assert!(
        body["detail"]
            .as_str()
            .expect("a problem has a detail string")
            .contains("shutting down")
    );
    // Liveness is unaffected: the process still answers.
    assert_eq!(app.get("/health").send().await.status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_report_the_pool() {
    let app = TestApp::spawn().await;
    app.get("/health").send().await;
    app.get("/ready").send().await;
    app.get("/no/such/path/7f3a").send().await;
    let response = app.get("/metrics").send().await;
    assert_eq!(response.status, StatusCode::OK);
    assert!(
        response
            .header("content-type")
            .expect("the response declares its content type")
            .starts_with("text/plain")
    );
    let text = response.text();
    for expected in [
        r#"http_requests_total{method="GET",route="/health",status_class="2xx"}"#,
        r#"http_requests_total{method="GET",route="unmatched",status_class="4xx"}"#,
        "http_request_duration_seconds_bucket",
        "http_requests_in_flight",
        "db_pool_size",
        "db_pool_in_use",
        "db_pool_waiting",
        "db_pool_max_size",
    ] {
        assert!(text.contains(expected), "missing {expected} in:\n{text}");
    }
    // Raw paths never become labels (that would grow without bound).
    assert!(!text.contains("7f3a"));
}

#[tokio::test]
async fn metrics_need_the_configured_token() {
    let token = "scrape-7c1e9a40b2d54f8e";
    let app = TestApp::spawn_with(&[("METRICS_TOKEN", token)]).await;
    for presented in [None, Some("Bearer wrong-token-0000000000"), Some(token)] {
        let mut request = app.get("/metrics");
        if let Some(value) = presented {
            request = request.header("authorization", value);
        }
        let response = request.send().await;
        response.assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
        assert_eq!(response.header("www-authenticate"), Some("Bearer"));
    }
    let response = app
        .get("/metrics")
        .header("authorization", &format!("Bearer {token}"))
        .send()
        .await;
    assert_eq!(response.status, StatusCode::OK);
    assert!(response.text().contains("http_requests_total"));
}

#[tokio::test]
async fn production_serves_no_metrics_without_a_token() {
    let app = TestApp::spawn_with(&common::production_overrides()).await;
    let response = app.get("/metrics").send().await;
    response.assert_problem(StatusCode::FORBIDDEN, "metrics_token_required");
}
