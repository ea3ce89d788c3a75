//! The request bodies of address verification.

use serde::Deserialize;
use utoipa::ToSchema;

use crate::core::config::REDACTED;

/// Uses a verification link's token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyEmailRequest {
    /// The `token` of the link (43 characters of base64url).
    #[schema(pattern = "^[A-Za-z0-9_-]{43}$", min_length = 43, max_length = 43)]
    pub token: String,
}

impl std::fmt::Debug for VerifyEmailRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyEmailRequest")
            .field("token", &REDACTED)
            .finish()
    }
}
