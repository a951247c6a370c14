//! What the SQLite and PostgreSQL stores share: table names, times as integers, error mapping,
//! the writes prepared for the database, and one copy of the constructors, the getters and the
//! hooks ([`sql_store!`]), compiled for each driver.

#[cfg(feature = "postgres")]
pub(crate) mod nul;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use crate::lifetime::{MAX_DURATION, expiry};
use crate::store::{
    Changes, DURATION_KEY, ExpiryRule, LOGIN_KEY, Record, StoreError, USER_KEY, WriteMode,
    encode_data, to_ms, user_of,
};

/// The default table name of both SQL stores.
pub(crate) const DEFAULT_TABLE: &str = "sessions";

/// How many rows one batch of `cleanup()` looks at.
pub(crate) const DEFAULT_CLEANUP_BATCH: u32 = 1000;

/// How long one `cleanup()` call goes on starting batches: well under the engine's default
/// `store_timeout` (5 s), so that a call ends by itself, with the batch under way, before the
/// engine's deadline would cut it off and report the store unavailable.
pub(crate) const DEFAULT_CLEANUP_BUDGET: Duration = Duration::from_secs(2);

/// Checks a table name and returns it quoted for SQL.
///
/// A name is 1 to 52 characters of `[A-Za-z0-9_]` (the index name adds 11 to the 63 a name
/// may have), not starting with a digit; with `allow_schema`, one `schema.` part may precede
/// it. Anything else is refused, so a name can never smuggle SQL into the statements it is
/// pasted into.
pub(crate) fn quote_table(name: &str, allow_schema: bool) -> Result<String, StoreError> {
    let parts: Vec<&str> = name.split('.').collect();
    let valid = |part: &str, longest: usize| {
        (1..=longest).contains(&part.len())
            && !part.as_bytes()[0].is_ascii_digit()
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    let table_ok = parts.last().is_some_and(|table| valid(table, 52));
    let schema_ok = match parts.len() {
        1 => true,
        2 => allow_schema && valid(parts[0], 63),
        _ => false,
    };
    if !table_ok || !schema_ok {
        return Err(StoreError::backend(format!(
            "invalid table name {name:?}: use letters, digits and `_`, at most 52 of them, not \
             starting with a digit{}",
            if allow_schema {
                ", optionally after one `schema.`"
            } else {
                ""
            }
        )));
    }
    Ok(parts
        .iter()
        .map(|part| format!("\"{part}\""))
        .collect::<Vec<_>>()
        .join("."))
}

/// The longest table name `quote_table` accepts, for the stores' tests.
#[cfg(test)]
pub(crate) fn longest_table_name() -> String {
    "t".repeat(52)
}

/// Whether a migration creates the index of users of `table`, for the stores' tests.
#[cfg(test)]
pub(crate) fn names_user_index(migration: &Migration, table: &str) -> bool {
    let index = format!("\"{table}_user_name\"");
    migration
        .steps
        .iter()
        .any(|step| step.run.contains(&index) && step.done.contains(&format!("{table}_user_name")))
}

/// A time as integer milliseconds since the Unix epoch, as the SQL stores bind it.
pub(crate) fn millis(time: SystemTime) -> i64 {
    i64::try_from(to_ms(time)).unwrap_or(i64::MAX)
}

/// A duration kept as integer milliseconds; negative values (never written by this crate)
/// count as 0.
pub(crate) fn duration_of_millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The inverse of [`millis`]; negative values (never written by this crate) count as 0.
pub(crate) fn from_millis(ms: i64) -> Result<SystemTime, StoreError> {
    crate::store::from_ms(u64::try_from(ms).unwrap_or(0))
}

/// A record from the columns of its row: the data as JSON text, read by `decode` (the store's
/// own), and the creation and the expiry in milliseconds (see [`from_millis`]).
pub(crate) fn record_from_row(
    data: &str,
    created: i64,
    expires: i64,
    decode: impl FnOnce(&str) -> Result<Map<String, Value>, StoreError>,
) -> Result<Record, StoreError> {
    Ok(Record::new(
        decode(data)?,
        from_millis(created)?,
        from_millis(expires)?,
    ))
}

/// What `migrate` does: steps, each checked with a plain read of the database's catalog and
/// run only when it is missing, so that a schema that is current takes no lock at all.
pub(crate) struct Migration {
    /// How the transaction that runs the missing steps begins.
    pub(crate) begin: &'static str,
    /// What runs first in that transaction, if anything: whatever keeps two migrations from
    /// racing.
    pub(crate) lock: Option<Arc<str>>,
    /// The steps, in order: each may count on the ones before it.
    pub(crate) steps: Box<[MigrationStep]>,
}

/// One step of a [`Migration`]: a change to the schema, and how to tell it is made.
pub(crate) struct MigrationStep {
    /// → one boolean, true when the schema already has what `run` makes: a plain read of the
    /// catalog, which waits for no lock on the table.
    pub(crate) done: Arc<str>,
    /// The statement that makes it.
    pub(crate) run: Arc<str>,
}

impl MigrationStep {
    pub(crate) fn new(done: String, run: String) -> Self {
        Self {
            done: done.into(),
            run: run.into(),
        }
    }
}

/// The statements both stores run, their parameters in the same order for both databases.
pub(crate) struct Statements {
    /// The table and its index of users, and the removal of what earlier versions made.
    /// There is no index on the expiry: every write and touch moves it, and would pay for
    /// such an index, where the clean-up walks the table in key order instead.
    pub(crate) migration: Migration,
    /// (key, now) → (data as text, created ms, expires ms) of the live row.
    pub(crate) read: Arc<str>,
    /// (key, data, created, expires, now, user, duration, login): a row, or the expired row
    /// under the key replaced.
    pub(crate) insert: Arc<str>,
    /// (key, now, to, from): moves the expiry of the live row that still has `from`.
    pub(crate) touch: Arc<str>,
    /// (key, now) → a row when the key has a live row.
    pub(crate) live: Arc<str>,
    /// (key, now) → whether the removed row was live.
    pub(crate) destroy: Arc<str>,
    /// (after, limit) → the last key of the next `limit` rows after `after`, in key order
    /// (NULL when there are none): the end of a clean-up batch.
    pub(crate) cleanup_end: Arc<str>,
    /// (after, through, now): removes the expired rows with keys in `(after, through]`.
    pub(crate) cleanup: Arc<str>,
    /// (user, now) → (key, user, created ms, expires ms, duration ms, login ms) of each live
    /// row tied to `user`, from the columns beside the data, never the data itself: an index
    /// on the user column makes it one index lookup, and every write keeps the columns in
    /// step with the data in the same statement.
    pub(crate) user_sessions: Arc<str>,
}

/// A write turned into what the database is sent: owned, so that the hook's future borrows
/// nothing from the request.
pub(crate) enum Write {
    Insert {
        data: String,
        created: i64,
        expires: i64,
        columns: Columns,
    },
    Update(Update),
}

/// An update, as the database is sent it.
pub(crate) enum Update {
    /// The whole data, replaced.
    Replace {
        data: String,
        expiry: Expiry,
        columns: Columns,
    },
    /// Only the keys that changed.
    Patch {
        delta: Delta,
        expiry: Expiry,
        /// The columns of the reserved keys the patch sets or removes; `None` for the others,
        /// which keep their value.
        columns: Patched,
    },
}

/// What the columns beside the data hold, as the data calls for: the user the record is tied
/// to ([`USER_KEY`](crate::store::USER_KEY), when a string), its own idle lifetime
/// ([`DURATION_KEY`](crate::store::DURATION_KEY)) and its last login
/// ([`LOGIN_KEY`](crate::store::LOGIN_KEY)), in milliseconds, when non-negative integers
/// (beyond `i64::MAX`, which no clock reaches, kept as `i64::MAX`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Columns {
    pub(crate) user: Option<String>,
    pub(crate) duration: Option<i64>,
    pub(crate) login: Option<i64>,
}

