//! Request and response bodies of `/api/v1/users`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::core::config::REDACTED;
use crate::users::models::{Role, User};

/// An account as clients see it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserResponse {
    /// The account's id.
    pub id: Uuid,
    /// The email as typed at sign-up.
    pub email: String,
    /// The name shown to people.
    pub full_name: String,
    /// `user` or `admin`.
    pub role: Role,
    /// Inactive accounts cannot sign in.
    pub is_active: bool,
    /// When the account was created (UTC).
    pub created_at: DateTime<Utc>,
    /// When it last changed (UTC).
    pub updated_at: DateTime<Utc>,
}

impl From<User> for UserResponse {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            email: user.email,
            full_name: user.full_name,
            role: user.role,
            is_active: user.is_active,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

/// Sign-up, or an admin creating an account.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// A valid email address, unique case-insensitively.
    #[schema(example = "ada@example.com")]
    pub email: String,
    /// 1 to 100 characters.
    #[schema(example = "Ada Lovelace")]
    pub full_name: String,
    /// 8 to 128 characters.
    #[schema(example = "correct horse battery staple", format = Password)]
    pub password: String,
    /// Only admins may set this; defaults to `user`.
    pub role: Option<Role>,
}

/// Changes to one's own profile.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeRequest {
    /// A new email address (the login): needs `current_password`, and ends
    /// every other sign-in.
    pub email: Option<String>,
    /// A new name.
    pub full_name: Option<String>,
    /// The password now (at most 1024 bytes); required when `email` changes.
    #[schema(format = Password)]
    pub current_password: Option<String>,
}

impl std::fmt::Debug for UpdateMeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateMeRequest")
            .field("email", &self.email)
            .field("full_name", &self.full_name)
            .field(
                "current_password",
                &self.current_password.as_ref().map(|_| REDACTED),
            )
            .finish()
    }
}

/// Changes an admin makes to any account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    /// A new email address.
    pub email: Option<String>,
    /// A new name.
    pub full_name: Option<String>,
    /// A new role.
    pub role: Option<Role>,
    /// Activate or deactivate the account.
    pub is_active: Option<bool>,
}

impl std::fmt::Debug for CreateUserRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateUserRequest")
            .field("email", &self.email)
            .field("full_name", &self.full_name)
            .field("password", &REDACTED)
            .field("role", &self.role)
            .finish()
    }
}

/// Deleting one's own account needs the password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteMeRequest {
    /// The current password.
    #[schema(format = Password)]
    pub password: String,
}

impl std::fmt::Debug for DeleteMeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeleteMeRequest")
            .field("password", &REDACTED)
            .finish()
    }
}

/// Filters and paging of the admin's user list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UserListQuery {
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only accounts with this role.
    pub role: Option<Role>,
    /// Only active (`true`) or inactive (`false`) accounts.
    pub active: Option<bool>,
    /// Only emails starting with this, case-insensitively.
    pub email_prefix: Option<String>,
}
