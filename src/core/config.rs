//! Typed configuration, read once from the environment (and an optional `.env`).
//!
//! Every variable is parsed and checked here, at startup, so nothing deeper ever
//! holds an invalid value; a bad value stops the process with one line that names
//! the variable and what is wrong with it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::inference::engine::{DEFAULT_MODEL_DIR, DeviceChoice};

/// The development default of `JWT_SECRET`; production refuses to start with it.
pub const DEVELOPMENT_JWT_SECRET: &str = "development-only-secret-do-not-use-in-production!";

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
    pub url: Option<String>,
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
}

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
        f.write_str("[redacted]")
    }
}

/// How access tokens are signed.
#[derive(Debug, Clone)]
pub enum JwtKeys {
    /// HS256 with a shared secret of at least 32 bytes (`JWT_SECRET`).
    Secret(Secret),
    /// EdDSA (Ed25519) with a PEM key pair read from files at startup.
    Ed25519 {
        /// `JWT_PRIVATE_KEY_FILE`'s contents.
        private_pem: Secret,
        /// `JWT_PUBLIC_KEY_FILE`'s contents.
        public_pem: Vec<u8>,
    },
}

/// Users and authentication settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Signing keys.
    pub jwt_keys: JwtKeys,
    /// `iss` of access tokens.
    pub jwt_issuer: String,
    /// `aud` of access tokens.
    pub jwt_audience: String,
    /// Access token lifetime.
    pub access_token_ttl: Duration,
    /// Refresh token lifetime.
    pub refresh_token_ttl: Duration,
    /// Whether anyone may sign up (admins can always create accounts).
    pub allow_signup: bool,
    /// Failed logins allowed per account and per client within the window.
    pub max_failed_logins: u32,
    /// The window failed logins are counted in.
    pub failed_login_window: Duration,
    /// Password hashes computed at once (defaults to the number of cores).
    pub password_hash_concurrency: usize,
    /// Requests allowed to wait for a hashing slot; more get 503.
    pub password_hash_queue: usize,
    /// Take the client address from `X-Forwarded-For` (only behind a proxy you trust).
    pub trust_forwarded_for: bool,
    /// The first admin's email, for `tessera seed`.
    pub first_admin_email: Option<String>,
    /// The first admin's password; unset in development means "generate one".
    pub first_admin_password: Option<Secret>,
}

/// Background execution workers.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs run at once per queue (`WORKER_CONCURRENCY`); 0 in `serve` means no in-process workers.
    pub default_concurrency: usize,
    /// Per-queue overrides (`WORKER_QUEUE_CONCURRENCY=default=8,inference=1`).
    pub queue_concurrency: std::collections::BTreeMap<String, usize>,
    /// How long a claim holds without a heartbeat.
    pub lease: Duration,
    /// How often a running job renews its lease.
    pub heartbeat: Duration,
    /// How often idle workers look for work when no notification arrives.
    pub poll_interval: Duration,
    /// Most executions claimed in one statement.
    pub claim_batch: usize,
    /// How long shutdown lets running jobs finish before handing them back.
    pub shutdown_grace: Duration,
    /// First retry delay; doubles each attempt.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// How long finished executions are kept.
    pub retention: Duration,
}

impl WorkerConfig {
    /// Jobs run at once on `queue`.
    pub fn concurrency_of(&self, queue: &str) -> usize {
        self.queue_concurrency
            .get(queue)
            .copied()
            .unwrap_or(self.default_concurrency)
    }
}

/// The whole configuration of the service.
#[derive(Debug, Clone)]
pub struct Config {
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
    /// Users and authentication.
    pub auth: AuthConfig,
    /// Background execution workers.
    pub workers: WorkerConfig,
    /// Where the ReDoc script is read from (it is served, never loaded from a CDN).
    pub redoc_bundle_path: PathBuf,
    /// The embedding engine.
    pub inference: InferenceConfig,
}

