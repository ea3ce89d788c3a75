//! Dynamic batching: concurrent requests' token sequences are queued and packed
//! into one engine call, bounded by a token budget, so the engine works on full
//! batches under load (as Hugging Face's text-embeddings-inference does) instead
//! of one request at a time.
//!
//! One thread owns the engine. Requests queue per user, and a batch is formed
//! sequence by sequence, taking turns between the users with work, until the
//! budget is full; a large request is thereby split across batches and
//! interleaved with everyone else's, so one user's 2,048-input request delays
//! another user's sentence by at most a batch, never by all of it. When the
//! queued work leaves room in a batch the thread waits until the oldest request
//! has been queued for `max_wait`, so a lone request on an idle engine waits at
//! most that long for company and a busy engine never waits at all. The queue
//! is bounded: when it is full a request is refused at once (`503` with
//! `Retry-After` at the API) rather than queued forever. A request whose caller
//! has gone away is dropped before its next piece is computed.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use uuid::Uuid;

use super::engine::{EmbeddingEngine, EngineError};
use crate::shared::error::ErrorChain;

/// Limits of the batcher, from configuration.
#[derive(Debug, Clone, Copy)]
pub struct BatcherLimits {
    /// Most tokens in one engine call (one sequence larger than this runs alone).
    pub max_batch_tokens: usize,
    /// Longest a request waits for others to share its batch.
    pub max_wait: Duration,
    /// Most requests queued or part-way through at once; more are refused.
    pub queue_capacity: usize,
}

/// The vectors of one request and where its time went.
#[derive(Debug)]
pub struct BatchOutput {
    /// One unit vector per submitted sequence, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Time between submission and the start of the first engine call it was part of.
    pub queue_time: Duration,
    /// Duration of the engine calls the request was part of, together.
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
    /// The engine returned another number of vectors than it was given
    /// sequences (a bug): the batch's requests fail rather than wait forever.
    #[error("the engine returned {returned} vectors for {sent} sequences")]
    Incomplete {
        /// Sequences in the batch.
        sent: usize,
        /// Vectors that came back.
        returned: usize,
    },
}

/// Where a request's answer goes.
type ReplyTo = oneshot::Sender<Result<BatchOutput, BatchError>>;

/// One request: whose it is, the sequences still to compute, the vectors so far.
struct Job {
    user: Uuid,
    pending: VecDeque<Vec<u32>>,
    vectors: Vec<Vec<f32>>,
    total: usize,
    enqueued: Instant,
    started: Option<Instant>,
    inference_time: Duration,
    reply: ReplyTo,
}

impl Job {
    fn new(user: Uuid, sequences: Vec<Vec<u32>>, reply: ReplyTo) -> Self {
        Self {
            user,
            total: sequences.len(),
            pending: sequences.into(),
            vectors: Vec::new(),
            enqueued: Instant::now(),
            started: None,
            inference_time: Duration::ZERO,
            reply,
        }
    }
}

/// The handle requests submit through; cheap to clone.
#[derive(Debug, Clone)]
pub struct Batcher {
    sender: Sender<Job>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

impl Batcher {
    /// Starts the batching thread that owns `engine`.
    pub fn start(engine: Arc<EmbeddingEngine>, limits: BatcherLimits) -> std::io::Result<Self> {
        let (sender, receiver) = std::sync::mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let finished = Arc::clone(&queued);
        std::thread::Builder::new()
            .name("inference-batcher".into())
            .spawn(move || run(&engine, &receiver, limits, &finished))?;
        Ok(Self {
            sender,
            queued,
            capacity: limits.queue_capacity,
        })
    }

