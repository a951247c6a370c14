//! `PostgresStore` against the real PostgreSQL server on 127.0.0.1:5432 (database `test`,
//! trust auth; `DATABASE_URL` overrides), each test in a table of its own, dropped when it
//! ends. The outage test runs a PostgreSQL server of its own, which it stops and starts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Map, Value, json};
use session_engine::store::postgres::PostgresStore;
use session_engine::{Changes, Record, SessionStore, StoreError, WriteMode};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection};

use super::outage::{free_port, outage_and_recovery, run};
use super::{Backend, BulkRows, Spoil, TempDir, bulk_key, fresh_key, insert, now_ms};
use crate::harness::{builder, get_with, new_session, routes, serve, store_key};

pub(crate) fn url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A name no other test uses, with `prefix`.
pub(crate) fn unique(prefix: &str) -> String {
    let suffix: String = session_engine::store::random_id()
        .expect("an id")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    format!("{prefix}_{}", suffix.to_ascii_lowercase())
}

/// Runs its statement with `psql` when dropped, so that a test's table or schema goes even
/// when the test fails.
pub(crate) struct DropOnExit(pub(crate) String);

impl Drop for DropOnExit {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args([url().as_str(), "-qwc", &self.0])
            .output();
    }
}

/// A migrated store on a table of its own, dropped with it.
pub(crate) struct Postgres {
    store: PostgresStore,
    _table: DropOnExit,
}

impl Postgres {
    /// A store on the table `name` (which may name its schema), not migrated.
    pub(crate) async fn on_table(name: &str) -> PostgresStore {
        PostgresStore::connect(&url())
            .await
            .expect("a pool")
            .with_table_name(name)
            .expect("a valid name")
    }

    fn table(&self) -> &str {
        self.store.table_name()
    }
}

impl Backend for Postgres {
    type Store = PostgresStore;

    async fn open() -> Self {
        let name = unique("sessions_test");
        let table = DropOnExit(format!("DROP TABLE IF EXISTS {name}"));
        let store = Self::on_table(&name).await;
        store.migrate().await.expect("migrate");
        Self {
            store,
            _table: table,
        }
    }

    fn store(&self) -> PostgresStore {
        self.store.clone()
    }

    async fn second(&self) -> PostgresStore {
        Self::on_table(self.table()).await
    }
}

/// `jsonb` cannot hold text that is not JSON; what it can hold and the store cannot decode is
/// JSON that is not an object. (A time the platform cannot hold is out of reach too: a
/// `timestamptz` ends in the year 294276, well within `SystemTime`.)
const SPOILED: &str = r#"["not", "an", "object"]"#;

impl Spoil for Postgres {
    async fn spoil(&self, key: &str) {
        let sql = format!(
            "UPDATE {} SET data = $2::jsonb WHERE key = $1",
            self.table()
        );
        let spoiled = sqlx::query(AssertSqlSafe(sql))
            .bind(key)
            .bind(SPOILED)
            .execute(self.store.pool())
            .await
            .expect("UPDATE");
        assert_eq!(spoiled.rows_affected(), 1);
    }

    async fn still_spoiled(&self, key: &str) -> bool {
        let sql = format!("SELECT data::text FROM {} WHERE key = $1", self.table());
        let data: Option<String> = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(key)
            .fetch_optional(self.store.pool())
            .await
            .expect("SELECT");
        let spoiled: Value = serde_json::from_str(SPOILED).expect("JSON");
        data.and_then(|text| serde_json::from_str::<Value>(&text).ok()) == Some(spoiled)
    }
}

impl BulkRows for Postgres {
    async fn fill(&self, rows: u32) {
        let sql = format!(
            "INSERT INTO {} (key, data, created_at, expires_at) \
             SELECT 'k' || lpad(n::text, 8, '0'), '{{\"n\": 1}}', now() - interval '2 hours', \
             now() + CASE WHEN n % 2 = 0 THEN interval '-1 hour' ELSE interval '1 hour' END \
             FROM generate_series(0, $1::int8 - 1) AS n",
            self.table()
        );
        let filled = sqlx::query(AssertSqlSafe(sql))
            .bind(i64::from(rows))
            .execute(self.store.pool())
            .await
            .expect("INSERT");
        assert_eq!(filled.rows_affected(), u64::from(rows));
    }

    async fn count(&self) -> (u64, u64) {
        let sql = format!(
            "SELECT count(*) FILTER (WHERE expires_at <= now()), \
             count(*) FILTER (WHERE expires_at > now()) FROM {}",
            self.table()
        );
        let (expired, live): (i64, i64) = sqlx::query_as(AssertSqlSafe(sql))
            .fetch_one(self.store.pool())
            .await
            .expect("count");
        (expired.unsigned_abs(), live.unsigned_abs())
    }

