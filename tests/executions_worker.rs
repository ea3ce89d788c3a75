//! Workers: exactly-once under concurrency, retries with backoff, timeouts,
//! panics, cancellation (in-process and across processes), crash rescue with
//! fencing, and graceful shutdown.

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
use serde_json::json;
use tessera::executions::kinds::{ExecutionKind, KindRegistry, Sleep};
use tessera::executions::models::Status;
use tessera::executions::repository::{self, Claim, Outcome};
use tessera::executions::service;
use tessera::users::models::Role;

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
    assert!(
        panicked.errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("panicked: a job panicked on purpose")
    );
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
        worker_id: dead_worker,
        attempt: 1,
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
    assert!(!late, "the fence rejects the old claim");
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
