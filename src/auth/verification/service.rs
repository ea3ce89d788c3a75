//! The verification rules: which address a link proves, how often one may be
//! sent again, and what using one does. Time is passed in (`now`).

use chrono::{DateTime, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use uuid::Uuid;

use crate::auth::account_mail::AccountMail;
use crate::auth::email_tokens::{self, IssuedToken, Purpose, RequestLimit};
use crate::auth::outbox::{AccountEmail, Outgoing};
use crate::auth::sessions::to_chrono;
use crate::auth::verification::schemas::VerifyEmailRequest;
use crate::core::platform::Platform;
use crate::shared::error::AppError;
use crate::shared::validation::Validator;
use crate::users::models::User;
use crate::users::service as users;

/// The one answer to a verification token that is unknown, used, expired,
/// superseded, or for an address the account neither has nor waits for.
fn invalid_verification_token() -> AppError {
    AppError::BadRequest {
        code: "invalid_verification_token",
        detail: "This verification link is invalid or has expired; ask for a new one.".to_owned(),
    }
}

/// Issues a token proving `address` for the account and queues its link, on
/// `conn` (inside the caller's transaction); older links stop working.
pub async fn mail_verification_link(
    conn: &mut AsyncPgConnection,
    mail: &AccountMail,
    user_id: Uuid,
    address: &str,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    let ttl = mail.config.verification_ttl;
    let token = IssuedToken::generate()?;
    let expires_at = now + to_chrono(ttl)?;
    email_tokens::issue(
        conn,
        user_id,
        Purpose::VerifyEmail,
        &token,
        address,
        expires_at,
    )
    .await?;
    let message = Outgoing {
        user_id,
        to: address.to_owned(),
        email: AccountEmail::VerifyAddress {
            token: token.value,
            expires_in: ttl,
        },
    };
    mail.outbox.enqueue(conn, message).await
}

/// `POST /users/me/email-verification`: mails a new link for the address the
/// account is changing to, or else for its unverified address (409
/// `email_already_verified` when there is nothing to prove), at most
/// `EMAIL_VERIFICATION_MAX_PER_ACCOUNT` times a window (429 past it).
pub async fn resend(
    platform: &Platform,
    mail: &AccountMail,
    user: &User,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    let address = match (&user.pending_email, user.email_verified_at) {
        (Some(pending), _) => pending.clone(),
        (None, None) => user.email.clone(),
        (None, Some(_)) => {
            return Err(AppError::Conflict {
                code: "email_already_verified",
                detail: "This address is verified already; there is nothing to confirm.".to_owned(),
            });
        }
    };
    count_link_request(platform, mail, user.id, now).await?;
    let user_id = user.id;
    let mut conn = platform.pool.get().await?;
    conn.transaction::<_, AppError, _>(async move |conn| {
        mail_verification_link(conn, mail, user_id, &address, now).await
    })
    .await
}

/// Counts a verification link the account asks to be mailed (a resend or an
/// email change): at most `EMAIL_VERIFICATION_MAX_PER_ACCOUNT` a window, 429
/// past it, so an account cannot make the service mail any address at will.
pub async fn count_link_request(
    platform: &Platform,
    mail: &AccountMail,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    let limit = RequestLimit {
        key: format!("verify:account:{user_id}"),
        max: mail.config.max_verifications_per_account,
    };
    email_tokens::record_request(&platform.pool, &[limit], mail.config.request_window, now).await
}

/// `POST /auth/verify-email`: uses a link. For the account's own address it
/// marks the address verified; for the address it waits to change to, it
/// makes that the account's email (verified) and tells the old address. 400
/// `invalid_verification_token` otherwise; 409 `email_taken` if another
/// account took the new address meanwhile.
pub async fn verify(
    platform: &Platform,
    mail: &AccountMail,
    request: VerifyEmailRequest,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    let mut validator = Validator::new();
    email_tokens::check_shape(&mut validator, &request.token);
    validator.into_result()?;
    let hash = email_tokens::hash(&request.token);
    let mut conn = platform.pool.get().await?;
    conn.transaction::<_, AppError, _>(async move |conn| {
        let Some(token) =
            email_tokens::find_usable(conn, &hash, Purpose::VerifyEmail, now, true).await?
        else {
            return Err(invalid_verification_token());
        };
        let user = users::find(conn, token.user_id)
            .await?
            .ok_or_else(invalid_verification_token)?;
        email_tokens::mark_used(conn, token.id, now).await?;
        if token.email.eq_ignore_ascii_case(&user.email) {
            users::mark_email_verified(conn, user.id, now).await?;
            return Ok(());
        }
        if user.pending_email.as_deref() != Some(token.email.as_str()) {
            return Err(invalid_verification_token());
        }
        users::apply_pending_email(conn, user.id, &token.email, now)
            .await?
            .ok_or_else(invalid_verification_token)?;
        // Links mailed to the old address no longer speak for the account.
        email_tokens::supersede(conn, user.id, Purpose::VerifyEmail).await?;
        email_tokens::supersede(conn, user.id, Purpose::PasswordReset).await?;
        let notice = Outgoing {
            user_id: user.id,
            to: user.email,
            email: AccountEmail::AddressChanged {
                new_address: token.email,
            },
        };
        mail.outbox.enqueue(conn, notice).await
    })
    .await
}
