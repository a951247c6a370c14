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
//! milliseconds since the Unix epoch, and three columns kept beside the data, in step with it
//! by every insert and update statement:
//!
//! - `user_name`: the user the session is tied to (the data's `__user`, when a string).
//!   Listing a user's sessions is one lookup of a partial index on it, and reads only the
//!   columns, never the data, however large;
//! - `duration_ms`: the session's own idle lifetime (`__cust_dur`), in ms;
//! - `login_ms`: its last login (`__login`), in ms since the Unix epoch.
//!
//! Every hook is one statement (a large patch, one transaction), so the rules of the store
//! contract hold in the database itself:
//!
//! - an insert is an upsert whose update applies only to an expired row, so it never
//!   overwrites a live session;
//! - an update and a touch only match a live row, so they never recreate a destroyed one, and
//!   a touch only matches the expiry its request read;
//! - an update patches the stored JSON with `json_set` and `json_remove`, changing only the keys
//!   the request changed, so two requests that change different keys both keep their change.
//!   SQLite takes at most 1000 arguments per function, so a patch of many keys is applied in
//!   chunks, in one transaction: any number of keys is written;
//! - the same statement sets the columns of the reserved keys it changes, and computes the
//!   expiry from them as the update leaves them, and from the engine's rule (now, its
//!   duration, its `max_lifetime`): `min(now + duration, (login or creation) +
//!   max_lifetime)`, to the millisecond, as the engine computes it; it returns that expiry
//!   (`RETURNING`). So a slow request that changes one key never undoes the duration or the
//!   login another request stored meanwhile.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row};

use crate::store::sql::{
    self, Delta, Expiry, LOGIN_CEILING_MS, MAX_DURATION_MS, Migration, MigrationStep, Patched,
    Statements, Update, sql_store,
};
use crate::store::{
    Changes, Record, RecordSummary, SessionStore, StoreError, StoreFuture, StoreKey, Touched,
    WriteMode,
};

/// How many keys one `json_remove` or `json_set` call of a patch takes at most: well under
/// SQLite's limit of 1000 arguments per function (a key set takes two: path and value).
const CHUNK_KEYS: usize = 400;

/// A [`SessionStore`] in a SQLite database. See the [module docs](self).
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
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
    /// (key, now, data, the [`Expiry`] terms, user, duration, login) → the new expiry.
    replace: Arc<str>,
    /// The start of a patch, up to `data = `.
    patch_prefix: String,
}

/// The first parameter of a patch's removed keys and keys set: 1 and 2 are the key and now,
/// 3 to 7 the [`Expiry`] terms, 8 to 13 the user, duration and login, each as whether the
/// patch changes it and its new value.
const PATCH_KEYS_FROM: usize = 14;

/// The expiry of an update in integer milliseconds, from the [`Expiry`] terms in parameters
/// `first` to `first + 4` (fixed, now, default idle, max, created cap) and the record's
/// duration and login as the update leaves them (`duration`, `login`): see [`Expiry`].
fn expiry_ms(first: usize, duration: &str, login: &str) -> String {
    let [fixed, now, idle, max, created_cap] = [0, 1, 2, 3, 4].map(|i| format!("?{}", first + i));
    let idle = format!(
        "(CASE WHEN {duration} IS NULL THEN {idle} \
         ELSE {now} + min({duration}, {MAX_DURATION_MS}) END)"
    );
    format!(
        "CASE WHEN {now} IS NULL THEN {fixed} WHEN {max} IS NULL THEN {idle} \
         ELSE min({idle}, CASE WHEN {login} IS NULL THEN {created_cap} \
         ELSE min({login}, {LOGIN_CEILING_MS}) + {max} END) END"
    )
}

