//! `PostgresStore` against the real PostgreSQL server on 127.0.0.1:5432 (database `test`,
//! trust auth; `DATABASE_URL` overrides), each test in a table of its own. The outage test runs
//! a PostgreSQL server of its own, which it stops and starts.

#![cfg(all(feature = "postgres", feature = "testing"))]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::stores::{self, free_port, run};
use serde_json::Map;
use session_engine::store::postgres::PostgresStore;
use session_engine::testing::assert_conforms;
use session_engine::{Changes, Record, SessionStore};

fn url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A name no other test uses.
fn table_name() -> String {
    let suffix: String = session_engine::store::random_id()
        .expect("an id")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    format!("sessions_test_{}", suffix.to_ascii_lowercase())
}

/// A migrated store on a table of its own, and the guard that drops the table.
async fn store() -> (PostgresStore, DropOnExit) {
    let name = table_name();
    let guard = DropOnExit(format!("DROP TABLE IF EXISTS {name}"));
    let store = PostgresStore::connect(&url())
        .await
        .expect("a pool")
        .with_table_name(&name)
        .expect("a valid name");
    store.migrate().await.expect("migrate");
    (store, guard)
}

/// Runs its statement with `psql` when dropped, so that a test's table or schema goes even
/// when the test fails.
struct DropOnExit(String);

impl Drop for DropOnExit {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args([url().as_str(), "-qwc", &self.0])
            .output();
    }
}

#[tokio::test]
async fn postgres_store_conforms() {
    let (store, _table) = store().await;
    assert_conforms(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_changing_different_keys_both_survive() {
    let (store, _table) = store().await;
    stores::different_keys_both_survive(Arc::new(store.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r9_a_destroy_racing_a_write_stays_destroyed() {
    let (store, _table) = store().await;
    stores::destroy_wins_over_a_racing_write(Arc::new(store.clone())).await;
}

#[tokio::test]
async fn odd_keys_survive_delta_writes() {
    let (store, _table) = store().await;
    stores::odd_keys_survive_delta_writes(Arc::new(store.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_app_instances_share_sessions() {
    let (first, _table) = store().await;
    let second = PostgresStore::connect(&url())
        .await
        .expect("a second pool")
        .with_table_name(first.table_name())
        .expect("a valid name");
    stores::two_instances_share_sessions(Arc::new(first.clone()), Arc::new(second)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent_even_when_run_at_once() {
    let name = table_name();
    let _table = DropOnExit(format!("DROP TABLE IF EXISTS {name}"));
    let store = PostgresStore::connect(&url())
        .await
        .expect("a pool")
        .with_table_name(&name)
        .expect("a valid name");
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.migrate().await })
        })
        .collect();
    for run in runs {
        run.await.expect("the task ran").expect("migrate");
    }
    store.migrate().await.expect("once more");
}

#[tokio::test]
async fn a_schema_qualified_table_works() {
    let schema = table_name().replace("sessions_test_", "schema_");
    let _schema = DropOnExit(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
    let base = PostgresStore::connect(&url()).await.expect("a pool");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(base.pool())
        .await
        .expect("create the schema");
    let store = base
        .with_table_name(&format!("{schema}.sessions"))
        .expect("a valid name");
    store.migrate().await.expect("migrate");
    let now = SystemTime::now();
    let record = Record::new(Map::new(), now, now + Duration::from_secs(60));
    store
        .write("k", &record, &Changes::replace_all(), false)
        .await
        .expect("insert");
    assert!(store.read("k").await.expect("read").is_some());
}

#[tokio::test]
async fn bad_table_names_are_refused() {
    let base = PostgresStore::connect(&url()).await.expect("a pool");
    for name in ["", "x; DROP TABLE sessions", "a\"b", "9lives", "a.b.c"] {
        assert!(base.clone().with_table_name(name).is_err(), "{name:?}");
    }
}

#[tokio::test]
async fn cleanup_deletes_expired_rows_in_batches() {
    let (store, _guard) = store().await;
    let store = store.with_cleanup_batch(10);
    stores::cleanup_works_in_batches(&store, store.cleanup_one_batch()).await;
}

/// A PostgreSQL server of the test's own, in a temporary directory, on a free port. Run as
/// the `postgres` user when the tests run as root (the server refuses root).
struct TempPostgres {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
    as_postgres: bool,
}

impl TempPostgres {
    fn init() -> Self {
        let bin = PathBuf::from(run("pg_config", &["--bindir"]).trim());
        let dir = tempfile::tempdir().expect("a temporary directory");
        let as_postgres = run("id", &["-u"]).trim() == "0";
        if as_postgres {
            run("chown", &["postgres:", path(dir.path())]);
        }
        let server = Self {
            dir,
            port: free_port(),
            bin,
            as_postgres,
        };
        server.pg(
            "initdb",
            &[
                "-D",
                &server.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        );
        server
    }

    fn data(&self) -> String {
        format!("{}/data", path(self.dir.path()))
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg(&self, tool: &str, args: &[&str]) {
        let tool = self.bin.join(tool);
        let tool = path(&tool);
        if self.as_postgres {
            let mut all = vec!["-u", "postgres", "--", tool];
            all.extend(args);
            run("runuser", &all);
        } else {
            run(tool, args);
        }
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            path(self.dir.path())
        );
        let log = format!("{}/log", path(self.dir.path()));
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    fn stop(&self) {
        self.pg("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
        if self.as_postgres {
            let _ = std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .args(["-D", &self.data(), "-m", "immediate", "stop"])
                .output();
        }
    }
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_r12_an_outage_fails_only_session_routes_and_the_app_recovers() {
    let server = TempPostgres::init();
    server.start();
    let store = PostgresStore::connect(&server.url()).await.expect("a pool");
    store.migrate().await.expect("migrate");
    let server = Arc::new(server);
    let (stopping, starting) = (server.clone(), server.clone());
    stores::outage_and_recovery(
        Arc::new(store),
        async move { stopping.stop() },
        async move { starting.start() },
    )
    .await;
}

/// `jsonb` cannot hold U+0000: such a write fails with an error, and the stored record stays
/// as it was.
#[tokio::test]
async fn a_nul_character_is_refused_and_loses_nothing() {
    let (store, _table) = store().await;
    let now = SystemTime::now();
    let mut data = Map::new();
    data.insert("kept".into(), serde_json::json!(1));
    let record = Record::new(data.clone(), now, now + Duration::from_secs(60));
    store
        .write("k", &record, &Changes::replace_all(), false)
        .await
        .expect("insert");
    data.insert("bad".into(), serde_json::json!("a\u{0}b"));
    let bad = Record::new(data, now, now + Duration::from_secs(60));
    let error = store
        .write("k", &bad, &Changes::new().with_set("bad"), true)
        .await
        .expect_err("U+0000 is refused");
    assert!(
        matches!(error, session_engine::StoreError::Backend(_)),
        "{error:?}"
    );
    let stored = store.read("k").await.expect("read").expect("live");
    assert_eq!(stored.data, record.data);
}

/// With the `postgres-tls` feature, `sslmode=require` talks TLS to the server (the test
/// server has a self-signed certificate, which `require` accepts, as libpq does).
#[cfg(feature = "postgres-tls")]
#[tokio::test]
async fn tls_connections_work() {
    let base = url();
    let separator = if base.contains('?') { '&' } else { '?' };
    let store = PostgresStore::connect(&format!("{base}{separator}sslmode=require"))
        .await
        .expect("a pool");
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .expect("the server answers over TLS");
    assert!(ssl, "the connection is encrypted");
}
