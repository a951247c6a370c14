//! What an operator sees of sessions (SPEC 7.4): `tracing` spans (one per request that uses its
//! session, one per store call) and, with the `metrics` feature, counters and a histogram
//! through the `metrics` facade. The guide `docs/observability.md` lists them.
//!
//! Nothing here ever carries a session id, a store key, a user name or a data value: every
//! field and label is one of the `&'static str` below, a duration or a count.
//!
//! The cost when no one listens: a span whose callsite no subscriber enables is a check of a
//! cached interest, and no field is formatted. Each metric is a static key (its hash computed
//! at compile time), registered with the recorder the first time it is recorded; its handle is
//! kept by the engine (or the read cache) that recorded it, so that recording it again is an
//! atomic operation on the recorder's own storage, with no look-up (see [`Metrics`]).

use tokio::time::Instant;
use tracing::Span;

use crate::store::StoreError;

/// A store hook, as spans (`hook`) and metrics (the `hook` label) name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hook {
    Id,
    Read,
    Write,
    Touch,
    Destroy,
    Cleanup,
    UserSessions,
}

impl Hook {
    #[cfg(all(test, feature = "metrics"))]
    const ALL: [Self; 7] = [
        Self::Id,
        Self::Read,
        Self::Write,
        Self::Touch,
        Self::Destroy,
        Self::Cleanup,
        Self::UserSessions,
    ];

    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::Read => "read",
            Self::Write => "write",
            Self::Touch => "touch",
            Self::Destroy => "destroy",
            Self::Cleanup => "cleanup",
            Self::UserSessions => "user_sessions",
        }
    }
}

/// Why a request found no live session under the id it presented (the `reason` label of
/// `session_engine_sessions_absent_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Absence {
    /// The store holds no record under the id (never written, destroyed, or expired and
    /// dropped by the store itself).
    Missing,
    /// The store returned a record that the engine found expired (the absolute lifetime, or
    /// a store that keeps expired records until its clean-up).
    Expired,
    /// The cookie or header did not verify (a bad or outdated signature, a malformed value).
    Invalid,
    /// The store holds a record it cannot decode.
    Undecodable,
    /// The record disappeared during the request (destroyed or expired by another one).
    Gone,
}

impl Absence {
    #[cfg(all(test, feature = "metrics"))]
    const ALL: [Self; 5] = [
        Self::Missing,
        Self::Expired,
        Self::Invalid,
        Self::Undecodable,
        Self::Gone,
    ];

    #[cfg(all(test, feature = "metrics"))]
    const fn name(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Expired => "expired",
            Self::Invalid => "invalid",
            Self::Undecodable => "undecodable",
            Self::Gone => "gone",
        }
    }
}

/// Something that happened to a session, counted when it happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A new session's record was inserted.
    Created,
    /// A roll is complete: the new record is in and the old one destroyed.
    Rolled,
    /// A live record was destroyed by `destroy()`, `invalidate()` or the end of a user's
    /// sessions.
    Destroyed,
    /// A stored session's changes were written.
    Written,
    /// A stored session's expiry was moved.
    Touched,
    /// No live session under the id presented.
    Absent(Absence),
}

/// The metrics one engine records (with the `metrics` feature; nothing, and no field,
/// otherwise): the handle of each, registered with the recorder in place the first time it is
/// recorded, then kept.
///
/// Looking a metric up in the recorder on every event cost about 450 instructions a metric
/// with Prometheus' recorder (its registry's lock, hashing and key comparison; callgrind of
/// `bench/src/bin/hot_path.rs`), which put the rows with metrics 4 to 10 % over those without
/// in instructions, and 16 to 32 % in time. A kept handle is the `metrics` crate's own advice
/// for a hot path. What it asks of the application: install the recorder before the engine
/// records anything (before it serves), and have no exporter drop these metrics while idle
/// (the guide says why).
#[derive(Default)]
pub(crate) struct Metrics {
    #[cfg(feature = "metrics")]
    handles: metrics_impl::Handles,
}

