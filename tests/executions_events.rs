//! `GET /api/v1/executions/{id}/events` as a bounded resource: the per-user and
//! process caps, the load shedder's permit held for the stream's life, the
//! maximum lifetime with a resume that neither loses nor repeats, events
//! pushed by one feed per execution, and streams closed when their caller's
//! access ends.
//!
//! Streams are read frame by frame with a deadline on each wait; dropping the
//! response body is a client that disconnects.

// Test code: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use common::executions::{start_runner, test_kinds, worker_settings};
use common::{DEFAULT_PASSWORD, TestApp, access_token, refresh_token};
use diesel_async::RunQueryDsl;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tessera::executions::repository::{self, EVENTS_CHANNEL};
use tessera::users::models::Role;
use tower::ServiceExt;
use uuid::Uuid;

const PATH: &str = "/api/v1/executions";

/// How long any one wait on a stream may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(15);

/// One SSE message: id, event type, data.
type Message = (i64, String, Value);

/// An open event stream, read as the client would.
struct SseStream {
    body: Body,
    buffer: String,
}

impl SseStream {
    /// The next message, or `None` when the server ended the stream.
    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = self.take_message() {
                return Some(message);
            }
            let frame = tokio::time::timeout(PATIENCE, self.body.frame())
                .await
                .expect("the stream sends a message or ends in time");
            match frame {
                None => return None,
                Some(frame) => {
                    let frame = frame.expect("the stream's body reads");
                    if let Ok(data) = frame.into_data() {
                        self.buffer.push_str(std::str::from_utf8(&data).unwrap());
                    }
                }
            }
        }
    }

    /// The next message, which must come.
    async fn expect_message(&mut self) -> Message {
        self.next().await.expect("the stream is still open")
    }

    /// Reads until the server ends the stream; the messages it sent meanwhile.
    async fn until_end(&mut self) -> Vec<Message> {
        let mut messages = Vec::new();
        while let Some(message) = self.next().await {
            messages.push(message);
        }
        messages
    }

    /// A whole message from the buffer, skipping keep-alive comments.
    fn take_message(&mut self) -> Option<Message> {
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|line| line.strip_prefix(name).map(|value| value.trim().to_owned()))
            };
            if let (Some(id), Some(event), Some(data)) =
                (field("id:"), field("event:"), field("data:"))
            {
                return Some((
                    id.parse().unwrap(),
                    event,
                    serde_json::from_str(&data).unwrap(),
                ));
            }
        }
        None
    }
}

