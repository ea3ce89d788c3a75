//! The event stream of one execution (Server-Sent Events): everything recorded
//! so far after the client's `Last-Event-ID`, then each change as the
//! execution's feed pushes it, until the execution has finished and every
//! event was sent. The HTTP handler in `router.rs` only parses and delegates.
//!
//! A stream is a bounded resource: it takes a slot (per user and per process,
//! `slots`) and keeps the load shedder's permit for its whole life; it ends
//! after a maximum lifetime (the client resumes with `Last-Event-ID`), and as
//! soon as its caller may no longer see the execution: each access change the
//! database announces for the caller, and a slow periodic check, make it
//! authenticate its token again.

mod feeds;
mod slots;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::http::{HeaderMap, header};
use axum::response::sse::Event;
use futures_util::Stream;
use tokio::sync::broadcast;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use uuid::Uuid;

use crate::auth::service::{self as auth, AuthState};
use crate::core::db::DbPool;
use crate::core::http::HeldPermit;
use crate::core::platform::Platform;
use crate::executions::config::EventStreamConfig;
use crate::executions::models::{ExecutionEvent, Status};
use crate::executions::queue::{Change, NotificationHub};
use crate::executions::service;
use crate::shared::error::{AppError, FieldError};
use crate::users::models::User;

pub use feeds::{EventBatch, EventFeeds, Subscription};
pub use slots::{SlotRefused, StreamSlot, StreamSlots};

/// What the event streams of one process share: their limits, their slots,
/// the per-execution feeds and the hub that announces access changes.
pub struct EventStreams {
    config: EventStreamConfig,
    slots: Arc<StreamSlots>,
    feeds: Arc<EventFeeds>,
    hub: Arc<NotificationHub>,
}

impl EventStreams {
    /// Streams under `config`, reading through `pool`, woken by `hub`.
    pub fn start(config: EventStreamConfig, pool: DbPool, hub: Arc<NotificationHub>) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(StreamSlots::new(config.max_per_user, config.max_total)),
            feeds: EventFeeds::start(pool, &hub),
            config,
            hub,
        })
    }

    /// Streams open now in this process.
    pub fn open(&self) -> usize {
        self.slots.open()
    }

    /// Event reads made for streams since the process started (first reads,
    /// catch-ups and feed reads), exported as `execution_event_reads_total`.
    pub fn reads(&self) -> u64 {
        self.feeds.reads()
    }
}

/// Who asks for which stream: the caller, the access token they sent (each
/// re-check authenticates it again), the execution and where to resume.
pub struct StreamRequest {
    /// The authenticated caller.
    pub user: User,
    /// Their bearer token.
    pub token: String,
    /// The execution.
    pub id: Uuid,
    /// The last event the client saw (0: none).
    pub after: i64,
}

/// The events of the requested execution after `after`, then its changes until
/// it finishes, the stream's lifetime ends or the caller loses access;
/// `NotFound` unless the caller may see it, `429`/`503` past the stream limits.
/// `permit` (the load shedder's) is held until the stream is dropped.
pub async fn stream(
    platform: Platform,
    auth: AuthState,
    streams: Arc<EventStreams>,
    request: StreamRequest,
    permit: HeldPermit,
) -> Result<impl Stream<Item = Result<Event, Infallible>> + use<>, AppError> {
    let slot = streams
        .slots
        .try_take(request.user.id)
        .map_err(|refused| refusal(refused, &streams.config))?;
    // Subscribe before reading, so no change between the read and the wait is missed.
    let feed = streams.feeds.subscribe(request.id).await?;
    let access = streams.hub.access_changes();
    streams.feeds.count_read();
    let (execution, events) =
        service::events_after(&platform, &request.user, request.id, request.after).await?;
    let period = streams.config.access_recheck;
    let mut recheck = tokio::time::interval_at(Instant::now() + period, period);
    recheck.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let stream = EventStream {
        ends_at: Instant::now() + streams.config.max_lifetime,
        caller: Caller {
            platform,
            auth,
            user: request.user,
            token: request.token,
        },
        id: request.id,
        last_id: request.after,
        pending: events.into(),
        finished: execution.status.is_finished(),
        feed,
        access,
        recheck,
        streams,
        _slot: slot,
        _permit: permit,
    };
    Ok(futures_util::stream::unfold(stream, EventStream::next))
}

