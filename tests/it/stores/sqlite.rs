//! `SqliteStore` against a real SQLite database in a temporary file of each test's own.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Map, Value};
use session_engine::store::sqlite::SqliteStore;
use session_engine::testing::{Options, assert_conforms_with};
use session_engine::{Record, SessionStore, StoreError};
use sqlx::{AssertSqlSafe, Connection as _, SqliteConnection};

use super::{Backend, BulkRows, Spoil, TempDir, bulk_key, fresh_key, insert, now_ms};
use crate::harness::{engine_on, get_with, new_session, routes, serve};

/// A migrated store in a new database file; the directory goes with it.
pub(crate) struct Sqlite {
    store: SqliteStore,
    dir: TempDir,
}

/// The database file in `dir`.
fn url(dir: &TempDir) -> String {
    format!("sqlite://{}/sessions.db", dir.path())
}

impl Backend for Sqlite {
    type Store = SqliteStore;

    async fn open() -> Self {
        let dir = TempDir::new();
        let store = SqliteStore::open(&url(&dir))
            .await
            .expect("the database opens");
        store.migrate().await.expect("migrate");
        Self { store, dir }
    }

    fn store(&self) -> SqliteStore {
        self.store.clone()
    }

    async fn second(&self) -> SqliteStore {
        SqliteStore::open(&url(&self.dir))
            .await
            .expect("the database opens")
    }
}

impl Spoil for Sqlite {
    async fn spoil(&self, key: &str) {
        let spoiled = sqlx::query("UPDATE sessions SET data = 'not json' WHERE key = ?1")
            .bind(key)
            .execute(self.store.pool())
            .await
            .expect("UPDATE");
        assert_eq!(spoiled.rows_affected(), 1);
    }

    async fn still_spoiled(&self, key: &str) -> bool {
        let data: Option<String> = sqlx::query_scalar("SELECT data FROM sessions WHERE key = ?1")
            .bind(key)
            .fetch_optional(self.store.pool())
            .await
            .expect("SELECT");
        data.as_deref() == Some("not json")
    }
}

impl BulkRows for Sqlite {
    async fn fill(&self, rows: u32) {
        let filled = sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?1) \
             INSERT INTO sessions (key, data, created_ms, expires_ms) \
             SELECT printf('k%08d', i), '{\"n\":1}', ?2 - 7200000, \
             ?2 + CASE WHEN i % 2 = 0 THEN -3600000 ELSE 3600000 END FROM n",
        )
        .bind(rows)
        .bind(now())
        .execute(self.store.pool())
        .await
        .expect("INSERT");
        assert_eq!(filled.rows_affected(), u64::from(rows));
    }

    async fn count(&self) -> (u64, u64) {
        let (expired, live): (i64, i64) = sqlx::query_as(
            "SELECT count(CASE WHEN expires_ms <= ?1 THEN 1 END), \
             count(CASE WHEN expires_ms > ?1 THEN 1 END) FROM sessions",
        )
        .bind(now())
        .fetch_one(self.store.pool())
        .await
        .expect("count");
        (expired.unsigned_abs(), live.unsigned_abs())
    }

    async fn holds(&self, n: u32) -> bool {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sessions WHERE key = ?1)")
            .bind(bulk_key(n))
            .fetch_one(self.store.pool())
            .await
            .expect("SELECT")
    }
}

/// Now, in the milliseconds the table holds.
fn now() -> i64 {
    let since = now_ms()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    i64::try_from(since.as_millis()).expect("ms fit")
}

store_tests!(Sqlite, spoilable);

#[tokio::test]
async fn sessions_survive_closing_and_reopening_the_file() {
    let sqlite = Sqlite::open().await;
    let app = serve(engine_on(Arc::new(sqlite.store())), routes());
    let (cookie, _) = new_session(&app).await;
    let second = get_with(&app, "/visits", Some(&cookie)).await;
    assert_eq!(second.body, "2");
    sqlite.store.pool().close().await;
    drop(app);

    // A plain path opens the same file.
    let path = format!("{}/sessions.db", sqlite.dir.path());
    let reopened = SqliteStore::open(&path)
        .await
        .expect("the file opens again");
    reopened.migrate().await.expect("migrate is idempotent");
    let app = serve(engine_on(Arc::new(reopened)), routes());
    let after = get_with(&app, "/visits", Some(&second.cookie())).await;
    assert_eq!((after.status, after.body.as_str()), (StatusCode::OK, "3"));
}

