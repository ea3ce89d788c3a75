//! Profile rules: validation, uniqueness, the last-admin rule and optimistic
//! concurrency (`If-Match`). Nothing here knows of passwords or tokens: the
//! flows that need one live in `auth::accounts`, which calls this service.

use chrono::{DateTime, Utc};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use uuid::Uuid;

use crate::core::http::conditional;
use crate::core::platform::Platform;
use crate::shared::error::{AppError, FieldError};
use crate::shared::pagination::{Cursor, DEFAULT_LIMIT, Page, checked_limit, fetch_limit};
use crate::shared::validation::{Invalid, Validator, invalid_fields};
use crate::users::models::{Email, FullName, MAX_EMAIL_CHARS, NewUser, Role, User, UserChanges};
use crate::users::repository::{self, UserFilter};
use crate::users::schemas::{UserListQuery, UserResponse};

/// The account with this id, if any.
pub async fn find(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Option<User>, AppError> {
    Ok(repository::find(conn, id).await?)
}

/// The account with this email (case-insensitive), if any.
pub async fn find_by_email(
    conn: &mut AsyncPgConnection,
    email: &str,
) -> Result<Option<User>, AppError> {
    Ok(repository::find_by_email(conn, email).await?)
}

/// The account with this id, or 404.
pub async fn get(platform: &Platform, id: Uuid) -> Result<User, AppError> {
    let mut conn = platform.pool.get().await?;
    find(&mut conn, id).await?.ok_or_else(user_not_found)
}

fn user_not_found() -> AppError {
    AppError::NotFound("No user has this id.".to_owned())
}

/// Makes every access token of the account stop working at once.
pub async fn invalidate_access_tokens(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<(), AppError> {
    Ok(repository::bump_token_version(conn, id).await?)
}

/// A validated profile to create: the newtypes guarantee it is well-formed.
pub struct NewProfile {
    /// The login and contact address.
    pub email: Email,
    /// The name shown to people.
    pub full_name: FullName,
    /// What the account may do.
    pub role: Role,
}

/// Inserts a new profile inside the caller's transaction (auth writes the
/// credentials in the same one). A taken email is a 409.
pub async fn insert(conn: &mut AsyncPgConnection, profile: NewProfile) -> Result<User, AppError> {
    let new_user = NewUser {
        id: Uuid::now_v7(),
        email: profile.email.into_inner(),
        full_name: profile.full_name.into_inner(),
        role: profile.role,
    };
    repository::insert(conn, &new_user)
        .await
        .map_err(email_conflict)
}

/// A unique-violation on the email index is the client's conflict, not our error.
fn email_conflict(error: DieselError) -> AppError {
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => email_taken(),
        other => other.into(),
    }
}

/// 409: another account has the address.
pub fn email_taken() -> AppError {
    AppError::Conflict {
        code: "email_taken",
        detail: "An account with this email already exists.".to_owned(),
    }
}

/// One page of accounts, newest first, filtered.
pub async fn list(
    platform: &Platform,
    query: UserListQuery,
) -> Result<Page<UserResponse>, AppError> {
    let mut validator = Validator::new();
    let limit = validator.check(FieldError::query("limit"), checked_limit(query.limit));
    let before = validator.check_optional(FieldError::query("cursor"), query.cursor, |cursor| {
        Cursor::parse(&cursor).map(Cursor::key)
    });
    let email_prefix = validator.check_optional(
        FieldError::query("email_prefix"),
        query.email_prefix,
        |prefix| {
            if prefix.chars().count() > MAX_EMAIL_CHARS {
                Err(Invalid::new(format!(
                    "must be at most {MAX_EMAIL_CHARS} characters"
                )))
            } else if prefix.chars().any(char::is_control) {
                // No email holds one, and PostgreSQL cannot even bind NUL.
                Err(Invalid::new("must not contain control characters"))
            } else {
                Ok(prefix)
            }
        },
    );
    validator.into_result()?;
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    let filter = UserFilter {
        role: query.role,
        active: query.active,
        email_prefix,
    };
    let mut conn = platform.pool.get().await?;
    let rows = repository::list(&mut conn, &filter, before, fetch_limit(limit)).await?;
    Ok(Page::from_rows(
        rows,
        limit,
        |user| user.id.to_string(),
        UserResponse::from,
    ))
}

/// The validated changes of an update request.
pub struct RequestedChanges {
    /// New email.
    pub email: Option<String>,
    /// New name.
    pub full_name: Option<String>,
    /// New role (admins only).
    pub role: Option<Role>,
    /// New active flag (admins only).
    pub is_active: Option<bool>,
}

/// Applies `changes` to account `id` at `expected_revision` (from `If-Match`).
/// Demoting, deactivating or deleting the last active admin is refused (409);
/// the check and the write happen under one lock, so concurrent changes
/// cannot both slip through.
pub async fn update(
    platform: &Platform,
    id: Uuid,
    expected_revision: Option<i64>,
    changes: RequestedChanges,
) -> Result<User, AppError> {
    let mut validator = Validator::new();
    let email = validator.check_optional(FieldError::body("email"), changes.email, |email| {
        Email::parse(&email).map(Email::into_inner)
    });
    let full_name =
        validator.check_optional(FieldError::body("full_name"), changes.full_name, |name| {
            FullName::parse(&name).map(FullName::into_inner)
        });
    validator.into_result()?;
    let changes = UserChanges {
        email,
        full_name,
        role: changes.role,
        is_active: changes.is_active,
    };
    let mut conn = platform.pool.get().await?;
    conn.transaction::<_, AppError, _>(async move |conn| {
        let current = current_at(conn, id, expected_revision).await?;
        if current.role == Role::Admin && changes.removes_admin_power() {
            ensure_not_last_admin(conn, id).await?;
        }
        if changes.email.is_none()
            && changes.full_name.is_none()
            && changes.role.is_none()
            && changes.is_active.is_none()
        {
            return Ok(current);
        }
        let mut updated = repository::update(conn, id, Some(current.revision), &changes)
            .await
            .map_err(email_conflict)?
            .ok_or_else(conditional::stale)?;
        // A new address (not merely a new spelling) is one nobody has proven.
        if changes
            .email
            .as_deref()
            .is_some_and(|email| !email.eq_ignore_ascii_case(&current.email))
        {
            updated = repository::reset_verification(conn, id)
                .await?
                .ok_or_else(user_not_found)?;
        }
        if changes.is_active == Some(false) {
            invalidate_access_tokens(conn, id).await?;
        }
        Ok(updated)
    })
    .await
}

/// The account as it is now: 404 if missing, 412 if not at `expected_revision`.
async fn current_at(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    expected_revision: Option<i64>,
) -> Result<User, AppError> {
    let current = repository::find(conn, id)
        .await?
        .ok_or_else(user_not_found)?;
    if expected_revision.is_some_and(|revision| revision != current.revision) {
        return Err(conditional::stale());
    }
    Ok(current)
}

/// Deletes account `id` at `expected_revision`; the last active admin stays.
pub async fn delete(
    platform: &Platform,
    id: Uuid,
    expected_revision: Option<i64>,
) -> Result<(), AppError> {
    let mut conn = platform.pool.get().await?;
    conn.transaction::<_, AppError, _>(async move |conn| {
        let current = current_at(conn, id, expected_revision).await?;
        if current.role == Role::Admin && current.is_active {
            ensure_not_last_admin(conn, id).await?;
        }
        if repository::delete(conn, id, Some(current.revision)).await? {
            Ok(())
        } else {
            Err(conditional::stale())
        }
    })
    .await
}

/// 409 unless another active admin remains besides `id`. Takes the admin-change
/// lock first, so the answer holds until the transaction ends.
async fn ensure_not_last_admin(conn: &mut AsyncPgConnection, id: Uuid) -> Result<(), AppError> {
    repository::lock_admin_changes(conn).await?;
    if repository::count_other_active_admins(conn, id).await? == 0 {
        return Err(AppError::Conflict {
            code: "last_admin",
            detail: "This is the last active admin; promote another account first.".to_owned(),
        });
    }
    Ok(())
}

/// Records that the account's address was proven at `at` (a mailed link was used).
pub async fn mark_email_verified(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    at: DateTime<Utc>,
) -> Result<User, AppError> {
    repository::mark_email_verified(conn, id, at)
        .await?
        .ok_or_else(user_not_found)
}

/// Sets the address an email change waits to verify: 422 if it is not an
/// address, 409 if an account has it already (checked again when it applies).
pub async fn set_pending_email(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    pending: &str,
) -> Result<User, AppError> {
    let pending = Email::parse(pending)
        .map_err(|invalid| invalid_fields([(FieldError::body("email"), Some(invalid))]))?
        .into_inner();
    if repository::find_by_email(conn, &pending).await?.is_some() {
        return Err(email_taken());
    }
    repository::set_pending_email(conn, id, Some(&pending))
        .await?
        .ok_or_else(user_not_found)
}

/// Forgets the address an email change waits to verify (its links then stop working).
pub async fn cancel_pending_email(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<User, AppError> {
    repository::set_pending_email(conn, id, None)
        .await?
        .ok_or_else(user_not_found)
}

/// Makes the pending address `pending` the account's email, verified at `at`:
/// `None` if the account no longer waits for it; 409 if another account took
/// the address meanwhile.
pub async fn apply_pending_email(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    pending: &str,
    at: DateTime<Utc>,
) -> Result<Option<User>, AppError> {
    repository::apply_pending_email(conn, id, pending, at)
        .await
        .map_err(email_conflict)
}

/// Whether any admin exists (for the first-admin seeder).
pub async fn any_admin(conn: &mut AsyncPgConnection) -> Result<bool, AppError> {
    Ok(repository::any_admin(conn).await?)
}
