//! Seeding runs registered seeders in order; each is idempotent.

// Test code: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestDatabase, test_settings};
use diesel_async::RunQueryDsl;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tessera::core::db;
use tessera::core::seed::{SeedContext, SeedError, SeedOutcome, SeedRegistry, Seeder};
use tessera::shared::error::AppError;

/// A seeder that inserts one named row unless it is there.
struct RowSeeder(&'static str);

impl Seeder for RowSeeder {
    fn name(&self) -> &'static str {
        self.0
    }

    fn run<'a>(&'a self, context: &'a SeedContext) -> BoxFuture<'a, Result<SeedOutcome, AppError>> {
        async move {
            let mut conn = context.pool.get().await?;
            let inserted =
                diesel::sql_query("INSERT INTO seeded (name) VALUES ($1) ON CONFLICT DO NOTHING")
                    .bind::<diesel::sql_types::Text, _>(self.0)
                    .execute(&mut conn)
                    .await?;
            Ok(if inserted == 1 {
                SeedOutcome::Applied(format!("inserted {}", self.0))
            } else {
                SeedOutcome::Unchanged
            })
        }
        .boxed()
    }
}

async fn context() -> (SeedContext, TestDatabase) {
    let database = TestDatabase::migrated().await;
    let config = test_settings(&database.url, &[]).platform;
    let pool = db::build_pool(&database.url, &config.database).unwrap();
    let mut conn = pool.get().await.unwrap();
    diesel::sql_query("CREATE TABLE seeded (name text PRIMARY KEY)")
        .execute(&mut conn)
        .await
        .unwrap();
    (
        SeedContext {
            pool: pool.clone(),
            config,
        },
        database,
    )
}

async fn rows(context: &SeedContext) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        count: i64,
    }
    let mut conn = context
        .pool
        .get()
        .await
        .expect("a database connection from the seed context's pool");
    let row: Count = diesel::sql_query("SELECT count(*) AS count FROM seeded")
        .get_result(&mut conn)
        .await
        .unwrap();
    row.count
}

#[tokio::test]
async fn seeding_twice_changes_nothing_the_second_time() {
    let (context, _database) = context().await;
    let registry = SeedRegistry::new()
        .register(RowSeeder("first"))
        .register(RowSeeder("second"));
    let outcomes = registry.run(&context, &[]).await.unwrap();
    assert_eq!(outcomes.len(), 2);
    assert_eq!(outcomes[0].0, "first", "registration order");
    assert!(
        outcomes
            .iter()
            .all(|(_, o)| matches!(o, SeedOutcome::Applied(_)))
    );
    assert_eq!(rows(&context).await, 2);

    let again = registry.run(&context, &[]).await.unwrap();
    assert!(
        again
            .iter()
            .all(|(_, outcome)| *outcome == SeedOutcome::Unchanged)
    );
    assert_eq!(rows(&context).await, 2);
}

#[tokio::test]
async fn named_seeders_run_alone_and_unknown_names_run_nothing() {
    let (context, _database) = context().await;
    let registry = SeedRegistry::new()
        .register(RowSeeder("first"))
        .register(RowSeeder("second"));
    let outcomes = registry
        .run(&context, &["second".to_owned()])
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].0, "second");

    let error = registry
        .run(&context, &["first".to_owned(), "nope".to_owned()])
        .await
        .unwrap_err();
    assert!(matches!(error, SeedError::Unknown { ref name, .. } if name == "nope"));
    assert!(error.to_string().contains("first, second"));
    assert_eq!(rows(&context).await, 1, "nothing ran");
}

#[tokio::test]
async fn the_app_registry_has_unique_names() {
    let settings = test_settings("postgres://unused/unused", &[]);
    let auth = tessera::auth::service::AuthState::new(&settings.auth).unwrap();
    let names = tessera::app::seeders(&auth).names();
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(names.len(), unique.len());
}
