//! The `tessera` command line: `serve`, `migrate`, `seed`, `openapi`, `docs-assets`, `embed`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};

use crate::app::{self, AppState};
use crate::auth::service::AuthState;
use crate::core::config::{Config, ConfigError};
use crate::core::db::{self, DbError, Migrator};
use crate::core::docs::{self, RedocInstallError};
use crate::core::local_postgres::{LocalPostgres, LocalPostgresError, StartOutcome};
use crate::core::platform::{Components, Lifecycle, Platform};
use crate::core::seed::{SeedContext, SeedError};
use crate::core::{server, telemetry};
use crate::executions::listener::NotificationHub;
use crate::executions::service::ExecutionsState;
use crate::executions::worker::Runner;
use crate::inference::InferenceState;
use crate::inference::engine::{DEFAULT_MODEL_DIR, DeviceChoice, EmbeddingEngine, EngineError};

/// The database the local development cluster serves.
const LOCAL_DATABASE: &str = "tessera";

/// How long startup waits for the database to accept connections.
const DATABASE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

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
        /// The sentence-transformers model directory (`task model-fetch` installs the default).
        #[arg(long, env = "INFERENCE_MODEL_DIR", default_value = DEFAULT_MODEL_DIR)]
        model_dir: PathBuf,
        /// The texts to embed.
        #[arg(required = true)]
        texts: Vec<String>,
    },
}

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
    /// A seeder failed.
    #[error(transparent)]
    Seed(#[from] SeedError),
    /// ReDoc's script could not be installed.
    #[error(transparent)]
    Redoc(#[from] RedocInstallError),
    /// The embedding engine failed to load the model or to embed.
    #[error(transparent)]
    Inference(#[from] EngineError),
    /// Binding the port or serving failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    /// A command-line value is unusable.
    #[error("{0}")]
    Usage(String),
    /// The service could not be set up (keys, hashing).
    #[error("cannot start: {0}")]
    Startup(String),
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
            let spec = serde_json::to_string_pretty(&app::openapi())
                .map_err(|error| CommandError::Usage(error.to_string()))?;
            println!("{spec}");
            Ok(())
        }
        Command::Migrate {
            action: MigrateAction::New { name },
        } => create_migration(Path::new("migrations"), &name),
        Command::DocsAssets => {
            let config = Config::from_env()?;
            let path = docs::install_redoc_bundle(&config.redoc_bundle_path)?;
            println!("ReDoc's script is installed at {}", path.display());
            Ok(())
        }
        Command::Embed {
            device,
            model_dir,
            texts,
        } => embed(device, model_dir, texts).await,
        Command::Serve => serve(load_config()?).await,
        Command::Worker => {
            with_database(load_config()?, |config, url| async move {
                work(config, &url).await
            })
            .await
        }
        Command::DatabaseUrl => {
            let config = load_config()?;
            // The URL is printed for the caller's own use; the cluster keeps running for it.
            let database = open_database(&config).await?;
            println!("{}", database.url);
            Ok(())
        }
        Command::Migrate { action } => {
            with_database(load_config()?, |config, url| async move {
                migrate(&url, action).await.map(|()| drop(config))
            })
            .await
        }
        Command::Seed { names } => {
            with_database(load_config()?, |config, url| async move {
                seed(config, &url, &names).await
            })
            .await
        }
    }
}

fn load_config() -> Result<Arc<Config>, CommandError> {
    let config = Config::from_env()?;
    telemetry::init(config.log_format);
    Ok(Arc::new(config))
}

/// The database to use, and the local cluster behind it when we started one.
struct Database {
    url: String,
    started_locally: Option<LocalPostgres>,
}

/// Uses `DATABASE_URL`, or in development starts (or reuses) the local cluster.
async fn open_database(config: &Config) -> Result<Database, CommandError> {
    if let Some(url) = &config.database.url {
        db::wait_until_reachable(url, DATABASE_PATIENCE).await?;
        return Ok(Database {
            url: url.clone(),
            started_locally: None,
        });
    }
    let local_dir = config.database.local_dir.clone();
    let (cluster, outcome) = tokio::task::spawn_blocking(move || {
        let cluster = LocalPostgres::discover(&local_dir)?;
        let outcome = cluster.start(&[])?;
        Ok::<_, LocalPostgresError>((cluster, outcome))
    })
    .await
    .map_err(|error| CommandError::Usage(error.to_string()))??;
    tracing::info!(
        data_dir = %cluster.data_dir().display(),
        reused = outcome == StartOutcome::AlreadyRunning,
        "using the local PostgreSQL cluster"
    );
    db::create_database_if_missing(&cluster.database_url("postgres"), LOCAL_DATABASE).await?;
    Ok(Database {
        url: cluster.database_url(LOCAL_DATABASE),
        started_locally: (outcome == StartOutcome::Started).then_some(cluster),
    })
}

