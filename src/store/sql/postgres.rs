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
//! `timestamptz`, and three columns kept beside the data, in step with it by every insert and
//! update statement:
//!
//! - `user_name` (`text`): the user the session is tied to (the data's `__user`, when a
//!   string). Listing a user's sessions is one lookup of a partial index on it (`WHERE
//!   user_name IS NOT NULL`), and reads only the columns, never the data, however large;
//! - `duration_ms` (`bigint`): the session's own idle lifetime (`__cust_dur`), in ms;
//! - `login_ms` (`bigint`): its last login (`__login`), in ms since the Unix epoch.
//!
//! Every hook is one statement, so the rules of the store contract hold in the database
//! itself:
//!
//! - an insert is `INSERT … ON CONFLICT DO UPDATE … WHERE` the old row has expired, so it never
//!   overwrites a live session;
//! - an update and a touch only match a live row, so they never recreate a destroyed one, and
//!   a touch only matches the expiry its request read;
//! - an update patches the stored `jsonb` (`data - removed_keys || set_values`), and a
//!   concurrent update of the same row re-applies its patch to the row the other one left, so
//!   two requests that change different keys both keep their change;
//! - the same statement sets the columns of the reserved keys it changes, and computes the
//!   expiry from them as the update leaves them, and from the engine's rule (now, its
//!   duration, its `max_lifetime`): `min(now + duration, (login or creation) +
//!   max_lifetime)`, to the millisecond, as the engine computes it; it returns that expiry.
//!   So a slow request that changes one key never undoes the duration or the login another
//!   request stored meanwhile.
//!
//! The table is made with a fill factor of 80: each page keeps a fifth of its room for the
//! new versions of its rows. An update that changes no indexed column (the key, the user)
//! and finds room on its row's page is then a heap-only tuple (HOT) update, which writes no
//! index entry, and its dead version is pruned from the page without a vacuum. (Earlier
//! versions indexed an expression on `data`, which kept every update from being HOT.)
//!
//! `jsonb` and `text` cannot hold the character U+0000, which session data may. The store
//! escapes it in every string of the data (keys and values, at any depth) and in the user
//! name, as U+0001 `0`, and U+0001 itself as U+0001 `1`, and reverses that when it reads:
//! any key or value round-trips exactly. Only data that holds either character is rewritten
//! (a scan of its JSON text says so); other data is stored as it is, and other programs that
//! read the table see it unchanged.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};

use crate::store::sql::{
    self, Expiry, LOGIN_CEILING_MS, MAX_DURATION_MS, Migration, MigrationStep, Statements, Update,
    nul, sql_store,
};
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
    /// (key, now, data, the [`Expiry`] terms, user, duration, login) → the new expiry, in ms.
    replace: Arc<str>,
    /// (key, now, removed keys, set object, the [`Expiry`] terms, then for each of user,
    /// duration and login: whether the patch changes it, and its new value) → the new
    /// expiry, in ms.
    patch: Arc<str>,
}

/// The fill factor of the table: the room each page keeps for the new versions of its rows,
/// so that an update finds it on the row's own page and, changing no indexed column, is a
/// heap-only tuple (HOT) update, which writes no index entry.
const FILL_FACTOR: u8 = 80;

/// The `timestamptz` for parameter `n`, given as integer milliseconds since the epoch (the
/// product is computed in `float8`, exact for any time before the year 285,000).
fn at(n: u8) -> String {
    at_ms(&format!("${n}::int8"))
}

/// The `timestamptz` for an `int8` expression of milliseconds since the epoch.
fn at_ms(ms: &str) -> String {
    format!("('epoch'::timestamptz + ({ms}) * interval '1 millisecond')")
}

/// Whether the schema of the table `t` (quoted) holds an index named `index`: a read of the
/// catalog, false while there is no such table. The names are checked: they hold no quote.
fn in_schema_of(t: &str, index: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM pg_class WHERE relname = '{index}' AND relkind IN ('i', 'I') \
         AND relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = to_regclass('{t}')))"
    )
}

