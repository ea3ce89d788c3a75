//! `/api/v1/executions`: submission and validation, idempotency keys,
//! visibility, transitions, names, and the event stream.

// Test code: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::executions::{start_runner, test_kinds, worker_settings};
use common::{DEFAULT_PASSWORD, TestApp, TestResponse, access_token};
use serde_json::{Value, json};
use tessera::users::models::Role;

const PATH: &str = "/api/v1/executions";

async fn submit(app: &TestApp, token: &str, body: Value) -> TestResponse {
    app.post(PATH).bearer(token).json(body).send().await
}

fn sleep(duration_ms: u64) -> Value {
    json!({"kind": "sleep", "input": {"duration_ms": duration_ms}})
}

#[tokio::test]
async fn submitting_answers_202_with_location_and_the_normalised_input() {
    let app = TestApp::spawn().await;
    let (user, token) = app.signed_in("ada@example.com", Role::User).await;
    let response = submit(
        &app,
        &token,
        json!({"kind": "sleep", "input": {"duration_ms": 1500}, "priority": -5}),
    )
    .await;
    assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.text());
    let body = response.json();
    let id = body["id"].as_str().expect("the answer has an id");
    assert_eq!(
        response.header("location"),
        Some(format!("{PATH}/{id}").as_str())
    );
    assert_eq!(body["status"], "queued");
    assert_eq!(body["owner_id"], json!(user.id));
    assert_eq!(body["name"], "sleep · Sleep 1.5 s", "a generated name");
    assert_eq!(
        body["input"],
        json!({"duration_ms": 1500, "steps": 10, "fail_first_attempts": 0})
    );
    assert_eq!(body["attempt"], 0);
    assert_eq!(body["max_attempts"], 3);
    let named = submit(
        &app,
        &token,
        json!({"kind": "sleep", "input": {"duration_ms": 1}, "name": "  My nap "}),
    )
    .await;
    assert_eq!(named.json()["name"], "My nap");
}

#[tokio::test]
async fn invalid_submissions_list_every_problem() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let body = json!({"kind": "teleport", "input": {}, "priority": 101, "max_attempts": 0, "timeout_s": 0, "name": ""});
    let problem = submit(&app, &token, body)
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let locs: Vec<Value> = problem["errors"]
        .as_array()
        .expect("a validation problem lists its errors")
        .iter()
        .map(|e| e["loc"].clone())
        .collect();
    for expected in [
        json!(["body", "kind"]),
        json!(["body", "name"]),
        json!(["body", "priority"]),
        json!(["body", "max_attempts"]),
        json!(["body", "timeout_s"]),
    ] {
        assert!(locs.contains(&expected), "{expected} in {locs:?}");
    }
    let cases = [
        (
            json!({"duration_ms": "soon"}),
            json!(["body", "input", "duration_ms"]),
            "type_error",
        ),
        (
            json!({}),
            json!(["body", "input", "duration_ms"]),
            "missing",
        ),
        (
            json!({"duration_ms": 1, "colour": "red"}),
            json!(["body", "input", "colour"]),
            "extra_forbidden",
        ),
        (
            json!({"duration_ms": 1, "steps": 0}),
            json!(["body", "input", "steps"]),
            "value_error",
        ),
        (
            json!({"duration_ms": 86_400_001}),
            json!(["body", "input", "duration_ms"]),
            "value_error",
        ),
    ];
    for (input, loc, kind) in cases {
        let response = submit(&app, &token, json!({"kind": "sleep", "input": input})).await;
        let problem =
            response.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(problem["errors"][0]["loc"], loc, "{input}");
        assert_eq!(problem["errors"][0]["type"], kind, "{input}");
    }
    // Any date-time the document allows is accepted: a far one just waits.
    let far = submit(
        &app,
        &token,
        json!({"kind": "sleep", "input": {"duration_ms": 1}, "run_at": "9999-12-31T23:59:59Z"}),
    )
    .await;
    assert_eq!(far.status, StatusCode::ACCEPTED, "{}", far.text());
    assert_eq!(far.json()["run_at"], "9999-12-31T23:59:59Z");
    assert_eq!(far.json()["status"], "queued");
    app.post(PATH)
        .json(sleep(1))
        .send()
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "not_authenticated");
}

