//! `/api/v1/auth`: tokens, refresh, logout, password changes and browser
//! sessions (API keys have their own router).

use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::api_keys;
use crate::auth::browser_sessions::{self, AccessTokenResponse, CsrfProof};
use crate::auth::extract::{ClientAddress, CurrentUser};
use crate::auth::schemas::{ChangePasswordRequest, RefreshRequest, TokenForm, TokenResponse};
use crate::auth::service::{self, AuthState};
use crate::auth::sessions;
use crate::core::http::extract::{ApiForm, ApiJson};
use crate::core::http::no_store::NoStore;
use crate::core::platform::Platform;
use crate::shared::error::{AppError, Problem};

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
        .routes(routes!(browser_sign_in))
        .routes(routes!(browser_refresh))
        .routes(routes!(browser_sign_out))
        .merge(api_keys::router::router())
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

/// Sign in from a browser: the refresh token goes in an HttpOnly cookie.
///
/// The same form and checks as `POST /auth/token`; the body carries only the
/// access token. Send `X-Tessera-Csrf: 1`, and from another origin call with
/// `credentials: "include"` (the origin must be in `CORS_ALLOWED_ORIGINS`).
#[utoipa::path(post, path = "/auth/session", tag = TAG, operation_id = "auth-session-sign-in",
    params(("X-Tessera-Csrf" = inline(CsrfProof), Header, description = "Proof that a page of an allowed origin sent this (`1`).")),
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Signed in; `Set-Cookie` holds the refresh token (`HttpOnly; Secure; SameSite=Strict; Path=/api/v1/auth/session`).", body = AccessTokenResponse, headers(("Set-Cookie" = String, description = "`tessera_refresh`, the session's refresh token."))),
        (status = 401, description = "Incorrect email or password (the same answer for both).", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The CSRF header is missing or the request is cross-site, or the account is deactivated.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed sign-ins; see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many sign-ins in progress; see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn browser_sign_in(
    State(platform): State<Platform>,
    State(auth): State<AuthState>,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
    ApiForm(form): ApiForm<TokenForm>,
) -> Result<Response, AppError> {
    browser_sessions::check_csrf(&headers)?;
    let pair = service::login(&platform, &auth, form, &client).await?;
    Ok(browser_sessions::issued(&auth, &headers, pair))
}

/// Renew a browser session's access token; the cookie rotates.
///
/// Reads the refresh token from the cookie. Like `POST /auth/refresh`, each
/// cookie value works once: a reused one ends the whole sign-in.
#[utoipa::path(post, path = "/auth/session/refresh", tag = TAG, operation_id = "auth-session-refresh",
    params(
        ("X-Tessera-Csrf" = inline(CsrfProof), Header, description = "Proof that a page of an allowed origin sent this (`1`)."),
        ("tessera_refresh" = Option<String>, Cookie, nullable = false, description = "The session's refresh token, set by the sign-in (the browser sends it)."),
    ),
    responses(
        (status = 200, description = "A new access token; `Set-Cookie` holds the next refresh token.", body = AccessTokenResponse, headers(("Set-Cookie" = String, description = "`tessera_refresh`, rotated."))),
        (status = 401, description = "No cookie, or its token is invalid, expired, revoked or reused (which revokes its whole sign-in); the cookie is cleared.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The CSRF header is missing or the request is cross-site.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn browser_refresh(
    State(platform): State<Platform>,
    State(auth): State<AuthState>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    browser_sessions::check_csrf(&headers)?;
    let token =
        browser_sessions::refresh_token(&headers).ok_or_else(browser_sessions::no_session)?;
    match sessions::refresh(&platform, &auth, &token).await {
        Ok(pair) => Ok(browser_sessions::issued(&auth, &headers, pair)),
        // The token will never work again: the browser may as well forget it.
        Err(refused @ AppError::Unauthorized { .. }) => {
            Ok(browser_sessions::cleared(&auth, &headers, refused))
        }
        Err(error) => Err(error),
    }
}

/// Sign out of a browser session: its sign-in ends and the cookie is cleared.
#[utoipa::path(post, path = "/auth/session/logout", tag = TAG, operation_id = "auth-session-sign-out",
    params(
        ("X-Tessera-Csrf" = inline(CsrfProof), Header, description = "Proof that a page of an allowed origin sent this (`1`)."),
        ("tessera_refresh" = Option<String>, Cookie, nullable = false, description = "The session's refresh token (the browser sends it)."),
    ),
    responses(
        (status = 204, description = "Signed out (or there was no session); the cookie is cleared.", headers(("Set-Cookie" = String, description = "`tessera_refresh`, expired."))),
        (status = 403, description = "The CSRF header is missing or the request is cross-site.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn browser_sign_out(
    State(platform): State<Platform>,
    State(auth): State<AuthState>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    browser_sessions::check_csrf(&headers)?;
    if let Some(token) = browser_sessions::refresh_token(&headers) {
        sessions::logout(&platform, &token).await?;
    }
    Ok(browser_sessions::cleared(
        &auth,
        &headers,
        StatusCode::NO_CONTENT,
    ))
}
