//! Bounded concurrency for the CPU work a request does off the async runtime
//! (tokenizing its texts): at most `concurrent` jobs run at once and at most
//! `max_waiting` wait for a slot. A request past both is refused at once, so a
//! burst of large requests cannot occupy every blocking thread or queue
//! without bound behind them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

/// Why a job did not run to completion.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// Every slot is taken and the waiting line is full: try again shortly.
    #[error("every slot is taken and {0} jobs are already waiting")]
    Full(usize),
    /// The job panicked (or the runtime is shutting down).
    #[error("the job did not finish")]
    Failed(#[source] tokio::task::JoinError),
}

/// Slots for blocking jobs, with a bounded waiting line.
#[derive(Debug)]
pub struct BlockingSlots {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl BlockingSlots {
    /// At most `concurrent` jobs at once (at least one), `max_waiting` in line.
    pub fn new(concurrent: usize, max_waiting: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(concurrent.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// Runs `job` on a blocking thread once a slot is free, or refuses at once
    /// when the line is full.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, SlotError> {
        let slot = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => self.wait_for_slot().await?,
        };
        tokio::task::spawn_blocking(move || {
            // The slot stays taken until the job is done, even if its caller is gone.
            let _slot = slot;
            job()
        })
        .await
        .map_err(SlotError::Failed)
    }

    /// Waits in line for a slot, unless the line is full.
    async fn wait_for_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, SlotError> {
        let _in_line = InLine::join(&self.waiting, self.max_waiting)?;
        // The semaphore is never closed, so acquiring only ever waits.
        loop {
            if let Ok(slot) = Arc::clone(&self.slots).acquire_owned().await {
                return Ok(slot);
            }
        }
    }
}

/// A place in the waiting line, left when dropped (also when the caller goes away).
struct InLine<'a> {
    waiting: &'a AtomicUsize,
}

impl<'a> InLine<'a> {
    fn join(waiting: &'a AtomicUsize, max_waiting: usize) -> Result<Self, SlotError> {
        waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |count| {
                (count < max_waiting).then_some(count + 1)
            })
            .map(|_| Self { waiting })
            .map_err(SlotError::Full)
    }
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_slots_and_the_line_a_job_is_refused_at_once() {
        let slots = Arc::new(BlockingSlots::new(1, 1));
        let (release, blocked) = mpsc::channel::<()>();
        let (started, has_started) = mpsc::channel::<()>();
        let running = tokio::spawn({
            let slots = Arc::clone(&slots);
            async move {
                slots
                    .run(move || {
                        started.send(()).ok();
                        blocked.recv().ok();
                        1
                    })
                    .await
            }
        });
        tokio::task::spawn_blocking(move || has_started.recv())
            .await
            .unwrap()
            .unwrap();
        let waiting = tokio::spawn({
            let slots = Arc::clone(&slots);
            async move { slots.run(|| 2).await }
        });
        // The waiting job holds the one place in line once it has been polled.
        while slots.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(slots.run(|| 3).await, Err(SlotError::Full(1))));
        release.send(()).unwrap();
        assert_eq!(running.await.unwrap().unwrap(), 1);
        assert_eq!(waiting.await.unwrap().unwrap(), 2);
        assert_eq!(slots.run(|| 4).await.unwrap(), 4, "free again");
    }
}