#[tokio::test]
async fn idempotency_keys_make_retries_safe() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let with_key = |body: Value, key: &'static str| {
        let app = &app;
        let token = token.clone();
        async move {
            app.post(PATH)
                .bearer(&token)
                .header("idempotency-key", key)
                .json(body)
                .send()
                .await
        }
    };
    let first = with_key(sleep(100), "order-42").await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let again = with_key(sleep(100), "order-42").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json()["id"], first.json()["id"]);
    with_key(sleep(999), "order-42")
        .await
        .assert_problem(StatusCode::CONFLICT, "idempotency_key_reused");
    let problem = with_key(sleep(1), "has space")
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(
        problem["errors"][0]["loc"],
        json!(["header", "Idempotency-Key"])
    );
    // Keys belong to their user: another account may use the same one.
    let (_, other) = app.signed_in("bob@example.com", Role::User).await;
    let theirs = app
        .post(PATH)
        .bearer(&other)
        .header("idempotency-key", "order-42")
        .json(sleep(100))
        .send()
        .await;
    assert_eq!(theirs.status, StatusCode::ACCEPTED);
    assert_ne!(theirs.json()["id"], first.json()["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_create_exactly_one_execution() {
    let app = Arc::new(TestApp::spawn_with(&[("DATABASE_POOL_SIZE", "8")]).await);
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (app, token) = (app.clone(), token.clone());
            tokio::spawn(async move {
                let response = app
                    .post(PATH)
                    .bearer(&token)
                    .header("idempotency-key", "same-key")
                    .json(sleep(5))
                    .send()
                    .await;
                (response.status, response.json()["id"].clone())
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for handle in handles {
        let (status, id) = handle
            .await
            .expect("a submission task ends without panicking");
        assert!(
            status == StatusCode::ACCEPTED || status == StatusCode::OK,
            "{status}"
        );
        created += usize::from(status == StatusCode::ACCEPTED);
        ids.insert(id.to_string());
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(created, 1);
    let list = app.get(PATH).bearer(&token).send().await.json();
    assert_eq!(
        list["items"]
            .as_array()
            .expect("a list answer has an items array")
            .len(),
        1
    );
}

#[tokio::test]
async fn users_see_their_own_executions_and_admins_everyones() {
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada@example.com", Role::User).await;
    let (_, bob) = app.signed_in("bob@example.com", Role::User).await;
    let (_, admin) = app.signed_in("admin@example.com", Role::Admin).await;
    let adas = submit(&app, &ada, sleep(1)).await.json();
    submit(&app, &bob, sleep(2)).await;
    let path = format!(
        "{PATH}/{}",
        adas["id"].as_str().expect("the answer has an id")
    );
    assert_eq!(
        app.get(&path).bearer(&ada).send().await.status,
        StatusCode::OK
    );
    app.get(&path)
        .bearer(&bob)
        .send()
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(
        app.get(&path).bearer(&admin).send().await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.get(PATH).bearer(&ada).send().await.json()["items"]
            .as_array()
            .expect("a list answer has an items array")
            .len(),
        1
    );
    assert_eq!(
        app.get(PATH).bearer(&admin).send().await.json()["items"]
            .as_array()
            .expect("a list answer has an items array")
            .len(),
        0,
        "their own by default"
    );
    assert_eq!(
        app.get(&format!("{PATH}?all=true"))
            .bearer(&admin)
            .send()
            .await
            .json()["items"]
            .as_array()
            .expect("a list answer has an items array")
            .len(),
        2
    );
    app.get(&format!("{PATH}?all=true"))
        .bearer(&ada)
        .send()
        .await
        .assert_problem(StatusCode::FORBIDDEN, "admin_required");
    app.get(&format!("{PATH}/not-a-uuid"))
        .bearer(&ada)
        .send()
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
}

#[tokio::test]
async fn lists_filter_and_page() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    for duration in 0..5 {
        submit(&app, &token, sleep(duration)).await;
    }
    let cancelled = submit(&app, &token, sleep(99)).await.json();
    app.post(&format!(
        "{PATH}/{}/cancel",
        cancelled["id"].as_str().expect("the answer has an id")
    ))
    .bearer(&token)
    .send()
    .await;
    let page = app
        .get(&format!("{PATH}?limit=2"))
        .bearer(&token)
        .send()
        .await
        .json();
    assert_eq!(page["items"][0]["id"], cancelled["id"], "newest first");
    let next = app
        .get(&format!(
            "{PATH}?limit=2&cursor={}",
            page["next_cursor"]
                .as_str()
                .expect("a page with more after it has a next_cursor")
        ))
        .bearer(&token)
        .send()
        .await
        .json();
    assert_eq!(
        next["items"]
            .as_array()
            .expect("a list answer has an items array")
            .len(),
        2
    );
    let queued = app
        .get(&format!("{PATH}?status=queued"))
        .bearer(&token)
        .send()
        .await
        .json();
    assert_eq!(
        queued["items"]
            .as_array()
            .expect("a list answer has an items array")
            .len(),
        5
    );
    let by_kind = app
        .get(&format!("{PATH}?kind=sleep&status=cancelled"))
        .bearer(&token)
        .send()
        .await
        .json();
    assert_eq!(
        by_kind["items"]
            .as_array()
            .expect("a list answer has an items array")
            .len(),
        1
    );
    for bad in [
        "status=done",
        "limit=0",
        "cursor=x",
        "colour=red",
        "kind=teleport",
    ] {
        app.get(&format!("{PATH}?{bad}"))
            .bearer(&token)
            .send()
            .await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
}

#[tokio::test]
async fn cancel_retry_and_delete_follow_the_lifecycle() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let id = submit(&app, &token, sleep(10)).await.json()["id"]
        .as_str()
        .expect("the answer has an id")
        .to_owned();
    let path = format!("{PATH}/{id}");
    app.delete(&path)
        .bearer(&token)
        .send()
        .await
        .assert_problem(StatusCode::CONFLICT, "invalid_transition");
    app.post(&format!("{path}/retry"))
        .bearer(&token)
        .send()
        .await
        .assert_problem(StatusCode::CONFLICT, "invalid_transition");
    let cancelled = app
        .post(&format!("{path}/cancel"))
        .bearer(&token)
        .send()
        .await;
    assert_eq!(cancelled.status, StatusCode::ACCEPTED);
    assert_eq!(
        cancelled.json()["status"],
        "cancelled",
        "a queued execution is cancelled at once"
    );
    app.post(&format!("{path}/cancel"))
        .bearer(&token)
        .send()
        .await
        .assert_problem(StatusCode::CONFLICT, "invalid_transition");
    let retried = app
        .post(&format!("{path}/retry"))
        .bearer(&token)
        .send()
        .await;
    assert_eq!(retried.status, StatusCode::ACCEPTED);
    assert_eq!(retried.json()["status"], "queued");
    app.post(&format!("{path}/cancel"))
        .bearer(&token)
        .send()
        .await;
    assert_eq!(
        app.delete(&path).bearer(&token).send().await.status,
        StatusCode::NO_CONTENT
    );
    app.get(&path)
        .bearer(&token)
        .send()
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn names_are_generated_from_kind_and_input() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let path = format!("{PATH}/generate-name");
    let named = app
        .post(&path)
        .bearer(&token)
        .json(sleep(1500))
        .send()
        .await;
    assert_eq!(named.status, StatusCode::OK);
    assert_eq!(named.json(), json!({"name": "sleep · Sleep 1.5 s"}));
    app.post(&path)
        .bearer(&token)
        .json(json!({"kind": "nope", "input": {}}))
        .send()
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
}

/// Parses a whole SSE body into (id, event, data) triples.
fn parse_sse(body: &str) -> Vec<(i64, String, Value)> {
    body.split("\n\n")
        .filter(|block| block.contains("data:"))
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|line| line.strip_prefix(name).map(|value| value.trim().to_owned()))
                    .unwrap_or_default()
            };
            (
                field("id:").parse().unwrap(),
                field("event:"),
                serde_json::from_str(&field("data:")).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_replays_follows_and_resumes() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let body = json!({"kind": "sleep", "input": {"duration_ms": 300, "steps": 2}});
    let id = submit(&app, &token, body).await.json()["id"]
        .as_str()
        .expect("the answer has an id")
        .to_owned();
    let events_path = format!("{PATH}/{id}/events");
    let (shutdown, handle, _) = start_runner(&app, test_kinds(), worker_settings(&[]));

    // Follows live until the execution finishes, then ends.
    let stream = tokio::time::timeout(
        Duration::from_secs(20),
        app.get(&events_path).bearer(&token).send(),
    )
    .await
    .expect("the stream ends when the execution finishes");
    assert_eq!(stream.status, StatusCode::OK);
    assert!(
        stream
            .header("content-type")
            .expect("the response declares its content type")
            .starts_with("text/event-stream")
    );
    let events = parse_sse(&stream.text());
    let summary: Vec<(String, Value)> = events
        .iter()
        .map(|(_, kind, data)| {
            (
                kind.clone(),
                data.get("status")
                    .or(data.get("progress"))
                    .cloned()
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("status".to_owned(), json!("queued")),
            ("status".to_owned(), json!("running")),
            ("progress".to_owned(), json!(50)),
            ("progress".to_owned(), json!(100)),
            ("status".to_owned(), json!("succeeded")),
        ]
    );
    assert!(
        events.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "ids increase"
    );
    assert!(
        events
            .iter()
            .all(|(_, _, data)| data["execution_id"] == json!(id))
    );

    // Resuming after the second event replays only what came after it.
    let resumed = app
        .get(&events_path)
        .bearer(&token)
        .header("last-event-id", &events[1].0.to_string())
        .send()
        .await;
    let replayed = parse_sse(&resumed.text());
    assert_eq!(replayed.len(), 3);
    assert_eq!(replayed[0].0, events[2].0);
    app.get(&events_path)
        .bearer(&token)
        .header("last-event-id", "soon")
        .send()
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let (_, other) = app.signed_in("bob@example.com", Role::User).await;
    app.get(&events_path)
        .bearer(&other)
        .send()
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found");
    shutdown.cancel();
    handle
        .await
        .expect("the runner stops cleanly once cancelled");
}

/// The model name the test apps serve (their model directory's name; no model is loaded).
const TEST_MODEL: &str = "no-model-in-tests";

fn embed_texts(texts: &[String]) -> Value {
    json!({"kind": "embed_texts", "input": {"texts": texts, "model": TEST_MODEL}})
}

fn texts(count: usize, bytes_each: usize) -> Vec<String> {
    (0..count)
        .map(|index| format!("{index:06} {}", "x".repeat(bytes_each.saturating_sub(7))))
        .collect()
}

fn id_of(response: &TestResponse) -> String {
    assert!(response.status.is_success(), "{}", response.text());
    response.json()["id"]
        .as_str()
        .expect("the answer has an id")
        .to_owned()
}

fn items(response: &TestResponse) -> Vec<Value> {
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    response.json()["items"]
        .as_array()
        .expect("a list answer has an items array")
        .clone()
}

async fn cancel(app: &TestApp, token: &str, id: &str) {
    let response = app
        .post(&format!("{PATH}/{id}/cancel"))
        .bearer(token)
        .send()
        .await;
    assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.text());
}

#[tokio::test]
async fn a_demoted_admin_cannot_re_run_what_only_admins_may_submit() {
    let app = TestApp::spawn().await;
    let (ada, ada_token) = app.signed_in("ada@example.com", Role::Admin).await;
    let (_, other_admin) = app.signed_in("root@example.com", Role::Admin).await;
    let urgent = json!({"kind": "sleep", "input": {"duration_ms": 120_000}, "priority": 5});
    let created = submit(&app, &ada_token, urgent).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let cancelled = app
        .post(&format!("{PATH}/{id}/cancel"))
        .bearer(&ada_token)
        .send()
        .await;
    assert_eq!(
        cancelled.status,
        StatusCode::ACCEPTED,
        "{}",
        cancelled.text()
    );
    let demoted = app
        .patch(&format!("/api/v1/users/{}", ada.id))
        .bearer(&other_admin)
        .json(json!({"role": "user"}))
        .send()
        .await;
    assert_eq!(demoted.status, StatusCode::OK, "{}", demoted.text());
    // Demotion may end her sign-ins; she signs in again, as a user now.
    let pair = app.login("ada@example.com", DEFAULT_PASSWORD).await;
    let ada_token = access_token(&pair).to_owned();

    let problem = retry(&app, &ada_token, &id)
        .await
        .assert_problem(StatusCode::FORBIDDEN, "admin_required");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("body.priority") && detail.contains("body.input.duration_ms"),
        "{detail}"
    );
    let status = app
        .get(&format!("{PATH}/{id}"))
        .bearer(&other_admin)
        .send()
        .await;
    assert_eq!(
        status.json()["status"],
        "cancelled",
        "nothing was re-queued"
    );
    let rerun = retry(&app, &other_admin, &id).await;
    assert_eq!(rerun.status, StatusCode::ACCEPTED, "{}", rerun.text());
}

async fn retry(app: &TestApp, token: &str, id: &str) -> TestResponse {
    app.post(&format!("{PATH}/{id}/retry"))
        .bearer(token)
        .send()
        .await
}

fn retry_after_seconds(response: &TestResponse) -> u64 {
    response
        .header("retry-after")
        .expect("a 429 says when to try again")
        .parse()
        .expect("Retry-After is a number of seconds")
}

#[tokio::test]
async fn list_items_are_summaries_so_large_inputs_do_not_make_large_lists() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    // 21 inputs of ~0.5 MB each: the list once carried all of them (8.4 MB).
    let large = texts(1_000, 500);
    let mut ids = Vec::new();
    for _ in 0..21 {
        ids.push(id_of(&submit(&app, &token, embed_texts(&large)).await));
    }
    let list = app
        .get(&format!("{PATH}?limit=100"))
        .bearer(&token)
        .send()
        .await;
    let listed = items(&list);
    assert_eq!(listed.len(), 21);
    assert!(
        list.body.len() < 32 * 1024,
        "a list of 21 summaries is {} bytes",
        list.body.len()
    );
    for item in &listed {
        for large_field in ["input", "result", "errors"] {
            assert!(item.get(large_field).is_none(), "{large_field} in {item}");
        }
        assert_eq!(item["kind"], "embed_texts");
        assert_eq!(item["status"], "queued");
        assert_eq!(item["reruns"], 0);
    }
    // The execution itself still has everything.
    let one = app
        .get(&format!("{PATH}/{}", ids[0]))
        .bearer(&token)
        .send()
        .await
        .json();
    assert_eq!(one["input"]["texts"].as_array().map(Vec::len), Some(1_000));
    assert!(one.get("result").is_some() && one.get("errors").is_some());
}