impl Metrics {
    /// Counts `event`.
    #[inline]
    pub(crate) fn count(&self, event: Event) {
        #[cfg(feature = "metrics")]
        self.handles.count(event);
        #[cfg(not(feature = "metrics"))]
        let _ = event;
    }
}

/// Something a `NearCache` did (feature `near-cache`), counted when it happens.
#[cfg(feature = "near-cache")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CacheEvent {
    /// A read answered from memory.
    Hit,
    /// A read sent to the store.
    Miss,
    /// A store's answer kept in memory.
    Fill,
    /// A store's answer not kept: an invalidation or a reset came while it was in flight.
    FillRefused,
    /// A key dropped.
    Invalidated(Origin),
    /// The cache emptied.
    Reset(Reset),
}

/// Who dropped a key from a `NearCache` (the `origin` label of
/// `session_engine_near_cache_invalidations_total`).
#[cfg(feature = "near-cache")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The invalidation channel: another instance's change, or the store's expiry or eviction
    /// (and, on Redis, the echo of this instance's own changes).
    Channel,
    /// This instance's own `write`, `touch` or `destroy`, which drops its key before it is
    /// sent and again once it is answered.
    Own,
}

/// Why a `NearCache` was emptied: the call of its channel that did it (the `cause` label of
/// `session_engine_near_cache_resets_total`).
#[cfg(feature = "near-cache")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reset {
    /// The channel came up: the cache serves again, empty.
    Up,
    /// The channel went down or fell behind: the cache serves nothing until it is up.
    Down,
    /// The channel lost messages but stays up: the cache is emptied and keeps serving.
    Clear,
}

/// The metrics one `NearCache` records (with the features `metrics` and `near-cache`; nothing
/// otherwise), their handles kept as [`Metrics`] keeps an engine's.
#[cfg(feature = "near-cache")]
#[derive(Default)]
pub(crate) struct CacheMetrics {
    #[cfg(feature = "metrics")]
    handles: metrics_impl::CacheHandles,
}

#[cfg(feature = "near-cache")]
impl CacheMetrics {
    /// Counts `event`.
    #[inline]
    pub(crate) fn count(&self, event: CacheEvent) {
        #[cfg(feature = "metrics")]
        self.handles.count(event);
        #[cfg(not(feature = "metrics"))]
        let _ = event;
    }

    /// The cache began (`true`) or stopped (`false`) serving reads: moves the gauge of the
    /// caches that serve.
    pub(crate) fn serving(&self, serving: bool) {
        #[cfg(feature = "metrics")]
        self.handles.serving(serving);
        #[cfg(not(feature = "metrics"))]
        let _ = serving;
    }
}

/// The outcome of one store call, as its span's `outcome` field says it.
fn call_outcome<T>(result: &Result<T, StoreError>, timed_out: bool) -> &'static str {
    match result {
        _ if timed_out => "timeout",
        Ok(_) => "ok",
        Err(error) => error_kind(error),
    }
}

/// The kind of a store error: a span's `outcome`, and the `kind` label of
/// `session_engine_store_errors_total` for the last three.
fn error_kind(error: &StoreError) -> &'static str {
    match error {
        StoreError::IdTaken => "id_taken",
        StoreError::Gone => "gone",
        StoreError::Undecodable(_) => "undecodable",
        StoreError::Unavailable(_) => "unavailable",
        StoreError::Backend(_) => "backend",
    }
}

/// One store call being made: its span, and when it began (read only when someone wants the
/// duration).
#[derive(Debug)]
pub(crate) struct StoreCall {
    hook: Hook,
    span: Span,
    started: Option<Started>,
}