/// The column a reserved integer of the data fills when it is what the store reads
/// ([`sql::Columns`]): a non-negative integer. Nested `CASE`s, so that no JSON function sees
/// text that is not JSON.
fn backfill(key: &str, kind: &str, condition: &str) -> String {
    let value = format!("json_extract(data, '$.{key}')");
    let condition = condition.replace("{value}", &value);
    format!(
        "CASE WHEN json_valid(data) THEN CASE WHEN json_type(data, '$.{key}') = '{kind}' \
         {condition} THEN {value} END END"
    )
}

impl Queries {
    fn new(table: &str) -> Result<Self, StoreError> {
        let t = sql::quote_table(table, false)?;
        // The name is checked above; an index takes it with a suffix.
        let old_index = format!("{table}_expires_ms");
        let user_index = format!("{table}_user_name");
        let old_user_index = format!("{table}_user");
        let live = "key = ?1 AND expires_ms > ?2";
        let patched = |changed: usize, column: &str| {
            format!(
                "CASE WHEN ?{changed} THEN ?{} ELSE {column} END",
                changed + 1
            )
        };
        let (user, duration, login) = (
            patched(8, "user_name"),
            patched(10, "duration_ms"),
            patched(12, "login_ms"),
        );
        let any_key = ["__user", "__cust_dur", "__login"]
            .map(|key| format!("json_type(data, '$.{key}') IS NOT NULL"))
            .join(" OR ");
        Ok(Self {
            statements: Statements {
                migration: Migration {
                    // The write lock at once: two processes migrating at once wait for each
                    // other (up to the busy time-out), instead of both reading the schema in a
                    // deferred transaction and one failing to write after the other.
                    begin: "BEGIN IMMEDIATE",
                    lock: None,
                    steps: [
                        MigrationStep::new(
                            named("table", table),
                            format!(
                                "CREATE TABLE IF NOT EXISTS {t} (\
                                 key TEXT PRIMARY KEY NOT NULL, \
                                 data TEXT NOT NULL, \
                                 created_ms INTEGER NOT NULL, \
                                 expires_ms INTEGER NOT NULL, \
                                 user_name TEXT, \
                                 duration_ms INTEGER, \
                                 login_ms INTEGER) WITHOUT ROWID"
                            ),
                        ),
                        // Made by earlier versions; the clean-up no longer needs it.
                        MigrationStep::new(
                            format!("SELECT NOT ({})", named("index", &old_index)),
                            format!("DROP INDEX IF EXISTS \"{old_index}\""),
                        ),
                        // The columns beside the data, added to a table of earlier versions
                        // and filled from the data of its rows in the same step (only rows
                        // that hold one of the keys are written).
                        MigrationStep::new(
                            format!(
                                "SELECT count(*) = 3 FROM pragma_table_info('{table}') \
                                 WHERE name IN ('user_name', 'duration_ms', 'login_ms')"
                            ),
                            format!(
                                "ALTER TABLE {t} ADD COLUMN user_name TEXT; \
                                 ALTER TABLE {t} ADD COLUMN duration_ms INTEGER; \
                                 ALTER TABLE {t} ADD COLUMN login_ms INTEGER; \
                                 UPDATE {t} SET user_name = {}, duration_ms = {}, login_ms = {} \
                                 WHERE CASE WHEN json_valid(data) THEN {any_key} END",
                                backfill("__user", "text", ""),
                                backfill("__cust_dur", "integer", "AND {value} >= 0"),
                                backfill("__login", "integer", "AND {value} >= 0"),
                            ),
                        ),
                        MigrationStep::new(
                            named("index", &user_index),
                            format!(
                                "CREATE INDEX IF NOT EXISTS \"{user_index}\" ON {t} (user_name) \
                                 WHERE user_name IS NOT NULL"
                            ),
                        ),
                        // The index on the data's user, of earlier versions.
                        MigrationStep::new(
                            format!("SELECT NOT ({})", named("index", &old_user_index)),
                            format!("DROP INDEX IF EXISTS \"{old_user_index}\""),
                        ),
                    ]
                    .into(),
                },
                read: format!("SELECT data, created_ms, expires_ms FROM {t} WHERE {live}").into(),
                insert: format!(
                    "INSERT INTO {t} \
                     (key, data, created_ms, expires_ms, user_name, duration_ms, login_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?6, ?7, ?8) \
                     ON CONFLICT (key) DO UPDATE SET data = excluded.data, \
                     created_ms = excluded.created_ms, expires_ms = excluded.expires_ms, \
                     user_name = excluded.user_name, duration_ms = excluded.duration_ms, \
                     login_ms = excluded.login_ms \
                     WHERE {t}.expires_ms <= ?5"
                )
                .into(),
                touch: format!("UPDATE {t} SET expires_ms = ?3 WHERE {live} AND expires_ms = ?4")
                    .into(),
                live: format!("SELECT 1 FROM {t} WHERE {live}").into(),
                destroy: format!("DELETE FROM {t} WHERE key = ?1 RETURNING expires_ms > ?2").into(),
                cleanup_end: format!(
                    "SELECT max(key) FROM \
                     (SELECT key FROM {t} WHERE key > ?1 ORDER BY key LIMIT ?2)"
                )
                .into(),
                cleanup: format!(
                    "DELETE FROM {t} WHERE key > ?1 AND key <= ?2 AND expires_ms <= ?3"
                )
                .into(),
                user_sessions: format!(
                    "SELECT key, user_name, created_ms, expires_ms, duration_ms, login_ms \
                     FROM {t} WHERE user_name = ?1 AND expires_ms > ?2"
                )
                .into(),
            },
            replace: format!(
                "UPDATE {t} SET data = ?3, user_name = ?9, duration_ms = ?10, login_ms = ?11, \
                 expires_ms = {} WHERE {live} RETURNING expires_ms",
                expiry_ms(4, "?10", "?11")
            )
            .into(),
            patch_prefix: format!(
                "UPDATE {t} SET user_name = {user}, duration_ms = {duration}, \
                 login_ms = {login}, expires_ms = {}, data = ",
                expiry_ms(3, &duration, &login)
            ),
        })
    }