/// The answer to a stream the limits refuse: the caller's own limit is theirs
/// to free (429), the process's is the service's (503, like the load shedder).
fn refusal(refused: SlotRefused, config: &EventStreamConfig) -> AppError {
    match refused {
        SlotRefused::UserAtLimit => AppError::LimitReached {
            code: "too_many_streams",
            detail: format!(
                "You have {} event streams open, the most one account may; close one first.",
                config.max_per_user
            ),
            retry_after: RETRY_FULL,
        },
        SlotRefused::ProcessAtLimit => AppError::Unavailable {
            code: "overloaded",
            detail: "The service has as many event streams open as it serves; try again shortly."
                .to_owned(),
            retry_after: Some(RETRY_FULL),
        },
    }
}

/// When a refused stream may try again.
const RETRY_FULL: std::time::Duration = std::time::Duration::from_secs(5);

/// The bearer token the caller authenticated with, kept so that the stream can
/// authenticate it again when the caller's access changes.
pub fn bearer_token(headers: &HeaderMap) -> Result<String, AppError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| AppError::Unauthorized {
            code: "not_authenticated",
            detail: "Sign in and send `Authorization: Bearer <access token>`.".to_owned(),
        })
}

/// The `Last-Event-ID` a reconnecting client sends (0 without one), so that the
/// stream resumes after the last event it saw instead of replaying them all.
pub fn last_event_id(headers: &HeaderMap) -> Result<i64, AppError> {
    match headers.get("last-event-id") {
        None => Ok(0),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<i64>().ok())
            .filter(|id| *id >= 0)
            .ok_or_else(|| {
                AppError::Validation(vec![
                    FieldError::header("Last-Event-ID")
                        .because("must be the id of an event this stream sent"),
                ])
            }),
    }
}

/// The caller of a stream, as it was authenticated, and what it takes to
/// authenticate them again.
struct Caller {
    platform: Platform,
    auth: AuthState,
    user: User,
    token: String,
}

/// The state of one event stream. The slot and the permit are released when
/// the response body, which owns this, is dropped.
struct EventStream {
    caller: Caller,
    id: Uuid,
    last_id: i64,
    pending: VecDeque<ExecutionEvent>,
    finished: bool,
    feed: Subscription,
    access: broadcast::Receiver<Change>,
    recheck: Interval,
    ends_at: Instant,
    streams: Arc<EventStreams>,
    _slot: StreamSlot,
    _permit: HeldPermit,
}

/// Why a waiting stream woke.
enum Wake {
    /// Its feed read new events.
    Events(EventBatch),
    /// It fell behind its feed: some batches never reached it.
    Missed,
    /// Its caller's access may have changed (or it is time to check anyway).
    CheckAccess,
    /// Its lifetime is over, or what feeds it has gone.
    Over,
}