/// `GET …/events` with `token`, resuming after `last_event_id`; the raw response.
async fn request_stream(
    app: &TestApp,
    token: &str,
    id: &str,
    last_event_id: Option<i64>,
) -> Response<Body> {
    let mut request = Request::get(format!("{PATH}/{id}/events"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    if let Some(last) = last_event_id {
        request = request.header("last-event-id", last.to_string());
    }
    app.router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

/// An event stream that must open.
async fn open(app: &TestApp, token: &str, id: &str, last_event_id: Option<i64>) -> SseStream {
    let response = request_stream(app, token, id, last_event_id).await;
    assert_eq!(response.status(), StatusCode::OK);
    SseStream {
        body: response.into_body(),
        buffer: String::new(),
    }
}

/// A stream request that must be refused with `status` and `code`; its
/// `Retry-After`.
async fn refused(
    app: &TestApp,
    token: &str,
    id: &str,
    status: StatusCode,
    code: &str,
) -> Option<String> {
    let response = request_stream(app, token, id, None).await;
    assert_eq!(response.status(), status);
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .map(|value| value.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["code"], code, "{problem}");
    retry_after
}

/// Submits work that stays queued (these apps run no workers unless a test
/// starts them); its id.
async fn submit(app: &TestApp, token: &str, input: Value) -> String {
    let response = app
        .post(PATH)
        .bearer(token)
        .json(json!({"kind": "sleep", "input": input}))
        .send()
        .await;
    assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.text());
    response.json()["id"].as_str().unwrap().to_owned()
}

/// An app whose notification listener is connected, so that what the test
/// writes is pushed rather than caught up when the listener connects.
async fn listening_app(overrides: &[(&str, &str)]) -> TestApp {
    let app = TestApp::spawn_with(overrides).await;
    let started = Instant::now();
    while !app.executions.hub.is_listening() {
        assert!(started.elapsed() < PATIENCE, "the listener connects");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app
}

/// Records a progress event for `id` and announces it, as a worker does.
async fn record_progress(app: &TestApp, id: &str, percent: u32) {
    let mut conn = app.conn().await;
    diesel::sql_query(
        "WITH logged AS (INSERT INTO execution_events (execution_id, event, data)
                         VALUES ($1::uuid, 'progress', jsonb_build_object('progress', $2::int))
                         RETURNING execution_id)
         SELECT pg_notify($3, execution_id::text) FROM logged",
    )
    .bind::<diesel::sql_types::Text, _>(id)
    .bind::<diesel::sql_types::Integer, _>(i32::try_from(percent).unwrap())
    .bind::<diesel::sql_types::Text, _>(EVENTS_CHANNEL)
    .execute(&mut conn)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn one_user_gets_eight_streams_and_a_closed_one_frees_its_slot() {
    let app = listening_app(&[]).await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let id = submit(&app, &token, json!({"duration_ms": 1000})).await;
    let mut streams = Vec::new();
    for _ in 0..8 {
        let mut stream = open(&app, &token, &id, None).await;
        assert_eq!(stream.expect_message().await.1, "status");
        streams.push(stream);
    }
    let retry_after = refused(
        &app,
        &token,
        &id,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_streams",
    )
    .await;
    assert!(retry_after.is_some(), "a refused stream says when to retry");

    // Another account is not limited by ada's streams.
    let (_, bob) = app.signed_in("bob@example.com", Role::User).await;
    let bobs = submit(&app, &bob, json!({"duration_ms": 1000})).await;
    let _bobs_stream = open(&app, &bob, &bobs, None).await;

    // The client going away frees the slot: the next stream opens.
    drop(streams.pop());
    let mut again = open(&app, &token, &id, None).await;
    assert_eq!(again.expect_message().await.1, "status");
    refused(
        &app,
        &token,
        &id,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_streams",
    )
    .await;
    assert_eq!(app.executions.streams.open(), 9);
    drop(streams);
    assert_eq!(app.executions.streams.open(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_process_cap_a_stream_is_refused_with_503() {
    let app = listening_app(&[("MAX_EVENT_STREAMS", "2")]).await;
    let (_, ada) = app.signed_in("ada@example.com", Role::User).await;
    let (_, bob) = app.signed_in("bob@example.com", Role::User).await;
    let adas = submit(&app, &ada, json!({"duration_ms": 1000})).await;
    let bobs = submit(&app, &bob, json!({"duration_ms": 1000})).await;
    let first = open(&app, &ada, &adas, None).await;
    let _second = open(&app, &bob, &bobs, None).await;
    let retry_after = refused(
        &app,
        &bob,
        &bobs,
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
    )
    .await;
    assert!(retry_after.is_some());
    drop(first);
    let _third = open(&app, &bob, &bobs, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_stream_holds_its_load_shedder_permit_until_it_closes() {
    let app = listening_app(&[("MAX_IN_FLIGHT_REQUESTS", "2")]).await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let id = submit(&app, &token, json!({"duration_ms": 1000})).await;
    let first = open(&app, &token, &id, None).await;
    let second = open(&app, &token, &id, None).await;
    app.get("/api/v1/users/me")
        .bearer(&token)
        .send()
        .await
        .assert_problem(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    drop(first);
    let me = app.get("/api/v1/users/me").bearer(&token).send().await;
    assert_eq!(
        me.status,
        StatusCode::OK,
        "a closed stream's permit is free"
    );
    // Other requests give their permit back when answered, as before.
    let again = app.get("/api/v1/users/me").bearer(&token).send().await;
    assert_eq!(again.status, StatusCode::OK);
    drop(second);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_ends_after_its_lifetime_and_resuming_misses_and_repeats_nothing() {
    let app = listening_app(&[("EVENT_STREAM_MAX_SECONDS", "1")]).await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let id = submit(&app, &token, json!({"duration_ms": 3000, "steps": 6})).await;
    let (shutdown, handle, _) = start_runner(&app, test_kinds(), worker_settings(&[]));

    let mut seen: Vec<Message> = Vec::new();
    let mut connections = 0;
    while seen
        .last()
        .is_none_or(|(_, _, data)| data["status"] != "succeeded")
    {
        connections += 1;
        assert!(connections < 30, "the execution finishes: {seen:?}");
        let last = seen.last().map(|(id, _, _)| *id);
        seen.extend(open(&app, &token, &id, last).await.until_end().await);
    }
    assert!(connections >= 2, "a 3 s execution outlives a 1 s stream");
    let ids: Vec<i64> = seen.iter().map(|(id, _, _)| *id).collect();
    let mut conn = app.conn().await;
    let recorded: Vec<i64> = repository::events_after(&mut conn, id.parse().unwrap(), 0)
        .await
        .unwrap()
        .iter()
        .map(|event| event.id)
        .collect();
    assert_eq!(ids, recorded, "every event once, in order");
    let progress = seen.iter().filter(|(_, kind, _)| kind == "progress");
    assert_eq!(progress.count(), 6, "{seen:?}");
    shutdown.cancel();
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn many_streams_of_one_execution_share_one_read_per_change() {
    let app = listening_app(&[]).await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let id = submit(&app, &token, json!({"duration_ms": 1000})).await;
    let mut streams = Vec::new();
    for _ in 0..8 {
        let mut stream = open(&app, &token, &id, None).await;
        stream.expect_message().await;
        streams.push(stream);
    }
    let before = app.executions.streams.reads();
    record_progress(&app, &id, 40).await;
    for stream in &mut streams {
        let (_, kind, data) = stream.expect_message().await;
        assert_eq!((kind.as_str(), &data["progress"]), ("progress", &json!(40)));
    }
    let reads = app.executions.streams.reads() - before;
    // One read for the change. A second is possible only if the listener's
    // connect-time catch-up reached the new feed late; eight would be one per stream.
    assert!((1..=2).contains(&reads), "{reads} reads for 8 streams");

    // A stream that joins later starts from what is recorded and then follows.
    drop(streams.pop());
    let mut late = open(&app, &token, &id, None).await;
    let replayed = [late.expect_message().await, late.expect_message().await];
    assert_eq!(replayed[1].2["progress"], 40);
    record_progress(&app, &id, 80).await;
    assert_eq!(late.expect_message().await.2["progress"], 80);
    for stream in &mut streams {
        let (id, _, data) = stream.expect_message().await;
        assert!(id > replayed[1].0);
        assert_eq!(data["progress"], 80);
    }
}

/// An open stream of `token` on a new execution of `owner_token`, past its
/// first message; and the execution's id.
async fn watching(app: &TestApp, token: &str, owner_token: &str) -> (SseStream, String) {
    let id = submit(app, owner_token, json!({"duration_ms": 1000})).await;
    let mut stream = open(app, token, &id, None).await;
    assert_eq!(stream.expect_message().await.1, "status");
    (stream, id)
}

/// Asserts the server ends `stream` without sending anything more. The
/// default re-check is a minute away, so only the revocation's notice can.
async fn assert_closed(mut stream: SseStream) {
    assert_eq!(stream.until_end().await, Vec::<Message>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn logging_out_everywhere_or_of_the_sign_in_closes_its_streams() {
    let app = listening_app(&[]).await;
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let phone = app.login("ada@example.com", DEFAULT_PASSWORD).await;
    let laptop = app.login("ada@example.com", DEFAULT_PASSWORD).await;
    let (phone_token, laptop_token) = (access_token(&phone), access_token(&laptop));

    let (on_phone, _) = watching(&app, phone_token, phone_token).await;
    let (on_laptop, _) = watching(&app, laptop_token, laptop_token).await;
    let logout = app
        .post("/api/v1/auth/logout")
        .json(json!({"refresh_token": refresh_token(&phone)}))
        .send()
        .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    assert_closed(on_phone).await;

    // The laptop's sign-in is untouched: its streams still follow.
    let (mut following, id) = watching(&app, laptop_token, laptop_token).await;
    record_progress(&app, &id, 10).await;
    assert_eq!(following.expect_message().await.2["progress"], 10);

    let all = app
        .post("/api/v1/auth/logout-all")
        .bearer(laptop_token)
        .send()
        .await;
    assert_eq!(all.status, StatusCode::NO_CONTENT);
    assert_closed(following).await;
    assert_closed(on_laptop).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_password_change_closes_the_streams_of_other_sign_ins() {
    let app = listening_app(&[]).await;
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let phone = access_token(&app.login("ada@example.com", DEFAULT_PASSWORD).await).to_owned();
    let laptop = access_token(&app.login("ada@example.com", DEFAULT_PASSWORD).await).to_owned();
    let (on_phone, _) = watching(&app, &phone, &phone).await;
    let changed = app
        .put("/api/v1/auth/password")
        .bearer(&laptop)
        .json(json!({"current_password": DEFAULT_PASSWORD, "new_password": "a brand new password"}))
        .send()
        .await;
    assert!(changed.status.is_success(), "{}", changed.text());
    assert_closed(on_phone).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deactivation_by_an_admin_closes_the_users_streams() {
    let app = listening_app(&[]).await;
    let (_, admin) = app.signed_in("root@example.com", Role::Admin).await;
    let (ada, token) = app.signed_in("ada@example.com", Role::User).await;
    let (stream, _) = watching(&app, &token, &token).await;
    let deactivated = app
        .patch(&format!("/api/v1/users/{}", ada.id))
        .bearer(&admin)
        .json(json!({"is_active": false}))
        .send()
        .await;
    assert_eq!(deactivated.status, StatusCode::OK, "{}", deactivated.text());
    assert_closed(stream).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_demoted_admin_stops_watching_someone_elses_execution() {
    let app = listening_app(&[]).await;
    let (_, root) = app.signed_in("root@example.com", Role::Admin).await;
    let (grace, grace_token) = app.signed_in("grace@example.com", Role::Admin).await;
    let (_, ada) = app.signed_in("ada@example.com", Role::User).await;
    let (watching_adas, _) = watching(&app, &grace_token, &ada).await;
    let (mut watching_own, own_id) = watching(&app, &grace_token, &grace_token).await;
    let demoted = app
        .patch(&format!("/api/v1/users/{}", grace.id))
        .bearer(&root)
        .json(json!({"role": "user"}))
        .send()
        .await;
    assert_eq!(demoted.status, StatusCode::OK, "{}", demoted.text());
    assert_closed(watching_adas).await;

    // Her own execution she may still watch: that stream stays open and follows.
    record_progress(&app, &own_id, 30).await;
    assert_eq!(watching_own.expect_message().await.2["progress"], 30);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_of_an_unknown_or_foreign_execution_takes_no_slot() {
    let app = listening_app(&[("MAX_EVENT_STREAMS_PER_USER", "1")]).await;
    let (_, ada) = app.signed_in("ada@example.com", Role::User).await;
    let (_, bob) = app.signed_in("bob@example.com", Role::User).await;
    let bobs = submit(&app, &bob, json!({"duration_ms": 1000})).await;
    for _ in 0..3 {
        refused(&app, &ada, &bobs, StatusCode::NOT_FOUND, "not_found").await;
        let unknown = Uuid::new_v4().to_string();
        refused(&app, &ada, &unknown, StatusCode::NOT_FOUND, "not_found").await;
    }
    assert_eq!(app.executions.streams.open(), 0);
    let adas = submit(&app, &ada, json!({"duration_ms": 1000})).await;
    let _open = open(&app, &ada, &adas, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_whose_notification_was_lost_arrives_when_the_listener_reconnects() {
    let app = listening_app(&[]).await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let id = submit(&app, &token, json!({"duration_ms": 1000})).await;
    let mut stream = open(&app, &token, &id, None).await;
    stream.expect_message().await;

    // An event recorded without its NOTIFY: what a listener that was
    // disconnected at the time would have missed.
    let mut conn = app.conn().await;
    diesel::sql_query(
        "INSERT INTO execution_events (execution_id, event, data)
         VALUES ($1::uuid, 'progress', '{\"progress\": 60}')",
    )
    .bind::<diesel::sql_types::Text, _>(&id)
    .execute(&mut conn)
    .await
    .unwrap();
    // Cut the listener's connection; on reconnecting it has every feed catch up.
    diesel::sql_query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN %'",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let (_, kind, data) = stream.expect_message().await;
    assert_eq!((kind.as_str(), &data["progress"]), ("progress", &json!(60)));
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_an_api_key_closes_the_streams_it_opened() {
    let app = listening_app(&[]).await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let created = app
        .post("/api/v1/auth/api-keys")
        .bearer(&token)
        .json(json!({"name": "watcher", "scopes": ["executions:read"], "current_password": DEFAULT_PASSWORD}))
        .send()
        .await
        .json();
    let key = created["secret"].as_str().unwrap();
    let (by_key, _) = watching(&app, key, &token).await;
    let (by_session, id) = watching(&app, &token, &token).await;
    let revoked = app
        .delete(&format!(
            "/api/v1/auth/api-keys/{}",
            created["id"].as_str().unwrap()
        ))
        .bearer(&token)
        .send()
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert_closed(by_key).await;
    // The owner's own sign-in is another credential: its stream follows on.
    let mut by_session = by_session;
    record_progress(&app, &id, 10).await;
    assert_eq!(by_session.expect_message().await.2["progress"], 10);
}