    async fn holds(&self, n: u32) -> bool {
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE key = $1)",
            self.table()
        );
        sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(bulk_key(n))
            .fetch_one(self.store.pool())
            .await
            .expect("SELECT")
    }
}

store_tests!(Postgres, spoilable);

/// A row lock held by another connection (`SELECT … FOR UPDATE` in an open transaction)
/// holds the store's `UPDATE`s: the engine's `store_timeout` answers for them, a 503 for a
/// write and a response without refresh for a touch, well before the database's own
/// `lock_timeout` (5 s); and the app works again once the lock goes (R15).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r15_a_row_locked_elsewhere_costs_a_503_within_store_timeout() {
    const TIMEOUT: Duration = Duration::from_secs(1);
    let pg = Postgres::open().await;
    let engine = builder()
        .shared_store(Arc::new(pg.store()))
        .store_timeout(TIMEOUT)
        .touch_interval(Duration::ZERO)
        .build()
        .expect("the test engine builds");
    let app = serve(engine, routes());
    let (cookie, id) = new_session(&app).await;

    let mut locker = PgConnection::connect(&url()).await.expect("a connection");
    let mut lock = locker.begin().await.expect("BEGIN");
    let sql = format!("SELECT 1 FROM {} WHERE key = $1 FOR UPDATE", pg.table());
    sqlx::query(AssertSqlSafe(sql))
        .bind(store_key(&id))
        .fetch_one(&mut *lock)
        .await
        .expect("the row is locked");

    for (uri, status) in [
        ("/visits", StatusCode::SERVICE_UNAVAILABLE),
        ("/peek", StatusCode::OK),
    ] {
        let started = Instant::now();
        let reply = get_with(&app, uri, Some(&cookie)).await;
        let waited = started.elapsed();
        assert_eq!(reply.status, status, "{uri}: {reply:?}");
        assert!(reply.set_cookies.is_empty(), "{uri}: {reply:?}");
        assert!(
            (TIMEOUT..TIMEOUT * 3).contains(&waited),
            "{uri} answered after {waited:?}, not at the engine's deadline"
        );
    }

    lock.rollback().await.expect("ROLLBACK");
    let reply = get_with(&app, "/visits", Some(&cookie)).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the app works again: {reply:?}"
    );
    // The engine gave up on the held `UPDATE`, but the server did not cancel it: it may
    // land once the lock goes, so the count is 2 or 3.
    assert!(matches!(reply.body.as_str(), "2" | "3"), "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent_even_when_run_at_once() {
    let name = unique("sessions_test");
    let _table = DropOnExit(format!("DROP TABLE IF EXISTS {name}"));
    let store = Postgres::on_table(&name).await;
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
    let schema = unique("schema");
    let _schema = DropOnExit(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
    let base = PostgresStore::connect(&url()).await.expect("a pool");
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(base.pool())
        .await
        .expect("create the schema");
    let store = base
        .with_table_name(&format!("{schema}.sessions"))
        .expect("a valid name");
    store.migrate().await.expect("migrate");
    let (key, now) = (fresh_key(), now_ms());
    insert(
        &store,
        &key,
        &Record::new(Map::new(), now, now + Duration::from_secs(60)),
    )
    .await;
    assert!(store.read(&key).await.expect("read").is_some());
    let sql = format!("SELECT count(*) FROM {schema}.sessions");
    let rows: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_one(store.pool())
        .await
        .expect("count");
    assert_eq!(rows, 1, "the row is in the schema's table");
}

#[tokio::test]
async fn bad_table_names_are_refused() {
    let base = PostgresStore::connect(&url()).await.expect("a pool");
    for name in ["", "x; DROP TABLE sessions", "a\"b", "9lives", "a.b.c"] {
        let error = base.clone().with_table_name(name).expect_err(name);
        assert!(
            matches!(error, StoreError::Backend(_)),
            "{name:?}: {error:?}"
        );
    }
}

#[tokio::test]
async fn cleanup_deletes_expired_rows_in_batches() {
    let pg = Postgres::open().await;
    let store = pg.store().with_cleanup_batch(10);
    super::cleanup_works_in_batches(&store, store.cleanup_one_batch()).await;
}

/// R21: with a budget of 1 ms and batches of 100 rows, one call looks at a few hundred of
/// 40,000 rows; `spawn_cleanup` still removes every expired row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r21_cleanup_goes_through_a_large_table_in_steps() {
    let pg = Postgres::open().await;
    let store = pg
        .store()
        .with_cleanup_batch(100)
        .with_cleanup_budget(Duration::from_millis(1));
    super::r21_cleanup_goes_through_a_large_table_in_steps(&pg, Arc::new(store), 40_000).await;
}

