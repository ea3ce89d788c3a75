//! Authentication rules: logging in, rotating refresh tokens, logging out,
//! changing passwords, and who the caller is.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use uuid::Uuid;

use crate::auth::config::AuthConfig;
use crate::auth::limiter::{self, Account};
use crate::auth::models::{NewCredentials, NewRefreshToken};
use crate::auth::password::{
    HashError, Passwords, bounded_password, bounded_username, validate_password,
};
use crate::auth::repository;
use crate::auth::schemas::{ChangePasswordRequest, TokenForm, TokenResponse};
use crate::auth::tokens::{KeyError, TokenService, invalid_token};
use crate::core::db::DbPool;
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
    let username = form.username.trim();
    let (user, stored_hash) = {
        let mut conn = platform.pool.get().await?;
        let user = users::find_by_email(&mut conn, username).await?;
        let stored_hash = match &user {
            Some(user) => repository::password_hash(&mut conn, user.id).await?,
            None => None,
        };
        (user, stored_hash)
    }; // The connection goes back to the pool before the slow hash.
    let account = user
        .as_ref()
        .map_or(Account::Unknown(username), |user| Account::Known(user.id));
    let reservation = limiter::reserve(&platform.pool, &auth.config, account, client).await?;
    let verification = auth
        .passwords
        .verify(&form.password, stored_hash.as_deref())
        .await?;
    limiter::settle(&platform.pool, reservation, verification.valid).await?;
    let Some(user) = user.filter(|_| verification.valid) else {
        return Err(invalid_credentials());
    };
    if !user.is_active {
        return Err(AppError::Forbidden {
            code: "account_inactive",
            detail: "This account is deactivated.".to_owned(),
        });
    }
    let mut conn = platform.pool.get().await?;
    if verification.outdated {
        let password_hash = auth.passwords.hash(&form.password).await?;
        let credentials = NewCredentials {
            user_id: user.id,
            password_hash,
        };
        repository::upsert_credentials(&mut conn, &credentials).await?;
    }
    let session_ends = Utc::now() + to_chrono(auth.config.session_lifetime)?;
    issue_pair(&mut conn, auth, &user, Uuid::now_v7(), session_ends).await
}

/// A configured duration as chrono's, for timestamp arithmetic.
fn to_chrono(duration: std::time::Duration) -> Result<chrono::Duration, AppError> {
    chrono::Duration::from_std(duration).map_err(AppError::internal)
}

