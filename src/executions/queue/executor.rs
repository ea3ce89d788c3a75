//! Running one claimed attempt (River's `jobexecutor`): the kind's work under
//! its timeout with panics caught, a heartbeat alongside, and the result
//! mapped — by the pure [`outcome`] — to what is recorded. A job whose lease
//! is lost is dropped at once, and nothing of it is recorded.
//!
//! What clients read of a failure is stable: a kind's own message, "timed out
//! after N s", or for internal failures (a panic, a database error) a fixed
//! sentence; the cause goes to the log with the execution's id.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

use crate::core::db::DbPool;
use crate::executions::config::WorkerConfig;
use crate::executions::context::{JobContext, JobError, StopReason, StopSignal};
use crate::executions::kinds::KindRegistry;
use crate::executions::models::Execution;
use crate::executions::queue::cancellation::RunningJobs;
use crate::executions::queue::completions::Recorder;
use crate::executions::queue::heartbeat::{self, Lease};
use crate::executions::queue::retry::{self, RetryPolicy};
use crate::executions::repository::{Claimed, Outcome};

/// Runs claimed attempts for one worker; shared by every job it runs.
pub(super) struct Executor {
    pool: DbPool,
    registry: Arc<KindRegistry>,
    worker_id: Uuid,
    running: RunningJobs,
    recorder: Recorder,
    lease: Lease,
    shutdown_grace: Duration,
    retry: RetryPolicy,
}

impl Executor {
    /// An executor for the worker `worker_id`, writing through `recorder`.
    pub(super) fn new(
        pool: DbPool,
        registry: Arc<KindRegistry>,
        settings: &WorkerConfig,
        worker_id: Uuid,
        running: RunningJobs,
        recorder: Recorder,
    ) -> Self {
        Self {
            pool,
            registry,
            worker_id,
            running,
            recorder,
            lease: Lease {
                heartbeat: settings.heartbeat,
                length: settings.lease,
            },
            shutdown_grace: settings.shutdown_grace,
            retry: RetryPolicy::of(settings),
        }
    }

    /// The pool jobs and claims draw connections from.
    pub(super) fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// The worker recorded on every claim (which worker ran what; the claim's
    /// token is what fences writes).
    pub(super) fn worker_id(&self) -> Uuid {
        self.worker_id
    }

    /// The kinds this worker can run.
    pub(super) fn registry(&self) -> &KindRegistry {
        &self.registry
    }

    /// Runs one claimed attempt to its end and records the outcome; the slot
    /// is held until the outcome is written. `claimed_at` is when the claim
    /// was sent, from which the first lease is counted. If the lease is lost
    /// the job is dropped where it stands and nothing is recorded.
    pub(super) async fn run_one(
        self: Arc<Self>,
        claimed: Claimed,
        claimed_at: Instant,
        _slot: OwnedSemaphorePermit,
    ) {
        let claim = claimed.claim();
        let execution = claimed.execution;
        let stop = StopSignal::default();
        self.running.track(claim.execution_id, stop.clone());
        let beating = heartbeat::keep_alive(
            self.pool.clone(),
            claim,
            stop.clone(),
            self.lease,
            claimed_at,
        );
        let mut heartbeat = tokio::spawn(beating.instrument(tracing::info_span!("heartbeat")));
        let started = std::time::Instant::now();
        let context = JobContext::new(claim, self.pool.clone(), stop.clone());
        let result = tokio::select! {
            result = self.execute(&execution, context, &stop) => result,
            // The heartbeat ends only when the lease is lost: another worker may
            // run this execution now, so the job must not go on.
            _ = &mut heartbeat => Err(JobError::LeaseLost),
        };
        heartbeat.abort();
        self.running.untrack(claim.execution_id);
        if let Err(JobError::Internal { message, cause }) = &result {
            tracing::error!(execution_id = %claim.execution_id, attempt = claim.attempt, %cause, "the attempt failed: {message}");
        }
        let retry = RetryInputs {
            policy: self.retry,
            now: Utc::now(),
            draw: retry::unit_draw(),
        };
        let attempts = (execution.attempt, execution.max_attempts);
        let outcome = outcome(result, stop.reason(), attempts, &retry);
        observe(&execution.kind, outcome.as_ref(), started.elapsed());
        let Some(outcome) = outcome else {
            tracing::warn!("lease lost; another worker owns this execution now");
            return;
        };
        self.recorder.record(&claim, &outcome).await;
    }

    /// Runs the kind with the timeout, catching panics.
    async fn execute(
        &self,
        execution: &Execution,
        context: JobContext,
        stop: &StopSignal,
    ) -> Result<Value, JobError> {
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
            () = async { stop.stopped().await; tokio::time::sleep(self.shutdown_grace).await } => {
                return Err(JobError::Cancelled);
            }
        };
        match result {
            Err(_) => Err(JobError::Failed(format!(
                "timed out after {} s",
                timeout.as_secs()
            ))),
            Ok(Err(panic)) => Err(JobError::internal(
                "The job panicked.",
                panic_message(panic.as_ref()),
            )),
            Ok(Ok(result)) => result,
        }
    }
}