impl Columns {
    pub(crate) fn of(data: &Map<String, Value>) -> Self {
        Self {
            user: user_of(data).map(str::to_owned),
            duration: data.get(DURATION_KEY).and_then(column_ms),
            login: data.get(LOGIN_KEY).and_then(column_ms),
        }
    }
}

/// A reserved integer as its column holds it: what [`custom_duration_of`] and [`login_of`]
/// read (a non-negative integer that fits a `u64`), capped at `i64::MAX`.
///
/// [`custom_duration_of`]: crate::store::custom_duration_of
/// [`login_of`]: crate::store::login_of
fn column_ms(value: &Value) -> Option<i64> {
    value
        .as_u64()
        .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX))
}

/// The columns a patch changes: `Some(value)` for a reserved key it sets or removes (a value
/// of `None`: the column is cleared), `None` for one it leaves alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Patched {
    pub(crate) user: Option<Option<String>>,
    pub(crate) duration: Option<Option<i64>>,
    pub(crate) login: Option<Option<i64>>,
}

impl Patched {
    fn new(changes: &Changes, data: &Map<String, Value>) -> Self {
        let touched = |key: &str| {
            changes.set_keys().any(|set| set == key)
                || changes.deleted_keys().any(|deleted| deleted == key)
        };
        let now = Columns::of(data);
        Self {
            user: touched(USER_KEY).then_some(now.user),
            duration: touched(DURATION_KEY).then_some(now.duration),
            login: touched(LOGIN_KEY).then_some(now.login),
        }
    }
}

