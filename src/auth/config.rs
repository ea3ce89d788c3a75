//! The auth domain's settings: signing keys, token lifetimes, sign-up policy,
//! brute-force limits, password hashing capacity, API keys, browser-session
//! cookies and the first admin.

use std::time::Duration;

use crate::core::config::{AppEnv, ConfigError, Secret, Vars};

/// The development default of `JWT_SECRET`; production refuses to start with it.
pub const DEVELOPMENT_JWT_SECRET: &str = "development-only-secret-do-not-use-in-production!";

/// How access tokens are signed.
#[derive(Debug, Clone)]
pub enum JwtKeys {
    /// HS256 with a shared secret of at least 32 bytes (`JWT_SECRET`).
    Secret(Secret),
    /// EdDSA (Ed25519) with a PEM key pair read from files at startup.
    Ed25519 {
        /// `JWT_PRIVATE_KEY_FILE`'s contents.
        private_pem: Secret,
        /// `JWT_PUBLIC_KEY_FILE`'s contents.
        public_pem: Vec<u8>,
    },
}

/// Users and authentication settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Signing keys.
    pub jwt_keys: JwtKeys,
    /// `iss` of access tokens.
    pub jwt_issuer: String,
    /// `aud` of access tokens.
    pub jwt_audience: String,
    /// Access token lifetime.
    pub access_token_ttl: Duration,
    /// How long a passed access-token check is remembered
    /// (`ACCESS_CACHE_SECONDS`; 0 checks the database on every request).
    /// Revocations are announced by the database and forget it at once; this
    /// bounds only what a silently broken notification connection could miss.
    pub access_cache_ttl: Duration,
    /// Refresh token lifetime.
    pub refresh_token_ttl: Duration,
    /// Whether anyone may sign up (admins can always create accounts).
    pub allow_signup: bool,
    /// Whether sign-in refuses accounts whose address is not verified.
    pub require_verified_email: bool,
    /// Failed password checks one client may make against one account within
    /// the window; the next is a 429 for that client on that account.
    pub max_failed_logins: u32,
    /// Failed password checks one client may make across all accounts within
    /// the window (credential stuffing from one address).
    pub max_failed_logins_per_client: u32,
    /// Failed password checks against one account within the window, from
    /// anywhere, past which only clients with no failure against it may try:
    /// each new address gets one guess, and the owner signs in from a clean one.
    pub max_failed_logins_per_account: u32,
    /// The window failed logins are counted in.
    pub failed_login_window: Duration,
    /// Password hashes computed at once (defaults to the number of cores).
    pub password_hash_concurrency: usize,
    /// Requests allowed to wait for a hashing slot; more get 503.
    pub password_hash_queue: usize,
    /// How many proxies you run in front of the service (`TRUSTED_PROXY_HOPS`):
    /// the client is the address that many entries from the right of
    /// `X-Forwarded-For`; 0 (default) ignores the header.
    pub trusted_proxy_hops: usize,
    /// Longest a sign-in lasts, however often its refresh token rotates.
    pub session_lifetime: Duration,
    /// Most live (unexpired) API keys one account may hold.
    pub max_api_keys_per_user: u32,
    /// Whether a browser session's cookie may go without `Secure` when the
    /// request is for `localhost` (development only: browsers on plain
    /// `http://localhost` would drop a `Secure` cookie).
    pub insecure_localhost_cookies: bool,
    /// The first admin's email, for `tessera seed`.
    pub first_admin_email: Option<String>,
    /// The first admin's password; unset in development means "generate one".
    pub first_admin_password: Option<Secret>,
}

