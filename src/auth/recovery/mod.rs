//! Password recovery by email: `POST /auth/password-reset` mails a
//! single-use link to an account's address, and `POST
//! /auth/password-reset/confirm` sets the password the link's holder chose,
//! ending every session of the account. The link's token and its message
//! are written in one transaction (through the [`Outbox`] port), so a message
//! goes out exactly when its token exists.

pub mod router;
pub mod schemas;
pub mod service;

use std::sync::Arc;
use std::time::Duration;

use crate::auth::email_tokens::MAX_REQUEST_WINDOW;
use crate::auth::outbox::{Outbox, SharedOutbox};
use crate::core::config::{ConfigError, Vars};

/// The recovery settings.
#[derive(Debug, Clone)]
pub struct RecoveryConfig {
    /// How long a reset link works (`PASSWORD_RESET_TTL_MINUTES`, 5 to 1440; default 60).
    pub reset_ttl: Duration,
    /// Reset requests one address may receive within the window.
    pub max_resets_per_address: u32,
    /// Reset requests one client may make within the window.
    pub max_resets_per_client: u32,
    /// The window requests are counted in (at most a day).
    pub request_window: Duration,
}

impl RecoveryConfig {
    /// Reads the recovery variables.
    pub fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        let ttl_minutes: u64 = vars.positive("PASSWORD_RESET_TTL_MINUTES", 60)?;
        if !(5..=1440).contains(&ttl_minutes) {
            return Err(ConfigError {
                variable: "PASSWORD_RESET_TTL_MINUTES",
                problem: "must be between 5 and 1440 (a day)".to_owned(),
            });
        }
        let window = Duration::from_secs(vars.positive("EMAIL_REQUEST_WINDOW_SECONDS", 3600)?);
        if window > MAX_REQUEST_WINDOW {
            return Err(ConfigError {
                variable: "EMAIL_REQUEST_WINDOW_SECONDS",
                problem: "must be at most 86400 (a day)".to_owned(),
            });
        }
        Ok(Self {
            reset_ttl: Duration::from_secs(60 * ttl_minutes),
            max_resets_per_address: vars.positive("PASSWORD_RESET_MAX_PER_ADDRESS", 3)?,
            max_resets_per_client: vars.positive("PASSWORD_RESET_MAX_PER_CLIENT", 10)?,
            request_window: window,
        })
    }
}

/// What the recovery routes share: their settings and the outbox.
#[derive(Clone)]
pub struct RecoveryState {
    /// The settings.
    pub config: Arc<RecoveryConfig>,
    /// Where messages are queued.
    pub outbox: SharedOutbox,
}

impl RecoveryState {
    /// The state for `config`, queueing through `outbox`.
    pub fn new(config: RecoveryConfig, outbox: Arc<dyn Outbox>) -> Self {
        Self {
            config: Arc::new(config),
            outbox,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<RecoveryConfig, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        let lookup = |name: &str| vars.get(name).cloned();
        RecoveryConfig::from_vars(&Vars::new(&lookup))
    }

    #[test]
    fn defaults_and_bounds() {
        let defaults = config(&[]).expect("the defaults are valid");
        assert_eq!(defaults.reset_ttl, Duration::from_secs(3600));
        assert_eq!(defaults.max_resets_per_address, 3);
        assert_eq!(defaults.max_resets_per_client, 10);
        for (variable, value) in [
            ("PASSWORD_RESET_TTL_MINUTES", "4"),
            ("PASSWORD_RESET_TTL_MINUTES", "1441"),
            ("EMAIL_REQUEST_WINDOW_SECONDS", "86401"),
            ("PASSWORD_RESET_MAX_PER_ADDRESS", "0"),
        ] {
            let refused = config(&[(variable, value)])
                .err()
                .map(|error| error.variable);
            assert_eq!(refused, Some(variable), "{variable}={value}");
        }
    }
}
