//! Queries on the `users` table; nothing else touches it.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::shared::schema::users;
use crate::users::models::{NewUser, Role, User, UserChanges};

diesel::define_sql_function! {
    /// PostgreSQL's `lower`, which the unique email index is built on.
    fn lower(value: Text) -> Text;
}

/// Serialises changes that could remove the last active admin.
const ADMIN_CHANGES_LOCK: i64 = 0x7465_7373_6572_6101;

/// Filters of the admin list.
#[derive(Debug, Default)]
pub struct UserFilter {
    /// Only this role.
    pub role: Option<Role>,
    /// Only this active flag.
    pub active: Option<bool>,
    /// Only emails starting with this (case-insensitive).
    pub email_prefix: Option<String>,
}

/// Inserts an account.
pub async fn insert(conn: &mut AsyncPgConnection, user: &NewUser) -> QueryResult<User> {
    diesel::insert_into(users::table)
        .values(user)
        .returning(User::as_returning())
        .get_result(conn)
        .await
}

/// The account with this id.
pub async fn find(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<User>> {
    users::table
        .find(id)
        .select(User::as_select())
        .first(conn)
        .await
        .optional()
}

/// The account with this email, compared case-insensitively.
pub async fn find_by_email(conn: &mut AsyncPgConnection, email: &str) -> QueryResult<Option<User>> {
    users::table
        .filter(lower(users::email).eq(lower(email)))
        .select(User::as_select())
        .first(conn)
        .await
        .optional()
}

/// Up to `limit` accounts older than `before` (an id), newest first.
pub async fn list(
    conn: &mut AsyncPgConnection,
    filter: &UserFilter,
    before: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<User>> {
    let mut query = users::table.select(User::as_select()).into_boxed();
    if let Some(role) = filter.role {
        query = query.filter(users::role.eq(role.as_str()));
    }
    if let Some(active) = filter.active {
        query = query.filter(users::is_active.eq(active));
    }
    if let Some(prefix) = &filter.email_prefix {
        query = query.filter(lower(users::email).like(lower(format!("{}%", escape_like(prefix)))));
    }
    if let Some(before) = before {
        query = query.filter(users::id.lt(before));
    }
    query.order(users::id.desc()).limit(limit).load(conn).await
}

/// Escapes LIKE's wildcards so a prefix matches literally.
fn escape_like(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Applies `changes` and bumps the revision, only if the account is at
/// `expected_revision` (when given). `None`: no such account at that revision.
pub async fn update(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    expected_revision: Option<i64>,
    changes: &UserChanges,
) -> QueryResult<Option<User>> {
    let mut target = users::table.filter(users::id.eq(id)).into_boxed();
    if let Some(revision) = expected_revision {
        target = target.filter(users::revision.eq(revision));
    }
    // Boxed queries cannot be update targets; select the id through them instead.
    let ids = target.select(users::id);
    diesel::update(users::table.filter(users::id.eq_any(ids)))
        .set((changes, users::revision.eq(users::revision + 1)))
        .returning(User::as_returning())
        .get_result(conn)
        .await
        .optional()
}

/// Deletes the account if it is at `expected_revision` (when given); returns
/// whether a row went.
pub async fn delete(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    expected_revision: Option<i64>,
) -> QueryResult<bool> {
    let deleted = match expected_revision {
        Some(revision) => {
            diesel::delete(users::table.filter(users::id.eq(id).and(users::revision.eq(revision))))
                .execute(conn)
                .await?
        }
        None => diesel::delete(users::table.find(id)).execute(conn).await?,
    };
    Ok(deleted == 1)
}

/// Bumps the token version: every access token issued before stops working.
pub async fn bump_token_version(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<()> {
    diesel::update(users::table.find(id))
        .set(users::token_version.eq(users::token_version + 1))
        .execute(conn)
        .await
        .map(drop)
}

/// Takes the transaction-scoped lock that serialises admin demotions,
/// deactivations and deletions, so two concurrent ones cannot both pass the
/// last-admin check.
pub async fn lock_admin_changes(conn: &mut AsyncPgConnection) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
        .bind::<BigInt, _>(ADMIN_CHANGES_LOCK)
        .execute(conn)
        .await
        .map(drop)
}

/// How many active admins there are besides `excluding`.
pub async fn count_other_active_admins(
    conn: &mut AsyncPgConnection,
    excluding: Uuid,
) -> QueryResult<i64> {
    users::table
        .filter(users::role.eq(Role::Admin.as_str()))
        .filter(users::is_active.eq(true))
        .filter(users::id.ne(excluding))
        .count()
        .get_result(conn)
        .await
}

/// Whether any admin account exists (the first-admin seeder asks).
pub async fn any_admin(conn: &mut AsyncPgConnection) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        users::table.filter(users::role.eq(Role::Admin.as_str())),
    ))
    .get_result(conn)
    .await
}

/// Records that the account's address was proven at `at` (a mailed link was
/// used), bumping the revision; `None` if there is no such account.
pub async fn mark_email_verified(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    at: DateTime<Utc>,
) -> QueryResult<Option<User>> {
    diesel::update(users::table.find(id))
        .set((
            users::email_verified_at.eq(at),
            users::revision.eq(users::revision + 1),
        ))
        .returning(User::as_returning())
        .get_result(conn)
        .await
        .optional()
}

/// Sets (or clears) the address an email change waits to verify, bumping the
/// revision; `None` if there is no such account.
pub async fn set_pending_email(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    pending: Option<&str>,
) -> QueryResult<Option<User>> {
    diesel::update(users::table.find(id))
        .set((
            users::pending_email.eq(pending),
            users::revision.eq(users::revision + 1),
        ))
        .returning(User::as_returning())
        .get_result(conn)
        .await
        .optional()
}

/// Makes the pending address the account's email, verified at `at`; `None`
/// if the account no longer waits for exactly that address.
pub async fn apply_pending_email(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    pending: &str,
    at: DateTime<Utc>,
) -> QueryResult<Option<User>> {
    diesel::update(
        users::table
            .filter(users::id.eq(id))
            .filter(users::pending_email.eq(pending)),
    )
    .set((
        users::email.eq(pending),
        users::pending_email.eq(None::<String>),
        users::email_verified_at.eq(at),
        users::revision.eq(users::revision + 1),
    ))
    .returning(User::as_returning())
    .get_result(conn)
    .await
    .optional()
}

/// Forgets that the address was verified and any pending change (an admin
/// set a new address, which nobody has proven); `None` if there is no such account.
pub async fn reset_verification(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<User>> {
    diesel::update(users::table.find(id))
        .set((
            users::email_verified_at.eq(None::<DateTime<Utc>>),
            users::pending_email.eq(None::<String>),
        ))
        .returning(User::as_returning())
        .get_result(conn)
        .await
        .optional()
}