/// Embedding engine and inference API settings. The device type comes from the
/// engine itself, a self-contained library that knows nothing of the platform.
#[derive(Debug, Clone)]
pub struct InferenceConfig {
    /// `INFERENCE_DEVICE`: `auto`, `gpu` or `cpu`.
    pub device: DeviceChoice,
    /// `INFERENCE_MODEL_DIR`: the sentence-transformers model directory.
    pub model_dir: PathBuf,
    /// `INFERENCE_BATCH_MAX_TOKENS`: most tokens in one engine call.
    pub batch_max_tokens: usize,
    /// `INFERENCE_BATCH_MAX_WAIT_MS`: longest a request waits for others to share its batch.
    pub batch_max_wait: Duration,
    /// `INFERENCE_QUEUE_CAPACITY`: most requests waiting for the engine; more get 429.
    pub queue_capacity: usize,
    /// `INFERENCE_MAX_INPUTS`: most inputs in one embeddings request (OpenAI's limit).
    pub max_inputs: usize,
    /// `INFERENCE_TRUNCATE`: cut over-long inputs instead of refusing them, when a
    /// request does not say.
    pub truncate: bool,
    /// `INFERENCE_RATE_LIMIT_PER_MINUTE`: requests per user per minute on each
    /// replica; 0 turns the limit off.
    pub rate_limit_per_minute: u32,
    /// `INFERENCE_BATCH_JOB_MAX_TEXTS`: most texts in one `embed_texts` execution.
    pub batch_job_max_texts: usize,
}

