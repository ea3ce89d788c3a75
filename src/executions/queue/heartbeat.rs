//! Keeping a claim: while a job runs, its lease is extended every heartbeat,
//! and the heartbeat's answer relays what the database knows — a cancellation
//! request (in case its notification was missed) or the loss of the lease.

use std::time::Duration;

use crate::core::db::DbPool;
use crate::executions::context::{StopReason, StopSignal};
use crate::executions::queue::QueueError;
use crate::executions::repository::{self, Claim};

/// How often to beat and how long each beat extends the lease.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lease {
    /// The interval between beats.
    pub(super) heartbeat: Duration,
    /// The lease each beat grants from now.
    pub(super) length: Duration,
}

/// Extends the lease every heartbeat until aborted (when the job ends) or the
/// lease is lost; stops the job when it is cancelled or the lease is lost.
pub(super) async fn keep_alive(pool: DbPool, claim: Claim, stop: StopSignal, lease: Lease) {
    let mut ticker = tokio::time::interval(lease.heartbeat);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match beat(&pool, &claim, lease.length).await {
            Ok(Some(false)) => {}
            Ok(Some(true)) => stop.stop(StopReason::Cancelled),
            Ok(None) => {
                stop.stop(StopReason::LeaseLost);
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "heartbeat failed; the lease runs on until it expires");
            }
        }
    }
}

/// One beat: `Some(cancel_requested)` while the claim holds, `None` once lost.
async fn beat(pool: &DbPool, claim: &Claim, lease: Duration) -> Result<Option<bool>, QueueError> {
    let mut conn = pool.get().await?;
    Ok(repository::heartbeat(&mut conn, claim, lease).await?)
}
