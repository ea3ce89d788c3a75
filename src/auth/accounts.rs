//! Account flows that involve a password: sign-up (or an admin creating an
//! account), deleting one's own account, and creating an account for the
//! seeder. The profile itself belongs to `users`; this module hashes the
//! password and writes profile and credentials in one transaction.

use diesel_async::AsyncConnection;
use uuid::Uuid;

use crate::auth::password::validate_password;
use crate::auth::service::{self, AuthState};
use crate::core::db::DbPool;
use crate::core::platform::Platform;
use crate::shared::error::AppError;
use crate::shared::validation::Validator;
use crate::users::models::{Email, FullName, NewUser, Role, User};
use crate::users::schemas::CreateUserRequest;
use crate::users::service as users;

/// Creates an account (sign-up, or an admin creating one). Validates every
/// field at once; the account and its password hash are written together.
pub async fn sign_up(
    platform: &Platform,
    auth: &AuthState,
    actor: Option<&User>,
    request: CreateUserRequest,
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
    let mut validator = Validator::new();
    let email = validator.check(&["body", "email"], Email::parse(&request.email));
    let full_name = validator.check(&["body", "full_name"], FullName::parse(&request.full_name));
    validator.check(&["body", "password"], validate_password(&request.password));
    validator.finish()?;
    let (Some(email), Some(full_name)) = (email, full_name) else {
        return Err(AppError::Internal("validated fields missing".to_owned()));
    };
    let account = NewAccount {
        email,
        full_name,
        role: request.role.unwrap_or(Role::User),
    };
    insert_account(&platform.pool, auth, account, &request.password).await
}

/// A validated account to create.
pub struct NewAccount {
    /// Its email.
    pub email: Email,
    /// Its name.
    pub full_name: FullName,
    /// Its role.
    pub role: Role,
}

/// Writes an account and its password hash in one transaction (the password
/// is hashed first, outside it). A taken email is a 409.
pub async fn insert_account(
    pool: &DbPool,
    auth: &AuthState,
    account: NewAccount,
    password: &str,
) -> Result<User, AppError> {
    let new_user = NewUser {
        id: Uuid::now_v7(),
        email: account.email.into_inner(),
        full_name: account.full_name.into_inner(),
        role: account.role,
    };
    let password_hash = auth.passwords.hash(password).await?;
    let mut conn = pool.get().await?;
    conn.transaction::<_, AppError, _>(async move |conn| {
        let user = users::insert(conn, &new_user).await?;
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
) -> Result<(), AppError> {
    service::verify_password(platform, auth, user, password).await?;
    users::delete(platform, user.id, expected_revision).await
}
