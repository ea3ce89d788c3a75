//! The test harness: one private PostgreSQL for the whole run, a migrated
//! template database, and a fresh database cloned from it for every test.
//!
//! With `TEST_DATABASE_URL` (or `DATABASE_URL`) set, that server is used;
//! otherwise a cluster under `.data/test-postgres` is started, or reused when
//! another test process already started it. Tests run in parallel and never see
//! each other's rows.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod executions;
pub mod tiny_model;

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use http_body_util::BodyExt;
use serde_json::Value;
use tessera::app::{Application, Settings};
use tessera::auth::accounts::{self, NewAccount};
use tessera::auth::service::AuthState;
use tessera::core::config::PlatformConfig;
use tessera::core::db::{DbPool, Migrator};
use tessera::core::docs;
use tessera::core::local_postgres::LocalPostgres;
use tessera::core::platform::Lifecycle;
use tessera::executions::service::ExecutionsState;
use tessera::users::models::{Email, FullName, Role, User};
use tower::ServiceExt;

/// Settings that make a throwaway cluster fast; durability does not matter here.
pub const FAST_SETTINGS: &[&str] = &[
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=400",
];

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The server every test database lives on, and the migrated template.
struct TestServer {
    admin_url: String,
    template: String,
}

static SERVER: OnceLock<TestServer> = OnceLock::new();

fn server() -> &'static TestServer {
    SERVER.get_or_init(|| {
        // Setup runs once per test process, on its own runtime, so that it does
        // not depend on whichever test's runtime happens to call it first.
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime for test setup");
            runtime.block_on(prepare_server())
        })
        .join()
        .expect("test database setup panicked")
    })
}

async fn prepare_server() -> TestServer {
    let admin_url =
        match std::env::var("TEST_DATABASE_URL").or_else(|_| std::env::var("DATABASE_URL")) {
            Ok(url) => url,
            Err(_) => {
                let cluster = LocalPostgres::discover(&repo_root().join(".data/test-postgres"))
                    .unwrap_or_else(|error| panic!("cannot set up the test database: {error}"));
                cluster
                    .start(FAST_SETTINGS)
                    .unwrap_or_else(|error| panic!("cannot start the test database: {error}"));
                cluster.database_url("postgres")
            }
        };
    let template = format!("tessera_template_{:016x}", migrations_fingerprint());
    ensure_template(&admin_url, &template).await;
    TestServer {
        admin_url,
        template,
    }
}

/// A hash of every migration file, so a changed migration gets a new template.
fn migrations_fingerprint() -> u64 {
    let mut files = Vec::new();
    collect_files(&repo_root().join("migrations"), &mut files);
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in files {
        let mut bytes = file.to_string_lossy().into_owned().into_bytes();
        bytes.extend(std::fs::read(&file).unwrap_or_default());
        for byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Creates and migrates the template once, whatever the number of test
/// processes: a file lock serialises them, and the template is built under a
/// temporary name and renamed, so a crashed build never passes for a good one.
async fn ensure_template(admin_url: &str, template: &str) {
    let lock_path = std::env::temp_dir().join("tessera-test-template.lock");
    let lock = File::create(&lock_path).expect("create the template lock file");
    lock.lock().expect("lock the template lock file");
    let mut admin = connect(admin_url).await;
    if database_exists(&mut admin, template).await {
        return;
    }
    let building = format!("{template}_building");
    execute(
        &mut admin,
        &format!("DROP DATABASE IF EXISTS \"{building}\" WITH (FORCE)"),
    )
    .await;
    execute(&mut admin, &format!("CREATE DATABASE \"{building}\"")).await;
    let mut migrator = Migrator::connect(&database_url(admin_url, &building))
        .await
        .expect("connect to the template");
    migrator.run_pending().expect("migrate the template");
    drop(migrator);
    execute(
        &mut admin,
        &format!("ALTER DATABASE \"{building}\" RENAME TO \"{template}\""),
    )
    .await;
    drop_stale_templates(&mut admin, template).await;
}

/// Drops templates built from older migrations, so they do not pile up in a
/// reused cluster. One still in use by an older run is left for next time.
async fn drop_stale_templates(admin: &mut AsyncPgConnection, current: &str) {
    #[derive(diesel::QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        datname: String,
    }
    let stale: Vec<Name> = diesel::sql_query(
        "SELECT datname FROM pg_database WHERE starts_with(datname, 'tessera_template_') AND datname <> $1",
    )
    .bind::<diesel::sql_types::Text, _>(current)
    .load(admin)
    .await
    .unwrap_or_default();
    for name in stale {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\"", name.datname);
        // In use by an older run: leave it for next time.
        let _ = diesel::sql_query(sql).execute(admin).await;
    }
}

async fn connect(url: &str) -> AsyncPgConnection {
    AsyncPgConnection::establish(url)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to the test database server: {error}"))
}

async fn execute(conn: &mut AsyncPgConnection, sql: &str) {
    diesel::sql_query(sql)
        .execute(conn)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
}

