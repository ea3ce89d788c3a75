//! Authentication rules: logging in, rotating refresh tokens, logging out,
//! changing passwords, and who the caller is.

use std::sync::Arc;

use chrono::Utc;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use uuid::Uuid;

use crate::auth::config::AuthConfig;
use crate::auth::models::{NewCredentials, NewRefreshToken};
use crate::auth::password::{
    HashError, Passwords, bounded_password, bounded_username, validate_password,
};
use crate::auth::repository;
use crate::auth::schemas::{ChangePasswordRequest, TokenForm, TokenResponse};
use crate::auth::tokens::{KeyError, TokenService, invalid_token};
use crate::core::platform::Platform;
use crate::shared::error::{AppError, FieldError};
use crate::shared::validation::Validator;
use crate::users::models::User;
use crate::users::service as users;

/// What the auth domain keeps for the life of the process.
#[derive(Clone)]
pub struct AuthState {
    /// The auth settings.
    pub config: Arc<AuthConfig>,
    /// Signs and checks tokens.
    pub tokens: Arc<TokenService>,
    /// Hashes and verifies passwords.
    pub passwords: Arc<Passwords>,
}

impl AuthState {
    /// Builds the state: loads keys and computes the dummy hash (startup).
    pub fn new(config: &AuthConfig) -> Result<Self, AuthSetupError> {
        Ok(Self {
            config: Arc::new(config.clone()),
            tokens: Arc::new(TokenService::new(config)?),
            passwords: Arc::new(Passwords::new(
                Passwords::owasp_params(),
                config.password_hash_concurrency,
                config.password_hash_queue,
            )?),
        })
    }
}

/// Why the auth domain could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// A signing key is unusable.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The dummy password hash could not be computed.
    #[error("cannot hash passwords: {0}")]
    Hashing(#[from] HashError),
}

/// The one answer to every failed login, whatever failed.
fn invalid_credentials() -> AppError {
    AppError::Unauthorized {
        code: "invalid_credentials",
        detail: "Incorrect email or password.".to_owned(),
    }
}

/// The grant is `password`, and the credentials are bounded before anything
/// else: the name becomes a limiter key (an index entry), the password an
/// argon2 input.
fn check_token_form(form: &TokenForm) -> Result<(), AppError> {
    if form
        .grant_type
        .as_deref()
        .is_some_and(|grant| grant != "password")
    {
        return Err(AppError::BadRequest {
            code: "unsupported_grant_type",
            detail: "Only the `password` grant is supported.".to_owned(),
        });
    }
    let mut validator = Validator::new();
    validator.check(
        FieldError::body("username"),
        bounded_username(&form.username),
    );
    validator.check(
        FieldError::body("password"),
        bounded_password(&form.password),
    );
    validator.into_result()
}

/// `POST /auth/token`: checks the rate limits, then the password (against a
/// dummy hash for unknown accounts, so both cost the same), then issues a
/// token pair starting a new refresh-token family.
pub async fn login(
    platform: &Platform,
    auth: &AuthState,
    form: TokenForm,
    client: &str,
) -> Result<TokenResponse, AppError> {
    check_token_form(&form)?;
    let config = &auth.config;
    let account_key = format!("account:{}", form.username.trim().to_lowercase());
    let keys = [account_key.clone(), format!("client:{client}")];
    let (user, stored_hash) = {
        let mut conn = platform.pool.get().await?;
        enforce_login_limit(&mut conn, config, &keys).await?;
        let user = users::find_by_email(&mut conn, form.username.trim()).await?;
        let stored_hash = match &user {
            Some(user) => repository::password_hash(&mut conn, user.id).await?,
            None => None,
        };
        (user, stored_hash)
    }; // The connection goes back to the pool before the slow hash.
    let verification = auth
        .passwords
        .verify(&form.password, stored_hash.as_deref())
        .await?;
    let mut conn = platform.pool.get().await?;
    let Some(user) = user.filter(|_| verification.valid) else {
        repository::record_failures(&mut conn, &keys).await?;
        return Err(invalid_credentials());
    };
    if !user.is_active {
        return Err(AppError::Forbidden {
            code: "account_inactive",
            detail: "This account is deactivated.".to_owned(),
        });
    }
    let window_start = Utc::now() - config.failed_login_window;
    repository::clear_failures(&mut conn, &account_key, window_start).await?;
    if verification.outdated {
        let password_hash = auth.passwords.hash(&form.password).await?;
        let credentials = NewCredentials {
            user_id: user.id,
            password_hash,
        };
        repository::upsert_credentials(&mut conn, &credentials).await?;
    }
    issue_pair(&mut conn, auth, &user, Uuid::now_v7()).await
}

