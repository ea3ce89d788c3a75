//! The first-admin seeder: idempotent, configured by the environment.

// Test code: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestDatabase, test_settings};
use tessera::auth::service::AuthState;
use tessera::core::db;
use tessera::core::seed::{SeedContext, SeedOutcome};
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
