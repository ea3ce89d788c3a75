//! `POST /api/v1/auth/verify-email` (using a link) and `POST
//! /api/v1/users/me/email-verification` (sending one again).

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use chrono::Utc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::account_mail::AccountMail;
use crate::auth::extract::CurrentUser;
use crate::auth::service::AuthState;
use crate::auth::verification::schemas::VerifyEmailRequest;
use crate::auth::verification::service;
use crate::core::http::extract::ApiJson;
use crate::core::platform::Platform;
use crate::shared::error::{AppError, Problem};

/// The verification routes, for any state holding the platform, the auth state and the account mail.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    Platform: FromRef<S>,
    AuthState: FromRef<S>,
    AccountMail: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(verify_email))
        .routes(routes!(resend_email_verification))
}

/// Confirm an email address with a verification link's token.
///
/// Marks the account's address verified, or, for an email change, makes the
/// new address the account's email and tells the old one.
#[utoipa::path(post, path = "/auth/verify-email", tag = crate::auth::router::TAG, operation_id = "auth-verify-email",
    request_body = VerifyEmailRequest,
    responses(
        (status = 204, description = "The address is verified (and, for a change, now the account's email)."),
        (status = 400, description = "`invalid_verification_token`: the link is unknown, used or expired.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`email_taken`: another account took the new address meanwhile.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The token is malformed.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn verify_email(
    State(platform): State<Platform>,
    State(mail): State<AccountMail>,
    ApiJson(request): ApiJson<VerifyEmailRequest>,
) -> Result<StatusCode, AppError> {
    service::verify(&platform, &mail, request, Utc::now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Email a new verification link for one's address.
///
/// For the address an email change waits for, or else one's unverified
/// address; older links stop working.
#[utoipa::path(post, path = "/users/me/email-verification", tag = crate::users::router::TAG,
    operation_id = "users-resend-email-verification",
    security(("bearer" = [])),
    responses(
        (status = 202, description = "A new link is on its way."),
        (status = 401, description = "No valid token.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`email_already_verified`: there is nothing to confirm.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many links asked for; see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn resend_email_verification(
    State(platform): State<Platform>,
    State(mail): State<AccountMail>,
    CurrentUser(user): CurrentUser,
) -> Result<StatusCode, AppError> {
    service::resend(&platform, &mail, &user, Utc::now()).await?;
    Ok(StatusCode::ACCEPTED)
}