/// What the expiry of an update is computed from, in the statement itself, from the columns
/// as the update leaves them, so that it follows the record as it stands after the patch,
/// whichever request set its duration or login ([`Record::expiry_after`]).
///
/// All times in integer milliseconds since the epoch, as [`crate::lifetime::expiry`] rounds
/// them: the expiry is `min(idle, cap)` where `idle` is `now + duration` (the record's own
/// duration, capped at [`MAX_DURATION`], else `default_idle`, the engine's) and `cap` is
/// `login + max` (the record's last login), else `created_cap`, or none without a maximum.
/// Every sum of an integer time and a duration is exact in milliseconds once the duration is
/// rounded down, and `created_cap` and `default_idle`, whose times may hold a fraction of a
/// millisecond, are rounded here as the engine rounds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Expiry {
    /// The record's `expires_at`: the expiry of an update without a rule.
    pub(crate) fixed: i64,
    /// The rule's terms; `None` without a rule.
    pub(crate) rule: Option<RuleTerms>,
}

/// The terms of an [`ExpiryRule`] for the statement (see [`Expiry`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RuleTerms {
    /// The rule's `now`, rounded down to the millisecond.
    pub(crate) now: i64,
    /// `now + duration` with the engine's duration, rounded as the engine rounds it.
    pub(crate) default_idle: i64,
    /// The absolute lifetime, capped at [`MAX_DURATION`], rounded down; `None` for none.
    pub(crate) max: Option<i64>,
    /// `created_at + max`, rounded as the engine rounds it; `None` without a maximum.
    pub(crate) created_cap: Option<i64>,
}

/// [`MAX_DURATION`] in milliseconds: the longest custom duration that counts.
pub(crate) const MAX_DURATION_MS: i64 = 3_153_600_000_000;

/// A login time the statements cap at before adding the absolute lifetime to it, so that the
/// sum cannot overflow: 2^62 ms is some 146 million years away, where any cap lies past every
/// idle expiry and so decides nothing.
pub(crate) const LOGIN_CEILING_MS: i64 = 1 << 62;

impl Expiry {
    pub(crate) fn new(record: &Record) -> Self {
        let fixed = millis(record.expires_at);
        let rule = record.rule.map(|rule: ExpiryRule| {
            let now = millis(rule.now);
            let max = rule
                .max_lifetime
                .map(|max| i64::try_from(max.min(MAX_DURATION).as_millis()).unwrap_or(i64::MAX));
            RuleTerms {
                now,
                default_idle: millis(expiry(rule.now, rule.now, rule.duration, None)),
                max,
                created_cap: rule
                    .max_lifetime
                    .map(|max| millis(expiry(record.created_at, record.created_at, max, None))),
            }
        });
        Self { fixed, rule }
    }

    /// The expiry as [`Record::expiry_after`] computes it, from the columns of the data
    /// after the update: what the statements compute, for the tests.
    #[cfg(test)]
    pub(crate) fn after(&self, duration: Option<i64>, login: Option<i64>) -> i64 {
        let Some(rule) = self.rule else {
            return self.fixed;
        };
        let idle = duration.map_or(rule.default_idle, |d| rule.now + d.min(MAX_DURATION_MS));
        let cap = match (rule.max, login) {
            (None, _) => None,
            (Some(max), Some(login)) => Some(login.min(LOGIN_CEILING_MS) + max),
            (Some(_), None) => rule.created_cap,
        };
        cap.map_or(idle, |cap| idle.min(cap))
    }
}

impl Write {
    pub(crate) fn new(
        record: &Record,
        changes: &Changes,
        mode: WriteMode,
    ) -> Result<Self, StoreError> {
        Ok(match mode {
            WriteMode::Insert => Self::Insert {
                data: encode_data(&record.data),
                created: millis(record.created_at),
                expires: millis(record.expires_at),
                columns: Columns::of(&record.data),
            },
            WriteMode::Update if changes.is_replace() => Self::Update(Update::Replace {
                data: encode_data(&record.data),
                expiry: Expiry::new(record),
                columns: Columns::of(&record.data),
            }),
            WriteMode::Update => Self::Update(Update::Patch {
                delta: Delta::new(changes, &record.data)?,
                expiry: Expiry::new(record),
                columns: Patched::new(changes, &record.data),
            }),
        })
    }
}

