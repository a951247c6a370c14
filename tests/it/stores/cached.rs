//! What the tests of `NearCache` share, whatever the store behind it: reading until an
//! invalidation has arrived, and until a record is served from memory; and the scenarios of
//! two instances on one store, each with a cache of its own, stamped over each store by
//! [`cached_scenarios!`].

use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, json};
use session_engine::store::cache::NearCache;
use session_engine::{Changes, Record, SessionStore, StoreKey, Touched, WriteMode};

use super::{Backend, fresh_key, insert, now_ms};

/// Enough for every scenario: none of them is about eviction.
pub(crate) const CAPACITY: usize = 10_000;

/// A store with a `NearCache` in front, in a place of its own: [`Backend::store`] is instance
/// one, and each [`Backend::second`] another instance, with a cache and a channel of its own,
/// as a second app instance has. [`Backend::open`] gives the caches [`CAPACITY`].
pub(crate) trait CachedBackend: Backend {
    /// A migrated, empty store in a new place, whose first instance's cache holds at most
    /// `capacity` records.
    async fn with_capacity(capacity: usize) -> Self;
}

/// Stamps the scenarios below over one [`CachedBackend`] as tests named after them.
macro_rules! cached_scenarios {
    ($backend:ty) => {
        cached_scenarios!(@stamp $backend:
            r9_r10_r11_r17_another_instances_changes_drop_the_cached_record,
            r9_r17_an_instances_own_changes_are_seen_at_once,
            r6_an_expired_record_is_never_served,
            r16_the_cache_holds_at_most_its_capacity,
        );
    };
    (@stamp $backend:ty: $($scenario:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                $crate::stores::cached::$scenario::<$backend, _>().await;
            }
        )*
    };
}

pub(crate) fn data(n: i64) -> Map<String, serde_json::Value> {
    let mut data = Map::new();
    data.insert("n".into(), json!(n));
    data
}

pub(crate) fn n_of(record: &Record) -> i64 {
    record.data["n"].as_i64().expect("n")
}

/// Inserts on `cache` a record with `n` = 1, under a key of its own, live for `lifetime` from
/// now; returns its key, when it was made and when it expires.
pub(crate) async fn insert_one<S: SessionStore>(
    cache: &NearCache<S>,
    lifetime: Duration,
) -> (StoreKey, SystemTime, SystemTime) {
    let (key, now) = (fresh_key(), now_ms());
    let expires = now + lifetime;
    insert(cache, &key, &Record::new(data(1), now, expires)).await;
    (key, now, expires)
}

/// Inserts on `cache` `count` records, each under a key of its own, with `n` its number (from
/// 0), live for ten minutes; returns their keys in that order.
pub(crate) async fn insert_numbered<S: SessionStore>(
    cache: &NearCache<S>,
    count: i64,
) -> Vec<StoreKey> {
    let (now, expires) = (now_ms(), now_ms() + Duration::from_secs(600));
    let mut keys = Vec::new();
    for n in 0..count {
        let key = fresh_key();
        insert(cache, &key, &Record::new(data(n), now, expires)).await;
        keys.push(key);
    }
    keys
}

/// Writes `record` over the one under `key` on `cache` as a request that changed `n` does:
/// a delta of that one key, which must find the record live.
pub(crate) async fn update<S: SessionStore>(cache: &NearCache<S>, key: &StoreKey, record: &Record) {
    cache
        .write(
            key,
            record,
            &Changes::new().with_set("n"),
            WriteMode::Update,
        )
        .await
        .expect("update");
}

/// [`update`]s the record under `key` to `record` on instance `one`, then reads it on instance
/// `two` until it answers `record`'s `n` (see [`until_fresh`]).
pub(crate) async fn update_until_fresh<S: SessionStore>(
    one: &NearCache<S>,
    two: &NearCache<S>,
    key: &StoreKey,
    record: &Record,
    what: &str,
) {
    update(one, key, record).await;
    let n = n_of(record);
    until_fresh(two, key, what, |r| r.is_some_and(|r| n_of(r) == n)).await;
}

