//! The database: a deadpool pool of diesel-async connections and the embedded migrations.
//!
//! Migrations are compiled into the binary, so a deployed `tessera` needs no
//! migration files and no libpq. The pool is built so that an unreachable
//! database answers within the acquire timeout instead of hanging a request.

use std::time::Duration;

use diesel::migration::{Migration, MigrationSource};
use diesel::pg::Pg;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt;

use crate::core::config::DatabaseConfig;
use crate::shared::error::BoxedError;
use crate::shared::outage;

/// Every migration under `migrations/`, embedded at compile time.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The pool every request and background task draws connections from.
pub type DbPool = Pool<AsyncPgConnection>;

/// A connection borrowed from [`DbPool`].
pub type DbConnection = Object<AsyncPgConnection>;

/// Why the database layer could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The pool could not be built from the configuration.
    #[error("cannot build the database pool: {0}")]
    Build(#[from] deadpool::managed::BuildError),
    /// No connection could be had.
    #[error("cannot connect to the database: {0}")]
    Connect(#[from] diesel::ConnectionError),
    /// A query on the server failed (reading migrations, creating the database).
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// A migration failed to apply, revert or list.
    #[error("migration failed: {0}")]
    Migration(#[source] BoxedError),
    /// A name that cannot be used as a database name.
    #[error("{0:?} is not a plain database name (letters, digits, underscores)")]
    InvalidName(String),
}

/// Builds the pool. Connections are made lazily, so this succeeds while the
/// database is still down; each new connection gets the statement timeout.
pub fn build_pool(url: &str, config: &DatabaseConfig) -> Result<DbPool, DbError> {
    let statement_timeout_ms = config.statement_timeout.as_millis();
    let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
    // No `SELECT 1` on every checkout (it doubled the round trips of a simple
    // read): a connection whose server went away is already marked closed by
    // its driver task and is discarded at checkout; one that breaks mid-query
    // fails that query with a 503 and is discarded then.
    manager_config.recycling_method = RecyclingMethod::Fast;
    manager_config.custom_setup = Box::new(move |url| {
        async move {
            let mut conn = AsyncPgConnection::establish(url).await?;
            diesel::sql_query(
                "SELECT set_config('statement_timeout', $1, false), \
                        set_config('application_name', 'tessera', false)",
            )
            .bind::<diesel::sql_types::Text, _>(format!("{statement_timeout_ms}ms"))
            .execute(&mut conn)
            .await
            .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            outage::database_up();
            Ok(conn)
        }
        .boxed()
    });
    let manager = AsyncDieselConnectionManager::new_with_config(url, manager_config);
    Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(config.acquire_timeout))
        .create_timeout(Some(config.acquire_timeout))
        .recycle_timeout(Some(config.acquire_timeout))
        .build()
        .map_err(DbError::from)
}

/// One migration and whether it has been applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    /// The migration's version and name, e.g. `00000000000000_diesel_initial_setup`.
    pub name: String,
    /// Whether the database has it.
    pub applied: bool,
}

/// Runs migrations on one dedicated connection (not the pool, so that a long
/// migration never holds a request's connection).
///
/// Diesel's migration harness is synchronous; diesel-async bridges it with
/// `block_in_place`, which needs the multi-threaded tokio runtime.
pub struct Migrator {
    harness: AsyncMigrationHarness<AsyncPgConnection>,
}

