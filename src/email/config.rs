//! The email domain's settings: where mail goes (`SMTP_URL`), who it comes
//! from (`EMAIL_FROM`), where its links point (`PUBLIC_URL`), and how often a
//! message is tried. Production refuses to start without the first three.

use std::time::Duration;

use lettre::Address;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, Tokio1Executor};

use crate::core::config::{AppEnv, ConfigError, Secret, Vars};

/// Email settings.
#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// The SMTP server (`smtp://user:password@host:587?tls=required`,
    /// `smtps://…:465`, `smtp://localhost:1025`); `None` in development
    /// means messages are "delivered" to the log.
    pub smtp_url: Option<Secret>,
    /// The sender of every message.
    pub from: Mailbox,
    /// The frontend's base URL, which links in messages start with (no trailing slash).
    pub public_url: String,
    /// The product name messages speak for.
    pub product_name: String,
    /// How long one SMTP exchange (connect, each command) may take.
    pub smtp_timeout: Duration,
    /// Attempts a message gets before its execution fails for good.
    pub max_attempts: i32,
}

/// The sender outside production unless `EMAIL_FROM` says otherwise.
const DEVELOPMENT_FROM: &str = "Tessera <no-reply@localhost>";

/// Where links point outside production unless `PUBLIC_URL` says otherwise:
/// the usual local frontend dev server.
const DEVELOPMENT_PUBLIC_URL: &str = "http://localhost:3000";

impl Default for EmailConfig {
    /// The development settings: no SMTP (the log), a local sender and frontend.
    fn default() -> Self {
        Self {
            smtp_url: None,
            from: Mailbox::new(
                Some("Tessera".to_owned()),
                Address::new_dangerous("no-reply", "localhost"),
            ),
            public_url: DEVELOPMENT_PUBLIC_URL.to_owned(),
            product_name: "Tessera".to_owned(),
            smtp_timeout: Duration::from_secs(10),
            max_attempts: 8,
        }
    }
}

impl EmailConfig {
    /// Reads the email variables; production needs `SMTP_URL`, `EMAIL_FROM`
    /// and `PUBLIC_URL` (a reset link to nowhere, or mail that never leaves
    /// the log, is worse than not starting).
    pub fn from_vars(vars: &Vars<'_>, env: AppEnv) -> Result<Self, ConfigError> {
        let required = |variable: &'static str, fallback: &str| match (vars.optional(variable), env)
        {
            (Some(value), _) => Ok(value),
            (None, AppEnv::Production) => Err(missing_in_production(variable)),
            (None, _) => Ok(fallback.to_owned()),
        };
        let smtp_url = match (vars.optional("SMTP_URL"), env) {
            (Some(url), _) => Some(smtp_url(url)?),
            (None, AppEnv::Production) => return Err(missing_in_production("SMTP_URL")),
            (None, _) => None,
        };
        let from = required("EMAIL_FROM", DEVELOPMENT_FROM)?;
        let from: Mailbox = from.parse().map_err(|error| ConfigError {
            variable: "EMAIL_FROM",
            problem: format!("is not an address such as `Tessera <no-reply@example.com>`: {error}"),
        })?;
        let public_url = public_url(required("PUBLIC_URL", DEVELOPMENT_PUBLIC_URL)?)?;
        let max_attempts = vars.positive("EMAIL_MAX_ATTEMPTS", 8)?;
        if max_attempts > 25 {
            return Err(ConfigError {
                variable: "EMAIL_MAX_ATTEMPTS",
                problem: "must be at most 25 (the most attempts an execution may have)".to_owned(),
            });
        }
        Ok(Self {
            smtp_url,
            from,
            public_url,
            product_name: vars
                .optional("PRODUCT_NAME")
                .unwrap_or_else(|| "Tessera".to_owned()),
            smtp_timeout: Duration::from_secs(vars.positive("SMTP_TIMEOUT_SECONDS", 10)?),
            max_attempts,
        })
    }
}

/// The refusal of a production start without `variable`.
fn missing_in_production(variable: &'static str) -> ConfigError {
    ConfigError {
        variable,
        problem: "is required in production (password reset and address verification send email)"
            .to_owned(),
    }
}

/// An SMTP URL lettre understands, checked at startup so a typo stops the
/// process instead of failing every message.
fn smtp_url(url: String) -> Result<Secret, ConfigError> {
    match AsyncSmtpTransport::<Tokio1Executor>::from_url(&url) {
        Ok(_) => Ok(Secret::new(url)),
        Err(error) => Err(ConfigError {
            variable: "SMTP_URL",
            problem: format!(
                "is not an SMTP URL such as `smtp://user:password@host:587?tls=required`: {error}"
            ),
        }),
    }
}

/// An absolute http(s) URL without a trailing slash, to which paths are appended.
fn public_url(url: String) -> Result<String, ConfigError> {
    let trimmed = url.trim_end_matches('/');
    let has_host = ["http://", "https://"].iter().any(|scheme| {
        trimmed
            .strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace))
    });
    if !has_host || trimmed.contains(['?', '#']) {
        return Err(ConfigError {
            variable: "PUBLIC_URL",
            problem: format!(
                "must be the frontend's http(s) base URL, e.g. https://app.example.com (got {url:?})"
            ),
        });
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(env: AppEnv, vars: &[(&str, &str)]) -> Result<EmailConfig, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        let lookup = |name: &str| vars.get(name).cloned();
        EmailConfig::from_vars(&Vars::new(&lookup), env)
    }

    #[test]
    fn development_works_without_a_mail_server() {
        let config = config(AppEnv::Development, &[]).expect("defaults are valid");
        assert_eq!(config.from, EmailConfig::default().from);
        assert!(config.smtp_url.is_none());
        assert_eq!(config.from.email.to_string(), "no-reply@localhost");
        assert_eq!(config.public_url, "http://localhost:3000");
        assert_eq!(config.max_attempts, 8);
    }

    #[test]
    fn production_refuses_to_start_without_smtp_sender_or_public_url() {
        let all = [
            ("SMTP_URL", "smtp://mail.example.com:587?tls=required"),
            ("EMAIL_FROM", "Example <no-reply@example.com>"),
            ("PUBLIC_URL", "https://app.example.com/"),
        ];
        let ok = config(AppEnv::Production, &all).expect("all three are enough");
        assert_eq!(ok.public_url, "https://app.example.com");
        for missing in 0..all.len() {
            let vars: Vec<_> = all
                .iter()
                .enumerate()
                .filter(|(index, _)| *index != missing)
                .map(|(_, var)| *var)
                .collect();
            let refused = config(AppEnv::Production, &vars)
                .err()
                .map(|error| error.variable);
            assert_eq!(refused, Some(all[missing].0));
        }
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (variable, value) in [
            ("SMTP_URL", "http://mail.example.com"),
            ("EMAIL_FROM", "not an address"),
            ("PUBLIC_URL", "app.example.com"),
            ("PUBLIC_URL", "https://app.example.com/?x=1"),
            ("EMAIL_MAX_ATTEMPTS", "26"),
            ("SMTP_TIMEOUT_SECONDS", "0"),
        ] {
            let refused = config(AppEnv::Development, &[(variable, value)])
                .err()
                .map(|error| error.variable);
            assert_eq!(refused, Some(variable), "{variable}={value}");
        }
    }

    #[test]
    fn the_smtp_password_is_never_printed() {
        let config = config(
            AppEnv::Development,
            &[(
                "SMTP_URL",
                "smtp://user:smtp-password-123@mail.example.com:587",
            )],
        )
        .expect("a valid URL");
        assert!(!format!("{config:?}").contains("smtp-password-123"));
    }
}
