//! Prometheus metrics: HTTP traffic by route template and status class, requests
//! in flight, and the database pool, rendered at `GET /metrics`.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::core::db::DbPool;

/// Latency buckets in seconds, from a fast cache hit to a slow report.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use.
///
/// The `metrics` facade has one global recorder per process, so every app built
/// in a process (the tests build many) shares it.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed already; metrics then go there.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
        }
        handle
    })
}

/// Middleware: counts and times every request by method, route template and
/// status class (the template, not the raw path, keeps label sets bounded).
pub async fn track_http(request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let in_flight = metrics::gauge!("http_requests_in_flight");
    in_flight.increment(1.0);
    let started = Instant::now();
    let response = next.run(request).await;
    in_flight.decrement(1.0);
    let status_class = format!("{}xx", response.status().as_u16() / 100);
    let labels = [
        ("method", method),
        ("route", route),
        ("status_class", status_class),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Renders every metric, after sampling the pool so its gauges are current.
pub fn render(pool: &DbPool) -> String {
    let status = pool.status();
    let in_use = status.size.saturating_sub(status.available);
    metrics::gauge!("db_pool_max_size").set(status.max_size as f64);
    metrics::gauge!("db_pool_size").set(status.size as f64);
    metrics::gauge!("db_pool_in_use").set(in_use as f64);
    metrics::gauge!("db_pool_waiting").set(status.waiting as f64);
    handle().render()
}