/// When a store call began, on the clock its duration is read from.
#[derive(Clone, Copy, Debug)]
enum Started {
    /// Tokio's clock, as the deadline's, when a span records the duration: a test that pauses
    /// time sees a time-out take the store timeout.
    Tokio(Instant),
    /// A raw read of the CPU's counter, through `quanta` (the OS's monotonic clock where it
    /// has none that is steady), when only the metrics want the duration: two reads a store
    /// call and one scaling of their difference, 22 ns where two reads of the OS's clock take
    /// 38 ns (`bench/src/bin/metric_costs.rs`, on `BENCHMARKS.md`'s machine). Raw, and from a
    /// `Clock` of this crate's own: `quanta::Instant::now` looks for a mocked clock in a
    /// thread-local and scales every read, which callgrind of `bench/src/bin/hot_path.rs` put
    /// at about 45 instructions a read (183 of the 848 that the metrics added to a request that
    /// reads and writes). A clock mocked with `quanta::with_clock` does not reach it.
    #[cfg(feature = "metrics")]
    Counter(u64),
}

impl Started {
    fn elapsed(self) -> std::time::Duration {
        match self {
            Self::Tokio(started) => started.elapsed(),
            #[cfg(feature = "metrics")]
            Self::Counter(started) => {
                let clock = counter_clock();
                clock.delta(started, clock.raw())
            }
        }
    }
}

/// The clock of the metrics' store-call latency.
#[cfg(feature = "metrics")]
fn counter_clock() -> &'static quanta::Clock {
    static CLOCK: std::sync::OnceLock<quanta::Clock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

/// Calibrates the clock of the metrics' store-call latency, which making it does (about
/// 0.6 ms here, up to 200 ms by `quanta`'s account): called as an engine is built, so that no
/// request pays it.
pub(crate) fn prepare_clock() {
    #[cfg(feature = "metrics")]
    let _ = counter_clock();
}

impl StoreCall {
    /// The call of `hook` on the store named `store` begins, in the current span (the
    /// request's session span, when a request makes it).
    #[inline]
    pub(crate) fn begin(hook: Hook, store: &'static str) -> Self {
        let span = if tracing::dispatcher::has_been_set() {
            tracing::debug_span!(
                "session_store",
                hook = hook.name(),
                store,
                outcome = tracing::field::Empty,
                duration_ms = tracing::field::Empty,
            )
        } else {
            no_span()
        };
        let started = if !span.is_disabled() {
            Some(Started::Tokio(Instant::now()))
        } else {
            #[cfg(feature = "metrics")]
            let started = Some(Started::Counter(counter_clock().raw()));
            #[cfg(not(feature = "metrics"))]
            let started = None;
            started
        };
        Self {
            hook,
            span,
            started,
        }
    }

    /// Whether anyone listens: a span subscriber, or the `metrics` feature.
    pub(crate) fn observed(&self) -> bool {
        self.started.is_some()
    }

    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// The call has answered `result` (a time-out when `timed_out`): records its outcome and
    /// duration on its span, and counts it in `metrics`.
    pub(crate) fn end<T>(self, result: &Result<T, StoreError>, timed_out: bool, metrics: &Metrics) {
        let Some(started) = self.started else {
            return;
        };
        let elapsed = started.elapsed();
        if !self.span.is_disabled() {
            self.span.record("outcome", call_outcome(result, timed_out));
            self.span
                .record("duration_ms", elapsed.as_secs_f64() * 1000.0);
        }
        #[cfg(feature = "metrics")]
        metrics
            .handles
            .store_call(self.hook, elapsed, result.as_ref().err(), timed_out);
        #[cfg(not(feature = "metrics"))]
        let _ = (self.hook, metrics);
    }
}

/// The outcome of a request for its session, as the `outcome` field of its `session` span
/// says it: what happened to the session, the most telling first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Marks(u16);