/// Drops the index `index` from the schema of the table `t`, which the search path may not
/// name first, if it is there.
fn drop_in_schema_of(t: &str, index: &str) -> String {
    format!(
        "DO $$ DECLARE s text; BEGIN \
         SELECT n.nspname INTO s FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.oid = to_regclass('{t}'); \
         IF s IS NOT NULL THEN \
         EXECUTE format('DROP INDEX IF EXISTS %I.%I', s, '{index}'); \
         END IF; END $$"
    )
}

/// A `timestamptz` column as integer milliseconds since the epoch.
fn millis_of(column: &str) -> String {
    format!("round(extract(epoch FROM {column}) * 1000)::int8")
}

/// The expiry of an update in integer milliseconds, from the [`Expiry`] terms in parameters
/// `first` to `first + 4` (fixed, now, default idle, max, created cap) and the record's
/// duration and login as the update leaves them (`duration`, `login`): see [`Expiry`].
/// `least` skips a NULL cap (no maximum).
fn expiry_ms(first: u8, duration: &str, login: &str) -> String {
    let [fixed, now, idle, max, created_cap] =
        [0, 1, 2, 3, 4].map(|i| format!("${}::int8", first + i));
    format!(
        "CASE WHEN {now} IS NULL THEN {fixed} ELSE least(\
         CASE WHEN {duration} IS NULL THEN {idle} \
         ELSE {now} + least({duration}, {MAX_DURATION_MS}) END, \
         CASE WHEN {max} IS NULL THEN NULL WHEN {login} IS NULL THEN {created_cap} \
         ELSE least({login}, {LOGIN_CEILING_MS}) + {max} END) END"
    )
}

/// The column a reserved integer of the data fills when it is what the store reads
/// ([`sql::Columns`]): a non-negative integer up to `u64::MAX`, capped at `i64::MAX`. Nested
/// `CASE`s, so that no cast sees anything but a number.
fn backfill_ms(key: &str) -> String {
    let number = format!("(data->>'{key}')::numeric");
    format!(
        "CASE WHEN jsonb_typeof(data->'{key}') = 'number' THEN \
         CASE WHEN {number} >= 0 AND scale({number}) = 0 \
         AND {number} <= 18446744073709551615 \
         THEN least({number}, 9223372036854775807)::int8 END END"
    )
}

