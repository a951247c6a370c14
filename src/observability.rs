//! The names of the metrics session-engine records (feature `metrics`), with their help text,
//! and (with the feature) `describe_metrics`, which gives the recorder that text. The spans,
//! the metrics, what each means and the alerts to set on them: the
//! [observability guide](crate::guide::observability).
//!
//! Every metric goes through the [`metrics`](https://docs.rs/metrics) facade: the application
//! installs the recorder it wants (Prometheus, OpenTelemetry, StatsD…), or none, and nothing is
//! recorded. No label ever carries a session id, a store key, a user name or a data value: the
//! labels are `hook` (a store hook: `id`, `read`, `write`, `touch`, `destroy`, `cleanup`,
//! `user_sessions`), `kind` (`unavailable`, `backend`, `undecodable`), `reason` (`missing`,
//! `expired`, `invalid`, `undecodable`, `gone`), and for the read cache `origin` (`channel`,
//! `own`) and `cause` (`up`, `down`, `clear`).
//!
//! The read cache's metrics (`session_engine_near_cache_*`) are recorded when the features
//! `metrics` and `near-cache` are both on.

/// Counter: new sessions inserted in the store (a visitor's first write; not rolls).
pub const SESSIONS_CREATED: &str = "session_engine_sessions_created_total";

/// Counter: rolls completed (`roll()`: the new record written, the old one destroyed).
pub const SESSIONS_ROLLED: &str = "session_engine_sessions_rolled_total";

/// Counter: live sessions destroyed by `destroy()`, `invalidate()`, the end of a user's other
/// or all sessions, and the limit of sessions per user.
pub const SESSIONS_DESTROYED: &str = "session_engine_sessions_destroyed_total";

/// Counter, label `reason`: requests that presented an id with no live session behind it:
/// `missing` (no record), `expired` (a record the engine found expired), `invalid` (a cookie
/// or header that does not verify), `undecodable` (a record the store cannot decode), `gone`
/// (the record disappeared during the request).
pub const SESSIONS_ABSENT: &str = "session_engine_sessions_absent_total";

/// Counter: stored sessions whose changes were written back (updates; inserts count as created
/// or rolled).
pub const SESSIONS_WRITTEN: &str = "session_engine_sessions_written_total";

/// Counter: stored sessions whose expiry was moved (the automatic touch, or `touch()`).
pub const SESSIONS_TOUCHED: &str = "session_engine_sessions_touched_total";

/// Counter, labels `hook` and `kind`: store calls that failed: `unavailable` (the backend could
/// not be reached), `backend` (any other failure), `undecodable` (a record that cannot be
/// decoded). Time-outs are counted apart, in [`STORE_TIMEOUTS`]; `Gone` and `IdTaken` are
/// answers of the store contract, not failures.
pub const STORE_ERRORS: &str = "session_engine_store_errors_total";

/// Counter, label `hook`: store calls that the engine gave up on at its `store_timeout`.
pub const STORE_TIMEOUTS: &str = "session_engine_store_timeouts_total";

/// Histogram, label `hook`: the time each store call took, in seconds, failures and time-outs
/// included.
pub const STORE_CALL_SECONDS: &str = "session_engine_store_call_seconds";

/// Counter: reads the `NearCache` answered from memory.
pub const NEAR_CACHE_HITS: &str = "session_engine_near_cache_hits_total";

/// Counter: reads the `NearCache` sent to its store: the record was not
/// held, or had expired, or the cache was not serving (its invalidation channel down).
pub const NEAR_CACHE_MISSES: &str = "session_engine_near_cache_misses_total";

/// Counter: answers of the store that the `NearCache` kept in memory.
pub const NEAR_CACHE_FILLS: &str = "session_engine_near_cache_fills_total";

/// Counter: answers of the store that the `NearCache` did not keep,
/// because an invalidation of their key or a reset came while they were in flight.
pub const NEAR_CACHE_FILLS_REFUSED: &str = "session_engine_near_cache_fills_refused_total";