impl Marks {
    /// A stored session was read.
    pub(crate) const READ: Self = Self(1);
    /// A fresh session was begun (no id presented, or none with a live record).
    pub(crate) const BEGUN: Self = Self(1 << 1);
    /// The id presented had no live record.
    pub(crate) const ABSENT: Self = Self(1 << 2);
    /// A fresh session's record was inserted.
    pub(crate) const CREATED: Self = Self(1 << 3);
    /// A stored session's changes were written.
    pub(crate) const WRITTEN: Self = Self(1 << 4);
    /// The expiry was moved.
    pub(crate) const TOUCHED: Self = Self(1 << 5);
    /// A roll was written.
    pub(crate) const ROLLED: Self = Self(1 << 6);
    /// The session was destroyed (`destroy()`, `invalidate()`).
    pub(crate) const DESTROYED: Self = Self(1 << 7);

    pub(crate) fn set(&mut self, marks: Self) {
        self.0 |= marks.0;
    }

    fn has(self, marks: Self) -> bool {
        self.0 & marks.0 != 0
    }

    /// The request's outcome: `failed` when its session made it fail, else the most telling
    /// mark; `None` when nothing happened to the session.
    pub(crate) fn outcome(self, failed: bool) -> Option<&'static str> {
        Some(match self {
            _ if failed => "failed",
            m if m.has(Self::DESTROYED) => "destroyed",
            m if m.has(Self::ROLLED) => "rolled",
            m if m.has(Self::CREATED) => "new",
            m if m.has(Self::WRITTEN) => "written",
            m if m.has(Self::TOUCHED) => "touched",
            m if m.has(Self::ABSENT) => "absent",
            m if m.has(Self::READ) => "read",
            m if m.has(Self::BEGUN) => "new",
            _ => return None,
        })
    }
}

/// The span of a request that uses its session; its `outcome` is recorded once known.
pub(crate) fn session_span() -> Span {
    tracing::info_span!("session", outcome = tracing::field::Empty)
}

/// The span of a store call made while no `tracing` subscriber was ever set: none at all (the
/// session's span is none then too). A disabled span from the macros would, where a
/// dependency turns on `tracing`'s `log` feature, hand its fields and each enter and exit to
/// the `log` crate instead, at a cost of hundreds of instructions a request for nothing, when
/// no logger is set either; `log` users lose only those lines.
fn no_span() -> Span {
    Span::none()
}

