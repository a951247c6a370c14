//! [`PostgresStore`]: sessions in a PostgreSQL table, shared by every instance of an app
//! (feature `postgres`).
//!
//! ```no_run
//! # async fn run() -> Result<(), session_engine::StoreError> {
//! use session_engine::SessionEngine;
//! use session_engine::store::postgres::PostgresStore;
//!
//! let store = PostgresStore::connect("postgres://app@127.0.0.1/app").await?;
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
//! Each session is one row: its key, its data as `jsonb`, its creation and expiry times as
//! `timestamptz`. Every hook is one statement, so the rules of the store contract hold in the
//! database itself:
//!
//! - an insert is `INSERT … ON CONFLICT DO UPDATE … WHERE` the old row has expired, so it never
//!   overwrites a live session (R8);
//! - an update and a touch only match a live row, so they never recreate a destroyed one (R9);
//! - an update patches the stored `jsonb` (`data - removed_keys || set_values`), and a
//!   concurrent update of the same row re-applies its patch to the row the other one left, so
//!   two requests that change different keys both keep their change.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};

use crate::store::sql::{self, Delta};
use crate::store::{Changes, Record, SessionStore, StoreError};

/// A [`SessionStore`] in a PostgreSQL table. See the [module docs](self).
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
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
    patch: Arc<str>,
    touch: Arc<str>,
    destroy: Arc<str>,
    cleanup: Arc<str>,
}

/// The `timestamptz` for parameter `n`, given as integer milliseconds since the epoch (the
/// product is computed in `float8`, exact for any time before the year 285,000).
fn at(n: u8) -> String {
    format!("('epoch'::timestamptz + ${n}::int8 * interval '1 millisecond')")
}

/// A `timestamptz` column as integer milliseconds since the epoch.
fn millis_of(column: &str) -> String {
    format!("round(extract(epoch FROM {column}) * 1000)::int8")
}

impl Queries {
    fn new(table: &str) -> Result<Self, StoreError> {
        let t = sql::quote_table(table, true)?;
        let bare = table.rsplit('.').next().unwrap_or(table);
        let index = sql::quote_table(&format!("{bare}_expires_at"), false)
            .map_err(|_| StoreError::backend(format!("table name {table:?} is too long")))?;
        let live = format!("key = $1 AND expires_at > {}", at(2));
        Ok(Self {
            create_table: format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 key TEXT PRIMARY KEY, \
                 data JSONB NOT NULL, \
                 created_at TIMESTAMPTZ NOT NULL, \
                 expires_at TIMESTAMPTZ NOT NULL)"
            )
            .into(),
            create_index: format!("CREATE INDEX IF NOT EXISTS {index} ON {t} (expires_at)").into(),
            read: format!(
                "SELECT data::text, {}, {} FROM {t} WHERE {live}",
                millis_of("created_at"),
                millis_of("expires_at"),
            )
            .into(),
            insert: format!(
                "INSERT INTO {t} AS s (key, data, created_at, expires_at) \
                 VALUES ($1, $2::jsonb, {}, {}) \
                 ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data, \
                 created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at \
                 WHERE s.expires_at <= {}",
                at(3),
                at(4),
                at(5),
            )
            .into(),
            replace: format!(
                "UPDATE {t} SET data = $3::jsonb, expires_at = {} WHERE {live}",
                at(4)
            )
            .into(),
            patch: format!(
                "UPDATE {t} SET data = (data - $3::text[]) || $4::jsonb, expires_at = {} \
                 WHERE {live}",
                at(5)
            )
            .into(),
            touch: format!("UPDATE {t} SET expires_at = {} WHERE {live}", at(3)).into(),
            destroy: format!("DELETE FROM {t} WHERE key = $1").into(),
            cleanup: format!(
                "DELETE FROM {t} WHERE key IN (SELECT key FROM {t} WHERE expires_at <= {} \
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
                at(1)
            )
            .into(),
        })
    }
}

/// "Try again later" in PostgreSQL's codes: connection exceptions (class 08), insufficient
/// resources such as too many connections (class 53), a cancelled or timed-out statement
/// (57014), a server shutting down or starting up (57P01 to 57P03), and a serialization
/// failure or deadlock (40001, 40P01).
fn unavailable_code(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "57014" | "57P01" | "57P02" | "57P03" | "40001" | "40P01"
        )
}

fn error(error: sqlx::Error) -> StoreError {
    sql::error(error, unavailable_code)
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`) with a pool of up to
    /// 16 connections and a 5 s time-out to get one. Call [`migrate`](Self::migrate) before
    /// first use.
    ///
    /// The pool connects lazily: a server that is down now is not an error here, only later,
    /// for the hooks that need it (answered 503), until it is back. A connection that sat idle
    /// for more than a second is checked with a ping before use; a busy one is not, which
    /// saves a round trip per hook (a connection that turns out broken fails its one query and
    /// is dropped from the pool).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] for a malformed URL.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .before_acquire(|connection, meta| {
                Box::pin(async move {
                    if meta.idle_for > Duration::from_secs(1) {
                        sqlx::Connection::ping(connection).await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy(url)
            .map_err(error)?;
        Ok(Self::new(pool))
    }

    /// A store on an existing pool, using the table `sessions`.
    pub fn new(pool: PgPool) -> Self {
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
    /// name adds 11), not starting with a digit, optionally after a schema and a dot (`auth.sessions`).
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
    /// most (default 1000), so that a large clean-up never locks many rows at once. `0` counts
    /// as 1.
    #[must_use]
    pub fn with_cleanup_batch(mut self, rows: u32) -> Self {
        self.cleanup_batch = rows.max(1);
        self
    }

    /// Creates the table and its expiry index if they do not exist. Safe to run at every
    /// start, from several instances at once: it holds a transaction-scoped advisory lock
    /// named after the table while it works.
    ///
    /// # Errors
    ///
    /// The database's error, as [`StoreError::Unavailable`] when it cannot be reached.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(error)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("session-engine migrate {}", self.table))
            .execute(&mut *tx)
            .await
            .map_err(error)?;
        for statement in [&self.queries.create_table, &self.queries.create_index] {
            sqlx::query(AssertSqlSafe(Arc::clone(statement)))
                .execute(&mut *tx)
                .await
                .map_err(error)?;
        }
        tx.commit().await.map_err(error)
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The table's name, as given.
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
            let set = delta.set_object()?;
            sqlx::query(AssertSqlSafe(Arc::clone(&self.queries.patch)))
                .bind(key)
                .bind(now)
                .bind(delta.removed)
                .bind(set)
                .bind(expires)
                .execute(&self.pool)
                .await
        };
        Ok(result.map_err(error)?.rows_affected())
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.table)
            .field("cleanup_batch", &self.cleanup_batch)
            .finish_non_exhaustive()
    }
}

sql::hooks!(PostgresStore, error);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_qualified_tables_name_their_index_without_the_schema() {
        let queries = Queries::new("auth.sessions").unwrap();
        assert!(queries.create_table.contains("\"auth\".\"sessions\""));
        assert!(
            queries
                .create_index
                .starts_with("CREATE INDEX IF NOT EXISTS \"sessions_expires_at\" ON \"auth\".")
        );
    }

    #[test]
    fn connection_and_shutdown_codes_are_unavailable() {
        assert!(unavailable_code("08006"));
        assert!(unavailable_code("57P01"));
        assert!(unavailable_code("53300"));
        assert!(unavailable_code("57014"));
        assert!(unavailable_code("40P01"));
        assert!(!unavailable_code("23505"));
        assert!(!unavailable_code("42P01"));
    }
}
