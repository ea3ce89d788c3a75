//! Seeding: a registry of named seeders, each idempotent, run in order.
//!
//! A domain contributes a seeder (auth seeds the first admin);
//! `app.rs` registers them; `tessera seed [NAME…]` and, when configured, `serve`
//! run them. Idempotent means running a seeder twice changes nothing the
//! second time, so seeding at every startup is safe.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::core::config::PlatformConfig;
use crate::core::db::DbPool;
use crate::shared::error::{AppError, ErrorChain};

/// What a seeder may use.
#[derive(Clone)]
pub struct SeedContext {
    /// The database.
    pub pool: DbPool,
    /// The platform's configuration (e.g. whether this is development).
    pub config: Arc<PlatformConfig>,
}

/// What one run of a seeder did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedOutcome {
    /// It wrote something; the message says what.
    Applied(String),
    /// Everything was already there; nothing changed.
    Unchanged,
}

/// One idempotent seeding step.
pub trait Seeder: Send + Sync {
    /// The name used by `tessera seed NAME`.
    fn name(&self) -> &'static str;

    /// Runs the step; running it again must change nothing.
    fn run<'a>(&'a self, context: &'a SeedContext) -> BoxFuture<'a, Result<SeedOutcome, AppError>>;
}

/// Why seeding stopped.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// A name on the command line matches no seeder.
    #[error("no seeder is named {name:?} (known: {known})")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The registered names.
        known: String,
    },
    /// A seeder failed. The whole chain is shown: a seeder's reasons (a bad
    /// `FIRST_ADMIN_PASSWORD`) are for the operator, not hidden like a client's 500.
    #[error("seeder {name} failed: {}", ErrorChain(source))]
    Failed {
        /// The seeder's name.
        name: &'static str,
        /// Its error.
        source: AppError,
    },
}

/// The seeders, in the order they run.
#[derive(Default)]
pub struct SeedRegistry {
    seeders: Vec<Box<dyn Seeder>>,
}

impl SeedRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a seeder after those already registered.
    #[must_use]
    pub fn register(mut self, seeder: impl Seeder + 'static) -> Self {
        self.seeders.push(Box::new(seeder));
        self
    }

    /// The registered names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.seeders.iter().map(|seeder| seeder.name()).collect()
    }

    /// Runs the seeders named in `only` (all of them when it is empty), in
    /// registration order. Unknown names are refused before anything runs.
    pub async fn run(
        &self,
        context: &SeedContext,
        only: &[String],
    ) -> Result<Vec<(&'static str, SeedOutcome)>, SeedError> {
        if let Some(unknown) = only
            .iter()
            .find(|name| !self.names().contains(&name.as_str()))
        {
            return Err(SeedError::Unknown {
                name: unknown.clone(),
                known: self.names().join(", "),
            });
        }
        let mut outcomes = Vec::new();
        for seeder in &self.seeders {
            if !only.is_empty() && !only.iter().any(|name| name == seeder.name()) {
                continue;
            }
            let outcome = seeder
                .run(context)
                .await
                .map_err(|source| SeedError::Failed {
                    name: seeder.name(),
                    source,
                })?;
            tracing::info!(seeder = seeder.name(), ?outcome, "seeded");
            outcomes.push((seeder.name(), outcome));
        }
        Ok(outcomes)
    }
}