    /// `UPDATE … SET …, data = json_set(json_remove(data, ?, …), ?, json(?), …) WHERE …
    /// RETURNING expires_ms` for `removed` keys removed and `set` keys set; parameters 1 to 13
    /// are the key, now, the [`Expiry`] terms and the columns, then come the removed keys'
    /// paths, then each set key's path and value.
    fn patch(&self, removed: usize, set: usize) -> String {
        let mut sql = String::with_capacity(self.patch_prefix.len() + 64 + 16 * (removed + set));
        sql.push_str(&self.patch_prefix);
        let mut expr = String::from("data");
        let mut param = PATCH_KEYS_FROM - 1;
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
        sql.push_str(" WHERE key = ?1 AND expires_ms > ?2 RETURNING expires_ms");
        sql
    }
}

/// Whether the database has a `kind` (`table`, `index`) named `name`: a read of the schema
/// table, which waits for no writer. Names compare as SQLite compares them, ignoring ASCII
/// case; they are checked, and hold no quote.
fn named(kind: &str, name: &str) -> String {
    format!(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master \
         WHERE type = '{kind}' AND name = '{name}' COLLATE NOCASE)"
    )
}

/// The JSON path of a top-level key: `$."…"`, with the key escaped as a JSON string, which
/// SQLite's path syntax accepts for any key (dots, quotes and backslashes included).
fn path(key: &str) -> String {
    let quoted = serde_json::to_string(key).expect("a string serializes");
    format!("$.{quoted}")
}

