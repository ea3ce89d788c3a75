//! The application under test: its settings, [`TestApp`] on a database of its
//! own, requests to it, and accounts signed in to it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{Method, StatusCode};
use serde_json::Value;
use tessera::app::{Application, Settings};
use tessera::auth::account_mail::AccountMail;
use tessera::auth::accounts;
use tessera::auth::service::AuthState;
use tessera::core::config::PlatformConfig;
use tessera::core::db::{DbConnection, DbPool};
use tessera::core::docs;
use tessera::core::platform::Lifecycle;
use tessera::executions::service::ExecutionsState;
use tessera::users::models::{Email, FullName, Role, User};
use tessera::users::service::NewProfile;

use super::{TestDatabase, TestRequest, TestResponse, repo_root};

/// The password [`TestApp::signed_in`] gives its accounts.
pub const DEFAULT_PASSWORD: &str = "correct horse battery staple";

/// The signing secret of test apps (any 32 bytes that are not the development default).
pub const TEST_JWT_SECRET: &str = "a-test-only-secret-of-more-than-32-bytes!";

/// Settings for a test app: the defaults of `APP_ENV=test`, with `overrides`.
pub fn test_settings(database_url: &str, overrides: &[(&str, &str)]) -> Settings {
    let mut vars: HashMap<String, String> = HashMap::from([
        ("APP_ENV".to_owned(), "test".to_owned()),
        // Outside development the well-known development secret is refused.
        ("JWT_SECRET".to_owned(), TEST_JWT_SECRET.to_owned()),
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

/// `APP_ENV=production` with what production refuses to start without
/// beyond the test defaults: a mail server, a sender and the links' base URL
/// (nothing is sent unless a test runs workers).
pub fn production_overrides() -> [(&'static str, &'static str); 4] {
    [
        ("APP_ENV", "production"),
        ("SMTP_URL", "smtp://127.0.0.1:9"),
        ("EMAIL_FROM", "Tessera <no-reply@example.com>"),
        ("PUBLIC_URL", "https://app.example.com"),
    ]
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
        panic!("ReDoc's script could not be installed for the tests: {error}");
    }
}

/// Polls `/ready` until the embedding engine has finished downloading and
/// loading; returns its report.
pub async fn settled_inference_report(app: &TestApp) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = app.get("/ready").send().await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        let report = response.json()["components"]["inference"].clone();
        let settling = report["state"] == "loading" || report["state"] == "downloading";
        if !settling || Instant::now() > deadline {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
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
    /// The app's mailing account flows: settings and outbox.
    pub account_mail: AccountMail,
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
            account_mail: state.account_mail.clone(),
            database,
        }
    }

    /// A request with any method, to send through the whole application.
    pub fn request(&self, method: Method, path: &str) -> TestRequest<'_> {
        TestRequest::new(&self.router, method, path)
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> TestRequest<'_> {
        self.request(Method::GET, path)
    }

    /// `POST path`.
    pub fn post(&self, path: &str) -> TestRequest<'_> {
        self.request(Method::POST, path)
    }

    /// `PUT path`.
    pub fn put(&self, path: &str) -> TestRequest<'_> {
        self.request(Method::PUT, path)
    }

    /// `PATCH path`.
    pub fn patch(&self, path: &str) -> TestRequest<'_> {
        self.request(Method::PATCH, path)
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> TestRequest<'_> {
        self.request(Method::DELETE, path)
    }

    /// A connection to the app's database, from the app's own pool.
    pub async fn conn(&self) -> DbConnection {
        self.pool
            .get()
            .await
            .unwrap_or_else(|error| panic!("no connection from the test app's pool: {error}"))
    }

    /// Creates an account directly through the accounts service.
    pub async fn create_user(&self, email: &str, password: &str, role: Role) -> User {
        let account = NewProfile {
            email: Email::parse(email)
                .unwrap_or_else(|error| panic!("the test's email {email:?} is invalid: {error}")),
            full_name: FullName::parse("Test Person").expect("\"Test Person\" is a valid name"),
            role,
        };
        accounts::insert_account(&self.pool, &self.auth, account, password)
            .await
            .unwrap_or_else(|error| panic!("creating the account {email} failed: {error}"))
    }

    /// `POST /api/v1/auth/token` with a form, from `client` (sent as X-Forwarded-For).
    pub async fn login_from(&self, email: &str, password: &str, client: &str) -> TestResponse {
        self.post("/api/v1/auth/token")
            .header("x-forwarded-for", client)
            .form(&[("username", email), ("password", password)])
            .send()
            .await
    }

    /// Signs in and returns the token pair as JSON.
    pub async fn login(&self, email: &str, password: &str) -> Value {
        let response = self.login_from(email, password, "192.0.2.1").await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "signing in as {email}: {}",
            response.text()
        );
        response.json()
    }

    /// A new account with a role, signed in: its user and access token.
    pub async fn signed_in(&self, email: &str, role: Role) -> (User, String) {
        let user = self.create_user(email, DEFAULT_PASSWORD, role).await;
        let tokens = self.login(email, DEFAULT_PASSWORD).await;
        (user, access_token(&tokens).to_owned())
    }
}

/// The access token of a token pair (the answer to a sign-in or refresh).
pub fn access_token(pair: &Value) -> &str {
    pair["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("the token pair has an access_token string: {pair}"))
}

/// The refresh token of a token pair.
pub fn refresh_token(pair: &Value) -> &str {
    pair["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("the token pair has a refresh_token string: {pair}"))
}