/// The name spans give a store: its type's, without the path and the generic arguments
/// (`session_engine::store::memory::MemoryStore` is `MemoryStore`).
pub(crate) fn short_type_name(full: &'static str) -> &'static str {
    let plain = full.split('<').next().unwrap_or(full);
    plain.rsplit("::").next().unwrap_or(plain)
}

/// The metrics themselves: each one a static key (its labels static too, its hash computed at
/// compile time), registered once and its handle kept, so that recording one allocates
/// nothing and looks nothing up.
#[cfg(feature = "metrics")]
mod metrics_impl {
    use std::sync::OnceLock;
    use std::time::Duration;

    #[cfg(feature = "near-cache")]
    use metrics::Gauge;
    use metrics::{Counter, Histogram, Key, Label, Level, Metadata};

    #[cfg(feature = "near-cache")]
    use super::CacheEvent;
    use super::{Event, Hook};
    use crate::observability as names;
    use crate::store::StoreError;

    static METADATA: Metadata<'static> =
        Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

    /// The static key of `$name` with these labels.
    macro_rules! key {
        ($name:expr, $k:literal => $v:literal) => {{
            static LABELS: [Label; 1] = [Label::from_static_parts($k, $v)];
            Key::from_static_parts($name, &LABELS)
        }};
        ($name:expr, $k1:literal => $v1:literal, $k2:literal => $v2:literal) => {{
            static LABELS: [Label; 2] = [
                Label::from_static_parts($k1, $v1),
                Label::from_static_parts($k2, $v2),
            ];
            Key::from_static_parts($name, &LABELS)
        }};
    }

    /// The keys of `$name` for each hook, in the order of `Hook`'s variants, with the labels
    /// that follow `hook`.
    macro_rules! by_hook {
        ($name:expr $(, $k:literal => $v:literal)?) => {
            [
                key!($name, "hook" => "id" $(, $k => $v)?),
                key!($name, "hook" => "read" $(, $k => $v)?),
                key!($name, "hook" => "write" $(, $k => $v)?),
                key!($name, "hook" => "touch" $(, $k => $v)?),
                key!($name, "hook" => "destroy" $(, $k => $v)?),
                key!($name, "hook" => "cleanup" $(, $k => $v)?),
                key!($name, "hook" => "user_sessions" $(, $k => $v)?),
            ]
        };
    }

    /// In the order of `Handles::event`'s slots.
    static EVENTS: [Key; 5] = [
        Key::from_static_name(names::SESSIONS_CREATED),
        Key::from_static_name(names::SESSIONS_ROLLED),
        Key::from_static_name(names::SESSIONS_DESTROYED),
        Key::from_static_name(names::SESSIONS_WRITTEN),
        Key::from_static_name(names::SESSIONS_TOUCHED),
    ];
    /// In the order of `Absence`'s variants.
    static ABSENT: [Key; 5] = [
        key!(names::SESSIONS_ABSENT, "reason" => "missing"),
        key!(names::SESSIONS_ABSENT, "reason" => "expired"),
        key!(names::SESSIONS_ABSENT, "reason" => "invalid"),
        key!(names::SESSIONS_ABSENT, "reason" => "undecodable"),
        key!(names::SESSIONS_ABSENT, "reason" => "gone"),
    ];
    static CALL_SECONDS: [Key; 7] = by_hook!(names::STORE_CALL_SECONDS);
    static TIMEOUTS: [Key; 7] = by_hook!(names::STORE_TIMEOUTS);
    static UNAVAILABLE: [Key; 7] = by_hook!(names::STORE_ERRORS, "kind" => "unavailable");
    static BACKEND: [Key; 7] = by_hook!(names::STORE_ERRORS, "kind" => "backend");
    static UNDECODABLE: [Key; 7] = by_hook!(names::STORE_ERRORS, "kind" => "undecodable");

    /// In the order of `CacheHandles::event`'s slots.
    #[cfg(feature = "near-cache")]
    static CACHE_EVENTS: [Key; 4] = [
        Key::from_static_name(names::NEAR_CACHE_HITS),
        Key::from_static_name(names::NEAR_CACHE_MISSES),
        Key::from_static_name(names::NEAR_CACHE_FILLS),
        Key::from_static_name(names::NEAR_CACHE_FILLS_REFUSED),
    ];
    /// In the order of `Origin`'s variants.
    #[cfg(feature = "near-cache")]
    static CACHE_INVALIDATIONS: [Key; 2] = [
        key!(names::NEAR_CACHE_INVALIDATIONS, "origin" => "channel"),
        key!(names::NEAR_CACHE_INVALIDATIONS, "origin" => "own"),
    ];
    /// In the order of `Reset`'s variants.
    #[cfg(feature = "near-cache")]
    static CACHE_RESETS: [Key; 3] = [
        key!(names::NEAR_CACHE_RESETS, "cause" => "up"),
        key!(names::NEAR_CACHE_RESETS, "cause" => "down"),
        key!(names::NEAR_CACHE_RESETS, "cause" => "clear"),
    ];
    #[cfg(feature = "near-cache")]
    static CACHE_SERVING: Key = Key::from_static_name(names::NEAR_CACHE_SERVING);

    /// The handle in `slot` of the counter `key`, registered with the recorder in place the
    /// first time it is used: a metric never recorded is never registered, so that an
    /// exporter shows only what happened.
    fn counter<'a>(slot: &'a OnceLock<Counter>, key: &'static Key) -> &'a Counter {
        slot.get_or_init(|| metrics::with_recorder(|r| r.register_counter(key, &METADATA)))
    }

    /// As `counter`, for a histogram.
    fn histogram<'a>(slot: &'a OnceLock<Histogram>, key: &'static Key) -> &'a Histogram {
        slot.get_or_init(|| metrics::with_recorder(|r| r.register_histogram(key, &METADATA)))
    }

    /// An engine's handles, each array in the order of its keys'.
    #[derive(Default)]
    pub(super) struct Handles {
        events: [OnceLock<Counter>; 5],
        absent: [OnceLock<Counter>; 5],
        call_seconds: [OnceLock<Histogram>; 7],
        timeouts: [OnceLock<Counter>; 7],
        unavailable: [OnceLock<Counter>; 7],
        backend: [OnceLock<Counter>; 7],
        undecodable: [OnceLock<Counter>; 7],
    }

    impl Handles {
        /// The slot of `event`'s counter, and its key.
        fn event(&self, event: Event) -> (&OnceLock<Counter>, &'static Key) {
            let (slots, keys, i) = match event {
                Event::Created => (&self.events, &EVENTS, 0),
                Event::Rolled => (&self.events, &EVENTS, 1),
                Event::Destroyed => (&self.events, &EVENTS, 2),
                Event::Written => (&self.events, &EVENTS, 3),
                Event::Touched => (&self.events, &EVENTS, 4),
                Event::Absent(reason) => (&self.absent, &ABSENT, reason as usize),
            };
            (&slots[i], &keys[i])
        }

        pub(super) fn count(&self, event: Event) {
            let (slot, key) = self.event(event);
            counter(slot, key).increment(1);
        }

        pub(super) fn store_call(
            &self,
            hook: Hook,
            elapsed: Duration,
            error: Option<&StoreError>,
            timed_out: bool,
        ) {
            let hook = hook as usize;
            histogram(&self.call_seconds[hook], &CALL_SECONDS[hook]).record(elapsed.as_secs_f64());
            let (slots, keys) = match error {
                _ if timed_out => (&self.timeouts, &TIMEOUTS),
                // `Gone` and `IdTaken` are answers of the contract, not failures.
                None | Some(StoreError::Gone | StoreError::IdTaken) => return,
                Some(StoreError::Unavailable(_)) => (&self.unavailable, &UNAVAILABLE),
                Some(StoreError::Backend(_)) => (&self.backend, &BACKEND),
                Some(StoreError::Undecodable(_)) => (&self.undecodable, &UNDECODABLE),
            };
            counter(&slots[hook], &keys[hook]).increment(1);
        }
    }

    /// A read cache's handles, each array in the order of its keys'.
    #[cfg(feature = "near-cache")]
    #[derive(Default)]
    pub(super) struct CacheHandles {
        events: [OnceLock<Counter>; 4],
        invalidations: [OnceLock<Counter>; 2],
        resets: [OnceLock<Counter>; 3],
        serving: OnceLock<Gauge>,
    }

    #[cfg(feature = "near-cache")]
    impl CacheHandles {
        /// The slot of `event`'s counter, and its key.
        fn event(&self, event: CacheEvent) -> (&OnceLock<Counter>, &'static Key) {
            let (slots, keys, i): (&[_], &'static [Key], _) = match event {
                CacheEvent::Hit => (&self.events, &CACHE_EVENTS, 0),
                CacheEvent::Miss => (&self.events, &CACHE_EVENTS, 1),
                CacheEvent::Fill => (&self.events, &CACHE_EVENTS, 2),
                CacheEvent::FillRefused => (&self.events, &CACHE_EVENTS, 3),
                CacheEvent::Invalidated(origin) => {
                    (&self.invalidations, &CACHE_INVALIDATIONS, origin as usize)
                }
                CacheEvent::Reset(cause) => (&self.resets, &CACHE_RESETS, cause as usize),
            };
            (&slots[i], &keys[i])
        }

        pub(super) fn count(&self, event: CacheEvent) {
            let (slot, key) = self.event(event);
            counter(slot, key).increment(1);
        }

        pub(super) fn serving(&self, serving: bool) {
            let gauge = self.serving.get_or_init(|| {
                metrics::with_recorder(|r| r.register_gauge(&CACHE_SERVING, &METADATA))
            });
            if serving {
                gauge.increment(1.0);
            } else {
                gauge.decrement(1.0);
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::super::{Absence, error_kind};
        use super::*;

        #[cfg(feature = "near-cache")]
        #[test]
        fn the_cache_keys_follow_the_order_of_the_variants() {
            use super::super::{Origin, Reset};

            for (origin, name) in [(Origin::Channel, "channel"), (Origin::Own, "own")] {
                let label = CACHE_INVALIDATIONS[origin as usize]
                    .labels()
                    .next()
                    .unwrap();
                assert_eq!((label.key(), label.value()), ("origin", name));
            }
            for (cause, name) in [
                (Reset::Up, "up"),
                (Reset::Down, "down"),
                (Reset::Clear, "clear"),
            ] {
                let label = CACHE_RESETS[cause as usize].labels().next().unwrap();
                assert_eq!((label.key(), label.value()), ("cause", name));
            }
        }

        #[test]
        fn each_event_has_the_key_of_its_name() {
            for (event, name) in [
                (Event::Created, names::SESSIONS_CREATED),
                (Event::Rolled, names::SESSIONS_ROLLED),
                (Event::Destroyed, names::SESSIONS_DESTROYED),
                (Event::Written, names::SESSIONS_WRITTEN),
                (Event::Touched, names::SESSIONS_TOUCHED),
            ] {
                assert_eq!(Handles::default().event(event).1.name(), name);
            }
            for reason in Absence::ALL {
                let key = Handles::default().event(Event::Absent(reason)).1;
                assert_eq!(key, &ABSENT[reason as usize]);
            }
        }

        #[cfg(feature = "near-cache")]
        #[test]
        fn each_cache_event_has_the_key_of_its_name() {
            for (event, name) in [
                (CacheEvent::Hit, names::NEAR_CACHE_HITS),
                (CacheEvent::Miss, names::NEAR_CACHE_MISSES),
                (CacheEvent::Fill, names::NEAR_CACHE_FILLS),
                (CacheEvent::FillRefused, names::NEAR_CACHE_FILLS_REFUSED),
            ] {
                assert_eq!(CacheHandles::default().event(event).1.name(), name);
            }
        }

        #[test]
        fn the_keys_follow_the_order_of_the_variants() {
            for (i, hook) in Hook::ALL.into_iter().enumerate() {
                assert_eq!(hook as usize, i);
                for keys in [
                    &CALL_SECONDS,
                    &TIMEOUTS,
                    &UNAVAILABLE,
                    &BACKEND,
                    &UNDECODABLE,
                ] {
                    let label = keys[i].labels().next().expect("a hook label");
                    assert_eq!((label.key(), label.value()), ("hook", hook.name()));
                }
            }
            for (keys, kind) in [
                (&UNAVAILABLE, "unavailable"),
                (&BACKEND, "backend"),
                (&UNDECODABLE, "undecodable"),
            ] {
                let kinds: Vec<_> = keys
                    .iter()
                    .map(|key| key.labels().nth(1).unwrap().value().to_owned())
                    .collect();
                assert!(kinds.iter().all(|k| k == kind));
                assert_eq!(
                    error_kind(&match kind {
                        "unavailable" => StoreError::unavailable("x"),
                        "backend" => StoreError::backend("x"),
                        _ => StoreError::undecodable("x"),
                    }),
                    kind
                );
            }
            for (i, reason) in Absence::ALL.into_iter().enumerate() {
                assert_eq!(reason as usize, i);
                let label = ABSENT[i].labels().next().expect("a reason label");
                assert_eq!((label.key(), label.value()), ("reason", reason.name()));
            }
        }
    }
}