/// Counter, label `origin`: keys the `NearCache` dropped: `channel`
/// (its invalidation channel told of a change: another instance's, an expiry, an eviction, or
/// on Redis the echo of this instance's own), `own` (this instance's `write`, `touch` or
/// `destroy`, which drops its key twice: before the call and once it is answered).
pub const NEAR_CACHE_INVALIDATIONS: &str = "session_engine_near_cache_invalidations_total";

/// Counter, label `cause`: times the `NearCache` was emptied: `up` (its
/// invalidation channel came up, or back), `down` (it went down or fell behind: nothing is
/// served until it is up), `clear` (it lost messages but stayed up).
pub const NEAR_CACHE_RESETS: &str = "session_engine_near_cache_resets_total";

/// Gauge: how many `NearCache`s of this process serve reads now (their invalidation channel
/// up); usually one cache, so 1 when it serves and 0 when it does not. Each cache moves it by
/// one as it starts or stops serving: install the recorder before making the cache, as for
/// every metric, or the gauge misses the cache's start.
pub const NEAR_CACHE_SERVING: &str = "session_engine_near_cache_serving";

/// Every metric's name, with what kind it is and its help text.
pub const ALL: [(&str, Kind, &str); 16] = [
    (
        SESSIONS_CREATED,
        Kind::Counter,
        "New sessions inserted in the store.",
    ),
    (
        SESSIONS_ROLLED,
        Kind::Counter,
        "Sessions rolled to a new id.",
    ),
    (
        SESSIONS_DESTROYED,
        Kind::Counter,
        "Live sessions destroyed.",
    ),
    (
        SESSIONS_ABSENT,
        Kind::Counter,
        "Requests whose id had no live session, by reason.",
    ),
    (
        SESSIONS_WRITTEN,
        Kind::Counter,
        "Stored sessions whose changes were written.",
    ),
    (
        SESSIONS_TOUCHED,
        Kind::Counter,
        "Stored sessions whose expiry was moved.",
    ),
    (
        STORE_ERRORS,
        Kind::Counter,
        "Failed store calls, by hook and kind (time-outs apart).",
    ),
    (
        STORE_TIMEOUTS,
        Kind::Counter,
        "Store calls abandoned at the store timeout, by hook.",
    ),
    (
        STORE_CALL_SECONDS,
        Kind::Histogram,
        "Time taken by store calls, by hook.",
    ),
    (
        NEAR_CACHE_HITS,
        Kind::Counter,
        "Reads the near cache answered from memory.",
    ),
    (
        NEAR_CACHE_MISSES,
        Kind::Counter,
        "Reads the near cache sent to the store.",
    ),
    (
        NEAR_CACHE_FILLS,
        Kind::Counter,
        "Store answers the near cache kept.",
    ),
    (
        NEAR_CACHE_FILLS_REFUSED,
        Kind::Counter,
        "Store answers the near cache refused: an invalidation or reset overtook them.",
    ),
    (
        NEAR_CACHE_INVALIDATIONS,
        Kind::Counter,
        "Keys the near cache dropped, by origin (channel or own change).",
    ),
    (
        NEAR_CACHE_RESETS,
        Kind::Counter,
        "Times the near cache was emptied, by cause (channel up, down, or messages lost).",
    ),
    (
        NEAR_CACHE_SERVING,
        Kind::Gauge,
        "Near caches of this process serving reads (their invalidation channel up).",
    ),
];

/// The kind of a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A count that only goes up.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution of values (durations, in seconds).
    Histogram,
}

/// Gives every metric of [`ALL`] its help text (and a histogram its unit) in the recorder
/// installed now: call it once after installing the recorder, so that an exporter can show
/// them (Prometheus' `# HELP` lines).
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub fn describe_metrics() {
    for (name, kind, help) in ALL {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, metrics::Unit::Seconds, help),
        }
    }
}
