//! Password hashing with argon2id, off the async runtime and under admission
//! control.
//!
//! Hashing is deliberately expensive (OWASP: 19 MiB, t=2, p=1), so a login
//! flood could otherwise take every core and starve the rest of the service.
//! At most `max_concurrent` hashes run at once on blocking threads; at most
//! `max_waiting` requests wait for a slot, and beyond that the answer is 503
//! with `Retry-After`. A request whose client disconnects while waiting gives
//! its place up without hashing anything.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use argon2::password_hash::phc::{PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::Semaphore;

use crate::shared::error::AppError;
use crate::shared::validation::Invalid;

/// Shortest accepted password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest accepted password, in characters (bounds the hashing cost of one request).
pub const MAX_PASSWORD_CHARS: usize = 128;

/// Longest password accepted for checking, in characters: a guess longer than
/// any password we let anyone set is refused before it costs a hash or a row.
/// Counted in characters, as the document's `maxLength` counts; at most 4 KiB
/// of UTF-8, a trivial argon2 input.
pub const MAX_CREDENTIAL_CHARS: usize = 1024;

/// Longest sign-in name (an email), in characters (RFC 5321's path limit).
pub const MAX_USERNAME_CHARS: usize = 254;

/// Checks that a password presented for verification is not absurdly long.
pub fn bounded_password(password: &str) -> Result<(), Invalid> {
    if password.chars().count() > MAX_CREDENTIAL_CHARS {
        Err(Invalid::new(format!(
            "must be at most {MAX_CREDENTIAL_CHARS} characters"
        )))
    } else {
        Ok(())
    }
}

/// Checks that a sign-in name is not longer than any email can be and holds
/// no control character (no email does; PostgreSQL cannot even store NUL,
/// and the name is looked up and, when unknown, kept as a limiter key).
pub fn bounded_username(username: &str) -> Result<(), Invalid> {
    if username.chars().count() > MAX_USERNAME_CHARS {
        Err(Invalid::new(format!(
            "must be at most {MAX_USERNAME_CHARS} characters"
        )))
    } else if username.chars().any(char::is_control) {
        Err(Invalid::new("must not contain control characters"))
    } else {
        Ok(())
    }
}

/// Checks a new password's length.
pub fn validate_password(password: &str) -> Result<(), Invalid> {
    let length = password.chars().count();
    if length < MIN_PASSWORD_CHARS {
        Err(Invalid::new(format!(
            "must be at least {MIN_PASSWORD_CHARS} characters"
        )))
    } else if length > MAX_PASSWORD_CHARS {
        Err(Invalid::new(format!(
            "must be at most {MAX_PASSWORD_CHARS} characters"
        )))
    } else {
        Ok(())
    }
}

/// The result of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    /// The password matches.
    pub valid: bool,
    /// The stored hash uses parameters other than today's: rehash it.
    pub outdated: bool,
}

/// Hashes and verifies passwords with bounded concurrency.
pub struct Passwords {
    params: Params,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    /// Verified against when the account does not exist, so that an unknown
    /// email costs the same time as a wrong password.
    dummy_hash: String,
}

impl Passwords {
    /// OWASP's argon2id parameters: 19 MiB of memory, 2 passes, 1 lane.
    pub fn owasp_params() -> Params {
        Params::DEFAULT
    }

    /// A hasher running at most `max_concurrent` hashes, with at most
    /// `max_waiting` requests queued. Computes the dummy hash once (startup).
    pub fn new(
        params: Params,
        max_concurrent: usize,
        max_waiting: usize,
    ) -> Result<Self, HashError> {
        let dummy_hash = hash_blocking(&params, "a dummy password no account has")?;
        Ok(Self {
            params,
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
            dummy_hash,
        })
    }

    /// Hashes `password` into a PHC string.
    pub async fn hash(&self, password: &str) -> Result<String, AppError> {
        let params = self.params.clone();
        let password = password.to_owned();
        self.run(move || hash_blocking(&params, &password))
            .await?
            .map_err(AppError::internal)
    }

    /// Checks `password` against `stored`, or against a dummy hash when there
    /// is no account (always invalid, same cost).
    pub async fn verify(
        &self,
        password: &str,
        stored: Option<&str>,
    ) -> Result<Verification, AppError> {
        let exists = stored.is_some();
        let hash = stored.unwrap_or(&self.dummy_hash).to_owned();
        let password = password.to_owned();
        let params = self.params.clone();
        let verification = self
            .run(move || verify_blocking(&params, &password, &hash))
            .await?;
        Ok(Verification {
            valid: exists && verification.valid,
            outdated: exists && verification.outdated,
        })
    }

    /// Runs `job` on a blocking thread once a slot is free.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AppError> {
        let waiting = WaitingGuard::enter(&self.waiting);
        if waiting.position >= self.max_waiting {
            return Err(AppError::Unavailable {
                code: "auth_overloaded",
                detail: "Too many sign-ins are in progress; try again shortly.".to_owned(),
                retry_after: Some(Duration::from_secs(1)),
            });
        }
        // Dropping this future here (client gone) leaves the queue with no work behind.
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AppError::internal("password hashing slots closed"))?;
        drop(waiting);
        tokio::task::spawn_blocking(move || {
            // The slot stays taken until the hash is done, even if the request is gone.
            let _slot = slot;
            job()
        })
        .await
        .map_err(AppError::internal)
    }
}

/// Counts a request as waiting until dropped.
struct WaitingGuard<'a> {
    counter: &'a AtomicUsize,
    position: usize,
}

