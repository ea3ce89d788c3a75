//! Sessions: a sign-in is a family of refresh tokens, rotated on every use,
//! ended by logout, logout-all, a password change, deactivation, reuse of a
//! spent token or its absolute lifetime. Exchanges and revocations of one
//! family queue on its lock; every token records the account's token version,
//! so a bump ends every older token whatever raced it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use uuid::Uuid;

use crate::auth::api_keys;
use crate::auth::config::AuthConfig;
use crate::auth::email_tokens;
use crate::auth::models::NewRefreshToken;
use crate::auth::repository;
use crate::auth::schemas::TokenResponse;
use crate::auth::service::AuthState;
use crate::auth::tokens::TokenService;
use crate::core::db::DbPool;
use crate::core::platform::Platform;
use crate::shared::error::AppError;
use crate::users::models::User;
use crate::users::service as users;

/// A configured duration as chrono's, for timestamp arithmetic.
pub(crate) fn to_chrono(duration: std::time::Duration) -> Result<chrono::Duration, AppError> {
    chrono::Duration::from_std(duration).map_err(AppError::internal)
}

/// Issues an access token and a refresh token in `family`, a sign-in that
/// ends at `session_ends` however often it rotates. The refresh token records
/// the account's token version: a later bump (logout-all, a password change,
/// deactivation) kills it even if this issue raced the bump.
pub(crate) async fn issue_pair(
    conn: &mut AsyncPgConnection,
    auth: &AuthState,
    user: &User,
    family_id: Uuid,
    session_ends: DateTime<Utc>,
) -> Result<TokenResponse, AppError> {
    let refresh = TokenService::new_refresh_token()?;
    let expires_at = (Utc::now() + to_chrono(auth.tokens.refresh_ttl())?).min(session_ends);
    repository::insert_refresh_token(
        conn,
        &NewRefreshToken {
            id: Uuid::now_v7(),
            family_id,
            user_id: user.id,
            token_hash: refresh.hash,
            expires_at,
            token_version: user.token_version,
            session_expires_at: session_ends,
        },
    )
    .await?;
    Ok(TokenResponse {
        access_token: auth.tokens.issue_access(user, family_id)?,
        token_type: "bearer".to_owned(),
        expires_in: auth.tokens.access_ttl().as_secs(),
        refresh_token: refresh.value,
    })
}

/// What an exchange of a refresh token came to (decided inside the transaction,
/// answered after it commits, so that a revocation sticks even when we refuse).
enum Exchange {
    Issued(TokenResponse),
    Refused(&'static str, &'static str),
}

impl Exchange {
    fn invalid(detail: &'static str) -> Self {
        Self::Refused("invalid_refresh_token", detail)
    }

    fn into_result(self) -> Result<TokenResponse, AppError> {
        match self {
            Self::Issued(pair) => Ok(pair),
            Self::Refused(code, detail) => Err(AppError::Unauthorized {
                code,
                detail: detail.to_owned(),
            }),
        }
    }
}

/// `POST /auth/refresh`: single-use rotation. Presenting a token that was
/// already used revokes its whole family: someone else has a copy.
pub async fn refresh(
    platform: &Platform,
    auth: &AuthState,
    token: &str,
) -> Result<TokenResponse, AppError> {
    let hash = TokenService::hash_refresh_token(token);
    let mut conn = platform.pool.get().await?;
    conn.transaction::<_, AppError, _>(async move |conn| exchange(conn, auth, &hash).await)
        .await?
        .into_result()
}

