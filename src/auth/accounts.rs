//! Account flows that involve a password: sign-up (or an admin creating an
//! account), deleting one's own account, and creating an account for the
//! seeder. The profile itself belongs to `users`; this module hashes the
//! password and writes profile and credentials in one transaction.

use chrono::Utc;
use diesel_async::AsyncConnection;
use uuid::Uuid;

use crate::auth::account_mail::AccountMail;
use crate::auth::email_tokens::{self, RequestLimit};
use crate::auth::password::{bounded_password, validate_password};
use crate::auth::service::{self, AuthState};
use crate::auth::sessions;
use crate::auth::verification::service as verification;
use crate::core::db::DbPool;
use crate::core::platform::Platform;
use crate::shared::error::{AppError, FieldError};
use crate::shared::validation::invalid_fields;
use crate::users::models::{Email, FullName, Role, User};
use crate::users::schemas::CreateUserRequest;
use crate::users::service::{self as users, NewProfile, RequestedChanges};

/// Creates an account (sign-up, or an admin creating one). Validates every
/// field at once; the account, its password hash and a verification link
/// to its address are written together.
pub async fn sign_up(
    platform: &Platform,
    auth: &AuthState,
    mail: &AccountMail,
    actor: Option<&User>,
    request: CreateUserRequest,
    client: &str,
) -> Result<User, AppError> {
    let actor_is_admin = actor.is_some_and(|user| user.role == Role::Admin);
    if !actor_is_admin && !auth.config.allow_signup {
        return Err(AppError::Forbidden {
            code: "signup_disabled",
            detail: "Sign-up is disabled; ask an admin to create your account.".to_owned(),
        });
    }
    if request.role.is_some_and(|role| role != Role::User) && !actor_is_admin {
        return Err(AppError::Forbidden {
            code: "admin_required",
            detail: "Only admins may choose an account's role.".to_owned(),
        });
    }
    let account = parse_sign_up(&request)?;
    if !actor_is_admin {
        count_sign_up(platform, mail, client).await?;
    }
    let password_hash = auth.passwords.hash(&request.password).await?;
    let mut conn = platform.pool.get().await?;
    conn.transaction::<_, AppError, _>(async move |conn| {
        let user = users::insert(conn, account).await?;
        service::store_password_hash(conn, user.id, password_hash).await?;
        verification::mail_verification_link(conn, mail, user.id, &user.email, Utc::now()).await?;
        Ok(user)
    })
    .await
}

/// Counts a self-service sign-up against its client (`SIGNUPS_PER_CLIENT` per
/// `EMAIL_REQUEST_WINDOW_SECONDS`): each one mails the address it names.
async fn count_sign_up(
    platform: &Platform,
    mail: &AccountMail,
    client: &str,
) -> Result<(), AppError> {
    let limit = RequestLimit {
        key: format!("signup:client:{client}"),
        max: mail.config.max_signups_per_client,
    };
    email_tokens::record_request(
        &platform.pool,
        &[limit],
        mail.config.request_window,
        Utc::now(),
    )
    .await
    .map_err(|error| match error {
        AppError::RateLimited { retry_after, .. } => AppError::RateLimited {
            detail: "Too many sign-ups from this network; wait before trying again.".to_owned(),
            retry_after,
        },
        other => other,
    })
}

/// Parses a sign-up request into the profile to create, checking the password
/// too; every invalid field is reported at once.
fn parse_sign_up(request: &CreateUserRequest) -> Result<NewProfile, AppError> {
    match (
        Email::parse(&request.email),
        FullName::parse(&request.full_name),
        validate_password(&request.password),
    ) {
        (Ok(email), Ok(full_name), Ok(())) => Ok(NewProfile {
            email,
            full_name,
            role: request.role.unwrap_or(Role::User),
        }),
        (email, full_name, password) => Err(invalid_fields([
            (FieldError::body("email"), email.err()),
            (FieldError::body("full_name"), full_name.err()),
            (FieldError::body("password"), password.err()),
        ])),
    }
}

