//! What the SQLite and PostgreSQL stores share: table names, times as integers, error mapping,
//! the writes prepared for the database, and one copy of the constructors, the getters and the
//! hooks ([`sql_store!`]), compiled for each driver.

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use crate::store::{Changes, Record, StoreError, WriteMode, encode_data, to_ms};

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
    let index = format!("\"{table}_user\"");
    migration
        .steps
        .iter()
        .any(|step| step.run.contains(&index) && step.done.contains(&format!("{table}_user")))
}

/// A time as integer milliseconds since the Unix epoch, as the SQL stores bind it.
pub(crate) fn millis(time: SystemTime) -> i64 {
    i64::try_from(to_ms(time)).unwrap_or(i64::MAX)
}

/// The inverse of [`millis`]; negative values (never written by this crate) count as 0.
pub(crate) fn from_millis(ms: i64) -> Result<SystemTime, StoreError> {
    crate::store::from_ms(u64::try_from(ms).unwrap_or(0))
}

/// A record from the columns of its row: the data as JSON text, the creation and the expiry
/// in milliseconds (see [`from_millis`]).
pub(crate) fn record_from_row(
    data: &str,
    created: i64,
    expires: i64,
) -> Result<Record, StoreError> {
    Ok(Record::new(
        crate::store::decode_data(data.as_bytes())?,
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
    /// (key, data, created, expires, now): a row, or the expired row under the key replaced.
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
    /// (user, now) → (key, data as text, created ms, expires ms) of each live row tied to
    /// `user`: an expression index on the data's user makes it one index lookup, always in
    /// step with the rows themselves.
    pub(crate) user_sessions: Arc<str>,
}

/// A write turned into what the database is sent: owned, so that the hook's future borrows
/// nothing from the request.
pub(crate) enum Write {
    Insert {
        data: String,
        created: i64,
        expires: i64,
    },
    Update(Update),
}

/// An update, as the database is sent it.
pub(crate) enum Update {
    /// The whole data, replaced.
    Replace { data: String, expires: i64 },
    /// Only the keys that changed.
    Patch { delta: Delta, expires: i64 },
}

impl Write {
    pub(crate) fn new(
        record: &Record,
        changes: &Changes,
        mode: WriteMode,
    ) -> Result<Self, StoreError> {
        let expires = millis(record.expires_at);
        Ok(match mode {
            WriteMode::Insert => Self::Insert {
                data: encode_data(&record.data),
                created: millis(record.created_at),
                expires,
            },
            WriteMode::Update if changes.is_replace() => Self::Update(Update::Replace {
                data: encode_data(&record.data),
                expires,
            }),
            WriteMode::Update => Self::Update(Update::Patch {
                delta: Delta::new(changes, &record.data)?,
                expires,
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
/// type with `new(table) -> Result<Self, StoreError>` and a field `statements`), and an async
/// method `update(&self, key, Update) -> Result<u64, StoreError>` (rows changed) for the
/// statements that differ; `$error` maps the driver's errors.
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
                sql::record_from_row(data, created, expires).map(Some)
            }

            async fn write_row(&self, key: &str, write: sql::Write) -> Result<(), StoreError> {
                let (data, created, expires) = match write {
                    sql::Write::Insert {
                        data,
                        created,
                        expires,
                    } => (data, created, expires),
                    sql::Write::Update(update) => {
                        return match self.update(key, update).await? {
                            0 => Err(StoreError::Gone),
                            _ => Ok(()),
                        };
                    }
                };
                let statements = &self.queries.statements;
                let inserted = sqlx::query(AssertSqlSafe(Arc::clone(&statements.insert)))
                    .bind(key)
                    .bind(data)
                    .bind(created)
                    .bind(expires)
                    .bind(sql::millis(SystemTime::now()))
                    .execute(&self.pool)
                    .await
                    .map_err($error)?;
                match inserted.rows_affected() {
                    0 => Err(StoreError::IdTaken),
                    _ => Ok(()),
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

            async fn user_rows(&self, user: &str) -> Result<Vec<(StoreKey, Record)>, StoreError> {
                let statements = &self.queries.statements;
                let rows = sqlx::query(AssertSqlSafe(Arc::clone(&statements.user_sessions)))
                    .bind(user)
                    .bind(sql::millis(SystemTime::now()))
                    .fetch_all(&self.pool)
                    .await
                    .map_err($error)?;
                let mut found = Vec::with_capacity(rows.len());
                for row in rows {
                    let key: String = row.try_get(0).map_err(StoreError::undecodable)?;
                    let data: &str = row.try_get(1).map_err(StoreError::undecodable)?;
                    let created: i64 = row.try_get(2).map_err(StoreError::undecodable)?;
                    let expires: i64 = row.try_get(3).map_err(StoreError::undecodable)?;
                    // A row that cannot be decoded is left out, as `read` counts it absent.
                    let Ok(data) = crate::store::decode_data(data.as_bytes()) else {
                        continue;
                    };
                    let record =
                        Record::new(data, sql::from_millis(created)?, sql::from_millis(expires)?);
                    found.push((StoreKey::from(key), record));
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
                let expires_at = record.expires_at;
                StoreFuture::boxed(
                    async move { this.write_row(&key, write).await.map(|()| expires_at) },
                )
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
                StoreFuture::boxed(async move {
                    let rows = this.user_rows(&user).await?;
                    Ok(rows
                        .into_iter()
                        .filter_map(|(key, record)| Some((key, RecordSummary::of(&record)?)))
                        .collect())
                })
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
}
