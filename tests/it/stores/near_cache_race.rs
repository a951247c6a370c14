//! A logout on one instance raced against reads on another, each with a `NearCache` in front
//! of one store (SPEC 7.5): the other instance may serve the ended session only until the
//! store's invalidation reaches it, never after.
//!
//! "Until the invalidation reaches it" is observed, not timed: after the logout (a destroy of
//! `K`), instance one changes a second record `M` that instance two holds in memory. The store
//! tells instance two of both changes in order, on one connection, and instance two applies
//! them in that order; so once instance two answers `M`'s new value, it has dropped `K`, and
//! every read of `K` that starts after that must find no session. A read of `K` that comes
//! between the logout and that moment may still be served from memory: how often, and for how
//! long after the logout, is printed (`--nocapture`), not asserted, since it depends on the
//! machine's load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use session_engine::store::cache::NearCache;
use session_engine::{Changes, Record, SessionStore, StoreKey, WriteMode};

use super::cached::{cache_it, data, n_of};
use super::{fresh_key, insert, now_ms};

/// How many logouts are raced, as the read cache's issue asks.
pub(crate) const TRIALS: usize = 10_000;

/// One read of `K` on instance two.
struct Read {
    start: Instant,
    end: Instant,
    served: bool,
}

/// What the trials saw.
#[derive(Default)]
struct Tally {
    judged: usize,
    /// Trials in which instance two's cache was reset (its channel went down or behind): it
    /// served nothing then, and the order argument above does not hold for that trial.
    reset: usize,
    reads: usize,
    /// Reads that started after the logout was acknowledged and still found the session.
    served_after_logout: usize,
    /// Reads that started once instance two had applied the invalidation and found the
    /// session: the failures.
    served_after_invalidation: usize,
    /// From the logout acknowledged to the end of the last read that still found it.
    longest_served: Duration,
    /// From the logout acknowledged to instance two answering `M`'s new value.
    delays: Vec<Duration>,
}

/// Races `trials` logouts on `one` against reads on `two`, and checks that no read of an ended
/// session is served once `two` has applied its invalidation.
pub(crate) async fn a_logout_is_never_served_after_its_invalidation<S>(
    one: &NearCache<S>,
    two: &NearCache<S>,
    trials: usize,
) where
    S: SessionStore + Clone + 'static,
{
    let mut tally = Tally::default();
    // M lives through every trial; trial `n` changes it from `n` to `n + 1`.
    let (m, now) = (fresh_key(), now_ms());
    insert(
        one,
        &m,
        &Record::new(data(0), now, now + Duration::from_secs(3600)),
    )
    .await;
    let mut attempts = 0;
    while tally.judged < trials {
        attempts += 1;
        assert!(
            attempts <= trials + trials / 10,
            "too many trials without a judgement: {} of {attempts} had the cache reset",
            tally.reset
        );
        trial(one, two, (&m, attempts), &mut tally).await;
    }
    assert!(one.destroy(&m).await.expect("destroy M"), "M was live");
    tally.delays.sort();
    let quantile = |q: f64| {
        let last = tally.delays.len() - 1;
        // The index is within the sorted list: q is at most 1.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let at = ((last as f64) * q).round() as usize;
        tally.delays[at]
    };
    eprintln!(
        "{} logouts raced ({} more had the cache reset and were not judged), {} reads: \
         {} served after the logout was acknowledged (the longest {:?} after it), {} after the \
         invalidation; invalidation applied after the logout: p50 {:?}, p99 {:?}, max {:?}",
        tally.judged,
        tally.reset,
        tally.reads,
        tally.served_after_logout,
        tally.longest_served,
        tally.served_after_invalidation,
        quantile(0.5),
        quantile(0.99),
        quantile(1.0),
    );
    assert_eq!(
        tally.served_after_invalidation, 0,
        "an ended session was served after its invalidation"
    );
}

async fn trial<S>(
    one: &NearCache<S>,
    two: &NearCache<S>,
    (m, n): (&StoreKey, usize),
    tally: &mut Tally,
) where
    S: SessionStore + Clone + 'static,
{
    let n = i64::try_from(n).expect("few trials");
    let (k, now) = (fresh_key(), now_ms());
    let expires = now + Duration::from_secs(600);
    insert(one, &k, &Record::new(data(1), now, expires)).await;
    cache_it(two, &k).await;
    let cached = cache_it(two, m).await;
    assert_eq!(n_of(&cached), n - 1, "M as the last trial left it");
    let resets = two.stats().resets;

    // Instance two reads K as fast as it can, from before the logout to after it applied the
    // invalidation.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn({
        let (two, k, stop) = (two.clone(), k.clone(), Arc::clone(&stop));
        async move {
            let mut reads = Vec::new();
            while !stop.load(Ordering::Acquire) {
                let start = Instant::now();
                let served = two.read(&k).await.expect("read").is_some();
                reads.push(Read {
                    start,
                    end: Instant::now(),
                    served,
                });
                tokio::task::yield_now().await;
            }
            reads
        }
    });
    tokio::task::yield_now().await;

    // The logout, then the change of M that follows it through the channel.
    assert!(one.destroy(&k).await.expect("destroy"), "K was live");
    let logged_out = Instant::now();
    one.write(
        m,
        &Record::new(data(n), now, expires),
        &Changes::new().with_set("n"),
        WriteMode::Update,
    )
    .await
    .expect("update M");
    let deadline = Instant::now() + Duration::from_secs(20);
    let applied = loop {
        let answer = two.read(m).await.expect("read M");
        let end = Instant::now();
        if answer.as_ref().is_some_and(|m| n_of(m) == n) {
            break end;
        }
        assert!(end < deadline, "M's change never reached instance two");
        tokio::task::yield_now().await;
    };
    // A few reads of K, by the reader and here, all after the invalidation was applied.
    for _ in 0..3 {
        let served = two.read(&k).await.expect("read").is_some();
        if served {
            tally.served_after_invalidation += 1;
        }
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Release);
    let reads = reader.await.expect("the reader");

    if two.stats().resets != resets {
        tally.reset += 1;
        return;
    }
    tally.judged += 1;
    tally.reads += reads.len() + 3;
    tally.delays.push(applied - logged_out);
    for read in reads.iter().filter(|read| read.served) {
        if read.start > logged_out {
            tally.served_after_logout += 1;
            tally.longest_served = tally.longest_served.max(read.end - logged_out);
        }
        if read.start > applied {
            tally.served_after_invalidation += 1;
        }
    }
}

#[cfg(feature = "redis")]
mod redis {
    use super::super::Backend;
    use super::super::near_cache::Cached;
    use super::super::redis::Redis;

    /// On one Redis server: the two instances' tracking connections each get the server's
    /// invalidations in the order it made the changes. Three threads: one for the reader,
    /// which reads without pause, and two for the rest (the instances' channels among it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 3)]
    async fn r11_a_logout_on_one_instance_is_never_served_by_another_after_its_invalidation() {
        let backend = Cached::<Redis>::open().await;
        let one = backend.store();
        let two = backend.second().await;
        super::a_logout_is_never_served_after_its_invalidation(&one, &two, super::TRIALS).await;
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::super::Backend;
    use super::super::near_cache_postgres::CachedPostgres;

    /// On PostgreSQL: each instance's listening connection gets the notifications in the order
    /// their transactions committed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 3)]
    async fn r11_a_logout_on_one_instance_is_never_served_by_another_after_its_invalidation() {
        let backend = CachedPostgres::open().await;
        let one = backend.store();
        let two = backend.second().await;
        super::a_logout_is_never_served_after_its_invalidation(&one, &two, super::TRIALS).await;
    }
}
