//! Request and response bodies of `/api/v1/auth`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The OAuth2 password grant, form-encoded (what Swagger UI's Authorize sends).
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenForm {
    /// `password` (the only grant supported); may be omitted.
    pub grant_type: Option<String>,
    /// The account's email.
    pub username: String,
    /// The account's password.
    #[schema(format = Password)]
    pub password: String,
    /// Ignored; accepted because OAuth2 clients send it.
    pub scope: Option<String>,
    /// Ignored; accepted because OAuth2 clients send it.
    pub client_id: Option<String>,
    /// Ignored; accepted because OAuth2 clients send it.
    pub client_secret: Option<String>,
}

/// A token pair.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// A JWT for `Authorization: Bearer …`.
    pub access_token: String,
    /// Always `bearer`.
    #[schema(example = "bearer")]
    pub token_type: String,
    /// Seconds until the access token expires.
    #[schema(example = 900)]
    pub expires_in: u64,
    /// Exchange at `POST /auth/refresh` for a new pair; single use.
    pub refresh_token: String,
}

/// A refresh token to exchange or revoke.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from the last token pair.
    pub refresh_token: String,
}

/// A password change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    /// The password now.
    #[schema(format = Password)]
    pub current_password: String,
    /// The new password, 8 to 128 characters.
    #[schema(format = Password)]
    pub new_password: String,
}
