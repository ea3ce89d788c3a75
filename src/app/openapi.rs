//! The OpenAPI document: the API's description, its security scheme, every
//! execution kind's schemas and the one error shape on every operation.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{
    Flow, HttpAuthScheme, HttpBuilder, OAuth2, Password, Scopes, SecurityScheme,
};
use utoipa::openapi::{self, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use super::API_PREFIX;
use crate::executions::kinds::KindRegistry;
use crate::shared::error::{FieldError, PROBLEM_CONTENT_TYPE, Problem};

/// Declares the `bearer` scheme as OAuth2's password flow, so Swagger UI's
/// Authorize button signs in through `POST /api/v1/auth/token`; the
/// `api_key` scheme of programs (an operation that takes keys names the
/// scope it needs); and the `metrics_token` scheme of `/metrics` scrapers.
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
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("tsk_…")
                    .description(Some(
                        "An API key from `POST /api/v1/auth/api-keys`, sent as `Authorization: \
                         Bearer tsk_…`. It reaches only the operations that list this scheme, \
                         and only with the scope they name.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "metrics_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The `METRICS_TOKEN` of the deployment."))
                    .build(),
            ),
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
pub(super) struct ApiDoc;

/// Sets the version, adds the components the kind registry generates (every
/// kind's input and output, and the submission, name-preview and response
/// unions over the kinds, which replace the derived schemas of those names), and
/// gives every operation a `default` response in the problem shape, so clients
/// learn the one error schema from any operation.
pub(super) fn complete_spec(mut spec: openapi::OpenApi, kinds: &KindRegistry) -> openapi::OpenApi {
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
