//! Helpers for execution tests: submitting, waiting, and test-only kinds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tessera::executions::config::WorkerConfig;
use tessera::executions::context::{JobContext, JobError};
use tessera::executions::kinds::{ExecutionKind, KindRegistry, Sleep};
use tessera::executions::models::{Execution, Status};
use tessera::executions::queue::Runner;
use tessera::executions::repository;
use tessera::executions::schemas::CreateExecutionRequest;
use tessera::executions::service;
use tessera::shared::error::FieldError;
use tessera::users::models::User;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::{TestApp, test_settings};

/// Records each run in `side_effects`, so tests can count how often work ran.
pub struct Count;

/// Input of [`Count`].
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CountInput {
    /// A label, to tell runs apart.
    pub label: String,
}

impl ExecutionKind for Count {
    const NAME: &'static str = "count";
    type Input = CountInput;
    type Output = Value;

    fn validate(&self, _input: &CountInput) -> Vec<FieldError> {
        Vec::new()
    }

    fn describe(&self, input: &CountInput) -> String {
        input.label.clone()
    }

    async fn run(&self, input: CountInput, context: JobContext) -> Result<Value, JobError> {
        let pool = context.pool();
        let mut conn = pool
            .get()
            .await
            .map_err(|e| JobError::Failed(e.to_string()))?;
        diesel::sql_query("INSERT INTO side_effects (execution_id, label) VALUES ($1, $2)")
            .bind::<diesel::sql_types::Uuid, _>(context.execution_id())
            .bind::<diesel::sql_types::Text, _>(&input.label)
            .execute(&mut conn)
            .await
            .map_err(|e| JobError::Failed(e.to_string()))?;
        Ok(json!({"label": input.label}))
    }
}

/// Panics, to show that a panic fails one attempt and nothing else.
pub struct Panic;

impl ExecutionKind for Panic {
    const NAME: &'static str = "panic";
    type Input = Value;
    type Output = Value;

    fn validate(&self, _input: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    fn describe(&self, _input: &Value) -> String {
        "panic".to_owned()
    }

    async fn run(&self, _input: Value, _context: JobContext) -> Result<Value, JobError> {
        panic!("a job panicked on purpose")
    }
}

/// The kinds the worker tests run.
pub fn test_kinds() -> KindRegistry {
    KindRegistry::new()
        .register(Sleep)
        .register(Count)
        .register(Panic)
}

/// Creates the table [`Count`] writes to.
pub async fn create_side_effects_table(app: &TestApp) {
    let mut conn = app.conn().await;
    diesel::sql_query(
        "CREATE TABLE side_effects (execution_id uuid NOT NULL, label text NOT NULL)",
    )
    .execute(&mut conn)
    .await
    .expect("the side_effects table is created");
}

/// How many rows [`Count`] wrote, and how many distinct executions wrote them.
pub async fn side_effects(app: &TestApp) -> (i64, i64) {
    #[derive(diesel::QueryableByName)]
    struct Counts {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        total: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        distinct_executions: i64,
    }
    let mut conn = app.conn().await;
    let counts: Counts = diesel::sql_query(
        "SELECT count(*) AS total, count(DISTINCT execution_id) AS distinct_executions FROM side_effects",
    )
    .get_result(&mut conn)
    .await
    .expect("side_effects can be counted (create_side_effects_table first)");
    (counts.total, counts.distinct_executions)
}

/// Submits `kind` with `input` for `owner` through the service, as the API does.
pub async fn submit(
    app: &TestApp,
    registry: &KindRegistry,
    owner: &User,
    kind: &str,
    input: Value,
    extra: Value,
) -> Execution {
    let mut request = json!({"kind": kind, "input": input});
    if let (Some(request), Some(extra)) = (request.as_object_mut(), extra.as_object()) {
        request.extend(extra.clone());
    }
    let request: CreateExecutionRequest = serde_json::from_value(request.clone())
        .unwrap_or_else(|error| panic!("{request} is not a submission: {error}"));
    let submission = service::validate(registry, owner.id, &request, None)
        .unwrap_or_else(|errors| panic!("the test's {kind} submission is invalid: {errors:?}"));
    let mut conn = app.conn().await;
    service::enqueue(&mut conn, submission)
        .await
        .unwrap_or_else(|error| panic!("the {kind} submission cannot be enqueued: {error}"))
        .0
}

/// The execution now.
pub async fn load(app: &TestApp, id: uuid::Uuid) -> Execution {
    let mut conn = app.conn().await;
    repository::find(&mut conn, id)
        .await
        .unwrap_or_else(|error| panic!("execution {id} cannot be read: {error}"))
        .unwrap_or_else(|| panic!("execution {id} exists"))
}

/// Waits until the execution reaches `status` (panics after `patience`, so a
/// broken worker fails the test instead of hanging it).
pub async fn wait_for(
    app: &TestApp,
    id: uuid::Uuid,
    status: Status,
    patience: Duration,
) -> Execution {
    let started = Instant::now();
    loop {
        let execution = load(app, id).await;
        if execution.status == status {
            return execution;
        }
        assert!(
            started.elapsed() < patience,
            "execution still {:?} (wanted {status:?}) after {patience:?}: {execution:?}",
            execution.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Worker settings for tests, with `overrides` (environment variable names).
pub fn worker_settings(overrides: &[(&str, &str)]) -> WorkerConfig {
    test_settings("postgres://unused/unused", overrides).workers
}

/// Starts a runner on the app's database; cancel the token to stop it.
pub fn start_runner(
    app: &TestApp,
    registry: KindRegistry,
    settings: WorkerConfig,
) -> (CancellationToken, tokio::task::JoinHandle<()>, uuid::Uuid) {
    let runner = Runner::new(
        app.pool.clone(),
        Arc::new(registry),
        app.executions.hub.clone(),
        settings,
    );
    let worker_id = runner.worker_id();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(runner.run(shutdown.clone()));
    (shutdown, handle, worker_id)
}