#[tokio::test]
async fn migrate_is_idempotent_and_tables_are_separate() {
    let sqlite = Sqlite::open().await;
    let store = sqlite.store();
    store.migrate().await.expect("a second migrate");
    let other = store
        .clone()
        .with_table_name("other_sessions")
        .expect("a valid name");
    other.migrate().await.expect("migrate the other table");
    other.migrate().await.expect("and again");
    assert_eq!(other.table_name(), "other_sessions");
    let now = now_ms();
    let key = fresh_key();
    insert(
        &store,
        &key,
        &Record::new(Map::new(), now, now + Duration::from_secs(60)),
    )
    .await;
    assert!(other.read(&key).await.expect("read").is_none());
    assert!(store.read(&key).await.expect("read").is_some());
}

#[tokio::test]
async fn bad_table_names_are_refused() {
    let sqlite = Sqlite::open().await;
    for name in [
        "",
        "x; DROP TABLE sessions",
        "a\"b",
        "9lives",
        "schema.table",
    ] {
        let error = sqlite.store().with_table_name(name).expect_err(name);
        assert!(
            matches!(error, StoreError::Backend(_)),
            "{name:?}: {error:?}"
        );
    }
}

#[tokio::test]
async fn cleanup_deletes_expired_rows_in_batches() {
    let sqlite = Sqlite::open().await;
    let store = sqlite.store().with_cleanup_batch(10);
    super::cleanup_works_in_batches(&store, store.cleanup_one_batch()).await;
}

/// R21: with a budget of 1 ms and batches of 100 rows, one call looks at a few hundred of
/// 40,000 rows; `spawn_cleanup` still removes every expired row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r21_cleanup_goes_through_a_large_table_in_steps() {
    let sqlite = Sqlite::open().await;
    let store = sqlite
        .store()
        .with_cleanup_batch(100)
        .with_cleanup_budget(Duration::from_millis(1));
    super::r21_cleanup_goes_through_a_large_table_in_steps(&sqlite, Arc::new(store), 40_000).await;
}

/// R21: with the engine's deadline at 50 ms and batches of 100 rows, every call of a table of
/// 100,000 rows is cut off long before the end; `spawn_cleanup` still removes every expired
/// row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r21_cleanup_cut_off_by_the_deadline_keeps_its_progress() {
    let sqlite = Sqlite::open().await;
    let store = sqlite.store().with_cleanup_batch(100);
    super::r21_cleanup_cut_off_by_the_deadline_keeps_its_progress(
        &sqlite,
        Arc::new(store),
        100_000,
        Duration::from_millis(50),
    )
    .await;
}

#[tokio::test]
async fn an_in_memory_database_is_one_database_for_the_whole_pool() {
    for url in ["sqlite::memory:", ":memory:"] {
        let store = SqliteStore::open(url).await.expect("opens");
        store.migrate().await.expect("migrate");
        // Every connection of the pool sees the table and the rows the others wrote.
        assert_conforms_with(&store, Options::default()).await;
    }
}

/// The expiry index of earlier versions costs every write and touch and serves no query now:
/// `migrate` removes it from a table made by them.
#[tokio::test]
async fn migrate_drops_the_expiry_index_of_earlier_versions() {
    let sqlite = Sqlite::open().await;
    let store = sqlite.store();
    let indexes = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'sessions' \
             AND sql IS NOT NULL ORDER BY name",
        )
        .fetch_all(store.pool())
        .await
        .expect("the indexes")
    };
    sqlx::query("CREATE INDEX sessions_expires_ms ON sessions (expires_ms)")
        .execute(store.pool())
        .await
        .expect("the old index");
    assert_eq!(
        indexes().await,
        ["sessions_expires_ms", "sessions_user_name"]
    );
    store.migrate().await.expect("migrate");
    assert_eq!(indexes().await, ["sessions_user_name"]);
}