impl Default for InferenceConfig {
    /// The documented defaults (`.env.example`).
    fn default() -> Self {
        Self {
            device: DeviceChoice::Auto,
            model_dir: PathBuf::from(DEFAULT_MODEL_DIR),
            batch_max_tokens: 8192,
            batch_max_wait: Duration::ZERO,
            queue_capacity: 256,
            max_inputs: 2048,
            truncate: false,
            rate_limit_per_minute: 1200,
            batch_job_max_texts: 100_000,
        }
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, so tests can supply variables
    /// without touching the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars { lookup: &lookup };
        let env: AppEnv = vars.parse("APP_ENV", AppEnv::Development)?;
        let is_production = env == AppEnv::Production;
        let default_host: IpAddr = if is_production {
            IpAddr::from([0, 0, 0, 0])
        } else {
            IpAddr::from([127, 0, 0, 1])
        };
        let default_log = if is_production {
            LogFormat::Json
        } else {
            LogFormat::Pretty
        };
        let config = Self {
            env,
            log_format: vars.parse("LOG_FORMAT", default_log)?,
            http: HttpConfig {
                host: vars.parse("HOST", default_host)?,
                port: vars.parse("PORT", 8000)?,
                request_timeout: vars.millis("REQUEST_TIMEOUT_MS", 30_000)?,
                body_limit_bytes: vars.positive("REQUEST_BODY_LIMIT_BYTES", 1024 * 1024)?,
                max_in_flight: vars.positive("MAX_IN_FLIGHT_REQUESTS", 512)?,
                cors_allowed_origins: vars.origins("CORS_ALLOWED_ORIGINS", !is_production)?,
                shutdown_grace: vars.millis("SHUTDOWN_GRACE_MS", 10_000)?,
            },
            database: DatabaseConfig {
                url: vars.optional("DATABASE_URL"),
                pool_size: vars.positive("DATABASE_POOL_SIZE", 16)?,
                acquire_timeout: vars.millis("DATABASE_ACQUIRE_TIMEOUT_MS", 3_000)?,
                statement_timeout: vars.millis("DATABASE_STATEMENT_TIMEOUT_MS", 15_000)?,
                local_dir: vars.parse("LOCAL_POSTGRES_DIR", PathBuf::from(".data/postgres"))?,
            },
            migrate_on_startup: vars.parse("MIGRATE_ON_STARTUP", !is_production)?,
            seed_on_startup: vars.parse("SEED_ON_STARTUP", env == AppEnv::Development)?,
            auth: AuthConfig {
                jwt_keys: jwt_keys(&vars, env)?,
                jwt_issuer: vars
                    .optional("JWT_ISSUER")
                    .unwrap_or_else(|| "tessera".to_owned()),
                jwt_audience: vars
                    .optional("JWT_AUDIENCE")
                    .unwrap_or_else(|| "tessera-api".to_owned()),
                access_token_ttl: Duration::from_secs(
                    vars.positive("ACCESS_TOKEN_TTL_SECONDS", 900)?,
                ),
                refresh_token_ttl: Duration::from_secs(
                    86_400 * vars.positive("REFRESH_TOKEN_TTL_DAYS", 30)?,
                ),
                allow_signup: vars.parse("ALLOW_SIGNUP", true)?,
                max_failed_logins: u32::try_from(vars.positive("MAX_FAILED_LOGINS", 5)?)
                    .unwrap_or(u32::MAX),
                failed_login_window: Duration::from_secs(
                    vars.positive("FAILED_LOGIN_WINDOW_SECONDS", 900)?,
                ),
                password_hash_concurrency: vars.positive(
                    "PASSWORD_HASH_CONCURRENCY",
                    std::thread::available_parallelism().map_or(2, usize::from),
                )?,
                password_hash_queue: vars.parse("PASSWORD_HASH_QUEUE", 64)?,
                trust_forwarded_for: vars.parse("TRUST_FORWARDED_FOR", false)?,
                first_admin_email: vars.optional("FIRST_ADMIN_EMAIL"),
                first_admin_password: vars.optional("FIRST_ADMIN_PASSWORD").map(Secret::new),
            },
            workers: worker_config(&vars)?,
            redoc_bundle_path: vars.parse(
                "REDOC_BUNDLE_PATH",
                PathBuf::from(".data/redoc/redoc.standalone.js"),
            )?,
            inference: inference_config(&vars)?,
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

/// The signing keys: `JWT_ALGORITHM=HS256` (default) takes `JWT_SECRET`;
/// `EdDSA` reads `JWT_PRIVATE_KEY_FILE` and `JWT_PUBLIC_KEY_FILE`.
fn jwt_keys(vars: &Vars<'_>, env: AppEnv) -> Result<JwtKeys, ConfigError> {
    match vars.optional("JWT_ALGORITHM").as_deref().unwrap_or("HS256") {
        "HS256" => {
            let secret = vars
                .optional("JWT_SECRET")
                .unwrap_or_else(|| DEVELOPMENT_JWT_SECRET.to_owned());
            if secret.len() < 32 {
                return Err(ConfigError {
                    variable: "JWT_SECRET",
                    problem: "must be at least 32 bytes long".to_owned(),
                });
            }
            if env == AppEnv::Production && secret == DEVELOPMENT_JWT_SECRET {
                return Err(ConfigError {
                    variable: "JWT_SECRET",
                    problem: "must be set to a secret of your own in production".to_owned(),
                });
            }
            Ok(JwtKeys::Secret(Secret::new(secret)))
        }
        "EdDSA" => {
            let read = |variable: &'static str| {
                let path = vars.optional(variable).ok_or(ConfigError {
                    variable,
                    problem: "is required when JWT_ALGORITHM is EdDSA".to_owned(),
                })?;
                std::fs::read(&path).map_err(|error| ConfigError {
                    variable,
                    problem: format!("cannot read {path}: {error}"),
                })
            };
            let private_pem =
                String::from_utf8(read("JWT_PRIVATE_KEY_FILE")?).map_err(|_| ConfigError {
                    variable: "JWT_PRIVATE_KEY_FILE",
                    problem: "is not a PEM text file".to_owned(),
                })?;
            Ok(JwtKeys::Ed25519 {
                private_pem: Secret::new(private_pem),
                public_pem: read("JWT_PUBLIC_KEY_FILE")?,
            })
        }
        other => Err(ConfigError {
            variable: "JWT_ALGORITHM",
            problem: format!("must be HS256 or EdDSA (got {other:?})"),
        }),
    }
}

fn worker_config(vars: &Vars<'_>) -> Result<WorkerConfig, ConfigError> {
    let lease = vars.millis("EXECUTION_LEASE_MS", 30_000)?;
    let default_heartbeat = u64::try_from((lease / 3).as_millis())
        .unwrap_or(10_000)
        .max(1);
    let shutdown_grace = vars.millis("SHUTDOWN_GRACE_MS", 10_000)?;
    let heartbeat = vars.millis("EXECUTION_HEARTBEAT_MS", default_heartbeat)?;
    if heartbeat >= lease {
        return Err(ConfigError {
            variable: "EXECUTION_HEARTBEAT_MS",
            problem: "must be shorter than EXECUTION_LEASE_MS, or every lease would lapse"
                .to_owned(),
        });
    }
    Ok(WorkerConfig {
        default_concurrency: vars.parse("WORKER_CONCURRENCY", 4)?,
        queue_concurrency: queue_concurrency(vars)?,
        lease,
        heartbeat,
        poll_interval: vars.millis("WORKER_POLL_INTERVAL_MS", 1_000)?,
        claim_batch: vars.positive("WORKER_CLAIM_BATCH", 32)?,
        shutdown_grace: vars
            .optional("WORKER_SHUTDOWN_GRACE_MS")
            .map_or(Ok(shutdown_grace), |_| {
                vars.millis("WORKER_SHUTDOWN_GRACE_MS", 10_000)
            })?,
        retry_base: vars.millis("EXECUTION_RETRY_BASE_MS", 1_000)?,
        retry_max: vars.millis("EXECUTION_RETRY_MAX_MS", 300_000)?,
        retention: Duration::from_secs(3_600 * vars.positive("EXECUTION_RETENTION_HOURS", 168)?),
    })
}

/// `WORKER_QUEUE_CONCURRENCY=queue=N,other=M`.
fn queue_concurrency(
    vars: &Vars<'_>,
) -> Result<std::collections::BTreeMap<String, usize>, ConfigError> {
    let Some(raw) = vars.optional("WORKER_QUEUE_CONCURRENCY") else {
        return Ok(std::collections::BTreeMap::new());
    };
    raw.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .and_then(|(queue, count)| {
                    Some((queue.trim().to_owned(), count.trim().parse().ok()?))
                })
                .filter(|(queue, _)| !queue.is_empty())
                .ok_or(ConfigError {
                    variable: "WORKER_QUEUE_CONCURRENCY",
                    problem: format!("{pair:?} is not queue=count"),
                })
        })
        .collect()
}