/// One exchange, under its family's lock: a revocation of the family (reuse,
/// logout) and a rotation in it never interleave.
async fn exchange(
    conn: &mut AsyncPgConnection,
    auth: &AuthState,
    hash: &[u8],
) -> Result<Exchange, AppError> {
    let Some(row) = repository::lock_token_and_family(conn, hash).await? else {
        return Ok(Exchange::invalid("The refresh token is not valid."));
    };
    if row.revoked_at.is_some() {
        return Ok(Exchange::invalid("The refresh token has been revoked."));
    }
    if row.used_at.is_some() {
        repository::revoke_family(conn, row.family_id).await?;
        return Ok(Exchange::Refused(
            "refresh_token_reused",
            "The refresh token was already used; every session from that sign-in is now revoked.",
        ));
    }
    let now = Utc::now();
    if row.expires_at <= now || row.session_expires_at <= now {
        return Ok(Exchange::invalid("The refresh token has expired."));
    }
    // Deactivation, logout-all and a password change bump the version: a token
    // from before any of them is dead, even after a reactivation.
    let user = users::find(conn, row.user_id)
        .await?
        .filter(|user| user.is_active && user.token_version == row.token_version);
    let Some(user) = user else {
        repository::revoke_family(conn, row.family_id).await?;
        return Ok(Exchange::invalid(
            "The sign-in this token belongs to has ended.",
        ));
    };
    repository::mark_used(conn, row.id).await?;
    let pair = issue_pair(conn, auth, &user, row.family_id, row.session_expires_at).await?;
    Ok(Exchange::Issued(pair))
}

/// `POST /auth/logout`: revokes the token's family. Unknown tokens are
/// ignored, so logging out twice is harmless.
pub async fn logout(platform: &Platform, token: &str) -> Result<(), AppError> {
    let hash = TokenService::hash_refresh_token(token);
    let mut conn = platform.pool.get().await?;
    conn.transaction::<_, AppError, _>(async move |conn| {
        if let Some(row) = repository::lock_token_and_family(conn, &hash).await? {
            repository::revoke_family(conn, row.family_id).await?;
        }
        Ok(())
    })
    .await
}

/// `POST /auth/logout-all`: revokes every refresh token of the caller, and
/// their access tokens at once.
pub async fn logout_all(platform: &Platform, user: &User) -> Result<(), AppError> {
    let mut conn = platform.pool.get().await?;
    let user_id = user.id;
    conn.transaction::<_, AppError, _>(async move |conn| revoke_sessions(conn, user_id).await)
        .await
}

/// Revokes every refresh token of `user_id` and invalidates its access tokens.
pub(crate) async fn revoke_sessions(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
) -> Result<(), AppError> {
    repository::revoke_all(conn, user_id).await?;
    users::invalidate_access_tokens(conn, user_id).await?;
    Ok(())
}

/// Deletes what no check will read again: failed attempts older than the
/// window, refresh tokens and API keys that expired before it, and mailed
/// tokens and requests for mail past theirs. Returns how many rows went.
pub async fn prune(pool: &DbPool, config: &AuthConfig) -> Result<usize, AppError> {
    let now = Utc::now();
    let before = now - to_chrono(config.failed_login_window)?;
    let mut conn = pool.get().await?;
    let sessions = repository::prune(&mut conn, before).await?;
    let keys = api_keys::repository::prune_expired(&mut conn, before).await?;
    let requests_before = now - to_chrono(email_tokens::MAX_REQUEST_WINDOW)?;
    let mailed = email_tokens::prune(&mut conn, requests_before, now).await?;
    Ok(sessions + keys + mailed)
}

/// Prunes every `every` until `shutdown`, inside a span that names it; a
/// failed run is logged and retried at the next tick.
pub async fn prune_periodically(
    pool: DbPool,
    config: Arc<AuthConfig>,
    every: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = ticker.tick() => match prune(&pool, &config).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "pruned old sign-in attempts, expired refresh tokens and API keys"),
                Err(error) => tracing::warn!(%error, "pruning sign-in records failed; will try again"),
            },
            () = shutdown.cancelled() => return,
        }
    }
}

/// Ends every sign-in of `user_id` but `keep` (the caller's); without one
/// (an old token), every sign-in, the caller's included.
pub async fn end_other_sessions(
    platform: &Platform,
    user_id: Uuid,
    keep: Option<Uuid>,
) -> Result<(), AppError> {
    let mut conn = platform.pool.get().await?;
    match keep {
        Some(keep) => Ok(repository::revoke_all_but(&mut conn, user_id, keep).await?),
        None => {
            conn.transaction::<_, AppError, _>(async move |conn| {
                revoke_sessions(conn, user_id).await
            })
            .await
        }
    }
}
