//! Workers: claim executions, run them under a lease, record how they end.
//!
//! `Runner::new(pool, registry, hub, settings).run(shutdown)` runs one claim
//! loop per queue, plus the rescuer (takes back executions whose worker died)
//! and the pruner (deletes old finished ones). On shutdown it stops claiming,
//! lets running jobs finish within the grace period, then hands the rest back
//! to the queue without counting the attempt.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::core::db::DbPool;
use crate::executions::config::WorkerConfig;
use crate::executions::context::{JobContext, JobError, StopReason, StopSignal};
use crate::executions::kinds::KindRegistry;
use crate::executions::listener::NotificationHub;
use crate::executions::models::Execution;
use crate::executions::repository::{self, Claim, Outcome};

/// The jobs this process runs now, by execution id, to deliver stop signals.
type Running = Arc<Mutex<HashMap<Uuid, StopSignal>>>;

/// How long a busy queue waits for half its slots to free before claiming anyway.
const REFILL_WAIT: Duration = Duration::from_millis(2);

/// Most successful attempts recorded in one statement.
const MAX_COMPLETION_BATCH: usize = 512;

/// A successful attempt waiting to be recorded, and who to tell whether its claim held.
type Completion = (
    Claim,
    serde_json::Value,
    oneshot::Sender<Result<bool, String>>,
);

/// Runs the workers of one process.
pub struct Runner {
    pool: DbPool,
    registry: Arc<KindRegistry>,
    hub: Arc<NotificationHub>,
    settings: WorkerConfig,
    worker_id: Uuid,
    running: Running,
    completions: mpsc::Sender<Completion>,
    completion_queue: Mutex<Option<mpsc::Receiver<Completion>>>,
}

impl Runner {
    /// A runner with a fresh worker id.
    pub fn new(
        pool: DbPool,
        registry: Arc<KindRegistry>,
        hub: Arc<NotificationHub>,
        settings: WorkerConfig,
    ) -> Self {
        let (completions, completion_queue) = mpsc::channel(MAX_COMPLETION_BATCH * 4);
        Self {
            pool,
            registry,
            hub,
            settings,
            worker_id: Uuid::now_v7(),
            running: Arc::default(),
            completions,
            completion_queue: Mutex::new(Some(completion_queue)),
        }
    }

    /// This runner's worker id (recorded on every execution it claims).
    pub fn worker_id(&self) -> Uuid {
        self.worker_id
    }

