//! The storage contract: the [`SessionStore`] hooks, the [`Record`] they move, the [`Changes`]
//! that make delta writes possible, the [`StoreFuture`] they answer with and the [`StoreError`]
//! they fail with; and the stores this crate ships.
//!
//! Every rule of the contract must hold atomically in the backend itself (one locked step, one
//! statement or one server-side script per hook, never a read followed by a separate write),
//! because requests for the same session race. `session_engine::testing` (feature `testing`)
//! checks each of them against any store.

use std::collections::BTreeSet;
use std::error::Error as StdError;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

#[cfg(feature = "near-cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "near-cache")))]
pub mod cache;
mod future;
pub(crate) mod gateway;
#[cfg(feature = "memory-store")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory-store")))]
pub mod memory;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod sql;

pub use crate::id::{MAX_ID_LEN, StoreKey, is_valid_id};
pub use future::StoreFuture;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
#[doc(inline)]
pub use sql::postgres;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
#[doc(inline)]
pub use sql::sqlite;

/// The reserved data key that ties a session to a user (`Session::set_user`): its value is the
/// user's name, a JSON string. A store that indexes users looks for it (see
/// [`SessionStore::user_sessions`]).
pub const USER_KEY: &str = "__user";

/// The reserved data key that keeps a session's own idle lifetime (`Session::set_duration`),
/// in milliseconds, a JSON integer: what an update's expiry follows (see [`ExpiryRule`]).
pub const DURATION_KEY: &str = "__cust_dur";

/// The reserved data key that keeps the moment of a session's last login
/// (`Session::set_user`), in milliseconds since the Unix epoch, a JSON integer: the absolute
/// lifetime (`max_lifetime`) runs from it (see [`ExpiryRule`]).
pub const LOGIN_KEY: &str = "__login";

/// How deep a value of the data may nest (arrays and objects within each other, the value
/// itself counting as one): `Session::set` refuses deeper ones ([`Error::TooDeep`]), and every
/// store must read back any value up to this depth. The data is one more level, and JSON
/// parsers stop at 128 (serde_json's limit), so a deeper value could be stored and then never
/// read again.
///
/// [`Error::TooDeep`]: crate::Error::TooDeep
pub const MAX_DEPTH: usize = 64;

/// A stored session: its data, when it expires and when it was created.
///
/// `data` holds the user's keys and the engine's reserved ones (those beginning with `__`, such
/// as [`DURATION_KEY`], [`LOGIN_KEY`] and [`USER_KEY`]); a store keeps it as one JSON object
/// and need not look inside, but for `USER_KEY` when it indexes users, and for what an update's
/// expiry follows ([`Record::expiry_after`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Record {
    /// The session data.
    pub data: Map<String, Value>,
    /// The moment the session stops being valid; a store never returns it after this. In a
    /// write, the expiry as the writing request sees the record; an update's stored expiry
    /// follows the record as it stands after the update instead ([`Record::expiry_after`]).
    pub expires_at: SystemTime,
    /// The moment the session was first created; kept across writes, touches and rolls.
    pub created_at: SystemTime,
    /// How the expiry follows the data, in a write from the engine; `None` in a record a store
    /// read.
    pub rule: Option<ExpiryRule>,
}

impl Record {
    /// A record with the given data and times, and no [`ExpiryRule`].
    #[must_use]
    pub fn new(data: Map<String, Value>, created_at: SystemTime, expires_at: SystemTime) -> Self {
        Self {
            data,
            expires_at,
            created_at,
            rule: None,
        }
    }

    /// The record with the rule its update's expiry follows.
    #[must_use]
    pub fn with_rule(mut self, rule: ExpiryRule) -> Self {
        self.rule = Some(rule);
        self
    }

    /// The expiry that an update of this record must store, once it has applied its changes
    /// and the stored data is `data`: the record's [`ExpiryRule`] applied to `data`, or
    /// [`expires_at`](Self::expires_at) when it has none. A store that patches its records
    /// calls it with the patched data, so that the expiry follows the custom duration and
    /// the login the record holds, whichever request set them, rather than the writing
    /// request's view of them.
    #[must_use]
    pub fn expiry_after(&self, data: &Map<String, Value>) -> SystemTime {
        self.rule
            .map_or(self.expires_at, |rule| rule.expiry(data, self.created_at))
    }
}

