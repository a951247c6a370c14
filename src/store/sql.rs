//! What the SQLite and PostgreSQL stores share: table names, times as integers, error mapping
//! and the encoding of a delta write.

use std::time::SystemTime;

use serde_json::{Map, Value};

use crate::store::{Changes, StoreError, to_ms};

/// The default table name of both SQL stores.
pub(crate) const DEFAULT_TABLE: &str = "sessions";

/// How many expired rows one `DELETE` of `cleanup()` removes at most.
pub(crate) const DEFAULT_CLEANUP_BATCH: u32 = 1000;

/// Checks a table name and returns it quoted for SQL.
///
/// A name is 1 to 63 characters of `[A-Za-z0-9_]`, not starting with a digit; with
/// `allow_schema`, one `schema.` part may precede it. Anything else is refused, so a name can
/// never smuggle SQL into the statements it is pasted into.
pub(crate) fn quote_table(name: &str, allow_schema: bool) -> Result<String, StoreError> {
    let parts: Vec<&str> = name.split('.').collect();
    let valid = |part: &str| {
        (1..=63).contains(&part.len())
            && !part.as_bytes()[0].is_ascii_digit()
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    let allowed_parts = if allow_schema { 2 } else { 1 };
    if parts.len() > allowed_parts || !parts.iter().all(|part| valid(part)) {
        return Err(StoreError::backend(format!(
            "invalid table name {name:?}: use letters, digits and `_`, at most 63 of them{}",
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

/// A time as integer milliseconds since the Unix epoch, as the SQL stores keep it.
pub(crate) fn millis(time: SystemTime) -> i64 {
    i64::try_from(to_ms(time)).unwrap_or(i64::MAX)
}

/// The inverse of [`millis`]; negative values (never written by this crate) count as 0.
pub(crate) fn from_millis(ms: i64) -> Result<SystemTime, StoreError> {
    crate::store::from_ms(u64::try_from(ms).unwrap_or(0))
}

/// The data as JSON text.
pub(crate) fn encode(data: &Map<String, Value>) -> Result<String, StoreError> {
    serde_json::to_string(data).map_err(StoreError::backend)
}

/// JSON text read back from a row.
pub(crate) fn decode(text: &str) -> Result<Map<String, Value>, StoreError> {
    serde_json::from_str(text).map_err(StoreError::backend)
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
        let mut set = Vec::new();
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

    /// The keys set, with their values, as one JSON object.
    #[cfg(feature = "postgres")]
    pub(crate) fn set_object(&self) -> Result<String, StoreError> {
        let mut object = String::from("{");
        for (i, (key, value)) in self.set.iter().enumerate() {
            if i > 0 {
                object.push(',');
            }
            object.push_str(&serde_json::to_string(key).map_err(StoreError::backend)?);
            object.push(':');
            object.push_str(value);
        }
        object.push('}');
        Ok(object)
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

/// The [`SessionStore`](crate::SessionStore) hooks and `cleanup_one_batch` of a SQL store:
/// the same code for SQLite and PostgreSQL, compiled once for each driver.
///
/// `$store` has the fields `pool`, `queries` (whose `read`, `insert`, `touch`, `destroy` and
/// `cleanup` statements take their parameters in the same order for both databases) and
/// `cleanup_batch`, and a method `update` for the one statement that differs; `$error` maps
/// the driver's errors.
macro_rules! hooks {
    ($store:ty, $error:path) => {
        impl $store {
            /// Removes at most one batch (see
            /// [`with_cleanup_batch`](Self::with_cleanup_batch)) of expired rows, in one
            /// statement, and returns how many: for an app that paces its own clean-up.
            /// [`cleanup`](crate::SessionStore::cleanup) repeats it until a batch comes back
            /// short.
            ///
            /// # Errors
            ///
            /// The database's error, as [`StoreError::Unavailable`] when it cannot be reached.
            pub async fn cleanup_one_batch(&self) -> Result<u64, StoreError> {
                let removed = sqlx::query(AssertSqlSafe(Arc::clone(&self.queries.cleanup)))
                    .bind(sql::millis(SystemTime::now()))
                    .bind(i64::from(self.cleanup_batch))
                    .execute(&self.pool)
                    .await
                    .map_err($error)?;
                Ok(removed.rows_affected())
            }
        }

        #[async_trait]
        impl SessionStore for $store {
            async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
                let row = sqlx::query(AssertSqlSafe(Arc::clone(&self.queries.read)))
                    .bind(key)
                    .bind(sql::millis(SystemTime::now()))
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($error)?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let data: &str = row.try_get(0).map_err($error)?;
                let created: i64 = row.try_get(1).map_err($error)?;
                let expires: i64 = row.try_get(2).map_err($error)?;
                Ok(Some(Record::new(
                    sql::decode(data)?,
                    sql::from_millis(created)?,
                    sql::from_millis(expires)?,
                )))
            }

            async fn write(
                &self,
                key: &str,
                record: &Record,
                changes: &Changes,
                stored: bool,
            ) -> Result<(), StoreError> {
                if stored {
                    return match self.update(key, record, changes).await? {
                        0 => Err(StoreError::Gone),
                        _ => Ok(()),
                    };
                }
                let inserted = sqlx::query(AssertSqlSafe(Arc::clone(&self.queries.insert)))
                    .bind(key)
                    .bind(sql::encode(&record.data)?)
                    .bind(sql::millis(record.created_at))
                    .bind(sql::millis(record.expires_at))
                    .bind(sql::millis(SystemTime::now()))
                    .execute(&self.pool)
                    .await
                    .map_err($error)?;
                match inserted.rows_affected() {
                    0 => Err(StoreError::IdTaken),
                    _ => Ok(()),
                }
            }

            async fn touch(&self, key: &str, expires_at: SystemTime) -> Result<(), StoreError> {
                let touched = sqlx::query(AssertSqlSafe(Arc::clone(&self.queries.touch)))
                    .bind(key)
                    .bind(sql::millis(SystemTime::now()))
                    .bind(sql::millis(expires_at))
                    .execute(&self.pool)
                    .await
                    .map_err($error)?;
                match touched.rows_affected() {
                    0 => Err(StoreError::Gone),
                    _ => Ok(()),
                }
            }

            async fn destroy(&self, key: &str) -> Result<(), StoreError> {
                sqlx::query(AssertSqlSafe(Arc::clone(&self.queries.destroy)))
                    .bind(key)
                    .execute(&self.pool)
                    .await
                    .map_err($error)?;
                Ok(())
            }

            async fn cleanup(&self) -> Result<u64, StoreError> {
                let mut removed = 0;
                loop {
                    let batch = self.cleanup_one_batch().await?;
                    removed += batch;
                    if batch < u64::from(self.cleanup_batch) {
                        return Ok(removed);
                    }
                }
            }
        }
    };
}

pub(crate) use hooks;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_checked_and_quoted() {
        assert_eq!(quote_table("sessions", false).unwrap(), "\"sessions\"");
        assert_eq!(quote_table("app.s_1", true).unwrap(), "\"app\".\"s_1\"");
        for bad in [
            "",
            "1st",
            "a-b",
            "a b",
            "a\"b",
            "x;drop table y",
            "a.b.c",
            &"x".repeat(64),
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
