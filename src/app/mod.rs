//! The composition root: the one place that knows every domain. It reads the
//! settings ([`Settings`]), builds the application ([`Application::build`]:
//! state, router, workers), the OpenAPI document and the seeder registry.

mod application;
mod openapi;
mod settings;

use axum::Router;
use axum::body::Bytes;
use axum::extract::FromRef;
use axum::http::StatusCode;
use axum::response::Response;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use application::{Application, Seeded, StartupError, seed_database};
pub use settings::Settings;

use crate::auth::account_mail::AccountMail;
use crate::auth::seed::FirstAdminSeeder;
use crate::auth::service::AuthState;
use crate::core::platform::Platform;
use crate::core::seed::SeedRegistry;
use crate::core::{docs, health, http};
use crate::email::config::EmailConfig;
use crate::email::kind::SendEmail;
use crate::email::transport::Transport;
use crate::executions::kinds::{KindRegistry, Sleep};
use crate::executions::service::ExecutionsState;
use crate::inference::InferenceState;
use crate::inference::batch_kind::EmbedTexts;
use crate::inference::config::InferenceConfig;
use crate::shared::error::{Problem, problem_response};

/// The version prefix every domain's routes live under.
pub const API_PREFIX: &str = "/api/v1";

/// Everything a handler may need, shared by every request. Built only by
/// [`Application::build`]; each domain's handlers extract their own part.
#[derive(Clone, FromRef)]
pub struct AppState {
    /// Pool, configuration, lifecycle.
    pub platform: Platform,
    /// Token signing and password hashing.
    pub auth: AuthState,
    /// The kinds of background work and the notification hub.
    pub executions: ExecutionsState,
    /// The account flows that send mail: their settings and the outbox.
    pub account_mail: AccountMail,
    /// The embedding engine (loading, ready or unavailable).
    pub inference: InferenceState,
}

/// Every documented route, with its OpenAPI description.
fn documented_routes() -> OpenApiRouter<AppState> {
    let api = OpenApiRouter::new()
        .merge(crate::users::router::router())
        .merge(crate::auth::router::router())
        .merge(crate::auth::recovery::router::router())
        .merge(crate::auth::verification::router::router())
        .merge(crate::executions::router::router())
        .merge(crate::inference::router::router());
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .nest(API_PREFIX, api)
        .merge(health::router())
}

/// The kinds of background work this deployment runs; `embed_texts` embeds
/// with `inference`'s engine, and `send_email` (internal: the account flows
/// enqueue it, clients cannot) delivers mail.
pub fn kinds(inference: &InferenceState, send_email: SendEmail) -> KindRegistry {
    KindRegistry::new()
        .register(Sleep)
        .register(EmbedTexts::new(inference.clone()))
        .register_internal(send_email)
}

/// The OpenAPI document, as served at `/openapi.json` and printed by `tessera openapi`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, spec) = documented_routes().split_for_parts();
    let inference = InferenceState::disabled(InferenceConfig::default(), "not loaded");
    let send_email = SendEmail::with_transport(EmailConfig::default(), Transport::Log);
    openapi::complete_spec(spec, &kinds(&inference, send_email))
}

/// The whole HTTP application over `state`: every route, the docs and the middleware.
fn build_router(state: AppState, redoc_bundle: Option<Bytes>) -> Router {
    let (routes, spec) = documented_routes().split_for_parts();
    let config = state.platform.config.clone();
    let spec = openapi::complete_spec(spec, &state.executions.registry);
    let router = routes
        .merge(docs::router(spec, redoc_bundle, config.is_development()))
        .fallback(unknown_route)
        .with_state(state);
    let needs = http::RouteNeeds {
        openai_prefixes: &[crate::inference::router::OPENAI_BASE_PATH],
        custom_request_headers: &[crate::auth::browser_sessions::CSRF_HEADER],
    };
    http::apply_middleware(router, &config.http, config.env, needs)
}

/// The seeders `tessera seed` and startup seeding run, in order.
pub fn seeders(auth: &AuthState) -> SeedRegistry {
    SeedRegistry::new().register(FirstAdminSeeder::new(auth.clone()))
}

/// Fallback for paths no route matches. Its code differs from a resource's
/// `not_found`, so a client can tell a wrong URL from a missing record.
async fn unknown_route() -> Response {
    problem_response(Problem::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        "No route matches this path; see /docs for the API.",
    ))
}