/// Starting an app on a file whose schema is current takes no lock that waits for session
/// traffic: `migrate` finishes while another connection holds SQLite's write lock (a
/// `BEGIN IMMEDIATE` transaction with a write in it), where any DDL would wait for it until
/// the busy time-out (R21).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r21_migrate_on_a_current_schema_waits_for_no_open_write() {
    let sqlite = Sqlite::open().await;
    let (key, now) = (fresh_key(), now_ms());
    insert(
        &sqlite.store(),
        &key,
        &Record::new(Map::new(), now, now + Duration::from_secs(60)),
    )
    .await;
    let mut writer = SqliteConnection::connect(&url(&sqlite.dir))
        .await
        .expect("a connection");
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut writer)
        .await
        .expect("BEGIN IMMEDIATE");
    let updated = sqlx::query("UPDATE sessions SET data = data WHERE key = ?1")
        .bind(key.as_str())
        .execute(&mut writer)
        .await
        .expect("the open write");
    assert_eq!(updated.rows_affected(), 1);

    let starting = sqlite.second().await;
    let migrated = tokio::time::timeout(Duration::from_secs(3), starting.migrate()).await;
    assert!(
        matches!(migrated, Ok(Ok(()))),
        "migrate waited for the open write: {migrated:?}"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut writer)
        .await
        .expect("ROLLBACK");
}

sql_scenarios!(Sqlite);

/// A table made by the previous version (data only, an expression index on the data's user):
/// `migrate` adds the columns beside the data and fills them from the rows (a row whose data
/// is not JSON stays as it is), indexes the user column and drops the expression index; the
/// rows are then listed and read as if written by this version (R21).
#[tokio::test]
async fn r21_migrate_brings_a_table_of_the_previous_layout_up_to_date() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&url(&dir))
        .await
        .expect("the database opens");
    let user = "(CASE WHEN json_valid(data) THEN json_extract(data, '$.__user') END)";
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE sessions (key TEXT PRIMARY KEY NOT NULL, data TEXT NOT NULL, \
         created_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL) WITHOUT ROWID; \
         CREATE INDEX sessions_user ON sessions ({user}) WHERE {user} IS NOT NULL"
    )))
    .execute(store.pool())
    .await
    .expect("the old table");
    let old = super::sql::OldRows::new();
    let spoiled = fresh_key();
    let rows = old
        .rows
        .iter()
        .map(|(key, data, created, expires)| {
            (
                key.as_str().to_owned(),
                Value::Object(data.clone()).to_string(),
                *created,
                *expires,
            )
        })
        .chain([(
            spoiled.as_str().to_owned(),
            "not json".to_owned(),
            now_ms(),
            now_ms() + Duration::from_secs(60),
        )]);
    for (key, data, created, expires) in rows {
        sqlx::query("INSERT INTO sessions VALUES (?1, ?2, ?3, ?4)")
            .bind(key)
            .bind(data)
            .bind(super::sql::millis(created))
            .bind(super::sql::millis(expires))
            .execute(store.pool())
            .await
            .expect("an old row");
    }
    store.migrate().await.expect("migrate");
    let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('sessions')")
        .fetch_all(store.pool())
        .await
        .expect("the columns");
    assert_eq!(
        columns,
        [
            "key",
            "data",
            "created_ms",
            "expires_ms",
            "user_name",
            "duration_ms",
            "login_ms"
        ]
    );
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'sessions' \
         AND sql IS NOT NULL ORDER BY name",
    )
    .fetch_all(store.pool())
    .await
    .expect("the indexes");
    assert_eq!(indexes, ["sessions_user_name"]);
    old.check(&store).await;
    assert!(matches!(
        store.read(&spoiled).await,
        Err(StoreError::Undecodable(_))
    ));
    store.migrate().await.expect("migrate again");
}
