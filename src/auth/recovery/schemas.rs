//! The request bodies of password recovery.

use serde::Deserialize;
use utoipa::ToSchema;

use crate::core::config::REDACTED;
use crate::users::models::Email;

/// Asks for a reset link.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetRequest {
    /// The account's address; the answer is the same whether or not one has it.
    #[schema(value_type = Email)]
    pub email: String,
}

/// Sets a new password with a reset link's token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetConfirmRequest {
    /// The `token` of the link (43 characters of base64url).
    #[schema(pattern = "^[A-Za-z0-9_-]{43}$", min_length = 43, max_length = 43)]
    pub token: String,
    /// The new password, 8 to 128 characters.
    #[schema(format = Password, min_length = 8, max_length = 128)]
    pub new_password: String,
}

impl std::fmt::Debug for PasswordResetConfirmRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordResetConfirmRequest")
            .field("token", &REDACTED)
            .field("new_password", &REDACTED)
            .finish()
    }
}
