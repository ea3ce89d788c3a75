//! The recovery rules: who gets a link, how often, and what using one does.
//! Time is passed in (`now`), so expiry is tested without waiting.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel_async::AsyncConnection;

use crate::auth::account_mail::AccountMail;
use crate::auth::email_tokens::{self, IssuedToken, Purpose, RequestLimit};
use crate::auth::models::NewCredentials;
use crate::auth::outbox::{AccountEmail, Outgoing};
use crate::auth::password::validate_password;
use crate::auth::recovery::schemas::{PasswordResetConfirmRequest, PasswordResetRequest};
use crate::auth::repository;
use crate::auth::service::AuthState;
use crate::auth::sessions;
use crate::core::platform::Platform;
use crate::shared::error::{AppError, FieldError};
use crate::shared::validation::{Validator, invalid_fields};
use crate::users::models::Email;
use crate::users::service as users;

/// The least time a reset request takes to answer, whether or not an account
/// has the address: the work for a known one (a token, a queued message)
/// hides inside it, so timing tells nothing.
pub const RESET_ANSWER_FLOOR: Duration = Duration::from_millis(250);

/// The one answer to a token that is unknown, used, expired or superseded:
/// nothing in it tells which.
fn invalid_reset_token() -> AppError {
    AppError::BadRequest {
        code: "invalid_reset_token",
        detail: "This reset link is invalid or has expired; ask for a new one.".to_owned(),
    }
}

/// `POST /auth/password-reset`: counts the request against its address and
/// its client (429 past either), then, if an active account has the address,
/// supersedes its older links and queues a new one with the message, in one
/// transaction. Answers the same, no sooner than [`RESET_ANSWER_FLOOR`],
/// either way.
pub async fn request_reset(
    platform: &Platform,
    mail: &AccountMail,
    request: PasswordResetRequest,
    client: &str,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    let started = Instant::now();
    let email = Email::parse(&request.email)
        .map_err(|invalid| invalid_fields([(FieldError::body("email"), Some(invalid))]))?
        .into_inner();
    let address = {
        let mut conn = platform.pool.get().await?;
        email_tokens::normalise(&mut conn, &email).await?
    };
    let config = &mail.config;
    let limits = [
        RequestLimit {
            // Hashed: 254 characters of an address can be 1 KB of UTF-8, past the key's bound.
            key: format!("reset:address:{}", hex(&email_tokens::hash(&address))),
            max: config.max_resets_per_address,
        },
        RequestLimit {
            key: format!("reset:client:{client}"),
            max: config.max_resets_per_client,
        },
    ];
    email_tokens::record_request(&platform.pool, &limits, config.request_window, now).await?;
    let issued = mail_reset_link(platform, mail, &email, now).await;
    tokio::time::sleep_until((started + RESET_ANSWER_FLOOR).into()).await;
    issued
}

/// Lower-case hexadecimal.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Issues a reset token for the active account with `email`, if there is
/// one, and queues its link, in one transaction.
async fn mail_reset_link(
    platform: &Platform,
    mail: &AccountMail,
    email: &str,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    let ttl = mail.config.reset_ttl;
    let expires_at = now + sessions::to_chrono(ttl)?;
    let token = IssuedToken::generate()?;
    let mut conn = platform.pool.get().await?;
    conn.transaction::<_, AppError, _>(async move |conn| {
        let Some(user) = users::find_by_email(conn, email)
            .await?
            .filter(|user| user.is_active)
        else {
            return Ok(());
        };
        email_tokens::issue(
            conn,
            user.id,
            Purpose::PasswordReset,
            &token,
            &user.email,
            expires_at,
        )
        .await?;
        let message = Outgoing {
            user_id: user.id,
            to: user.email,
            email: AccountEmail::PasswordReset {
                token: token.value,
                expires_in: ttl,
            },
        };
        mail.outbox.enqueue(conn, message).await
    })
    .await
}

/// `POST /auth/password-reset/confirm`: checks the new password (the rules of
/// sign-up) and the token, then in one transaction consumes the token (and
/// any other of the account's), sets the password, ends every session of the
/// account (API keys are other credentials and stay), marks its address
/// verified (the link reached it) and queues a notice to its address. A token
/// that is unknown, used, expired, or mailed to an address the account no
/// longer has is one `400 invalid_reset_token`.
pub async fn confirm_reset(
    platform: &Platform,
    auth: &AuthState,
    mail: &AccountMail,
    request: PasswordResetConfirmRequest,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    let mut validator = Validator::new();
    email_tokens::check_shape(&mut validator, &request.token);
    validator.check(
        FieldError::body("new_password"),
        validate_password(&request.new_password),
    );
    validator.into_result()?;
    let hash = email_tokens::hash(&request.token);
    // A cheap look first: no password is hashed for a token that cannot work.
    {
        let mut conn = platform.pool.get().await?;
        if email_tokens::find_usable(&mut conn, &hash, Purpose::PasswordReset, now, false)
            .await?
            .is_none()
        {
            return Err(invalid_reset_token());
        }
    }
    let password_hash = auth.passwords.hash(&request.new_password).await?;
    let mut conn = platform.pool.get().await?;
    conn.transaction::<_, AppError, _>(async move |conn| {
        // Locked: of two concurrent uses of one token, the second finds it used.
        let Some(token) =
            email_tokens::find_usable(conn, &hash, Purpose::PasswordReset, now, true).await?
        else {
            return Err(invalid_reset_token());
        };
        let user = users::find(conn, token.user_id)
            .await?
            .filter(|user| user.is_active && user.email.eq_ignore_ascii_case(&token.email))
            .ok_or_else(invalid_reset_token)?;
        email_tokens::mark_used(conn, token.id, now).await?;
        email_tokens::supersede(conn, user.id, Purpose::PasswordReset).await?;
        // The link reached the account's address: that proves it too.
        if user.email_verified_at.is_none() {
            users::mark_email_verified(conn, user.id, now).await?;
        }
        repository::upsert_credentials(
            conn,
            &NewCredentials {
                user_id: user.id,
                password_hash,
            },
        )
        .await?;
        sessions::revoke_sessions(conn, user.id).await?;
        let notice = Outgoing {
            user_id: user.id,
            to: user.email,
            email: AccountEmail::PasswordChanged,
        };
        mail.outbox.enqueue(conn, notice).await
    })
    .await
}