/// Writes an account and its password hash in one transaction (the password
/// is hashed first, outside it), mailing nothing (the first admin, tests). A
/// taken email is a 409.
pub async fn insert_account(
    pool: &DbPool,
    auth: &AuthState,
    account: NewProfile,
    password: &str,
) -> Result<User, AppError> {
    let password_hash = auth.passwords.hash(password).await?;
    let mut conn = pool.get().await?;
    conn.transaction::<_, AppError, _>(async move |conn| {
        let user = users::insert(conn, account).await?;
        service::store_password_hash(conn, user.id, password_hash).await?;
        Ok(user)
    })
    .await
}

/// Deletes the caller's own account after checking their password.
pub async fn delete_own(
    platform: &Platform,
    auth: &AuthState,
    user: &User,
    password: &str,
    expected_revision: Option<i64>,
    client: &str,
) -> Result<(), AppError> {
    let presented = service::Presented::at("password", password);
    service::verify_password(platform, auth, user, presented, client).await?;
    users::delete(platform, user.id, expected_revision).await
}

/// Changes the caller's own profile. Sending an email — the login, and so
/// the account — needs the current password (checked through the limiter),
/// and a changed one ends every other sign-in; a name change needs neither.
/// A new address (not merely a new spelling of this one) takes effect only
/// when a link mailed to it is used: until then it is `pending_email`.
pub async fn update_own_profile(
    platform: &Platform,
    auth: &AuthState,
    mail: &AccountMail,
    caller: &Caller<'_>,
    expected_revision: Option<i64>,
    mut changes: RequestedChanges,
    current_password: Option<&str>,
) -> Result<User, AppError> {
    let user = caller.user;
    // A password sent along is bounded as the document says, needed or not.
    if let Some(password) = current_password {
        bounded_password(password).map_err(|invalid| {
            invalid_fields([(FieldError::body("current_password"), Some(invalid))])
        })?;
    }
    // Any `email` needs the password, as the document says, even the current
    // one; only a different one ends the other sign-ins.
    let email_given = changes.email.is_some();
    let email_changes = changes
        .email
        .as_deref()
        .is_some_and(|email| email != user.email);
    if email_given {
        let Some(password) = current_password else {
            return Err(AppError::Validation(vec![
                FieldError::body("current_password")
                    .because("is required to change the email")
                    .kind("missing"),
            ]));
        };
        let presented = service::Presented::at("current_password", password);
        service::verify_password(platform, auth, user, presented, caller.client).await?;
    }
    // A new, valid address waits for its link; an invalid one stays in the
    // changes, so the 422 lists it with every other invalid field.
    let new_address = changes
        .email
        .take_if(|email| !email.eq_ignore_ascii_case(&user.email) && Email::parse(email).is_ok());
    if let Some(address) = &new_address {
        // Refused before anything changes (and checked again when it is set).
        let mut conn = platform.pool.get().await?;
        if users::find_by_email(&mut conn, address).await?.is_some() {
            return Err(users::email_taken());
        }
        drop(conn);
        verification::count_link_request(platform, mail, user.id, Utc::now()).await?;
    }
    // Sending the current address back cancels a pending change.
    let cancels = user.pending_email.is_some()
        && changes
            .email
            .as_deref()
            .is_some_and(|email| email.eq_ignore_ascii_case(&user.email));
    let mut updated = users::update(platform, user.id, expected_revision, changes).await?;
    if cancels {
        let mut conn = platform.pool.get().await?;
        updated = users::cancel_pending_email(&mut conn, user.id).await?;
    }
    if let Some(address) = new_address {
        let mut conn = platform.pool.get().await?;
        let user_id = user.id;
        updated = conn
            .transaction::<_, AppError, _>(async move |conn| {
                let pending = users::set_pending_email(conn, user_id, &address).await?;
                let now = Utc::now();
                verification::mail_verification_link(conn, mail, user_id, &address, now).await?;
                Ok(pending)
            })
            .await?;
    }
    if email_changes {
        sessions::end_other_sessions(platform, user.id, caller.session).await?;
    }
    Ok(updated)
}

/// Who is making a change to their own account, from where, in which sign-in.
pub struct Caller<'a> {
    /// The signed-in account.
    pub user: &'a User,
    /// Their sign-in, kept when the others are ended.
    pub session: Option<Uuid>,
    /// Their client, for the password-check limiter.
    pub client: &'a str,
}