    /// Embeds `user`'s already tokenized sequences as part of whatever batches
    /// form, taking turns with other users; refuses at once when the queue is full.
    pub async fn embed(
        &self,
        user: Uuid,
        sequences: Vec<Vec<u32>>,
    ) -> Result<BatchOutput, BatchError> {
        if sequences.is_empty() {
            return Ok(BatchOutput {
                vectors: Vec::new(),
                queue_time: Duration::ZERO,
                inference_time: Duration::ZERO,
            });
        }
        let admitted = self
            .queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |queued| {
                (queued < self.capacity).then_some(queued + 1)
            });
        if admitted.is_err() {
            metrics::counter!("inference_rejections_total", "reason" => "queue_full").increment(1);
            return Err(BatchError::QueueFull);
        }
        let (reply, answer) = oneshot::channel();
        if self.sender.send(Job::new(user, sequences, reply)).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(BatchError::Stopped);
        }
        metrics::gauge!("inference_queue_depth").increment(1.0);
        answer.await.map_err(|_| BatchError::Stopped)?
    }
}

/// The batching thread's loop: gather requests, form a batch, run it, answer
/// whoever is complete, repeat until every handle is dropped and the work is done.
fn run(
    engine: &EmbeddingEngine,
    receiver: &Receiver<Job>,
    limits: BatcherLimits,
    queued: &AtomicUsize,
) {
    let mut scheduler = Scheduler::default();
    loop {
        if scheduler.is_empty() {
            match receiver.recv() {
                Ok(job) => scheduler.push(job),
                Err(_) => return,
            }
        }
        gather(&mut scheduler, receiver, limits);
        let mut finished = scheduler.drop_abandoned();
        let batch = scheduler.next_batch(limits.max_batch_tokens);
        if !batch.is_empty() {
            finished += process(engine, &mut scheduler, batch);
        }
        queued.fetch_sub(finished, Ordering::SeqCst);
        metrics::gauge!("inference_queue_depth").decrement(finished as f64);
    }
}

/// Takes every request already submitted; then, while the queued work leaves
/// part of a batch empty, waits for more until the oldest request has waited
/// `max_wait`.
fn gather(scheduler: &mut Scheduler, receiver: &Receiver<Job>, limits: BatcherLimits) {
    while let Ok(job) = receiver.try_recv() {
        scheduler.push(job);
    }
    while scheduler.pending_tokens < limits.max_batch_tokens {
        let Some(oldest) = scheduler.oldest_waiting() else {
            return;
        };
        let left = (oldest + limits.max_wait).saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match receiver.recv_timeout(left) {
            Ok(job) => scheduler.push(job),
            Err(_) => return,
        }
    }
}

/// Runs one engine call for `batch` and hands the vectors to the scheduler;
/// returns how many requests it completed (or failed).
fn process(engine: &EmbeddingEngine, scheduler: &mut Scheduler, batch: Batch) -> usize {
    let started = Instant::now();
    scheduler.starting(&batch, started);
    // A panic in a backend is a bug, but it must not take the batching thread (and
    // with it every later request) down.
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        engine.embed_token_ids(&batch.sequences)
    }));
    let took = started.elapsed();
    record_batch(batch.sequences.len(), batch.tokens, took);
    let result = match result {
        Ok(Ok(vectors)) if vectors.len() != batch.sequences.len() => Err(BatchError::Incomplete {
            sent: batch.sequences.len(),
            returned: vectors.len(),
        }),
        Ok(Ok(vectors)) => Ok(vectors),
        Ok(Err(error)) => Err(BatchError::Engine(Arc::new(error))),
        Err(_) => Err(BatchError::Panicked),
    };
    if let Err(error) = &result {
        tracing::error!(error = %ErrorChain(error), "inference batch failed");
    }
    scheduler.finish(batch, result, took)
}

/// One engine call's worth of work: sequences from several requests and, for
/// each, the request it belongs to.
#[derive(Debug, Default)]
struct Batch {
    sequences: Vec<Vec<u32>>,
    jobs: Vec<u64>,
    tokens: usize,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.sequences.is_empty()
    }
}