/// Stops the local cluster if this process started it.
async fn close_database(database: Database) {
    if let Some(cluster) = database.started_locally {
        match tokio::task::spawn_blocking(move || cluster.stop()).await {
            Ok(Ok(())) => tracing::info!("stopped the local PostgreSQL cluster"),
            Ok(Err(error)) => {
                tracing::error!(%error, "could not stop the local PostgreSQL cluster")
            }
            Err(error) => tracing::error!(%error, "could not stop the local PostgreSQL cluster"),
        }
    }
}

/// Runs `work` against the configured database, then closes it.
async fn with_database<F, Fut>(config: Arc<Config>, work: F) -> Result<(), CommandError>
where
    F: FnOnce(Arc<Config>, String) -> Fut,
    Fut: Future<Output = Result<(), CommandError>>,
{
    let database = open_database(&config).await?;
    let result = work(config, database.url.clone()).await;
    close_database(database).await;
    result
}

async fn serve(config: Arc<Config>) -> Result<(), CommandError> {
    let database = open_database(&config).await?;
    let result = serve_with(config, &database.url).await;
    close_database(database).await;
    result
}

async fn serve_with(config: Arc<Config>, url: &str) -> Result<(), CommandError> {
    if config.migrate_on_startup {
        migrate(url, MigrateAction::Up).await?;
    }
    let pool = db::build_pool(url, &config.database)?;
    let auth = AuthState::new(&config.auth).map_err(CommandError::Startup)?;
    if config.seed_on_startup {
        seed_with_pool(config.clone(), pool.clone(), &auth, &[]).await?;
    }
    let lifecycle = Arc::new(Lifecycle::default());
    let components = Arc::new(Components::default());
    let inference = InferenceState::load_in_background(&config.inference, components.clone());
    let hub = NotificationHub::start(url.to_owned());
    let executions = ExecutionsState {
        registry: Arc::new(app::kinds(&inference)),
        hub: hub.clone(),
    };
    let shutdown = server::shutdown_on_signal();
    let workers = has_workers(&config).then(|| {
        let runner = Runner::new(
            pool.clone(),
            executions.registry.clone(),
            executions.hub.clone(),
            config.workers.clone(),
        );
        tokio::spawn(runner.run(shutdown.clone()))
    });
    let state = AppState {
        platform: Platform {
            pool: pool.clone(),
            config: config.clone(),
            lifecycle: lifecycle.clone(),
            components,
        },
        auth,
        executions,
        inference,
    };
    let router = app::build_router(state, redoc_bundle(&config));
    let listener = server::bind((config.http.host, config.http.port).into()).await?;
    let address = listener.local_addr()?;
    let shown = if address.ip().is_unspecified() {
        format!("localhost:{}", address.port())
    } else {
        address.to_string()
    };
    tracing::info!(%address, "listening");
    println!("Tessera is listening on http://{shown} (API docs: http://{shown}/docs)");
    server::serve(
        listener,
        router,
        lifecycle,
        config.http.shutdown_grace,
        shutdown,
    )
    .await?;
    if let Some(workers) = workers {
        // Workers drain on the same signal; wait for them to hand work back.
        let _ = workers.await;
    }
    hub.stop();
    pool.close();
    tracing::info!("stopped");
    Ok(())
}

/// Whether any queue has workers configured.
fn has_workers(config: &Config) -> bool {
    config.workers.default_concurrency > 0
        || config.workers.queue_concurrency.values().any(|n| *n > 0)
}

/// `tessera worker`: runs the workers until SIGINT/SIGTERM, then drains.
async fn work(config: Arc<Config>, url: &str) -> Result<(), CommandError> {
    if !has_workers(&config) {
        return Err(CommandError::Usage(
            "WORKER_CONCURRENCY is 0 and no queue has workers: nothing to run".to_owned(),
        ));
    }
    let pool = db::build_pool(url, &config.database)?;
    let hub = NotificationHub::start(url.to_owned());
    // The worker has no /ready; the engine's state reaches its log only.
    let inference =
        InferenceState::load_in_background(&config.inference, Arc::new(Components::default()));
    let runner = Runner::new(
        pool.clone(),
        Arc::new(app::kinds(&inference)),
        hub,
        config.workers.clone(),
    );
    println!(
        "Tessera worker {} is running (Ctrl-C to stop)",
        runner.worker_id()
    );
    runner.run(server::shutdown_on_signal()).await;
    pool.close();
    tracing::info!("worker stopped");
    Ok(())
}

/// The ReDoc script; in development it is installed on first use.
fn redoc_bundle(config: &Config) -> Option<axum::body::Bytes> {
    let path: PathBuf = config.redoc_bundle_path.clone();
    if config.is_development()
        && !path.is_file()
        && let Err(error) = docs::install_redoc_bundle(&path)
    {
        tracing::warn!(%error, "/redoc is unavailable until ReDoc's script is installed");
    }
    docs::load_redoc_bundle(&path)
}

