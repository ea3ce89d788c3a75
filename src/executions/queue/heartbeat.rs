//! Keeping a claim: while a job runs, its lease is extended every heartbeat,
//! and the heartbeat's answer relays what the database knows — a cancellation
//! request (in case its notification was missed) or the loss of the lease.
//!
//! The worker also keeps its own account of when the lease lapses: each
//! successful beat pushes that moment to a lease from when the beat was sent
//! (never later than the database's), so a worker that cannot reach the
//! database, or whose beats hang, knows when someone else may have claimed the
//! execution — and stops the job then, without waiting for the database.

use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

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

/// Extends the lease every heartbeat; returns only once the lease is lost —
/// the database says the claim is gone, or the lease lapsed (counted from
/// `claimed_at`, then from the last successful beat) — having told the job
/// with [`StopReason::LeaseLost`]. The caller then drops the job. Stops the
/// job with [`StopReason::Cancelled`] when cancellation was requested.
pub(super) async fn keep_alive(
    pool: DbPool,
    claim: Claim,
    stop: StopSignal,
    lease: Lease,
    claimed_at: Instant,
) {
    let mut lapses_at = claimed_at + lease.length;
    let mut ticker = tokio::time::interval(lease.heartbeat);
    // A slow beat is followed by one beat, not a burst of the missed ones.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = tokio::time::sleep_until(lapses_at) => break,
        }
        let sent = Instant::now();
        match tokio::time::timeout_at(lapses_at, beat(&pool, &claim, lease.length)).await {
            Ok(Ok(Some(cancel_requested))) => {
                lapses_at = sent + lease.length;
                if cancel_requested {
                    stop.stop(StopReason::Cancelled);
                }
            }
            Ok(Ok(None)) => {
                tracing::warn!("the claim is gone (the execution was rescued); stopping the job");
                stop.stop(StopReason::LeaseLost);
                return;
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "heartbeat failed; the job stops if the lease lapses first");
            }
            Err(_) => break,
        }
    }
    tracing::warn!("the lease lapsed without a successful heartbeat; stopping the job");
    stop.stop(StopReason::LeaseLost);
}

/// One beat: `Some(cancel_requested)` while the claim holds, `None` once lost.
async fn beat(pool: &DbPool, claim: &Claim, lease: Duration) -> Result<Option<bool>, QueueError> {
    let mut conn = pool.get().await?;
    Ok(repository::heartbeat(&mut conn, claim, lease).await?)
}
