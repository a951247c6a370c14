//! The storage contract: the [`SessionStore`] hooks, the [`Record`] they move, the [`Changes`]
//! that make delta writes possible, and the [`StoreError`] they fail with.

use std::collections::BTreeSet;
use std::error::Error as StdError;
use std::time::SystemTime;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

#[cfg(feature = "memory-store")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory-store")))]
pub mod memory;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;

/// The longest session id that is accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// A stored session: its data, when it expires and when it was created.
///
/// `data` holds the user's keys and the engine's reserved ones (those beginning with `__`, such
/// as `__cust_dur`); a store keeps it as one JSON object and need not look inside.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Record {
    /// The session data.
    pub data: Map<String, Value>,
    /// The moment the session stops being valid; a store never returns it after this (R6).
    pub expires_at: SystemTime,
    /// The moment the session was first created; kept across writes, touches and rolls.
    pub created_at: SystemTime,
}

impl Record {
    /// A record with the given data and times.
    pub fn new(data: Map<String, Value>, created_at: SystemTime, expires_at: SystemTime) -> Self {
        Self {
            data,
            expires_at,
            created_at,
        }
    }
}

/// What a request changed in a stored session's data.
///
/// A store that can patch its records applies only these keys (values are in the [`Record`]),
/// so two requests that change different keys of one session both survive. When
/// [`Changes::is_replace`] is true, the whole data was replaced and must be written as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    replace: bool,
    set: BTreeSet<String>,
    deleted: BTreeSet<String>,
}

impl Changes {
    /// No change.
    pub fn new() -> Self {
        Self::default()
    }

    /// A change that replaces the whole data.
    pub fn replace_all() -> Self {
        Self {
            replace: true,
            ..Self::default()
        }
    }

    /// Adds `key` to the keys that were set.
    #[must_use]
    pub fn with_set(mut self, key: impl Into<String>) -> Self {
        self.record_set(key.into());
        self
    }

    /// Adds `key` to the keys that were deleted.
    #[must_use]
    pub fn with_deleted(mut self, key: impl Into<String>) -> Self {
        self.record_delete(key.into());
        self
    }

    /// Whether the whole data was replaced (then the key lists are empty).
    pub fn is_replace(&self) -> bool {
        self.replace
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.replace && self.set.is_empty() && self.deleted.is_empty()
    }

    /// The keys that were set; their new values are in the record's data.
    pub fn set_keys(&self) -> impl Iterator<Item = &str> {
        self.set.iter().map(String::as_str)
    }

    /// The keys that were deleted.
    pub fn deleted_keys(&self) -> impl Iterator<Item = &str> {
        self.deleted.iter().map(String::as_str)
    }

    /// Applies these changes to `target`, a stored copy of the data, taking the new values
    /// from `source`, the request's data: the whole of it for a replacement, else each key set
    /// and deleted. For stores that keep the data as one blob and patch it under a lock.
    pub fn apply(&self, target: &mut Map<String, Value>, source: &Map<String, Value>) {
        if self.replace {
            target.clone_from(source);
            return;
        }
        for key in &self.set {
            match source.get(key) {
                Some(value) => target.insert(key.clone(), value.clone()),
                None => target.remove(key),
            };
        }
        for key in &self.deleted {
            target.remove(key);
        }
    }

    pub(crate) fn record_set(&mut self, key: String) {
        if !self.replace {
            self.deleted.remove(&key);
            self.set.insert(key);
        }
    }

    pub(crate) fn record_delete(&mut self, key: String) {
        if !self.replace {
            self.set.remove(&key);
            self.deleted.insert(key);
        }
    }

    pub(crate) fn record_replace(&mut self) {
        *self = Self::replace_all();
    }
}