/// 429 when the account or the client has failed too often in the window.
async fn enforce_login_limit(
    conn: &mut AsyncPgConnection,
    config: &AuthConfig,
    keys: &[String],
) -> Result<(), AppError> {
    let window =
        chrono::Duration::from_std(config.failed_login_window).map_err(AppError::internal)?;
    let now = Utc::now();
    let counts = repository::failures_since(conn, keys, now - window).await?;
    let blocked_until = counts
        .iter()
        .filter(|(_, count, _)| *count >= i64::from(config.max_failed_logins))
        .filter_map(|(_, _, oldest)| oldest.map(|oldest| oldest + window))
        .max();
    match blocked_until {
        Some(until) => Err(AppError::RateLimited {
            detail: "Too many failed sign-ins; wait before trying again.".to_owned(),
            retry_after: (until - now).to_std().unwrap_or_default(),
        }),
        None => Ok(()),
    }
}

/// Issues an access token and a refresh token in `family`.
async fn issue_pair(
    conn: &mut AsyncPgConnection,
    auth: &AuthState,
    user: &User,
    family_id: Uuid,
) -> Result<TokenResponse, AppError> {
    let refresh = TokenService::new_refresh_token()?;
    let ttl = chrono::Duration::from_std(auth.tokens.refresh_ttl()).map_err(AppError::internal)?;
    repository::insert_refresh_token(
        conn,
        &NewRefreshToken {
            id: Uuid::now_v7(),
            family_id,
            user_id: user.id,
            token_hash: refresh.hash,
            expires_at: Utc::now() + ttl,
        },
    )
    .await?;
    Ok(TokenResponse {
        access_token: auth.tokens.issue_access(user)?,
        token_type: "bearer".to_owned(),
        expires_in: auth.tokens.access_ttl().as_secs(),
        refresh_token: refresh.value,
    })
}

/// What an exchange of a refresh token came to (decided inside the transaction,
/// answered after it commits, so that a revocation sticks even when we refuse).
enum Exchange {
    Issued(TokenResponse),
    Refused(&'static str, &'static str),
}

/// `POST /auth/refresh`: single-use rotation. Presenting a token that was
/// already used revokes its whole family: someone else has a copy.
pub async fn refresh(
    platform: &Platform,
    auth: &AuthState,
    token: &str,
) -> Result<TokenResponse, AppError> {
    let hash = TokenService::hash_refresh_token(token);
    let mut conn = platform.pool.get().await?;
    let exchange = conn
        .transaction::<_, AppError, _>(async move |conn| {
                let Some(row) = repository::lock_refresh_token(conn, &hash).await? else {
                    return Ok(Exchange::Refused("invalid_refresh_token", "The refresh token is not valid."));
                };
                if row.revoked_at.is_some() {
                    return Ok(Exchange::Refused("invalid_refresh_token", "The refresh token has been revoked."));
                }
                if row.used_at.is_some() {
                    repository::revoke_family(conn, row.family_id).await?;
                    return Ok(Exchange::Refused(
                        "refresh_token_reused",
                        "The refresh token was already used; every session from that sign-in is now revoked.",
                    ));
                }
                if row.expires_at <= Utc::now() {
                    return Ok(Exchange::Refused("invalid_refresh_token", "The refresh token has expired."));
                }
                let user = users::find(conn, row.user_id).await?.filter(|user| user.is_active);
                let Some(user) = user else {
                    repository::revoke_family(conn, row.family_id).await?;
                    return Ok(Exchange::Refused("invalid_refresh_token", "The account is no longer active."));
                };
                repository::mark_used(conn, row.id).await?;
                Ok(Exchange::Issued(issue_pair(conn, auth, &user, row.family_id).await?))
        })
        .await?;
    match exchange {
        Exchange::Issued(pair) => Ok(pair),
        Exchange::Refused(code, detail) => Err(AppError::Unauthorized {
            code,
            detail: detail.to_owned(),
        }),
    }
}

