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
//!   overwrites a live session;
//! - an update and a touch only match a live row, so they never recreate a destroyed one, and
//!   a touch only matches the expiry its request read;
//! - an update patches the stored `jsonb` (`data - removed_keys || set_values`), and a
//!   concurrent update of the same row re-applies its patch to the row the other one left, so
//!   two requests that change different keys both keep their change.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};

use crate::store::sql::{self, Migration, MigrationStep, Statements, Update, sql_store};
use crate::store::{
    Changes, Record, RecordSummary, SessionStore, StoreError, StoreFuture, StoreKey, Touched,
    WriteMode,
};

/// How long a statement may run, and wait for a lock, on the connections of
/// [`PostgresStore::connect`] (unless the URL says otherwise).
const STATEMENT_TIMEOUT: &str = "5s";

/// A [`SessionStore`] in a PostgreSQL table. See the [module docs](self).
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    table: Arc<str>,
    cleanup_batch: u32,
    cleanup_budget: Duration,
    /// The last key the clean-up looked at; empty before the first, and after the last.
    cleanup_after: Arc<Mutex<String>>,
    queries: Arc<Queries>,
}

/// The statements of one table, built once.
struct Queries {
    statements: Statements,
    /// (key, now, data, expires).
    replace: Arc<str>,
    /// (key, now, removed keys, set object, expires).
    patch: Arc<str>,
}

/// The `timestamptz` for parameter `n`, given as integer milliseconds since the epoch (the
/// product is computed in `float8`, exact for any time before the year 285,000).
fn at(n: u8) -> String {
    format!("('epoch'::timestamptz + ${n}::int8 * interval '1 millisecond')")
}

/// Whether the schema of the table `t` (quoted) holds an index named `index`: a read of the
/// catalog, false while there is no such table. The names are checked: they hold no quote.
fn in_schema_of(t: &str, index: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM pg_class WHERE relname = '{index}' AND relkind IN ('i', 'I') \
         AND relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = to_regclass('{t}')))"
    )
}

/// A `timestamptz` column as integer milliseconds since the epoch.
fn millis_of(column: &str) -> String {
    format!("round(extract(epoch FROM {column}) * 1000)::int8")
}

impl Queries {
    fn new(table: &str) -> Result<Self, StoreError> {
        let t = sql::quote_table(table, true)?;
        let bare = table.rsplit('.').next().unwrap_or(table);
        // The name is checked above; an index takes it with a suffix, within the 63 bytes a
        // PostgreSQL name may have, and lives in the table's schema.
        let user_index = format!("\"{bare}_user\"");
        let live = format!("key = $1 AND expires_at > {}", at(2));
        Ok(Self {
            statements: Statements {
                migration: Migration {
                    begin: "BEGIN",
                    // Two instances migrating at once wait for each other. The name is checked
                    // above: it holds no quote.
                    lock: Some(
                        format!(
                            "SELECT pg_advisory_xact_lock(hashtext('session-engine migrate {t}'))"
                        )
                        .into(),
                    ),
                    steps: [
                        MigrationStep::new(
                            format!("SELECT to_regclass('{t}') IS NOT NULL"),
                            format!(
                                "CREATE TABLE IF NOT EXISTS {t} (\
                                 key TEXT PRIMARY KEY, \
                                 data JSONB NOT NULL, \
                                 created_at TIMESTAMPTZ NOT NULL, \
                                 expires_at TIMESTAMPTZ NOT NULL)"
                            ),
                        ),
                        // Made by earlier versions, in the table's schema, which the search
                        // path may not name first; the clean-up no longer needs it.
                        MigrationStep::new(
                            format!("SELECT NOT {}", in_schema_of(&t, &format!("{bare}_expires_at"))),
                            format!(
                                "DO $$ DECLARE s text; BEGIN \
                                 SELECT n.nspname INTO s FROM pg_class c \
                                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                                 WHERE c.oid = to_regclass('{t}'); \
                                 IF s IS NOT NULL THEN \
                                 EXECUTE format('DROP INDEX IF EXISTS %I.%I', s, '{bare}_expires_at'); \
                                 END IF; END $$"
                            ),
                        ),
                        MigrationStep::new(
                            format!("SELECT {}", in_schema_of(&t, &format!("{bare}_user"))),
                            format!(
                                "CREATE INDEX IF NOT EXISTS {user_index} ON {t} \
                                 ((data->>'__user')) WHERE data ? '__user'"
                            ),
                        ),
                    ]
                    .into(),
                },
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
                touch: format!(
                    "UPDATE {t} SET expires_at = {} WHERE {live} AND expires_at = {}",
                    at(3),
                    at(4)
                )
                .into(),
                live: format!("SELECT 1 FROM {t} WHERE {live}").into(),
                destroy: format!(
                    "DELETE FROM {t} WHERE key = $1 RETURNING expires_at > {}",
                    at(2)
                )
                .into(),
                cleanup_end: format!(
                    "SELECT max(key) FROM \
                     (SELECT key FROM {t} WHERE key > $1 ORDER BY key LIMIT $2) AS batch"
                )
                .into(),
                cleanup: format!(
                    "DELETE FROM {t} WHERE key > $1 AND key <= $2 AND expires_at <= {}",
                    at(3)
                )
                .into(),
                user_sessions: format!(
                    "SELECT key, data::text, {}, {} FROM {t} \
                     WHERE data ? '__user' AND data->>'__user' = $1 AND expires_at > {}",
                    millis_of("created_at"),
                    millis_of("expires_at"),
                    at(2)
                )
                .into(),
            },
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
        })
    }
}

