//! The composition root: the one place that knows every domain. It builds the
//! application state, the router (each domain under `/api/v1`), the OpenAPI
//! document and the seeder registry.

use axum::Router;
use axum::body::Bytes;
use axum::extract::FromRef;
use axum::http::StatusCode;
use axum::response::Response;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Flow, OAuth2, Password, Scopes, SecurityScheme};
use utoipa::openapi::{self, Ref, RefOr};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::auth::service::AuthState;
use crate::core::config::InferenceConfig;
use crate::core::platform::Platform;
use crate::core::seed::SeedRegistry;
use crate::core::{docs, health, http};
use crate::executions::kinds::{KindRegistry, Sleep};
use crate::executions::service::ExecutionsState;
use crate::inference::InferenceState;
use crate::inference::batch_kind::EmbedTexts;
use crate::shared::error::{FieldError, PROBLEM_CONTENT_TYPE, Problem, problem_response};
use crate::users::seed::FirstAdminSeeder;

/// The version prefix every domain's routes live under.
pub const API_PREFIX: &str = "/api/v1";

/// Everything a handler may need, shared by every request.
#[derive(Clone)]
pub struct AppState {
    /// Pool, configuration, lifecycle.
    pub platform: Platform,
    /// Token signing and password hashing.
    pub auth: AuthState,
    /// The kinds of background work and the notification hub.
    pub executions: ExecutionsState,
    /// The embedding engine (loading, ready or unavailable).
    pub inference: InferenceState,
}

impl FromRef<AppState> for InferenceState {
    fn from_ref(state: &AppState) -> Self {
        state.inference.clone()
    }
}

impl FromRef<AppState> for ExecutionsState {
    fn from_ref(state: &AppState) -> Self {
        state.executions.clone()
    }
}

impl FromRef<AppState> for Platform {
    fn from_ref(state: &AppState) -> Self {
        state.platform.clone()
    }
}

impl FromRef<AppState> for AuthState {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

/// Declares the `bearer` scheme as OAuth2's password flow, so Swagger UI's
/// Authorize button signs in through `POST /api/v1/auth/token`.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::OAuth2(OAuth2::with_description(
                [Flow::Password(Password::new(
                    format!("{API_PREFIX}/auth/token"),
                    Scopes::new(),
                ))],
                "An access token from `POST /api/v1/auth/token`, sent as `Authorization: Bearer …`.",
            )),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera",
        description = "Users, authentication, durable background executions and text embeddings \
                       over one versioned REST API. Every error is RFC 9457 problem details \
                       (`application/problem+json`).",
    ),
    components(schemas(Problem, FieldError)),
    modifiers(&BearerScheme),
    tags(
        (name = "users", description = "Accounts, profiles and their administration."),
        (name = "auth", description = "Sign-in, token refresh, sign-out and passwords."),
        (name = "executions", description = "Durable background work: submit, track, cancel, retry, stream."),
        (name = "inference", description = "Text embeddings (OpenAI-compatible), similarity and models."),
        (name = "health", description = "Liveness, readiness and metrics."),
    ),
)]
struct ApiDoc;

/// Every documented route, with its OpenAPI description.
fn documented_routes() -> OpenApiRouter<AppState> {
    let api = OpenApiRouter::new()
        .merge(crate::users::router::router())
        .merge(crate::auth::router::router())
        .merge(crate::executions::router::router())
        .merge(crate::inference::router::router());
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest(API_PREFIX, api)
        .merge(health::router())
}

/// The kinds of background work this deployment runs; `embed_texts` embeds
/// with `inference`'s engine.
pub fn kinds(inference: &InferenceState) -> KindRegistry {
    KindRegistry::new()
        .register(Sleep)
        .register(EmbedTexts::new(inference.clone()))
}

/// The OpenAPI document, as served at `/openapi.json` and printed by `tessera openapi`.
pub fn openapi() -> openapi::OpenApi {
    let (_, spec) = documented_routes().split_for_parts();
    let inference = InferenceState::disabled(InferenceConfig::default(), "not loaded");
    finish_spec(spec, &kinds(&inference))
}

/// The whole HTTP application, as `serve` runs it and the tests drive it.
pub fn build_router(state: AppState, redoc_bundle: Option<Bytes>) -> Router {
    let (routes, spec) = documented_routes().split_for_parts();
    let config = state.platform.config.clone();
    let spec = finish_spec(spec, &state.executions.registry);
    let router = routes
        .merge(docs::router(spec, redoc_bundle))
        .fallback(unknown_route)
        .with_state(state);
    http::apply_middleware(router, &config.http, config.env)
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

/// Sets the version, adds every execution kind's input and output schema, and
/// gives every operation a `default` response in the problem shape, so clients
/// learn the one error schema from any operation.
fn finish_spec(mut spec: openapi::OpenApi, kinds: &KindRegistry) -> openapi::OpenApi {
    spec.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let components = spec.components.get_or_insert_with(Default::default);
    for (name, schema) in kinds.schemas() {
        components.schemas.insert(name, schema);
    }
    let problem = openapi::ResponseBuilder::new()
        .description("An error, as RFC 9457 problem details.")
        .content(
            PROBLEM_CONTENT_TYPE,
            openapi::ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build();
    for item in spec.paths.paths.values_mut() {
        for operation in operations(item) {
            operation
                .responses
                .responses
                .entry("default".to_owned())
                .or_insert_with(|| RefOr::T(problem.clone()));
        }
    }
    spec
}

fn operations(item: &mut openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}
