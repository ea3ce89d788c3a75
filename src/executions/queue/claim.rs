//! Claiming work (River's `producer`): one loop per queue claims as many due
//! executions as it has free slots, in one statement, and hands each to the
//! executor; when the queue runs dry it sleeps until a NOTIFY says work was
//! queued, or the poll interval passes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Semaphore;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::executions::config::WorkerConfig;
use crate::executions::queue::QueueError;
use crate::executions::queue::executor::Executor;
use crate::executions::repository::{self, Claimed};

/// The running jobs of every queue, joined by the drain at shutdown.
pub(super) type Jobs = Arc<Mutex<JoinSet<()>>>;

/// How long a busy queue waits for half its slots to free before claiming anyway.
const REFILL_WAIT: Duration = Duration::from_millis(2);

/// The claim loop of one queue.
pub(super) struct ClaimLoop {
    executor: Arc<Executor>,
    queue: &'static str,
    kinds: Vec<&'static str>,
    settings: WorkerConfig,
    slots: Arc<Semaphore>,
    /// How many free slots a busy queue waits for before claiming again.
    refill: u32,
    jobs: Jobs,
}

impl ClaimLoop {
    /// A loop running up to `concurrency` jobs of `queue` at once.
    pub(super) fn new(
        executor: Arc<Executor>,
        settings: &WorkerConfig,
        queue: &'static str,
        concurrency: usize,
        jobs: Jobs,
    ) -> Self {
        // While the queue is busy, claim when half the slots are free rather
        // than one at a time: one statement then fills many slots.
        let refill = u32::try_from((concurrency / 2).clamp(1, settings.claim_batch)).unwrap_or(1);
        Self {
            kinds: executor.registry().kinds_of_queue(queue),
            executor,
            queue,
            settings: settings.clone(),
            slots: Arc::new(Semaphore::new(concurrency)),
            refill,
            jobs,
        }
    }

    /// Claims work while slots are free; sleeps on NOTIFY (`queued`) or the
    /// poll interval; returns once `shutdown` is cancelled.
    pub(super) async fn run(
        self,
        mut queued: broadcast::Receiver<String>,
        shutdown: CancellationToken,
    ) {
        let mut busy = false;
        while !shutdown.is_cancelled() {
            let Some(free) = self.free_slots(busy, &shutdown).await else {
                break;
            };
            if free == 0 {
                continue;
            }
            // The first lease is counted from before the claim was sent: the
            // database's lease never ends sooner than the worker thinks.
            let claimed_at = Instant::now();
            let claimed = match self.claim(free).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "claiming failed; retrying after the poll interval");
                    Vec::new()
                }
            };
            // A full claim means more is probably waiting: claim again at once.
            busy = claimed.len() == free.min(self.settings.claim_batch);
            self.spawn(claimed, claimed_at);
            if busy {
                continue;
            }
            tokio::select! {
                () = wait_for_queue(&mut queued, self.queue) => {}
                () = tokio::time::sleep(self.settings.poll_interval) => {}
                () = shutdown.cancelled() => break,
            }
        }
    }

    /// The free slots, after waiting (briefly) for `refill` of them when busy
    /// or for one when none is free; 0 asks the caller to look again, `None`
    /// means shutdown.
    async fn free_slots(&self, busy: bool, shutdown: &CancellationToken) -> Option<usize> {
        if busy || self.slots.available_permits() == 0 {
            let enough = self.slots.clone().acquire_many_owned(self.refill);
            tokio::select! {
                _ = tokio::time::timeout(REFILL_WAIT, enough) => {}
                () = shutdown.cancelled() => return None,
            }
        }
        let free = self.slots.available_permits();
        if free == 0 {
            tokio::select! {
                permit = self.slots.clone().acquire_owned() => drop(permit),
                () = shutdown.cancelled() => return None,
            }
        }
        Some(free)
    }

    /// Claims up to `limit` due executions (at most a claim batch) for this worker.
    async fn claim(&self, limit: usize) -> Result<Vec<Claimed>, QueueError> {
        let mut conn = self.executor.pool().get().await?;
        let limit = i64::try_from(limit.min(self.settings.claim_batch)).unwrap_or(1);
        let claimed = repository::claim(
            &mut conn,
            self.queue,
            &self.kinds,
            self.executor.worker_id(),
            self.settings.lease,
            limit,
        )
        .await?;
        let now = Utc::now();
        for Claimed { execution, .. } in &claimed {
            let due = execution.run_at.max(execution.created_at);
            let waited = (now - due).to_std().unwrap_or_default();
            metrics::histogram!("execution_claim_latency_seconds", "queue" => self.queue)
                .record(waited.as_secs_f64());
        }
        metrics::counter!("executions_claimed_total", "queue" => self.queue)
            .increment(claimed.len() as u64);
        Ok(claimed)
    }

    /// Starts a job for each claimed execution, each holding one slot.
    fn spawn(&self, claimed: Vec<Claimed>, claimed_at: Instant) {
        for claimed in claimed {
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                break;
            };
            let executor = self.executor.clone();
            let execution = &claimed.execution;
            let span = tracing::info_span!("execution", id = %execution.id, kind = %execution.kind, attempt = execution.attempt);
            if let Ok(mut jobs) = self.jobs.lock() {
                jobs.spawn(
                    executor
                        .run_one(claimed, claimed_at, permit)
                        .instrument(span),
                );
                // Reap finished jobs so the set does not grow for the life of the process.
                while jobs.try_join_next().is_some() {}
            }
        }
    }
}

/// Resolves when `queue` (or every queue, an empty payload) got work, or when
/// notifications were missed; never, once the hub is gone (polling remains).
async fn wait_for_queue(queued: &mut broadcast::Receiver<String>, queue: &str) {
    loop {
        match queued.recv().await {
            Ok(name) if name == queue || name.is_empty() => return,
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => return,
            Err(RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}
