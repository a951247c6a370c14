//! [`SqliteStore`]: sessions in one SQLite file, for a single server that must keep its sessions
//! across restarts without running a database server (feature `sqlite`; SQLite is bundled).
//!
//! ```no_run
//! # async fn run() -> Result<(), session_engine::StoreError> {
//! use session_engine::SessionEngine;
//! use session_engine::store::sqlite::SqliteStore;
//!
//! let store = SqliteStore::open("sqlite://sessions.db").await?;
//! store.migrate().await?;
//! let engine = SessionEngine::builder()
//!     .secret("a secret of at least thirty-two bytes!")
//!     .store(store)
//!     .build();
//! # let _ = engine;
//! # Ok(())
//! # }
//! ```
//!
//! Each session is one row: its key, its data as JSON text, its creation and expiry times as
//! milliseconds since the Unix epoch. Every hook is one statement, so the rules of the store
//! contract hold in the database itself:
//!
//! - an insert is an upsert whose update applies only to an expired row, so it never
//!   overwrites a live session (R8);
//! - an update and a touch only match a live row, so they never recreate a destroyed one (R9);
//! - an update patches the stored JSON with `json_set` and `json_remove`, changing only the keys
//!   the request changed, so two requests that change different keys both keep their change.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row};

use crate::store::sql::{self, Delta};
use crate::store::{Changes, Record, SessionStore, StoreError};

/// A [`SessionStore`] in a SQLite database. See the [module docs](self).
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    table: Arc<str>,
    cleanup_batch: u32,
    queries: Arc<Queries>,
}

/// The statements of one table, built once.
struct Queries {
    create_table: Arc<str>,
    create_index: Arc<str>,
    read: Arc<str>,
    insert: Arc<str>,
    replace: Arc<str>,
    touch: Arc<str>,
    destroy: Arc<str>,
    cleanup: Arc<str>,
    /// The start of a delta update, up to `data = `.
    patch_prefix: String,
}

impl Queries {
    fn new(table: &str) -> Result<Self, StoreError> {
        let t = sql::quote_table(table, false)?;
        let index = sql::quote_table(&format!("{table}_expires_ms"), false)
            .map_err(|_| StoreError::backend(format!("table name {table:?} is too long")))?;
        Ok(Self {
            create_table: format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 key TEXT PRIMARY KEY NOT NULL, \
                 data TEXT NOT NULL, \
                 created_ms INTEGER NOT NULL, \
                 expires_ms INTEGER NOT NULL) WITHOUT ROWID"
            )
            .into(),
            create_index: format!("CREATE INDEX IF NOT EXISTS {index} ON {t} (expires_ms)").into(),
            read: format!(
                "SELECT data, created_ms, expires_ms FROM {t} WHERE key = ?1 AND expires_ms > ?2"
            )
            .into(),
            insert: format!(
                "INSERT INTO {t} (key, data, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (key) DO UPDATE SET data = excluded.data, \
                 created_ms = excluded.created_ms, expires_ms = excluded.expires_ms \
                 WHERE {t}.expires_ms <= ?5"
            )
            .into(),
            replace: format!(
                "UPDATE {t} SET data = ?3, expires_ms = ?4 WHERE key = ?1 AND expires_ms > ?2"
            )
            .into(),
            touch: format!("UPDATE {t} SET expires_ms = ?3 WHERE key = ?1 AND expires_ms > ?2")
                .into(),
            destroy: format!("DELETE FROM {t} WHERE key = ?1").into(),
            cleanup: format!(
                "DELETE FROM {t} WHERE key IN \
                 (SELECT key FROM {t} WHERE expires_ms <= ?1 LIMIT ?2)"
            )
            .into(),
            patch_prefix: format!("UPDATE {t} SET expires_ms = ?3, data = "),
        })
    }

    /// `UPDATE … SET data = json_set(json_remove(data, ?, …), ?, json(?), …) WHERE …` for
    /// `removed` keys removed and `set` keys set; parameters 1 to 3 are the key, now and the
    /// new expiry, then the removed keys' paths, then each set key's path and value.
    fn patch(&self, removed: usize, set: usize) -> String {
        let mut sql = String::with_capacity(self.patch_prefix.len() + 64 + 16 * (removed + set));
        sql.push_str(&self.patch_prefix);
        let mut expr = String::from("data");
        let mut param = 3;
        let mut next = || {
            param += 1;
            param
        };
        if removed > 0 {
            expr = format!("json_remove({expr}");
            for _ in 0..removed {
                expr.push_str(&format!(", ?{}", next()));
            }
            expr.push(')');
        }
        if set > 0 {
            expr = format!("json_set({expr}");
            for _ in 0..set {
                let path = next();
                let value = next();
                expr.push_str(&format!(", ?{path}, json(?{value})"));
            }
            expr.push(')');
        }
        sql.push_str(&expr);
        sql.push_str(" WHERE key = ?1 AND expires_ms > ?2");
        sql
    }
}

/// The JSON path of a top-level key: `$."…"`, with the key escaped as a JSON string, which
/// SQLite's path syntax accepts for any key (dots, quotes and backslashes included).
fn path(key: &str) -> Result<String, StoreError> {
    let quoted = serde_json::to_string(key).map_err(StoreError::backend)?;
    Ok(format!("$.{quoted}"))
}