/// Issues an access token and a refresh token in `family`, a sign-in that
/// ends at `session_ends` however often it rotates. The refresh token records
/// the account's token version: a later bump (logout-all, a password change,
/// deactivation) kills it even if this issue raced the bump.
async fn issue_pair(
    conn: &mut AsyncPgConnection,
    auth: &AuthState,
    user: &User,
    family_id: Uuid,
    session_ends: DateTime<Utc>,
) -> Result<TokenResponse, AppError> {
    let refresh = TokenService::new_refresh_token()?;
    let expires_at = (Utc::now() + to_chrono(auth.tokens.refresh_ttl())?).min(session_ends);
    repository::insert_refresh_token(
        conn,
        &NewRefreshToken {
            id: Uuid::now_v7(),
            family_id,
            user_id: user.id,
            token_hash: refresh.hash,
            expires_at,
            token_version: user.token_version,
            session_expires_at: session_ends,
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

impl Exchange {
    fn invalid(detail: &'static str) -> Self {
        Self::Refused("invalid_refresh_token", detail)
    }

    fn into_result(self) -> Result<TokenResponse, AppError> {
        match self {
            Self::Issued(pair) => Ok(pair),
            Self::Refused(code, detail) => Err(AppError::Unauthorized {
                code,
                detail: detail.to_owned(),
            }),
        }
    }
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
    conn.transaction::<_, AppError, _>(async move |conn| exchange(conn, auth, &hash).await)
        .await?
        .into_result()
}

/// One exchange, under its family's lock: a revocation of the family (reuse,
/// logout) and a rotation in it never interleave.
async fn exchange(
    conn: &mut AsyncPgConnection,
    auth: &AuthState,
    hash: &[u8],
) -> Result<Exchange, AppError> {
    let Some(row) = repository::lock_token_and_family(conn, hash).await? else {
        return Ok(Exchange::invalid("The refresh token is not valid."));
    };
    if row.revoked_at.is_some() {
        return Ok(Exchange::invalid("The refresh token has been revoked."));
    }
    if row.used_at.is_some() {
        repository::revoke_family(conn, row.family_id).await?;
        return Ok(Exchange::Refused(
            "refresh_token_reused",
            "The refresh token was already used; every session from that sign-in is now revoked.",
        ));
    }
    let now = Utc::now();
    if row.expires_at <= now || row.session_expires_at <= now {
        return Ok(Exchange::invalid("The refresh token has expired."));
    }
    // Deactivation, logout-all and a password change bump the version: a token
    // from before any of them is dead, even after a reactivation.
    let user = users::find(conn, row.user_id)
        .await?
        .filter(|user| user.is_active && user.token_version == row.token_version);
    let Some(user) = user else {
        repository::revoke_family(conn, row.family_id).await?;
        return Ok(Exchange::invalid(
            "The sign-in this token belongs to has ended.",
        ));
    };
    repository::mark_used(conn, row.id).await?;
    let pair = issue_pair(conn, auth, &user, row.family_id, row.session_expires_at).await?;
    Ok(Exchange::Issued(pair))
}

/// `POST /auth/logout`: revokes the token's family. Unknown tokens are
/// ignored, so logging out twice is harmless.
pub async fn logout(platform: &Platform, token: &str) -> Result<(), AppError> {
    let hash = TokenService::hash_refresh_token(token);
    let mut conn = platform.pool.get().await?;
    conn.transaction::<_, AppError, _>(async move |conn| {
        if let Some(row) = repository::lock_token_and_family(conn, &hash).await? {
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
    client: &str,
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
    verify_password(platform, auth, user, &request.current_password, client).await?;
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
        let session_ends = Utc::now() + to_chrono(auth.config.session_lifetime)?;
        issue_pair(conn, auth, &user, Uuid::now_v7(), session_ends).await
    })
    .await
}

/// Checks `password` against the user's own, through the same limiter as
/// sign-in (a stolen access token is no password oracle); a wrong one is a
/// 403 (the caller is authenticated, the confirmation failed).
pub async fn verify_password(
    platform: &Platform,
    auth: &AuthState,
    user: &User,
    password: &str,
    client: &str,
) -> Result<(), AppError> {
    let stored = {
        let mut conn = platform.pool.get().await?;
        repository::password_hash(&mut conn, user.id).await?
    };
    let account = Account::Known(user.id);
    let reservation = limiter::reserve(&platform.pool, &auth.config, account, client).await?;
    let verification = auth.passwords.verify(password, stored.as_deref()).await?;
    limiter::settle(&platform.pool, reservation, verification.valid).await?;
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

/// Deletes what no check will read again: failed attempts older than the
/// window and refresh tokens past their expiry. Returns how many rows went.
pub async fn prune(pool: &DbPool, config: &AuthConfig) -> Result<usize, AppError> {
    let before = Utc::now() - to_chrono(config.failed_login_window)?;
    let mut conn = pool.get().await?;
    Ok(repository::prune(&mut conn, before).await?)
}

/// Prunes every `every` until `shutdown`, inside a span that names it; a
/// failed run is logged and retried at the next tick.
pub async fn prune_periodically(
    pool: DbPool,
    config: Arc<AuthConfig>,
    every: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = ticker.tick() => match prune(&pool, &config).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "pruned old sign-in attempts and expired refresh tokens"),
                Err(error) => tracing::warn!(%error, "pruning sign-in records failed; will try again"),
            },
            () = shutdown.cancelled() => return,
        }
    }
}
