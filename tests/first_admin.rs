//! The first-admin seeder: idempotent, configured by the environment.

// Test code: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{DEFAULT_PASSWORD, TestApp, TestDatabase, test_settings};
use tessera::auth::service::AuthState;
use tessera::core::db;
use tessera::core::seed::{SeedContext, SeedError, SeedOutcome};
use tessera::users::models::Role;

#[tokio::test]
async fn the_first_admin_is_created_once() {
    let database = TestDatabase::migrated().await;
    let settings = test_settings(
        &database.url,
        &[
            ("FIRST_ADMIN_EMAIL", "Root@Example.com"),
            ("FIRST_ADMIN_PASSWORD", "an admin password"),
        ],
    );
    let config = settings.platform.clone();
    let pool = db::build_pool(&database.url, &config.database).unwrap();
    let auth = AuthState::new(&settings.auth).unwrap();
    let registry = tessera::app::seeders(&auth);
    let context = SeedContext {
        pool: pool.clone(),
        config,
    };

    let first = registry.run(&context, &[]).await.unwrap();
    assert!(matches!(first[0].1, SeedOutcome::Applied(_)), "{first:?}");
    let second = registry.run(&context, &[]).await.unwrap();
    assert_eq!(second[0].1, SeedOutcome::Unchanged);

    let mut conn = pool.get().await.unwrap();
    let admin = tessera::users::service::find_by_email(&mut conn, "root@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(admin.role, Role::Admin);
    assert_eq!(admin.email, "Root@Example.com");
}

#[tokio::test]
async fn outside_development_a_missing_admin_email_seeds_nothing() {
    let database = TestDatabase::migrated().await;
    let settings = test_settings(&database.url, &[]);
    let config = settings.platform.clone();
    let pool = db::build_pool(&database.url, &config.database).unwrap();
    let auth = AuthState::new(&settings.auth).unwrap();
    let context = SeedContext {
        pool: pool.clone(),
        config,
    };
    let outcome = tessera::app::seeders(&auth)
        .run(&context, &[])
        .await
        .unwrap();
    assert_eq!(outcome[0].1, SeedOutcome::Unchanged);
    let mut conn = pool.get().await.unwrap();
    assert!(!tessera::users::service::any_admin(&mut conn).await.unwrap());
}

/// Runs the app's seeders over its own database.
async fn seed(app: &TestApp) -> Result<Vec<(&'static str, SeedOutcome)>, SeedError> {
    let context = SeedContext {
        pool: app.pool.clone(),
        config: app.config.clone(),
    };
    tessera::app::seeders(&app.auth).run(&context, &[]).await
}

#[tokio::test]
async fn a_first_admin_password_that_breaks_the_rules_is_refused_loudly() {
    let app = TestApp::spawn_with(&[
        ("FIRST_ADMIN_EMAIL", "root@example.com"),
        ("FIRST_ADMIN_PASSWORD", "short"),
    ])
    .await;
    let error = seed(&app)
        .await
        .expect_err("a 5-character admin password is refused");
    let message = error.to_string();
    assert!(
        message.contains("FIRST_ADMIN_PASSWORD must be at least 8 characters"),
        "the operator is told why: {message}"
    );
    let mut conn = app.pool.get().await.unwrap();
    assert!(!tessera::users::service::any_admin(&mut conn).await.unwrap());
}

#[tokio::test]
async fn a_first_admin_email_owned_by_a_normal_account_is_not_taken_over() {
    let app = TestApp::spawn_with(&[
        ("FIRST_ADMIN_EMAIL", "Someone@example.com"),
        ("FIRST_ADMIN_PASSWORD", "an admin password"),
    ])
    .await;
    let existing = app
        .create_user("someone@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let error = seed(&app)
        .await
        .expect_err("a user's address is not made an admin");
    assert!(
        error.to_string().contains("is not an admin"),
        "the operator is told why: {error}"
    );
    let mut conn = app.pool.get().await.unwrap();
    let after = tessera::users::service::find(&mut conn, existing.id)
        .await
        .unwrap()
        .expect("the account is still there");
    assert_eq!(after.role, Role::User, "the account was not promoted");
    let response = app
        .login_from("someone@example.com", DEFAULT_PASSWORD, "192.0.2.9")
        .await;
    assert_eq!(response.status, 200, "its own password still signs in");
}
