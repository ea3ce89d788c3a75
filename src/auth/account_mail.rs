//! What the account flows that send mail share: their settings (link
//! lifetimes, request limits) and the outbox their messages are queued through.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::email_tokens::MAX_REQUEST_WINDOW;
use crate::auth::outbox::SharedOutbox;
use crate::core::config::{ConfigError, Vars};

/// The settings of password reset and address verification.
#[derive(Debug, Clone)]
pub struct AccountMailConfig {
    /// How long a reset link works (`PASSWORD_RESET_TTL_MINUTES`, 5 to 1440; default 60).
    pub reset_ttl: Duration,
    /// How long a verification link works (`EMAIL_VERIFICATION_TTL_HOURS`, 1 to 168; default 48).
    pub verification_ttl: Duration,
    /// Reset requests one address may receive within the window.
    pub max_resets_per_address: u32,
    /// Reset requests one client may make within the window.
    pub max_resets_per_client: u32,
    /// Verification links one account may ask to be sent again within the window.
    pub max_verifications_per_account: u32,
    /// Sign-ups one client may make within the window: each mails a link to
    /// the address it names, so an unbounded sign-up would mail anyone.
    pub max_signups_per_client: u32,
    /// The window requests are counted in (at most a day).
    pub request_window: Duration,
}

impl AccountMailConfig {
    /// Reads the variables of the mailing account flows.
    pub fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        let reset_minutes = bounded(vars, "PASSWORD_RESET_TTL_MINUTES", 60, 5..=1440)?;
        let verification_hours = bounded(vars, "EMAIL_VERIFICATION_TTL_HOURS", 48, 1..=168)?;
        let window = bounded(
            vars,
            "EMAIL_REQUEST_WINDOW_SECONDS",
            3600,
            1..=MAX_REQUEST_WINDOW.as_secs(),
        )?;
        Ok(Self {
            reset_ttl: Duration::from_secs(60 * reset_minutes),
            verification_ttl: Duration::from_secs(3600 * verification_hours),
            max_resets_per_address: vars.positive("PASSWORD_RESET_MAX_PER_ADDRESS", 3)?,
            max_resets_per_client: vars.positive("PASSWORD_RESET_MAX_PER_CLIENT", 10)?,
            max_verifications_per_account: vars
                .positive("EMAIL_VERIFICATION_MAX_PER_ACCOUNT", 3)?,
            max_signups_per_client: vars.positive("SIGNUPS_PER_CLIENT", 20)?,
            request_window: Duration::from_secs(window),
        })
    }
}

/// A number within `range`, `default` when unset.
fn bounded(
    vars: &Vars<'_>,
    variable: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    let value = vars.parse(variable, default)?;
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError {
            variable,
            problem: format!("must be between {} and {}", range.start(), range.end()),
        })
    }
}

/// What the mailing account flows share: their settings and the outbox.
#[derive(Clone)]
pub struct AccountMail {
    /// The settings.
    pub config: Arc<AccountMailConfig>,
    /// Where messages are queued.
    pub outbox: SharedOutbox,
}

impl AccountMail {
    /// The state for `config`, queueing through `outbox`.
    pub fn new(config: AccountMailConfig, outbox: SharedOutbox) -> Self {
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

    fn config(vars: &[(&str, &str)]) -> Result<AccountMailConfig, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        let lookup = |name: &str| vars.get(name).cloned();
        AccountMailConfig::from_vars(&Vars::new(&lookup))
    }

    #[test]
    fn defaults_and_bounds() {
        let defaults = config(&[]).expect("the defaults are valid");
        assert_eq!(defaults.reset_ttl, Duration::from_secs(3600));
        assert_eq!(defaults.verification_ttl, Duration::from_secs(48 * 3600));
        assert_eq!(defaults.max_resets_per_address, 3);
        assert_eq!(defaults.max_resets_per_client, 10);
        assert_eq!(defaults.max_verifications_per_account, 3);
        for (variable, value) in [
            ("PASSWORD_RESET_TTL_MINUTES", "4"),
            ("PASSWORD_RESET_TTL_MINUTES", "1441"),
            ("EMAIL_VERIFICATION_TTL_HOURS", "0"),
            ("EMAIL_VERIFICATION_TTL_HOURS", "169"),
            ("EMAIL_REQUEST_WINDOW_SECONDS", "86401"),
            ("PASSWORD_RESET_MAX_PER_ADDRESS", "0"),
            ("EMAIL_VERIFICATION_MAX_PER_ACCOUNT", "0"),
        ] {
            let refused = config(&[(variable, value)])
                .err()
                .map(|error| error.variable);
            assert_eq!(refused, Some(variable), "{variable}={value}");
        }
    }
}