#[tokio::test]
async fn oversized_inputs_are_refused_before_their_elements_are_checked() {
    let app = TestApp::spawn_with(&[("REQUEST_BODY_LIMIT_BYTES", "16777216")]).await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    // A sleep input past 64 KiB: one error at `input`, not the unknown field.
    let padded = json!({"kind": "sleep", "input": {"duration_ms": 1, "pad": "x".repeat(70_000)}});
    let problem = submit(&app, &token, padded)
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(
        problem["errors"].as_array().map(Vec::len),
        Some(1),
        "{problem}"
    );
    assert_eq!(problem["errors"][0]["loc"], json!(["body", "input"]));
    assert_eq!(problem["errors"][0]["type"], "too_large");
    // Just under the limit, the same input is judged on its fields.
    let under = json!({"kind": "sleep", "input": {"duration_ms": 1, "pad": "x".repeat(60_000)}});
    let problem = submit(&app, &token, under)
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(problem["errors"][0]["type"], "extra_forbidden");

    // embed_texts may take far more than 64 KiB…
    let two_mb = submit(&app, &token, embed_texts(&texts(2_000, 1_000))).await;
    assert_eq!(two_mb.status, StatusCode::ACCEPTED, "{}", two_mb.text());
    // …but not more than 8 MiB, and 9 MB of texts (empty ones among them)
    // get one small answer, not one error per empty text.
    let mut huge = texts(9_000, 1_000);
    huge.extend(std::iter::repeat_n(String::new(), 5_000));
    let refused = submit(&app, &token, embed_texts(&huge)).await;
    let problem = refused.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(
        problem["errors"].as_array().map(Vec::len),
        Some(1),
        "{problem}"
    );
    assert_eq!(problem["errors"][0]["loc"], json!(["body", "input"]));
    assert!(
        refused.body.len() < 4 * 1024,
        "{} bytes",
        refused.body.len()
    );
    assert_eq!(
        items(&app.get(PATH).bearer(&token).send().await).len(),
        1,
        "nothing refused was stored"
    );
}

