//! Typed configuration, read once from the environment (and an optional `.env`).
//!
//! Every variable is parsed and checked here, at startup, so nothing deeper ever
//! holds an invalid value; a bad value stops the process with one line that names
//! the variable and what is wrong with it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Which kind of deployment this is; it picks defaults and safety checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    /// A developer's machine: readable logs, a local PostgreSQL, seeding at startup.
    Development,
    /// The test suite.
    Test,
    /// A real deployment: JSON logs, real secrets required.
    Production,
}

impl FromStr for AppEnv {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "development" => Ok(Self::Development),
            "test" => Ok(Self::Test),
            "production" => Ok(Self::Production),
            other => Err(format!(
                "must be development, test or production (got {other:?})"
            )),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object a line, for log collectors.
    Json,
    /// Readable lines, for people.
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            other => Err(format!("must be json or pretty (got {other:?})")),
        }
    }
}

/// A configuration value that could not be accepted.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {variable}: {problem}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: &'static str,
    /// What is wrong with its value.
    pub problem: String,
}

/// Database settings.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `DATABASE_URL`; `None` in development means "start a local cluster".
    pub url: Option<Secret>,
    /// Most connections the pool holds.
    pub pool_size: usize,
    /// How long a request waits for a connection before answering 503.
    pub acquire_timeout: Duration,
    /// Server-side limit on any one statement.
    pub statement_timeout: Duration,
    /// Where the local development cluster lives.
    pub local_dir: PathBuf,
}

/// HTTP server settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Address to listen on (`HOST`).
    pub host: IpAddr,
    /// Port to listen on (`PORT`; 0 picks a free one).
    pub port: u16,
    /// Longest time a request may take before it is answered 503.
    pub request_timeout: Duration,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: usize,
    /// Most requests served at once; more are answered 503 at once.
    pub max_in_flight: usize,
    /// Browser origins allowed by CORS.
    pub cors_allowed_origins: Vec<String>,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// How long a client has to send a request's headers, and most a
    /// keep-alive connection may sit idle (a slow-loris client is cut off).
    pub header_read_timeout: Duration,
    /// Most connections open at once; more are closed as they arrive.
    pub max_connections: usize,
}

/// What `Debug` prints in place of a secret (a password, a token, a key), so
/// a value logged by mistake never leaks it.
pub const REDACTED: &str = "[redacted]";

/// A secret value: usable, but never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

/// The platform's configuration: environment, logs, HTTP and the database.
/// Each domain reads its own settings (`auth::config`, `executions::config`,
/// `inference::config`); `app::Settings` assembles them all.
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    /// `APP_ENV`.
    pub env: AppEnv,
    /// Log line format.
    pub log_format: LogFormat,
    /// HTTP server.
    pub http: HttpConfig,
    /// PostgreSQL.
    pub database: DatabaseConfig,
    /// Whether `serve` applies pending migrations before listening.
    pub migrate_on_startup: bool,
    /// Whether `serve` runs the seeders before listening.
    pub seed_on_startup: bool,
    /// Where the ReDoc script is read from (it is served, never loaded from a CDN).
    pub redoc_bundle_path: PathBuf,
    /// The bearer token `/metrics` requires (`METRICS_TOKEN`). Without one,
    /// `/metrics` is open outside production and refused in production, where
    /// its numbers (pool use, queue depths, traffic) would map the service for
    /// an attacker.
    pub metrics_token: Option<Secret>,
}

/// The shortest accepted `METRICS_TOKEN`: long enough not to be guessed.
const MIN_METRICS_TOKEN_LEN: usize = 16;

impl PlatformConfig {
    /// Reads the platform's variables; `APP_ENV` picks the defaults.
    pub fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        let env: AppEnv = vars.parse("APP_ENV", AppEnv::Development)?;
        let is_production = env == AppEnv::Production;
        let default_log = if is_production {
            LogFormat::Json
        } else {
            LogFormat::Pretty
        };
        let config = Self {
            env,
            log_format: vars.parse("LOG_FORMAT", default_log)?,
            http: HttpConfig::from_vars(vars, env)?,
            database: DatabaseConfig {
                url: vars.optional("DATABASE_URL").map(Secret::new),
                pool_size: vars.positive("DATABASE_POOL_SIZE", 16)?,
                acquire_timeout: vars.millis("DATABASE_ACQUIRE_TIMEOUT_MS", 3_000)?,
                statement_timeout: vars.millis("DATABASE_STATEMENT_TIMEOUT_MS", 15_000)?,
                local_dir: vars.parse("LOCAL_POSTGRES_DIR", PathBuf::from(".data/postgres"))?,
            },
            migrate_on_startup: vars.parse("MIGRATE_ON_STARTUP", !is_production)?,
            seed_on_startup: vars.parse("SEED_ON_STARTUP", env == AppEnv::Development)?,
            redoc_bundle_path: vars.parse(
                "REDOC_BUNDLE_PATH",
                PathBuf::from(".data/redoc/redoc.standalone.js"),
            )?,
            metrics_token: metrics_token(vars)?,
        };
        config.check_database()?;
        Ok(config)
    }

    fn check_database(&self) -> Result<(), ConfigError> {
        if self.env != AppEnv::Development && self.database.url.is_none() {
            return Err(ConfigError {
                variable: "DATABASE_URL",
                problem:
                    "is required outside development (only development starts a local PostgreSQL)"
                        .to_owned(),
            });
        }
        Ok(())
    }

    /// Whether this is a development deployment.
    pub fn is_development(&self) -> bool {
        self.env == AppEnv::Development
    }
}

