//! The whole configuration: the platform's settings and each domain's, read
//! once from the environment. Each section reads its own variables; this is
//! the one place that knows them all.

use std::sync::Arc;

use crate::auth::account_mail::AccountMailConfig;
use crate::auth::config::AuthConfig;
use crate::core::config::{ConfigError, PlatformConfig, Vars};
use crate::email::config::EmailConfig;
use crate::executions::config::{EventStreamConfig, QuotaConfig, WorkerConfig};
use crate::inference::config::InferenceConfig;

/// Every setting of the service, by owner.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Environment, logs, HTTP and the database.
    pub platform: Arc<PlatformConfig>,
    /// Tokens, sign-in limits, password hashing and the first admin.
    pub auth: AuthConfig,
    /// Password reset and address verification: link lifetimes and request limits.
    pub account_mail: AccountMailConfig,
    /// Background execution workers.
    pub workers: WorkerConfig,
    /// What one user may ask of the execution queues.
    pub quotas: QuotaConfig,
    /// Limits on execution event streams.
    pub event_streams: EventStreamConfig,
    /// The embedding engine and the inference API.
    pub inference: InferenceConfig,
    /// Mail delivery: SMTP, the sender, the links' base URL.
    pub email: EmailConfig,
}

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup`, so tests can supply variables
    /// without touching the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars::new(&lookup);
        let platform = PlatformConfig::from_vars(&vars)?;
        Ok(Self {
            auth: AuthConfig::from_vars(&vars, platform.env)?,
            account_mail: AccountMailConfig::from_vars(&vars)?,
            workers: WorkerConfig::from_vars(&vars, platform.http.shutdown_grace)?,
            quotas: QuotaConfig::from_vars(&vars)?,
            event_streams: EventStreamConfig::from_vars(&vars)?,
            inference: InferenceConfig::from_vars(&vars, platform.env)?,
            email: EmailConfig::from_vars(&vars, platform.env)?,
            platform: Arc::new(platform),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::auth::config::DEVELOPMENT_JWT_SECRET;
    use crate::core::config::{AppEnv, LogFormat};

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(|name| vars.get(name).cloned())
    }

    fn variable_of(vars: &[(&str, &str)]) -> &'static str {
        match settings(vars) {
            Ok(_) => panic!("{vars:?} should have been refused"),
            Err(error) => error.variable,
        }
    }

    #[test]
    fn defaults_suit_development() {
        let settings = settings(&[]).expect("no variables at all is a valid development setup");
        let config = &settings.platform;
        assert_eq!(config.env, AppEnv::Development);
        assert_eq!(config.http.port, 8000);
        assert_eq!(config.http.host.to_string(), "127.0.0.1");
        assert!(config.seed_on_startup);
        assert!(config.database.url.is_none());
        assert_eq!(config.log_format, LogFormat::Pretty);
    }

    #[test]
    fn bad_values_name_their_variable() {
        let Err(error) = settings(&[("PORT", "eighty")]) else {
            panic!("PORT=eighty should have been refused");
        };
        assert_eq!(error.variable, "PORT");
        assert!(
            error
                .to_string()
                .starts_with("invalid configuration: PORT: ")
        );
        let refused: &[(&[(&str, &str)], &str)] = &[
            (&[("APP_ENV", "staging")], "APP_ENV"),
            (&[("DATABASE_POOL_SIZE", "0")], "DATABASE_POOL_SIZE"),
            (&[("REQUEST_TIMEOUT_MS", "-5")], "REQUEST_TIMEOUT_MS"),
            (&[("SEED_ON_STARTUP", "yes")], "SEED_ON_STARTUP"),
            (
                &[("CORS_ALLOWED_ORIGINS", "example.com")],
                "CORS_ALLOWED_ORIGINS",
            ),
            (&[("JWT_SECRET", "short")], "JWT_SECRET"),
            (
                &[
                    ("EXECUTION_LEASE_MS", "1000"),
                    ("EXECUTION_HEARTBEAT_MS", "1000"),
                ],
                "EXECUTION_HEARTBEAT_MS",
            ),
            (
                &[("WORKER_QUEUE_CONCURRENCY", "default")],
                "WORKER_QUEUE_CONCURRENCY",
            ),
            (&[("INFERENCE_DEVICE", "tpu")], "INFERENCE_DEVICE"),
            (&[("INFERENCE_PRECISION", "fp8")], "INFERENCE_PRECISION"),
        ];
        for (vars, variable) in refused {
            assert_eq!(variable_of(vars), *variable, "{vars:?}");
        }
    }

    #[test]
    fn production_refuses_default_or_missing_secrets() {
        let url = ("DATABASE_URL", "postgres://db/tessera");
        assert_eq!(variable_of(&[("APP_ENV", "production"), url]), "JWT_SECRET");
        assert_eq!(
            variable_of(&[
                ("APP_ENV", "production"),
                url,
                ("JWT_SECRET", DEVELOPMENT_JWT_SECRET),
            ]),
            "JWT_SECRET"
        );
        // Any deployment that is not a developer's machine refuses it, tests included.
        assert_eq!(
            variable_of(&[("APP_ENV", "test"), url]),
            "JWT_SECRET",
            "APP_ENV=test with the development secret"
        );
        let secret = "a-real-production-secret-of-forty-bytes!!";
        let mail = [
            ("SMTP_URL", "smtp://mail.example.com:587?tls=required"),
            ("EMAIL_FROM", "Example <no-reply@example.com>"),
            ("PUBLIC_URL", "https://app.example.com"),
        ];
        assert_eq!(
            variable_of(&[("APP_ENV", "production"), url, ("JWT_SECRET", secret)]),
            "SMTP_URL",
            "production without a mail server"
        );
        let ok = settings(&[
            ("APP_ENV", "production"),
            url,
            ("JWT_SECRET", secret),
            mail[0],
            mail[1],
            mail[2],
        ])
        .expect("production with a URL, a real secret and a mail server is valid");
        assert_eq!(ok.platform.http.host.to_string(), "0.0.0.0");
        assert_eq!(ok.platform.log_format, LogFormat::Json);
        assert!(!ok.platform.seed_on_startup);
        assert!(ok.platform.http.cors_allowed_origins.is_empty());
    }

    #[test]
    fn the_database_url_is_never_printed() {
        let url = "postgres://tessera:db-password-123@db/tessera";
        let settings = settings(&[("DATABASE_URL", url)]).expect("a valid URL");
        let printed = format!("{settings:?}");
        assert!(!printed.contains("db-password-123"), "{printed}");
        let kept = settings
            .platform
            .database
            .url
            .as_ref()
            .map(|url| url.expose());
        assert_eq!(kept, Some(url));
    }

    #[test]
    fn production_requires_a_database_url() {
        let secret = ("JWT_SECRET", "a-real-production-secret-of-forty-bytes!!");
        assert_eq!(
            variable_of(&[("APP_ENV", "production"), secret]),
            "DATABASE_URL"
        );
    }

    #[test]
    fn a_metrics_token_must_be_long_enough_to_not_be_guessed() {
        assert_eq!(variable_of(&[("METRICS_TOKEN", "short")]), "METRICS_TOKEN");
        assert_eq!(
            variable_of(&[("METRICS_TOKEN", "sixteen chars ok")]),
            "METRICS_TOKEN",
            "no spaces"
        );
        let settings = settings(&[("METRICS_TOKEN", "0123456789abcdef")]).expect("valid");
        let printed = format!("{settings:?}");
        assert!(
            !printed.contains("0123456789abcdef"),
            "the token is redacted"
        );
    }

    #[test]
    fn host_and_port_follow_the_platform_convention() {
        let settings =
            settings(&[("HOST", "0.0.0.0"), ("PORT", "8080")]).expect("HOST and PORT are valid");
        assert_eq!(settings.platform.http.host.to_string(), "0.0.0.0");
        assert_eq!(settings.platform.http.port, 8080);
    }

    #[test]
    fn worker_shutdown_grace_follows_the_http_one_unless_set() {
        let inherited = settings(&[("SHUTDOWN_GRACE_MS", "2500")]).expect("a valid grace");
        assert_eq!(inherited.workers.shutdown_grace.as_millis(), 2500);
        let own = settings(&[
            ("SHUTDOWN_GRACE_MS", "2500"),
            ("WORKER_SHUTDOWN_GRACE_MS", "700"),
        ])
        .expect("valid graces");
        assert_eq!(own.workers.shutdown_grace.as_millis(), 700);
        assert_eq!(own.platform.http.shutdown_grace.as_millis(), 2500);
    }

    /// `.env.example` documents every default: reading it must give exactly
    /// what reading nothing gives, so the documentation cannot drift.
    #[test]
    fn env_example_states_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example");
        let text = std::fs::read_to_string(path).expect(".env.example is in the repository root");
        let documented: HashMap<String, String> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| line.split_once('='))
            .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
            .collect();
        assert!(
            documented.len() > 30,
            "only {} variables parsed from .env.example",
            documented.len()
        );
        let from_example = Settings::from_lookup(|name| documented.get(name).cloned())
            .expect(".env.example's values are valid");
        let defaults = settings(&[]).expect("the defaults are valid");
        assert_eq!(format!("{from_example:?}"), format!("{defaults:?}"));
    }
}
