//! The OpenAPI document as the contract frontend teams generate clients from,
//! checked the way they would find out it is wrong, against a live server on
//! a real socket with the real model:
//!
//! - a TypeScript client typed by `openapi-typescript` (no casts, no `any`)
//!   must compile under `tsc --strict` and pass every step it takes;
//! - Schemathesis with every check must find nothing, operation by operation,
//!   and warn of no schema-valid data being refused. Operations that end the
//!   fuzzer's own session run in a pass of their own, as a user of their own.
//!
//! - the official OpenAI Python SDK embeds with an API key, and raises its
//!   own permission error for a key without the `inference` scope;
//! - the rules the document states hold at their edges (through the router).
//!
//! The tools are installed on first use (`npm ci` in `examples/typescript`, a
//! pinned Schemathesis in a virtualenv under `~/.cache/tessera/tools`).

// Test code: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use axum::http::StatusCode;
use common::tools::{
    ensure_openai_sdk, ensure_schemathesis, ensure_typescript_packages, run_tool,
    typescript_example_dir,
};
use common::{DEFAULT_PASSWORD, TestApp, TestDatabase, real_model_dir, skip, test_settings};
use serde_json::json;
use tessera::app::Application;
use tessera::auth::accounts;
use tessera::users::models::{Email, FullName, Role};
use tessera::users::service::NewProfile;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Test cases Schemathesis generates per operation and phase: enough to reach
/// every documented bound on these operations, few enough that the four
/// passes take about three minutes on two cores.
const MAX_EXAMPLES: &str = "50";

/// A fixed seed: a finding reproduces on every run until it is fixed
/// (Schemathesis prints it with each failure).
const SEED: &str = "20261201";

/// Settings of the fuzzed server. Schemathesis signs in with wrong passwords
/// by design, so the failed-password limits would soon answer it only 429s
/// (the limiter has tests of its own), and it submits work and creates keys as
/// fast as it can, so the quotas and the cap on keys go too. Streams end after
/// two seconds (a fuzzed execution may be a day-long `sleep`), and one worker
/// keeps the run's CPU bounded. Mail requests are limited per address, client
/// and account like passwords.
const FUZZ_SETTINGS: &[(&str, &str)] = &[
    ("PASSWORD_RESET_MAX_PER_ADDRESS", "1000000"),
    ("PASSWORD_RESET_MAX_PER_CLIENT", "1000000"),
    ("SIGNUPS_PER_CLIENT", "1000000"),
    ("EMAIL_VERIFICATION_MAX_PER_ACCOUNT", "1000000"),
    ("MAX_FAILED_LOGINS", "1000000"),
    ("MAX_FAILED_LOGINS_PER_CLIENT", "1000000"),
    ("MAX_FAILED_LOGINS_PER_ACCOUNT", "1000000"),
    ("MAX_UNFINISHED_EXECUTIONS_PER_USER", "1000000"),
    ("API_KEYS_PER_USER", "1000000"),
    ("MAX_EMBED_TEXTS_PER_DAY", "1000000000"),
    ("INFERENCE_TOKENS_PER_MINUTE", "0"),
    ("EVENT_STREAM_MAX_SECONDS", "2"),
    ("WORKER_CONCURRENCY", "1"),
];

/// An account the test created, with its password.
struct Account {
    id: Uuid,
    email: String,
    password: String,
}

/// The application serving on a free port until dropped.
struct LiveServer {
    base_url: String,
    shutdown: CancellationToken,
    _database: TestDatabase,
}

