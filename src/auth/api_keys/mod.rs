//! API keys: long-lived, scoped credentials for programs (a pipeline calling
//! the embeddings API, a cron job submitting executions, the `openai` client).
//!
//! A key is sent like an access token (`Authorization: Bearer tsk_…`) and
//! acts as its owner, within its scopes: rate limits, quotas and metering are
//! the owner's. It never reaches account or credential management. It dies
//! when revoked, when it expires, and when its owner is deactivated or deleted
//! (a trigger deletes the keys of a deactivated account, so a reactivation
//! does not bring them back). Ending sessions (sign-out everywhere, a password
//! change) leaves keys alone: they are separate credentials, listed and
//! revoked here.

pub mod models;
pub mod repository;
pub mod router;
pub mod schemas;
pub mod secret;

use chrono::Utc;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use uuid::Uuid;

use crate::auth::service::{AuthState, Presented, verify_password};
use crate::auth::tokens::invalid_token;
use crate::core::platform::Platform;
use crate::shared::error::{AppError, FieldError};
use crate::shared::pagination::{Cursor, DEFAULT_LIMIT, Page, checked_limit, fetch_limit};
use crate::shared::validation::{Invalid, Validator, invalid_fields, parse_label};
use crate::users::models::{Role, User};
use crate::users::service as users;
use models::{NewApiKey, Scope};
use schemas::{
    ApiKeyListQuery, ApiKeyResponse, CreateApiKeyRequest, CreatedApiKey, MAX_EXPIRES_IN_DAYS,
    MAX_KEY_NAME_CHARS,
};

/// A valid API key's grant: which key, and what it may reach.
#[derive(Debug, Clone)]
pub struct KeyGrant {
    /// The key's id (logged with its requests; not secret).
    pub key_id: Uuid,
    /// The key's scopes.
    pub scopes: Vec<Scope>,
}

/// The request's checked fields.
struct KeySpec {
    name: String,
    scopes: Vec<Scope>,
    expires_in_days: Option<u32>,
}

fn check_request(request: &CreateApiKeyRequest) -> Result<KeySpec, AppError> {
    let name = parse_label(&request.name, MAX_KEY_NAME_CHARS);
    let scopes = distinct(&request.scopes);
    let expires_in_days = request.expires_in_days.map(lifetime_days).transpose();
    match (name, scopes, expires_in_days) {
        (Ok(name), Ok(scopes), Ok(expires_in_days)) => Ok(KeySpec {
            name,
            scopes,
            expires_in_days,
        }),
        (name, scopes, expires_in_days) => Err(invalid_fields([
            (FieldError::body("name"), name.err()),
            (FieldError::body("scopes"), scopes.err()),
            (FieldError::body("expires_in_days"), expires_in_days.err()),
        ])),
    }
}

fn lifetime_days(days: u32) -> Result<u32, Invalid> {
    if (1..=MAX_EXPIRES_IN_DAYS).contains(&days) {
        Ok(days)
    } else {
        Err(Invalid::new(format!(
            "must be between 1 and {MAX_EXPIRES_IN_DAYS}"
        )))
    }
}

/// At least one scope, none twice.
fn distinct(scopes: &[Scope]) -> Result<Vec<Scope>, Invalid> {
    if scopes.is_empty() {
        return Err(Invalid::new("must name at least one scope"));
    }
    let mut seen = Vec::with_capacity(scopes.len());
    for scope in scopes {
        if seen.contains(scope) {
            return Err(Invalid::new(format!(
                "names {} more than once",
                scope.as_str()
            )));
        }
        seen.push(*scope);
    }
    Ok(seen)
}

