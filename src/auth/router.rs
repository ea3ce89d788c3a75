//! `/api/v1/auth`: tokens, refresh, logout and password changes.

use axum::extract::{FromRef, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::extract::{ClientAddress, CurrentUser};
use crate::auth::schemas::{ChangePasswordRequest, RefreshRequest, TokenForm, TokenResponse};
use crate::auth::service::{self, AuthState};
use crate::auth::sessions;
use crate::core::http::extract::{ApiForm, ApiJson};
use crate::core::platform::Platform;
use crate::shared::error::{AppError, Problem};

/// A token response: `Cache-Control: no-store` and `Pragma: no-cache`
/// (RFC 6749 §5.1), so no browser or proxy keeps a copy of the tokens.
struct NoStore<T>(T);

impl<T: serde::Serialize> IntoResponse for NoStore<T> {
    fn into_response(self) -> Response {
        let mut response = axum::Json(self.0).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        response
    }
}

/// The OpenAPI tag of these routes.
pub const TAG: &str = "auth";

/// The auth routes, for any state holding the platform and the auth state.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    Platform: FromRef<S>,
    AuthState: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(issue_token))
        .routes(routes!(refresh_token))
        .routes(routes!(logout))
        .routes(routes!(logout_all))
        .routes(routes!(change_password))
}

/// Sign in with an email and a password.
///
/// The OAuth2 password grant (form-encoded): answers an access token and a refresh token.
#[utoipa::path(post, path = "/auth/token", tag = TAG, operation_id = "auth-sign-in",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "A token pair.", body = TokenResponse),
        (status = 401, description = "Incorrect email or password (the same answer for both).", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The account is deactivated.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed sign-ins; see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many sign-ins in progress; see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn issue_token(
    State(platform): State<Platform>,
    State(auth): State<AuthState>,
    ClientAddress(client): ClientAddress,
    ApiForm(form): ApiForm<TokenForm>,
) -> Result<NoStore<TokenResponse>, AppError> {
    Ok(NoStore(
        service::login(&platform, &auth, form, &client).await?,
    ))
}

/// Exchange a refresh token for a new pair.
///
/// Each refresh token works once; presenting a used one ends its whole sign-in.
#[utoipa::path(post, path = "/auth/refresh", tag = TAG, operation_id = "auth-refresh",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new token pair; the old refresh token is spent.", body = TokenResponse),
        (status = 401, description = "Invalid, expired, revoked or reused (which revokes its whole sign-in).", body = Problem, content_type = "application/problem+json"),
    ))]
async fn refresh_token(
    State(platform): State<Platform>,
    State(auth): State<AuthState>,
    ApiJson(request): ApiJson<RefreshRequest>,
) -> Result<NoStore<TokenResponse>, AppError> {
    Ok(NoStore(
        sessions::refresh(&platform, &auth, &request.refresh_token).await?,
    ))
}

/// Sign out: end the refresh token's sign-in.
#[utoipa::path(post, path = "/auth/logout", tag = TAG, operation_id = "auth-sign-out",
    request_body = RefreshRequest,
    responses((status = 204, description = "Revoked (or already unknown).")))]
async fn logout(
    State(platform): State<Platform>,
    ApiJson(request): ApiJson<RefreshRequest>,
) -> Result<StatusCode, AppError> {
    sessions::logout(&platform, &request.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// End every session of the caller, access tokens included.
#[utoipa::path(post, path = "/auth/logout-all", tag = TAG, operation_id = "auth-sign-out-everywhere",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Every session revoked."),
        (status = 401, description = "No valid token.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn logout_all(
    State(platform): State<Platform>,
    CurrentUser(user): CurrentUser,
) -> Result<StatusCode, AppError> {
    sessions::logout_all(&platform, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change one's password; every other session ends.
#[utoipa::path(put, path = "/auth/password", tag = TAG, operation_id = "auth-change-password",
    request_body = ChangePasswordRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Changed; a fresh token pair for this session.", body = TokenResponse),
        (status = 401, description = "No valid token.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The current password is wrong.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed password checks; see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The new password is invalid.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn change_password(
    State(platform): State<Platform>,
    State(auth): State<AuthState>,
    CurrentUser(user): CurrentUser,
    ClientAddress(client): ClientAddress,
    ApiJson(request): ApiJson<ChangePasswordRequest>,
) -> Result<NoStore<TokenResponse>, AppError> {
    Ok(NoStore(
        service::change_password(&platform, &auth, &user, request, &client).await?,
    ))
}
