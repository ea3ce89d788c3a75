//! The runner (crates.io's `Runner`): assembles one process's workers and runs
//! them until shutdown — a claim loop per queue, the cancellation listener, the
//! maintenance tasks and the completion batcher — then drains.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::core::db::DbPool;
use crate::executions::config::WorkerConfig;
use crate::executions::context::StopReason;
use crate::executions::kinds::KindRegistry;
use crate::executions::queue::NotificationHub;
use crate::executions::queue::cancellation::{self, RunningJobs};
use crate::executions::queue::claim::{ClaimLoop, Jobs};
use crate::executions::queue::completions::{self, Batcher};
use crate::executions::queue::executor::Executor;
use crate::executions::queue::maintenance::Maintenance;

/// Runs the workers of one process; built once by the application factory, so
/// `serve`, `worker` and the tests run the same machinery.
pub struct Runner {
    executor: Arc<Executor>,
    hub: Arc<NotificationHub>,
    settings: WorkerConfig,
    running: RunningJobs,
    batcher: Batcher,
}

impl Runner {
    /// A runner with a fresh worker id, so that its claims are told apart from
    /// those of every other process (and of its own earlier lives).
    pub fn new(
        pool: DbPool,
        registry: Arc<KindRegistry>,
        hub: Arc<NotificationHub>,
        settings: WorkerConfig,
    ) -> Self {
        let running = RunningJobs::default();
        let (recorder, batcher) = completions::recorder(pool.clone());
        let executor = Executor::new(
            pool,
            registry,
            &settings,
            Uuid::now_v7(),
            running.clone(),
            recorder,
        );
        Self {
            executor: Arc::new(executor),
            hub,
            settings,
            running,
            batcher,
        }
    }

    /// This runner's worker id (recorded on every execution it claims), so that
    /// tests and logs can tell which worker ran what.
    pub fn worker_id(&self) -> Uuid {
        self.executor.worker_id()
    }

    /// Runs until `shutdown` is cancelled, then stops claiming, lets running
    /// jobs finish within the grace period and hands the rest back to the
    /// queue without counting the attempt.
    pub async fn run(self, shutdown: CancellationToken) {
        let Self {
            executor,
            hub,
            settings,
            running,
            batcher,
        } = self;
        let jobs = Jobs::default();
        let mut tasks = JoinSet::new();
        let worker_id = executor.worker_id();
        let queues = executor.registry().queues();
        for &queue in &queues {
            let concurrency = settings.concurrency_of(queue);
            if concurrency == 0 {
                continue;
            }
            let claims = ClaimLoop::new(
                executor.clone(),
                &settings,
                queue,
                concurrency,
                jobs.clone(),
            );
            let span = tracing::info_span!("worker_queue", queue, worker_id = %worker_id);
            tasks.spawn(claims.run(hub.queued(), shutdown.clone()).instrument(span));
        }
        let maintenance = Maintenance {
            pool: executor.pool().clone(),
            lease: settings.lease,
            retention: settings.retention,
        };
        tasks.spawn(
            maintenance
                .run(shutdown.clone())
                .instrument(tracing::info_span!("worker_maintenance")),
        );
        let cancellations = cancellation::deliver_cancellations(running.clone(), hub, shutdown);
        tasks.spawn(cancellations.instrument(tracing::info_span!("worker_cancellations")));
        // The batcher outlives the claim loops: it ends once every job (and so
        // every recorder) is gone, after the drain.
        let batcher = tokio::spawn(
            batcher
                .run()
                .instrument(tracing::info_span!("completion_batcher")),
        );
        tracing::info!(%worker_id, ?queues, "workers started");
        while tasks.join_next().await.is_some() {}
        drain(jobs, &running, settings.shutdown_grace).await;
        drop(executor);
        let _ = batcher.await;
    }
}

/// Gives running jobs the grace period, then asks the rest to stop and hands
/// them back to the queue.
async fn drain(jobs: Jobs, running: &RunningJobs, grace: Duration) {
    let Ok(mut jobs) = jobs.lock().map(|mut jobs| std::mem::take(&mut *jobs)) else {
        return;
    };
    if jobs.is_empty() {
        return;
    }
    tracing::info!(
        running = jobs.len(),
        grace_ms = grace.as_millis(),
        "draining jobs"
    );
    let finished =
        tokio::time::timeout(grace, async { while jobs.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        tracing::warn!(
            running = jobs.len(),
            "grace period over; handing unfinished jobs back to the queue"
        );
        running.stop_all(StopReason::Shutdown);
        while jobs.join_next().await.is_some() {}
    }
}
