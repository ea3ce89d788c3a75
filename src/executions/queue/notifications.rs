//! One `LISTEN` connection per process, fanned out to whoever waits: workers
//! (work was queued; cancel this execution), event feeds (this execution has
//! new events) and event streams (this user's access changed).
//!
//! If the connection drops, it reconnects with backoff; meanwhile workers
//! fall back to polling. On every (re)connect the hub says that anything may
//! have changed ([`Change::Unknown`]), so feeds and streams catch up with one
//! read each: nothing is lost, only later.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::auth::access_cache::ChangeFeed;
use crate::executions::queue::QueueError;
use crate::executions::repository::{CANCEL_CHANNEL, EVENTS_CHANNEL, QUEUED_CHANNEL};

/// The channel on which the database announces, with a user's id, that the
/// user's row changed (token version, active flag, role, profile; deletion) or
/// one of their sign-ins ended: triggers on `users` and `refresh_tokens` send
/// it, so every way a revocation is written reaches the open streams and the
/// access cache.
pub const ACCESS_CHANNEL: &str = "tessera_access_changes";

/// What a notification says changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The execution, or the user, with this id.
    Of(Uuid),
    /// Anything may have: notifications could have been missed (the listener
    /// (re)connected), so every waiter should re-read what it follows.
    Unknown,
}

impl Change {
    /// Whether this change may concern `id`.
    pub fn concerns(self, id: Uuid) -> bool {
        match self {
            Self::Of(changed) => changed == id,
            Self::Unknown => true,
        }
    }
}

/// How many notifications a slow subscriber may fall behind before it is told
/// it lagged (it then re-reads from the database).
const CHANNEL_CAPACITY: usize = 4096;

/// The process's notification fan-out: one database connection serves every
/// waiter in the process, instead of one `LISTEN` connection each.
pub struct NotificationHub {
    stop: CancellationToken,
    /// The listening task, awaited by [`NotificationHub::stop`].
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    changed: broadcast::Sender<Change>,
    access: broadcast::Sender<Change>,
    queued: broadcast::Sender<String>,
    cancel: broadcast::Sender<Uuid>,
    /// The number of the connection listening now; 0 while none is.
    connection: AtomicU64,
    /// Connections made so far, to number the next one.
    connections: AtomicU64,
}

impl NotificationHub {
    /// Starts listening on `database_url` in the background (reconnecting with
    /// backoff), so building the application never waits for the database.
    pub fn start(database_url: String) -> Arc<Self> {
        let hub = Arc::new(Self {
            stop: CancellationToken::new(),
            task: std::sync::Mutex::new(None),
            changed: broadcast::channel(CHANNEL_CAPACITY).0,
            access: broadcast::channel(CHANNEL_CAPACITY).0,
            queued: broadcast::channel(CHANNEL_CAPACITY).0,
            cancel: broadcast::channel(CHANNEL_CAPACITY).0,
            connection: AtomicU64::new(0),
            connections: AtomicU64::new(0),
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

    /// Executions that have new events: the event feeds read them once for
    /// every stream that follows the execution, instead of each stream polling.
    pub fn event_changes(&self) -> broadcast::Receiver<Change> {
        self.changed.subscribe()
    }

    /// Users whose access changed (revoked tokens, deactivation, a new role, an
    /// ended sign-in): their open event streams re-check it at once.
    pub fn access_changes(&self) -> broadcast::Receiver<Change> {
        self.access.subscribe()
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

    /// Whether the hub is listening now (false while it connects or
    /// reconnects): until it is, nothing is pushed, only caught up afterwards.
    pub fn is_listening(&self) -> bool {
        self.connection().is_some()
    }

    async fn listen_forever(&self, database_url: &str) {
        let mut backoff = Duration::from_millis(250);
        loop {
            // A panic here would silently leave every worker on slow polling;
            // catch it, log it and listen again instead.
            let listening = AssertUnwindSafe(self.listen_once(database_url)).catch_unwind();
            let outcome = tokio::select! {
                outcome = listening => Some(outcome),
                // Dropping the connection here closes it before the database goes.
                () = self.stop.cancelled() => None,
            };
            self.connection.store(0, Ordering::Release);
            let Some(outcome) = outcome else {
                return;
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
            "LISTEN {EVENTS_CHANNEL}; LISTEN {QUEUED_CHANNEL}; LISTEN {CANCEL_CHANNEL}; LISTEN {ACCESS_CHANNEL};"
        ))
        .await?;
        tracing::debug!("listening for execution notifications");
        // Whatever was missed while disconnected: wake everyone to re-check.
        let _ = self.queued.send(String::new());
        let _ = self.changed.send(Change::Unknown);
        let _ = self.access.send(Change::Unknown);
        let number = self.connections.fetch_add(1, Ordering::AcqRel) + 1;
        self.connection.store(number, Ordering::Release);
        let mut notifications = std::pin::pin!(conn.notifications_stream());
        while let Some(notification) = notifications.next().await {
            let notification = notification?;
            match notification.channel.as_str() {
                EVENTS_CHANNEL => send_change(&self.changed, &notification.payload),
                ACCESS_CHANNEL => send_change(&self.access, &notification.payload),
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

/// The access cache serves what it remembers only while this hub listens, and
/// only what it remembered on the current connection: notifications sent
/// while the hub was reconnecting are lost.
impl ChangeFeed for NotificationHub {
    fn connection(&self) -> Option<u64> {
        Some(self.connection.load(Ordering::Acquire)).filter(|number| *number != 0)
    }
}

/// Passes on the change a notification names; a payload that is not an id
/// (sent by hand, say) is ignored.
fn send_change(sender: &broadcast::Sender<Change>, payload: &str) {
    if let Ok(id) = Uuid::parse_str(payload) {
        // No receivers is normal (nobody follows this execution or user).
        let _ = sender.send(Change::Of(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_concerns_its_own_id_and_an_unknown_one_concerns_all() {
        let (one, other) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(Change::Of(one).concerns(one));
        assert!(!Change::Of(one).concerns(other));
        assert!(Change::Unknown.concerns(one));
        assert!(Change::Unknown.concerns(other));
    }
}