/// Reads `key` on `cache` until `fresh` holds of the answer, for at most 20 s: the time the
/// invalidation takes to arrive is not fixed, but it must arrive. Then checks that no read
/// after it is stale.
pub(crate) async fn until_fresh<S: SessionStore>(
    cache: &NearCache<S>,
    key: &StoreKey,
    what: &str,
    fresh: impl Fn(Option<&Record>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = cache.read(key).await.expect("read");
        if fresh(answer.as_ref()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still stale after 20 s: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for _ in 0..50 {
        let answer = cache.read(key).await.expect("read");
        assert!(fresh(answer.as_ref()), "{what}: stale again: {answer:?}");
    }
}

/// Reads `key` on `cache` until a read is served from memory (an invalidation of an earlier
/// change may still be on its way, and refuses the fills before it), for at most 20 s: the
/// record is cached, so what follows tests an invalidation, not a miss.
pub(crate) async fn cache_it<S: SessionStore>(cache: &NearCache<S>, key: &StoreKey) -> Record {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let hits = cache.stats().hits;
        let record = cache.read(key).await.expect("read").expect("live");
        if cache.stats().hits > hits {
            return record;
        }
        assert!(Instant::now() < deadline, "never served from memory");
        tokio::task::yield_now().await;
    }
}

// ---- the scenarios ----

/// R9, R10, R11, R17 seen from another instance: a write, a touch, a roll and a destroy on
/// instance one are seen by instance two, which had the record in memory, as soon as the
/// invalidation (Redis' tracking message, PostgreSQL's notification) arrives, and never stale
/// after it.
pub(crate) async fn r9_r10_r11_r17_another_instances_changes_drop_the_cached_record<B, S>()
where
    B: CachedBackend<Store = NearCache<S>>,
    S: SessionStore + Clone,
{
    let backend = B::open().await;
    let one = backend.store();
    let two = backend.second().await;
    let (key, now, expires) = insert_one(&one, Duration::from_secs(600)).await;

    // A write.
    assert_eq!(n_of(&cache_it(&two, &key).await), 1);
    let invalidations = two.stats().invalidations;
    let written = Record::new(data(2), now, expires);
    update_until_fresh(&one, &two, &key, &written, "a write").await;
    assert!(two.stats().invalidations > invalidations);

    // A touch (R17: instance two's next touch must start from the moved expiry).
    let seen = cache_it(&two, &key).await;
    let later = seen.expires_at + Duration::from_secs(60);
    assert_eq!(
        one.touch(&key, seen.expires_at, later)
            .await
            .expect("touch"),
        Touched::Moved
    );
    until_fresh(&two, &key, "a touch", |r| {
        r.is_some_and(|r| r.expires_at == later)
    })
    .await;
    let stale = two
        .touch(&key, seen.expires_at, later + Duration::from_secs(60))
        .await;
    assert_eq!(stale.expect("touch"), Touched::Superseded);

    // A roll: the new record inserted, the old one destroyed.
    cache_it(&two, &key).await;
    let rolled = fresh_key();
    insert(&one, &rolled, &Record::new(data(2), now, later)).await;
    assert!(one.destroy(&key).await.expect("destroy"));
    until_fresh(&two, &key, "a roll", |r| r.is_none()).await;
    assert_eq!(n_of(&cache_it(&two, &rolled).await), 2);

    // A destroy (a logout).
    assert!(one.destroy(&rolled).await.expect("destroy"));
    until_fresh(&two, &rolled, "a destroy", |r| r.is_none()).await;
    // R9: instance two, which still had the session in memory a moment ago, cannot bring it
    // back.
    let late = two
        .write(
            &rolled,
            &Record::new(data(3), now, later),
            &Changes::new().with_set("n"),
            WriteMode::Update,
        )
        .await;
    assert!(late.is_err(), "{late:?}");
    assert!(one.read(&rolled).await.expect("read").is_none());
}

/// An instance's own write, touch and destroy are seen by its very next read (no wait).
pub(crate) async fn r9_r17_an_instances_own_changes_are_seen_at_once<B, S>()
where
    B: CachedBackend<Store = NearCache<S>>,
    S: SessionStore + Clone,
{
    let backend = B::open().await;
    let one = backend.store();
    let (key, now, expires) = insert_one(&one, Duration::from_secs(600)).await;
    for n in 2..20 {
        cache_it(&one, &key).await;
        update(&one, &key, &Record::new(data(n), now, expires)).await;
        assert_eq!(n_of(&one.read(&key).await.expect("read").expect("live")), n);
    }
    let seen = cache_it(&one, &key).await;
    let later = seen.expires_at + Duration::from_secs(1);
    one.touch(&key, seen.expires_at, later)
        .await
        .expect("touch");
    assert_eq!(
        one.read(&key)
            .await
            .expect("read")
            .expect("live")
            .expires_at,
        later
    );
    cache_it(&one, &key).await;
    assert!(one.destroy(&key).await.expect("destroy"));
    assert!(one.read(&key).await.expect("read").is_none());
}

/// R6: a record the cache holds is never served past its expiry, whether or not the store has
/// told of it yet.
pub(crate) async fn r6_an_expired_record_is_never_served<B, S>()
where
    B: CachedBackend<Store = NearCache<S>>,
    S: SessionStore + Clone,
{
    let backend = B::open().await;
    let one = backend.store();
    let (key, _, expires) = insert_one(&one, Duration::from_millis(1_500)).await;
    cache_it(&one, &key).await;
    loop {
        let answer = one.read(&key).await.expect("read");
        let after = SystemTime::now();
        match answer {
            Some(record) => assert!(
                after <= record.expires_at + Duration::from_millis(5),
                "served {:?} after its expiry",
                after.duration_since(record.expires_at)
            ),
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(SystemTime::now() >= expires - Duration::from_millis(5));
}

/// Memory follows the capacity, not the number of sessions read.
pub(crate) async fn r16_the_cache_holds_at_most_its_capacity<B, S>()
where
    B: CachedBackend<Store = NearCache<S>>,
    S: SessionStore + Clone,
{
    let backend = B::with_capacity(50).await;
    let cache = backend.store();
    let keys = insert_numbered(&cache, 500).await;
    for (n, key) in (0..).zip(&keys) {
        assert_eq!(
            n_of(&cache.read(key).await.expect("read").expect("live")),
            n
        );
        assert!(cache.len() <= 50, "{} records held", cache.len());
    }
    assert!(cache.stats().fills >= 500);
    assert!(!cache.is_empty());
}
