//! The application factory: [`Application::build`] makes, from the settings and
//! a database URL, everything a process runs — the state, the router and (when
//! configured) the workers. `serve`, `worker` and the test harness all call it,
//! so the tests drive exactly the object production runs.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{AppState, Settings, build_router, kinds, seeders};
use crate::auth;
use crate::auth::access_cache::AccessCache;
use crate::auth::account_mail::AccountMail;
use crate::auth::service::{AuthSetupError, AuthState};
use crate::core::config::PlatformConfig;
use crate::core::db::{self, DbError, DbPool};
use crate::core::platform::Platform;
use crate::core::seed::{SeedContext, SeedError, SeedOutcome};
use crate::core::{docs, server};
use crate::email::kind::SendEmail;
use crate::email::outbox::ExecutionOutbox;
use crate::executions::events::EventStreams;
use crate::executions::queue::{Change, NotificationHub, Runner};
use crate::executions::service::ExecutionsState;
use crate::inference::InferenceState;

/// How often a serving process prunes old sign-in attempts and expired
/// refresh tokens (any replica may; the deletes are idempotent).
const AUTH_PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// Why the application could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The pool could not be built.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Signing keys or password hashing are unusable.
    #[error("cannot start: {0}")]
    Auth(#[from] AuthSetupError),
    /// A seeder failed (startup seeding, or `tessera seed`).
    #[error(transparent)]
    Seed(#[from] SeedError),
    /// The mail transport cannot be built from `SMTP_URL`.
    #[error("cannot start: SMTP_URL: {0}")]
    Email(#[from] lettre::transport::smtp::Error),
}

/// One process's application: the shared state, the HTTP router over it, and
/// the workers when the settings give any queue a worker.
pub struct Application {
    state: AppState,
    router: Router,
    workers: Option<Runner>,
}

impl Application {
    /// Builds the pool, every domain's state, the router and the workers. The
    /// embedding model loads in the background; the notification listener starts.
    pub fn build(settings: Settings, database_url: &str) -> Result<Self, StartupError> {
        let platform = Platform {
            pool: db::build_pool(database_url, &settings.platform.database)?,
            config: settings.platform.clone(),
            lifecycle: Arc::default(),
            readiness: Arc::default(),
        };
        let hub = NotificationHub::start(database_url.to_owned());
        let auth = AuthState::new(&settings.auth)?.with_change_feed(hub.clone());
        tokio::spawn(forget_changed_access(
            hub.access_changes(),
            auth.access_cache.clone(),
        ));
        let inference =
            InferenceState::load_in_background(&settings.inference, platform.readiness.clone());
        let send_email = SendEmail::from_config(settings.email.clone())?;
        let registry = Arc::new(kinds(&inference, send_email));
        let outbox = ExecutionOutbox::new(registry.clone(), settings.email.clone());
        let account_mail = AccountMail::new(settings.account_mail.clone(), Arc::new(outbox));
        let executions = ExecutionsState {
            registry,
            quotas: Arc::new(settings.quotas.clone()),
            streams: EventStreams::start(
                settings.event_streams.clone(),
                platform.pool.clone(),
                hub.clone(),
            ),
            hub,
        };
        let workers = settings.workers.has_workers().then(|| {
            Runner::new(
                platform.pool.clone(),
                executions.registry.clone(),
                executions.hub.clone(),
                settings.workers.clone(),
            )
        });
        let state = AppState {
            platform,
            auth,
            executions,
            account_mail,
            inference,
        };
        let router = build_router(state.clone(), redoc_bundle(&settings));
        Ok(Self {
            state,
            router,
            workers,
        })
    }

    /// The state every request shares.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The router, with every middleware, as `serve` runs it.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The workers' id, when this application has workers.
    pub fn worker_id(&self) -> Option<uuid::Uuid> {
        self.workers.as_ref().map(Runner::worker_id)
    }

    /// Runs the seeders (all, or those named), in order.
    pub async fn seed(&self, only: &[String]) -> Result<Vec<Seeded>, StartupError> {
        let platform = &self.state.platform;
        run_seeders(&platform.pool, &platform.config, &self.state.auth, only).await
    }

    /// Serves HTTP on `listener` (and runs the workers, if any) until
    /// `shutdown`, then drains both and closes the database.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let workers = self
            .workers
            .take()
            .map(|runner| tokio::spawn(runner.run(shutdown.clone())));
        let pruner = tokio::spawn(
            auth::sessions::prune_periodically(
                self.state.platform.pool.clone(),
                self.state.auth.config.clone(),
                AUTH_PRUNE_INTERVAL,
                shutdown.clone(),
            )
            .instrument(tracing::info_span!("auth_pruner")),
        );
        let platform = &self.state.platform;
        let served = server::serve(
            listener,
            self.router.clone(),
            platform.lifecycle.clone(),
            server::ConnectionLimits {
                header_read_timeout: platform.config.http.header_read_timeout,
                max_connections: platform.config.http.max_connections,
            },
            platform.config.http.shutdown_grace,
            shutdown,
        )
        .await;
        if let Some(workers) = workers {
            // Workers drain on the same signal; wait for them to hand work back.
            let _ = workers.await;
        }
        // Idempotent deletes: stopping one mid-run loses nothing.
        pruner.abort();
        self.close().await;
        served
    }

    /// Runs only the workers until `shutdown`, then drains them. Returns
    /// `false` at once when the settings give no queue a worker.
    pub async fn run_workers(mut self, shutdown: CancellationToken) -> bool {
        let Some(runner) = self.workers.take() else {
            return false;
        };
        runner.run(shutdown).await;
        self.close().await;
        true
    }

    /// Stops the notification listener and closes the pool.
    async fn close(self) {
        self.state.executions.hub.stop().await;
        self.state.platform.pool.close();
    }
}

/// Forgets the remembered access checks of every user whose access the
/// database announces changed, and all of them when the listener (re)connects
/// or this task fell behind (notifications may have been missed).
async fn forget_changed_access(mut changes: broadcast::Receiver<Change>, cache: Arc<AccessCache>) {
    loop {
        match changes.recv().await {
            Ok(Change::Of(user)) => cache.forget_user(user),
            Ok(Change::Unknown) | Err(broadcast::error::RecvError::Lagged(_)) => cache.forget_all(),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// What each seeder that ran did.
pub type Seeded = (&'static str, SeedOutcome);

/// `tessera seed`: runs the seeders over a pool of their own, without building
/// the rest of the application (no engine to load, no listener to start).
pub async fn seed_database(
    settings: &Settings,
    database_url: &str,
    only: &[String],
) -> Result<Vec<Seeded>, StartupError> {
    let pool = db::build_pool(database_url, &settings.platform.database)?;
    let auth = AuthState::new(&settings.auth)?;
    let seeded = run_seeders(&pool, &settings.platform, &auth, only).await;
    pool.close();
    seeded
}

async fn run_seeders(
    pool: &DbPool,
    config: &Arc<PlatformConfig>,
    auth: &AuthState,
    only: &[String],
) -> Result<Vec<Seeded>, StartupError> {
    let context = SeedContext {
        pool: pool.clone(),
        config: config.clone(),
    };
    Ok(seeders(auth).run(&context, only).await?)
}

/// The ReDoc script; in development it is installed on first use.
fn redoc_bundle(settings: &Settings) -> Option<Bytes> {
    let config = &settings.platform;
    let path: &Path = &config.redoc_bundle_path;
    if config.is_development()
        && !path.is_file()
        && let Err(error) = docs::install_redoc_bundle(path)
    {
        tracing::warn!(%error, "/redoc is unavailable until ReDoc's script is installed");
    }
    docs::load_redoc_bundle(path)
}
