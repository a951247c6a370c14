//! What an operator sees of sessions (SPEC 7.4): `tracing` spans (one per request that uses its
//! session, one per store call) and, with the `metrics` feature, counters and a histogram
//! through the `metrics` facade. The guide `docs/observability.md` lists them.
//!
//! Nothing here ever carries a session id, a store key, a user name or a data value: every
//! field and label is one of the `&'static str` below, a duration or a count.
//!
//! The cost when no one listens: a span whose callsite no subscriber enables is a check of a
//! cached interest, and no field is formatted; each metric is a static key (its hash computed
//! at compile time) handed to the no-op recorder, with no allocation.

use tokio::time::Instant;
use tracing::Span;

use crate::store::StoreError;

/// Whether this build records metrics: a store call then reads the clock even when no span
/// wants its duration.
const METRICS: bool = cfg!(feature = "metrics");

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

/// Counts `event` (with the `metrics` feature; nothing otherwise).
#[inline]
pub(crate) fn count(event: Event) {
    #[cfg(feature = "metrics")]
    metrics_impl::count(event);
    #[cfg(not(feature = "metrics"))]
    let _ = event;
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

/// Counts `event` (with the features `metrics` and `near-cache`; nothing otherwise).
#[cfg(feature = "near-cache")]
#[inline]
pub(crate) fn count_cache(event: CacheEvent) {
    #[cfg(feature = "metrics")]
    metrics_impl::count_cache(event);
    #[cfg(not(feature = "metrics"))]
    let _ = event;
}

/// A `NearCache` began (`true`) or stopped (`false`) serving reads: moves the gauge of the
/// caches that serve (with the features `metrics` and `near-cache`; nothing otherwise).
#[cfg(feature = "near-cache")]
pub(crate) fn cache_serving(serving: bool) {
    #[cfg(feature = "metrics")]
    metrics_impl::cache_serving(serving);
    #[cfg(not(feature = "metrics"))]
    let _ = serving;
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
/// duration). Tokio's clock, as the deadline's: a test that pauses time sees a time-out take
/// the store timeout.
#[derive(Debug)]
pub(crate) struct StoreCall {
    hook: Hook,
    span: Span,
    started: Option<Instant>,
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
        let started = (METRICS || !span.is_disabled()).then(Instant::now);
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
    /// duration on its span, and counts it.
    pub(crate) fn end<T>(self, result: &Result<T, StoreError>, timed_out: bool) {
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
        metrics_impl::store_call(self.hook, elapsed, result.as_ref().err(), timed_out);
        #[cfg(not(feature = "metrics"))]
        let _ = self.hook;
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
/// session's span is none then too). A disabled span from the macros would, where a dependency turns on `tracing`'s `log` feature, hand its fields
/// and each enter and exit to the `log` crate instead, at a cost of hundreds of instructions
/// a request for nothing, when no logger is set either; `log` users lose only those lines.
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
/// compile time), so that recording one allocates nothing.
#[cfg(feature = "metrics")]
mod metrics_impl {
    use std::time::Duration;

    use metrics::{Key, Label, Level, Metadata};

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

    static CREATED: Key = Key::from_static_name(names::SESSIONS_CREATED);
    static ROLLED: Key = Key::from_static_name(names::SESSIONS_ROLLED);
    static DESTROYED: Key = Key::from_static_name(names::SESSIONS_DESTROYED);
    static WRITTEN: Key = Key::from_static_name(names::SESSIONS_WRITTEN);
    static TOUCHED: Key = Key::from_static_name(names::SESSIONS_TOUCHED);
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

    #[cfg(feature = "near-cache")]
    static CACHE_HITS: Key = Key::from_static_name(names::NEAR_CACHE_HITS);
    #[cfg(feature = "near-cache")]
    static CACHE_MISSES: Key = Key::from_static_name(names::NEAR_CACHE_MISSES);
    #[cfg(feature = "near-cache")]
    static CACHE_FILLS: Key = Key::from_static_name(names::NEAR_CACHE_FILLS);
    #[cfg(feature = "near-cache")]
    static CACHE_FILLS_REFUSED: Key = Key::from_static_name(names::NEAR_CACHE_FILLS_REFUSED);
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

    fn increment(key: &'static Key) {
        metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA).increment(1));
    }

    pub(super) fn count(event: Event) {
        increment(match event {
            Event::Created => &CREATED,
            Event::Rolled => &ROLLED,
            Event::Destroyed => &DESTROYED,
            Event::Written => &WRITTEN,
            Event::Touched => &TOUCHED,
            Event::Absent(reason) => &ABSENT[reason as usize],
        });
    }

    #[cfg(feature = "near-cache")]
    pub(super) fn count_cache(event: CacheEvent) {
        increment(match event {
            CacheEvent::Hit => &CACHE_HITS,
            CacheEvent::Miss => &CACHE_MISSES,
            CacheEvent::Fill => &CACHE_FILLS,
            CacheEvent::FillRefused => &CACHE_FILLS_REFUSED,
            CacheEvent::Invalidated(origin) => &CACHE_INVALIDATIONS[origin as usize],
            CacheEvent::Reset(cause) => &CACHE_RESETS[cause as usize],
        });
    }

    #[cfg(feature = "near-cache")]
    pub(super) fn cache_serving(serving: bool) {
        metrics::with_recorder(|recorder| {
            let gauge = recorder.register_gauge(&CACHE_SERVING, &METADATA);
            if serving {
                gauge.increment(1.0);
            } else {
                gauge.decrement(1.0);
            }
        });
    }

    pub(super) fn store_call(
        hook: Hook,
        elapsed: Duration,
        error: Option<&StoreError>,
        timed_out: bool,
    ) {
        let hook = hook as usize;
        metrics::with_recorder(|recorder| {
            recorder
                .register_histogram(&CALL_SECONDS[hook], &METADATA)
                .record(elapsed.as_secs_f64());
        });
        let errors = match error {
            _ if timed_out => &TIMEOUTS,
            // `Gone` and `IdTaken` are answers of the contract, not failures.
            None | Some(StoreError::Gone | StoreError::IdTaken) => return,
            Some(StoreError::Unavailable(_)) => &UNAVAILABLE,
            Some(StoreError::Backend(_)) => &BACKEND,
            Some(StoreError::Undecodable(_)) => &UNDECODABLE,
        };
        increment(&errors[hook]);
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
