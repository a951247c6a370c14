//! [`Lifetime`]: every piece of arithmetic on a session's times. When a session expires if it
//! is written or touched now, whether a record has expired, and whether an automatic touch is
//! due.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::store::ExpiryRule;

/// The longest duration or lifetime that counts: 100 years. Longer ones are treated as this.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The shortest duration or lifetime that counts: a millisecond, the unit stores keep times
/// in. A shorter one would round to nothing, and every session would expire as it is written.
pub(crate) const MIN_DURATION: Duration = Duration::from_millis(1);

/// The longest default touch interval.
const MAX_DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// How long after a write or touch the next automatic touch is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TouchInterval {
    /// `min(60 s, duration / 10)` of each session's own duration.
    Default,
    /// A fixed interval (`ZERO`: every request), at most half the session's duration.
    Fixed(Duration),
}

/// The engine's timings and its clock.
#[derive(Clone)]
pub(crate) struct Lifetime {
    duration: Duration,
    max_lifetime: Option<Duration>,
    touch_interval: TouchInterval,
    clock: Option<Clock>,
}

impl Lifetime {
    pub(crate) fn new(
        duration: Duration,
        max_lifetime: Option<Duration>,
        touch_interval: TouchInterval,
        clock: Option<Clock>,
    ) -> Self {
        Self {
            duration: duration.min(MAX_DURATION),
            max_lifetime: max_lifetime.map(|max| max.min(MAX_DURATION)),
            touch_interval,
            clock,
        }
    }

    /// Now, to the millisecond (what stores keep): times the engine hands a store compare
    /// equal to what it reads back.
    pub(crate) fn now(&self) -> SystemTime {
        let now = match &self.clock {
            Some(clock) => clock(),
            None => SystemTime::now(),
        };
        to_millisecond(now)
    }

    /// The idle lifetime: the session's own (`custom`, from `set_duration`), else the engine's.
    pub(crate) fn duration(&self, custom: Option<Duration>) -> Duration {
        custom.map_or(self.duration, |custom| custom.min(MAX_DURATION))
    }

    /// The expiry of a session whose absolute lifetime runs from `anchor` (its last login,
    /// else its creation), written or touched at `now` with idle lifetime `duration`:
    /// `now + duration`, capped by `max_lifetime`.
    pub(crate) fn expiry(
        &self,
        now: SystemTime,
        anchor: SystemTime,
        duration: Duration,
    ) -> SystemTime {
        expiry(now, anchor, duration, self.max_lifetime)
    }

    /// The rule an update's expiry follows, for a write at `now`.
    pub(crate) fn rule(&self, now: SystemTime) -> ExpiryRule {
        ExpiryRule::new(now, self.duration, self.max_lifetime)
    }

    /// When a record with these times was last written or touched: its expiry less its idle
    /// lifetime; `None` when the absolute lifetime (from `anchor`, its last login or its
    /// creation) set the expiry, which hides that moment.
    pub(crate) fn last_active(
        &self,
        anchor: SystemTime,
        expires_at: SystemTime,
        duration: Duration,
    ) -> Option<SystemTime> {
        let capped = self
            .max_lifetime
            .is_some_and(|max| to_millisecond(later(anchor, max)) <= expires_at);
        if capped {
            return None;
        }
        expires_at.checked_sub(duration)
    }

    /// Whether a record with these times is past its expiry or its absolute lifetime (from
    /// `anchor`: its last login, else its creation).
    pub(crate) fn is_expired(
        &self,
        now: SystemTime,
        anchor: SystemTime,
        expires_at: SystemTime,
    ) -> bool {
        expires_at <= now
            || self
                .max_lifetime
                .is_some_and(|max| later(anchor, max) <= now)
    }

    /// The new expiry, when an automatic touch of a record that expires at `expires_at` is
    /// due at `now`: its last write or touch (`expires_at - duration`) was at least the touch
    /// interval ago, and the touch would move the expiry.
    pub(crate) fn touch_due(
        &self,
        now: SystemTime,
        anchor: SystemTime,
        expires_at: SystemTime,
        duration: Duration,
    ) -> Option<SystemTime> {
        let next = self.expiry(now, anchor, duration);
        if next <= expires_at {
            return None;
        }
        let interval = self.interval(duration);
        let last = expires_at.checked_sub(duration)?;
        let since = now.duration_since(last).unwrap_or_default();
        (since >= interval).then_some(next)
    }

    /// The touch interval of a session whose idle lifetime is `duration`.
    fn interval(&self, duration: Duration) -> Duration {
        match self.touch_interval {
            TouchInterval::Default => (duration / 10).min(MAX_DEFAULT_INTERVAL),
            TouchInterval::Fixed(interval) => interval.min(duration / 2),
        }
    }

    /// Whole seconds from `now` to `expires_at` (0 once it has passed): a cookie's `Max-Age`.
    pub(crate) fn seconds_left(now: SystemTime, expires_at: SystemTime) -> u64 {
        expires_at.duration_since(now).unwrap_or_default().as_secs()
    }
}

