//! `/api/v1/auth/password-reset`: asking for a reset link, and using one.

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use chrono::Utc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::account_mail::AccountMail;
use crate::auth::extract::ClientAddress;
use crate::auth::recovery::schemas::{PasswordResetConfirmRequest, PasswordResetRequest};
use crate::auth::recovery::service;
use crate::auth::router::TAG;
use crate::auth::service::AuthState;
use crate::core::http::extract::ApiJson;
use crate::core::platform::Platform;
use crate::shared::error::{AppError, Problem};

/// The recovery routes, for any state holding the platform, the auth state and the account mail.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    Platform: FromRef<S>,
    AuthState: FromRef<S>,
    AccountMail: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(request_password_reset))
        .routes(routes!(reset_password))
}

/// Email a password-reset link to an account's address.
///
/// Answers `202` the same way, in the same time, whether or not an account has
/// the address; if one does, a single-use link (valid for
/// `PASSWORD_RESET_TTL_MINUTES`) is mailed to it, and older links stop working.
#[utoipa::path(post, path = "/auth/password-reset", tag = TAG, operation_id = "auth-request-password-reset",
    request_body = PasswordResetRequest,
    responses(
        (status = 202, description = "Accepted: if an account has this address, a link is on its way."),
        (status = 422, description = "The address is not a valid email address.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests for this address or from this client; see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn request_password_reset(
    State(platform): State<Platform>,
    State(mail): State<AccountMail>,
    ClientAddress(client): ClientAddress,
    ApiJson(request): ApiJson<PasswordResetRequest>,
) -> Result<StatusCode, AppError> {
    service::request_reset(&platform, &mail, request, &client, Utc::now()).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Set a new password with a reset link's token.
///
/// Consumes the token, ends every session of the account (API keys stay) and
/// mails a notice to its address.
#[utoipa::path(post, path = "/auth/password-reset/confirm", tag = TAG, operation_id = "auth-reset-password",
    request_body = PasswordResetConfirmRequest,
    responses(
        (status = 204, description = "The password is set; sign in with it."),
        (status = 400, description = "`invalid_reset_token`: the link is unknown, used or expired.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The token is malformed or the new password invalid.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many passwords being hashed; see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn reset_password(
    State(platform): State<Platform>,
    State(auth): State<AuthState>,
    State(mail): State<AccountMail>,
    ApiJson(request): ApiJson<PasswordResetConfirmRequest>,
) -> Result<StatusCode, AppError> {
    service::confirm_reset(&platform, &auth, &mail, request, Utc::now()).await?;
    Ok(StatusCode::NO_CONTENT)
}