/// What the retry policy needs to schedule a failed attempt, fixed before the
/// mapping so that [`outcome`] stays a pure function.
#[derive(Debug, Clone, Copy)]
pub(super) struct RetryInputs {
    /// The backoff settings.
    pub(super) policy: RetryPolicy,
    /// When the attempt ended.
    pub(super) now: DateTime<Utc>,
    /// A uniform draw in [0, 1) for the jitter.
    pub(super) draw: f64,
}

/// What to record for a result, given why (if at all) the job was asked to
/// stop, and `(attempt, max_attempts)`. `None`: the lease was lost, so nothing
/// may be written. A success counts even if a stop was asked for (the work is
/// done). Otherwise a cancellation wins: a failure of a job asked to cancel
/// ends `cancelled`, not retried. A shutdown hands any unfinished attempt back
/// uncounted; a failure is retried while attempts remain. (The database
/// applies the cancellation rule again when it records the outcome, for a
/// request this worker has not heard of yet.)
pub(super) fn outcome(
    result: Result<Value, JobError>,
    reason: StopReason,
    (attempt, max_attempts): (i32, i32),
    retry: &RetryInputs,
) -> Option<Outcome> {
    match (result, reason) {
        (_, StopReason::LeaseLost) | (Err(JobError::LeaseLost), _) => None,
        (Ok(value), _) => Some(Outcome::Succeeded(value)),
        (Err(_), StopReason::Cancelled) | (Err(JobError::Cancelled), StopReason::None) => {
            Some(Outcome::Cancelled)
        }
        (Err(_), StopReason::Shutdown) => Some(Outcome::HandedBack),
        (Err(JobError::Permanent(message)), StopReason::None) => Some(Outcome::Failed {
            message,
            retry_at: None,
        }),
        // What a failure displays is what clients may read (an internal
        // failure displays its stable message, not its cause).
        (Err(failure), StopReason::None) => Some(Outcome::Failed {
            message: failure.to_string(),
            retry_at: (attempt < max_attempts)
                .then(|| retry::next_retry_at(&retry.policy, retry.now, attempt, retry.draw)),
        }),
    }
}

/// Records the attempt's duration by outcome, and counts retries.
fn observe(kind: &str, outcome: Option<&Outcome>, elapsed: Duration) {
    let label = outcome.map_or("lease_lost", outcome_label);
    metrics::histogram!("execution_duration_seconds", "kind" => kind.to_owned(), "outcome" => label)
        .record(elapsed.as_secs_f64());
    if label == "retrying" {
        metrics::counter!("executions_retried_total", "kind" => kind.to_owned()).increment(1);
    }
}

/// The metrics label of an outcome.
pub(super) fn outcome_label(outcome: &Outcome) -> &'static str {
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

