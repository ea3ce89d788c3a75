//! Request and response bodies of `/api/v1/auth`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::core::config::REDACTED;

/// The grants `POST /auth/token` supports (any other is a 400 `unsupported_grant_type`).
// Only documented: the form keeps the field a string, so that another grant
// gets OAuth2's own answer (RFC 6749 §5.2) rather than a parse error.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum GrantType {
    /// The resource owner password credentials grant.
    Password,
}

/// The OAuth2 password grant, form-encoded (what Swagger UI's Authorize sends).
// A form has no `null`: an optional field is sent or left out, so none is
// documented as nullable (a fuzzer would otherwise send the text "null").
#[derive(Deserialize, ToSchema)]
pub struct TokenForm {
    /// `password` (the only grant supported); may be omitted.
    #[schema(value_type = GrantType, required = false)]
    pub grant_type: Option<String>,
    /// The account's email (at most 254 characters, no control characters).
    #[schema(max_length = 254, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub username: String,
    /// The account's password (at most 1024 characters).
    #[schema(format = Password, max_length = 1024)]
    pub password: String,
    /// Ignored; accepted because OAuth2 clients send it.
    #[schema(nullable = false)]
    pub scope: Option<String>,
    /// Ignored; accepted because OAuth2 clients send it.
    #[schema(nullable = false)]
    pub client_id: Option<String>,
    /// Ignored; accepted because OAuth2 clients send it.
    #[schema(nullable = false)]
    pub client_secret: Option<String>,
}

impl std::fmt::Debug for TokenForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenForm")
            .field("grant_type", &self.grant_type)
            .field("username", &self.username)
            .field("password", &REDACTED)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// A token pair.
#[derive(Serialize, Deserialize, ToSchema)]
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

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &REDACTED)
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &REDACTED)
            .finish_non_exhaustive()
    }
}

/// A refresh token to exchange or revoke.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from the last token pair.
    pub refresh_token: String,
}

impl std::fmt::Debug for RefreshRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshRequest")
            .field("refresh_token", &REDACTED)
            .finish()
    }
}

/// A password change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    /// The password now (at most 1024 characters).
    #[schema(format = Password, max_length = 1024)]
    pub current_password: String,
    /// The new password, 8 to 128 characters.
    #[schema(format = Password, min_length = 8, max_length = 128)]
    pub new_password: String,
}

impl std::fmt::Debug for ChangePasswordRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangePasswordRequest")
            .field("current_password", &REDACTED)
            .field("new_password", &REDACTED)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_a_credential() {
        let form = TokenForm {
            grant_type: None,
            username: "ada@example.com".to_owned(),
            password: "hunter2-secret".to_owned(),
            scope: None,
            client_id: None,
            client_secret: Some("client-secret".to_owned()),
        };
        let tokens = TokenResponse {
            access_token: "access-secret".to_owned(),
            token_type: "bearer".to_owned(),
            expires_in: 900,
            refresh_token: "refresh-secret".to_owned(),
        };
        let refresh = RefreshRequest {
            refresh_token: "refresh-secret".to_owned(),
        };
        let change = ChangePasswordRequest {
            current_password: "hunter2-secret".to_owned(),
            new_password: "hunter3-secret".to_owned(),
        };
        let printed = format!("{form:?} {tokens:?} {refresh:?} {change:?}");
        assert!(printed.contains("ada@example.com"), "{printed}");
        for secret in [
            "hunter2",
            "hunter3",
            "access-secret",
            "refresh-secret",
            "client-secret",
        ] {
            assert!(!printed.contains(secret), "{secret} printed: {printed}");
        }
    }
}