/// A patch in chunks that each fit one statement: the removals first, then the keys set.
fn chunks(delta: Delta) -> Vec<Delta> {
    let mut chunks: Vec<Delta> = delta
        .removed
        .chunks(CHUNK_KEYS)
        .map(|removed| Delta {
            removed: removed.to_vec(),
            set: Vec::new(),
        })
        .collect();
    chunks.extend(delta.set.chunks(CHUNK_KEYS).map(|set| Delta {
        removed: Vec::new(),
        set: set.to_vec(),
    }));
    if chunks.is_empty() {
        // No key changed: the expiry still moves.
        chunks.push(Delta {
            removed: Vec::new(),
            set: Vec::new(),
        });
    }
    chunks
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
    /// `sqlite::memory:` (or `:memory:`) opens one in-memory database, on one connection that
    /// requests take turns on, kept for as long as the store: for tests, as it keeps nothing
    /// across restarts.
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
            // The database lives while one connection to it is open: keep one for ever, and
            // only one. Connections to a shared in-memory database lock each other's tables
            // and fail at once (SQLITE_LOCKED) rather than wait out the busy time-out, so two
            // requests writing at once would fail; one connection makes them take turns.
            pool = pool
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = pool.connect_with(options).await.map_err(error)?;
        Ok(Self::new(pool))
    }

    /// Creates the table and its index of users if they do not exist, and brings a table of
    /// earlier versions up to date: drops their expiry index (the clean-up no longer needs
    /// it), adds the user, duration and login columns and fills them from the data of the
    /// rows that hold those keys, indexes the user column and drops their index on the data's
    /// user. Safe to run at every start, from several processes at once.
    ///
    /// Bringing an earlier table up to date holds the write lock while the rows that hold a
    /// user, a duration or a login are rewritten, once.
    ///
    /// It first reads the schema (`sqlite_master`): on a current schema, that is all it does,
    /// so it never waits for the write lock that the sessions' writes take. Only what is
    /// missing is then made, in one `BEGIN IMMEDIATE` transaction.
    ///
    /// # Errors
    ///
    /// The database's error, as [`StoreError::Unavailable`] when it cannot be reached.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.run_migration().await
    }

    /// Replaces or patches the live row; returns the expiry it now has, in ms (`None`: it is
    /// gone).
    async fn update(&self, key: &str, update: Update) -> Result<Option<i64>, StoreError> {
        let now = sql::millis(SystemTime::now());
        let (delta, expiry, columns) = match update {
            Update::Replace {
                data,
                expiry,
                columns,
            } => {
                let mut query =
                    sqlx::query_scalar(AssertSqlSafe(Arc::clone(&self.queries.replace)))
                        .bind(key)
                        .bind(now)
                        .bind(data);
                for term in terms(expiry) {
                    query = query.bind(term);
                }
                return query
                    .bind(columns.user)
                    .bind(columns.duration)
                    .bind(columns.login)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(error);
            }
            Update::Patch {
                delta,
                expiry,
                columns,
            } => (delta, expiry, columns),
        };
        let mut chunks = chunks(delta);
        if chunks.len() == 1 {
            let chunk = chunks.pop().expect("one chunk");
            return self
                .patch(&self.pool, key, now, expiry, &columns, chunk)
                .await;
        }
        // Many keys: every chunk in one transaction, all or nothing; each sets the columns
        // and the expiry alike, and the last one's is the row's.
        let mut tx = self.pool.begin().await.map_err(error)?;
        let mut expires = None;
        for chunk in chunks {
            expires = self
                .patch(&mut *tx, key, now, expiry, &columns, chunk)
                .await?;
            if expires.is_none() {
                // Gone; dropping the transaction rolls it back.
                return Ok(None);
            }
        }
        tx.commit().await.map_err(error)?;
        Ok(expires)
    }

    async fn patch<'e>(
        &self,
        executor: impl sqlx::Executor<'e, Database = Sqlite>,
        key: &str,
        now: i64,
        expiry: Expiry,
        columns: &Patched,
        chunk: Delta,
    ) -> Result<Option<i64>, StoreError> {
        let statement = self.queries.patch(chunk.removed.len(), chunk.set.len());
        let mut query = sqlx::query_scalar(AssertSqlSafe(statement))
            .bind(key.to_owned())
            .bind(now);
        for term in terms(expiry) {
            query = query.bind(term);
        }
        query = query
            .bind(columns.user.is_some())
            .bind(columns.user.clone().flatten())
            .bind(columns.duration.is_some())
            .bind(columns.duration.flatten())
            .bind(columns.login.is_some())
            .bind(columns.login.flatten());
        for removed in &chunk.removed {
            query = query.bind(path(removed));
        }
        for (set, value) in chunk.set {
            query = query.bind(path(&set)).bind(value);
        }
        query.fetch_optional(executor).await.map_err(error)
    }

    /// The data as the column takes it: as it is.
    #[allow(clippy::unnecessary_wraps)]
    fn encode_data(data: String) -> Result<String, StoreError> {
        Ok(data)
    }

    /// The data from its column.
    fn decode_data(data: &str) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
        crate::store::decode_data(data.as_bytes())
    }

    /// A user name as the user column holds it: as it is.
    fn encode_user(user: &str) -> String {
        user.to_owned()
    }

    /// A user name from the user column.
    fn decode_user(user: String) -> String {
        user
    }
}