impl EventStream {
    /// The next event; `None` once the execution has finished and every event
    /// was sent, the lifetime is over, or the caller lost access.
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                if event.id <= self.last_id {
                    // Both in the stream's own read and in a feed's batch.
                    continue;
                }
                self.last_id = event.id;
                if event.event == "status" && is_terminal(&event.data) {
                    self.finished = true;
                }
                return Some((Ok(to_sse(&event)), self));
            }
            if self.finished {
                return None;
            }
            let still_open = match self.wait().await {
                Wake::Events(batch) => {
                    self.pending.extend(batch.iter().cloned());
                    true
                }
                Wake::Missed => self.catch_up().await,
                Wake::CheckAccess => self.still_allowed().await,
                Wake::Over => false,
            };
            if !still_open {
                return None;
            }
        }
    }

    /// Waits for the next thing that concerns this stream.
    async fn wait(&mut self) -> Wake {
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(self.ends_at) => return Wake::Over,
                batch = self.feed.events.recv() => return match batch {
                    Ok(batch) => Wake::Events(batch),
                    Err(broadcast::error::RecvError::Lagged(_)) => Wake::Missed,
                    Err(broadcast::error::RecvError::Closed) => Wake::Over,
                },
                change = self.access.recv() => match change {
                    Ok(change) if change.concerns(self.caller.user.id) => return Wake::CheckAccess,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return Wake::CheckAccess,
                    Err(broadcast::error::RecvError::Closed) => return Wake::Over,
                },
                _ = self.recheck.tick() => return Wake::CheckAccess,
            }
        }
    }

    /// Reads what the stream missed; `false` (end the stream) if that fails:
    /// the client resumes with `Last-Event-ID` and misses nothing.
    async fn catch_up(&mut self) -> bool {
        self.streams.feeds.count_read();
        let caller = &self.caller;
        match service::events_after(&caller.platform, &caller.user, self.id, self.last_id).await {
            Ok((execution, events)) => {
                self.pending = events.into();
                self.finished = self.pending.is_empty() && execution.status.is_finished();
                true
            }
            Err(error) => {
                tracing::warn!(%error, execution_id = %self.id, "event stream could not catch up; ending it");
                false
            }
        }
    }

    /// Whether the caller's token still authenticates them and they may still
    /// see the execution. A database that cannot answer now keeps the stream
    /// open until the next check.
    async fn still_allowed(&mut self) -> bool {
        let caller = &mut self.caller;
        let allowed = async {
            let authenticated =
                auth::authenticate(&caller.platform, &caller.auth, &caller.token).await?;
            service::get(&caller.platform, &authenticated.user, self.id).await?;
            Ok::<_, AppError>(authenticated.user)
        };
        match allowed.await {
            Ok(user) => {
                caller.user = user;
                true
            }
            Err(
                AppError::Unauthorized { .. } | AppError::Forbidden { .. } | AppError::NotFound(_),
            ) => {
                tracing::info!(execution_id = %self.id, user_id = %caller.user.id, "event stream closed: access revoked");
                false
            }
            Err(error) => {
                tracing::warn!(%error, execution_id = %self.id, "event stream could not re-check access; keeping it");
                true
            }
        }
    }
}

/// Whether a `status` event's data names a finished status: the last event a stream sends.
fn is_terminal(data: &serde_json::Value) -> bool {
    data.get("status")
        .and_then(|status| serde_json::from_value::<Status>(status.clone()).ok())
        .is_some_and(Status::is_finished)
}

/// The SSE message of an event: its id (for `Last-Event-ID`), its type, and
/// its data with the execution's id and the time added.
fn to_sse(event: &ExecutionEvent) -> Event {
    let mut data = event.data.clone();
    if let Some(object) = data.as_object_mut() {
        object.insert(
            "execution_id".to_owned(),
            serde_json::json!(event.execution_id),
        );
        object.insert("at".to_owned(), serde_json::json!(event.created_at));
    }
    Event::default()
        .id(event.id.to_string())
        .event(event.event.clone())
        .data(data.to_string())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    fn with_last_event_id(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("last-event-id", HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn a_stream_resumes_after_the_last_event_id_or_from_the_start() {
        assert_eq!(last_event_id(&HeaderMap::new()).ok(), Some(0));
        assert_eq!(last_event_id(&with_last_event_id(" 42 ")).ok(), Some(42));
        for invalid in ["-1", "forty-two", ""] {
            let parsed = last_event_id(&with_last_event_id(invalid));
            assert!(
                matches!(parsed, Err(AppError::Validation(_))),
                "{invalid:?}"
            );
        }
    }

    #[test]
    fn only_a_finished_status_ends_the_stream() {
        assert!(is_terminal(&json!({"status": "succeeded"})));
        assert!(is_terminal(&json!({"status": "failed"})));
        assert!(is_terminal(&json!({"status": "cancelled"})));
        assert!(!is_terminal(&json!({"status": "running"})));
        assert!(!is_terminal(&json!({"status": "queued"})));
        assert!(!is_terminal(&json!({"percent": 50})));
    }
}
