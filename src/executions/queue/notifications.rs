//! One `LISTEN` connection per process, fanned out to whoever waits: workers
//! (work was queued; cancel this execution) and event streams (this
//! execution changed).
//!
//! If the connection drops, it reconnects with backoff; meanwhile workers
//! fall back to polling and streams to periodic checks, so nothing is lost,
//! only slower.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::executions::queue::QueueError;
use crate::executions::repository::{CANCEL_CHANNEL, EVENTS_CHANNEL, QUEUED_CHANNEL};

/// How many notifications a slow subscriber may fall behind before it is told
/// it lagged (it then re-reads from the database).
const CHANNEL_CAPACITY: usize = 4096;

/// The process's notification fan-out: one database connection serves every
/// waiter in the process, instead of one `LISTEN` connection each.
pub struct NotificationHub {
    stop: CancellationToken,
    /// The listening task, awaited by [`NotificationHub::stop`].
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    changed: broadcast::Sender<Uuid>,
    queued: broadcast::Sender<String>,
    cancel: broadcast::Sender<Uuid>,
}

impl NotificationHub {
    /// Starts listening on `database_url` in the background (reconnecting with
    /// backoff), so building the application never waits for the database.
    pub fn start(database_url: String) -> Arc<Self> {
        let hub = Arc::new(Self {
            stop: CancellationToken::new(),
            task: std::sync::Mutex::new(None),
            changed: broadcast::channel(CHANNEL_CAPACITY).0,
            queued: broadcast::channel(CHANNEL_CAPACITY).0,
            cancel: broadcast::channel(CHANNEL_CAPACITY).0,
        });
        let listener = hub.clone();
        let task = tokio::spawn(
            async move { listener.listen_forever(&database_url).await }
                .instrument(tracing::info_span!("execution_listener")),
        );
        if let Ok(mut slot) = hub.task.lock() {
            *slot = Some(task);
        }
        hub
    }

    /// Stops listening and waits until the connection is closed, so a database
    /// stopped right after (the local cluster at shutdown) cuts no live
    /// connection and logs no reconnect.
    pub async fn stop(&self) {
        self.stop.cancel();
        let task = self.task.lock().ok().and_then(|mut slot| slot.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Ids of executions that changed: event streams wake on them instead of polling.
    pub fn changed(&self) -> broadcast::Receiver<Uuid> {
        self.changed.subscribe()
    }

    /// Names of queues that got work: idle claim loops wake on them instead of
    /// waiting out the poll interval.
    pub fn queued(&self) -> broadcast::Receiver<String> {
        self.queued.subscribe()
    }

    /// Ids of executions whose cancellation was requested, through any process:
    /// the worker running one stops it within moments, not at its next heartbeat.
    pub fn cancel_requests(&self) -> broadcast::Receiver<Uuid> {
        self.cancel.subscribe()
    }

    async fn listen_forever(&self, database_url: &str) {
        let mut backoff = Duration::from_millis(250);
        loop {
            // A panic here would silently leave every worker on slow polling;
            // catch it, log it and listen again instead.
            let listening = AssertUnwindSafe(self.listen_once(database_url)).catch_unwind();
            let outcome = tokio::select! {
                outcome = listening => outcome,
                // Dropping the connection here closes it before the database goes.
                () = self.stop.cancelled() => return,
            };
            match outcome {
                Ok(Ok(())) => backoff = Duration::from_millis(250),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "notification listener lost its connection; reconnecting")
                }
                Err(_) => tracing::error!("notification listener panicked; restarting it"),
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Listens until the connection fails.
    async fn listen_once(&self, database_url: &str) -> Result<(), QueueError> {
        let mut conn = AsyncPgConnection::establish(database_url).await?;
        conn.batch_execute(&format!(
            "LISTEN {EVENTS_CHANNEL}; LISTEN {QUEUED_CHANNEL}; LISTEN {CANCEL_CHANNEL};"
        ))
        .await?;
        tracing::debug!("listening for execution notifications");
        // Whatever was missed while disconnected: wake everyone to re-check.
        let _ = self.queued.send(String::new());
        let mut notifications = std::pin::pin!(conn.notifications_stream());
        while let Some(notification) = notifications.next().await {
            let notification = notification?;
            match notification.channel.as_str() {
                EVENTS_CHANNEL => self.send_id(&self.changed, &notification.payload),
                CANCEL_CHANNEL => self.send_id(&self.cancel, &notification.payload),
                QUEUED_CHANNEL => {
                    let _ = self.queued.send(notification.payload);
                }
                _ => {}
            }
        }
        Err(QueueError::NotificationsEnded)
    }

    fn send_id(&self, sender: &broadcast::Sender<Uuid>, payload: &str) {
        if let Ok(id) = Uuid::parse_str(payload) {
            // No receivers is normal (nobody is watching this execution).
            let _ = sender.send(id);
        }
    }
}