#[tokio::test]
async fn unfinished_executions_are_capped_per_user_but_not_for_admins() {
    let app = TestApp::spawn_with(&[("MAX_UNFINISHED_EXECUTIONS_PER_USER", "3")]).await;
    let (_, ada) = app.signed_in("ada@example.com", Role::User).await;
    let keyed = app
        .post(PATH)
        .bearer(&ada)
        .header("idempotency-key", "first")
        .json(sleep(10))
        .send()
        .await;
    let first = id_of(&keyed);
    let second = id_of(&submit(&app, &ada, sleep(10)).await);
    id_of(&submit(&app, &ada, sleep(10)).await);
    let refused = submit(&app, &ada, sleep(10)).await;
    let problem = refused.assert_problem(StatusCode::TOO_MANY_REQUESTS, "too_many_executions");
    assert!(
        problem["detail"].as_str().unwrap().contains('3'),
        "{problem}"
    );
    assert!(retry_after_seconds(&refused) >= 1);

    // A replay of a key already used is an answer about existing work, not new work.
    let replayed = app
        .post(PATH)
        .bearer(&ada)
        .header("idempotency-key", "first")
        .json(sleep(10))
        .send()
        .await;
    assert_eq!(replayed.status, StatusCode::OK, "{}", replayed.text());
    assert_eq!(id_of(&replayed), first);

    // Finishing one makes room for one; re-running a finished one needs room too.
    cancel(&app, &ada, &second).await;
    id_of(&submit(&app, &ada, sleep(10)).await);
    retry(&app, &ada, &second)
        .await
        .assert_problem(StatusCode::TOO_MANY_REQUESTS, "too_many_executions");
    cancel(&app, &ada, &first).await;
    assert_eq!(
        retry(&app, &ada, &second).await.status,
        StatusCode::ACCEPTED
    );

    // The cap is per user, and admins have none.
    let (_, bob) = app.signed_in("bob@example.com", Role::User).await;
    id_of(&submit(&app, &bob, sleep(10)).await);
    let (_, admin) = app.signed_in("admin@example.com", Role::Admin).await;
    for _ in 0..5 {
        id_of(&submit(&app, &admin, sleep(10)).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submissions_cannot_overshoot_the_unfinished_cap() {
    let app = Arc::new(
        TestApp::spawn_with(&[
            ("MAX_UNFINISHED_EXECUTIONS_PER_USER", "5"),
            ("DATABASE_POOL_SIZE", "12"),
        ])
        .await,
    );
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    for _ in 0..4 {
        id_of(&submit(&app, &token, sleep(10)).await);
    }
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let (app, token) = (app.clone(), token.clone());
            tokio::spawn(async move { submit(&app, &token, sleep(10)).await.status })
        })
        .collect();
    let mut accepted = 0;
    for handle in handles {
        let status = handle
            .await
            .expect("a submission task ends without panicking");
        match status {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("a submission at the cap answered {other}"),
        }
    }
    assert_eq!(accepted, 1, "one room left, one accepted");
    let queued = app
        .get(&format!("{PATH}?status=queued&limit=100"))
        .bearer(&token)
        .send()
        .await;
    assert_eq!(items(&queued).len(), 5);
}

#[tokio::test]
async fn embedded_texts_have_a_daily_allowance_that_deleting_does_not_refill() {
    let app = TestApp::spawn_with(&[("MAX_EMBED_TEXTS_PER_DAY", "10")]).await;
    let (_, ada) = app.signed_in("ada@example.com", Role::User).await;
    let six = id_of(&submit(&app, &ada, embed_texts(&texts(6, 10))).await);
    let refused = submit(&app, &ada, embed_texts(&texts(5, 10))).await;
    let problem = refused.assert_problem(StatusCode::TOO_MANY_REQUESTS, "daily_allowance_exceeded");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("10 texts") && detail.contains("used 6"),
        "{detail}"
    );
    let wait = retry_after_seconds(&refused);
    assert!((86_000..=86_400).contains(&wait), "Retry-After {wait}");
    id_of(&submit(&app, &ada, embed_texts(&texts(4, 10))).await);

    // Deleting the work does not give the texts back.
    cancel(&app, &ada, &six).await;
    let deleted = app
        .delete(&format!("{PATH}/{six}"))
        .bearer(&ada)
        .send()
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    submit(&app, &ada, embed_texts(&texts(1, 10)))
        .await
        .assert_problem(StatusCode::TOO_MANY_REQUESTS, "daily_allowance_exceeded");
    // Other kinds are not metered.
    id_of(&submit(&app, &ada, sleep(1)).await);

    // More than a whole day's allowance at once can never pass: a 422, not a wait.
    let (_, bob) = app.signed_in("bob@example.com", Role::User).await;
    let problem = submit(&app, &bob, embed_texts(&texts(11, 10)))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(problem["errors"][0]["loc"], json!(["body", "input"]));
    // Each user has their own allowance; admins have none.
    let bobs = id_of(&submit(&app, &bob, embed_texts(&texts(10, 10))).await);
    // A re-run embeds the texts again, so it spends them again.
    cancel(&app, &bob, &bobs).await;
    retry(&app, &bob, &bobs)
        .await
        .assert_problem(StatusCode::TOO_MANY_REQUESTS, "daily_allowance_exceeded");
    let (_, admin) = app.signed_in("admin@example.com", Role::Admin).await;
    for _ in 0..3 {
        id_of(&submit(&app, &admin, embed_texts(&texts(10, 10))).await);
    }
    assert_eq!(
        retry(&app, &admin, &bobs).await.status,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn high_priority_and_long_sleeps_are_for_admins() {
    let app = TestApp::spawn().await;
    let (_, user) = app.signed_in("ada@example.com", Role::User).await;
    let (_, admin) = app.signed_in("admin@example.com", Role::Admin).await;
    let urgent = json!({"kind": "sleep", "input": {"duration_ms": 10}, "priority": 1});
    let problem = submit(&app, &user, urgent.clone())
        .await
        .assert_problem(StatusCode::FORBIDDEN, "admin_required");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("body.priority"),
        "{problem}"
    );
    let long = json!({"kind": "sleep", "input": {"duration_ms": 60_001}});
    let problem = submit(&app, &user, long.clone())
        .await
        .assert_problem(StatusCode::FORBIDDEN, "admin_required");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("body.input.duration_ms"), "{detail}");
    assert!(!detail.contains("priority"), "{detail}");
    // Both at once: both named.
    let both = json!({"kind": "sleep", "input": {"duration_ms": 86_400_000}, "priority": 100, "max_attempts": 25});
    let problem = submit(&app, &user, both.clone())
        .await
        .assert_problem(StatusCode::FORBIDDEN, "admin_required");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("body.priority") && detail.contains("body.input.duration_ms"),
        "{detail}"
    );
    assert!(
        items(&app.get(PATH).bearer(&user).send().await).is_empty(),
        "nothing refused was stored"
    );
    // Up to a minute, and priority 0 or below, is anyone's.
    for allowed in [
        json!({"kind": "sleep", "input": {"duration_ms": 60_000}, "priority": 0}),
        json!({"kind": "sleep", "input": {"duration_ms": 10}, "priority": -100}),
    ] {
        let response = submit(&app, &user, allowed).await;
        assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.text());
    }
    for body in [urgent, long, both] {
        let response = submit(&app, &admin, body).await;
        assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.text());
    }
}

