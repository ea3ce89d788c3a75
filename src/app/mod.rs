//! The composition root: the one place that knows every domain. It reads the
//! settings ([`Settings`]), builds the application ([`Application::build`]:
//! state, router, workers), the OpenAPI document and the seeder registry.

mod application;
mod openapi;
mod settings;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRef, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use application::{Application, Seeded, StartupError, seed_database};
pub use settings::Settings;

use crate::auth::access_cache::AccessCache;
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
    let access_cache = state.auth.access_cache.clone();
    let router = routes
        .merge(docs::router(spec, redoc_bundle, config.is_development()))
        .fallback(unknown_route)
        .with_state(state)
        .layer(middleware::from_fn_with_state(
            access_cache,
            forget_access_after_account_writes,
        ));
    let needs = http::RouteNeeds {
        openai_prefixes: &[crate::inference::router::OPENAI_BASE_PATH],
        custom_request_headers: &[crate::auth::browser_sessions::CSRF_HEADER],
    };
    http::apply_middleware(router, &config.http, config.env, needs)
}

/// Where every route that can change an account lives, under [`API_PREFIX`].
const ACCOUNT_ROUTES: [&str; 2] = ["/users", "/auth"];

/// After a write to accounts through this process (sign-in, sign-out, a new
/// password, role or name), the access cache forgets what it remembered, so
/// the caller's next request sees the change at once rather than when the
/// database's notification of it arrives a moment later.
async fn forget_access_after_account_writes(
    State(cache): State<Arc<AccessCache>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let writes_accounts = !request.method().is_safe()
        && path.strip_prefix(API_PREFIX).is_some_and(|route| {
            ACCOUNT_ROUTES
                .iter()
                .any(|prefix| route.starts_with(prefix))
        });
    let response = next.run(request).await;
    if writes_accounts {
        cache.forget_all();
    }
    response
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