/// R21: with the engine's deadline at 50 ms and batches of 100 rows, every call of a table of
/// 100,000 rows is cut off long before the end; `spawn_cleanup` still removes every expired
/// row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r21_cleanup_cut_off_by_the_deadline_keeps_its_progress() {
    let pg = Postgres::open().await;
    let store = pg.store().with_cleanup_batch(100);
    super::r21_cleanup_cut_off_by_the_deadline_keeps_its_progress(
        &pg,
        Arc::new(store),
        100_000,
        Duration::from_millis(50),
    )
    .await;
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

/// A PostgreSQL server of the test's own, in a temporary directory, on a free port; run as
/// the `postgres` user when the tests run as root (the server refuses root).
struct TempPostgres {
    dir: TempDir,
    port: u16,
    bin: String,
    as_postgres: bool,
}

impl TempPostgres {
    fn init() -> Self {
        let as_postgres = run("id", &["-u"]).trim() == "0";
        let dir = TempDir::new();
        if as_postgres {
            run("chown", &["postgres:", dir.path()]);
        }
        let server = Self {
            bin: run("pg_config", &["--bindir"]).trim().to_owned(),
            dir,
            port: free_port(),
            as_postgres,
        };
        let data = server.data();
        server.pg(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "--no-sync"],
        );
        server
    }

    fn data(&self) -> String {
        format!("{}/data", self.dir.path())
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The command line that runs `tool` of the server's binaries, as the right user.
    fn command(&self, tool: &str) -> Vec<String> {
        let tool = format!("{}/{tool}", self.bin);
        if self.as_postgres {
            vec![
                "runuser".into(),
                "-u".into(),
                "postgres".into(),
                "--".into(),
                tool,
            ]
        } else {
            vec![tool]
        }
    }

    fn pg(&self, tool: &str, args: &[&str]) {
        let command = self.command(tool);
        let mut all: Vec<&str> = command[1..].iter().map(String::as_str).collect();
        all.extend(args);
        run(&command[0], &all);
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path()
        );
        let log = format!("{}/log", self.dir.path());
        let data = self.data();
        self.pg(
            "pg_ctl",
            &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
        );
    }

    fn stop(&self) {
        self.pg("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let command = self.command("pg_ctl");
        let _ = std::process::Command::new(&command[0])
            .args(&command[1..])
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_r12_r15_an_outage_fails_only_session_routes_and_the_app_recovers() {
    let server = Arc::new(TempPostgres::init());
    server.start();
    let store = PostgresStore::connect(&server.url()).await.expect("a pool");
    store.migrate().await.expect("migrate");
    let (stopping, starting) = (server.clone(), server.clone());
    outage_and_recovery(
        Arc::new(store),
        async move { stopping.stop() },
        async move { starting.start() },
    )
    .await;
}

/// The expiry index of earlier versions costs every write and touch and serves no query now:
/// `migrate` drops it from the table's own schema, and leaves an index of the same name in
/// another schema alone.
#[tokio::test]
async fn migrate_drops_the_expiry_index_of_earlier_versions_in_the_tables_schema() {
    let (schema, decoy) = (unique("schema"), unique("decoy"));
    let _schema = DropOnExit(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
    let _decoy = DropOnExit(format!("DROP SCHEMA IF EXISTS {decoy} CASCADE"));
    let base = PostgresStore::connect(&url()).await.expect("a pool");
    let store = base
        .with_table_name(&format!("{schema}.sessions"))
        .expect("a valid name");
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE SCHEMA {schema}; CREATE SCHEMA {decoy}; \
         CREATE TABLE {decoy}.other (expires_at timestamptz); \
         CREATE INDEX sessions_expires_at ON {decoy}.other (expires_at)"
    )))
    .execute(store.pool())
    .await
    .expect("the schemas");
    store.migrate().await.expect("migrate");
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE INDEX sessions_expires_at ON {schema}.sessions (expires_at)"
    )))
    .execute(store.pool())
    .await
    .expect("the old index");
    store.migrate().await.expect("migrate again");
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT schemaname || '.' || indexname FROM pg_indexes \
         WHERE indexname = 'sessions_expires_at' AND schemaname IN ($1, $2)",
    )
    .bind(&schema)
    .bind(&decoy)
    .fetch_all(store.pool())
    .await
    .expect("the indexes");
    assert_eq!(indexes, [format!("{decoy}.sessions_expires_at")]);
}

