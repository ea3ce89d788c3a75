//! The test harness. Each test gets a fresh database cloned from a migrated
//! template on one private PostgreSQL, so tests run in parallel and never see
//! each other's rows.
//!
//! - [`cluster`]: the private PostgreSQL, the template, [`TestDatabase`].
//! - [`app`]: [`TestApp`], its settings, and signed-in accounts.
//! - [`requests`]: the request builder, [`TestResponse`], `assert_problem`.
//! - [`skips`]: skipping tests that need a GPU or the real model.
//! - [`executions`], [`tiny_model`]: helpers for those domains' tests.
//! - [`tools`]: the npm packages and Schemathesis the contract tests drive, and
//!   aiosmtpd.
//! - [`smtp`]: a real SMTP server for the email tests.

// Each test binary uses a different part of the harness.
#![allow(dead_code, unused_imports)]

pub mod app;
pub mod cluster;
pub mod executions;
pub mod requests;
pub mod skips;
pub mod smtp;
pub mod tiny_model;
pub mod tools;

use std::path::PathBuf;

pub use app::{
    DEFAULT_PASSWORD, TEST_JWT_SECRET, TestApp, access_token, ensure_redoc_bundle,
    production_overrides, redoc_bundle_path, refresh_token, settled_inference_report,
    test_settings,
};
pub use cluster::{FAST_SETTINGS, TestDatabase, database_url};
pub use requests::{TestRequest, TestResponse, redact_request_id};
pub use skips::{REQUIRE_GPU_AND_MODEL, real_model_dir, skip};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