/// `METRICS_TOKEN`, if set: at least [`MIN_METRICS_TOKEN_LEN`] visible characters.
fn metrics_token(vars: &Vars<'_>) -> Result<Option<Secret>, ConfigError> {
    let Some(token) = vars.optional("METRICS_TOKEN") else {
        return Ok(None);
    };
    let visible = token.bytes().all(|byte| byte.is_ascii_graphic());
    if token.len() < MIN_METRICS_TOKEN_LEN || !visible {
        return Err(ConfigError {
            variable: "METRICS_TOKEN",
            problem: format!(
                "must be at least {MIN_METRICS_TOKEN_LEN} visible ASCII characters (no spaces)"
            ),
        });
    }
    Ok(Some(Secret::new(token)))
}

impl HttpConfig {
    fn from_vars(vars: &Vars<'_>, env: AppEnv) -> Result<Self, ConfigError> {
        let is_production = env == AppEnv::Production;
        let default_host: IpAddr = if is_production {
            IpAddr::from([0, 0, 0, 0])
        } else {
            IpAddr::from([127, 0, 0, 1])
        };
        Ok(Self {
            host: vars.parse("HOST", default_host)?,
            port: vars.parse("PORT", 8000)?,
            request_timeout: vars.millis("REQUEST_TIMEOUT_MS", 30_000)?,
            body_limit_bytes: vars.positive("REQUEST_BODY_LIMIT_BYTES", 1024 * 1024)?,
            max_in_flight: vars.positive("MAX_IN_FLIGHT_REQUESTS", 512)?,
            cors_allowed_origins: vars.origins("CORS_ALLOWED_ORIGINS", !is_production)?,
            shutdown_grace: vars.millis("SHUTDOWN_GRACE_MS", 10_000)?,
            header_read_timeout: vars.millis("HEADER_READ_TIMEOUT_MS", 10_000)?,
            max_connections: vars.positive("MAX_CONNECTIONS", 1024)?,
        })
    }
}

/// Typed access to environment variables, each failure naming its variable.
/// Every domain's settings are read through one of these, so every variable
/// gets the same trimming and the same one-line error.
pub struct Vars<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Vars<'a> {
    /// Reads variables through `lookup` (the process environment, or a map in tests).
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { lookup }
    }

    /// The variable's value, or `None` when it is unset or blank.
    pub fn optional(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    }

    /// The variable parsed as `T`, or `default` when unset.
    pub fn parse<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|error| ConfigError {
                variable: name,
                problem: format!("{error} (got {raw:?})"),
            }),
        }
    }

    /// A number that must be greater than zero.
    pub fn positive<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr + Default + PartialEq,
        T::Err: std::fmt::Display,
    {
        let value = self.parse(name, default)?;
        if value == T::default() {
            return Err(ConfigError {
                variable: name,
                problem: "must be greater than zero".to_owned(),
            });
        }
        Ok(value)
    }

    /// A positive number of milliseconds.
    pub fn millis(&self, name: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.positive(name, default).map(Duration::from_millis)
    }

    /// A comma-separated list of `scheme://host[:port]` origins; in development
    /// the usual local front-end dev servers are allowed when none are given.
    fn origins(
        &self,
        name: &'static str,
        local_defaults: bool,
    ) -> Result<Vec<String>, ConfigError> {
        let Some(raw) = self.optional(name) else {
            return Ok(if local_defaults {
                vec![
                    "http://localhost:3000".to_owned(),
                    "http://localhost:5173".to_owned(),
                ]
            } else {
                Vec::new()
            });
        };
        raw.split(',')
            .map(str::trim)
            .filter(|origin| !origin.is_empty())
            .map(|origin| {
                let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.ends_with('/')
                    && axum::http::HeaderValue::from_str(origin).is_ok();
                if valid {
                    Ok(origin.to_owned())
                } else {
                    Err(ConfigError {
                        variable: name,
                        problem: format!(
                            "{origin:?} is not an origin like https://app.example.com (scheme and host, no trailing slash)"
                        ),
                    })
                }
            })
            .collect()
    }
}
