//! Dynamic batching: concurrent requests' token sequences are queued and packed
//! into one engine call, bounded by a token budget, so the engine works on full
//! batches under load (as Hugging Face's text-embeddings-inference does) instead
//! of one request at a time.
//!
//! One thread owns the engine. It takes the oldest request, then everything
//! else already queued, up to the budget; when that leaves room it waits until the
//! oldest request has been queued for `max_wait`, so a lone request on an idle
//! engine waits at most that long for company and a busy engine never waits at
//! all. The queue is bounded: when it is full a request is refused at once
//! (`429` with `Retry-After` at the API) rather than queued forever. A caller that
//! has gone away by the time its turn comes is skipped.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::engine::{EmbeddingEngine, EngineError};
use crate::shared::error::ErrorChain;

/// Limits of the batcher, from configuration.
#[derive(Debug, Clone, Copy)]
pub struct BatcherLimits {
    /// Most tokens in one engine call (one request larger than this runs alone).
    pub max_batch_tokens: usize,
    /// Longest a request waits for others to share its batch.
    pub max_wait: Duration,
    /// Most requests waiting at once; more are refused.
    pub queue_capacity: usize,
}

/// The vectors of one request and where its time went.
#[derive(Debug)]
pub struct BatchOutput {
    /// One unit vector per submitted sequence, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Time between submission and the start of the engine call.
    pub queue_time: Duration,
    /// Duration of the engine call the request was part of.
    pub inference_time: Duration,
}

/// Why a request got no vectors. Cloneable: one failed batch fails every
/// request in it with the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    /// The queue is full: the caller should retry later.
    #[error("the inference queue is full")]
    QueueFull,
    /// The batching thread has stopped (the engine panicked repeatedly or the
    /// process is shutting down).
    #[error("the inference engine has stopped")]
    Stopped,
    /// The engine failed on the batch (shared by every request in it).
    #[error("inference failed")]
    Engine(#[source] Arc<EngineError>),
    /// A backend panicked on the batch; the thread survives it.
    #[error("the engine panicked on this batch")]
    Panicked,
}

/// Where one job's vectors go: how many it submitted, how long it queued, its caller.
type Reply = (
    usize,
    Duration,
    oneshot::Sender<Result<BatchOutput, BatchError>>,
);

/// One queued request.
struct Job {
    sequences: Vec<Vec<u32>>,
    tokens: usize,
    enqueued: Instant,
    reply: oneshot::Sender<Result<BatchOutput, BatchError>>,
}

/// The handle requests submit through; cheap to clone.
#[derive(Debug, Clone)]
pub struct Batcher {
    sender: SyncSender<Job>,
}

impl Batcher {
    /// Starts the batching thread that owns `engine`.
    pub fn start(engine: Arc<EmbeddingEngine>, limits: BatcherLimits) -> std::io::Result<Self> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(limits.queue_capacity);
        std::thread::Builder::new()
            .name("inference-batcher".into())
            .spawn(move || run(&engine, &receiver, limits))?;
        Ok(Self { sender })
    }

    /// Embeds already tokenized sequences as part of whatever batch forms; refuses
    /// at once when the queue is full.
    pub async fn embed(&self, sequences: Vec<Vec<u32>>) -> Result<BatchOutput, BatchError> {
        if sequences.is_empty() {
            return Ok(BatchOutput {
                vectors: Vec::new(),
                queue_time: Duration::ZERO,
                inference_time: Duration::ZERO,
            });
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            tokens: sequences.iter().map(Vec::len).sum(),
            sequences,
            enqueued: Instant::now(),
            reply,
        };
        match self.sender.try_send(job) {
            Ok(()) => metrics::gauge!("inference_queue_depth").increment(1.0),
            Err(TrySendError::Full(_)) => {
                metrics::counter!("inference_rejections_total", "reason" => "queue_full")
                    .increment(1);
                return Err(BatchError::QueueFull);
            }
            Err(TrySendError::Disconnected(_)) => return Err(BatchError::Stopped),
        }
        answer.await.map_err(|_| BatchError::Stopped)?
    }
}