/// The queued requests, per user, and whose turn it is.
#[derive(Default)]
struct Scheduler {
    jobs: HashMap<u64, Job>,
    /// The users with queued requests, the one served next first; each with
    /// their requests' ids, oldest first.
    turns: VecDeque<(Uuid, VecDeque<u64>)>,
    next_id: u64,
    /// Tokens of the sequences not yet handed to the engine.
    pending_tokens: usize,
}

impl Scheduler {
    fn push(&mut self, job: Job) {
        let id = self.next_id;
        self.next_id += 1;
        self.pending_tokens += job.pending.iter().map(Vec::len).sum::<usize>();
        match self.turns.iter_mut().find(|(user, _)| *user == job.user) {
            Some((_, ids)) => ids.push_back(id),
            None => self.turns.push_back((job.user, VecDeque::from([id]))),
        }
        self.jobs.insert(id, job);
    }

    fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// When the longest-waiting request not yet started was queued.
    fn oldest_waiting(&self) -> Option<Instant> {
        self.jobs
            .values()
            .filter(|job| job.started.is_none())
            .map(|job| job.enqueued)
            .min()
    }

    /// Forgets requests whose callers have gone away; returns how many.
    fn drop_abandoned(&mut self) -> usize {
        let gone: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(_, job)| job.reply.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            self.remove(*id);
        }
        gone.len()
    }

    /// The next batch: one sequence per user in turn, each from that user's
    /// oldest request with sequences left, until the next would pass
    /// `max_tokens` (a batch always takes at least one sequence). The user
    /// after the last one served goes first next time.
    fn next_batch(&mut self, max_tokens: usize) -> Batch {
        let mut batch = Batch::default();
        let mut passed = 0;
        while passed < self.turns.len() {
            let Some((user, ids)) = self.turns.pop_front() else {
                break;
            };
            let taken = ids
                .iter()
                .find(|id| self.jobs.get(id).is_some_and(|job| !job.pending.is_empty()))
                .copied()
                .and_then(|id| self.take(id, &mut batch, max_tokens));
            self.turns.push_back((user, ids));
            passed = if taken.is_some() { 0 } else { passed + 1 };
        }
        batch
    }

    /// Moves request `id`'s next sequence into `batch` if it fits.
    fn take(&mut self, id: u64, batch: &mut Batch, max_tokens: usize) -> Option<()> {
        let job = self.jobs.get_mut(&id)?;
        let length = job.pending.front()?.len();
        if !batch.is_empty() && batch.tokens + length > max_tokens {
            return None;
        }
        let sequence = job.pending.pop_front()?;
        self.pending_tokens -= length;
        batch.tokens += length;
        batch.sequences.push(sequence);
        batch.jobs.push(id);
        Some(())
    }

    /// Marks when the requests in `batch` first reached the engine.
    fn starting(&mut self, batch: &Batch, at: Instant) {
        for id in &batch.jobs {
            if let Some(job) = self.jobs.get_mut(id)
                && job.started.is_none()
            {
                let wait = at.saturating_duration_since(job.enqueued);
                metrics::histogram!("inference_queue_wait_seconds").record(wait.as_secs_f64());
                job.started = Some(at);
            }
        }
    }

    /// Hands a batch's vectors (or its failure) to its requests and answers each
    /// that is complete (or failed); returns how many were answered.
    fn finish(
        &mut self,
        batch: Batch,
        result: Result<Vec<Vec<f32>>, BatchError>,
        took: Duration,
    ) -> usize {
        let mut involved = batch.jobs.clone();
        involved.sort_unstable();
        involved.dedup();
        for id in &involved {
            if let Some(job) = self.jobs.get_mut(id) {
                job.inference_time += took;
            }
        }
        let vectors = match result {
            Ok(vectors) => vectors,
            Err(error) => {
                for id in &involved {
                    if let Some(job) = self.remove(*id) {
                        let _ = job.reply.send(Err(error.clone()));
                    }
                }
                return involved.len();
            }
        };
        for (id, vector) in batch.jobs.iter().zip(vectors) {
            if let Some(job) = self.jobs.get_mut(id) {
                job.vectors.push(vector);
            }
        }
        let complete: Vec<u64> = involved
            .into_iter()
            .filter(|id| {
                self.jobs
                    .get(id)
                    .is_some_and(|job| job.vectors.len() == job.total)
            })
            .collect();
        for id in &complete {
            if let Some(job) = self.remove(*id) {
                let output = BatchOutput {
                    queue_time: job.started.map_or(Duration::ZERO, |at| {
                        at.saturating_duration_since(job.enqueued)
                    }),
                    inference_time: job.inference_time,
                    vectors: job.vectors,
                };
                // A caller that went away mid-batch no longer needs its answer.
                let _ = job.reply.send(Ok(output));
            }
        }
        complete.len()
    }

    /// Takes request `id` out of the queue, with what it had left.
    fn remove(&mut self, id: u64) -> Option<Job> {
        let job = self.jobs.remove(&id)?;
        self.pending_tokens -= job.pending.iter().map(Vec::len).sum::<usize>();
        if let Some(position) = self.turns.iter().position(|(user, _)| *user == job.user) {
            let ids = &mut self.turns[position].1;
            ids.retain(|queued| *queued != id);
            if ids.is_empty() {
                self.turns.remove(position);
            }
        }
        Some(job)
    }
}

