//! The `tessera` binary as people and orchestrators run it: it starts, prints
//! where its docs are, answers, exits 0 on SIGTERM, logs no secret (of its own
//! or of any credential a client sends), manages its
//! own PostgreSQL in development, and refuses a bad configuration in one line.

// Test code: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{TestDatabase, ensure_redoc_bundle, redoc_bundle_path, repo_root};
use tessera::core::local_postgres::LocalPostgres;

const SECRET: &str = "test-secret-that-must-never-appear-in-logs-0123";
const DB_PASSWORD: &str = "db-password-that-must-never-appear-in-logs";

/// A running `tessera serve`, killed if the test fails before it stops.
struct Server {
    child: Child,
    base_url: String,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tessera() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tessera"));
    command
        .current_dir(repo_root())
        .env_remove("DATABASE_URL")
        .env_remove("TEST_DATABASE_URL")
        .env("PORT", "0")
        .env("JWT_SECRET", SECRET)
        .env("REDOC_BUNDLE_PATH", redoc_bundle_path())
        .env("RUST_LOG", "debug")
        .env("SHUTDOWN_GRACE_MS", "5000");
    command
}

/// Starts `command` and waits for its "listening" line.
fn start(mut command: Command, patience: Duration) -> Server {
    let mut child = command
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tessera serve");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (line_tx, line_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = line_tx.send(line);
        }
    });
    let (err_tx, err_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        let _ = err_tx.send(text);
    });
    let deadline = Instant::now() + patience;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match line_rx.recv_timeout(remaining) {
            Ok(line) => {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let base_url = rest.split_whitespace().next().unwrap().to_owned();
                    assert!(
                        line.contains(&format!("{base_url}/docs")),
                        "the docs URL is printed: {line}"
                    );
                    return Server {
                        child,
                        base_url,
                        stderr: err_rx,
                    };
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let logs = err_rx
                    .recv_timeout(Duration::from_secs(5))
                    .unwrap_or_default();
                panic!("tessera serve did not start within {patience:?}; its log:\n{logs}");
            }
        }
    }
}

impl Server {
    async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::get(format!("{}{path}", self.base_url))
            .await
            .expect("a response")
    }

    /// Sends SIGTERM and returns the exit code and the whole log.
    fn terminate(mut self, patience: Duration) -> (i32, String) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + patience;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit within {patience:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let logs = self
            .stderr
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_default();
        (status.code().unwrap_or(-1), logs)
    }
}