impl<'a> WaitingGuard<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        let position = counter.fetch_add(1, Ordering::SeqCst);
        Self { counter, position }
    }
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::SeqCst);
    }
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The operating system gave no randomness for the salt.
    #[error("no randomness for a password salt: {0}")]
    Random(#[from] getrandom::Error),
    /// The salt could not be encoded.
    #[error("password salt: {0}")]
    Salt(#[from] argon2::password_hash::phc::Error),
    /// argon2 refused the parameters.
    #[error("argon2: {0}")]
    Argon2(#[from] argon2::password_hash::Error),
}

fn hash_blocking(params: &Params, password: &str) -> Result<String, HashError> {
    let mut salt_bytes = [0u8; 16];
    getrandom::fill(&mut salt_bytes)?;
    let salt = Salt::new(&salt_bytes)?;
    let hash = argon2(params).hash_password_with_salt(password.as_bytes(), salt.as_ref())?;
    Ok(hash.to_string())
}

fn verify_blocking(params: &Params, password: &str, stored: &str) -> Verification {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return Verification {
            valid: false,
            outdated: false,
        };
    };
    let valid = argon2(params)
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    let current = Params::try_from(&parsed).ok();
    let outdated = parsed.algorithm.as_str() != "argon2id"
        || current.is_none_or(|stored| {
            stored.m_cost() != params.m_cost()
                || stored.t_cost() != params.t_cost()
                || stored.p_cost() != params.p_cost()
        });
    Verification { valid, outdated }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Params {
        Params::new(64, 1, 1, None).expect("64 KiB, 1 pass, 1 lane are valid argon2 parameters")
    }

    #[tokio::test]
    async fn hashes_verify_and_unknown_accounts_never_do() {
        let passwords =
            Passwords::new(cheap(), 2, 8).expect("a hasher with cheap parameters starts");
        let hash = passwords
            .hash("correct horse")
            .await
            .expect("hashing a password succeeds");
        assert!(hash.starts_with("$argon2id$"));
        let good = passwords
            .verify("correct horse", Some(&hash))
            .await
            .expect("verifying against a stored hash succeeds");
        assert!(good.valid && !good.outdated);
        assert!(
            !passwords
                .verify("wrong horse", Some(&hash))
                .await
                .expect("verifying a password completes")
                .valid
        );
        let unknown = passwords
            .verify("a dummy password no account has", None)
            .await
            .expect("verifying a password completes");
        assert!(!unknown.valid, "the dummy hash never grants access");
    }

    #[tokio::test]
    async fn hashes_with_other_parameters_are_outdated() {
        let old = Passwords::new(
            Params::new(32, 1, 1, None)
                .expect("32 KiB, 1 pass, 1 lane are valid argon2 parameters"),
            1,
            8,
        )
        .expect("a hasher with cheap parameters starts");
        let hash = old
            .hash("correct horse")
            .await
            .expect("hashing a password succeeds");
        let current = Passwords::new(cheap(), 1, 8).expect("a hasher with cheap parameters starts");
        let verification = current
            .verify("correct horse", Some(&hash))
            .await
            .expect("verifying a password completes");
        assert!(verification.valid && verification.outdated);
    }

    #[tokio::test]
    async fn a_full_queue_answers_503() {
        let passwords =
            Passwords::new(cheap(), 1, 0).expect("a hasher with cheap parameters starts");
        let error = passwords.hash("correct horse").await.unwrap_err();
        assert_eq!(error.to_problem().code, "auth_overloaded");
    }

    #[tokio::test]
    async fn a_request_dropped_while_waiting_leaves_no_work_behind() {
        use std::sync::atomic::AtomicBool;
        let passwords =
            Arc::new(Passwords::new(cheap(), 1, 8).expect("a hasher with cheap parameters starts"));
        let (release, released) = std::sync::mpsc::channel::<()>();
        let busy = {
            let passwords = passwords.clone();
            tokio::spawn(async move { passwords.run(move || released.recv().ok()).await })
        };
        while passwords.slots.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let ran = Arc::new(AtomicBool::new(false));
        let waiting = {
            let (passwords, ran) = (passwords.clone(), ran.clone());
            tokio::spawn(async move {
                passwords
                    .run(move || ran.store(true, Ordering::SeqCst))
                    .await
            })
        };
        while passwords.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        waiting.abort(); // The client went away.
        assert!(waiting.await.is_err());
        assert_eq!(passwords.waiting.load(Ordering::SeqCst), 0);
        release
            .send(())
            .expect("the busy job is still waiting for its release");
        busy.await
            .expect("the busy job was not cancelled")
            .expect("the busy job got its hashing slot");
        assert_eq!(passwords.slots.available_permits(), 1);
        assert!(!ran.load(Ordering::SeqCst), "the abandoned job never ran");
    }

    #[test]
    fn password_lengths_are_bounded() {
        assert!(validate_password("short").is_err());
        assert!(validate_password("long enough").is_ok());
        assert!(validate_password(&"x".repeat(129)).is_err());
        assert!(validate_password(&"é".repeat(8)).is_ok());
    }

    #[test]
    fn presented_credentials_are_bounded_in_characters() {
        // Characters, as the document's maxLength counts: 1,024 of them are
        // checked however many bytes they take.
        assert!(bounded_password(&"é".repeat(MAX_CREDENTIAL_CHARS)).is_ok());
        assert!(bounded_password(&"x".repeat(MAX_CREDENTIAL_CHARS + 1)).is_err());
        assert!(bounded_username(&"é".repeat(MAX_USERNAME_CHARS)).is_ok());
        assert!(bounded_username(&"x".repeat(MAX_USERNAME_CHARS + 1)).is_err());
        for control in ["ada\u{0}@example.com", "ada@example.com\n", "\u{85}"] {
            assert!(bounded_username(control).is_err(), "{control:?}");
        }
    }
}
