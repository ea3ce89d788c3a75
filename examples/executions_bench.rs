//! End-to-end execution throughput and enqueue-to-start latency, against the
//! database in `DATABASE_URL`, with workers in this process (`task bench` runs it).
//!
//! `DATABASE_URL=... cargo run --release --example executions_bench -- [COUNT] [CONCURRENCY]`

// A benchmark: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Double, Text, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tessera::app::Settings;
use tessera::core::db::{self, Migrator};
use tessera::executions::kinds::{KindRegistry, Sleep};
use tessera::executions::queue::{NotificationHub, Runner};
use tessera::executions::schemas::CreateExecutionRequest;
use tessera::executions::service;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

#[derive(diesel::QueryableByName)]
struct Percentiles {
    #[diesel(sql_type = Double)]
    p50: f64,
    #[diesel(sql_type = Double)]
    p99: f64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let count: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let concurrency = args.next().unwrap_or_else(|| "32".to_owned());
    let url = std::env::var("DATABASE_URL")?;
    let settings = Settings::from_lookup(|name| match name {
        "APP_ENV" => Some("test".to_owned()),
        "JWT_SECRET" => Some("a-benchmark-only-secret-of-more-than-32-bytes".to_owned()),
        "DATABASE_URL" => Some(url.clone()),
        "DATABASE_POOL_SIZE" => Some("16".to_owned()),
        "WORKER_CONCURRENCY" => Some(concurrency.clone()),
        "WORKER_CLAIM_BATCH" => Some("64".to_owned()),
        _ => None,
    })?;
    Migrator::connect(&url).await?.run_pending()?;
    let pool = db::build_pool(&url, &settings.platform.database)?;
    let mut conn = AsyncPgConnection::establish(&url).await?;
    let owner = Uuid::now_v7();
    diesel::sql_query(
        "INSERT INTO users (id, email, full_name) VALUES ($1, $2, 'Execution bench')",
    )
    .bind::<SqlUuid, _>(owner)
    .bind::<Text, _>(format!("bench-executions-{owner}@example.com"))
    .execute(&mut conn)
    .await?;

    let registry = Arc::new(KindRegistry::new().register(Sleep));
    let hub = NotificationHub::start(url.clone());
    let shutdown = CancellationToken::new();
    let runner = Runner::new(
        pool.clone(),
        registry.clone(),
        hub,
        settings.workers.clone(),
    );
    let workers = tokio::spawn(runner.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Latency on an idle queue: one execution at a time, each committed alone.
    let request: CreateExecutionRequest =
        serde_json::from_value(serde_json::json!({"kind": "sleep", "input": {"duration_ms": 0}}))?;
    let mut ids = Vec::new();
    for _ in 0..200 {
        let submission = service::validate(&registry, owner, &request, None)?;
        let (execution, _) = service::enqueue(&mut conn, submission).await?;
        ids.push(execution.id);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_until_done(&mut conn, owner, 200).await?;
    let latency: Percentiles = diesel::sql_query(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99
         FROM (SELECT extract(epoch FROM started_at - created_at) * 1000 AS ms
               FROM executions WHERE owner_id = $1) AS waits",
    )
    .bind::<SqlUuid, _>(owner)
    .get_result(&mut conn)
    .await?;

    // Throughput: `count` executions enqueued in bulk while the workers run.
    let started = Instant::now();
    let mut enqueued = 0;
    while enqueued < count {
        let batch = (count - enqueued).min(5_000);
        diesel::sql_query(
            "WITH inserted AS (
                 INSERT INTO executions (id, owner_id, kind, queue, name, input)
                 SELECT gen_random_uuid(), $1, 'sleep', 'default', 'bench', '{\"duration_ms\":0,\"steps\":10,\"fail_first_attempts\":0}'
                 FROM generate_series(1, $2)
                 RETURNING id
             ), logged AS (
                 INSERT INTO execution_events (execution_id, event, data)
                 SELECT id, 'status', '{\"status\":\"queued\",\"attempt\":0}' FROM inserted
             )
             SELECT pg_notify('tessera_executions_queued', 'default')",
        )
        .bind::<SqlUuid, _>(owner)
        .bind::<BigInt, _>(batch)
        .execute(&mut conn)
        .await?;
        enqueued += batch;
    }
    let enqueue_time = started.elapsed();
    wait_until_done(&mut conn, owner, 200 + count).await?;
    let total = started.elapsed();
    shutdown.cancel();
    workers.await?;

    println!(
        "| executions | {count} (sleep 0, enqueued in batches of 5000 while {concurrency} workers ran) |"
    );
    println!(
        "| end-to-end throughput | {:.0} executions/s ({:.2} s in all; enqueue alone {:.2} s) |",
        count as f64 / total.as_secs_f64(),
        total.as_secs_f64(),
        enqueue_time.as_secs_f64()
    );
    println!(
        "| enqueue → start on an idle queue (200 single enqueues) | p50 {:.1} ms, p99 {:.1} ms |",
        latency.p50, latency.p99
    );
    Ok(())
}

async fn wait_until_done(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    expected: i64,
) -> Result<(), Box<dyn std::error::Error>> {
    loop {
        let done: Count = diesel::sql_query(
            "SELECT count(*) AS count FROM executions WHERE owner_id = $1 AND status = 'succeeded'",
        )
        .bind::<SqlUuid, _>(owner)
        .get_result(conn)
        .await?;
        if done.count >= expected {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