/// A delta write: the keys to remove and the keys to set, each with its new value as JSON.
///
/// A key in `changes` that is set but missing from the data (which the engine never produces)
/// is removed, as [`Changes::apply`] would.
pub(crate) struct Delta {
    pub(crate) removed: Vec<String>,
    pub(crate) set: Vec<(String, String)>,
}

impl Delta {
    pub(crate) fn new(changes: &Changes, data: &Map<String, Value>) -> Result<Self, StoreError> {
        let mut removed: Vec<String> = changes.deleted_keys().map(str::to_owned).collect();
        let mut set = Vec::with_capacity(changes.set_keys().len());
        for key in changes.set_keys() {
            match data.get(key) {
                Some(value) => set.push((
                    key.to_owned(),
                    serde_json::to_string(value).map_err(StoreError::backend)?,
                )),
                None => removed.push(key.to_owned()),
            }
        }
        Ok(Self { removed, set })
    }
}

/// Maps a sqlx error: lost connections, pool time-outs and the database codes that
/// `unavailable_code` picks are [`StoreError::Unavailable`] (the request may succeed later);
/// the rest, TLS set-up and a pool the app closed included, is [`StoreError::Backend`]. The
/// sqlx error is kept as the source either way.
pub(crate) fn error(error: sqlx::Error, unavailable_code: fn(&str) -> bool) -> StoreError {
    let unavailable = match &error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| unavailable_code(&code)),
        _ => false,
    };
    if unavailable {
        StoreError::Unavailable(Box::new(error))
    } else {
        StoreError::Backend(Box::new(error))
    }
}