/// Why a store hook failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An insert (`write` with `stored == false`) found a live record under its key (R8).
    #[error("session id is already taken")]
    IdTaken,
    /// An update or touch found no live record: it was destroyed or expired meanwhile (R9).
    #[error("session record is gone")]
    Gone,
    /// The backend could not be reached or did not answer in time; the request may succeed
    /// later. Answered with 503.
    #[error("session store unavailable")]
    Unavailable(#[source] Box<dyn StdError + Send + Sync>),
    /// Any other failure of the backend, with its error as the source. Answered with 500.
    #[error("session store failed")]
    Backend(#[source] Box<dyn StdError + Send + Sync>),
}

impl StoreError {
    /// Wraps a backend error as [`StoreError::Backend`].
    pub fn backend(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::Backend(error.into())
    }

    /// Wraps a connection or time-out error as [`StoreError::Unavailable`].
    pub fn unavailable(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::Unavailable(error.into())
    }
}

/// A session backend: the hooks the engine calls (SPEC section 4).
///
/// Keys are what the engine passes: by default base64url(SHA-256(id)), so the store never sees
/// a live id. Every hook must be safe to call concurrently for the same key.
///
/// Implementations must keep these rules atomic in the backend itself (one statement, script
/// or locked step, never a read followed by a write):
///
/// - `write` with `stored == false` inserts and fails with [`StoreError::IdTaken`] rather than
///   overwrite a live record;
/// - `write` with `stored == true` and `touch` fail with [`StoreError::Gone`] rather than
///   recreate a record that is absent or expired;
/// - `read` never returns a record past its `expires_at`.
///
/// `session_engine::testing` (feature `testing`) checks all of this against any store.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Makes a new session id. The default is 24 bytes from the operating system's CSPRNG as
    /// base64url without padding (32 characters). The engine refuses ids that are empty,
    /// longer than [`MAX_ID_LEN`] or use characters outside `[A-Za-z0-9_-]`.
    async fn id(&self) -> Result<String, StoreError> {
        random_id()
    }

    /// Returns the live record under `key`, or `None`.
    async fn read(&self, key: &str) -> Result<Option<Record>, StoreError>;

    /// Inserts (`stored == false`) or updates (`stored == true`) the record under `key`.
    ///
    /// An update applies `changes` (the keys set and deleted, or a replacement) to the stored
    /// data and moves the expiry to `record.expires_at`; it keeps the stored `created_at`.
    async fn write(
        &self,
        key: &str,
        record: &Record,
        changes: &Changes,
        stored: bool,
    ) -> Result<(), StoreError>;

    /// Moves the expiry of the live record under `key`; never rewrites data, never recreates.
    async fn touch(&self, key: &str, expires_at: SystemTime) -> Result<(), StoreError>;

    /// Removes the record under `key`. An absent record is not an error.
    async fn destroy(&self, key: &str) -> Result<(), StoreError>;

    /// Removes expired records and returns how many.
    async fn cleanup(&self) -> Result<u64, StoreError>;
}

/// Milliseconds since the Unix epoch: the unit every bundled store keeps its times in.
/// Times before the epoch count as 0; times past `u64::MAX` ms saturate.
#[cfg(any(
    feature = "memory-store",
    feature = "sqlite",
    feature = "postgres",
    feature = "redis"
))]
pub(crate) fn to_ms(time: SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The inverse of [`to_ms`]; an error, not a panic, for a stored time this platform's
/// `SystemTime` cannot hold.
#[cfg(any(
    feature = "memory-store",
    feature = "sqlite",
    feature = "postgres",
    feature = "redis"
))]
pub(crate) fn from_ms(ms: u64) -> Result<SystemTime, StoreError> {
    std::time::UNIX_EPOCH
        .checked_add(std::time::Duration::from_millis(ms))
        .ok_or_else(|| StoreError::backend(format!("stored time {ms} ms is out of range")))
}

/// 24 bytes from the operating system's CSPRNG, as 32 characters of base64url.
pub fn random_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::backend(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether `id` is acceptable as a session id: 1 to [`MAX_ID_LEN`] bytes of `[A-Za-z0-9_-]`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_32_urlsafe_chars_and_distinct() {
        let ids: BTreeSet<String> = (0..1000).map(|_| random_id().unwrap()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.len() == 32 && is_valid_id(id)));
    }

    #[test]
    fn id_validation() {
        assert!(is_valid_id("a"));
        assert!(is_valid_id(&"a".repeat(MAX_ID_LEN)));
        for bad in ["", "a.b", "a b", "a+b", "a/b", "é", "a=b"] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
        assert!(!is_valid_id(&"a".repeat(MAX_ID_LEN + 1)));
    }

    #[test]
    fn changes_track_the_last_operation_per_key() {
        let changes = Changes::new().with_set("a").with_deleted("a").with_set("b");
        assert_eq!(changes.set_keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(changes.deleted_keys().collect::<Vec<_>>(), ["a"]);
        let mut replaced = changes.clone();
        replaced.record_replace();
        replaced.record_set("c".into());
        assert!(replaced.is_replace());
        assert_eq!(replaced.set_keys().count(), 0);
        assert!(Changes::new().is_empty());
        assert!(!Changes::replace_all().is_empty());
    }
}