/// How a record's expiry follows its data, at the moment of a write: `now` plus its idle
/// lifetime (its own, under [`DURATION_KEY`], else the engine's `duration`), capped by
/// `max_lifetime` from its last login (under [`LOGIN_KEY`]), else from its creation. Times
/// are kept to the millisecond.
///
/// The engine gives one with every write ([`Record::rule`]). A store that patches records
/// applies it to the data as it stands after the patch ([`Record::expiry_after`]), so that two
/// requests that race never leave a record whose expiry contradicts its own duration; a store
/// that computes in its backend (SQL, a script) reads the fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ExpiryRule {
    /// The moment of the write, to the millisecond.
    pub now: SystemTime,
    /// The idle lifetime of a record without one of its own.
    pub duration: Duration,
    /// The absolute lifetime from the last login, else from creation; `None` for none.
    pub max_lifetime: Option<Duration>,
}

impl ExpiryRule {
    /// A rule; `duration` and `max_lifetime` count up to [`MAX_DURATION`](crate::MAX_DURATION).
    #[must_use]
    pub fn new(now: SystemTime, duration: Duration, max_lifetime: Option<Duration>) -> Self {
        Self {
            now,
            duration,
            max_lifetime,
        }
    }

    /// The expiry of a record created at `created_at` whose data is `data`, written now.
    #[must_use]
    pub fn expiry(&self, data: &Map<String, Value>, created_at: SystemTime) -> SystemTime {
        let duration = custom_duration_of(data).unwrap_or(self.duration);
        let anchor = login_of(data).unwrap_or(created_at);
        crate::lifetime::expiry(self.now, anchor, duration, self.max_lifetime)
    }
}

/// A record's own idle lifetime, if it has one ([`DURATION_KEY`]).
#[must_use]
pub fn custom_duration_of(data: &Map<String, Value>) -> Option<Duration> {
    data.get(DURATION_KEY)
        .and_then(Value::as_u64)
        .map(Duration::from_millis)
}

/// The moment of a record's last login, if it has one ([`LOGIN_KEY`]).
#[must_use]
pub fn login_of(data: &Map<String, Value>) -> Option<SystemTime> {
    data.get(LOGIN_KEY)
        .and_then(Value::as_u64)
        .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms)))
}

/// What a user's list of sessions needs of a record, and no more: its tie, its times, its
/// own idle lifetime and its last login, never its data. What
/// [`SessionStore::user_sessions`] answers with, so that listing the sessions of a user whose
/// sessions hold megabytes reads none of them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordSummary {
    /// The user the record is tied to ([`USER_KEY`]).
    pub user: String,
    /// When the record was created.
    pub created_at: SystemTime,
    /// When it expires.
    pub expires_at: SystemTime,
    /// Its own idle lifetime ([`DURATION_KEY`]), if any.
    pub duration: Option<Duration>,
    /// Its last login ([`LOGIN_KEY`]), if any.
    pub login_at: Option<SystemTime>,
}

impl RecordSummary {
    /// A summary with no idle lifetime or login of its own.
    #[must_use]
    pub fn new(user: impl Into<String>, created_at: SystemTime, expires_at: SystemTime) -> Self {
        Self {
            user: user.into(),
            created_at,
            expires_at,
            duration: None,
            login_at: None,
        }
    }

    /// The summary with the record's own idle lifetime.
    #[must_use]
    pub fn with_duration(mut self, duration: Option<Duration>) -> Self {
        self.duration = duration;
        self
    }

    /// The summary with the record's last login.
    #[must_use]
    pub fn with_login(mut self, login_at: Option<SystemTime>) -> Self {
        self.login_at = login_at;
        self
    }

    /// The summary of a whole record, for a store that holds records whole; `None` when the
    /// record is tied to no user.
    #[must_use]
    pub fn of(record: &Record) -> Option<Self> {
        let user = user_of(&record.data)?;
        Some(
            Self::new(user, record.created_at, record.expires_at)
                .with_duration(custom_duration_of(&record.data))
                .with_login(login_of(&record.data)),
        )
    }
}

/// What a `write` does: make a new record, or change one that exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteMode {
    /// A new or rolled session: create the record, and fail with [`StoreError::IdTaken`]
    /// rather than overwrite a live one (an expired one may be replaced).
    Insert,
    /// A stored session that the request modified: apply the [`Changes`], move the expiry and
    /// keep the creation time; fail with [`StoreError::Gone`] rather than recreate a record
    /// that was destroyed or expired meanwhile.
    Update,
}