/// What both SQL stores have in common, compiled for each driver: the constructors and
/// getters, `Debug`, `cleanup_one_batch`, and the [`SessionStore`](crate::SessionStore) hooks.
///
/// The store is a `Clone` struct with the fields `pool`, `table`, `cleanup_batch`,
/// `cleanup_budget`, `cleanup_after` (an `Arc<Mutex<String>>`) and `queries` (an `Arc` of a
/// type with `new(table) -> Result<Self, StoreError>` and a field `statements`), an async
/// method `update(&self, key, Update) -> Result<Option<i64>, StoreError>` (the expiry the row
/// now has, `None` when there is no live row) for the statements that differ, and the
/// functions that turn data and user names into what the database holds and back:
/// `encode_data(String) -> Result<String, StoreError>`, `decode_data(&str) -> Result<Map,
/// StoreError>`, `encode_user(&str) -> String` and `decode_user(String) -> String`; `$error`
/// maps the driver's errors.
macro_rules! sql_store {
    ($store:ident, $pool:ty, $error:path, $name_rule:literal) => {
        impl $store {
            /// A store on an existing pool, using the table `sessions`.
            pub fn new(pool: $pool) -> Self {
                Self {
                    pool,
                    table: $crate::store::sql::DEFAULT_TABLE.into(),
                    cleanup_batch: $crate::store::sql::DEFAULT_CLEANUP_BATCH,
                    cleanup_budget: $crate::store::sql::DEFAULT_CLEANUP_BUDGET,
                    cleanup_after: ::std::sync::Arc::default(),
                    queries: ::std::sync::Arc::new(
                        Queries::new($crate::store::sql::DEFAULT_TABLE)
                            .expect("the default table name is valid"),
                    ),
                }
            }

            #[doc = concat!("Uses the table `name` (default `sessions`): ", $name_rule, ".")]
            ///
            /// # Errors
            ///
            /// [`StoreError::Backend`] naming the rule, for any other name.
            pub fn with_table_name(mut self, name: &str) -> Result<Self, StoreError> {
                self.queries = ::std::sync::Arc::new(Queries::new(name)?);
                self.table = name.into();
                // Another table: `cleanup_one_batch` starts its walk afresh, apart from the
                // store this one was made from.
                self.cleanup_after = ::std::sync::Arc::default();
                Ok(self)
            }

            /// How many rows each `DELETE` of [`cleanup`](crate::SessionStore::cleanup) looks
            /// at (default 1000), so that a large clean-up never holds locks for long. `0`
            /// counts as 1.
            #[must_use]
            pub fn with_cleanup_batch(mut self, rows: u32) -> Self {
                self.cleanup_batch = rows.max(1);
                self
            }

            /// How long one call of [`cleanup`](crate::SessionStore::cleanup) goes on: it
            /// starts no batch once this much time has passed (default 2 s;
            /// `Duration::ZERO`: one batch per call).
            ///
            /// One call is one step of a walk through the table in key order: it goes on
            /// from where the previous call stopped, and ends at the end of the table (the
            /// next call starts a new walk) or when its budget is spent, whichever comes
            /// first. So a call of any table, however large, ends in about this time, and
            /// [`SessionEngine::spawn_cleanup`](crate::SessionEngine::spawn_cleanup) goes
            /// through the whole table over successive periods, removing every expired row.
            ///
            /// The default stays well under the engine's default
            /// [`store_timeout`](crate::SessionEngineBuilder::store_timeout) (5 s), so that
            /// a call ends by itself rather than being cut off at the deadline and logged as
            /// a failure. Keep it under a shorter `store_timeout` too: a call cut off there
            /// still keeps the progress of every batch it finished, and loses only the batch
            /// under way, but each one is reported as the store being unavailable.
            #[must_use]
            pub fn with_cleanup_budget(mut self, budget: ::std::time::Duration) -> Self {
                self.cleanup_budget = budget;
                self
            }

            /// The connection pool.
            pub fn pool(&self) -> &$pool {
                &self.pool
            }

            /// The table's name, as given.
            pub fn table_name(&self) -> &str {
                &self.table
            }

            /// Cleans up one batch (see [`with_cleanup_batch`](Self::with_cleanup_batch)) and
            /// returns how many rows it removed: for an app that paces its own clean-up. A
            /// batch is the next rows in key order after those the previous batch looked at
            /// (clones share the place, and so does
            /// [`cleanup`](crate::SessionStore::cleanup), which runs batches like this one
            /// until its [budget](Self::with_cleanup_budget) is spent); the expired ones
            /// among them are removed in one statement. After the last row, the next call
            /// starts again from the first. So a call that removes nothing says nothing about
            /// the rest of the table: pace the calls by time (one batch every few seconds
            /// goes through a table of a million rows in an hour or two), or call `cleanup`.
            ///
            /// # Errors
            ///
            /// The database's error, as [`StoreError::Unavailable`] when it cannot be reached.
            pub async fn cleanup_one_batch(&self) -> Result<u64, StoreError> {
                Ok(self.cleanup_next_batch().await?.0)
            }

            /// One batch after the shared place, which then moves past it (back to the start
            /// after the last row); returns how many rows it removed, and whether the walk
            /// reached the end of the table.
            async fn cleanup_next_batch(&self) -> Result<(u64, bool), StoreError> {
                let after = self.cleanup_place().clone();
                let (removed, end) = self.cleanup_batch_after(&after).await?;
                let ended = end.is_none();
                *self.cleanup_place() = end.unwrap_or_default();
                Ok((removed, ended))
            }

            /// Where the clean-up goes on from: a lock held for a copy, never across a query,
            /// so a panic elsewhere leaves a usable key.
            fn cleanup_place(&self) -> ::std::sync::MutexGuard<'_, String> {
                self.cleanup_after
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
            }

            /// Removes the expired rows among the next batch of rows after the key `after`;
            /// returns how many, and the batch's last key (`None` when no row follows).
            async fn cleanup_batch_after(
                &self,
                after: &str,
            ) -> Result<(u64, Option<String>), StoreError> {
                let statements = &self.queries.statements;
                let end: Option<String> =
                    sqlx::query_scalar(AssertSqlSafe(Arc::clone(&statements.cleanup_end)))
                        .bind(after)
                        .bind(i64::from(self.cleanup_batch))
                        .fetch_one(&self.pool)
                        .await
                        .map_err($error)?;
                let Some(end) = end else {
                    return Ok((0, None));
                };
                let removed = sqlx::query(AssertSqlSafe(Arc::clone(&statements.cleanup)))
                    .bind(after)
                    .bind(&end)
                    .bind(sql::millis(SystemTime::now()))
                    .execute(&self.pool)
                    .await
                    .map_err($error)?;
                Ok((removed.rows_affected(), Some(end)))
            }

            /// Runs the migration's missing steps. Each step is first checked with a plain
            /// read, outside any transaction: when none is missing, the migration takes no
            /// lock that could wait for session traffic, or make it wait. Else the missing
            /// steps run in one transaction, after its lock, each checked again there (another
            /// instance may have made it meanwhile).
            async fn run_migration(&self) -> Result<(), StoreError> {
                let migration = &self.queries.statements.migration;
                let mut current = true;
                for step in &migration.steps {
                    let done: bool = sqlx::query_scalar(AssertSqlSafe(Arc::clone(&step.done)))
                        .fetch_one(&self.pool)
                        .await
                        .map_err($error)?;
                    if !done {
                        current = false;
                        break;
                    }
                }
                if current {
                    return Ok(());
                }
                let mut tx = self
                    .pool
                    .begin_with(migration.begin)
                    .await
                    .map_err($error)?;
                if let Some(lock) = &migration.lock {
                    sqlx::query(AssertSqlSafe(Arc::clone(lock)))
                        .execute(&mut *tx)
                        .await
                        .map_err($error)?;
                }
                for step in &migration.steps {
                    let done: bool = sqlx::query_scalar(AssertSqlSafe(Arc::clone(&step.done)))
                        .fetch_one(&mut *tx)
                        .await
                        .map_err($error)?;
                    if !done {
                        sqlx::query(AssertSqlSafe(Arc::clone(&step.run)))
                            .execute(&mut *tx)
                            .await
                            .map_err($error)?;
                    }
                }
                tx.commit().await.map_err($error)
            }

            async fn read_row(&self, key: &str) -> Result<Option<Record>, StoreError> {
                let statements = &self.queries.statements;
                let row = sqlx::query(AssertSqlSafe(Arc::clone(&statements.read)))
                    .bind(key)
                    .bind(sql::millis(SystemTime::now()))
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($error)?;
                let Some(row) = row else {
                    return Ok(None);
                };
                // A row whose columns do not hold what this store writes (another program's,
                // or damaged) cannot be decoded: the session counts as absent.
                let data: &str = row.try_get(0).map_err(StoreError::undecodable)?;
                let created: i64 = row.try_get(1).map_err(StoreError::undecodable)?;
                let expires: i64 = row.try_get(2).map_err(StoreError::undecodable)?;
                sql::record_from_row(data, created, expires, Self::decode_data).map(Some)
            }

            /// Inserts or updates; returns the expiry the row now has.
            async fn write_row(
                &self,
                key: &str,
                write: sql::Write,
            ) -> Result<SystemTime, StoreError> {
                let (data, created, expires, columns) = match write {
                    sql::Write::Insert {
                        data,
                        created,
                        expires,
                        columns,
                    } => (data, created, expires, columns),
                    sql::Write::Update(update) => {
                        return match self.update(key, update).await? {
                            None => Err(StoreError::Gone),
                            Some(expires) => sql::from_millis(expires),
                        };
                    }
                };
                let statements = &self.queries.statements;
                let inserted = sqlx::query(AssertSqlSafe(Arc::clone(&statements.insert)))
                    .bind(key)
                    .bind(Self::encode_data(data)?)
                    .bind(created)
                    .bind(expires)
                    .bind(sql::millis(SystemTime::now()))
                    .bind(columns.user.map(|user| Self::encode_user(&user)))
                    .bind(columns.duration)
                    .bind(columns.login)
                    .execute(&self.pool)
                    .await
                    .map_err($error)?;
                match inserted.rows_affected() {
                    0 => Err(StoreError::IdTaken),
                    _ => sql::from_millis(expires),
                }
            }

            async fn touch_row(
                &self,
                key: &str,
                from: i64,
                to: i64,
            ) -> Result<Touched, StoreError> {
                let statements = &self.queries.statements;
                let now = sql::millis(SystemTime::now());
                let touched = sqlx::query(AssertSqlSafe(Arc::clone(&statements.touch)))
                    .bind(key)
                    .bind(now)
                    .bind(to)
                    .bind(from)
                    .execute(&self.pool)
                    .await
                    .map_err($error)?;
                if touched.rows_affected() > 0 {
                    return Ok(Touched::Moved);
                }
                // Rare: the row has another expiry, or none. Which one, a second look says.
                let live = sqlx::query(AssertSqlSafe(Arc::clone(&statements.live)))
                    .bind(key)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($error)?;
                live.map(|_| Touched::Superseded).ok_or(StoreError::Gone)
            }

            async fn destroy_row(&self, key: &str) -> Result<bool, StoreError> {
                let statements = &self.queries.statements;
                let live: Option<bool> =
                    sqlx::query_scalar(AssertSqlSafe(Arc::clone(&statements.destroy)))
                        .bind(key)
                        .bind(sql::millis(SystemTime::now()))
                        .fetch_optional(&self.pool)
                        .await
                        .map_err($error)?;
                Ok(live.unwrap_or(false))
            }

            /// The summary of each live row tied to `user`, from the columns beside the data,
            /// which it never reads.
            async fn user_rows(
                &self,
                user: &str,
            ) -> Result<Vec<(StoreKey, RecordSummary)>, StoreError> {
                let statements = &self.queries.statements;
                let rows = sqlx::query(AssertSqlSafe(Arc::clone(&statements.user_sessions)))
                    .bind(Self::encode_user(user))
                    .bind(sql::millis(SystemTime::now()))
                    .fetch_all(&self.pool)
                    .await
                    .map_err($error)?;
                let mut found = Vec::with_capacity(rows.len());
                for row in rows {
                    let key: String = row.try_get(0).map_err(StoreError::undecodable)?;
                    let tied: String = row.try_get(1).map_err(StoreError::undecodable)?;
                    let created: i64 = row.try_get(2).map_err(StoreError::undecodable)?;
                    let expires: i64 = row.try_get(3).map_err(StoreError::undecodable)?;
                    let duration: Option<i64> = row.try_get(4).map_err(StoreError::undecodable)?;
                    let login: Option<i64> = row.try_get(5).map_err(StoreError::undecodable)?;
                    let summary = RecordSummary::new(
                        Self::decode_user(tied),
                        sql::from_millis(created)?,
                        sql::from_millis(expires)?,
                    )
                    .with_duration(duration.map(sql::duration_of_millis))
                    .with_login(login.map(sql::from_millis).transpose()?);
                    found.push((StoreKey::from(key), summary));
                }
                Ok(found)
            }

            /// One step of the walk: batches from the shared place until the end of the
            /// table or the budget, whichever comes first. The place moves after each batch,
            /// so a call cut off by the engine's deadline loses only the batch under way.
            async fn cleanup_step(&self) -> Result<u64, StoreError> {
                let started = ::std::time::Instant::now();
                let mut removed = 0;
                loop {
                    let (batch, ended) = self.cleanup_next_batch().await?;
                    removed += batch;
                    if ended || started.elapsed() >= self.cleanup_budget {
                        return Ok(removed);
                    }
                }
            }
        }

        impl ::std::fmt::Debug for $store {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(stringify!($store))
                    .field("table", &self.table)
                    .field("cleanup_batch", &self.cleanup_batch)
                    .field("cleanup_budget", &self.cleanup_budget)
                    .finish_non_exhaustive()
            }
        }

        impl SessionStore for $store {
            fn read(&self, key: &StoreKey) -> StoreFuture<Option<Record>> {
                let (this, key) = (self.clone(), key.as_str().to_owned());
                StoreFuture::boxed(async move { this.read_row(&key).await })
            }

            fn write(
                &self,
                key: &StoreKey,
                record: &Record,
                changes: &Changes,
                mode: WriteMode,
            ) -> StoreFuture<SystemTime> {
                let write = match sql::Write::new(record, changes, mode) {
                    Ok(write) => write,
                    Err(error) => return StoreFuture::ready(Err(error)),
                };
                let (this, key) = (self.clone(), key.as_str().to_owned());
                StoreFuture::boxed(async move { this.write_row(&key, write).await })
            }

            fn touch(
                &self,
                key: &StoreKey,
                from: SystemTime,
                to: SystemTime,
            ) -> StoreFuture<Touched> {
                let (this, key) = (self.clone(), key.as_str().to_owned());
                let (from, to) = (sql::millis(from), sql::millis(to));
                StoreFuture::boxed(async move { this.touch_row(&key, from, to).await })
            }

            fn destroy(&self, key: &StoreKey) -> StoreFuture<bool> {
                let (this, key) = (self.clone(), key.as_str().to_owned());
                StoreFuture::boxed(async move { this.destroy_row(&key).await })
            }

            /// Removes expired rows in one bounded step of a walk through the table, going on
            /// from where the previous step stopped; returns how many. See
            #[doc = concat!("[`with_cleanup_budget`](", stringify!($store), "::with_cleanup_budget).")]
            fn cleanup(&self) -> StoreFuture<u64> {
                let this = self.clone();
                StoreFuture::boxed(async move { this.cleanup_step().await })
            }

            fn user_sessions(&self, user: &str) -> StoreFuture<Vec<(StoreKey, RecordSummary)>> {
                let (this, user) = (self.clone(), user.to_owned());
                StoreFuture::boxed(async move { this.user_rows(&user).await })
            }

            fn indexes_users(&self) -> bool {
                true
            }
        }
    };
}