/// SQLite's busy and locked codes (and their extended forms) mean "try again later".
fn unavailable_code(code: &str) -> bool {
    code.parse::<i32>()
        .is_ok_and(|code| matches!(code & 0xff, 5 | 6))
}

fn error(error: sqlx::Error) -> StoreError {
    sql::error(error, unavailable_code)
}

impl SqliteStore {
    /// Opens (creating it if missing) the database at `url`: `sqlite://PATH`, `sqlite:PATH` or
    /// a plain path. The file is put in WAL mode with a 5 s busy time-out, and read and written
    /// through a pool of 4 connections (not pinged before use: the database is in this
    /// process). Call [`migrate`](Self::migrate) before first use.
    ///
    /// `sqlite::memory:` (or `:memory:`) opens one in-memory database shared by the pool and
    /// kept for as long as the store: for tests, as it keeps nothing across restarts.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] for a malformed URL or option; [`StoreError::Unavailable`] when
    /// the database cannot be reached.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let in_memory =
            url == ":memory:" || url.contains(":memory:") || url.contains("mode=memory");
        let options = if in_memory {
            SqliteConnectOptions::from_str("sqlite::memory:").map_err(error)?
        } else if url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url).map_err(error)?
        } else {
            SqliteConnectOptions::new().filename(url)
        };
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let mut pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false);
        if in_memory {
            // The database lives while one connection to it is open: keep one for ever.
            pool = pool
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = pool.connect_with(options).await.map_err(error)?;
        Ok(Self::new(pool))
    }

    /// A store on an existing pool, using the table `sessions`.
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            table: sql::DEFAULT_TABLE.into(),
            cleanup_batch: sql::DEFAULT_CLEANUP_BATCH,
            queries: Arc::new(
                Queries::new(sql::DEFAULT_TABLE).expect("the default table name is valid"),
            ),
        }
    }

    /// Uses the table `name` (default `sessions`): 1 to 52 characters of `[A-Za-z0-9_]` (the index
    /// name adds 11), not starting with a digit.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] naming the rule, for any other name.
    pub fn with_table_name(mut self, name: &str) -> Result<Self, StoreError> {
        self.queries = Arc::new(Queries::new(name)?);
        self.table = name.into();
        Ok(self)
    }

    /// How many expired rows each `DELETE` of [`cleanup`](SessionStore::cleanup) removes at
    /// most (default 1000), so that a large clean-up never holds the write lock for long.
    /// `0` counts as 1.
    #[must_use]
    pub fn with_cleanup_batch(mut self, rows: u32) -> Self {
        self.cleanup_batch = rows.max(1);
        self
    }

    /// Creates the table and its expiry index if they do not exist. Safe to run at every
    /// start, from several processes at once.
    ///
    /// # Errors
    ///
    /// The database's error, as [`StoreError::Unavailable`] when it cannot be reached.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(error)?;
        for statement in [&self.queries.create_table, &self.queries.create_index] {
            sqlx::query(AssertSqlSafe(Arc::clone(statement)))
                .execute(&mut *tx)
                .await
                .map_err(error)?;
        }
        tx.commit().await.map_err(error)
    }

    /// The connection pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The table's name.
    pub fn table_name(&self) -> &str {
        &self.table
    }

    async fn update(
        &self,
        key: &str,
        record: &Record,
        changes: &Changes,
    ) -> Result<u64, StoreError> {
        let now = sql::millis(SystemTime::now());
        let expires = sql::millis(record.expires_at);
        let result = if changes.is_replace() {
            sqlx::query(AssertSqlSafe(Arc::clone(&self.queries.replace)))
                .bind(key)
                .bind(now)
                .bind(sql::encode(&record.data)?)
                .bind(expires)
                .execute(&self.pool)
                .await
        } else {
            let delta = Delta::new(changes, &record.data)?;
            let statement = self.queries.patch(delta.removed.len(), delta.set.len());
            let mut query = sqlx::query(AssertSqlSafe(statement))
                .bind(key)
                .bind(now)
                .bind(expires);
            for removed in &delta.removed {
                query = query.bind(path(removed)?);
            }
            for (set, value) in delta.set {
                query = query.bind(path(&set)?).bind(value);
            }
            query.execute(&self.pool).await
        };
        Ok(result.map_err(error)?.rows_affected())
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("table", &self.table)
            .field("cleanup_batch", &self.cleanup_batch)
            .finish_non_exhaustive()
    }
}

sql::hooks!(SqliteStore, error);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_statement_numbers_its_parameters_in_order() {
        let queries = Queries::new("s").unwrap();
        assert_eq!(
            queries.patch(2, 1),
            "UPDATE \"s\" SET expires_ms = ?3, data = \
             json_set(json_remove(data, ?4, ?5), ?6, json(?7)) \
             WHERE key = ?1 AND expires_ms > ?2"
        );
        assert!(queries.patch(0, 0).contains("data = data WHERE"));
    }

    #[test]
    fn paths_escape_the_key_as_a_json_string() {
        assert_eq!(path("a").unwrap(), "$.\"a\"");
        assert_eq!(path("a.\"b\\").unwrap(), "$.\"a.\\\"b\\\\\"");
    }

    #[test]
    fn busy_and_locked_are_unavailable() {
        assert!(unavailable_code("5"));
        assert!(unavailable_code("517"));
        assert!(unavailable_code("6"));
        assert!(!unavailable_code("19"));
        assert!(!unavailable_code("2067"));
    }
}