/// "Try again later" in PostgreSQL's codes: connection exceptions (class 08), insufficient
/// resources such as too many connections (class 53), a cancelled or timed-out statement
/// (57014), a lock not granted in time (55P03), a server shutting down or starting up (57P01
/// to 57P03), and a serialization failure or deadlock (40001, 40P01).
fn unavailable_code(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "57014" | "55P03" | "57P01" | "57P02" | "57P03" | "40001" | "40P01"
        )
}

fn error(error: sqlx::Error) -> StoreError {
    sql::error(error, unavailable_code)
}

/// The keys set, with their values, as one JSON object.
fn set_object(set: &[(String, String)]) -> String {
    let mut object = String::from("{");
    for (i, (key, value)) in set.iter().enumerate() {
        if i > 0 {
            object.push(',');
        }
        object.push_str(&serde_json::to_string(key).expect("a string serializes"));
        object.push(':');
        object.push_str(value);
    }
    object.push('}');
    object
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`) with a pool of up to
    /// 16 connections and a 5 s time-out to get one. Call [`migrate`](Self::migrate) before
    /// first use.
    ///
    /// Each connection runs with a `statement_timeout` and a `lock_timeout` of 5 s (unless the
    /// URL sets them, as in `?options=-c%20lock_timeout%3D2s`), so that a row lock held
    /// elsewhere fails the statement (answered 503) instead of holding a request and a
    /// connection.
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
        let mut options = PgConnectOptions::from_str(url).map_err(error)?;
        for setting in ["statement_timeout", "lock_timeout"] {
            let set = options.get_options().is_some_and(|o| o.contains(setting));
            if !set {
                options = options.options([(setting, STATEMENT_TIMEOUT)]);
            }
        }
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
            .connect_lazy_with(options);
        Ok(Self::new(pool))
    }

    /// Creates the table and its index of users if they do not exist, and drops the expiry
    /// index that earlier versions made (the clean-up no longer needs it; dropping it locks
    /// the table for a moment, once). Safe to run at every start, from several instances at
    /// once.
    ///
    /// It first reads the catalog (`pg_class`, in the table's own schema): on a current
    /// schema, that is all it does, so it takes no lock that would wait for the sessions'
    /// writes or hold them up, and sends no statement the server answers with a notice. Only
    /// what is missing is then made, in one transaction that holds an advisory lock named
    /// after the table.
    ///
    /// # Errors
    ///
    /// The database's error, as [`StoreError::Unavailable`] when it cannot be reached.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.run_migration().await
    }

    /// Replaces or patches the live row; returns how many rows changed (0: it is gone).
    async fn update(&self, key: &str, update: Update) -> Result<u64, StoreError> {
        let now = sql::millis(SystemTime::now());
        let result = match update {
            Update::Replace { data, expires } => {
                sqlx::query(AssertSqlSafe(Arc::clone(&self.queries.replace)))
                    .bind(key)
                    .bind(now)
                    .bind(data)
                    .bind(expires)
                    .execute(&self.pool)
                    .await
            }
            Update::Patch { delta, expires } => {
                let set = set_object(&delta.set);
                sqlx::query(AssertSqlSafe(Arc::clone(&self.queries.patch)))
                    .bind(key)
                    .bind(now)
                    .bind(delta.removed)
                    .bind(set)
                    .bind(expires)
                    .execute(&self.pool)
                    .await
            }
        };
        Ok(result.map_err(error)?.rows_affected())
    }
}

sql_store!(
    PostgresStore,
    PgPool,
    error,
    "1 to 52 characters of `[A-Za-z0-9_]`, not starting with a digit, optionally after a \
     schema and a dot (`auth.sessions`)"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_qualified_tables_keep_their_indexes_in_their_schema() {
        let queries = Queries::new("auth.sessions").unwrap();
        let steps = &queries.statements.migration.steps;
        assert!(
            steps[0]
                .done
                .contains("to_regclass('\"auth\".\"sessions\"')")
        );
        assert!(steps[0].run.contains("\"auth\".\"sessions\""));
        // Looked for and dropped where earlier versions made it: in the table's schema, never
        // another's.
        for (step, index) in [
            (&steps[1], "sessions_expires_at"),
            (&steps[2], "sessions_user"),
        ] {
            assert!(step.done.contains(&format!("relname = '{index}'")));
            assert!(
                step.done
                    .contains("oid = to_regclass('\"auth\".\"sessions\"')")
            );
        }
        assert!(
            steps[1]
                .run
                .contains("to_regclass('\"auth\".\"sessions\"')")
        );
        assert!(steps[1].run.contains("%I.%I', s, 'sessions_expires_at')"));
        assert!(
            steps[2]
                .run
                .starts_with("CREATE INDEX IF NOT EXISTS \"sessions_user\" ON \"auth\".")
        );
    }

    #[test]
    fn the_longest_table_name_gets_its_indexes() {
        let name = sql::longest_table_name();
        let migration = Queries::new(&name).unwrap().statements.migration;
        assert!(sql::names_user_index(&migration, &name));
    }

    #[test]
    fn the_keys_set_become_one_object() {
        let set = [
            ("a\"b".to_owned(), "1".to_owned()),
            ("c".to_owned(), "{}".to_owned()),
        ];
        assert_eq!(set_object(&set), r#"{"a\"b":1,"c":{}}"#);
        assert_eq!(set_object(&[]), "{}");
    }

    #[test]
    fn connection_and_shutdown_codes_are_unavailable() {
        for code in ["08006", "57P01", "53300", "57014", "55P03", "40P01"] {
            assert!(unavailable_code(code), "{code}");
        }
        assert!(!unavailable_code("23505"));
        assert!(!unavailable_code("42P01"));
    }
}