/// What a `touch` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Touched {
    /// The record had the expiry the request read, and now has the new one.
    Moved,
    /// Another request wrote or touched the record after this one read it: its newer expiry
    /// stands, and the touch changed nothing.
    Superseded,
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
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A change that replaces the whole data.
    #[must_use]
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
    #[must_use]
    pub fn is_replace(&self) -> bool {
        self.replace
    }

    /// Whether nothing changed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        !self.replace && self.set.is_empty() && self.deleted.is_empty()
    }

    /// The keys that were set; their new values are in the record's data.
    pub fn set_keys(&self) -> impl ExactSizeIterator<Item = &str> {
        self.set.iter().map(String::as_str)
    }

    /// The keys that were deleted.
    pub fn deleted_keys(&self) -> impl ExactSizeIterator<Item = &str> {
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
    /// An insert found a live record under its key.
    #[error("session id is already taken")]
    IdTaken,
    /// An update or touch found no live record: it was destroyed or expired meanwhile.
    #[error("session record is gone")]
    Gone,
    /// The store holds a record under the key but cannot decode it (written by another
    /// version, or damaged). The engine treats the session as absent, leaves the record to
    /// expire, and logs this error without its source, which may quote the data.
    #[error("session record cannot be decoded")]
    Undecodable(#[source] Box<dyn StdError + Send + Sync>),
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

    /// Wraps a decoding error as [`StoreError::Undecodable`].
    pub fn undecodable(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::Undecodable(error.into())
    }

    /// The error of a hook the store does not implement, such as
    /// [`user_sessions`](SessionStore::user_sessions).
    pub fn unsupported(hook: &'static str) -> Self {
        Self::Backend(format!("this store does not implement `{hook}`").into())
    }
}

/// The user a record is tied to: its [`USER_KEY`], when that is a string.
#[must_use]
pub fn user_of(data: &Map<String, Value>) -> Option<&str> {
    data.get(USER_KEY).and_then(Value::as_str)
}

/// Parses session data kept as JSON text; a failure is [`StoreError::Undecodable`], and its
/// message never quotes the data.
pub fn decode_data(json: &[u8]) -> Result<Map<String, Value>, StoreError> {
    serde_json::from_slice(json)
        .map_err(|error| StoreError::undecodable(crate::error::DataError::new(&error)))
}

/// Session data as JSON text.
#[must_use]
pub fn encode_data(data: &Map<String, Value>) -> String {
    // A map of `Value`s always serializes: keys are strings and values are JSON.
    serde_json::to_string(data).expect("a JSON map serializes")
}

/// A session backend: the hooks the engine calls.
///
/// Keys are what the engine passes: by default base64url(SHA-256(id)), so the store never sees
/// a live id. Every hook must be safe to call concurrently for the same key, and must keep its
/// rule atomically in the backend (one locked step, statement or script):
///
/// | hook | contract |
/// | --- | --- |
/// | [`id`](Self::id) | a new session id; the default (24 random bytes from the OS) is right for almost every store |
/// | [`read`](Self::read) | the live [`Record`] under `key`, or `None`; never one past its expiry |
/// | [`write`](Self::write) | [`WriteMode::Insert`]: create, failing with [`StoreError::IdTaken`] rather than overwrite a live record. [`WriteMode::Update`]: apply `changes` (only those keys), set the expiry that the data as it stands after the update calls for ([`Record::expiry_after`]), keep `created_at`; fail with [`StoreError::Gone`] rather than recreate a record that is absent or expired. Any number of keys, and any key or value JSON holds (NUL characters included). Returns the expiry the record now has |
/// | [`touch`](Self::touch) | a compare-and-set of the expiry: from `from` (the one the request read or wrote) to `to`, only if the record still has `from`; [`Touched::Superseded`] if it has another; [`StoreError::Gone`] if there is no live record. Never recreates, never rewrites data |
/// | [`destroy`](Self::destroy) | removes the record; returns whether a live one was removed (absent is not an error) |
/// | [`cleanup`](Self::cleanup) | removes expired records, returns how many |
/// | [`user_sessions`](Self::user_sessions) | optional ([`indexes_users`](Self::indexes_users)): a [`RecordSummary`] of every live record tied to a user, none missing, none other, without reading their data |
///
/// Each hook returns a [`StoreFuture`]: [`StoreFuture::ready`] when the answer is at hand (a
/// store in this process's memory), [`StoreFuture::boxed`] when it must be waited for. A
/// record the store cannot decode is [`StoreError::Undecodable`]; an unreachable backend
/// [`StoreError::Unavailable`] (answered 503); anything else [`StoreError::Backend`] (500).
///
/// `session_engine::testing` (feature `testing`) checks all of this against any store.
pub trait SessionStore: Send + Sync + 'static {
    /// Makes a new session id. The default is 24 bytes from the operating system's CSPRNG as
    /// base64url without padding (32 characters). The engine refuses ids that are empty,
    /// longer than [`MAX_ID_LEN`] or use characters outside `[A-Za-z0-9_-]`.
    fn id(&self) -> StoreFuture<String> {
        StoreFuture::ready(random_id())
    }

    /// Returns the live record under `key`, or `None`.
    fn read(&self, key: &StoreKey) -> StoreFuture<Option<Record>>;

    /// Inserts or updates the record under `key`, as `mode` says; returns the expiry the
    /// record now has: `record.expires_at` for an insert, [`Record::expiry_after`] the updated
    /// data for an update.
    fn write(
        &self,
        key: &StoreKey,
        record: &Record,
        changes: &Changes,
        mode: WriteMode,
    ) -> StoreFuture<SystemTime>;

    /// Moves the expiry of the live record under `key` from `from` to `to`, if it still has
    /// `from`.
    fn touch(&self, key: &StoreKey, from: SystemTime, to: SystemTime) -> StoreFuture<Touched>;

    /// Removes the record under `key`; returns whether a live record was removed.
    fn destroy(&self, key: &StoreKey) -> StoreFuture<bool>;

    /// Removes expired records and returns how many.
    fn cleanup(&self) -> StoreFuture<u64>;

    /// A summary of every live record tied to `user` (whose data's [`USER_KEY`] is `user`),
    /// with its key: what lists a user's sessions and ends them all ("log out everywhere").
    /// Only the summary is read, never the data: a user's list costs what its length costs,
    /// however much data the sessions hold.
    ///
    /// None may be missing: a write that ties a record to a user makes it found here no
    /// later than the record itself can be read, and a roll's new record is found as soon as
    /// it is written. None other may be returned: no record tied to another user (or to none),
    /// expired or destroyed. An index kept beside the records may lag behind them (a stale
    /// entry left by a crash between two steps, a record that expired): this hook skips such
    /// entries and may remove them, and the engine checks each record's user again.
    ///
    /// Optional: the default answers an error, and [`indexes_users`](Self::indexes_users)
    /// says whether a store implements it, so that an engine asking for the feature
    /// (`track_users`) fails at `build()` on a store without it.
    fn user_sessions(&self, user: &str) -> StoreFuture<Vec<(StoreKey, RecordSummary)>> {
        let _ = user;
        StoreFuture::ready(Err(StoreError::unsupported("user_sessions")))
    }

    /// The name the engine's spans give this store (their `store` field; see the
    /// [observability guide](crate::guide::observability)). The default is the type's name
    /// without its path and generic arguments (`MemoryStore`): override it only to tell apart
    /// two stores of one type.
    fn name(&self) -> &'static str {
        crate::observe::short_type_name(std::any::type_name::<Self>())
    }

    /// Whether this store implements [`user_sessions`](Self::user_sessions). Default false.
    fn indexes_users(&self) -> bool {
        false
    }
}

