//! Access tokens (JWT) and refresh tokens (random, stored hashed).
//!
//! Access tokens are signed with one pinned algorithm (HS256 with a secret, or
//! EdDSA with a key pair) and checked for signature, `exp`, `nbf`, `iat`, `iss`
//! and `aud`; a token naming another algorithm, or `none`, is refused.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::config::{AuthConfig, JwtKeys};
use crate::shared::error::AppError;
use crate::users::models::{Role, User};

/// Clock skew tolerated between replicas when checking `exp`, `nbf` and `iat`.
const LEEWAY_SECONDS: u64 = 5;

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user's id.
    pub sub: Uuid,
    /// The user's role when the token was issued (the database is the authority).
    pub role: Role,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Not valid before.
    pub nbf: i64,
    /// Expires at.
    pub exp: i64,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Unique id of this token.
    pub jti: Uuid,
    /// The user's token version when issued; a bump revokes the token.
    pub ver: i64,
    /// The sign-in (refresh-token family) it belongs to: logging that sign-in
    /// out ends this token at once. Absent only on tokens issued before sessions
    /// were tracked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Uuid>,
}

/// Signs and checks tokens.
pub struct TokenService {
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    access_ttl: Duration,
    refresh_ttl: Duration,
}

/// A freshly minted refresh token: the value for the client, the hash to store.
pub struct RefreshToken {
    /// Given to the client once; never stored.
    pub value: String,
    /// SHA-256 of the value; what the database keeps.
    pub hash: Vec<u8>,
}

/// A signing key that could not be loaded (startup only).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// `JWT_PRIVATE_KEY_FILE` is not an Ed25519 private key in PEM.
    #[error("JWT private key: {0}")]
    Private(jsonwebtoken::errors::Error),
    /// `JWT_PUBLIC_KEY_FILE` is not an Ed25519 public key in PEM.
    #[error("JWT public key: {0}")]
    Public(jsonwebtoken::errors::Error),
}

impl TokenService {
    /// Builds the service from configuration (key files are read here, at startup).
    pub fn new(config: &AuthConfig) -> Result<Self, KeyError> {
        let (algorithm, encoding, decoding) = match &config.jwt_keys {
            JwtKeys::Secret(secret) => (
                Algorithm::HS256,
                EncodingKey::from_secret(secret.expose().as_bytes()),
                DecodingKey::from_secret(secret.expose().as_bytes()),
            ),
            JwtKeys::Ed25519 {
                private_pem,
                public_pem,
            } => (
                Algorithm::EdDSA,
                EncodingKey::from_ed_pem(private_pem.expose().as_bytes())
                    .map_err(KeyError::Private)?,
                DecodingKey::from_ed_pem(public_pem).map_err(KeyError::Public)?,
            ),
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_issuer(&[config.jwt_issuer.as_str()]);
        validation.set_audience(&[config.jwt_audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        Ok(Self {
            algorithm,
            encoding,
            decoding,
            validation,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            access_ttl: config.access_token_ttl,
            refresh_ttl: config.refresh_token_ttl,
        })
    }

    /// How long access tokens live.
    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    /// How long refresh tokens live.
    pub fn refresh_ttl(&self) -> Duration {
        self.refresh_ttl
    }

    /// Signs an access token for `user` in sign-in `session`.
    pub fn issue_access(&self, user: &User, session: Uuid) -> Result<String, AppError> {
        let now = Utc::now().timestamp();
        let claims = AccessClaims {
            sub: user.id,
            role: user.role,
            iat: now,
            nbf: now,
            exp: now + i64::try_from(self.access_ttl.as_secs()).unwrap_or(i64::MAX / 2),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: Uuid::now_v7(),
            ver: user.token_version,
            sid: Some(session),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.encoding)
            .map_err(AppError::internal)
    }

    /// Checks an access token and returns its claims; any flaw is a 401.
    pub fn decode_access(&self, token: &str) -> Result<AccessClaims, AppError> {
        let data = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map_err(|error| {
                use jsonwebtoken::errors::ErrorKind;
                let detail = match error.kind() {
                    ErrorKind::ExpiredSignature => "The access token has expired.",
                    ErrorKind::ImmatureSignature => "The access token is not valid yet.",
                    _ => "The access token is invalid.",
                };
                invalid_token(detail)
            })?;
        // `iat` in the future beyond the leeway means a forged or broken clock.
        let leeway = i64::try_from(LEEWAY_SECONDS).unwrap_or(0);
        if data.claims.iat > Utc::now().timestamp() + leeway {
            return Err(invalid_token("The access token was issued in the future."));
        }
        Ok(data.claims)
    }

    /// A new random refresh token (256 bits) and its hash.
    pub fn new_refresh_token() -> Result<RefreshToken, AppError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(AppError::internal)?;
        let value = URL_SAFE_NO_PAD.encode(bytes);
        let hash = Self::hash_refresh_token(&value);
        Ok(RefreshToken { value, hash })
    }

    /// The stored form of a refresh token.
    pub fn hash_refresh_token(value: &str) -> Vec<u8> {
        Sha256::digest(value.as_bytes()).to_vec()
    }
}

/// The 401 for a bad access token.
pub fn invalid_token(detail: &str) -> AppError {
    AppError::Unauthorized {
        code: "invalid_token",
        detail: detail.to_owned(),
    }
}
