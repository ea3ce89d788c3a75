//! Migrations are reversible: up → down → up works on a real database.

// Test code: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestDatabase;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tessera::core::db::{Migrator, embedded_migrations};

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    count: i64,
}

/// How many relations, functions and types the migrations left in `public`.
async fn schema_objects(url: &str) -> i64 {
    let mut conn = AsyncPgConnection::establish(url).await.unwrap();
    let row: Count = diesel::sql_query(
        "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = 'public' AND c.relname <> '__diesel_schema_migrations'
                   AND c.relname NOT LIKE '__diesel_schema_migrations%')
              + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname = 'public')
              + (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                 WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'c')
                   AND t.typrelid = 0) AS count",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    row.count
}

#[tokio::test(flavor = "multi_thread")]
async fn up_down_up_round_trips() {
    let database = TestDatabase::empty().await;
    let all = embedded_migrations().unwrap();
    assert!(!all.is_empty());
    let mut migrator = Migrator::connect(&database.url).await.unwrap();
    let before = schema_objects(&database.url).await;

    let applied = migrator.run_pending().expect("the migrations apply");
    assert_eq!(applied.len(), all.len());
    assert!(migrator.status().unwrap().iter().all(|m| m.applied));
    let migrated = schema_objects(&database.url).await;
    assert!(migrated > before, "the migrations create something");

    let reverted = migrator.revert(all.len()).unwrap();
    assert_eq!(reverted.len(), all.len());
    assert!(migrator.status().unwrap().iter().all(|m| !m.applied));
    assert_eq!(
        schema_objects(&database.url).await,
        before,
        "down undoes up exactly"
    );

    assert_eq!(
        migrator.run_pending().expect("the migrations apply").len(),
        all.len()
    );
    assert_eq!(schema_objects(&database.url).await, migrated);
    assert!(
        migrator
            .run_pending()
            .expect("the migrations apply")
            .is_empty(),
        "nothing left to apply"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reverting_more_than_applied_stops_at_nothing() {
    let database = TestDatabase::empty().await;
    let mut migrator = Migrator::connect(&database.url).await.unwrap();
    migrator.run_pending().expect("the migrations apply");
    let count = embedded_migrations().unwrap().len();
    assert_eq!(migrator.revert(count + 5).unwrap().len(), count);
    assert!(migrator.revert(1).unwrap().is_empty());
}