#[tokio::test]
async fn one_execution_is_re_run_a_bounded_number_of_times() {
    let app = TestApp::spawn_with(&[("MAX_EXECUTION_RERUNS", "2")]).await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let id = id_of(&submit(&app, &token, sleep(10)).await);
    for rerun in 1..=2 {
        cancel(&app, &token, &id).await;
        let retried = retry(&app, &token, &id).await;
        assert_eq!(retried.status, StatusCode::ACCEPTED, "{}", retried.text());
        assert_eq!(retried.json()["reruns"], rerun);
    }
    cancel(&app, &token, &id).await;
    let problem = retry(&app, &token, &id)
        .await
        .assert_problem(StatusCode::CONFLICT, "rerun_limit_reached");
    assert!(
        problem["detail"].as_str().unwrap().contains('2'),
        "{problem}"
    );
    // Admins are held to it too: submitting anew is the way.
    let (_, admin) = app.signed_in("admin@example.com", Role::Admin).await;
    retry(&app, &admin, &id)
        .await
        .assert_problem(StatusCode::CONFLICT, "rerun_limit_reached");
    let one = app
        .get(&format!("{PATH}/{id}"))
        .bearer(&token)
        .send()
        .await
        .json();
    assert_eq!(
        (one["status"].clone(), one["reruns"].clone()),
        (json!("cancelled"), json!(2))
    );
    // A queued execution is still refused as a transition, whatever its count.
    let fresh = id_of(&submit(&app, &token, sleep(10)).await);
    retry(&app, &token, &fresh)
        .await
        .assert_problem(StatusCode::CONFLICT, "invalid_transition");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_of_one_execution_re_run_it_once() {
    let app = Arc::new(TestApp::spawn_with(&[("DATABASE_POOL_SIZE", "12")]).await);
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let id = id_of(&submit(&app, &token, sleep(10)).await);
    cancel(&app, &token, &id).await;
    let handles: Vec<_> = (0..10)
        .map(|_| {
            let (app, token, id) = (app.clone(), token.clone(), id.clone());
            tokio::spawn(async move { retry(&app, &token, &id).await })
        })
        .collect();
    let mut accepted = 0;
    for handle in handles {
        let response = handle.await.expect("a retry task ends without panicking");
        if response.status == StatusCode::ACCEPTED {
            accepted += 1;
        } else {
            response.assert_problem(StatusCode::CONFLICT, "invalid_transition");
        }
    }
    assert_eq!(accepted, 1);
    let one = app
        .get(&format!("{PATH}/{id}"))
        .bearer(&token)
        .send()
        .await
        .json();
    assert_eq!(one["reruns"], 1);
}

#[tokio::test]
async fn no_re_run_at_all_when_the_bound_is_zero() {
    let app = TestApp::spawn_with(&[("MAX_EXECUTION_RERUNS", "0")]).await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let id = id_of(&submit(&app, &token, sleep(10)).await);
    cancel(&app, &token, &id).await;
    retry(&app, &token, &id)
        .await
        .assert_problem(StatusCode::CONFLICT, "rerun_limit_reached");
}

/// The app's document, as `/openapi.json` serves it.
fn document() -> Value {
    serde_json::to_value(tessera::app::openapi()).unwrap()
}

/// The schema of `name` among the document's components.
fn component<'a>(spec: &'a Value, name: &str) -> &'a Value {
    spec["components"]["schemas"]
        .get(name)
        .unwrap_or_else(|| panic!("{name} is a component"))
}

