//! What the platform hands every request: the pool, the configuration and the
//! process lifecycle. Domains reach it through `FromRef` on the app's state.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::core::config::PlatformConfig;
use crate::core::db::DbPool;

/// The platform's share of the application state.
#[derive(Clone)]
pub struct Platform {
    /// The database pool.
    pub pool: DbPool,
    /// The platform's configuration, read once at startup.
    pub config: Arc<PlatformConfig>,
    /// Whether the process is shutting down.
    pub lifecycle: Arc<Lifecycle>,
    /// The state of optional components, as `/ready` shows it.
    pub readiness: Arc<ReadinessReports>,
}

/// Optional parts of the service (the embedding engine) report their state here
/// for `/ready`. Their absence disables a feature, not the service, so they never
/// make `/ready` fail; operators read what they report.
#[derive(Debug, Default)]
pub struct ReadinessReports {
    reports: RwLock<BTreeMap<&'static str, serde_json::Value>>,
}

impl ReadinessReports {
    /// Replaces the report of `component`.
    pub fn report(&self, component: &'static str, state: serde_json::Value) {
        self.reports
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(component, state);
    }

    /// Every component's latest report.
    pub fn snapshot(&self) -> BTreeMap<&'static str, serde_json::Value> {
        self.reports
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The process's phase, as `/ready` reports it.
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
}

impl Lifecycle {
    /// Marks the process as shutting down: `/ready` answers 503 from now on, so
    /// load balancers stop sending new traffic while in-flight requests finish.
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