/// What [`use_every_credential`] handled: every secret, and the API key's id.
struct Credentials {
    secrets: Vec<(&'static str, String)>,
    api_key_id: String,
}

/// Signs up, signs in with a password, creates and uses an API key, and signs
/// in and refreshes a browser session: every kind of secret crosses the
/// server, for the log to be searched for them.
async fn use_every_credential(server: &Server) -> Credentials {
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}/api/v1{path}", server.base_url);
    let email = "logs@example.com";
    let password = "a-password-that-must-never-appear-in-logs";
    let signed_up = client
        .post(url("/users"))
        .json(&serde_json::json!({"email": email, "password": password, "full_name": "Log Reader"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_up.status(), 201);
    let form = [("username", email), ("password", password)];
    let pair: serde_json::Value = client
        .post(url("/auth/token"))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = pair["access_token"].as_str().unwrap().to_owned();
    let refresh = pair["refresh_token"].as_str().unwrap().to_owned();
    let key: serde_json::Value = client
        .post(url("/auth/api-keys"))
        .bearer_auth(&access)
        .json(&serde_json::json!({"name": "logs", "scopes": ["executions:read"], "current_password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let api_key = key["secret"].as_str().unwrap().to_owned();
    let listed = client
        .get(url("/executions"))
        .bearer_auth(&api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let browser = client
        .post(url("/auth/session"))
        .header("x-tessera-csrf", "1")
        .form(&form)
        .send()
        .await
        .unwrap();
    let cookie = browser.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let refreshed = client
        .post(url("/auth/session/refresh"))
        .header("x-tessera-csrf", "1")
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), 200);
    let cookie_token = cookie.trim_start_matches("tessera_refresh=").to_owned();
    Credentials {
        secrets: vec![
            ("the password", password.to_owned()),
            ("an access token", access),
            ("a refresh token", refresh),
            ("an API key", api_key),
            ("a session cookie", cookie_token),
        ],
        api_key_id: key["id"].as_str().unwrap().to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_answers_exits_zero_on_sigterm_and_logs_no_secrets() {
    ensure_redoc_bundle();
    let database = TestDatabase::migrated().await;
    let url = database.url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{DB_PASSWORD}@"),
        1,
    );
    let mut command = tessera();
    command
        .env("APP_ENV", "development")
        .env("DATABASE_URL", &url)
        .env("LOG_FORMAT", "json");
    let server = start(command, Duration::from_secs(30));
    for path in [
        "/health",
        "/ready",
        "/openapi.json",
        "/docs/",
        "/redoc",
        "/metrics",
    ] {
        let response = server.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
    }
    let missing = server.get("/api/v1/missing").await;
    let request_id = missing.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let credentials = use_every_credential(&server).await;

    let (code, logs) = server.terminate(Duration::from_secs(10));
    assert_eq!(code, 0, "exit code; log:\n{logs}");
    assert!(
        logs.contains(&request_id),
        "the request id is in the request's log lines"
    );
    for line in logs.lines().filter(|line| !line.trim().is_empty()) {
        let parsed: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|_| panic!("production-style logs are JSON lines: {line}"));
        assert!(parsed.get("level").is_some(), "{line}");
    }
    assert!(!logs.contains(SECRET), "the JWT secret was logged");
    for (what, secret) in &credentials.secrets {
        assert!(!logs.contains(secret.as_str()), "{what} was logged");
    }
    assert!(
        logs.contains(&credentials.api_key_id),
        "a key's requests name the key (not its secret)"
    );
    assert!(
        !logs.contains(DB_PASSWORD),
        "the database password was logged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn development_serve_runs_its_own_postgres_and_stops_only_what_it_started() {
    ensure_redoc_bundle();
    let dir = repo_root().join(format!(".data/test-serve-{}", std::process::id()));
    let cluster = LocalPostgres::discover(&dir).unwrap();
    let cleanup = scopeguard(cluster.clone());
    let serve = || {
        let mut command = tessera();
        command
            .env("APP_ENV", "development")
            .env("LOCAL_POSTGRES_DIR", &dir);
        command
    };

    // Nothing running: serve starts the cluster, migrates, serves, and stops it.
    let server = start(serve(), Duration::from_secs(90));
    assert_eq!(server.get("/ready").await.status(), 200);
    let (code, logs) = server.terminate(Duration::from_secs(20));
    assert_eq!(code, 0, "{logs}");
    assert!(!cluster.is_running(), "serve stops the cluster it started");
    assert!(
        !logs.contains("lost its connection"),
        "the listener closes its connection before the cluster stops: {logs}"
    );

    // Already running: serve reuses it and leaves it running.
    cluster.start(&[]).unwrap();
    let server = start(serve(), Duration::from_secs(60));
    assert_eq!(server.get("/ready").await.status(), 200);
    let (code, logs) = server.terminate(Duration::from_secs(20));
    assert_eq!(code, 0, "{logs}");
    assert!(
        cluster.is_running(),
        "serve leaves a cluster it did not start"
    );
    drop(cleanup);
}

/// Stops the cluster and removes its files when the test ends, pass or fail.
fn scopeguard(cluster: LocalPostgres) -> impl Drop {
    struct Guard(LocalPostgres);
    impl Drop for Guard {
        fn drop(&mut self) {
            if self.0.is_running() {
                let _ = self.0.stop();
            }
            let _ = std::fs::remove_dir_all(self.0.data_dir());
            let _ = std::fs::remove_file(self.0.data_dir().with_extension("lock"));
        }
    }
    Guard(cluster)
}

#[test]
fn a_bad_configuration_stops_the_process_with_one_line() {
    let cases = [
        (vec![("PORT", "eighty")], "PORT"),
        (vec![("APP_ENV", "staging")], "APP_ENV"),
        (
            vec![
                ("APP_ENV", "production"),
                ("DATABASE_URL", "postgres://db/x"),
                ("JWT_SECRET", ""),
            ],
            "JWT_SECRET",
        ),
    ];
    for (vars, variable) in cases {
        let mut command = tessera();
        for (name, value) in &vars {
            command.env(name, value);
        }
        let output = command.arg("serve").output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{vars:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(variable), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_commands_report_and_round_trip() {
    let database = TestDatabase::empty().await;
    let run = |args: &[&str]| {
        let output = tessera()
            .env("APP_ENV", "test")
            .env("DATABASE_URL", &database.url)
            .env("JWT_SECRET", "a-test-secret-that-is-long-enough-0123456789")
            .arg("migrate")
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert!(run(&["status"]).contains("pending  00000000000000_platform_setup"));
    assert!(run(&["up"]).contains("applied"));
    assert!(run(&["status"]).contains("applied  00000000000000_platform_setup"));
    assert!(run(&["redo"]).contains("reverted"));
    assert!(run(&["down"]).contains("reverted"));
    assert!(run(&["status"]).contains("pending"));
}

#[test]
fn the_openapi_command_prints_the_served_document() {
    let output = tessera().arg("openapi").output().unwrap();
    assert!(output.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        printed,
        serde_json::to_value(tessera::app::openapi()).unwrap()
    );
}