/// The [`Expiry`] terms, in the order of their parameters.
fn terms(expiry: Expiry) -> [Option<i64>; 5] {
    let rule = expiry.rule;
    [
        Some(expiry.fixed),
        rule.map(|rule| rule.now),
        rule.map(|rule| rule.default_idle),
        rule.and_then(|rule| rule.max),
        rule.and_then(|rule| rule.created_cap),
    ]
}

sql_store!(
    SqliteStore,
    SqlitePool,
    error,
    "1 to 52 characters of `[A-Za-z0-9_]`, not starting with a digit"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_statement_numbers_its_parameters_in_order() {
        let queries = Queries::new("s").unwrap();
        assert!(queries.patch(2, 1).ends_with(
            ", data = json_set(json_remove(data, ?14, ?15), ?16, json(?17)) \
             WHERE key = ?1 AND expires_ms > ?2 RETURNING expires_ms"
        ));
        assert!(queries.patch(0, 0).contains("data = data WHERE"));
    }

    #[test]
    fn a_large_patch_is_cut_into_chunks_that_fit_a_statement() {
        let delta = Delta {
            removed: (0..1_000).map(|i| i.to_string()).collect(),
            set: (0..900).map(|i| (i.to_string(), "1".to_owned())).collect(),
        };
        let sizes: Vec<(usize, usize)> = chunks(delta)
            .iter()
            .map(|c| (c.removed.len(), c.set.len()))
            .collect();
        assert_eq!(
            sizes,
            [(400, 0), (400, 0), (200, 0), (0, 400), (0, 400), (0, 100)]
        );
        let nothing = Delta {
            removed: Vec::new(),
            set: Vec::new(),
        };
        assert_eq!(chunks(nothing).len(), 1, "the expiry still moves");
    }

    #[test]
    fn users_the_listing_reads_the_columns_never_the_data() {
        let queries = Queries::new("s").unwrap();
        let listing = &queries.statements.user_sessions;
        assert!(
            listing.starts_with(
                "SELECT key, user_name, created_ms, expires_ms, duration_ms, login_ms FROM"
            ),
            "{listing}"
        );
        assert!(!listing.contains("data"), "{listing}");
    }

    #[test]
    fn paths_escape_the_key_as_a_json_string() {
        assert_eq!(path("a"), "$.\"a\"");
        assert_eq!(path("a.\"b\\"), "$.\"a.\\\"b\\\\\"");
    }

    #[test]
    fn the_longest_table_name_gets_its_indexes() {
        let name = sql::longest_table_name();
        let migration = Queries::new(&name).unwrap().statements.migration;
        assert!(sql::names_user_index(&migration, &name));
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