/// The schema of the `name` parameter of `method path`.
fn parameter<'a>(spec: &'a Value, method: &str, path: &str, name: &str) -> &'a Value {
    spec["paths"][path][method]["parameters"]
        .as_array()
        .and_then(|parameters| parameters.iter().find(|p| p["name"] == name))
        .map(|parameter| &parameter["schema"])
        .unwrap_or_else(|| panic!("{method} {path} has a {name} parameter"))
}

#[test]
fn submissions_and_responses_are_unions_over_the_registered_kinds() {
    let spec = document();
    // send_email is internal: admins see its executions (the kind names and
    // the responses' union have it), nobody may submit it.
    assert_eq!(
        component(&spec, "ExecutionKind")["enum"],
        json!(["embed_texts", "send_email", "sleep"])
    );
    assert_eq!(
        component(&spec, "ExecutionResponse")["discriminator"]["mapping"]["send_email"],
        "#/components/schemas/SendEmailExecution"
    );
    for union in ["CreateExecutionRequest", "GenerateNameRequest"] {
        let mapping = &component(&spec, union)["discriminator"]["mapping"];
        assert!(mapping.get("send_email").is_none(), "{union}: {mapping}");
    }
    for (union, suffix) in [
        ("CreateExecutionRequest", "ExecutionRequest"),
        ("GenerateNameRequest", "GenerateNameRequest"),
        ("ExecutionResponse", "Execution"),
    ] {
        let schema = component(&spec, union);
        assert_eq!(schema["discriminator"]["propertyName"], "kind", "{union}");
        for (kind, prefix) in [("sleep", "Sleep"), ("embed_texts", "EmbedTexts")] {
            let target = format!("#/components/schemas/{prefix}{suffix}");
            assert_eq!(schema["discriminator"]["mapping"][kind], json!(target));
            assert!(
                schema["oneOf"]
                    .as_array()
                    .unwrap()
                    .contains(&json!({"$ref": target}))
            );
        }
    }
    let sleep = component(&spec, "SleepExecutionRequest");
    assert_eq!(
        sleep["unevaluatedProperties"], false,
        "closed, like the server"
    );
    assert_eq!(
        sleep["allOf"][0]["$ref"],
        "#/components/schemas/ExecutionOptions"
    );
    assert_eq!(
        sleep["allOf"][1]["properties"]["kind"]["enum"],
        json!(["sleep"])
    );
    assert_eq!(
        sleep["allOf"][1]["properties"]["input"]["$ref"],
        "#/components/schemas/SleepInput"
    );
    let options = component(&spec, "ExecutionOptions");
    for shared in ["name", "priority", "run_at", "max_attempts", "timeout_s"] {
        assert!(options["properties"].get(shared).is_some(), "{shared}");
    }
    let response = &component(&spec, "EmbedTextsExecution")["allOf"];
    assert_eq!(response[0]["$ref"], "#/components/schemas/ExecutionSummary");
    assert_eq!(
        response[1]["properties"]["input"]["$ref"],
        "#/components/schemas/EmbedTextsInput"
    );
    assert_eq!(
        response[1]["properties"]["result"]["oneOf"],
        json!([{"$ref": "#/components/schemas/EmbedTextsOutput"}, {"type": "null"}])
    );
    assert_eq!(
        component(&spec, "ExecutionSummary")["properties"]["kind"]["$ref"],
        "#/components/schemas/ExecutionKind"
    );
}

