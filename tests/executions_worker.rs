//! Workers: exactly-once under concurrency, retries with backoff, timeouts,
//! panics, cancellation (in-process, across processes, and durable through
//! rescues, hand-backs and retries), crash rescue with fencing on the claim's
//! token, jobs dropped when their lease is lost, bounded error histories, and
//! graceful shutdown.

// Test code: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::executions::{
    Count, create_side_effects_table, load, side_effects, start_runner, submit, test_kinds,
    wait_for, worker_settings,
};
use common::{DEFAULT_PASSWORD, TestApp};
use diesel_async::{AsyncConnection, RunQueryDsl};
use futures_util::FutureExt;
use serde_json::json;
use tessera::executions::context::{JobContext, JobError, StopSignal};
use tessera::executions::kinds::{ExecutionKind, KindRegistry, Sleep};
use tessera::executions::models::Status;
use tessera::executions::repository::{self, Claim, Outcome};
use tessera::executions::service;
use tessera::inference::repository::{StoredEmbedding, insert_chunk};
use tessera::users::models::Role;
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_workers_run_every_execution_exactly_once() {
    let app = TestApp::spawn_with(&[("DATABASE_POOL_SIZE", "16")]).await;
    create_side_effects_table(&app).await;
    let owner = app
        .create_user("owner@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let registry = test_kinds();
    let mut ids = Vec::new();
    for index in 0..150 {
        let execution = submit(
            &app,
            &registry,
            &owner,
            Count::NAME,
            json!({"label": format!("job {index}")}),
            json!({}),
        )
        .await;
        ids.push(execution.id);
    }
    let settings = worker_settings(&[("WORKER_CONCURRENCY", "4"), ("WORKER_CLAIM_BATCH", "8")]);
    let runners: Vec<_> = (0..3)
        .map(|_| start_runner(&app, test_kinds(), settings.clone()))
        .collect();
    for id in &ids {
        let execution = wait_for(&app, *id, Status::Succeeded, PATIENCE).await;
        assert_eq!(execution.attempt, 1, "no execution ran twice");
    }
    assert_eq!(
        side_effects(&app).await,
        (150, 150),
        "every side effect exactly once"
    );
    let worker_ids: std::collections::HashSet<_> = runners.iter().map(|(_, _, id)| *id).collect();
    assert_eq!(worker_ids.len(), 3);
    for (shutdown, handle, _) in runners {
        shutdown.cancel();
        handle
            .await
            .expect("the runner stops cleanly once cancelled");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_enqueue_rolled_back_with_its_transaction_never_runs() {
    let app = TestApp::spawn().await;
    create_side_effects_table(&app).await;
    let owner = app
        .create_user("owner@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let registry = test_kinds();
    let (shutdown, handle, _) = start_runner(
        &app,
        test_kinds(),
        worker_settings(&[("WORKER_POLL_INTERVAL_MS", "50")]),
    );
    let request =
        serde_json::from_value(json!({"kind": "count", "input": {"label": "rolled back"}}))
            .unwrap();
    let submission = service::validate(&registry, owner.id, &request, None).unwrap();
    let mut conn = app.conn().await;
    let result: Result<(), tessera::shared::error::AppError> = conn
        .transaction(async |conn| {
            let (execution, _) = service::enqueue(conn, submission).await?;
            assert_eq!(execution.status, Status::Queued);
            Err(tessera::shared::error::AppError::internal(
                "the caller's own write failed",
            ))
        })
        .await;
    assert!(result.is_err());
    // A committed one runs, proving the worker was awake all along.
    let committed = submit(
        &app,
        &registry,
        &owner,
        "count",
        json!({"label": "committed"}),
        json!({}),
    )
    .await;
    wait_for(&app, committed.id, Status::Succeeded, PATIENCE).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(side_effects(&app).await, (1, 1));
    #[derive(diesel::QueryableByName)]
    struct Total {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        total: i64,
    }
    let total: Total = diesel::sql_query("SELECT count(*) AS total FROM executions")
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(total.total, 1);
    shutdown.cancel();
    handle
        .await
        .expect("the runner stops cleanly once cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_retry_with_growing_backoff_then_succeed_or_fail() {
    let app = TestApp::spawn().await;
    let owner = app
        .create_user("owner@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let registry = test_kinds();
    let settings = worker_settings(&[
        ("EXECUTION_RETRY_BASE_MS", "100"),
        ("WORKER_POLL_INTERVAL_MS", "20"),
    ]);
    let (shutdown, handle, _) = start_runner(&app, test_kinds(), settings);
    let recovering = submit(
        &app,
        &registry,
        &owner,
        "sleep",
        json!({"duration_ms": 0, "fail_first_attempts": 2}),
        json!({"max_attempts": 3}),
    )
    .await;
    let giving_up = submit(
        &app,
        &registry,
        &owner,
        "sleep",
        json!({"duration_ms": 0, "fail_first_attempts": 5}),
        json!({"max_attempts": 2}),
    )
    .await;

    let succeeded = wait_for(&app, recovering.id, Status::Succeeded, PATIENCE).await;
    assert_eq!(succeeded.attempt, 3);
    assert_eq!(succeeded.result.unwrap()["attempt"], 3);
    let errors = succeeded.errors.as_array().unwrap();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["attempt"], 1);
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("on purpose")
    );

    // Backoff: attempt n+1 starts no sooner than base·2^(n-1)·0.5 after attempt n failed.
    let mut conn = app.conn().await;
    let events = repository::events_after(&mut conn, recovering.id, 0)
        .await
        .unwrap();
    let started = |attempt: i64| {
        events
            .iter()
            .find(|e| e.data["status"] == "running" && e.data["attempt"] == attempt)
            .map(|e| e.created_at)
            .unwrap()
    };
    let failed_at = |index: usize| {
        chrono::DateTime::parse_from_rfc3339(errors[index]["at"].as_str().unwrap()).unwrap()
    };
    let first_wait = started(2) - failed_at(0).with_timezone(&chrono::Utc);
    let second_wait = started(3) - failed_at(1).with_timezone(&chrono::Utc);
    assert!(
        first_wait >= chrono::Duration::milliseconds(50),
        "{first_wait}"
    );
    assert!(
        second_wait >= chrono::Duration::milliseconds(100),
        "{second_wait}"
    );

    let failed = wait_for(&app, giving_up.id, Status::Failed, PATIENCE).await;
    assert_eq!(failed.attempt, 2);
    assert_eq!(failed.errors.as_array().unwrap().len(), 2);
    assert!(failed.finished_at.is_some());
    shutdown.cancel();
    handle
        .await
        .expect("the runner stops cleanly once cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn timeouts_and_panics_fail_only_their_attempt() {
    let app = TestApp::spawn().await;
    create_side_effects_table(&app).await;
    let owner = app
        .create_user("owner@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let registry = test_kinds();
    let (shutdown, handle, _) = start_runner(
        &app,
        test_kinds(),
        worker_settings(&[("WORKER_CONCURRENCY", "1")]),
    );
    let slow = submit(
        &app,
        &registry,
        &owner,
        "sleep",
        json!({"duration_ms": 60_000}),
        json!({"timeout_s": 1, "max_attempts": 1}),
    )
    .await;
    let panicking = submit(
        &app,
        &registry,
        &owner,
        "panic",
        json!({}),
        json!({"max_attempts": 1}),
    )
    .await;
    let after = submit(
        &app,
        &registry,
        &owner,
        "count",
        json!({"label": "after the panic"}),
        json!({}),
    )
    .await;

    let timed_out = wait_for(&app, slow.id, Status::Failed, PATIENCE).await;
    assert_eq!(timed_out.errors[0]["message"], "timed out after 1 s");
    let panicked = wait_for(&app, panicking.id, Status::Failed, PATIENCE).await;
    // The panic's text (and any path in it) goes to the log, never to clients.
    assert_eq!(panicked.errors[0]["message"], "The job panicked.");
    let mut conn = app.conn().await;
    let events = repository::events_after(&mut conn, panicking.id, 0)
        .await
        .unwrap();
    let failure = events
        .iter()
        .find(|event| event.data["status"] == "failed")
        .expect("the failure has its event");
    assert_eq!(failure.data["error"], "The job panicked.");
    let stored = format!("{:?} {events:?}", panicked.errors);
    assert!(!stored.contains("on purpose"), "{stored}");
    wait_for(&app, after.id, Status::Succeeded, PATIENCE).await;
    shutdown.cancel();
    handle
        .await
        .expect("the runner stops cleanly once cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_execution_is_cancelled_promptly() {
    let app = TestApp::spawn().await;
    let owner = app
        .create_user("owner@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let registry = test_kinds();
    let (shutdown, handle, _) = start_runner(&app, test_kinds(), worker_settings(&[]));
    let long = submit(
        &app,
        &registry,
        &owner,
        "sleep",
        json!({"duration_ms": 60_000, "steps": 100}),
        json!({}),
    )
    .await;
    wait_for(&app, long.id, Status::Running, PATIENCE).await;
    let mut conn = app.conn().await;
    let signalled = repository::request_cancel(&mut conn, long.id)
        .await
        .unwrap()
        .unwrap();
    assert!(signalled.cancel_requested);
    // Heartbeats here are 10 s apart: only the notification can make this quick.
    let cancelled = wait_for(&app, long.id, Status::Cancelled, Duration::from_secs(5)).await;
    assert!(cancelled.finished_at.is_some());
    assert!(
        cancelled.errors.as_array().unwrap().is_empty(),
        "a cancellation is not a failure"
    );
    shutdown.cancel();
    handle
        .await
        .expect("the runner stops cleanly once cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_hands_unfinished_work_back_without_counting_the_attempt() {
    let app = TestApp::spawn().await;
    let owner = app
        .create_user("owner@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let registry = test_kinds();
    let (shutdown, handle, _) = start_runner(
        &app,
        test_kinds(),
        worker_settings(&[("SHUTDOWN_GRACE_MS", "200")]),
    );
    let long = submit(
        &app,
        &registry,
        &owner,
        "sleep",
        json!({"duration_ms": 60_000, "steps": 100}),
        json!({}),
    )
    .await;
    let quick = submit(
        &app,
        &registry,
        &owner,
        "sleep",
        json!({"duration_ms": 0}),
        json!({}),
    )
    .await;
    wait_for(&app, long.id, Status::Running, PATIENCE).await;
    wait_for(&app, quick.id, Status::Succeeded, PATIENCE).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("the runner stops within 10 s of being cancelled")
        .unwrap();
    let handed_back = load(&app, long.id).await;
    assert_eq!(handed_back.status, Status::Queued);
    assert_eq!(
        handed_back.attempt, 0,
        "the interrupted attempt is not counted"
    );
    assert!(handed_back.worker_id.is_none() && handed_back.errors.as_array().unwrap().is_empty());
    // Another worker picks it up.
    let (shutdown, handle, _) = start_runner(&app, test_kinds(), worker_settings(&[]));
    wait_for(&app, long.id, Status::Running, PATIENCE).await;
    shutdown.cancel();
    handle
        .await
        .expect("the runner stops cleanly once cancelled");
}

/// A `tessera worker` process on the app's database.
fn worker_process(app: &TestApp, extra: &[(&str, &str)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tessera"));
    command
        .arg("worker")
        .env("APP_ENV", "test")
        .env("DATABASE_URL", &app.database.url)
        .env("RUST_LOG", "warn")
        .env("JWT_SECRET", "a-test-secret-that-is-long-enough-0123456789")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (name, value) in extra {
        command.env(name, value);
    }
    command
        .spawn()
        .expect("the tessera binary starts as a worker")
}

/// Waits until the execution runs under a worker other than `not_by`.
async fn wait_running_elsewhere(
    app: &TestApp,
    id: uuid::Uuid,
) -> tessera::executions::models::Execution {
    let running = wait_for(app, id, Status::Running, PATIENCE).await;
    assert!(running.worker_id.is_some());
    running
}

#[tokio::test(flavor = "multi_thread")]
async fn cancellation_reaches_a_worker_in_another_process() {
    let app = TestApp::spawn().await;
    let owner = app
        .create_user("owner@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let registry = KindRegistry::new().register(Sleep);
    let mut child = worker_process(&app, &[]);
    let long = submit(
        &app,
        &registry,
        &owner,
        "sleep",
        json!({"duration_ms": 60_000, "steps": 100}),
        json!({}),
    )
    .await;
    wait_running_elsewhere(&app, long.id).await;
    let mut conn = app.conn().await;
    repository::request_cancel(&mut conn, long.id)
        .await
        .unwrap();
    let cancelled = wait_for(&app, long.id, Status::Cancelled, Duration::from_secs(5)).await;
    assert!(cancelled.finished_at.is_some());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "the worker exits 0 on SIGTERM");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_workers_job_is_rescued_and_its_late_write_is_fenced_off() {
    let app = TestApp::spawn().await;
    let owner = app
        .create_user("owner@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let registry = KindRegistry::new().register(Sleep);
    let lease = [
        ("EXECUTION_LEASE_MS", "1000"),
        ("EXECUTION_HEARTBEAT_MS", "250"),
    ];
    let mut child = worker_process(&app, &lease);
    let job = submit(
        &app,
        &registry,
        &owner,
        "sleep",
        json!({"duration_ms": 2000, "steps": 20}),
        json!({}),
    )
    .await;
    let running = wait_running_elsewhere(&app, job.id).await;
    let dead_worker = running.worker_id.unwrap();
    let dead_token = claim_token(&app, job.id).await.unwrap();
    child.kill().unwrap(); // SIGKILL: no chance to hand anything back.
    child.wait().unwrap();

    let (shutdown, handle, rescuer_id) = start_runner(
        &app,
        KindRegistry::new().register(Sleep),
        worker_settings(&lease),
    );
    let done = wait_for(&app, job.id, Status::Succeeded, PATIENCE).await;
    assert_eq!(done.attempt, 2, "retried once after the rescue");
    assert_eq!(done.result.as_ref().unwrap()["attempt"], 2);
    let errors = done.errors.as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert!(errors[0]["message"].as_str().unwrap().contains("lease"));
    assert_ne!(dead_worker, rescuer_id);

    // The dead worker's late write (as if it had only been paused) changes nothing.
    let stale = Claim {
        execution_id: job.id,
        attempt: 1,
        token: dead_token,
    };
    let mut conn = app.conn().await;
    let late = repository::finish(
        &mut conn,
        &stale,
        &Outcome::Failed {
            message: "late".to_owned(),
            retry_at: None,
        },
    )
    .await
    .unwrap();
    assert!(late.is_none(), "the fence rejects the old claim");
    assert!(
        !repository::report_progress(&mut conn, &stale, 5, "late")
            .await
            .unwrap()
    );
    let after = load(&app, job.id).await;
    assert_eq!(after.status, Status::Succeeded);
    assert_eq!(after.result, done.result);
    shutdown.cancel();
    handle
        .await
        .expect("the runner stops cleanly once cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn finished_executions_past_retention_are_pruned() {
    let app = TestApp::spawn().await;
    let owner = app
        .create_user("owner@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let registry = test_kinds();
    let old = submit(
        &app,
        &registry,
        &owner,
        "sleep",
        json!({"duration_ms": 0}),
        json!({}),
    )
    .await;
    let fresh = submit(
        &app,
        &registry,
        &owner,
        "sleep",
        json!({"duration_ms": 0}),
        json!({}),
    )
    .await;
    let mut conn = app.conn().await;
    diesel::sql_query("UPDATE executions SET status = 'succeeded', finished_at = now() - interval '10 days' WHERE id = $1")
        .bind::<diesel::sql_types::Uuid, _>(old.id)
        .execute(&mut conn)
        .await
        .unwrap();
    let pruned = repository::prune_finished(
        &mut conn,
        chrono::Utc::now() - chrono::Duration::days(7),
        100,
    )
    .await
    .unwrap();
    assert_eq!(pruned, 1);
    assert!(repository::find(&mut conn, old.id).await.unwrap().is_none());
    assert!(
        repository::find(&mut conn, fresh.id)
            .await
            .unwrap()
            .is_some(),
        "queued work is never pruned"
    );
}

/// Sleeps for an hour and never looks at its stop signal: shows that a job is
/// dropped (not asked) once its worker lost the claim.
struct Stubborn;

impl ExecutionKind for Stubborn {
    const NAME: &'static str = "stubborn";
    type Input = serde_json::Value;
    type Output = serde_json::Value;

    fn validate(&self, _input: &serde_json::Value) -> Vec<tessera::shared::error::FieldError> {
        Vec::new()
    }

    fn describe(&self, _input: &serde_json::Value) -> String {
        "stubborn".to_owned()
    }

    async fn run(
        &self,
        _input: serde_json::Value,
        _context: JobContext,
    ) -> Result<serde_json::Value, JobError> {
        tokio::time::sleep(Duration::from_secs(3_600)).await;
        Ok(json!({}))
    }
}

/// The token of the execution's current claim (`None` unless it runs).
async fn claim_token(app: &TestApp, id: Uuid) -> Option<Uuid> {
    #[derive(diesel::QueryableByName)]
    struct Token {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Uuid>)]
        claim_token: Option<Uuid>,
    }
    let mut conn = app.conn().await;
    let token: Token = diesel::sql_query("SELECT claim_token FROM executions WHERE id = $1")
        .bind::<diesel::sql_types::Uuid, _>(id)
        .get_result(&mut conn)
        .await
        .unwrap();
    token.claim_token
}

/// Claims the one due `sleep` execution as `worker`, as a claim loop does.
async fn claim_as(app: &TestApp, worker: Uuid) -> Claim {
    let mut conn = app.conn().await;
    let claimed = repository::claim(
        &mut conn,
        "default",
        &["sleep"],
        worker,
        Duration::from_secs(60),
        1,
    )
    .await
    .unwrap();
    assert_eq!(claimed.len(), 1, "one execution was due");
    claimed[0].claim()
}

/// Makes the lease of `id` lapse and runs the rescuer, as if its worker had died.
async fn lapse_and_rescue(app: &TestApp, id: Uuid) {
    let mut conn = app.conn().await;
    diesel::sql_query(
        "UPDATE executions SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .execute(&mut conn)
    .await
    .unwrap();
    let rescued = repository::rescue_expired(&mut conn).await.unwrap();
    assert_eq!(rescued, vec![id]);
}

/// A `sleep` execution claimed by a fresh worker, whose cancellation was then requested.
async fn running_with_cancel_requested(app: &TestApp) -> Claim {
    let owner = app
        .create_user("owner@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let execution = submit(
        app,
        &test_kinds(),
        &owner,
        "sleep",
        json!({"duration_ms": 60_000}),
        json!({"max_attempts": 3}),
    )
    .await;
    let claim = claim_as(app, Uuid::now_v7()).await;
    assert_eq!(claim.execution_id, execution.id);
    let mut conn = app.conn().await;
    let signalled = repository::request_cancel(&mut conn, execution.id)
        .await
        .unwrap()
        .unwrap();
    assert!(signalled.cancel_requested);
    claim
}

/// Asserts that the execution ended `cancelled` for good: finished, no longer
/// claimed, no error recorded for the attempt the cancellation ended.
async fn assert_cancelled_for_good(app: &TestApp, id: Uuid) {
    let execution = load(app, id).await;
    assert_eq!(execution.status, Status::Cancelled, "{execution:?}");
    assert!(execution.finished_at.is_some());
    assert!(execution.worker_id.is_none() && !execution.cancel_requested);
    assert_eq!(claim_token(app, id).await, None);
    assert!(execution.errors.as_array().unwrap().is_empty());
    let mut conn = app.conn().await;
    let events = repository::events_after(&mut conn, id, 0).await.unwrap();
    assert_eq!(events.last().unwrap().data["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_execution_whose_worker_is_killed_ends_cancelled() {
    let app = TestApp::spawn().await;
    let owner = app
        .create_user("owner@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let registry = KindRegistry::new().register(Sleep);
    let lease = [
        ("EXECUTION_LEASE_MS", "1000"),
        ("EXECUTION_HEARTBEAT_MS", "250"),
    ];
    let mut child = worker_process(&app, &lease);
    let job = submit(
        &app,
        &registry,
        &owner,
        "sleep",
        json!({"duration_ms": 60_000, "steps": 100}),
        json!({"max_attempts": 3}),
    )
    .await;
    wait_running_elsewhere(&app, job.id).await;
    // Frozen, the worker hears nothing; then killed, it never acts on the request.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut conn = app.conn().await;
    repository::request_cancel(&mut conn, job.id).await.unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    // Another worker's rescuer takes the execution back once the lease lapses:
    // it ends cancelled rather than running again.
    let (shutdown, handle, _) = start_runner(&app, test_kinds(), worker_settings(&lease));
    wait_for(&app, job.id, Status::Cancelled, PATIENCE).await;
    assert_cancelled_for_good(&app, job.id).await;
    assert_eq!(load(&app, job.id).await.attempt, 1, "it never ran again");
    shutdown.cancel();
    handle
        .await
        .expect("the runner stops cleanly once cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rescue_of_a_cancel_requested_execution_ends_it_cancelled() {
    let app = TestApp::spawn().await;
    let claim = running_with_cancel_requested(&app).await;
    lapse_and_rescue(&app, claim.execution_id).await;
    assert_cancelled_for_good(&app, claim.execution_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hand_back_at_shutdown_of_a_cancel_requested_execution_ends_it_cancelled() {
    let app = TestApp::spawn().await;
    let claim = running_with_cancel_requested(&app).await;
    let mut conn = app.conn().await;
    let recorded = repository::finish(&mut conn, &claim, &Outcome::HandedBack)
        .await
        .unwrap();
    assert_eq!(recorded, Some(Status::Cancelled));
    assert_cancelled_for_good(&app, claim.execution_id).await;
    assert_eq!(load(&app, claim.execution_id).await.attempt, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_attempt_of_a_cancel_requested_execution_does_not_retry() {
    let app = TestApp::spawn().await;
    let claim = running_with_cancel_requested(&app).await;
    let mut conn = app.conn().await;
    let failed = Outcome::Failed {
        message: "boom".to_owned(),
        retry_at: Some(chrono::Utc::now()),
    };
    let recorded = repository::finish(&mut conn, &claim, &failed)
        .await
        .unwrap();
    assert_eq!(recorded, Some(Status::Cancelled), "not queued for a retry");
    assert_cancelled_for_good(&app, claim.execution_id).await;
    // Nothing is left for a worker to claim.
    let claimable = repository::claim(
        &mut conn,
        "default",
        &["sleep"],
        Uuid::now_v7(),
        Duration::from_secs(60),
        10,
    )
    .await
    .unwrap();
    assert!(claimable.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_last_failing_attempt_of_a_cancel_requested_execution_ends_cancelled() {
    let app = TestApp::spawn().await;
    let claim = running_with_cancel_requested(&app).await;
    let mut conn = app.conn().await;
    let failed = Outcome::Failed {
        message: "boom".to_owned(),
        retry_at: None,
    };
    let recorded = repository::finish(&mut conn, &claim, &failed)
        .await
        .unwrap();
    assert_eq!(recorded, Some(Status::Cancelled));
    assert_cancelled_for_good(&app, claim.execution_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_success_that_races_a_cancellation_still_counts() {
    let app = TestApp::spawn().await;
    let claim = running_with_cancel_requested(&app).await;
    let mut conn = app.conn().await;
    let done = json!({"slept_ms": 60_000, "attempt": 1});
    let held = repository::finish_succeeded_batch(&mut conn, &[(claim, done.clone())])
        .await
        .unwrap();
    assert_eq!(held, vec![claim.execution_id]);
    let execution = load(&app, claim.execution_id).await;
    assert_eq!(execution.status, Status::Succeeded);
    assert_eq!(execution.result, Some(done));
    assert!(!execution.cancel_requested);
    assert_eq!(claim_token(&app, claim.execution_id).await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_by_the_user_clears_an_old_cancellation_request() {
    let app = TestApp::spawn().await;
    let claim = running_with_cancel_requested(&app).await;
    lapse_and_rescue(&app, claim.execution_id).await;
    let mut conn = app.conn().await;
    let queued = repository::retry(&mut conn, claim.execution_id, 10)
        .await
        .unwrap()
        .unwrap();
    assert!(!queued.cancel_requested);
    // The new run fails and retries like any other: the old request is spent.
    let rerun = claim_as(&app, Uuid::now_v7()).await;
    let failed = Outcome::Failed {
        message: "boom".to_owned(),
        retry_at: Some(chrono::Utc::now()),
    };
    let recorded = repository::finish(&mut conn, &rerun, &failed)
        .await
        .unwrap();
    assert_eq!(recorded, Some(Status::Queued));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_old_claims_writes_are_refused_after_rescue_fail_retry_and_reclaim_by_the_same_worker() {
    let app = TestApp::spawn().await;
    let owner = app
        .create_user("owner@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let job = submit(
        &app,
        &test_kinds(),
        &owner,
        "sleep",
        json!({"duration_ms": 60_000}),
        json!({"max_attempts": 1}),
    )
    .await;
    let worker = Uuid::now_v7();
    let old = claim_as(&app, worker).await;
    // The worker stalls past its lease: the rescuer fails the execution (its
    // only attempt is spent), its owner retries it, and the same worker claims
    // it again — the same worker id and the same attempt number as before.
    lapse_and_rescue(&app, job.id).await;
    assert_eq!(load(&app, job.id).await.status, Status::Failed);
    let mut conn = app.conn().await;
    repository::retry(&mut conn, job.id, 10)
        .await
        .unwrap()
        .unwrap();
    let new = claim_as(&app, worker).await;
    assert_eq!(
        (new.execution_id, new.attempt),
        (old.execution_id, old.attempt)
    );
    assert_ne!(new.token, old.token);

    // Every write of the old claim is refused …
    let lease = Duration::from_secs(60);
    assert_eq!(
        repository::heartbeat(&mut conn, &old, lease).await.unwrap(),
        None
    );
    assert!(
        !repository::report_progress(&mut conn, &old, 50, "late")
            .await
            .unwrap()
    );
    let late = Outcome::Succeeded(json!({"late": true}));
    assert_eq!(
        repository::finish(&mut conn, &old, &late).await.unwrap(),
        None
    );
    let batched = repository::finish_succeeded_batch(&mut conn, &[(old, json!({"late": true}))])
        .await
        .unwrap();
    assert!(batched.is_empty());
    let chunk = |position| StoredEmbedding {
        execution_id: job.id,
        position,
        tokens: 3,
        embedding: vec![0.6, 0.8],
    };
    let stale = JobContext::new(old, app.pool.clone(), StopSignal::default());
    let rows = vec![chunk(0), chunk(1)];
    let refused = stale
        .fenced_transaction(move |conn| async move { insert_chunk(conn, &rows).await }.boxed())
        .await;
    assert_eq!(refused, Err(JobError::LeaseLost));
    assert_eq!(stored_embeddings(&app, job.id).await, 0);
    let running = load(&app, job.id).await;
    assert_eq!(running.status, Status::Running);
    assert_eq!((running.progress, running.result), (0, None));

    // … while the new claim's go through.
    assert_eq!(
        repository::heartbeat(&mut conn, &new, lease).await.unwrap(),
        Some(false)
    );
    let current = JobContext::new(new, app.pool.clone(), StopSignal::default());
    let rows = vec![chunk(0)];
    let stored = current
        .fenced_transaction(move |conn| async move { insert_chunk(conn, &rows).await }.boxed())
        .await;
    assert_eq!(stored, Ok(1));
    assert_eq!(stored_embeddings(&app, job.id).await, 1);
    let done = Outcome::Succeeded(json!({"slept_ms": 60_000, "attempt": 1}));
    assert_eq!(
        repository::finish(&mut conn, &new, &done).await.unwrap(),
        Some(Status::Succeeded)
    );
}

/// How many vectors are stored for the execution.
async fn stored_embeddings(app: &TestApp, id: Uuid) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Stored {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        count: i64,
    }
    let mut conn = app.conn().await;
    let stored: Stored = diesel::sql_query(
        "SELECT count(*) AS count FROM inference_embeddings WHERE execution_id = $1",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .get_result(&mut conn)
    .await
    .unwrap();
    stored.count
}

#[tokio::test(flavor = "multi_thread")]
async fn the_errors_history_keeps_the_last_ten_attempts() {
    let app = TestApp::spawn().await;
    let owner = app
        .create_user("owner@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let job = submit(
        &app,
        &test_kinds(),
        &owner,
        "sleep",
        json!({"duration_ms": 60_000}),
        json!({"max_attempts": 25}),
    )
    .await;
    let mut conn = app.conn().await;
    // Attempts 1 to 24 fail and retry at once; the 25th worker dies.
    for attempt in 1..25 {
        let claim = claim_as(&app, Uuid::now_v7()).await;
        assert_eq!(claim.attempt, attempt);
        let failed = Outcome::Failed {
            message: format!("failure {attempt}"),
            retry_at: Some(chrono::Utc::now()),
        };
        let recorded = repository::finish(&mut conn, &claim, &failed)
            .await
            .unwrap();
        assert_eq!(recorded, Some(Status::Queued));
    }
    claim_as(&app, Uuid::now_v7()).await;
    lapse_and_rescue(&app, job.id).await;

    let failed = load(&app, job.id).await;
    assert_eq!((failed.status, failed.attempt), (Status::Failed, 25));
    let errors = failed.errors.as_array().unwrap();
    let attempts: Vec<i64> = errors
        .iter()
        .map(|error| error["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(
        attempts,
        (16..=25).collect::<Vec<_>>(),
        "the last ten, oldest first"
    );
    assert_eq!(errors[0]["message"], "failure 16");
    assert!(errors[9]["message"].as_str().unwrap().contains("lease"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_claim_was_taken_is_dropped_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let owner = app
        .create_user("owner@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let registry = test_kinds().register(Stubborn);
    // A job ignoring its stop signal would hold its slot for the whole grace
    // period (an hour here) if it were asked rather than dropped.
    let settings = worker_settings(&[
        ("WORKER_CONCURRENCY", "1"),
        ("EXECUTION_LEASE_MS", "1000"),
        ("EXECUTION_HEARTBEAT_MS", "100"),
        ("WORKER_SHUTDOWN_GRACE_MS", "3600000"),
    ]);
    let (shutdown, handle, _) = start_runner(&app, test_kinds().register(Stubborn), settings);
    let stubborn = submit(&app, &registry, &owner, "stubborn", json!({}), json!({})).await;
    wait_for(&app, stubborn.id, Status::Running, PATIENCE).await;
    let next = submit(
        &app,
        &registry,
        &owner,
        "sleep",
        json!({"duration_ms": 0}),
        json!({}),
    )
    .await;
    // Another worker takes the execution over (as after a rescue and a re-claim).
    let thief = Uuid::now_v7();
    let mut conn = app.conn().await;
    diesel::sql_query(
        "UPDATE executions SET worker_id = $2, claim_token = gen_random_uuid(),
             lease_expires_at = now() + interval '1 hour' WHERE id = $1",
    )
    .bind::<diesel::sql_types::Uuid, _>(stubborn.id)
    .bind::<diesel::sql_types::Uuid, _>(thief)
    .execute(&mut conn)
    .await
    .unwrap();
    let taken_over = load(&app, stubborn.id).await;

    // The next heartbeat finds the claim gone: the job is dropped, its slot
    // freed for the next execution, and nothing of it is written.
    wait_for(&app, next.id, Status::Succeeded, PATIENCE).await;
    let after = load(&app, stubborn.id).await;
    assert_eq!(after.status, Status::Running);
    assert_eq!(after.worker_id, Some(thief));
    assert_eq!(
        after.updated_at, taken_over.updated_at,
        "the row is untouched"
    );
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, handle)
        .await
        .expect("no job is left to drain")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_heartbeats_hang_is_dropped_when_its_lease_lapses() {
    let app = TestApp::spawn().await;
    let owner = app
        .create_user("owner@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let registry = test_kinds().register(Stubborn);
    let settings = worker_settings(&[
        ("WORKER_CONCURRENCY", "1"),
        ("EXECUTION_LEASE_MS", "1000"),
        ("EXECUTION_HEARTBEAT_MS", "100"),
        ("WORKER_SHUTDOWN_GRACE_MS", "3600000"),
    ]);
    let (shutdown, handle, _) = start_runner(&app, test_kinds().register(Stubborn), settings);
    let stubborn = submit(
        &app,
        &registry,
        &owner,
        "stubborn",
        json!({}),
        json!({"max_attempts": 1}),
    )
    .await;
    wait_for(&app, stubborn.id, Status::Running, PATIENCE).await;
    let next = submit(
        &app,
        &registry,
        &owner,
        "sleep",
        json!({"duration_ms": 0}),
        json!({}),
    )
    .await;
    // Holding the row's lock makes every heartbeat hang, as on a database that
    // stopped answering: the worker cannot know whether its lease still holds.
    let mut conn = app.conn().await;
    let app_ref = &app;
    conn.transaction(async |conn| {
        diesel::sql_query("SELECT id FROM executions WHERE id = $1 FOR UPDATE")
            .bind::<diesel::sql_types::Uuid, _>(stubborn.id)
            .execute(conn)
            .await?;
        // Once the lease lapses by the worker's own count, the job is dropped
        // and its slot runs the next execution.
        wait_for(app_ref, next.id, Status::Succeeded, PATIENCE).await;
        shutdown.cancel();
        tokio::time::timeout(PATIENCE, handle)
            .await
            .expect("no job is left to drain")
            .unwrap();
        Ok::<_, diesel::result::Error>(())
    })
    .await
    .unwrap();
}
