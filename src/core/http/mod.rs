//! The HTTP middleware every route runs behind, assembled in one place.
//!
//! Order matters; from the outside in:
//! request id → trace span → compression → problem bodies → metrics →
//! security headers → CORS → panic catcher → load shedding → timeout → body
//! limit → route.
//! Anything that fails inside the problem layer, including a panic, reaches the
//! client in the one problem-details shape.

pub mod conditional;
pub mod extract;
pub mod no_store;
pub mod problem;
pub mod request_id;

mod guards;
mod security_headers;
mod trace;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;

use crate::core::config::{AppEnv, HttpConfig};
use crate::core::metrics;

pub use guards::{HeldPermit, LoadShedder};

/// What the application's routes ask of the middleware around them.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteNeeds {
    /// Path prefixes of the OpenAI-compatible routes: errors answered under
    /// them also carry OpenAI's `error` member, whichever layer produced them.
    pub openai_prefixes: &'static [&'static str],
    /// Request headers of the routes' own (beyond the standard ones) that
    /// pages of the allowed origins may send (CORS).
    pub custom_request_headers: &'static [&'static str],
}

/// Wraps `router` (every route and the fallback) in the service's middleware.
pub fn apply_middleware(
    router: Router,
    config: &HttpConfig,
    env: AppEnv,
    needs: RouteNeeds,
) -> Router {
    let openai_prefixes = needs.openai_prefixes;
    // Install the recorder before the first request, or its numbers are lost.
    metrics::handle();
    let shedder = Arc::new(LoadShedder::new(config.max_in_flight));
    let timeout = config.request_timeout;
    router
        // Innermost first: axum applies each `.layer` around the previous ones.
        .layer(RequestBodyLimitLayer::new(config.body_limit_bytes))
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn(move |request, next| {
            guards::enforce_timeout(timeout, request, next)
        }))
        .layer(middleware::from_fn(move |request, next| {
            guards::shed_load(shedder.clone(), request, next)
        }))
        // Inside CORS and the security headers, so a panic's 500 carries them too.
        .layer(CatchPanicLayer::custom(problem::panic_response))
        .layer(cors_layer(
            &config.cors_allowed_origins,
            needs.custom_request_headers,
        ))
        .layer(middleware::from_fn(move |request, next| {
            security_headers::add(env, request, next)
        }))
        .layer(middleware::from_fn(metrics::track_http))
        .layer(middleware::from_fn(move |request, next| {
            problem::write_problem_bodies(openai_prefixes, request, next)
        }))
        .layer(CompressionLayer::new())
        .layer(trace::layer())
        .layer(middleware::from_fn(request_id::assign))
}

fn cors_layer(origins: &[String], custom_headers: &'static [&'static str]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(
            [
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_MATCH,
                header::IF_NONE_MATCH,
                HeaderName::from_static(request_id::HEADER),
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("last-event-id"),
            ]
            .into_iter()
            .chain(custom_headers.iter().copied().map(HeaderName::from_static))
            .collect::<Vec<_>>(),
        )
        .expose_headers([
            header::ETAG,
            header::LOCATION,
            header::RETRY_AFTER,
            HeaderName::from_static(request_id::HEADER),
        ])
        .allow_credentials(true)
}
