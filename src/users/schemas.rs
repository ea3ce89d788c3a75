//! Request and response bodies of `/api/v1/users`.

use chrono::{DateTime, Utc};
use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type,
};
use utoipa::openapi::{Ref, RefOr, Schema};
use utoipa::{IntoParams, PartialSchema, ToSchema};
use uuid::Uuid;

use crate::core::config::REDACTED;
use crate::shared::pagination::Cursor;
use crate::users::models::{Email, FullName, Role, User};

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
    /// When the address was verified (a mailed link used); `null`: not yet.
    pub email_verified_at: Option<DateTime<Utc>>,
    /// The address an email change waits to verify; it becomes `email` when
    /// the link mailed there is used.
    #[schema(value_type = Option<Email>)]
    pub pending_email: Option<String>,
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
            email_verified_at: user.email_verified_at,
            pending_email: user.pending_email,
        }
    }
}

/// Sign-up, or an admin creating an account.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// A valid email address, unique case-insensitively.
    #[schema(value_type = Email)]
    pub email: String,
    /// The name shown to people.
    #[schema(value_type = FullName)]
    pub full_name: String,
    /// 8 to 128 characters.
    #[schema(example = "correct horse battery staple", format = Password, min_length = 8, max_length = 128)]
    pub password: String,
    /// Only admins may set this; defaults to `user`.
    pub role: Option<Role>,
}

/// The fields of a change to one's own profile.
// Documented as `UpdateMeFields`: the request body's schema is `UpdateMeBody`,
// which adds the rule that an `email` needs `current_password`.
#[derive(Deserialize, ToSchema)]
#[schema(as = UpdateMeFields)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeRequest {
    /// A new email address (the login): needs `current_password`, and ends
    /// every other sign-in.
    #[schema(value_type = Option<Email>)]
    pub email: Option<String>,
    /// A new name.
    #[schema(value_type = Option<FullName>)]
    pub full_name: Option<String>,
    /// The password now (at most 1024 characters); required with `email`.
    #[schema(format = Password, max_length = 1024)]
    pub current_password: Option<String>,
}

/// `PATCH /users/me`'s body as documented: [`UpdateMeRequest`]'s fields, and
/// the rule a field's schema cannot state alone: an `email` comes with a
/// `current_password` (else 422). A generated client then refuses to send
/// `{"email": …}` without it, as the server would.
pub struct UpdateMeBody;

impl PartialSchema for UpdateMeBody {
    fn schema() -> RefOr<Schema> {
        let no_email =
            ObjectBuilder::new().property("email", ObjectBuilder::new().schema_type(Type::Null));
        let with_password = ObjectBuilder::new()
            .property(
                "current_password",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Password))),
            )
            .required("current_password");
        AllOfBuilder::new()
            .item(Ref::from_schema_name(UpdateMeRequest::name()))
            .item(AnyOfBuilder::new().item(no_email).item(with_password))
            .description(Some(
                "Changes to one's own profile; a new `email` needs `current_password`.",
            ))
            .into()
    }
}

impl ToSchema for UpdateMeBody {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("UpdateMeRequest")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((
            UpdateMeRequest::name().into_owned(),
            UpdateMeRequest::schema(),
        ));
        <UpdateMeRequest as ToSchema>::schemas(schemas);
    }
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
    #[schema(value_type = Option<Email>)]
    pub email: Option<String>,
    /// A new name.
    #[schema(value_type = Option<FullName>)]
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
    /// The current password (at most 1024 characters).
    #[schema(format = Password, max_length = 1024)]
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
    #[param(inline, value_type = Option<Cursor>)]
    pub cursor: Option<String>,
    /// Only accounts with this role.
    pub role: Option<Role>,
    /// Only active (`true`) or inactive (`false`) accounts.
    pub active: Option<bool>,
    /// Only emails starting with this, case-insensitively (at most 254
    /// characters, no control characters).
    #[param(max_length = 254, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub email_prefix: Option<String>,
}