#[test]
fn the_executions_parameters_state_the_servers_rules() {
    let spec = document();
    let list = |name| parameter(&spec, "get", "/api/v1/executions", name).clone();
    assert_eq!(list("limit")["minimum"], 1);
    assert_eq!(list("limit")["maximum"], 100);
    assert_eq!(list("cursor")["format"], "uuid");
    assert_eq!(list("kind")["$ref"], "#/components/schemas/ExecutionKind");
    assert_eq!(list("status")["$ref"], "#/components/schemas/Status");
    let key = parameter(&spec, "post", "/api/v1/executions", "Idempotency-Key");
    assert_eq!(
        key,
        &json!({"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7e]+$"})
    );
    let last = parameter(
        &spec,
        "get",
        "/api/v1/executions/{id}/events",
        "Last-Event-ID",
    );
    assert_eq!(last["type"], "integer", "a number, never null");
    assert_eq!(last["minimum"], 0);
    for (method, path) in [
        ("get", "/api/v1/executions/{id}"),
        ("delete", "/api/v1/executions/{id}"),
        ("post", "/api/v1/executions/{id}/cancel"),
        ("post", "/api/v1/executions/{id}/retry"),
        ("get", "/api/v1/executions/{id}/events"),
    ] {
        assert_eq!(
            parameter(&spec, method, path, "id")["format"],
            "uuid",
            "{method} {path}"
        );
    }
    let event = &spec["paths"]["/api/v1/executions/{id}/events"]["get"]["responses"]["200"]["content"]
        ["text/event-stream"]["schema"];
    assert_eq!(
        event["$ref"], "#/components/schemas/ExecutionStreamEvent",
        "each event is described"
    );
}