/// The batching thread's loop: form a batch, run it, answer, repeat until every
/// handle is dropped.
fn run(engine: &EmbeddingEngine, receiver: &Receiver<Job>, limits: BatcherLimits) {
    let mut held_over: Option<Job> = None;
    loop {
        let first = match held_over.take() {
            Some(job) => job,
            None => match receiver.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let mut batch = vec![first];
        held_over = fill(&mut batch, receiver, limits);
        metrics::gauge!("inference_queue_depth").decrement(batch.len() as f64);
        let live: Vec<Job> = batch
            .into_iter()
            .filter(|job| !job.reply.is_closed())
            .collect();
        if !live.is_empty() {
            process(engine, live);
        }
    }
}

/// Adds queued jobs to `batch` until the token budget is reached or the oldest job
/// has waited `max_wait`; returns a job that did not fit, for the next batch.
fn fill(batch: &mut Vec<Job>, receiver: &Receiver<Job>, limits: BatcherLimits) -> Option<Job> {
    let mut tokens: usize = batch.iter().map(|job| job.tokens).sum();
    let deadline = batch[0].enqueued + limits.max_wait;
    while tokens < limits.max_batch_tokens {
        let waited = deadline.saturating_duration_since(Instant::now());
        let next = if waited.is_zero() {
            receiver.try_recv().ok()
        } else {
            receiver.recv_timeout(waited).ok()
        };
        let job = next?;
        if tokens + job.tokens > limits.max_batch_tokens {
            return Some(job);
        }
        tokens += job.tokens;
        batch.push(job);
    }
    None
}

/// Runs one engine call for every job of `batch` and routes the vectors back.
fn process(engine: &EmbeddingEngine, batch: Vec<Job>) {
    let started = Instant::now();
    let mut sequences = Vec::new();
    let mut replies = Vec::with_capacity(batch.len());
    let mut tokens = 0;
    for job in batch {
        let wait = started.saturating_duration_since(job.enqueued);
        metrics::histogram!("inference_queue_wait_seconds").record(wait.as_secs_f64());
        tokens += job.tokens;
        replies.push((job.sequences.len(), wait, job.reply));
        sequences.extend(job.sequences);
    }
    // A panic in a backend is a bug, but it must not take the batching thread (and
    // with it every later request) down.
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| engine.embed_token_ids(&sequences)));
    let inference_time = started.elapsed();
    record_batch(sequences.len(), tokens, inference_time);
    let mut vectors = match result {
        Ok(Ok(vectors)) => vectors.into_iter(),
        Ok(Err(error)) => return fail_all(replies, &BatchError::Engine(Arc::new(error))),
        Err(_) => return fail_all(replies, &BatchError::Panicked),
    };
    for (count, queue_time, reply) in replies {
        let output = BatchOutput {
            vectors: vectors.by_ref().take(count).collect(),
            queue_time,
            inference_time,
        };
        // A caller that went away mid-batch no longer needs its answer.
        let _ = reply.send(Ok(output));
    }
}

fn fail_all(replies: Vec<Reply>, error: &BatchError) {
    tracing::error!(error = %ErrorChain(error), "inference batch failed");
    for (_, _, reply) in replies {
        let _ = reply.send(Err(error.clone()));
    }
}

fn record_batch(sequences: usize, tokens: usize, took: Duration) {
    metrics::histogram!("inference_batch_sequences").record(sequences as f64);
    metrics::histogram!("inference_batch_tokens").record(tokens as f64);
    metrics::histogram!("inference_batch_seconds").record(took.as_secs_f64());
    metrics::counter!("inference_tokens_total").increment(tokens as u64);
    metrics::counter!("inference_sequences_total").increment(sequences as u64);
}