impl Drop for LiveServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Serves the real model with `overrides`, after creating `accounts`
/// (email, role); `None` when the model is missing (a skip, or a failure where
/// CI promises the model).
async fn serve_real_model(
    test: &str,
    overrides: &[(&str, &str)],
    accounts: &[(&str, Role)],
) -> Option<(LiveServer, Vec<Account>)> {
    let model_dir = real_model_dir();
    if !model_dir.join("model.safetensors").is_file() {
        skip(test, "no model (run `task model-fetch`)");
        return None;
    }
    let model_dir = model_dir.to_string_lossy().into_owned();
    let mut settings = vec![
        ("INFERENCE_MODEL_DIR", model_dir.as_str()),
        ("INFERENCE_DEVICE", "cpu"),
    ];
    settings.extend_from_slice(overrides);
    let database = TestDatabase::migrated().await;
    let application = Application::build(test_settings(&database.url, &settings), &database.url)
        .expect("the application builds");
    let mut created = Vec::new();
    for (email, role) in accounts {
        created.push(create_account(&application, email, *role).await);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(application.serve(listener, shutdown.clone()));
    wait_until_inference_is_ready(&base_url).await;
    let server = LiveServer {
        base_url,
        shutdown,
        _database: database,
    };
    Some((server, created))
}

/// Creates an account with a password of its own, as the seeders do.
async fn create_account(application: &Application, email: &str, role: Role) -> Account {
    let state = application.state();
    let password = format!("contract-{}", Uuid::new_v4());
    let profile = NewProfile {
        email: Email::parse(email).unwrap(),
        full_name: FullName::parse("Contract Test").unwrap(),
        role,
    };
    let user = accounts::insert_account(&state.platform.pool, &state.auth, profile, &password)
        .await
        .unwrap();
    Account {
        id: user.id,
        email: email.to_owned(),
        password,
    }
}

/// Waits for `/ready` to report the model loaded, so no client sees a 503.
async fn wait_until_inference_is_ready(base_url: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let report: serde_json::Value = reqwest::get(format!("{base_url}/ready"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let state = &report["components"]["inference"]["state"];
        if state == "ready" {
            return;
        }
        assert!(
            state == "loading" && std::time::Instant::now() < deadline,
            "the real model did not load: {report}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Runs a client process on a blocking thread, so that the server it calls
/// keeps running on this runtime; its panic, message intact, is the test's.
async fn off_the_runtime<T: Send + 'static>(client: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(client).await {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// The casts (`as`) and `any`s in a TypeScript file's code (comments left
/// out), as `line: text`: each would let the client compile against a wrong
/// contract.
fn escape_hatches(source: &str) -> Vec<String> {
    source
        .lines()
        .enumerate()
        .filter_map(|(index, line)| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("/*") || trimmed.starts_with('*') {
                return None;
            }
            let code = line.split("//").next().unwrap_or_default();
            code.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
                .any(|word| word == "as" || word == "any")
                .then(|| format!("{}: {}", index + 1, line.trim()))
        })
        .collect()
}

#[test]
fn the_typescript_client_uses_no_cast_and_no_any() {
    let source_dir = typescript_example_dir().join("src");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&source_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "ts") {
            let source = std::fs::read_to_string(&path).unwrap();
            found.extend(
                escape_hatches(&source)
                    .into_iter()
                    .map(|hit| format!("{}:{hit}", path.display())),
            );
        }
    }
    assert!(
        found.is_empty(),
        "casts or `any` in the client:\n{}",
        found.join("\n")
    );
    // The scan itself finds what it must, and nothing in comments.
    assert_eq!(
        escape_hatches("const a = b as string;\nlet c: any;\n// as any\n/** as */"),
        ["1: const a = b as string;", "2: let c: any;"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_typescript_client_compiles_against_the_document_and_passes_every_step() {
    ensure_typescript_packages();
    let Some((server, _)) = serve_real_model("the_typescript_client", &[], &[]).await else {
        return;
    };
    let dir = typescript_example_dir();
    let bin = |name: &str| dir.join("node_modules/.bin").join(name);
    let openapi_url = format!("{}/openapi.json", server.base_url);
    run_tool(
        "openapi-typescript (generating the types from the document)",
        Command::new(bin("openapi-typescript"))
            .args([openapi_url.as_str(), "--output", "generated/api.d.ts"])
            .current_dir(&dir),
    );
    run_tool(
        "tsc --strict (the example against the generated types)",
        Command::new(bin("tsc"))
            .args(["--project", "tsconfig.json"])
            .current_dir(&dir),
    );
    let tsx = bin("tsx");
    let output = off_the_runtime(move || {
        run_tool(
            "the TypeScript client against the live server",
            Command::new(tsx)
                .arg("src/main.ts")
                .env("TESSERA_URL", &server.base_url)
                .current_dir(&dir),
        )
    })
    .await;
    assert!(
        output.contains("the typed client passed every step"),
        "{output}"
    );
}

/// One Schemathesis pass: which operations, as whom.
struct FuzzPass {
    /// Names the pass's working directory and its messages.
    name: &'static str,
    /// The operations, as Schemathesis's filter options.
    operations: &'static [&'static str],
    /// The account Schemathesis signs in as (again, whenever it gets a 401).
    account: Account,
    /// An account no request may change or delete (the fuzzing admin itself).
    protected: Option<Uuid>,
    /// Values Schemathesis uses for these parameters (`path.execution_id`), so
    /// operations on existing data are not only answered 404.
    parameters: Vec<(&'static str, String)>,
}

/// Runs Schemathesis with every check against `server`; fails with its report
/// on any failure or on a warning that the server refused schema-valid data.
fn fuzz(server: &LiveServer, pass: &FuzzPass) {
    let schemathesis = ensure_schemathesis();
    let workdir = std::env::temp_dir().join(format!(
        "tessera-contract-{}-{}",
        std::process::id(),
        pass.name
    ));
    std::fs::create_dir_all(&workdir).unwrap();
    let config = workdir.join("schemathesis.toml");
    std::fs::write(&config, schemathesis_config(pass)).unwrap();
    let mut command = Command::new(schemathesis);
    command
        .arg("--config-file")
        .arg(&config)
        .arg("--no-color")
        .arg("run")
        .arg(format!("{}/openapi.json", server.base_url))
        .args(["--url", &server.base_url])
        .args(["--checks", "all"])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", SEED])
        .args(["--request-timeout", "60"])
        // The response-time check holds every answer to the server's own
        // deadline (REQUEST_TIMEOUT_MS, 30 s), not to a speed: speed is
        // measured in benchmarks, and a debug build on two shared cores takes
        // ~11 s to embed the 2,048 inputs the document allows.
        .args(["--max-response-time", "30"])
        .args(pass.operations)
        // The hooks keep the fuzzing admin from changing or deleting itself,
        // and confirm key creations with its password.
        .env("SCHEMATHESIS_HOOKS", hooks_path())
        .env("TESSERA_FUZZ_PASSWORD", &pass.account.password)
        .env(
            "TESSERA_FUZZ_PROTECTED_ID",
            pass.protected.map(|id| id.to_string()).unwrap_or_default(),
        )
        .current_dir(&workdir);
    let started = std::time::Instant::now();
    let report = run_tool(&format!("Schemathesis ({} pass)", pass.name), &mut command);
    let _ = std::fs::remove_dir_all(&workdir);
    // Printed for the log of a passing run: how long the pass took, what it covered.
    let mut summary = format!(
        "Schemathesis {} pass: {:.0?}\n",
        pass.name,
        started.elapsed()
    );
    for line in report.lines().filter(|line| {
        line.contains("generated") || line.contains("Selected:") || line.contains("Scenarios:")
    }) {
        writeln!(summary, "  {}", line.trim()).unwrap();
    }
    eprint!("{summary}");
}

/// Schemathesis's configuration: it signs in with the password grant (again
/// after any 401, as after logout-all), and a warning that an operation
/// refused most schema-valid data, or never let the fuzzer in, fails the run.
fn schemathesis_config(pass: &FuzzPass) -> String {
    let account = &pass.account;
    let mut parameters = String::from("[parameters]\n");
    for (name, value) in &pass.parameters {
        writeln!(parameters, "{name:?} = {value:?}").unwrap();
    }
    format!(
        r#"[auth.dynamic.openapi.bearer]
path = "/api/v1/auth/token"
method = "post"
payload = {{ username = "{}", password = "{}" }}
payload_content_type = "application/x-www-form-urlencoded"
extract_selector = "/access_token"

[warnings]
fail-on = ["validation_mismatch", "missing_auth"]

# A schema-valid token the server never mailed is answered with the one 400
# (`invalid_reset_token`, `invalid_verification_token`) the email issue
# specifies: the fuzzer cannot hold a real one. (Schemathesis fails a run on
# the global fail-on list; a warning an operation does not display is not raised.)
[[operations]]
include-operation-id = ["auth-reset-password", "auth-verify-email"]
warnings = {{ display = ["missing_auth"] }}

[operations.checks.positive_data_acceptance]
expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429", "5xx"]

{}"#,
        account.email, account.password, parameters
    )
}

/// The hooks file next to this harness.
fn hooks_path() -> PathBuf {
    common::repo_root().join("tests/common/schemathesis_hooks.py")
}

/// Serves a fuzz server with one account of `role` and runs one pass over
/// `operations` as it; an admin may not change or delete itself.
async fn fuzz_as(role: Role, name: &'static str, operations: &'static [&'static str]) {
    fuzz_with_data(role, name, operations, false).await;
}

/// [`fuzz_as`], first submitting an `embed_texts` execution as the account
/// when `with_embeddings` so the stored-vectors page has an id that exists.
async fn fuzz_with_data(
    role: Role,
    name: &'static str,
    operations: &'static [&'static str],
    with_embeddings: bool,
) {
    let email = format!("fuzz-{name}@example.com");
    let Some((server, mut created)) =
        serve_real_model(name, FUZZ_SETTINGS, &[(email.as_str(), role)]).await
    else {
        return;
    };
    let account = created.remove(0);
    let mut parameters = Vec::new();
    if with_embeddings {
        let id = submit_embed_texts(&server.base_url, &account).await;
        parameters.push(("path.execution_id", id.to_string()));
    }
    let pass = FuzzPass {
        name,
        operations,
        protected: (role == Role::Admin).then_some(account.id),
        account,
        parameters,
    };
    off_the_runtime(move || fuzz(&server, &pass)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_nothing_in_users_auth_and_health() {
    fuzz_as(
        Role::Admin,
        "users-auth-health",
        &[
            "--include-path-regex",
            "^(/api/v1/(users|auth)(/.*)?|/health|/ready|/metrics)$",
            "--exclude-path-regex",
            "^/api/v1/auth/(logout|logout-all|password)$",
            "--exclude-by",
            r#"method == "DELETE" and path == "/api/v1/users/me""#,
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_nothing_in_operations_that_end_the_callers_session() {
    // Logout, logout-all, a password change and deleting oneself, as a user
    // of their own: after logout-all Schemathesis signs in again.
    fuzz_as(
        Role::User,
        "self-ending",
        &[
            "--include-path-regex",
            "^/api/v1/(auth/(logout|logout-all|password)|users/me)$",
            "--exclude-method",
            "GET",
            "--exclude-method",
            "PATCH",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_nothing_in_executions() {
    fuzz_as(
        Role::Admin,
        "executions",
        &["--include-path-regex", "^/api/v1/executions(/.*)?$"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_nothing_in_inference() {
    fuzz_with_data(
        Role::Admin,
        "inference",
        &["--include-path-regex", "^/api/v1/inference/.*$"],
        true,
    )
    .await;
}

/// Signs `account` in over HTTP; its access token.
async fn sign_in(client: &reqwest::Client, base_url: &str, account: &Account) -> String {
    let pair: serde_json::Value = client
        .post(format!("{base_url}/api/v1/auth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "username={}&password={}",
            account.email.replace('@', "%40"),
            account.password
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    pair["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("signed in: {pair}"))
        .to_owned()
}

/// Signs `account` in over HTTP and POSTs `body` to `path` with its token; the
/// answer's JSON.
async fn post_signed_in(
    base_url: &str,
    account: &Account,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let client = reqwest::Client::new();
    let token = sign_in(&client, base_url, account).await;
    client
        .post(format!("{base_url}{path}"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Signs `account` in over HTTP and submits a two-text `embed_texts`
/// execution; its id.
async fn submit_embed_texts(base_url: &str, account: &Account) -> Uuid {
    let body = json!({
        "kind": "embed_texts",
        "input": {"model": "all-MiniLM-L6-v2", "texts": ["A man is eating food.", "A man rides a horse."]},
    });
    let execution = post_signed_in(base_url, account, "/api/v1/executions", body).await;
    execution["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("embed_texts was accepted: {execution}"))
}

/// Creates an API key with `scopes` for `account` over HTTP; its secret.
async fn create_api_key(base_url: &str, account: &Account, scopes: &[&str]) -> String {
    let body =
        json!({"name": "openai client", "scopes": scopes, "current_password": account.password});
    let created = post_signed_in(base_url, account, "/api/v1/auth/api-keys", body).await;
    created["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("the key was created: {created}"))
        .to_owned()
}

/// Runs the OpenAI-client example (`examples/python`) with `key`.
fn run_openai_example(python: &std::path::Path, base_url: &str, key: &str) -> std::process::Output {
    Command::new(python)
        .arg(common::repo_root().join("examples/python/openai_with_api_key.py"))
        .env("TESSERA_URL", base_url)
        .env("TESSERA_API_KEY", key)
        .env("OPENAI_MAX_RETRIES", "0")
        .output()
        .unwrap_or_else(|error| panic!("the OpenAI example could not start: {error}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_openai_client_embeds_with_an_api_key() {
    let python = ensure_openai_sdk();
    let Some((server, created)) = serve_real_model(
        "the_official_openai_client",
        &[],
        &[("openai@example.com", Role::User)],
    )
    .await
    else {
        return;
    };
    let inference_key = create_api_key(&server.base_url, &created[0], &["inference"]).await;
    let reader_key = create_api_key(&server.base_url, &created[0], &["executions:read"]).await;
    let base_url = server.base_url.clone();
    let (allowed, refused) = off_the_runtime(move || {
        (
            run_openai_example(&python, &base_url, &inference_key),
            run_openai_example(&python, &base_url, &reader_key),
        )
    })
    .await;
    let stdout = String::from_utf8_lossy(&allowed.stdout);
    assert!(
        allowed.status.success() && stdout.contains("2 embeddings of 384 dimensions"),
        "{stdout}{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    // The SDK raises its own exception from our OpenAI-shaped error.
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "a key without `inference` is refused"
    );
    assert!(
        stderr.contains("PermissionDeniedError") && stderr.contains("lacks the `inference` scope"),
        "{stderr}"
    );
    drop(server);
}

// The rules the document now states, at their edges, through the router: the
// server accepts exactly what the schema admits, and the inputs Schemathesis
// first found (a NUL in a sign-in name was a 500) stay answered.

/// The one invalid field's location and reason in a 422.
fn invalid_field(response: &common::TestResponse) -> (serde_json::Value, serde_json::Value) {
    let body = response.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(body["errors"].as_array().map(Vec::len), Some(1), "{body}");
    (
        body["errors"][0]["loc"].clone(),
        body["errors"][0]["msg"].clone(),
    )
}

#[tokio::test]
async fn control_characters_in_a_sign_in_name_or_an_email_prefix_are_a_422_not_a_500() {
    let app = TestApp::spawn().await;
    for username in ["ada\u{0}@example.com", "ada@example.com\n", "\u{85}"] {
        let response = app.login_from(username, "a password", "192.0.2.1").await;
        assert_eq!(
            invalid_field(&response),
            (
                json!(["body", "username"]),
                json!("must not contain control characters")
            )
        );
    }
    let (_, token) = app.signed_in("admin@example.com", Role::Admin).await;
    let response = app
        .get("/api/v1/users?email_prefix=ada%00")
        .bearer(&token)
        .send()
        .await;
    assert_eq!(invalid_field(&response).0, json!(["query", "email_prefix"]));
}

#[tokio::test]
async fn a_cursor_is_accepted_only_in_the_documented_hyphenated_form() {
    let app = TestApp::spawn().await;
    let (admin, token) = app.signed_in("admin@example.com", Role::Admin).await;
    let list = |cursor: String| {
        app.get(&format!("/api/v1/users?cursor={cursor}"))
            .bearer(&token)
            .send()
    };
    assert_eq!(list(admin.id.to_string()).await.status, StatusCode::OK);
    for other_form in [
        admin.id.simple().to_string(),
        admin.id.braced().to_string(),
        admin.id.urn().to_string(),
        String::new(),
    ] {
        let response = list(other_form.clone()).await;
        assert_eq!(
            invalid_field(&response),
            (
                json!(["query", "cursor"]),
                json!("is not a cursor this API returned")
            ),
            "{other_form:?}"
        );
    }
}

#[tokio::test]
async fn names_and_emails_are_checked_as_sent() {
    let app = TestApp::spawn().await;
    let sign_up = |email: &str, full_name: &str| {
        app.post("/api/v1/users")
            .json(json!({"email": email, "full_name": full_name, "password": "long enough"}))
            .send()
    };
    let refused = [
        (" ada@example.com", "Ada", "email"),
        ("ada@example.com ", "Ada", "email"),
        ("ada@localhost", "Ada", "email"),
        ("ada@example.com", "\u{3000}\u{a0} ", "full_name"),
        ("ada@example.com", "Ada\tLovelace", "full_name"),
        // maxLength counts what was sent, surrounding spaces included.
        (
            "ada@example.com",
            &format!(" {}", "x".repeat(100)),
            "full_name",
        ),
    ];
    for (email, full_name, field) in refused {
        let response = sign_up(email, full_name).await;
        assert_eq!(
            invalid_field(&response).0,
            json!(["body", field]),
            "{email:?} {full_name:?}"
        );
    }
    let created = sign_up("ada@example.com", &format!(" {} ", "x".repeat(98))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    assert_eq!(
        created.json()["full_name"],
        "x".repeat(98),
        "stored trimmed"
    );
}

#[tokio::test]
async fn a_profile_change_with_an_email_needs_the_password_and_bounds_any_password_sent() {
    let app = TestApp::spawn().await;
    let (user, token) = app.signed_in("ada@example.com", Role::User).await;
    let change = |body: serde_json::Value| {
        app.patch("/api/v1/users/me")
            .bearer(&token)
            .json(body)
            .send()
    };
    // As the document's anyOf says: any email, even the current one, needs it.
    let response = change(json!({"email": user.email})).await;
    assert_eq!(
        invalid_field(&response).0,
        json!(["body", "current_password"])
    );
    let response = change(json!({"full_name": "Ada", "current_password": "x".repeat(1_025)})).await;
    assert_eq!(
        invalid_field(&response),
        (
            json!(["body", "current_password"]),
            json!("must be at most 1024 characters")
        )
    );
    let same = change(json!({"email": user.email, "current_password": DEFAULT_PASSWORD})).await;
    assert_eq!(same.status, StatusCode::OK, "{}", same.text());
    let renamed = change(json!({"email": null, "full_name": "Ada King"})).await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.text());
}