/// Starting an app on a table whose schema is current takes no lock that waits for session
/// traffic: `migrate` finishes while another connection holds a write transaction open on
/// the table (R21). A `CREATE INDEX IF NOT EXISTS` would wait for it (a share lock on the
/// table) until the server's `lock_timeout`, and stall the writes queued behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r21_migrate_on_a_current_schema_waits_for_no_open_write() {
    let pg = Postgres::open().await;
    let (key, now) = (fresh_key(), now_ms());
    insert(
        &pg.store(),
        &key,
        &Record::new(Map::new(), now, now + Duration::from_secs(60)),
    )
    .await;
    let mut writer = PgConnection::connect(&url()).await.expect("a connection");
    let mut write = writer.begin().await.expect("BEGIN");
    let sql = format!("UPDATE {} SET data = data WHERE key = $1", pg.table());
    let updated = sqlx::query(AssertSqlSafe(sql))
        .bind(key.as_str())
        .execute(&mut *write)
        .await
        .expect("the open write");
    assert_eq!(updated.rows_affected(), 1);

    let starting = pg.second().await;
    let migrated = tokio::time::timeout(Duration::from_secs(3), starting.migrate()).await;
    assert!(
        matches!(migrated, Ok(Ok(()))),
        "migrate waited for the open write: {migrated:?}"
    );
    write.rollback().await.expect("ROLLBACK");
}

/// A `migrate` on a current schema sends the server nothing that makes it send a notice back
/// (each `IF NOT EXISTS` that finds its object does, and sqlx logs it at `INFO`): an app's
/// start logs nothing about the schema. The same capture does see the notice of a statement
/// that sends one, so it would catch them.
#[tokio::test]
async fn migrate_on_a_current_schema_logs_no_notice() {
    let pg = Postgres::open().await;
    let starting = pg.second().await;
    let (logs, _guard) = crate::logs::capture();
    starting.migrate().await.expect("migrate");
    let text = logs.text();
    assert!(
        !text.contains("sqlx::postgres::notice"),
        "migrate logged a notice:\n{text}"
    );
    let absent = unique("absent");
    sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE IF EXISTS {absent}")))
        .execute(starting.pool())
        .await
        .expect("DROP TABLE IF EXISTS");
    assert!(
        logs.text().contains("sqlx::postgres::notice"),
        "the capture sees a notice: {}",
        logs.text()
    );
}

sql_scenarios!(Postgres);

/// A table made by the previous version (data only, an expression index on the data's
/// user, no fill factor): `migrate` adds the columns beside the data and fills them from the
/// rows, indexes the user column, drops the expression index and sets the fill factor; the
/// rows are then listed and read as if written by this version (R21), and a second `migrate`
/// finds nothing to do.
#[tokio::test]
async fn r21_migrate_brings_a_table_of_the_previous_layout_up_to_date() {
    let name = unique("sessions_old");
    let _table = DropOnExit(format!("DROP TABLE IF EXISTS {name}"));
    let store = Postgres::on_table(&name).await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE {name} (key TEXT PRIMARY KEY, data JSONB NOT NULL, \
         created_at TIMESTAMPTZ NOT NULL, expires_at TIMESTAMPTZ NOT NULL); \
         CREATE INDEX {name}_user ON {name} ((data->>'__user')) WHERE data ? '__user'"
    )))
    .execute(store.pool())
    .await
    .expect("the old table");
    let old = super::sql::OldRows::new();
    for (key, data, created, expires) in &old.rows {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {name} VALUES ($1, $2::jsonb, \
             'epoch'::timestamptz + $3::int8 * interval '1 millisecond', \
             'epoch'::timestamptz + $4::int8 * interval '1 millisecond')"
        )))
        .bind(key.as_str())
        .bind(Value::Object(data.clone()).to_string())
        .bind(super::sql::millis(*created))
        .bind(super::sql::millis(*expires))
        .execute(store.pool())
        .await
        .expect("an old row");
    }
    store.migrate().await.expect("migrate");
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname FROM pg_indexes WHERE tablename = $1 ORDER BY indexname",
    )
    .bind(&name)
    .fetch_all(store.pool())
    .await
    .expect("the indexes");
    assert_eq!(
        indexes,
        [format!("{name}_pkey"), format!("{name}_user_name")]
    );
    let options: Option<Vec<String>> =
        sqlx::query_scalar("SELECT reloptions FROM pg_class WHERE oid = to_regclass($1)")
            .bind(&name)
            .fetch_one(store.pool())
            .await
            .expect("the options");
    assert_eq!(options, Some(vec!["fillfactor=80".to_owned()]));
    old.check(&store).await;
    let (logs, _guard) = crate::logs::capture();
    store.migrate().await.expect("migrate again");
    assert!(
        !logs.text().contains("sqlx::postgres::notice"),
        "{}",
        logs.text()
    );
}

