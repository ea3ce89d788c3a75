//! `/api/v1/auth/api-keys`: create, list and revoke API keys. Managing keys
//! needs a signed-in person: a key cannot reach these routes.

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::schemas::{ApiKeyListQuery, ApiKeyResponse, CreateApiKeyRequest, CreatedApiKey};
use crate::auth::extract::{ClientAddress, CurrentUser};
use crate::auth::router::TAG;
use crate::auth::service::AuthState;
use crate::core::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::core::http::no_store::NoStore;
use crate::core::platform::Platform;
use crate::shared::error::{AppError, Problem};
use crate::shared::pagination::Page;

/// The API key routes.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    Platform: FromRef<S>,
    AuthState: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
}

/// Create an API key; its secret is shown once.
///
/// Needs the caller's password. The key acts as the caller within its scopes,
/// sent as `Authorization: Bearer tsk_…`.
#[utoipa::path(post, path = "/auth/api-keys", tag = TAG, operation_id = "auth-create-api-key",
    request_body = CreateApiKeyRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The key, with its secret (shown this once).", body = CreatedApiKey),
        (status = 401, description = "No valid token.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`current_password` is wrong, or the request came with an API key.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The account already holds `API_KEYS_PER_USER` live keys.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, every one listed.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed password checks; see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_key(
    State(platform): State<Platform>,
    State(auth): State<AuthState>,
    CurrentUser(user): CurrentUser,
    ClientAddress(client): ClientAddress,
    ApiJson(request): ApiJson<CreateApiKeyRequest>,
) -> Result<(StatusCode, NoStore<CreatedApiKey>), AppError> {
    let created = super::create(&platform, &auth, &user, request, &client).await?;
    Ok((StatusCode::CREATED, NoStore(created)))
}

/// List API keys, newest first (never their secrets).
///
/// The caller's own; admins may name another account with `user_id`.
#[utoipa::path(get, path = "/auth/api-keys", tag = TAG, operation_id = "auth-list-api-keys",
    params(ApiKeyListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of keys.", body = Page<ApiKeyResponse>),
        (status = 401, description = "No valid token.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`user_id` names another account and the caller is not an admin, or the request came with an API key.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid `limit` or `cursor`.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_keys(
    State(platform): State<Platform>,
    CurrentUser(user): CurrentUser,
    ApiQuery(query): ApiQuery<ApiKeyListQuery>,
) -> Result<axum::Json<Page<ApiKeyResponse>>, AppError> {
    Ok(axum::Json(super::list(&platform, &user, query).await?))
}

/// Revoke an API key; it stops working at once.
///
/// The caller's own; admins may revoke anyone's.
#[utoipa::path(delete, path = "/auth/api-keys/{key_id}", tag = TAG, operation_id = "auth-revoke-api-key",
    params(("key_id" = Uuid, Path, description = "The key's id.")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Revoked."),
        (status = 401, description = "No valid token.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The request came with an API key.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such key among those the caller may revoke.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn revoke_key(
    State(platform): State<Platform>,
    CurrentUser(user): CurrentUser,
    ApiPath(key_id): ApiPath<Uuid>,
) -> Result<StatusCode, AppError> {
    super::revoke(&platform, &user, key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
