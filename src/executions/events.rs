//! The event stream of one execution (Server-Sent Events): everything recorded
//! so far after the client's `Last-Event-ID`, then each change as the
//! notification hub reports it, until the execution has finished and every
//! event was sent. The HTTP handler in `router.rs` only parses and delegates.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::sse::Event;
use futures_util::Stream;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::core::platform::Platform;
use crate::executions::models::{ExecutionEvent, Status};
use crate::executions::queue::NotificationHub;
use crate::executions::service;
use crate::shared::error::{AppError, FieldError};
use crate::users::models::User;

/// How often an idle event stream re-checks the database, in case a
/// notification was missed (the listener was reconnecting, say).
const STREAM_RECHECK: Duration = Duration::from_secs(2);

/// The events of execution `id` after event `after`, then its changes until it
/// finishes; `NotFound` unless `user` may see it.
pub async fn stream(
    platform: Platform,
    hub: &NotificationHub,
    user: User,
    id: Uuid,
    after: i64,
) -> Result<impl Stream<Item = Result<Event, Infallible>> + use<>, AppError> {
    // Subscribe before reading, so no change between the read and the wait is missed.
    let changes = hub.changed();
    let (execution, events) = service::events_after(&platform, &user, id, after).await?;
    let stream = EventStream {
        platform,
        user,
        id,
        last_id: after,
        pending: events.into(),
        finished: execution.status.is_finished(),
        changes,
    };
    Ok(futures_util::stream::unfold(stream, EventStream::next))
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

/// The state of one event stream.
struct EventStream {
    platform: Platform,
    user: User,
    id: Uuid,
    last_id: i64,
    pending: VecDeque<ExecutionEvent>,
    finished: bool,
    changes: broadcast::Receiver<Uuid>,
}

impl EventStream {
    /// The next event; `None` once the execution has finished and every event was sent.
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.last_id = event.id;
                if event.event == "status" && is_terminal(&event.data) {
                    self.finished = true;
                }
                return Some((Ok(to_sse(&event)), self));
            }
            if self.finished {
                return None;
            }
            self.wait_for_change().await;
            match service::events_after(&self.platform, &self.user, self.id, self.last_id).await {
                Ok((execution, events)) => {
                    self.pending = events.into();
                    // Deleted or finished with nothing left to send: the stream is over.
                    self.finished = self.pending.is_empty() && execution.status.is_finished();
                }
                Err(AppError::NotFound(_)) => return None,
                Err(error) => tracing::warn!(%error, "event stream could not read; retrying"),
            }
        }
    }

    /// Waits until this execution changes (by NOTIFY) or the recheck interval passes.
    async fn wait_for_change(&mut self) {
        let deadline = tokio::time::sleep(STREAM_RECHECK);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => return,
                change = self.changes.recv() => match change {
                    Ok(id) if id == self.id => return,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => {
                        deadline.as_mut().await;
                        return;
                    }
                },
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
