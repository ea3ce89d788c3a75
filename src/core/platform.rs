//! What the platform hands every request: the pool, the configuration and the
//! process lifecycle. Domains reach it through `FromRef` on the app's state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::core::config::Config;
use crate::core::db::DbPool;

/// The platform's share of the application state.
#[derive(Clone)]
pub struct Platform {
    /// The database pool.
    pub pool: DbPool,
    /// The configuration, read once at startup.
    pub config: Arc<Config>,
    /// Whether the process is shutting down.
    pub lifecycle: Arc<Lifecycle>,
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