pub(crate) use sql_store;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_checked_and_quoted() {
        assert_eq!(quote_table("sessions", false).unwrap(), "\"sessions\"");
        assert_eq!(quote_table("app.s_1", true).unwrap(), "\"app\".\"s_1\"");
        assert!(quote_table(&"x".repeat(52), false).is_ok());
        for bad in [
            "",
            "1st",
            "a-b",
            "a b",
            "a\"b",
            "x;drop table y",
            "a.b.c",
            ".a",
            &"x".repeat(53),
        ] {
            assert!(quote_table(bad, true).is_err(), "{bad:?} was accepted");
        }
        assert!(quote_table("app.s", false).is_err());
    }

    #[test]
    fn a_delta_sets_values_as_json_and_removes_the_rest() {
        let data: Map<String, Value> =
            serde_json::from_str(r#"{"a": 1, "b": {"x": null}, "c": "s"}"#).unwrap();
        let changes = Changes::new()
            .with_set("a")
            .with_set("b")
            .with_set("gone")
            .with_deleted("d");
        let delta = Delta::new(&changes, &data).unwrap();
        assert_eq!(
            delta.set,
            [
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), r#"{"x":null}"#.to_owned())
            ]
        );
        assert_eq!(delta.removed, ["d", "gone"]);
    }

    /// The terms the statements compute the expiry from give, for every combination of
    /// duration, login, maximum and times with a fraction of a millisecond, what
    /// [`Record::expiry_after`] gives (R17).
    #[test]
    fn r17_the_expiry_terms_compute_what_the_rule_computes() {
        use std::time::UNIX_EPOCH;

        use serde_json::json;

        use crate::store::ExpiryRule;

        let base = UNIX_EPOCH + Duration::from_millis(1_800_000_000_000);
        let nanos = |ns: u64| Duration::from_nanos(ns);
        for now in [base, base + nanos(400_000), base + nanos(999_999)] {
            for created in [base - Duration::from_secs(7200), base - nanos(1_700_001)] {
                for duration in [
                    Duration::from_secs(1800),
                    nanos(1_500_000),
                    MAX_DURATION * 2,
                ] {
                    for max in [
                        None,
                        Some(Duration::from_secs(3600)),
                        Some(nanos(7_200_000_600_000)),
                        Some(Duration::MAX),
                    ] {
                        for (custom, login) in [
                            (None, None),
                            (Some(json!(60_000)), None),
                            (None, Some(json!(1_799_999_000_000_u64))),
                            (Some(json!(0)), Some(json!(1_799_996_000_000_u64))),
                            (Some(json!(u64::MAX)), Some(json!(u64::MAX))),
                            (Some(json!(-5)), Some(json!("soon"))),
                        ] {
                            let mut data = Map::new();
                            if let Some(custom) = custom {
                                data.insert(DURATION_KEY.into(), custom);
                            }
                            if let Some(login) = login {
                                data.insert(LOGIN_KEY.into(), login);
                            }
                            let record = Record::new(data.clone(), created, base)
                                .with_rule(ExpiryRule::new(now, duration, max));
                            let columns = Columns::of(&data);
                            let computed =
                                Expiry::new(&record).after(columns.duration, columns.login);
                            assert_eq!(
                                computed,
                                millis(record.expiry_after(&data)),
                                "{now:?} {created:?} {duration:?} {max:?} {data:?}"
                            );
                        }
                    }
                }
            }
        }
        let fixed = Record::new(Map::new(), base, base + Duration::from_secs(5));
        assert_eq!(
            Expiry::new(&fixed).after(Some(1), Some(2)),
            millis(fixed.expires_at)
        );
    }

    #[test]
    fn a_patch_changes_only_the_columns_of_the_reserved_keys_it_touches() {
        let data: Map<String, Value> =
            serde_json::from_str(r#"{"__user": "ann", "__cust_dur": 5, "x": 1}"#).unwrap();
        let patched = Patched::new(&Changes::new().with_set("x"), &data);
        assert_eq!(patched, Patched::default());
        let patched = Patched::new(
            &Changes::new().with_set(USER_KEY).with_deleted(LOGIN_KEY),
            &data,
        );
        assert_eq!(patched.user, Some(Some("ann".to_owned())));
        assert_eq!(patched.duration, None);
        assert_eq!(patched.login, Some(None));
        let columns =
            Columns::of(&serde_json::from_str(r#"{"__user": 5, "__login": 1.5}"#).unwrap());
        assert_eq!(columns, Columns::default());
        assert_eq!(
            MAX_DURATION_MS,
            i64::try_from(MAX_DURATION.as_millis()).unwrap()
        );
    }
}