/// `POST /auth/api-keys`: checks the request and the caller's password, then
/// stores a new key under the per-user cap and returns it with its secret.
pub async fn create(
    platform: &Platform,
    auth: &AuthState,
    user: &User,
    request: CreateApiKeyRequest,
    client: &str,
) -> Result<CreatedApiKey, AppError> {
    let spec = check_request(&request)?;
    let presented = Presented::at("current_password", &request.current_password);
    verify_password(platform, auth, user, presented, client).await?;
    let minted = secret::mint()?;
    let now = Utc::now();
    let expires_at = spec
        .expires_in_days
        .map(|days| now + chrono::Duration::days(days.into()));
    let new_key = NewApiKey {
        id: minted.id,
        user_id: user.id,
        name: spec.name,
        secret_hash: minted.secret_hash,
        scopes: spec.scopes,
        expires_at,
    };
    let cap = auth.config.max_api_keys_per_user;
    let mut conn = platform.pool.get().await?;
    let row = conn
        .transaction::<_, AppError, _>(async move |conn| {
            repository::lock_keys_of(conn, new_key.user_id).await?;
            let live = repository::count_live(conn, new_key.user_id, now).await?;
            if live >= i64::from(cap) {
                return Err(AppError::Conflict {
                    code: "too_many_api_keys",
                    detail: format!("An account may hold {cap} live API keys; revoke one first."),
                });
            }
            Ok(repository::insert(conn, &new_key).await?)
        })
        .await?;
    Ok(CreatedApiKey {
        key: ApiKeyResponse::from(row),
        secret: minted.text,
    })
}

/// `GET /auth/api-keys`: one page of the caller's keys, or (admins) anyone's.
pub async fn list(
    platform: &Platform,
    caller: &User,
    query: ApiKeyListQuery,
) -> Result<Page<ApiKeyResponse>, AppError> {
    let mut validator = Validator::new();
    let limit = validator.check(FieldError::query("limit"), checked_limit(query.limit));
    let before = validator.check_optional(FieldError::query("cursor"), query.cursor, |cursor| {
        Cursor::parse(&cursor).map(Cursor::key)
    });
    validator.into_result()?;
    let owner = query.user_id.unwrap_or(caller.id);
    if owner != caller.id && caller.role != Role::Admin {
        return Err(AppError::Forbidden {
            code: "admin_required",
            detail: "Only admins may list another account's API keys.".to_owned(),
        });
    }
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    let mut conn = platform.pool.get().await?;
    let rows = repository::list(&mut conn, owner, before, fetch_limit(limit)).await?;
    Ok(Page::from_rows(
        rows,
        limit,
        |row| row.id.to_string(),
        ApiKeyResponse::from,
    ))
}

/// `DELETE /auth/api-keys/{id}`: revokes one of the caller's keys, or (admins)
/// anyone's. Someone else's key is a 404 to a non-admin, as if it did not exist.
pub async fn revoke(platform: &Platform, caller: &User, id: Uuid) -> Result<(), AppError> {
    let owner = (caller.role != Role::Admin).then_some(caller.id);
    let mut conn = platform.pool.get().await?;
    if repository::delete(&mut conn, id, owner).await? {
        Ok(())
    } else {
        Err(AppError::NotFound("No API key has this id.".to_owned()))
    }
}

/// The owner (as the account is now) and grant of a presented key, if it is
/// still good: well-formed,
/// known, its secret matching, unexpired, and its owner active. Every failure
/// is the same 401 but an expiry, which its owner needs to tell apart.
pub async fn authenticate(
    conn: &mut AsyncPgConnection,
    text: &str,
) -> Result<(User, KeyGrant), AppError> {
    let not_valid = || invalid_token("The API key is not valid.");
    let presented = secret::parse(text).ok_or_else(not_valid)?;
    let row = repository::find(conn, presented.id)
        .await?
        .filter(|row| presented.matches(&row.secret_hash))
        .ok_or_else(not_valid)?;
    let now = Utc::now();
    if row.expires_at.is_some_and(|expiry| expiry <= now) {
        return Err(invalid_token("The API key has expired."));
    }
    let user = users::find(conn, row.user_id)
        .await?
        .filter(|user| user.is_active)
        .ok_or_else(not_valid)?;
    if repository::use_is_news(row.last_used_at, now) {
        repository::touch(conn, row.id).await?;
    }
    let grant = KeyGrant {
        key_id: row.id,
        scopes: row.scopes,
    };
    Ok((user, grant))
}
