//! The database a command runs against: `DATABASE_URL`, or in development the
//! private local cluster, started (or reused) for the command and stopped after
//! it if the command started it.

use std::time::Duration;

use super::CommandError;
use crate::core::config::{PlatformConfig, Secret};
use crate::core::db;
use crate::core::local_postgres::{LocalPostgres, LocalPostgresError, StartOutcome};

/// The database the local development cluster serves.
const LOCAL_DATABASE: &str = "tessera";

/// How long startup waits for the database to accept connections.
const DATABASE_PATIENCE: Duration = Duration::from_secs(30);

/// The database to use, and the local cluster behind it when we started one.
pub(super) struct Database {
    /// Where to connect.
    pub(super) url: String,
    started_locally: Option<LocalPostgres>,
}

/// Uses `DATABASE_URL`, or in development starts (or reuses) the local cluster.
pub(super) async fn open_database(config: &PlatformConfig) -> Result<Database, CommandError> {
    if let Some(url) = config.database.url.as_ref().map(Secret::expose) {
        db::wait_until_reachable(url, DATABASE_PATIENCE).await?;
        return Ok(Database {
            url: url.to_owned(),
            started_locally: None,
        });
    }
    let local_dir = config.database.local_dir.clone();
    let (cluster, outcome) = tokio::task::spawn_blocking(move || {
        let cluster = LocalPostgres::discover(&local_dir)?;
        let outcome = cluster.start(&[])?;
        Ok::<_, LocalPostgresError>((cluster, outcome))
    })
    .await??;
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
pub(super) async fn close_database(database: Database) {
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
pub(super) async fn with_database<F, Fut>(
    config: &PlatformConfig,
    work: F,
) -> Result<(), CommandError>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<(), CommandError>>,
{
    let database = open_database(config).await?;
    let result = work(database.url.clone()).await;
    close_database(database).await;
    result
}