async fn migrate(url: &str, action: MigrateAction) -> Result<(), CommandError> {
    let mut migrator = Migrator::connect(url).await?;
    match action {
        MigrateAction::Up => report("applied", &migrator.run_pending()?),
        MigrateAction::Down { count } => report("reverted", &migrator.revert(count)?),
        MigrateAction::Reset => {
            let all = db::embedded_migrations()?.len();
            report("reverted", &migrator.revert(all)?);
            report("applied", &migrator.run_pending()?);
        }
        MigrateAction::Redo { count } => {
            report("reverted", &migrator.revert(count)?);
            report("applied", &migrator.run_pending()?);
        }
        MigrateAction::Status => {
            for migration in migrator.status()? {
                let mark = if migration.applied {
                    "applied"
                } else {
                    "pending"
                };
                println!("{mark:8} {}", migration.name);
            }
        }
        MigrateAction::New { name } => create_migration(Path::new("migrations"), &name)?,
    }
    Ok(())
}

fn report(verb: &str, names: &[String]) {
    if names.is_empty() {
        println!("nothing {verb}");
    }
    for name in names {
        println!("{verb} {name}");
    }
}

async fn seed(config: Arc<Config>, url: &str, names: &[String]) -> Result<(), CommandError> {
    let pool = db::build_pool(url, &config.database)?;
    let auth = AuthState::new(&config.auth).map_err(CommandError::Startup)?;
    let result = seed_with_pool(config, pool.clone(), &auth, names).await;
    pool.close();
    result
}

async fn seed_with_pool(
    config: Arc<Config>,
    pool: db::DbPool,
    auth: &AuthState,
    names: &[String],
) -> Result<(), CommandError> {
    let registry = app::seeders(auth);
    let context = SeedContext { pool, config };
    let outcomes = registry.run(&context, names).await?;
    if outcomes.is_empty() {
        tracing::info!("no seeders to run");
    }
    Ok(())
}

/// How many leading components of each vector `embed` prints.
const EMBED_PREVIEW_VALUES: usize = 5;

/// Loads the model and embeds `texts` off the async runtime, then prints a summary.
async fn embed(
    device: DeviceChoice,
    model_dir: PathBuf,
    texts: Vec<String>,
) -> Result<(), CommandError> {
    tokio::task::spawn_blocking(move || embed_and_print(device, &model_dir, &texts))
        .await
        .map_err(|error| CommandError::Usage(error.to_string()))?
}

fn embed_and_print(
    device: DeviceChoice,
    model_dir: &Path,
    texts: &[String],
) -> Result<(), CommandError> {
    let started = Instant::now();
    let engine = EmbeddingEngine::load(model_dir, device)?;
    let loaded = started.elapsed();
    let started = Instant::now();
    let embeddings = engine.embed(texts)?;
    let took = started.elapsed();
    let info = engine.backend_info();
    println!(
        "model {} on {} ({}, {}, {}; loaded in {:.1} ms), {} dimensions",
        engine.model_dir().display(),
        info.backend,
        info.adapter,
        info.api,
        info.device_type,
        loaded.as_secs_f64() * 1e3,
        engine.dimension()
    );
    for ((text, vector), tokens) in texts
        .iter()
        .zip(&embeddings.vectors)
        .zip(&embeddings.token_counts)
    {
        let preview: Vec<String> = vector
            .iter()
            .take(EMBED_PREVIEW_VALUES)
            .map(|value| format!("{value:.6}"))
            .collect();
        println!("{tokens:4} tokens  [{}, …]  {text:?}", preview.join(", "));
    }
    let total_tokens: usize = embeddings.token_counts.iter().sum();
    println!(
        "embedded {} text(s), {total_tokens} tokens, in {:.2} ms",
        texts.len(),
        took.as_secs_f64() * 1e3
    );
    Ok(())
}

/// Creates `dir/<YYYY-MM-DD-HHMMSS>_<name>/{up,down}.sql`, the layout diesel expects.
fn create_migration(dir: &Path, name: &str) -> Result<(), CommandError> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Err(CommandError::Usage(format!(
            "migration name {name:?} must be snake_case (a-z, 0-9, _)"
        )));
    }
    if !dir.is_dir() {
        return Err(CommandError::Usage(format!(
            "no {} folder here: run this from the repository root",
            dir.display()
        )));
    }
    let stamp = chrono::Utc::now().format("%Y-%m-%d-%H%M%S");
    let folder = dir.join(format!("{stamp}_{name}"));
    std::fs::create_dir(&folder)?;
    std::fs::write(folder.join("up.sql"), format!("-- {name}: apply\n"))?;
    std::fs::write(
        folder.join("down.sql"),
        format!("-- {name}: undo exactly what up.sql does\n"),
    )?;
    println!("created {}", folder.display());
    Ok(())
}