impl AuthConfig {
    /// Reads the auth variables; `env` decides whether the development secret is acceptable.
    pub fn from_vars(vars: &Vars<'_>, env: AppEnv) -> Result<Self, ConfigError> {
        Ok(Self {
            jwt_keys: jwt_keys(vars, env)?,
            jwt_issuer: vars
                .optional("JWT_ISSUER")
                .unwrap_or_else(|| "tessera".to_owned()),
            jwt_audience: vars
                .optional("JWT_AUDIENCE")
                .unwrap_or_else(|| "tessera-api".to_owned()),
            access_token_ttl: Duration::from_secs(vars.positive("ACCESS_TOKEN_TTL_SECONDS", 900)?),
            access_cache_ttl: Duration::from_secs(vars.parse("ACCESS_CACHE_SECONDS", 5)?),
            refresh_token_ttl: Duration::from_secs(
                86_400 * vars.positive("REFRESH_TOKEN_TTL_DAYS", 30)?,
            ),
            allow_signup: vars.parse("ALLOW_SIGNUP", true)?,
            require_verified_email: vars.parse("REQUIRE_VERIFIED_EMAIL", false)?,
            max_failed_logins: vars.positive("MAX_FAILED_LOGINS", 5)?,
            max_failed_logins_per_client: vars.positive("MAX_FAILED_LOGINS_PER_CLIENT", 20)?,
            max_failed_logins_per_account: vars.positive("MAX_FAILED_LOGINS_PER_ACCOUNT", 50)?,
            failed_login_window: Duration::from_secs(
                vars.positive("FAILED_LOGIN_WINDOW_SECONDS", 900)?,
            ),
            password_hash_concurrency: vars.positive(
                "PASSWORD_HASH_CONCURRENCY",
                std::thread::available_parallelism().map_or(2, usize::from),
            )?,
            password_hash_queue: vars.parse("PASSWORD_HASH_QUEUE", 64)?,
            trusted_proxy_hops: vars.parse("TRUSTED_PROXY_HOPS", 0)?,
            session_lifetime: Duration::from_secs(
                vars.positive("SESSION_LIFETIME_SECONDS", 90 * 86_400)?,
            ),
            max_api_keys_per_user: vars.positive("API_KEYS_PER_USER", 20)?,
            insecure_localhost_cookies: env == AppEnv::Development,
            first_admin_email: vars.optional("FIRST_ADMIN_EMAIL"),
            first_admin_password: vars.optional("FIRST_ADMIN_PASSWORD").map(Secret::new),
        })
    }
}

/// The signing keys: `JWT_ALGORITHM=HS256` (default) takes `JWT_SECRET`;
/// `EdDSA` reads `JWT_PRIVATE_KEY_FILE` and `JWT_PUBLIC_KEY_FILE`.
fn jwt_keys(vars: &Vars<'_>, env: AppEnv) -> Result<JwtKeys, ConfigError> {
    match vars.optional("JWT_ALGORITHM").as_deref().unwrap_or("HS256") {
        "HS256" => shared_secret(vars, env).map(JwtKeys::Secret),
        "EdDSA" => ed25519_keys(vars),
        other => Err(ConfigError {
            variable: "JWT_ALGORITHM",
            problem: format!("must be HS256 or EdDSA (got {other:?})"),
        }),
    }
}

fn shared_secret(vars: &Vars<'_>, env: AppEnv) -> Result<Secret, ConfigError> {
    let secret = vars
        .optional("JWT_SECRET")
        .unwrap_or_else(|| DEVELOPMENT_JWT_SECRET.to_owned());
    if secret.len() < 32 {
        return Err(ConfigError {
            variable: "JWT_SECRET",
            problem: "must be at least 32 bytes long".to_owned(),
        });
    }
    if env != AppEnv::Development && secret == DEVELOPMENT_JWT_SECRET {
        return Err(ConfigError {
            variable: "JWT_SECRET",
            problem: "must be set to a secret of your own outside development".to_owned(),
        });
    }
    Ok(Secret::new(secret))
}

fn ed25519_keys(vars: &Vars<'_>) -> Result<JwtKeys, ConfigError> {
    let read = |variable: &'static str| {
        let path = vars.optional(variable).ok_or(ConfigError {
            variable,
            problem: "is required when JWT_ALGORITHM is EdDSA".to_owned(),
        })?;
        std::fs::read(&path).map_err(|error| ConfigError {
            variable,
            problem: format!("cannot read {path}: {error}"),
        })
    };
    let private_pem =
        String::from_utf8(read("JWT_PRIVATE_KEY_FILE")?).map_err(|_| ConfigError {
            variable: "JWT_PRIVATE_KEY_FILE",
            problem: "is not a PEM text file".to_owned(),
        })?;
    Ok(JwtKeys::Ed25519 {
        private_pem: Secret::new(private_pem),
        public_pem: read("JWT_PUBLIC_KEY_FILE")?,
    })
}
