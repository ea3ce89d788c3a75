//! Recording how an attempt ended. Successes — most outcomes on a busy queue —
//! go through a batcher that writes many in one statement; every outcome is
//! retried briefly while the database is unreachable.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::core::db::DbPool;
use crate::executions::models::Status;
use crate::executions::queue::QueueError;
use crate::executions::queue::executor::outcome_label;
use crate::executions::repository::{self, Claim, Outcome};

/// Most successful attempts recorded in one statement.
const MAX_COMPLETION_BATCH: usize = 512;

/// How many times an outcome is written before the worker gives up on it.
const RECORD_TRIES: u32 = 5;

/// A successful attempt waiting to be recorded, and who to tell whether its claim held.
struct Completion {
    claim: Claim,
    result: Value,
    reply: oneshot::Sender<Result<bool, Arc<QueueError>>>,
}

/// Writes outcomes for the executor; cheap to share between jobs.
pub(super) struct Recorder {
    pool: DbPool,
    batcher: mpsc::Sender<Completion>,
}

/// The task that writes batched successes; it ends once every [`Recorder`] is gone.
pub(super) struct Batcher {
    pool: DbPool,
    queue: mpsc::Receiver<Completion>,
}

/// A recorder and the batcher it feeds.
pub(super) fn recorder(pool: DbPool) -> (Recorder, Batcher) {
    let (batcher, queue) = mpsc::channel(MAX_COMPLETION_BATCH * 4);
    let recorder = Recorder {
        pool: pool.clone(),
        batcher,
    };
    (recorder, Batcher { pool, queue })
}

impl Recorder {
    /// Writes the outcome, retrying briefly if the database is unreachable
    /// (the lease keeps the claim meanwhile; if it lapses, the rescuer takes over).
    pub(super) async fn record(&self, claim: &Claim, outcome: &Outcome) {
        for attempt in 0..RECORD_TRIES {
            // Only the first try goes through the batcher; retries write alone.
            let result = match (outcome, attempt) {
                (Outcome::Succeeded(value), 0) => self.record_batched(claim, value).await,
                _ => self.write(claim, outcome).await,
            };
            match result {
                Ok(Some(recorded)) => {
                    // The database turns any end but a success of an execution
                    // whose cancellation was requested into `cancelled`.
                    let label = if recorded == Status::Cancelled {
                        "cancelled"
                    } else {
                        outcome_label(outcome)
                    };
                    metrics::counter!("executions_finished_total", "outcome" => label).increment(1);
                    return;
                }
                Ok(None) => {
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

    /// Writes one outcome on its own: the status recorded, `None` if the claim
    /// no longer held.
    async fn write(&self, claim: &Claim, outcome: &Outcome) -> Result<Option<Status>, QueueError> {
        let mut conn = self.pool.get().await?;
        Ok(repository::finish(&mut conn, claim, outcome).await?)
    }

    /// Hands a success to the batcher and waits for its batch to be written:
    /// `Succeeded`, or `None` if the claim no longer held.
    async fn record_batched(
        &self,
        claim: &Claim,
        value: &Value,
    ) -> Result<Option<Status>, QueueError> {
        let (reply, answer) = oneshot::channel();
        let completion = Completion {
            claim: *claim,
            result: value.clone(),
            reply,
        };
        self.batcher
            .send(completion)
            .await
            .map_err(|_| QueueError::BatcherStopped)?;
        match answer.await {
            Ok(written) => written
                .map(|held| held.then_some(Status::Succeeded))
                .map_err(QueueError::Batch),
            Err(_) => Err(QueueError::BatcherStopped),
        }
    }
}

impl Batcher {
    /// Records successful attempts in batches: whatever accumulated while the
    /// last batch was being written goes in the next one, so a quiet queue pays
    /// no delay and a busy one pays one round trip and one commit per batch.
    pub(super) async fn run(mut self) {
        while let Some(first) = self.queue.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_COMPLETION_BATCH {
                match self.queue.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let written = self.write(&batch).await.map_err(Arc::new);
            for completion in batch {
                let answer = match &written {
                    Ok(ids) => Ok(ids.contains(&completion.claim.execution_id)),
                    Err(error) => Err(error.clone()),
                };
                let _ = completion.reply.send(answer);
            }
        }
    }

    /// Writes one batch; the ids whose claim still held.
    async fn write(&self, batch: &[Completion]) -> Result<Vec<uuid::Uuid>, QueueError> {
        let rows: Vec<(Claim, Value)> = batch
            .iter()
            .map(|completion| (completion.claim, completion.result.clone()))
            .collect();
        let mut conn = self.pool.get().await?;
        Ok(repository::finish_succeeded_batch(&mut conn, &rows).await?)
    }
}
