//! Event feeds: one per execution that has open streams. When the `LISTEN`
//! connection says an execution has new events, its feed reads them once and
//! hands them to every stream of that execution, so N streams of one execution
//! cost one read per change and idle streams cost none.
//!
//! Correctness rests on one order: a stream subscribes to its feed *before* it
//! reads what was recorded so far, and a feed reads only after the
//! notification of a commit. Every event is then either in the stream's own
//! read or in a batch the feed sends it later (or both; streams drop events
//! at or before the last one they sent, so nothing is sent twice).
//! Notifications that may have been missed (the listener reconnected, the
//! hub's channel lagged) make every feed read once more.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use crate::core::db::DbPool;
use crate::executions::models::ExecutionEvent;
use crate::executions::queue::{Change, NotificationHub};
use crate::executions::repository;
use crate::shared::error::AppError;

/// Batches of events one slow stream may fall behind before it is told it
/// lagged (it then catches up with a read of its own).
const FEED_CAPACITY: usize = 256;

/// How long a feed waits before reading again after a failed read.
const RETRY_AFTER_FAILED_READ: Duration = Duration::from_secs(1);

/// New events of one execution, in id order.
pub type EventBatch = Arc<[ExecutionEvent]>;

/// The feeds of one process.
pub struct EventFeeds {
    pool: DbPool,
    feeds: Mutex<HashMap<Uuid, Weak<Feed>>>,
    /// Event reads made for streams (a stream's first read, its catch-ups,
    /// and every feed read): how the cost of streaming is observed.
    reads: AtomicU64,
}

/// The shared part of one execution's feed: what its reader task and its
/// subscribers both use.
struct FeedState {
    id: Uuid,
    /// The newest event the feed has read or been told about; `None` until
    /// its first subscriber set it. Held across a read and its send, so a
    /// subscription never falls between them.
    cursor: tokio::sync::Mutex<Option<i64>>,
    events: broadcast::Sender<EventBatch>,
    wake: Notify,
}

/// One execution's feed, owned by its streams: when the last one goes, the
/// reader task stops and the feed leaves the table.
pub struct Feed {
    state: Arc<FeedState>,
    feeds: Weak<EventFeeds>,
    _stop_reader: DropGuard,
}

/// A stream's place in its execution's feed.
pub struct Subscription {
    /// Keeps the feed alive while the stream is open.
    _feed: Arc<Feed>,
    /// The batches the feed reads from now on.
    pub events: broadcast::Receiver<EventBatch>,
}

impl EventFeeds {
    /// Feeds that read through `pool`, woken by `hub`'s notifications.
    pub fn start(pool: DbPool, hub: &NotificationHub) -> Arc<Self> {
        let feeds = Arc::new(Self {
            pool,
            feeds: Mutex::default(),
            reads: AtomicU64::new(0),
        });
        tokio::spawn(dispatch(Arc::downgrade(&feeds), hub.event_changes()));
        feeds
    }

    /// Subscribes to the feed of execution `id`, creating it (and reading
    /// where it starts) if no stream follows the execution yet. Call before
    /// reading the events recorded so far.
    pub async fn subscribe(self: &Arc<Self>, id: Uuid) -> Result<Subscription, AppError> {
        let feed = self.feed_of(id);
        let mut cursor = feed.state.cursor.lock().await;
        if cursor.is_none() {
            let mut conn = self.pool.get().await?;
            self.count_read();
            *cursor = Some(repository::last_event_id(&mut conn, id).await?);
        }
        let events = feed.state.events.subscribe();
        drop(cursor);
        Ok(Subscription {
            _feed: feed,
            events,
        })
    }

    /// Counts one event read made for a stream.
    pub fn count_read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("execution_event_reads_total").increment(1);
    }

    /// Event reads made for streams since the process started.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// The live feed of `id`, or a new one with its reader started.
    fn feed_of(self: &Arc<Self>, id: Uuid) -> Arc<Feed> {
        let mut feeds = self.lock();
        if let Some(feed) = feeds.get(&id).and_then(Weak::upgrade) {
            return feed;
        }
        let state = Arc::new(FeedState {
            id,
            cursor: tokio::sync::Mutex::new(None),
            events: broadcast::channel(FEED_CAPACITY).0,
            wake: Notify::new(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(read_on_wake(
            Arc::downgrade(self),
            state.clone(),
            stop.clone(),
        ));
        let feed = Arc::new(Feed {
            state,
            feeds: Arc::downgrade(self),
            _stop_reader: stop.drop_guard(),
        });
        feeds.insert(id, Arc::downgrade(&feed));
        feed
    }

    /// Wakes the feeds a change may concern.
    fn wake(&self, change: Change) {
        // Collected first: dropping the last handle of a feed takes the
        // table's lock, so none may be dropped while it is held.
        let woken: Vec<Arc<Feed>> = self
            .lock()
            .iter()
            .filter(|(id, _)| change.concerns(**id))
            .filter_map(|(_, feed)| feed.upgrade())
            .collect();
        for feed in woken {
            feed.state.wake.notify_one();
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Weak<Feed>>> {
        // Each change to the table is one insert or remove: a panic elsewhere
        // cannot leave it half-written.
        self.feeds.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        let Some(feeds) = self.feeds.upgrade() else {
            return;
        };
        let mut table = feeds.lock();
        // A new feed may already have replaced this one under the same id.
        if table
            .get(&self.state.id)
            .is_some_and(|feed| feed.strong_count() == 0)
        {
            table.remove(&self.state.id);
        }
    }
}

/// Passes the hub's notifications to the feeds they concern, until the feeds
/// or the hub go away.
async fn dispatch(feeds: Weak<EventFeeds>, mut changes: broadcast::Receiver<Change>) {
    loop {
        let change = match changes.recv().await {
            Ok(change) => change,
            // Some notifications were dropped: any feed may have missed one.
            Err(broadcast::error::RecvError::Lagged(_)) => Change::Unknown,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(feeds) = feeds.upgrade() else {
            return;
        };
        feeds.wake(change);
    }
}

/// One feed's reader: on each wake, reads the events after its cursor and
/// sends them to the feed's streams. Wakes that come during a read are
/// folded into one more read.
async fn read_on_wake(feeds: Weak<EventFeeds>, state: Arc<FeedState>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = state.wake.notified() => {}
        }
        let Some(feeds) = feeds.upgrade() else {
            return;
        };
        if let Err(error) = read_and_send(&feeds, &state).await {
            tracing::warn!(%error, execution_id = %state.id, "event feed could not read; retrying");
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RETRY_AFTER_FAILED_READ) => state.wake.notify_one(),
            }
        }
    }
}

/// Reads the events after the feed's cursor and sends them as one batch.
async fn read_and_send(feeds: &EventFeeds, state: &FeedState) -> Result<(), AppError> {
    let mut cursor = state.cursor.lock().await;
    // No subscriber has set the start yet; the first one reads for itself.
    let Some(after) = *cursor else {
        return Ok(());
    };
    let mut conn = feeds.pool.get().await?;
    feeds.count_read();
    let events = repository::events_after(&mut conn, state.id, after).await?;
    if let Some(newest) = events.last() {
        *cursor = Some(newest.id);
        // No receivers is possible for a moment (the last stream is closing).
        let _ = state.events.send(events.into());
    }
    Ok(())
}