fn inference_config(vars: &Vars<'_>) -> Result<InferenceConfig, ConfigError> {
    let defaults = InferenceConfig::default();
    Ok(InferenceConfig {
        device: vars.parse("INFERENCE_DEVICE", defaults.device)?,
        model_dir: vars.parse("INFERENCE_MODEL_DIR", defaults.model_dir)?,
        batch_max_tokens: vars.positive("INFERENCE_BATCH_MAX_TOKENS", defaults.batch_max_tokens)?,
        batch_max_wait: Duration::from_millis(vars.parse(
            "INFERENCE_BATCH_MAX_WAIT_MS",
            defaults.batch_max_wait.as_millis() as u64,
        )?),
        queue_capacity: vars.positive("INFERENCE_QUEUE_CAPACITY", defaults.queue_capacity)?,
        max_inputs: vars.positive("INFERENCE_MAX_INPUTS", defaults.max_inputs)?,
        truncate: vars.parse("INFERENCE_TRUNCATE", defaults.truncate)?,
        rate_limit_per_minute: vars.parse(
            "INFERENCE_RATE_LIMIT_PER_MINUTE",
            defaults.rate_limit_per_minute,
        )?,
        batch_job_max_texts: vars.positive(
            "INFERENCE_BATCH_JOB_MAX_TEXTS",
            defaults.batch_job_max_texts,
        )?,
    })
}