fn record_batch(sequences: usize, tokens: usize, took: Duration) {
    metrics::histogram!("inference_batch_sequences").record(sequences as f64);
    metrics::histogram!("inference_batch_tokens").record(tokens as f64);
    metrics::histogram!("inference_batch_seconds").record(took.as_secs_f64());
    metrics::counter!("inference_tokens_total").increment(tokens as u64);
    metrics::counter!("inference_sequences_total").increment(sequences as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    type Answer = oneshot::Receiver<Result<BatchOutput, BatchError>>;

    /// Queues `sequences` for `user`; the receiver gets the answer.
    fn submit(scheduler: &mut Scheduler, user: Uuid, sequences: Vec<Vec<u32>>) -> Answer {
        let (reply, answer) = oneshot::channel();
        scheduler.push(Job::new(user, sequences, reply));
        answer
    }

    /// A stand-in engine: each sequence's "vector" is its ids.
    fn fake_vectors(batch: &Batch) -> Vec<Vec<f32>> {
        batch
            .sequences
            .iter()
            .map(|ids| ids.iter().map(|&id| id as f32).collect())
            .collect()
    }

    /// Forms and finishes batches until the queue is empty; returns how many it took.
    fn drain(scheduler: &mut Scheduler, max_tokens: usize) -> usize {
        let mut batches = 0;
        while !scheduler.is_empty() {
            let batch = scheduler.next_batch(max_tokens);
            assert!(!batch.is_empty(), "queued work always forms a batch");
            assert!(
                batch.tokens <= max_tokens || batch.sequences.len() == 1,
                "{} tokens",
                batch.tokens
            );
            let vectors = fake_vectors(&batch);
            scheduler.finish(batch, Ok(vectors), Duration::ZERO);
            batches += 1;
        }
        batches
    }

    fn vectors_of(mut answer: Answer) -> Vec<Vec<f32>> {
        answer
            .try_recv()
            .expect("the request was answered")
            .expect("the request succeeded")
            .vectors
    }

    #[test]
    fn a_sentence_queued_behind_a_huge_request_rides_in_the_first_batch() {
        let mut scheduler = Scheduler::default();
        let (flooder, victim) = (Uuid::new_v4(), Uuid::new_v4());
        // 2,048 inputs of 256 tokens: 64 batches of 8,192 tokens on its own.
        let huge: Vec<Vec<u32>> = (0..2048).map(|i| vec![i; 256]).collect();
        let mut flood = submit(&mut scheduler, flooder, huge.clone());
        let mut sentence = submit(&mut scheduler, victim, vec![vec![7; 12]]);

        let first = scheduler.next_batch(8192);
        assert!(first.tokens <= 8192);
        let victim_ids: Vec<u64> = scheduler
            .turns
            .iter()
            .filter(|(user, _)| *user == victim)
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect();
        assert!(
            first.jobs.iter().any(|id| victim_ids.contains(id)),
            "the sentence is in the first batch"
        );
        let vectors = fake_vectors(&first);
        assert_eq!(scheduler.finish(first, Ok(vectors), Duration::ZERO), 1);
        assert_eq!(vectors_of(sentence), vec![vec![7.0; 12]]);
        assert!(
            flood.try_recv().is_err(),
            "the huge request is not done yet"
        );

        assert!(drain(&mut scheduler, 8192) >= 63);
        let expected: Vec<Vec<f32>> = huge
            .iter()
            .map(|ids| ids.iter().map(|&id| id as f32).collect())
            .collect();
        assert_eq!(vectors_of(flood), expected, "every vector, in order");
        sentence = submit(&mut scheduler, victim, vec![vec![1]]);
        drain(&mut scheduler, 8192);
        assert_eq!(vectors_of(sentence), vec![vec![1.0]]);
        assert_eq!(scheduler.pending_tokens, 0);
        assert!(scheduler.turns.is_empty());
    }

    #[test]
    fn users_take_turns_and_each_users_requests_keep_their_order() {
        let mut scheduler = Scheduler::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first_a = submit(&mut scheduler, a, vec![vec![1], vec![2], vec![3]]);
        let second_a = submit(&mut scheduler, a, vec![vec![4]]);
        let only_b = submit(&mut scheduler, b, vec![vec![9], vec![8]]);
        // Budget 2: each batch is one of a's and one of b's while both have work.
        let batch = scheduler.next_batch(2);
        assert_eq!(batch.sequences, vec![vec![1], vec![9]]);
        let vectors = fake_vectors(&batch);
        scheduler.finish(batch, Ok(vectors), Duration::ZERO);
        drain(&mut scheduler, 2);
        assert_eq!(vectors_of(first_a), vec![vec![1.0], vec![2.0], vec![3.0]]);
        assert_eq!(vectors_of(second_a), vec![vec![4.0]]);
        assert_eq!(vectors_of(only_b), vec![vec![9.0], vec![8.0]]);
    }

    #[test]
    fn a_sequence_over_the_budget_runs_alone_and_a_failure_fails_only_its_batch() {
        let mut scheduler = Scheduler::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let big = submit(&mut scheduler, a, vec![vec![1; 10]]);
        let small = submit(&mut scheduler, b, vec![vec![2; 3]]);
        let batch = scheduler.next_batch(4);
        assert_eq!(batch.sequences, vec![vec![1; 10]], "alone");
        assert_eq!(
            scheduler.finish(batch, Err(BatchError::Panicked), Duration::ZERO),
            1
        );
        let mut big = big;
        assert!(matches!(big.try_recv(), Ok(Err(BatchError::Panicked))));
        drain(&mut scheduler, 4);
        assert_eq!(vectors_of(small), vec![vec![2.0; 3]]);
    }

    #[test]
    fn requests_whose_callers_left_are_dropped_before_their_next_piece() {
        let mut scheduler = Scheduler::default();
        let user = Uuid::new_v4();
        let gone = submit(&mut scheduler, user, vec![vec![1; 4]; 10]);
        let staying = submit(&mut scheduler, Uuid::new_v4(), vec![vec![2]]);
        drop(gone);
        assert_eq!(scheduler.drop_abandoned(), 1);
        assert_eq!(scheduler.pending_tokens, 1);
        assert_eq!(drain(&mut scheduler, 100), 1);
        assert_eq!(vectors_of(staying), vec![vec![2.0]]);
    }
}