impl Migrator {
    /// Connects to `url` for migrating.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        let conn = AsyncPgConnection::establish(url)
            .await
            .map_err(DbError::from)?;
        Ok(Self {
            harness: AsyncMigrationHarness::new(conn),
        })
    }

    /// Applies every pending migration; returns the names applied.
    pub fn run_pending(&mut self) -> Result<Vec<String>, DbError> {
        let applied = self
            .harness
            .run_pending_migrations(MIGRATIONS)
            .map_err(DbError::Migration)?;
        names_of(applied.iter().map(ToString::to_string))
    }

    /// Reverts the last `count` applied migrations; returns the names reverted.
    pub fn revert(&mut self, count: usize) -> Result<Vec<String>, DbError> {
        let mut reverted = Vec::with_capacity(count);
        for _ in 0..count {
            if self.applied_versions()?.is_empty() {
                break;
            }
            let version = self
                .harness
                .revert_last_migration(MIGRATIONS)
                .map_err(DbError::Migration)?;
            reverted.push(version.to_string());
        }
        names_of(reverted)
    }

    /// Every embedded migration, oldest first, with whether it is applied.
    pub fn status(&mut self) -> Result<Vec<MigrationStatus>, DbError> {
        let applied = self.applied_versions()?;
        Ok(embedded_migrations()?
            .into_iter()
            .map(|migration| MigrationStatus {
                applied: applied.contains(&migration.version),
                name: migration.name,
            })
            .collect())
    }

    fn applied_versions(&mut self) -> Result<Vec<String>, DbError> {
        let versions = self
            .harness
            .applied_migrations()
            .map_err(DbError::Migration)?;
        Ok(versions.iter().map(ToString::to_string).collect())
    }
}

/// The folder names of the migrations with these versions.
fn names_of(versions: impl IntoIterator<Item = String>) -> Result<Vec<String>, DbError> {
    let known = embedded_migrations()?;
    Ok(versions
        .into_iter()
        .map(|version| {
            known
                .iter()
                .find(|migration| migration.version == version)
                .map_or(version, |migration| migration.name.clone())
        })
        .collect())
}

/// An embedded migration's identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EmbeddedMigration {
    /// The version diesel records once it is applied (the digits of the folder's date).
    pub version: String,
    /// The folder name: version and description.
    pub name: String,
}

/// The embedded migrations, oldest first.
pub fn embedded_migrations() -> Result<Vec<EmbeddedMigration>, DbError> {
    let migrations: Vec<Box<dyn Migration<Pg>>> =
        MigrationSource::<Pg>::migrations(&MIGRATIONS).map_err(DbError::Migration)?;
    let mut list: Vec<EmbeddedMigration> = migrations
        .iter()
        .map(|migration| EmbeddedMigration {
            version: migration.name().version().to_string(),
            name: migration.name().to_string(),
        })
        .collect();
    list.sort();
    Ok(list)
}

/// How many embedded migrations the database behind `conn` has not applied yet.
/// Used by `/ready`: a replica must not serve a schema it does not know.
pub async fn pending_migration_count(conn: &mut AsyncPgConnection) -> Result<usize, DbError> {
    use diesel::sql_types::Text;

    #[derive(diesel::QueryableByName)]
    struct Version {
        #[diesel(sql_type = Text)]
        version: String,
    }

    let applied: Vec<Version> = diesel::sql_query("SELECT version FROM __diesel_schema_migrations")
        .load(conn)
        .await?;
    let pending = embedded_migrations()?
        .into_iter()
        .filter(|migration| !applied.iter().any(|row| row.version == migration.version))
        .count();
    Ok(pending)
}

/// Waits until a connection to `url` succeeds, up to `patience`.
///
/// Used at startup, where the database may still be starting (a local cluster,
/// or a container started alongside the service).
pub async fn wait_until_reachable(url: &str, patience: Duration) -> Result<(), DbError> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match AsyncPgConnection::establish(url).await {
            Ok(_) => return Ok(()),
            Err(error) if tokio::time::Instant::now() >= deadline => {
                return Err(DbError::Connect(error));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Creates database `name` on the server at `admin_url` unless it exists.
///
/// `name` must be a plain identifier (letters, digits, underscores); it is
/// interpolated into `CREATE DATABASE`, which takes no bind parameters.
pub async fn create_database_if_missing(admin_url: &str, name: &str) -> Result<(), DbError> {
    use diesel::sql_types::Text;

    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(DbError::InvalidName(name.to_owned()));
    }
    let mut conn = AsyncPgConnection::establish(admin_url)
        .await
        .map_err(DbError::from)?;
    let exists: i64 = diesel::dsl::select(
        diesel::dsl::sql::<diesel::sql_types::BigInt>("count(*) FROM pg_database WHERE datname = ")
            .bind::<Text, _>(name),
    )
    .get_result(&mut conn)
    .await
    .map_err(DbError::from)?;
    if exists == 0 {
        diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .map_err(DbError::from)?;
    }
    Ok(())
}