/// Typed access to environment variables, each failure naming its variable.
struct Vars<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Vars<'_> {
    /// The variable's value, or `None` when it is unset or blank.
    fn optional(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    }

    fn parse<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
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
    fn positive<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
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
    fn millis(&self, name: &'static str, default: u64) -> Result<Duration, ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_suit_development() {
        let config = config(&[]).expect("the test's own setup is valid");
        assert_eq!(config.env, AppEnv::Development);
        assert_eq!(config.http.port, 8000);
        assert_eq!(config.http.host.to_string(), "127.0.0.1");
        assert!(config.seed_on_startup);
        assert!(config.database.url.is_none());
        assert_eq!(config.log_format, LogFormat::Pretty);
    }

    #[test]
    fn bad_values_name_their_variable() {
        let error = config(&[("PORT", "eighty")]).unwrap_err();
        assert_eq!(error.variable, "PORT");
        assert!(
            error
                .to_string()
                .starts_with("invalid configuration: PORT: ")
        );
        assert_eq!(
            config(&[("APP_ENV", "staging")]).unwrap_err().variable,
            "APP_ENV"
        );
        assert_eq!(
            config(&[("DATABASE_POOL_SIZE", "0")]).unwrap_err().variable,
            "DATABASE_POOL_SIZE"
        );
        assert_eq!(
            config(&[("REQUEST_TIMEOUT_MS", "-5")])
                .unwrap_err()
                .variable,
            "REQUEST_TIMEOUT_MS"
        );
        assert_eq!(
            config(&[("SEED_ON_STARTUP", "yes")]).unwrap_err().variable,
            "SEED_ON_STARTUP"
        );
        assert_eq!(
            config(&[("CORS_ALLOWED_ORIGINS", "example.com")])
                .unwrap_err()
                .variable,
            "CORS_ALLOWED_ORIGINS"
        );
        assert_eq!(
            config(&[("JWT_SECRET", "short")]).unwrap_err().variable,
            "JWT_SECRET"
        );
    }

    #[test]
    fn production_refuses_default_or_missing_secrets() {
        let url = ("DATABASE_URL", "postgres://db/tessera");
        let missing = config(&[("APP_ENV", "production"), url]).unwrap_err();
        assert_eq!(missing.variable, "JWT_SECRET");
        let default = config(&[
            ("APP_ENV", "production"),
            url,
            ("JWT_SECRET", DEVELOPMENT_JWT_SECRET),
        ]);
        assert_eq!(default.unwrap_err().variable, "JWT_SECRET");
        let secret = "a-real-production-secret-of-forty-bytes!!";
        let ok = config(&[("APP_ENV", "production"), url, ("JWT_SECRET", secret)])
            .expect("the test's own setup is valid");
        assert_eq!(ok.http.host.to_string(), "0.0.0.0");
        assert_eq!(ok.log_format, LogFormat::Json);
        assert!(!ok.seed_on_startup);
        assert!(ok.http.cors_allowed_origins.is_empty());
    }

    #[test]
    fn production_requires_a_database_url() {
        let secret = ("JWT_SECRET", "a-real-production-secret-of-forty-bytes!!");
        let error = config(&[("APP_ENV", "production"), secret]).unwrap_err();
        assert_eq!(error.variable, "DATABASE_URL");
    }

    #[test]
    fn host_and_port_follow_the_platform_convention() {
        let config = config(&[("HOST", "0.0.0.0"), ("PORT", "8080")])
            .expect("the test's own setup is valid");
        assert_eq!(config.http.host.to_string(), "0.0.0.0");
        assert_eq!(config.http.port, 8080);
    }
}