async fn database_exists(conn: &mut AsyncPgConnection, name: &str) -> bool {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        count: i64,
    }
    let row: Count =
        diesel::sql_query("SELECT count(*) AS count FROM pg_database WHERE datname = $1")
            .bind::<diesel::sql_types::Text, _>(name)
            .get_result(conn)
            .await
            .expect("query pg_database");
    row.count > 0
}

/// `admin_url` with its database replaced by `database`.
pub fn database_url(admin_url: &str, database: &str) -> String {
    let (before_query, query) = admin_url
        .split_once('?')
        .map_or((admin_url, None), |(a, q)| (a, Some(q)));
    let (authority, _) = before_query
        .rsplit_once('/')
        .expect("a database URL has a /database part");
    match query {
        Some(query) => format!("{authority}/{database}?{query}"),
        None => format!("{authority}/{database}"),
    }
}

/// A database of a test's own, dropped when the test ends.
pub struct TestDatabase {
    /// Its name.
    pub name: String,
    /// A URL to it.
    pub url: String,
    admin_url: String,
}

impl TestDatabase {
    /// A fresh database cloned from the migrated template.
    pub async fn migrated() -> Self {
        let server = server();
        Self::create(&server.admin_url, Some(&server.template)).await
    }

    /// A fresh database with no migrations applied.
    pub async fn empty() -> Self {
        Self::create(&server().admin_url, None).await
    }

