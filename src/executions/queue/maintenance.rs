//! Keeping the table healthy, on intervals: the rescuer takes back executions
//! whose worker died (their lease expired), the pruner deletes finished ones
//! past their retention, and the sampler sets the per-status gauge.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::core::db::DbPool;
use crate::executions::queue::QueueError;
use crate::executions::repository;

/// Most finished executions deleted in one pruning statement, so that one
/// prune never holds locks on a huge backlog.
const PRUNE_BATCH: i64 = 10_000;

/// The maintenance tasks of one process.
pub(super) struct Maintenance {
    /// Where the executions live.
    pub(super) pool: DbPool,
    /// The lease length, which sets how often the rescuer looks.
    pub(super) lease: Duration,
    /// How long finished executions are kept.
    pub(super) retention: Duration,
}

impl Maintenance {
    /// Runs the rescuer, the pruner and the sampler until `shutdown`.
    pub(super) async fn run(self, shutdown: CancellationToken) {
        // Often enough that an expired lease is taken back within half a lease.
        let rescue_every =
            (self.lease / 2).clamp(Duration::from_millis(100), Duration::from_secs(10));
        let mut rescue = tokio::time::interval(rescue_every);
        let mut prune = tokio::time::interval(Duration::from_secs(600));
        let mut sample = tokio::time::interval(Duration::from_secs(15));
        loop {
            let result = tokio::select! {
                _ = rescue.tick() => self.rescue().await,
                _ = prune.tick() => self.prune().await,
                _ = sample.tick() => self.sample_statuses().await,
                () = shutdown.cancelled() => return,
            };
            if let Err(error) = result {
                tracing::warn!(%error, "worker maintenance failed; will try again");
            }
        }
    }

    /// Queues again (or fails, when out of attempts) executions whose lease expired.
    async fn rescue(&self) -> Result<(), QueueError> {
        let mut conn = self.pool.get().await?;
        let rescued = repository::rescue_expired(&mut conn).await?;
        if !rescued.is_empty() {
            tracing::warn!(count = rescued.len(), ids = ?rescued, "rescued executions whose lease expired");
            metrics::counter!("executions_rescued_total").increment(rescued.len() as u64);
        }
        Ok(())
    }

    /// Deletes finished executions older than the retention.
    async fn prune(&self) -> Result<(), QueueError> {
        let retention = chrono::Duration::from_std(self.retention)?;
        let mut conn = self.pool.get().await?;
        let pruned =
            repository::prune_finished(&mut conn, Utc::now() - retention, PRUNE_BATCH).await?;
        if pruned > 0 {
            tracing::info!(pruned, "pruned finished executions past their retention");
        }
        Ok(())
    }

    /// Sets the `executions{status}` gauge from the table.
    async fn sample_statuses(&self) -> Result<(), QueueError> {
        let mut conn = self.pool.get().await?;
        for (status, count) in repository::count_by_status(&mut conn).await? {
            metrics::gauge!("executions", "status" => status).set(count as f64);
        }
        Ok(())
    }
}