/// The text of a panic payload (`panic!` with a literal or with a format).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
        .unwrap_or_else(|| "(no message)".to_owned())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    /// One row of the table: what the job returned, why it was asked to stop,
    /// `(attempt, max_attempts)`, and what must be recorded.
    type Row = (
        Result<Value, JobError>,
        StopReason,
        (i32, i32),
        Option<Outcome>,
    );

    fn inputs() -> RetryInputs {
        RetryInputs {
            policy: RetryPolicy {
                base: Duration::from_secs(10),
                max: Duration::from_secs(60),
            },
            now: DateTime::<Utc>::UNIX_EPOCH,
            draw: 0.5,
        }
    }

    fn failed(retry_after_ms: Option<i64>) -> Option<Outcome> {
        Some(Outcome::Failed {
            message: "boom".to_owned(),
            retry_at: retry_after_ms
                .map(|ms| DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::milliseconds(ms)),
        })
    }

    /// `Outcome` has no `PartialEq` (nothing else needs one); its `Debug` text
    /// shows every field, values and timestamps included.
    fn shown(outcome: &Option<Outcome>) -> String {
        format!("{outcome:?}")
    }

    /// Every result a job can end with, under every stop reason.
    fn table() -> Vec<Row> {
        use StopReason::{Cancelled, LeaseLost, None as NotAsked, Shutdown};
        let ok = || Ok(json!({"done": true}));
        let fail = || Err(JobError::Failed("boom".to_owned()));
        let stopped = || Err(JobError::Cancelled);
        let lost = || Err(JobError::LeaseLost);
        let permanent = || Err(JobError::Permanent("boom".to_owned()));
        let internal = || {
            Err(JobError::internal(
                "The job panicked.",
                "at src/secret.rs:7",
            ))
        };
        let done = Some(Outcome::Succeeded(json!({"done": true})));
        let (cancelled, handed_back) = (Some(Outcome::Cancelled), Some(Outcome::HandedBack));
        let internal_failed = |retry_after_ms: Option<i64>| {
            Some(Outcome::Failed {
                message: "The job panicked.".to_owned(),
                retry_at: retry_after_ms
                    .map(|ms| DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::milliseconds(ms)),
            })
        };
        // Attempt 2 of 3 fails: 10 s·2 = 20 s, jittered by the draw 0.5 to 15 s.
        let (left, exhausted) = ((2, 3), (3, 3));
        vec![
            // Success counts unless the lease was lost, even if a stop was asked.
            (ok(), NotAsked, left, done.clone()),
            (ok(), Cancelled, left, done.clone()),
            (ok(), Shutdown, left, done),
            (ok(), LeaseLost, left, None),
            // A failure retries while attempts remain …
            (fail(), NotAsked, left, failed(Some(15_000))),
            (fail(), NotAsked, exhausted, failed(None)),
            // … unless a cancellation was asked for: then it ends cancelled.
            (fail(), Cancelled, left, cancelled.clone()),
            (fail(), Cancelled, exhausted, cancelled.clone()),
            // A shutdown hands the attempt back uncounted.
            (fail(), Shutdown, left, handed_back.clone()),
            (fail(), Shutdown, exhausted, handed_back.clone()),
            (fail(), LeaseLost, left, None),
            (fail(), LeaseLost, exhausted, None),
            // A permanent failure is never retried; cancellation and shutdown still win.
            (permanent(), NotAsked, left, failed(None)),
            (permanent(), Cancelled, left, cancelled.clone()),
            (permanent(), Shutdown, left, handed_back.clone()),
            // An internal failure is recorded by its stable message, never its cause.
            (internal(), NotAsked, left, internal_failed(Some(15_000))),
            (internal(), NotAsked, exhausted, internal_failed(None)),
            (internal(), Cancelled, left, cancelled.clone()),
            (internal(), Shutdown, left, handed_back.clone()),
            (internal(), LeaseLost, left, None),
            // A job that stopped on request ends cancelled, or handed back at shutdown.
            (stopped(), NotAsked, left, cancelled.clone()),
            (stopped(), Cancelled, left, cancelled.clone()),
            (stopped(), Cancelled, exhausted, cancelled),
            (stopped(), Shutdown, left, handed_back),
            (stopped(), LeaseLost, left, None),
            // A job that found its lease lost writes nothing, whatever the reason.
            (lost(), NotAsked, left, None),
            (lost(), Cancelled, left, None),
            (lost(), Shutdown, left, None),
            (lost(), LeaseLost, left, None),
        ]
    }

    #[test]
    fn every_result_and_stop_reason_maps_to_its_outcome() {
        let table = table();
        assert_eq!(table.len(), 29);
        for (result, reason, attempts, expected) in table {
            let case = format!("{result:?} stopped {reason:?} at attempt {attempts:?}");
            let actual = outcome(result, reason, attempts, &inputs());
            assert_eq!(shown(&actual), shown(&expected), "{case}");
        }
    }

    #[test]
    fn the_retry_time_follows_the_injected_clock_and_draw() {
        let fail = || Err(JobError::Failed("boom".to_owned()));
        let first = RetryInputs {
            draw: 0.0,
            ..inputs()
        };
        let at = |attempt, inputs: &RetryInputs| {
            shown(&outcome(fail(), StopReason::None, (attempt, 5), inputs))
        };
        // Attempt 1: 10 s, halved by the draw 0.0.
        assert_eq!(at(1, &first), shown(&failed(Some(5_000))));
        // Attempt 4: 80 s, capped at 60 s, halved.
        assert_eq!(at(4, &first), shown(&failed(Some(30_000))));
        let later = RetryInputs {
            now: DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(1),
            ..first
        };
        assert_eq!(at(1, &later), shown(&failed(Some(6_000))));
    }

    #[test]
    fn outcomes_have_their_metric_labels() {
        let label = |outcome: Option<Outcome>| outcome.as_ref().map(outcome_label);
        assert_eq!(
            label(Some(Outcome::Succeeded(json!(null)))),
            Some("succeeded")
        );
        assert_eq!(label(failed(Some(1))), Some("retrying"));
        assert_eq!(label(failed(None)), Some("failed"));
        assert_eq!(label(Some(Outcome::Cancelled)), Some("cancelled"));
        assert_eq!(label(Some(Outcome::HandedBack)), Some("handed_back"));
    }

    #[test]
    fn panic_messages_are_read_from_literal_and_formatted_payloads() {
        let literal: Box<dyn std::any::Any + Send> = Box::new("on purpose");
        let formatted: Box<dyn std::any::Any + Send> = Box::new(format!("attempt {}", 2));
        let other: Box<dyn std::any::Any + Send> = Box::new(7_u8);
        assert_eq!(panic_message(literal.as_ref()), "on purpose");
        assert_eq!(panic_message(formatted.as_ref()), "attempt 2");
        assert_eq!(panic_message(other.as_ref()), "(no message)");
    }
}