    /// Runs until `shutdown` is cancelled, then drains (see the module docs).
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let mut tasks = JoinSet::new();
        let jobs = Arc::new(Mutex::new(JoinSet::new()));
        for queue in this.registry.queues() {
            let concurrency = this.settings.concurrency_of(queue);
            if concurrency == 0 {
                continue;
            }
            let (runner, shutdown, jobs) = (this.clone(), shutdown.clone(), jobs.clone());
            tasks.spawn(
                async move { runner.claim_loop(queue, concurrency, shutdown, jobs).await }
                    .instrument(
                        tracing::info_span!("worker_queue", queue, worker_id = %this.worker_id),
                    ),
            );
        }
        let maintenance = this.clone();
        let stop_maintenance = shutdown.clone();
        tasks.spawn(
            async move { maintenance.maintain(stop_maintenance).await }
                .instrument(tracing::info_span!("worker_maintenance")),
        );
        let cancels = this.clone();
        let stop_cancels = shutdown.clone();
        tasks.spawn(async move { cancels.deliver_cancellations(stop_cancels).await });
        // The batcher outlives the claim loops: it ends once every job (and so
        // every sender clone) is gone, after the drain.
        let queue = this
            .completion_queue
            .lock()
            .ok()
            .and_then(|mut queue| queue.take());
        let batcher = queue.map(|queue| tokio::spawn(record_completions(this.pool.clone(), queue)));
        tracing::info!(worker_id = %this.worker_id, queues = ?this.registry.queues(), "workers started");
        while tasks.join_next().await.is_some() {}
        this.drain(jobs).await;
        drop(this);
        if let Some(batcher) = batcher {
            let _ = batcher.await;
        }
    }

    /// Claims work for `queue` while slots are free; sleeps on NOTIFY or the poll interval.
    async fn claim_loop(
        self: Arc<Self>,
        queue: &'static str,
        concurrency: usize,
        shutdown: CancellationToken,
        jobs: Arc<Mutex<JoinSet<()>>>,
    ) {
        let slots = Arc::new(Semaphore::new(concurrency));
        let kinds = self.registry.kinds_of_queue(queue);
        let mut queued = self.hub.queued();
        // While the queue is busy, claim when half the slots are free rather
        // than one at a time: one statement then fills many slots.
        let refill =
            u32::try_from((concurrency / 2).clamp(1, self.settings.claim_batch)).unwrap_or(1);
        let mut busy = false;
        while !shutdown.is_cancelled() {
            if busy || slots.available_permits() == 0 {
                let enough = slots.clone().acquire_many_owned(refill);
                tokio::select! {
                    _ = tokio::time::timeout(REFILL_WAIT, enough) => {}
                    () = shutdown.cancelled() => break,
                }
            }
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    permit = slots.clone().acquire_owned() => drop(permit),
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
            let claimed = match self.claim(queue, &kinds, free).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "claiming failed; retrying after the poll interval");
                    Vec::new()
                }
            };
            let got_all = claimed.len() == free.min(self.settings.claim_batch);
            busy = got_all;
            for execution in claimed {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    break;
                };
                let runner = self.clone();
                let span = tracing::info_span!("execution", id = %execution.id, kind = %execution.kind, attempt = execution.attempt);
                if let Ok(mut jobs) = jobs.lock() {
                    jobs.spawn(
                        async move { runner.run_one(execution, permit).await }.instrument(span),
                    );
                    // Reap finished jobs so the set does not grow for the life of the process.
                    while jobs.try_join_next().is_some() {}
                }
            }
            if got_all {
                continue;
            }
            tokio::select! {
                () = wait_for_queue(&mut queued, queue) => {}
                () = tokio::time::sleep(self.settings.poll_interval) => {}
                () = shutdown.cancelled() => break,
            }
        }
    }

    async fn claim(
        &self,
        queue: &str,
        kinds: &[&str],
        limit: usize,
    ) -> Result<Vec<Execution>, String> {
        let mut conn = self.pool.get().await.map_err(|error| error.to_string())?;
        let limit = i64::try_from(limit.min(self.settings.claim_batch)).unwrap_or(1);
        let claimed = repository::claim(
            &mut conn,
            queue,
            kinds,
            self.worker_id,
            self.settings.lease,
            limit,
        )
        .await
        .map_err(|error| error.to_string())?;
        let now = Utc::now();
        for execution in &claimed {
            let due = execution.run_at.max(execution.created_at);
            let waited = (now - due).to_std().unwrap_or_default();
            metrics::histogram!("execution_claim_latency_seconds", "queue" => queue.to_owned())
                .record(waited.as_secs_f64());
        }
        metrics::counter!("executions_claimed_total", "queue" => queue.to_owned())
            .increment(claimed.len() as u64);
        Ok(claimed)
    }

    /// Runs one claimed attempt to its end and records the outcome.
    async fn run_one(self: Arc<Self>, execution: Execution, _slot: OwnedSemaphorePermit) {
        let claim = Claim {
            execution_id: execution.id,
            worker_id: self.worker_id,
            attempt: execution.attempt,
        };
        let stop = StopSignal::default();
        self.track(claim.execution_id, Some(stop.clone()));
        let heartbeat = tokio::spawn(self.clone().heartbeat(claim, stop.clone()));
        let started = Instant::now();
        let context = JobContext::new(claim, self.pool.clone(), stop.clone());
        let result = self.execute(&execution, context, &stop).await;
        heartbeat.abort();
        self.track(claim.execution_id, None);
        let outcome = self.outcome(&execution, result, stop.reason());
        let label = outcome.as_ref().map_or("lease_lost", outcome_label);
        metrics::histogram!("execution_duration_seconds", "kind" => execution.kind.clone(), "outcome" => label)
            .record(started.elapsed().as_secs_f64());
        let Some(outcome) = outcome else {
            tracing::warn!("lease lost; another worker owns this execution now");
            return;
        };
        if matches!(
            outcome,
            Outcome::Failed {
                retry_at: Some(_),
                ..
            }
        ) {
            metrics::counter!("executions_retried_total", "kind" => execution.kind.clone())
                .increment(1);
        }
        self.record(&claim, &outcome).await;
    }

    /// Runs the kind with the timeout, catching panics.
    async fn execute(
        &self,
        execution: &Execution,
        context: JobContext,
        stop: &StopSignal,
    ) -> Result<serde_json::Value, JobError> {
        let Some(work) = self
            .registry
            .run(&execution.kind, execution.input.clone(), context)
        else {
            return Err(JobError::Failed(format!(
                "this worker does not know the kind {:?}",
                execution.kind
            )));
        };
        let guarded = AssertUnwindSafe(work).catch_unwind();
        let timeout = execution
            .timeout_s
            .and_then(|seconds| u64::try_from(seconds).ok())
            .map_or(Duration::MAX, Duration::from_secs);
        let result = tokio::select! {
            result = tokio::time::timeout(timeout, guarded) => result,
            // A job that ignores its stop signal is abandoned after the grace period.
            () = async { stop.stopped().await; tokio::time::sleep(self.settings.shutdown_grace).await } => {
                return Err(JobError::Cancelled);
            }
        };
        match result {
            Err(_) => Err(JobError::Failed(format!(
                "timed out after {} s",
                timeout.as_secs()
            ))),
            Ok(Err(panic)) => Err(JobError::Failed(format!(
                "panicked: {}",
                panic_message(panic.as_ref())
            ))),
            Ok(Ok(result)) => result,
        }
    }

    /// What to record for a result, given why (if at all) the job was stopped.
    /// `None`: the lease was lost, so nothing may be written.
    fn outcome(
        &self,
        execution: &Execution,
        result: Result<serde_json::Value, JobError>,
        reason: StopReason,
    ) -> Option<Outcome> {
        match (result, reason) {
            (_, StopReason::LeaseLost) | (Err(JobError::LeaseLost), _) => None,
            (Ok(value), _) => Some(Outcome::Succeeded(value)),
            (Err(_), StopReason::Shutdown) => Some(Outcome::HandedBack),
            (Err(JobError::Cancelled), StopReason::Cancelled) => Some(Outcome::Cancelled),
            (Err(JobError::Cancelled), _) => Some(Outcome::Cancelled),
            (Err(JobError::Failed(message)), _) => {
                let retry_at = (execution.attempt < execution.max_attempts)
                    .then(|| Utc::now() + retry_delay(&self.settings, execution.attempt));
                Some(Outcome::Failed { message, retry_at })
            }
        }
    }

    /// Writes the outcome, retrying briefly if the database is unreachable
    /// (the lease keeps the claim meanwhile; if it lapses, the rescuer takes over).
    /// Successes go through the batcher first: one statement for many jobs.
    async fn record(&self, claim: &Claim, outcome: &Outcome) {
        for attempt in 0..5u32 {
            let result = match (outcome, attempt) {
                (Outcome::Succeeded(value), 0) => self.record_batched(claim, value).await,
                _ => match self.pool.get().await {
                    Ok(mut conn) => repository::finish(&mut conn, claim, outcome)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(error) => Err(error.to_string()),
                },
            };
            match result {
                Ok(true) => {
                    metrics::counter!("executions_finished_total", "outcome" => outcome_label(outcome)).increment(1);
                    return;
                }
                Ok(false) => {
                    tracing::warn!("the outcome was not recorded: the lease was lost meanwhile");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, attempt, "cannot record the outcome yet");
                    tokio::time::sleep(Duration::from_millis(200) * 2u32.pow(attempt)).await;
                }
            }
        }
        tracing::error!("gave up recording an outcome; the rescuer will retry the execution");
    }

    async fn record_batched(
        &self,
        claim: &Claim,
        value: &serde_json::Value,
    ) -> Result<bool, String> {
        let (reply, answer) = oneshot::channel();
        self.completions
            .send((*claim, value.clone(), reply))
            .await
            .map_err(|_| "the completion batcher has stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the completion batcher dropped the reply".to_owned())?
    }

    /// Extends the lease every heartbeat; relays cancellation and lost leases.
    async fn heartbeat(self: Arc<Self>, claim: Claim, stop: StopSignal) {
        let mut ticker = tokio::time::interval(self.settings.heartbeat);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let beat = match self.pool.get().await {
                Ok(mut conn) => repository::heartbeat(&mut conn, &claim, self.settings.lease)
                    .await
                    .map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            match beat {
                Ok(Some(false)) => {}
                Ok(Some(true)) => stop.stop(StopReason::Cancelled),
                Ok(None) => {
                    stop.stop(StopReason::LeaseLost);
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "heartbeat failed; the lease runs on until it expires")
                }
            }
        }
    }

    fn track(&self, id: Uuid, stop: Option<StopSignal>) {
        if let Ok(mut running) = self.running.lock() {
            match stop {
                Some(stop) => running.insert(id, stop),
                None => running.remove(&id),
            };
        }
    }

    fn stop_running(&self, id: Option<Uuid>, reason: StopReason) {
        if let Ok(running) = self.running.lock() {
            for (running_id, stop) in running.iter() {
                if id.is_none_or(|id| id == *running_id) {
                    stop.stop(reason);
                }
            }
        }
    }

    /// Delivers cancellation requests (NOTIFY) to the jobs they name, within
    /// moments, even when the request came through another process.
    async fn deliver_cancellations(self: Arc<Self>, shutdown: CancellationToken) {
        let mut requests = self.hub.cancel_requests();
        loop {
            tokio::select! {
                request = requests.recv() => match request {
                    Ok(id) => self.stop_running(Some(id), StopReason::Cancelled),
                    // Lagged: the heartbeat still delivers the flag from the database.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// The rescuer, the pruner and the status gauge, on their intervals.
    async fn maintain(self: Arc<Self>, shutdown: CancellationToken) {
        // Often enough that an expired lease is taken back within half a lease.
        let rescue_every =
            (self.settings.lease / 2).clamp(Duration::from_millis(100), Duration::from_secs(10));
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

    async fn rescue(&self) -> Result<(), String> {
        let mut conn = self.pool.get().await.map_err(|error| error.to_string())?;
        let rescued = repository::rescue_expired(&mut conn)
            .await
            .map_err(|error| error.to_string())?;
        if !rescued.is_empty() {
            tracing::warn!(count = rescued.len(), ids = ?rescued, "rescued executions whose lease expired");
            metrics::counter!("executions_rescued_total").increment(rescued.len() as u64);
        }
        Ok(())
    }

    async fn prune(&self) -> Result<(), String> {
        let retention = chrono::Duration::from_std(self.settings.retention)
            .map_err(|error| error.to_string())?;
        let mut conn = self.pool.get().await.map_err(|error| error.to_string())?;
        let pruned = repository::prune_finished(&mut conn, Utc::now() - retention, 10_000)
            .await
            .map_err(|error| error.to_string())?;
        if pruned > 0 {
            tracing::info!(pruned, "pruned finished executions past their retention");
        }
        Ok(())
    }

    async fn sample_statuses(&self) -> Result<(), String> {
        let mut conn = self.pool.get().await.map_err(|error| error.to_string())?;
        for (status, count) in repository::count_by_status(&mut conn)
            .await
            .map_err(|error| error.to_string())?
        {
            metrics::gauge!("executions", "status" => status).set(count as f64);
        }
        Ok(())
    }

    /// Gives running jobs the grace period, then asks the rest to stop and
    /// hands them back to the queue.
    async fn drain(&self, jobs: Arc<Mutex<JoinSet<()>>>) {
        let Ok(mut jobs) = jobs.lock().map(|mut jobs| std::mem::take(&mut *jobs)) else {
            return;
        };
        if jobs.is_empty() {
            return;
        }
        tracing::info!(
            running = jobs.len(),
            grace_ms = self.settings.shutdown_grace.as_millis(),
            "draining jobs"
        );
        let finished = tokio::time::timeout(self.settings.shutdown_grace, async {
            while jobs.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                running = jobs.len(),
                "grace period over; handing unfinished jobs back to the queue"
            );
            self.stop_running(None, StopReason::Shutdown);
            while jobs.join_next().await.is_some() {}
        }
    }
}

/// Records successful attempts in batches: whatever accumulated while the last
/// batch was being written goes in the next one, so a quiet queue pays no delay
/// and a busy one pays one round trip and one commit per batch.
async fn record_completions(pool: DbPool, mut queue: mpsc::Receiver<Completion>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_COMPLETION_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let rows: Vec<(Claim, serde_json::Value)> = batch
            .iter()
            .map(|(claim, value, _)| (*claim, value.clone()))
            .collect();
        let written = match pool.get().await {
            Ok(mut conn) => repository::finish_succeeded_batch(&mut conn, &rows)
                .await
                .map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        for (claim, _, reply) in batch {
            let answer = match &written {
                Ok(ids) => Ok(ids.contains(&claim.execution_id)),
                Err(error) => Err(error.clone()),
            };
            let _ = reply.send(answer);
        }
    }
}

/// Exponential backoff with jitter: base·2^(attempt−1), capped, then scaled by
/// a random factor in [0.5, 1) so that failed jobs do not retry in lockstep.
fn retry_delay(settings: &WorkerConfig, attempt: i32) -> chrono::Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(30);
    let uncapped = settings
        .retry_base
        .saturating_mul(2u32.saturating_pow(exponent));
    let capped = uncapped.min(settings.retry_max);
    let mut random = [0u8; 8];
    let unit = match getrandom::fill(&mut random) {
        Ok(()) => (u64::from_le_bytes(random) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    };
    let jittered = capped.mul_f64(0.5 + unit / 2.0);
    chrono::Duration::from_std(jittered).unwrap_or_else(|_| chrono::Duration::seconds(1))
}

/// Resolves when `queue` (or every queue, an empty payload) got work.
async fn wait_for_queue(queued: &mut tokio::sync::broadcast::Receiver<String>, queue: &str) {
    loop {
        match queued.recv().await {
            Ok(name) if name == queue || name.is_empty() => return,
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                std::future::pending::<()>().await
            }
        }
    }
}

fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded(_) => "succeeded",
        Outcome::Failed {
            retry_at: Some(_), ..
        } => "retrying",
        Outcome::Failed { retry_at: None, .. } => "failed",
        Outcome::Cancelled => "cancelled",
        Outcome::HandedBack => "handed_back",
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
        .unwrap_or_else(|| "(no message)".to_owned())
}
