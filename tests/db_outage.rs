//! When PostgreSQL goes away, requests that need it answer 503 promptly and
//! `/ready` turns 503; when it comes back, the service recovers by itself.
//!
//! This test stops and restarts a cluster, so it runs one of its own rather
//! than the shared test cluster.

// Test code: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::routing::get;
use common::{FAST_SETTINGS, TestRequest, repo_root, test_settings};
use diesel_async::{AsyncConnection, RunQueryDsl};
use tessera::app::Application;
use tessera::core::db::{DbPool, Migrator};
use tessera::core::http::{RouteNeeds, apply_middleware};
use tessera::core::local_postgres::LocalPostgres;
use tessera::shared::error::AppError;

/// A handler that needs the database, as domain handlers do.
async fn needs_database(State(pool): State<DbPool>) -> Result<&'static str, AppError> {
    let mut conn = pool.get().await?;
    diesel::sql_query("SELECT 1").execute(&mut conn).await?;
    Ok("ok")
}

/// A write whose transaction is open for a while, so a crash lands mid-query
/// or mid-commit.
async fn slow_write(State(pool): State<DbPool>) -> Result<&'static str, AppError> {
    let mut conn = pool.get().await?;
    conn.transaction::<_, AppError, _>(async |conn| {
        diesel::sql_query("CREATE TEMPORARY TABLE IF NOT EXISTS probe (at timestamptz)")
            .execute(conn)
            .await?;
        diesel::sql_query("INSERT INTO probe SELECT now() FROM pg_sleep(0.2)")
            .execute(conn)
            .await?;
        Ok(())
    })
    .await?;
    Ok("ok")
}

/// Stops the cluster and removes its directory even if the test fails.
struct OwnCluster(LocalPostgres);

impl Drop for OwnCluster {
    fn drop(&mut self) {
        if self.0.is_running() {
            let _ = self.0.stop();
        }
        let _ = std::fs::remove_dir_all(self.0.data_dir());
        let _ = std::fs::remove_file(self.0.data_dir().with_extension("lock"));
    }
}

/// Crashes the cluster as `pg_ctl stop -m immediate` does (SIGQUIT to the
/// postmaster): every backend dies at once, with queries in flight.
fn crash(cluster: &LocalPostgres) {
    let pid_file = std::fs::read_to_string(cluster.data_dir().join("postmaster.pid"))
        .expect("the cluster is running");
    let pid = pid_file
        .lines()
        .next()
        .expect("the pid file names the postmaster");
    let status = std::process::Command::new("kill")
        .args(["-QUIT", pid.trim()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "the postmaster was signalled");
    let stopped = Instant::now();
    while cluster.is_running() {
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "PostgreSQL did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An application on its own cluster (stopped and removed on drop), with the
/// given test routes added.
struct OutageRig {
    cluster: OwnCluster,
    router: Router,
}

impl OutageRig {
    async fn start(name: &str) -> Self {
        let dir = repo_root().join(format!(".data/test-postgres-{name}-{}", std::process::id()));
        let cluster = OwnCluster(LocalPostgres::discover(&dir).unwrap());
        cluster.0.start(FAST_SETTINGS).unwrap();
        let url = cluster.0.database_url("postgres");
        Migrator::connect(&url)
            .await
            .unwrap()
            .run_pending()
            .expect("the migrations apply");
        let settings = test_settings(&url, &[("DATABASE_ACQUIRE_TIMEOUT_MS", "1000")]);
        let config = settings.platform.clone();
        let application = Application::build(settings, &url).unwrap();
        let pool = application.state().platform.pool.clone();
        let probes = Router::new()
            .route("/probe/db", get(needs_database))
            .route("/probe/slow", get(slow_write))
            .with_state(pool);
        let router = application.router().merge(apply_middleware(
            probes,
            &config.http,
            config.env,
            RouteNeeds::default(),
        ));
        wait_for(&router, "/ready", StatusCode::OK, Duration::from_secs(5)).await;
        Self { cluster, router }
    }
}

/// `GET path` on `router`.
fn get_from<'a>(router: &'a Router, path: &str) -> TestRequest<'a> {
    TestRequest::new(router, Method::GET, path)
}

async fn wait_for(router: &Router, path: &str, status: StatusCode, patience: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let response = get_from(router, path).send().await;
        if response.status == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < patience,
            "{path} still {} after {patience:?}",
            response.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_degrades_to_503_and_recovers_without_a_restart() {
    let OutageRig { cluster, router } = OutageRig::start("outage").await;
    assert_eq!(
        get_from(&router, "/probe/db").send().await.status,
        StatusCode::OK
    );

    cluster.0.stop().unwrap();
    // Never a hang: each answer comes within the acquire timeout (plus slack).
    for path in ["/probe/db", "/ready"] {
        let response =
            tokio::time::timeout(Duration::from_secs(10), get_from(&router, path).send())
                .await
                .unwrap_or_else(|_| panic!("{path} hung while the database was down"));
        let expected_code = if path == "/ready" {
            "not_ready"
        } else {
            "database_unavailable"
        };
        response.assert_problem(StatusCode::SERVICE_UNAVAILABLE, expected_code);
        assert!(response.header("retry-after").is_some());
        assert!(
            !response.text().contains(".data"),
            "no file paths reach the client"
        );
    }
    // Liveness does not depend on the database.
    let health = get_from(&router, "/health").send().await;
    assert_eq!(health.status, StatusCode::OK);

    cluster.0.start(FAST_SETTINGS).unwrap();
    wait_for(&router, "/ready", StatusCode::OK, Duration::from_secs(15)).await;
    wait_for(&router, "/probe/db", StatusCode::OK, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_mid_query_answers_503_never_500() {
    let OutageRig { cluster, router } = OutageRig::start("crash").await;
    let router = std::sync::Arc::new(router);
    let crash_at = Instant::now() + Duration::from_millis(700);
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let router = router.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while Instant::now() < crash_at + Duration::from_secs(2) {
                    let response = get_from(&router, "/probe/slow").send().await;
                    if response.status != StatusCode::OK {
                        response.assert_problem(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "database_unavailable",
                        );
                        assert!(
                            response.header("retry-after").is_some(),
                            "{}",
                            response.text()
                        );
                    }
                    statuses.push(response.status);
                }
                statuses
            })
        })
        .collect();
    tokio::time::sleep_until(crash_at.into()).await;
    crash(&cluster.0);
    let mut answered = Vec::new();
    for client in clients {
        answered.extend(client.await.expect("no client panicked"));
    }
    assert!(
        answered.contains(&StatusCode::OK),
        "queries ran before the crash"
    );
    assert!(
        answered.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "the crash was seen"
    );

    cluster.0.start(FAST_SETTINGS).unwrap();
    wait_for(
        &router,
        "/probe/slow",
        StatusCode::OK,
        Duration::from_secs(15),
    )
    .await;
}