impl Queries {
    fn new(table: &str) -> Result<Self, StoreError> {
        let t = sql::quote_table(table, true)?;
        let bare = table.rsplit('.').next().unwrap_or(table);
        // The name is checked above; an index takes it with a suffix, within the 63 bytes a
        // PostgreSQL name may have, and lives in the table's schema.
        let user_index = format!("{bare}_user_name");
        let old_user_index = format!("{bare}_user");
        let live = format!("key = $1 AND expires_at > {}", at(2));
        let returning = format!("RETURNING {}", millis_of("expires_at"));
        let columns = format!(
            "SELECT count(*) = 3 FROM pg_attribute WHERE attrelid = to_regclass('{t}') \
             AND attname IN ('user_name', 'duration_ms', 'login_ms') AND NOT attisdropped"
        );
        let patched = |changed: u8, value: &str, column: &str| {
            format!(
                "CASE WHEN ${changed}::bool THEN ${}::{value} ELSE {column} END",
                changed + 1
            )
        };
        let (user, duration, login) = (
            patched(10, "text", "user_name"),
            patched(12, "int8", "duration_ms"),
            patched(14, "int8", "login_ms"),
        );
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
                                 expires_at TIMESTAMPTZ NOT NULL, \
                                 user_name TEXT, \
                                 duration_ms BIGINT, \
                                 login_ms BIGINT) \
                                 WITH (fillfactor = {FILL_FACTOR})"
                            ),
                        ),
                        // Made by earlier versions, in the table's schema, which the search
                        // path may not name first; the clean-up no longer needs it.
                        MigrationStep::new(
                            format!(
                                "SELECT NOT {}",
                                in_schema_of(&t, &format!("{bare}_expires_at"))
                            ),
                            drop_in_schema_of(&t, &format!("{bare}_expires_at")),
                        ),
                        // The columns beside the data, added to a table of earlier versions
                        // and filled from the data of its rows in the same step (only rows
                        // that hold one of the keys are written).
                        MigrationStep::new(
                            columns,
                            format!(
                                "DO $$ BEGIN \
                                 ALTER TABLE {t} ADD COLUMN IF NOT EXISTS user_name TEXT, \
                                 ADD COLUMN IF NOT EXISTS duration_ms BIGINT, \
                                 ADD COLUMN IF NOT EXISTS login_ms BIGINT; \
                                 UPDATE {t} SET \
                                 user_name = CASE WHEN jsonb_typeof(data->'__user') = 'string' \
                                 THEN data->>'__user' END, \
                                 duration_ms = {}, login_ms = {} \
                                 WHERE data ?| ARRAY['__user', '__cust_dur', '__login']; \
                                 END $$",
                                backfill_ms("__cust_dur"),
                                backfill_ms("__login"),
                            ),
                        ),
                        // Room on each page for HOT updates; a fill factor set by hand stays.
                        MigrationStep::new(
                            format!(
                                "SELECT EXISTS (SELECT 1 FROM pg_class WHERE \
                                 oid = to_regclass('{t}') AND EXISTS (SELECT 1 FROM \
                                 unnest(reloptions) AS o WHERE o LIKE 'fillfactor=%'))"
                            ),
                            format!("ALTER TABLE {t} SET (fillfactor = {FILL_FACTOR})"),
                        ),
                        MigrationStep::new(
                            format!("SELECT {}", in_schema_of(&t, &user_index)),
                            format!(
                                "CREATE INDEX IF NOT EXISTS \"{user_index}\" ON {t} \
                                 (user_name) WHERE user_name IS NOT NULL"
                            ),
                        ),
                        // The index on the data's user, of earlier versions: an expression on
                        // `data`, which kept every update from being HOT.
                        MigrationStep::new(
                            format!("SELECT NOT {}", in_schema_of(&t, &old_user_index)),
                            drop_in_schema_of(&t, &old_user_index),
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
                    "INSERT INTO {t} AS s \
                     (key, data, created_at, expires_at, user_name, duration_ms, login_ms) \
                     VALUES ($1, $2::jsonb, {}, {}, $6::text, $7::int8, $8::int8) \
                     ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data, \
                     created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at, \
                     user_name = EXCLUDED.user_name, duration_ms = EXCLUDED.duration_ms, \
                     login_ms = EXCLUDED.login_ms \
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
                    "SELECT key, user_name, {}, {}, duration_ms, login_ms FROM {t} \
                     WHERE user_name = $1 AND expires_at > {}",
                    millis_of("created_at"),
                    millis_of("expires_at"),
                    at(2)
                )
                .into(),
            },
            replace: format!(
                "UPDATE {t} SET data = $3::jsonb, user_name = $9::text, \
                 duration_ms = $10::int8, login_ms = $11::int8, expires_at = {} \
                 WHERE {live} {returning}",
                at_ms(&expiry_ms(4, "$10::int8", "$11::int8")),
            )
            .into(),
            patch: format!(
                "UPDATE {t} SET data = (data - $3::text[]) || $4::jsonb, \
                 user_name = {user}, duration_ms = {duration}, login_ms = {login}, \
                 expires_at = {} WHERE {live} {returning}",
                at_ms(&expiry_ms(5, &duration, &login)),
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

pub(crate) fn error(error: sqlx::Error) -> StoreError {
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

    /// Creates the table and its index of users if they do not exist, and brings a table of
    /// earlier versions up to date: drops their expiry index (the clean-up no longer needs
    /// it), adds the user, duration and login columns and fills them from the data of the
    /// rows that hold those keys, indexes the user column and drops their index on the data's
    /// user, and sets the fill factor (unless one was set by hand). Safe to run at every
    /// start, from several instances at once.
    ///
    /// Bringing an earlier table up to date locks it while the rows that hold a user, a
    /// duration or a login are rewritten, once. Run it before instances of this version
    /// serve: an instance of an earlier version writing meanwhile leaves the columns behind
    /// its rows' data.
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

    /// Replaces or patches the live row; returns the expiry it now has, in ms (`None`: it is
    /// gone).
    async fn update(&self, key: &str, update: Update) -> Result<Option<i64>, StoreError> {
        let now = sql::millis(SystemTime::now());
        /// Binds the [`Expiry`] terms, in their order.
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
        let result = match update {
            Update::Replace {
                data,
                expiry,
                columns,
            } => {
                let mut query =
                    sqlx::query_scalar(AssertSqlSafe(Arc::clone(&self.queries.replace)))
                        .bind(key)
                        .bind(now)
                        .bind(nul::escape_json(data)?);
                for term in terms(expiry) {
                    query = query.bind(term);
                }
                query
                    .bind(columns.user.map(|user| nul::escape(&user).into_owned()))
                    .bind(columns.duration)
                    .bind(columns.login)
                    .fetch_optional(&self.pool)
                    .await
            }
            Update::Patch {
                delta,
                expiry,
                columns,
            } => {
                let removed: Vec<String> = delta
                    .removed
                    .iter()
                    .map(|key| nul::escape(key).into_owned())
                    .collect();
                let set = nul::escape_json(set_object(&delta.set))?;
                let mut query = sqlx::query_scalar(AssertSqlSafe(Arc::clone(&self.queries.patch)))
                    .bind(key)
                    .bind(now)
                    .bind(removed)
                    .bind(set);
                for term in terms(expiry) {
                    query = query.bind(term);
                }
                query
                    .bind(columns.user.is_some())
                    .bind(
                        columns
                            .user
                            .flatten()
                            .map(|user| nul::escape(&user).into_owned()),
                    )
                    .bind(columns.duration.is_some())
                    .bind(columns.duration.flatten())
                    .bind(columns.login.is_some())
                    .bind(columns.login.flatten())
                    .fetch_optional(&self.pool)
                    .await
            }
        };
        result.map_err(error)
    }

    /// The data as the `jsonb` column takes it: NUL escaped.
    fn encode_data(data: String) -> Result<String, StoreError> {
        nul::escape_json(data)
    }

    /// The data as the `jsonb` column gives it back, unescaped.
    fn decode_data(data: &str) -> Result<Map<String, Value>, StoreError> {
        nul::decode(data)
    }

    /// A user name as the user column holds it: NUL escaped.
    fn encode_user(user: &str) -> String {
        nul::escape(user).into_owned()
    }

    /// A user name from the user column, unescaped.
    fn decode_user(user: String) -> String {
        match nul::unescape(&user) {
            std::borrow::Cow::Borrowed(_) => user,
            std::borrow::Cow::Owned(plain) => plain,
        }
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
            (&steps[4], "sessions_user_name"),
            (&steps[5], "sessions_user"),
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
            steps[4]
                .run
                .starts_with("CREATE INDEX IF NOT EXISTS \"sessions_user_name\" ON \"auth\".")
        );
        assert!(steps[5].run.contains("%I.%I', s, 'sessions_user')"));
    }

    #[test]
    fn the_longest_table_name_gets_its_indexes() {
        let name = sql::longest_table_name();
        let migration = Queries::new(&name).unwrap().statements.migration;
        assert!(sql::names_user_index(&migration, &name));
    }

    #[test]
    fn users_the_listing_reads_the_columns_never_the_data() {
        let queries = Queries::new("s").unwrap();
        let listing = &queries.statements.user_sessions;
        assert!(
            listing.starts_with("SELECT key, user_name, round(extract(epoch FROM created_at)"),
            "{listing}"
        );
        assert!(!listing.contains("data"), "{listing}");
        assert!(listing.contains("WHERE user_name = $1 AND"), "{listing}");
    }

    #[test]
    fn updates_compute_their_expiry_and_return_it() {
        let queries = Queries::new("s").unwrap();
        for statement in [&queries.replace, &queries.patch] {
            assert!(statement.contains("expires_at = ('epoch'::timestamptz + (CASE WHEN"));
            assert!(
                statement.ends_with("RETURNING round(extract(epoch FROM expires_at) * 1000)::int8")
            );
        }
        assert!(
            queries
                .patch
                .contains("duration_ms = CASE WHEN $12::bool THEN $13::int8 ELSE duration_ms END")
        );
    }

    #[test]
    fn new_tables_keep_room_for_hot_updates() {
        let queries = Queries::new("s").unwrap();
        let steps = &queries.statements.migration.steps;
        assert!(steps[0].run.ends_with("WITH (fillfactor = 80)"));
        assert!(
            steps
                .iter()
                .any(|step| &*step.run == "ALTER TABLE \"s\" SET (fillfactor = 80)")
        );
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