/// `POST /auth/logout`: revokes the token's family. Unknown tokens are
/// ignored, so logging out twice is harmless.
pub async fn logout(platform: &Platform, token: &str) -> Result<(), AppError> {
    let hash = TokenService::hash_refresh_token(token);
    let mut conn = platform.pool.get().await?;
    conn.transaction::<_, AppError, _>(async move |conn| {
        if let Some(row) = repository::lock_refresh_token(conn, &hash).await? {
            repository::revoke_family(conn, row.family_id).await?;
        }
        Ok(())
    })
    .await
}

/// `POST /auth/logout-all`: revokes every refresh token of the caller, and
/// their access tokens at once.
pub async fn logout_all(platform: &Platform, user: &User) -> Result<(), AppError> {
    let mut conn = platform.pool.get().await?;
    let user_id = user.id;
    conn.transaction::<_, AppError, _>(async move |conn| revoke_sessions(conn, user_id).await)
        .await
}

/// Revokes every refresh token of `user_id` and invalidates its access tokens.
async fn revoke_sessions(conn: &mut AsyncPgConnection, user_id: Uuid) -> Result<(), AppError> {
    repository::revoke_all(conn, user_id).await?;
    users::invalidate_access_tokens(conn, user_id).await?;
    Ok(())
}

/// `PUT /auth/password`: checks the current password, stores the new one,
/// revokes every session, and returns a fresh pair for this one.
pub async fn change_password(
    platform: &Platform,
    auth: &AuthState,
    user: &User,
    request: ChangePasswordRequest,
) -> Result<TokenResponse, AppError> {
    let mut validator = Validator::new();
    validator.check(
        FieldError::body("current_password"),
        bounded_password(&request.current_password),
    );
    validator.check(
        FieldError::body("new_password"),
        validate_password(&request.new_password),
    );
    validator.into_result()?;
    verify_password(platform, auth, user, &request.current_password).await?;
    let password_hash = auth.passwords.hash(&request.new_password).await?;
    let user_id = user.id;
    let mut conn = platform.pool.get().await?;
    conn.transaction::<_, AppError, _>(async move |conn| {
        repository::upsert_credentials(
            conn,
            &NewCredentials {
                user_id,
                password_hash,
            },
        )
        .await?;
        revoke_sessions(conn, user_id).await?;
        let user = users::find(conn, user_id)
            .await?
            .ok_or_else(|| AppError::NotFound("The account no longer exists.".to_owned()))?;
        issue_pair(conn, auth, &user, Uuid::now_v7()).await
    })
    .await
}

/// Checks `password` against the user's own; a wrong one is a 403 (the
/// caller is authenticated, the confirmation failed).
pub async fn verify_password(
    platform: &Platform,
    auth: &AuthState,
    user: &User,
    password: &str,
) -> Result<(), AppError> {
    let stored = {
        let mut conn = platform.pool.get().await?;
        repository::password_hash(&mut conn, user.id).await?
    };
    let verification = auth.passwords.verify(password, stored.as_deref()).await?;
    if verification.valid {
        Ok(())
    } else {
        Err(AppError::Forbidden {
            code: "wrong_password",
            detail: "The current password is not correct.".to_owned(),
        })
    }
}

/// Stores the password hash of a new account, inside the caller's transaction.
pub async fn store_password_hash(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    password_hash: String,
) -> Result<(), AppError> {
    repository::upsert_credentials(
        conn,
        &NewCredentials {
            user_id,
            password_hash,
        },
    )
    .await?;
    Ok(())
}

/// The user an access token speaks for, if the token is still good: valid,
/// and its user exists, is active and has not revoked it since (the token
/// version). Checked on every request, so revocation takes effect at once.
pub async fn authenticate(
    platform: &Platform,
    auth: &AuthState,
    token: &str,
) -> Result<User, AppError> {
    let claims = auth.tokens.decode_access(token)?;
    let mut conn = platform.pool.get().await?;
    match users::find(&mut conn, claims.sub).await? {
        Some(user) if user.is_active && user.token_version == claims.ver => Ok(user),
        _ => Err(invalid_token("The access token has been revoked.")),
    }
}