#[tokio::test]
async fn the_served_document_states_this_deployments_bounds() {
    let app = TestApp::spawn_with(&[("INFERENCE_BATCH_JOB_MAX_TEXTS", "50")]).await;
    let spec = app.get("/openapi.json").send().await.json();
    let texts = &component(&spec, "EmbedTextsInput")["properties"]["texts"];
    assert_eq!(texts["maxItems"], 50);
    assert_eq!(texts["minItems"], 1);
    assert_eq!(texts["items"]["minLength"], 1);
    assert_eq!(
        component(&spec, "EmbedTextsInput")["properties"]["model"]["pattern"],
        format!("^([^\\x00]*/)?{TEST_MODEL}$")
    );
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let by_id = json!({"kind": "embed_texts", "input": {"texts": ["a"], "model": format!("org/{TEST_MODEL}")}});
    assert_eq!(
        submit(&app, &token, by_id).await.status,
        StatusCode::ACCEPTED
    );
    let over = submit(&app, &token, embed_texts(&texts_of(51))).await;
    over.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let at = submit(&app, &token, embed_texts(&texts_of(50))).await;
    assert_eq!(at.status, StatusCode::ACCEPTED, "{}", at.text());
}

fn texts_of(count: usize) -> Vec<String> {
    (0..count).map(|index| format!("text {index}")).collect()
}

#[tokio::test]
async fn numbers_are_read_as_the_document_types_them() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    // JSON Schema's `integer` is any number without a fractional part.
    let whole = submit(
        &app,
        &token,
        json!({"kind": "sleep", "input": {"duration_ms": 1500.0, "steps": 3.0}, "max_attempts": 8.0}),
    )
    .await;
    assert_eq!(whole.status, StatusCode::ACCEPTED, "{}", whole.text());
    assert_eq!(whole.json()["max_attempts"], 8);
    assert_eq!(whole.json()["input"]["duration_ms"], 1500);
    assert_eq!(whole.json()["input"]["steps"], 3);
    let named = app
        .post(&format!("{PATH}/generate-name"))
        .bearer(&token)
        .json(json!({"kind": "sleep", "input": {"duration_ms": 2000.0}}))
        .send()
        .await;
    assert_eq!(named.json()["name"], "sleep · Sleep 2.0 s");
    for (body, loc) in [
        (
            json!({"kind": "sleep", "input": {"duration_ms": 1}, "max_attempts": 8.5}),
            json!(["body", "max_attempts"]),
        ),
        (
            json!({"kind": "sleep", "input": {"duration_ms": 1.5}}),
            json!(["body", "input", "duration_ms"]),
        ),
        (
            json!({"kind": "sleep", "input": {"duration_ms": 1, "fail_first_attempts": 26}}),
            json!(["body", "input", "fail_first_attempts"]),
        ),
        (
            json!({"kind": "sleep", "input": {"duration_ms": 1}, "priority": 1e300}),
            json!(["body", "priority"]),
        ),
    ] {
        let problem = submit(&app, &token, body.clone())
            .await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(problem["errors"][0]["loc"], loc, "{body}");
    }
}

#[tokio::test]
async fn names_are_checked_as_the_documented_pattern_says() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let named = |name: String| json!({"kind": "sleep", "input": {"duration_ms": 1}, "name": name});
    for refused in [
        String::new(),
        " \t\u{3000}\u{a0}".to_owned(),
        "tab\there".to_owned(),
        "nul\u{0}".to_owned(),
        "next line\u{85}".to_owned(),
        "x".repeat(101),
        format!(" {} ", "x".repeat(99)),
    ] {
        let problem = submit(&app, &token, named(refused.clone()))
            .await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(
            problem["errors"][0]["loc"],
            json!(["body", "name"]),
            "{refused:?}"
        );
    }
    for (accepted, stored) in [
        ("x".repeat(100), "x".repeat(100)),
        ("  padded\u{3000}".to_owned(), "padded".to_owned()),
        ("\u{feff}".to_owned(), "\u{feff}".to_owned()),
        ("日本語 ✓".to_owned(), "日本語 ✓".to_owned()),
    ] {
        let response = submit(&app, &token, named(accepted.clone())).await;
        assert_eq!(response.status, StatusCode::ACCEPTED, "{accepted:?}");
        assert_eq!(response.json()["name"], json!(stored));
    }
}

#[tokio::test]
async fn strings_postgresql_cannot_store_are_refused_not_failed_on() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let body = json!({"kind": "embed_texts", "input": {
        "texts": ["fine", "nul \u{0} inside", "fine", "\u{0}"],
        "model": TEST_MODEL,
    }});
    let problem = submit(&app, &token, body)
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let locs: Vec<&Value> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|error| &error["loc"])
        .collect();
    assert_eq!(
        locs,
        [
            &json!(["body", "input", "texts", 1]),
            &json!(["body", "input", "texts", 3])
        ]
    );
    let many = json!({"kind": "embed_texts", "input": {
        "texts": vec!["\u{0}"; 500],
        "model": TEST_MODEL,
    }});
    let problem = submit(&app, &token, many)
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(problem["errors"].as_array().map(Vec::len), Some(20));
    assert!(items(&app.get(PATH).bearer(&token).send().await).is_empty());
}