impl fmt::Debug for Lifetime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lifetime")
            .field("duration", &self.duration)
            .field("max_lifetime", &self.max_lifetime)
            .field("touch_interval", &self.touch_interval)
            .finish_non_exhaustive()
    }
}

/// The expiry of a session whose absolute lifetime runs from `anchor`, written or touched at
/// `now` with idle lifetime `duration`: `now + duration`, capped by `anchor + max_lifetime`, to
/// the millisecond. The one formula of the engine and of [`ExpiryRule`].
pub(crate) fn expiry(
    now: SystemTime,
    anchor: SystemTime,
    duration: Duration,
    max_lifetime: Option<Duration>,
) -> SystemTime {
    let idle = later(now, duration);
    let capped = match max_lifetime {
        Some(max) => idle.min(later(anchor, max)),
        None => idle,
    };
    to_millisecond(capped)
}

/// `time + duration`, with durations capped at [`MAX_DURATION`] so that no option can
/// overflow `SystemTime`.
fn later(time: SystemTime, duration: Duration) -> SystemTime {
    time.checked_add(duration.min(MAX_DURATION)).unwrap_or(time)
}

/// `time` without its sub-millisecond part.
fn to_millisecond(time: SystemTime) -> SystemTime {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => {
            UNIX_EPOCH + Duration::from_millis(since.as_millis().try_into().unwrap_or(u64::MAX))
        }
        Err(_) => UNIX_EPOCH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn at(minutes: u32) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000_000) + minutes * MINUTE
    }

    fn lifetime(max: Option<Duration>, interval: TouchInterval) -> Lifetime {
        Lifetime::new(30 * MINUTE, max, interval, None)
    }

    #[test]
    fn r6_expiry_is_capped_by_the_absolute_lifetime() {
        let capped = lifetime(Some(25 * MINUTE), TouchInterval::Default);
        assert_eq!(capped.expiry(at(0), at(0), 10 * MINUTE), at(10));
        assert_eq!(capped.expiry(at(18), at(0), 10 * MINUTE), at(25));
        assert!(!capped.is_expired(at(24), at(0), at(30)));
        assert!(capped.is_expired(at(25), at(0), at(30)));
        assert!(capped.is_expired(at(10), at(0), at(10)));
        let huge = lifetime(Some(Duration::MAX), TouchInterval::Default);
        assert_eq!(
            huge.expiry(at(0), at(0), Duration::MAX),
            later(at(0), MAX_DURATION)
        );
    }

    #[test]
    fn r18_the_default_interval_is_a_tenth_of_the_duration_at_most_a_minute() {
        let default = lifetime(None, TouchInterval::Default);
        assert_eq!(default.interval(30 * MINUTE), MINUTE);
        assert_eq!(default.interval(5 * MINUTE), Duration::from_secs(30));
        let fixed = lifetime(None, TouchInterval::Fixed(20 * MINUTE));
        assert_eq!(fixed.interval(30 * MINUTE), 15 * MINUTE);
        assert_eq!(fixed.interval(60 * MINUTE), 20 * MINUTE);
    }

    #[test]
    fn r18_a_touch_is_due_once_the_interval_has_passed_since_the_last_write() {
        let default = lifetime(None, TouchInterval::Default);
        // Written at 0: expires at 30.
        assert_eq!(default.touch_due(at(0), at(0), at(30), 30 * MINUTE), None);
        let just_before = at(1) - Duration::from_millis(1);
        assert_eq!(
            default.touch_due(just_before, at(0), at(30), 30 * MINUTE),
            None
        );
        assert_eq!(
            default.touch_due(at(1), at(0), at(30), 30 * MINUTE),
            Some(at(31))
        );
        let every = lifetime(None, TouchInterval::Fixed(Duration::ZERO));
        assert_eq!(
            every.touch_due(at(0) + Duration::from_millis(1), at(0), at(30), 30 * MINUTE),
            Some(at(30) + Duration::from_millis(1))
        );
        // Capped by the absolute lifetime: nothing to move.
        let capped = lifetime(Some(30 * MINUTE), TouchInterval::Default);
        assert_eq!(capped.touch_due(at(10), at(0), at(30), 30 * MINUTE), None);
    }

    #[test]
    fn times_are_kept_to_the_millisecond() {
        let clock = Lifetime::new(
            MINUTE,
            None,
            TouchInterval::Default,
            Some(Arc::new(|| {
                UNIX_EPOCH + Duration::from_nanos(1_234_567_891)
            })),
        );
        assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_millis(1_234));
        let odd = Duration::from_nanos(1_500_000);
        assert_eq!(
            clock.expiry(clock.now(), clock.now(), odd),
            UNIX_EPOCH + Duration::from_millis(1_235)
        );
        assert_eq!(Lifetime::seconds_left(at(0), at(30)), 1800);
        assert_eq!(Lifetime::seconds_left(at(30), at(0)), 0);
    }
}
