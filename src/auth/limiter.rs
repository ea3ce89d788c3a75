//! The password-check limiter: every check of a password — sign-in and the
//! re-checks before a sensitive change — reserves an attempt *before* the
//! hash is verified, under per-key locks, so concurrent guesses cannot all
//! slip past the count, and a limiter that cannot record refuses (503).
//!
//! The scheme (README, "Security"), counted over `FAILED_LOGIN_WINDOW_SECONDS`:
//! - one client against one account: `MAX_FAILED_LOGINS` failures, then 429
//!   for that client on that account;
//! - one client across accounts: `MAX_FAILED_LOGINS_PER_CLIENT`;
//! - one account from anywhere: past `MAX_FAILED_LOGINS_PER_ACCOUNT`, only
//!   clients with no failure against it may try. Each new address gets one
//!   guess; the owner, from a clean client, is never locked out.
//!
//! The account is keyed by its id, or for an unknown address by PostgreSQL's
//! `lower()` of it (the normalisation the account lookup uses), so spelling
//! variants share one counter. Clients are keyed by address, IPv6 by /64.

use chrono::{DateTime, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use uuid::Uuid;

use crate::auth::config::AuthConfig;
use crate::auth::repository;
use crate::core::db::DbPool;
use crate::shared::error::AppError;

/// Whose password is being checked.
pub enum Account<'a> {
    /// An existing account.
    Known(Uuid),
    /// An address no account has (trimmed, not yet normalised).
    Unknown(&'a str),
}

/// An attempt reserved before the hash is checked; settle it afterwards.
#[must_use = "an unsettled attempt counts as a failure"]
pub struct Reservation {
    ids: Vec<i64>,
    pair_and_account: [String; 2],
}

/// Reserves one password check by `client` against `account`, or refuses it:
/// 429 (with when to retry) past a limit, 503 when the attempt cannot be
/// recorded. Runs in its own transaction; the locks end with it.
pub async fn reserve(
    pool: &DbPool,
    config: &AuthConfig,
    account: Account<'_>,
    client: &str,
) -> Result<Reservation, AppError> {
    let window =
        chrono::Duration::from_std(config.failed_login_window).map_err(AppError::internal)?;
    let mut conn = pool.get().await?;
    let limits = Limits::of(config);
    conn.transaction::<_, AppError, _>(async move |conn| {
        let keys = Keys::new(conn, account, client).await?;
        repository::lock_attempt_keys(conn, &keys.all())
            .await
            .map_err(unrecordable)?;
        let since = Utc::now() - window;
        let counts = repository::failures_since(conn, &keys.all(), since)
            .await
            .map_err(unrecordable)?;
        if let Some(oldest) = limits.blocked(&keys, &counts) {
            return Err(AppError::RateLimited {
                detail: "Too many failed password checks; wait before trying again.".to_owned(),
                retry_after: (oldest + window - Utc::now()).to_std().unwrap_or_default(),
            });
        }
        let ids = repository::record_attempts(conn, &keys.all())
            .await
            .map_err(unrecordable)?;
        Ok(Reservation {
            ids,
            pair_and_account: [keys.pair, keys.account],
        })
    })
    .await
}

/// Settles a reserved attempt: the right password forgets it and the pair's
/// and account's failures; a wrong one leaves it counted.
pub async fn settle(pool: &DbPool, reservation: Reservation, valid: bool) -> Result<(), AppError> {
    if !valid {
        return Ok(());
    }
    let mut conn = pool.get().await?;
    repository::forget_attempts(&mut conn, &reservation.ids).await?;
    repository::clear_failures(&mut conn, &reservation.pair_and_account).await?;
    Ok(())
}

/// The limiter could not record the attempt: refuse it rather than let it
/// through uncounted (fail closed).
fn unrecordable(error: diesel::result::Error) -> AppError {
    tracing::warn!(%error, "the sign-in limiter cannot record an attempt; refusing it");
    AppError::Unavailable {
        code: "sign_in_unavailable",
        detail: "Password checks are unavailable right now; try again shortly.".to_owned(),
        retry_after: Some(std::time::Duration::from_secs(1)),
    }
}

/// The three counters one attempt touches.
struct Keys {
    account: String,
    client: String,
    pair: String,
}

impl Keys {
    async fn new(
        conn: &mut AsyncPgConnection,
        account: Account<'_>,
        client: &str,
    ) -> Result<Self, AppError> {
        let account = match account {
            Account::Known(id) => format!("account:{id}"),
            Account::Unknown(email) => format!(
                "account:email:{}",
                repository::normalise_email(conn, email)
                    .await
                    .map_err(unrecordable)?
            ),
        };
        Ok(Self {
            pair: format!("pair:{client}|{account}"),
            client: format!("client:{client}"),
            account,
        })
    }

    fn all(&self) -> Vec<String> {
        vec![self.account.clone(), self.client.clone(), self.pair.clone()]
    }
}

/// The configured limits, as counts.
struct Limits {
    pair: i64,
    client: i64,
    account: i64,
}

impl Limits {
    fn of(config: &AuthConfig) -> Self {
        Self {
            pair: i64::from(config.max_failed_logins),
            client: i64::from(config.max_failed_logins_per_client),
            account: i64::from(config.max_failed_logins_per_account),
        }
    }

    /// When a limit holds, the oldest failure it counts (the block lifts a
    /// window after it); `None` when the attempt may go ahead.
    fn blocked(
        &self,
        keys: &Keys,
        counts: &[(String, i64, Option<DateTime<Utc>>)],
    ) -> Option<DateTime<Utc>> {
        let of = |key: &str| {
            counts
                .iter()
                .find(|(counted, _, _)| counted == key)
                .map_or((0, None), |(_, count, oldest)| (*count, *oldest))
        };
        let (pair, pair_oldest) = of(&keys.pair);
        let (client, client_oldest) = of(&keys.client);
        let (account, _) = of(&keys.account);
        [
            (pair >= self.pair, pair_oldest),
            (client >= self.client, client_oldest),
            // A client that has failed against a much-guessed account waits;
            // a clean one (the owner) may still try.
            (account >= self.account && pair > 0, pair_oldest),
        ]
        .into_iter()
        .filter_map(|(holds, oldest)| holds.then_some(oldest).flatten())
        .max()
    }
}