/// How many of 2,000 updates of 100 sessions PostgreSQL makes heap-only (HOT), which write
/// no index entry: with the previous layout and its statement (an expression index on the
/// data's user, no fill factor), and with this version's (the user in a column of its own),
/// without and with its fill factor. Prints `n_tup_upd` and `n_tup_hot_upd`; a figure, not a
/// check: `cargo test --all-features --test it -- --ignored --nocapture hot_updates`.
#[tokio::test]
#[ignore = "a measurement, run by hand"]
async fn hot_updates_measured() {
    const SESSIONS: usize = 100;
    const UPDATES: usize = 2_000;
    let payload = "p".repeat(200);
    for layout in [
        "previous",
        "this version, fillfactor 100",
        "this version, fillfactor 80",
    ] {
        let name = unique("sessions_hot");
        let _table = DropOnExit(format!("DROP TABLE IF EXISTS {name}"));
        let store = Postgres::on_table(&name).await;
        let keys: Vec<_> = (0..SESSIONS).map(|_| fresh_key()).collect();
        let now = now_ms();
        let data = |n: usize| {
            let mut data = Map::new();
            data.insert("__user".into(), json!(format!("user{}", n % 10)));
            data.insert("n".into(), json!(n));
            data.insert("payload".into(), json!(payload));
            data
        };
        if layout == "previous" {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "CREATE TABLE {name} (key TEXT PRIMARY KEY, data JSONB NOT NULL, \
                 created_at TIMESTAMPTZ NOT NULL, expires_at TIMESTAMPTZ NOT NULL); \
                 CREATE INDEX {name}_user ON {name} ((data->>'__user')) WHERE data ? '__user'"
            )))
            .execute(store.pool())
            .await
            .expect("the old table");
            for (n, key) in keys.iter().enumerate() {
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {name} VALUES ($1, $2::jsonb, now(), now() + interval '1 hour')"
                )))
                .bind(key.as_str())
                .bind(Value::Object(data(n)).to_string())
                .execute(store.pool())
                .await
                .expect("a row");
            }
            // The statement of the previous version's patch.
            let patch = format!(
                "UPDATE {name} SET data = (data - $3::text[]) || $4::jsonb, \
                 expires_at = now() + interval '1 hour' WHERE key = $1 \
                 AND expires_at > 'epoch'::timestamptz + $2::int8 * interval '1 millisecond'"
            );
            for i in 0..UPDATES {
                sqlx::query(AssertSqlSafe(patch.clone()))
                    .bind(keys[i % SESSIONS].as_str())
                    .bind(super::sql::millis(now_ms()))
                    .bind(Vec::<String>::new())
                    .bind(json!({ "n": i }).to_string())
                    .execute(store.pool())
                    .await
                    .expect("an update");
            }
        } else {
            store.migrate().await.expect("migrate");
            if layout.ends_with("100") {
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "ALTER TABLE {name} RESET (fillfactor)"
                )))
                .execute(store.pool())
                .await
                .expect("RESET");
            }
            for (n, key) in keys.iter().enumerate() {
                insert(
                    &store,
                    key,
                    &Record::new(data(n), now, now + Duration::from_secs(3600)),
                )
                .await;
            }
            for i in 0..UPDATES {
                let n = i % SESSIONS;
                let mut changed = data(n);
                changed.insert("n".into(), json!(i));
                let now = now_ms();
                let record = Record::new(changed, now, now + Duration::from_secs(3600)).with_rule(
                    session_engine::store::ExpiryRule::new(now, Duration::from_secs(3600), None),
                );
                store
                    .write(
                        &keys[n],
                        &record,
                        &Changes::new().with_set("n"),
                        WriteMode::Update,
                    )
                    .await
                    .expect("an update");
            }
        }
        // The statistics reach the view within a second or so of each transaction.
        let mut figures: (i64, i64) = (0, 0);
        for _ in 0..50 {
            figures = sqlx::query_as(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = $1",
            )
            .bind(&name)
            .fetch_one(store.pool())
            .await
            .expect("the statistics");
            if figures.0 >= i64::try_from(UPDATES).expect("fits") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!(
            "{layout}: n_tup_upd {}, n_tup_hot_upd {} ({} sessions, {UPDATES} updates)",
            figures.0, figures.1, SESSIONS
        );
    }
}
