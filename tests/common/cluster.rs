//! The private PostgreSQL the tests share: one server per run, a migrated
//! template database built once, and a fresh [`TestDatabase`] cloned from it
//! for every test.
//!
//! With `TEST_DATABASE_URL` (or `DATABASE_URL`) set, that server is used;
//! otherwise a cluster under `.data/test-postgres` is started, or reused when
//! another test process already started it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tessera::core::db::Migrator;
use tessera::core::local_postgres::LocalPostgres;

use super::repo_root;

/// Settings that make a throwaway cluster fast; durability does not matter here.
pub const FAST_SETTINGS: &[&str] = &[
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=400",
];

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
                .expect("a tokio runtime for the test database setup can be built");
            runtime.block_on(prepare_server())
        })
        .join()
        .expect("the test database setup succeeds (its panic message is above)")
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
    let lock = File::create(&lock_path).unwrap_or_else(|error| {
        panic!(
            "cannot create the template lock file {}: {error}",
            lock_path.display()
        )
    });
    lock.lock().unwrap_or_else(|error| {
        panic!(
            "cannot lock the template lock file {}: {error}",
            lock_path.display()
        )
    });
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
        .unwrap_or_else(|error| {
            panic!("cannot connect to the template being built, {building}: {error}")
        });
    migrator
        .run_pending()
        .unwrap_or_else(|error| panic!("the migrations fail on the template {building}: {error}"));
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
            .unwrap_or_else(|error| {
                panic!("cannot look up database {name} in pg_database: {error}")
            });
    row.count > 0
}

/// `admin_url` with its database replaced by `database`.
pub fn database_url(admin_url: &str, database: &str) -> String {
    let (before_query, query) = admin_url
        .split_once('?')
        .map_or((admin_url, None), |(a, q)| (a, Some(q)));
    let (authority, _) = before_query
        .rsplit_once('/')
        .unwrap_or_else(|| panic!("the test database URL {admin_url} has no /database part"));
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
                .expect("a tokio runtime to drop the test database can be built");
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