    async fn create(admin_url: &str, template: Option<&str>) -> Self {
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let sql = match template {
            Some(template) => format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""),
            None => format!("CREATE DATABASE \"{name}\""),
        };
        let mut admin = connect(admin_url).await;
        // Cloning fails while another session touches the template; that is brief.
        for attempt in 0.. {
            match diesel::sql_query(&sql).execute(&mut admin).await {
                Ok(_) => break,
                Err(error) if attempt < 50 && error.to_string().contains("being accessed") => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(error) => panic!("{sql}: {error}"),
            }
        }
        Self {
            url: database_url(admin_url, &name),
            name,
            admin_url: admin_url.to_owned(),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // Drop cannot be async; a short-lived runtime on its own thread does the work.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test database");
            runtime.block_on(async {
                let mut admin = connect(&admin_url).await;
                execute(&mut admin, &sql).await;
            });
        })
        .join();
        if dropped.is_err() {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

/// Settings for a test app: the defaults of `APP_ENV=test`, with `overrides`.
pub fn test_settings(database_url: &str, overrides: &[(&str, &str)]) -> Settings {
    let mut vars: HashMap<String, String> = HashMap::from([
        ("APP_ENV".to_owned(), "test".to_owned()),
        ("DATABASE_URL".to_owned(), database_url.to_owned()),
        ("DATABASE_POOL_SIZE".to_owned(), "4".to_owned()),
        (
            "REDOC_BUNDLE_PATH".to_owned(),
            redoc_bundle_path().to_string_lossy().into_owned(),
        ),
        // No model: apps in tests report inference unavailable at once instead of
        // each loading the real model. Tests that need one override this.
        (
            "INFERENCE_MODEL_DIR".to_owned(),
            repo_root()
                .join(".data/no-model-in-tests")
                .to_string_lossy()
                .into_owned(),
        ),
    ]);
    for (name, value) in overrides {
        vars.insert((*name).to_owned(), (*value).to_owned());
    }
    Settings::from_lookup(|name| vars.get(name).cloned())
        .unwrap_or_else(|error| panic!("the test settings {overrides:?} are invalid: {error}"))
}

/// Set (as CI does) to make a missing GPU adapter or model a failure instead of a skip.
pub const REQUIRE_GPU_AND_MODEL: &str = "TESSERA_REQUIRE_GPU_AND_MODEL";

/// Reports a test as skipped, loudly, or fails it where the environment promises
/// the GPU driver and the model are installed. The line goes straight to stderr:
/// the test harness captures `eprintln!` of passing tests, and a skip must be seen.
pub fn skip(test: &str, reason: &str) {
    assert!(
        std::env::var_os(REQUIRE_GPU_AND_MODEL).is_none(),
        "{test}: {reason}, but {REQUIRE_GPU_AND_MODEL} is set"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason}");
}

/// The real embedding model's directory (`task model-fetch` installs it).
pub fn real_model_dir() -> PathBuf {
    std::env::var_os("INFERENCE_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("models/all-MiniLM-L6-v2"))
}

/// Polls `/ready` until the embedding engine has finished loading; returns its report.
pub async fn settled_inference_report(app: &TestApp) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = app.get("/ready").await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        let report = response.json()["components"]["inference"].clone();
        if report["state"] != "loading" || Instant::now() > deadline {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where the tests keep ReDoc's script.
pub fn redoc_bundle_path() -> PathBuf {
    repo_root().join(".data/redoc/redoc.standalone.js")
}

/// Installs ReDoc's script for the tests that serve `/redoc` (once per machine).
pub fn ensure_redoc_bundle() {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        docs::install_redoc_bundle(&redoc_bundle_path())
            .map(drop)
            .map_err(|error| error.to_string())
    });
    if let Err(error) = installed {
        panic!("{error}");
    }
}

/// The application under test, on its own database.
pub struct TestApp {
    /// The router, with every middleware, exactly as `serve` builds it.
    pub router: Router,
    /// The pool the app uses.
    pub pool: DbPool,
    /// The app's lifecycle (to simulate shutdown).
    pub lifecycle: Arc<Lifecycle>,
    /// The app's platform configuration.
    pub config: Arc<PlatformConfig>,
    /// The app's token and password services.
    pub auth: AuthState,
    /// The app's execution kinds and notification hub.
    pub executions: ExecutionsState,
    /// The app's database; dropped after the app.
    pub database: TestDatabase,
}

impl TestApp {
    /// An app with the test defaults.
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    /// An app with some configuration overridden.
    pub async fn spawn_with(overrides: &[(&str, &str)]) -> Self {
        let database = TestDatabase::migrated().await;
        let settings = test_settings(&database.url, overrides);
        let application = Application::build(settings, &database.url)
            .unwrap_or_else(|error| panic!("the test application cannot be built: {error}"));
        let state = application.state();
        Self {
            router: application.router(),
            pool: state.platform.pool.clone(),
            lifecycle: state.platform.lifecycle.clone(),
            config: state.platform.config.clone(),
            auth: state.auth.clone(),
            executions: state.executions.clone(),
            database,
        }
    }

    /// Sends `request` through the whole application.
    pub async fn request(&self, request: Request<Body>) -> TestResponse {
        send(&self.router, request).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> TestResponse {
        self.request(Request::get(path).body(Body::empty()).expect("a request"))
            .await
    }

    /// `GET path` as the holder of `token`.
    pub async fn get_as(&self, path: &str, token: &str) -> TestResponse {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// A request with an optional bearer token and an optional JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        json: Option<Value>,
    ) -> TestResponse {
        self.call_with(method, path, token, json, &[]).await
    }

    /// Like [`TestApp::call`], with extra headers.
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        json: Option<Value>,
        headers: &[(&str, &str)],
    ) -> TestResponse {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = match json {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        self.request(request.body(body).expect("a request")).await
    }

    /// Creates an account directly through the users service.
    pub async fn create_user(&self, email: &str, password: &str, role: Role) -> User {
        let account = NewAccount {
            email: Email::parse(email).expect("a valid email"),
            full_name: FullName::parse("Test Person").expect("a valid name"),
            role,
        };
        accounts::insert_account(&self.pool, &self.auth, account, password)
            .await
            .expect("the account is created")
    }

    /// `POST /api/v1/auth/token` with a form, from `client` (sent as X-Forwarded-For).
    pub async fn login_from(&self, email: &str, password: &str, client: &str) -> TestResponse {
        let form = serde_urlencoded::to_string([("username", email), ("password", password)])
            .expect("a form");
        let request = Request::post("/api/v1/auth/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("x-forwarded-for", client)
            .body(Body::from(form))
            .expect("a request");
        self.request(request).await
    }

    /// Signs in and returns the token pair as JSON.
    pub async fn login(&self, email: &str, password: &str) -> Value {
        let response = self.login_from(email, password, "192.0.2.1").await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "login: {}",
            response.text()
        );
        response.json()
    }

    /// A new account with a role, signed in: its user and access token.
    pub async fn signed_in(&self, email: &str, role: Role) -> (User, String) {
        let user = self.create_user(email, DEFAULT_PASSWORD, role).await;
        let tokens = self.login(email, DEFAULT_PASSWORD).await;
        (
            user,
            tokens["access_token"]
                .as_str()
                .expect("an access token")
                .to_owned(),
        )
    }
}

/// The password [`TestApp::signed_in`] gives its accounts.
pub const DEFAULT_PASSWORD: &str = "correct horse battery staple";

/// Sends `request` through `router`.
pub async fn send(router: &Router, request: Request<Body>) -> TestResponse {
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("infallible router");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a readable body")
        .to_bytes();
    TestResponse {
        status,
        headers,
        body,
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct TestResponse {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
}

impl TestResponse {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "body is not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Asserts this is a problem-details response with `status` and `code`, in
    /// the full shape every error must have; returns the body.
    pub fn assert_problem(&self, status: StatusCode, code: &str) -> Value {
        assert_eq!(self.status, status, "status; body: {}", self.text());
        assert_eq!(
            self.header(header::CONTENT_TYPE.as_str()),
            Some("application/problem+json"),
            "content type"
        );
        let body = self.json();
        assert_eq!(body["status"], status.as_u16(), "body status");
        assert_eq!(body["code"], code, "body code: {body}");
        assert_eq!(body["type"], format!("urn:tessera:problem:{code}"));
        assert_eq!(body["title"], status.canonical_reason().unwrap_or_default());
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "detail: {body}"
        );
        let request_id = self.header("x-request-id").expect("an x-request-id header");
        assert_eq!(
            body["request_id"], request_id,
            "request id in body and header"
        );
        body
    }
}
