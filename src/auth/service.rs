//! Authentication rules: logging in, rotating refresh tokens, logging out,
//! changing passwords, and who the caller is.

use std::sync::Arc;

use chrono::Utc;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use uuid::Uuid;

use crate::auth::access_cache::{AccessCache, ChangeFeed};
use crate::auth::api_keys::{self, KeyGrant};
use crate::auth::config::AuthConfig;
use crate::auth::limiter::{self, Account};
use crate::auth::models::NewCredentials;
use crate::auth::password::{
    HashError, Passwords, bounded_password, bounded_username, validate_password,
};
use crate::auth::repository;
use crate::auth::schemas::{ChangePasswordRequest, TokenForm, TokenResponse};
use crate::auth::sessions;
use crate::auth::tokens::{AccessClaims, KeyError, TokenService, invalid_token};
use crate::core::platform::Platform;
use crate::shared::error::{AppError, FieldError};
use crate::shared::validation::{Validator, invalid_fields};
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
    /// Access-token checks that passed lately (off until a change feed is attached).
    pub access_cache: Arc<AccessCache>,
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
            access_cache: Arc::new(AccessCache::new(config.access_cache_ttl, None)),
        })
    }

    /// Remembers passed access-token checks for `ACCESS_CACHE_SECONDS`, forgetting
    /// them as `feed`'s notifications say (see [`AccessCache`]). A process
    /// without the notification listener (`tessera seed`) never does.
    pub fn with_change_feed(mut self, feed: Arc<dyn ChangeFeed>) -> Self {
        self.access_cache = Arc::new(AccessCache::new(self.config.access_cache_ttl, Some(feed)));
        self
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
    if auth.config.require_verified_email && user.email_verified_at.is_none() {
        return Err(AppError::Forbidden {
            code: "email_not_verified",
            detail: "Confirm your email address first: use the link mailed to it (a password \
                     reset mails a new one)."
                .to_owned(),
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
    let session_ends = Utc::now() + sessions::to_chrono(auth.config.session_lifetime)?;
    sessions::issue_pair(&mut conn, auth, &user, Uuid::now_v7(), session_ends).await
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
        FieldError::body("new_password"),
        validate_password(&request.new_password),
    );
    validator.into_result()?;
    let presented = Presented::at("current_password", &request.current_password);
    verify_password(platform, auth, user, presented, client).await?;
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
        sessions::revoke_sessions(conn, user_id).await?;
        let user = users::find(conn, user_id)
            .await?
            .ok_or_else(|| AppError::NotFound("The account no longer exists.".to_owned()))?;
        let session_ends = Utc::now() + sessions::to_chrono(auth.config.session_lifetime)?;
        sessions::issue_pair(conn, auth, &user, Uuid::now_v7(), session_ends).await
    })
    .await
}

/// A password a signed-in caller sent to confirm a change, and the body
/// field it came in (where a 422 points).
pub struct Presented<'a> {
    field: &'static str,
    password: &'a str,
}

impl<'a> Presented<'a> {
    /// `password`, as sent in body field `field`.
    pub fn at(field: &'static str, password: &'a str) -> Self {
        Self { field, password }
    }
}

/// Checks `password` against the user's own, through the same limiter as
/// sign-in (a stolen access token is no password oracle); a wrong one is a
/// 403 (the caller is authenticated, the confirmation failed).
pub async fn verify_password(
    platform: &Platform,
    auth: &AuthState,
    user: &User,
    presented: Presented<'_>,
    client: &str,
) -> Result<(), AppError> {
    bounded_password(presented.password)
        .map_err(|invalid| invalid_fields([(FieldError::body(presented.field), Some(invalid))]))?;
    let password = presented.password;
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

/// Who a bearer credential speaks for, if it is still good: an API key
/// (`tsk_…`, see [`api_keys::authenticate`]) or an access token that is
/// valid, whose user exists, is active and has not revoked it since (the
/// token version), and whose sign-in has not ended. Checked on every
/// request, so revocation takes effect at once.
pub async fn authenticate(
    platform: &Platform,
    auth: &AuthState,
    credential: &str,
) -> Result<Authenticated, AppError> {
    if api_keys::secret::is_api_key(credential) {
        let mut conn = platform.pool.get().await?;
        let (user, grant) = api_keys::authenticate(&mut conn, credential).await?;
        return Ok(Authenticated {
            user,
            credential: Credential::ApiKey(grant),
        });
    }
    let claims = auth.tokens.decode_access(credential)?;
    let cache = &auth.access_cache;
    let user = match cache.get(claims.sub, claims.sid, claims.ver) {
        Some(user) => user,
        None => {
            let ticket = cache.ticket();
            let user = check_access(platform, &claims).await?;
            if let Some(ticket) = ticket {
                cache.remember(ticket, claims.sid, &user);
            }
            user
        }
    };
    Ok(Authenticated {
        user,
        credential: Credential::Session(claims.sid),
    })
}

/// The account an access token speaks for, read from the database: refused
/// when the account is gone or inactive, the token's version is old, or its
/// sign-in has ended.
async fn check_access(platform: &Platform, claims: &AccessClaims) -> Result<User, AppError> {
    let mut conn = platform.pool.get().await?;
    let user = match users::find(&mut conn, claims.sub).await? {
        Some(user) if user.is_active && user.token_version == claims.ver => user,
        _ => return Err(invalid_token("The access token has been revoked.")),
    };
    if let Some(session) = claims.sid
        && repository::session_ended(&mut conn, session).await?
    {
        return Err(invalid_token(
            "The sign-in this token belongs to has ended.",
        ));
    }
    Ok(user)
}

/// Who a valid credential speaks for, and which credential it was.
pub struct Authenticated {
    /// The account, as it is now.
    pub user: User,
    /// How they authenticated.
    pub credential: Credential,
}

/// The kind of credential a request authenticated with.
pub enum Credential {
    /// An access token of a sign-in (refresh-token family); `None` for a
    /// token issued before sessions were tracked.
    Session(Option<Uuid>),
    /// An API key, and what it may reach.
    ApiKey(KeyGrant),
}