/// 24 bytes from the operating system's CSPRNG, as 32 characters of base64url: the default of
/// the `id` hook.
pub fn random_id() -> Result<String, StoreError> {
    crate::id::SessionId::generate()
        .map(|id| id.as_str().to_owned())
        .map_err(|error| StoreError::backend(error.to_string()))
}

/// Milliseconds since the Unix epoch: the unit every bundled store keeps its times in. Times
/// before the epoch count as 0; times past `u64::MAX` ms saturate.
#[must_use]
pub fn to_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The inverse of [`to_ms`]: an error, not a panic, for a stored time this platform's
/// `SystemTime` cannot hold.
pub fn from_ms(ms: u64) -> Result<SystemTime, StoreError> {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .ok_or_else(|| StoreError::undecodable(format!("stored time {ms} ms is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn times_round_trip_in_milliseconds() {
        let time = UNIX_EPOCH + Duration::from_millis(1_234_567);
        assert_eq!(from_ms(to_ms(time)).unwrap(), time);
        assert_eq!(to_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }

    /// Found by the `sql_row` and `redis_record` fuzz targets: serde_json's default float
    /// parsing is best-effort, and read `-9.857879186114048e305` back as `…049e305`.
    #[test]
    fn r20_every_float_reads_back_exactly() {
        let floats = [
            -9.857_879_186_114_048e305,
            0.1,
            1.0 / 3.0,
            5e-324,
            2.225_073_858_507_201e-308,
            f64::MAX,
            f64::MIN_POSITIVE,
            9_007_199_254_740_993.0,
            -0.0,
        ];
        for float in floats {
            let mut data = Map::new();
            data.insert("f".into(), Value::from(float));
            let read = decode_data(encode_data(&data).as_bytes()).unwrap();
            assert_eq!(read, data, "{float:e}");
            assert_eq!(
                read["f"].as_f64().unwrap().to_bits(),
                float.to_bits(),
                "{float:e}"
            );
        }
    }

    #[test]
    fn r14_undecodable_data_is_reported_without_the_data() {
        let error = decode_data(br#"{"token": "hunter2"#).unwrap_err();
        let StoreError::Undecodable(source) = &error else {
            panic!("{error:?}");
        };
        assert!(!source.to_string().contains("hunter2"), "{source}");
        assert!(decode_data(br#""just a string""#).is_err());
        assert_eq!(decode_data(b"{}").unwrap(), Map::new());
    }
}
