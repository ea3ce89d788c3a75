//! Liveness (`/health`), readiness (`/ready`) and metrics (`/metrics`).

use std::collections::BTreeMap;

use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::core::config::{AppEnv, PlatformConfig};
use crate::core::db;
use crate::core::metrics;
use crate::core::platform::Platform;
use crate::shared::error::{AppError, Problem};

/// The OpenAPI tag of these routes.
pub const TAG: &str = "health";

/// The answer of a passing health or readiness check.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthStatus {
    /// `ok` for liveness, `ready` for readiness.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// Readiness only: the state of optional components by name, e.g. `inference`
    /// (`loading`, `ready` with its backend and adapter, or `unavailable` with the reason).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub components: BTreeMap<&'static str, serde_json::Value>,
}

/// `/health`, `/ready` and `/metrics`, for any app state that holds the platform.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    Platform: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics_text))
}

/// Report that the process is up.
///
/// Touches no dependency, so a database outage never makes an orchestrator restart a healthy process.
#[utoipa::path(get, path = "/health", tag = TAG, operation_id = "health-live",
    responses((status = 200, description = "The process answers.", body = HealthStatus)))]
async fn health() -> axum::Json<HealthStatus> {
    axum::Json(HealthStatus {
        status: "ok",
        components: BTreeMap::new(),
    })
}

/// Report whether the service can do its work.
///
/// The database answers within the acquire timeout, every migration is applied and shutdown has not begun. The body also reports optional components (the embedding engine), which never fail the check.
#[utoipa::path(get, path = "/ready", tag = TAG, operation_id = "health-ready",
    responses(
        (status = 200, description = "Ready for traffic.", body = HealthStatus),
        (status = 503, description = "Not ready; `detail` names the failing check.",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn ready(State(platform): State<Platform>) -> Result<axum::Json<HealthStatus>, AppError> {
    if platform.lifecycle.is_draining() {
        return Err(not_ready("the service is shutting down"));
    }
    let mut conn = platform.pool.get().await.map_err(|error| {
        tracing::warn!(%error, "readiness: no database connection");
        not_ready("the database is unreachable")
    })?;
    let pending = db::pending_migration_count(&mut conn)
        .await
        .map_err(|error| {
            tracing::warn!(%error, "readiness: migration check failed");
            not_ready("the database could not be checked for migrations")
        })?;
    if pending > 0 {
        return Err(not_ready(&format!(
            "{pending} migration(s) not applied; run `tessera migrate up`"
        )));
    }
    Ok(axum::Json(HealthStatus {
        status: "ready",
        components: platform.readiness.snapshot(),
    }))
}

fn not_ready(reason: &str) -> AppError {
    AppError::Unavailable {
        code: "not_ready",
        detail: format!("Not ready: {reason}."),
        retry_after: Some(std::time::Duration::from_secs(1)),
    }
}

/// Export every metric in the Prometheus text format.
///
/// With `METRICS_TOKEN` set the scraper sends it as a bearer token; production
/// without one refuses every scrape.
#[utoipa::path(get, path = "/metrics", tag = TAG, operation_id = "health-metrics",
    security((), ("metrics_token" = [])),
    responses(
        (status = 200, description = "Prometheus text exposition format.",
            body = String, content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "`METRICS_TOKEN` is set and the request does not carry it.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Production without `METRICS_TOKEN`: metrics are not served.",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn metrics_text(
    State(platform): State<Platform>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, AppError> {
    authorize_scrape(&platform.config, &headers)?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        metrics::render(&platform.pool),
    ))
}

/// Whether this request may read the metrics: it carries `METRICS_TOKEN` as
/// its bearer token, or none is configured outside production.
fn authorize_scrape(config: &PlatformConfig, headers: &HeaderMap) -> Result<(), AppError> {
    let Some(expected) = &config.metrics_token else {
        return if config.env == AppEnv::Production {
            Err(AppError::Forbidden {
                code: "metrics_token_required",
                detail: "Metrics are not served in production until METRICS_TOKEN is set."
                    .to_owned(),
            })
        } else {
            Ok(())
        };
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    // Digests compared, so the comparison's time says nothing about the token.
    let digest = |token: &str| Sha256::digest(token.as_bytes());
    if presented.is_some_and(|token| digest(token) == digest(expected.expose())) {
        Ok(())
    } else {
        Err(AppError::Unauthorized {
            code: "invalid_token",
            detail: "/metrics needs the bearer token configured in METRICS_TOKEN.".to_owned(),
        })
    }
}
