//! [`NearCache`]: a bounded read cache in this process in front of a remote store, kept
//! coherent across app instances by the store's own invalidations.
//!
//! A returning visitor's `read` is answered from this process's memory when the record is
//! there; every `write`, `touch` and `destroy` still goes to the store, which keeps R8-R11 and
//! R17 as before. What keeps the cache coherent is an invalidation channel: the store tells
//! every instance which keys changed, and each drops them. For Redis it is server-assisted
//! client-side caching (`CLIENT TRACKING … BCAST PREFIX` over RESP3 on a connection of its
//! own, see `NearCache::redis`, with the feature `redis`). For PostgreSQL it is `LISTEN`/`NOTIFY`:
//! triggers on the table send the keys each statement changed or removed, and a connection of
//! its own listens (see `NearCache::postgres`, with the feature `postgres`, for the triggers it
//! installs and what they cost every writer). Another store, or another channel, feeds the
//! cache through an [`Invalidations`] handle.
//!
//! # The rules the cache keeps
//!
//! - **Bounded memory**: at most `capacity` records (S3-FIFO eviction, `quick_cache`).
//! - **Never expired**: a record is served only while its `expires_at` is in the future.
//! - **Nothing while the channel is down**: until the channel says it is up, and from the
//!   moment it says it is down (a lost connection, a lost subscription, messages lost because
//!   this process fell behind), every read goes to the store. It starts empty again once the
//!   channel is back.
//! - **No stale fill**: a read remembers the channel's epoch and its key's invalidation
//!   generation before it is sent to the store; its answer is kept only if neither moved
//!   meanwhile. An invalidation that arrives while a read is in flight so always wins, whether
//!   it arrives before or after the answer.
//! - **This instance's own changes**: a `write`, `touch` or `destroy` drops the key before it
//!   is sent and again once it is answered (whatever the answer), so this instance never serves
//!   its own superseded copy, and a read in flight across the change is never kept.
//!
//! # Staleness: what another instance's change costs
//!
//! A record changed or destroyed on instance A can still be served by instance B until B
//! receives the invalidation: the time the store takes to tell B. Measured on loopback
//! (`bench/src/bin/near_cache_staleness.rs`, runs of 10,000 trials on a 2-core machine),
//! from A's write acknowledged to the record dropped on B:
//!
//! - Redis: a median of 0 (the invalidation usually lands before A has its answer), a p99 of
//!   21, 28 and 24 µs in three runs;
//! - PostgreSQL: a median of 0, a p99 of 52, 54, 243 and 104 µs in four runs, a maximum of 2.2
//!   to 3.3 ms. At the commit PostgreSQL wakes the listening backend, which sends the
//!   notification once it runs; the writer's answer often comes first.
//!
//! The tails grow with the machine's load: a process that keeps a core busy holds
//! PostgreSQL's listening backend off it for a scheduler tick (4 ms on that machine), and
//! runs on a machine loaded by other work saw a p99 of 2 to 8 ms on Redis and of 18 to 20 ms
//! on PostgreSQL. For a logout this means: after A's `destroy` returned, B may still serve
//! the ended session for that long (a write B makes to it meanwhile still fails: R9 holds in
//! the store). A lost channel is noticed at once for a closed connection; a silent one (a
//! network partition, a server that stopped reading) when the probe the channel sends every
//! second has not come back 2 s later, so within about 4 s.
//! Until then the bound above does not hold, which is one reason the cache is opt-in.
//!
//! A `FLUSHALL` or `FLUSHDB` on the Redis server sends an invalidation without keys, which the
//! client library does not pass on: flush sessions by deleting their keys, or restart the app.

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;

use std::any::Any;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use quick_cache::sync::Cache;

use crate::observe::{CacheEvent, CacheMetrics, Origin, Reset};
use crate::store::{
    Changes, Record, RecordSummary, SessionStore, StoreFuture, StoreKey, Touched, WriteMode,
};

#[cfg(feature = "postgres")]
pub use postgres::PostgresListener;
#[cfg(feature = "redis")]
pub use redis::RedisTracking;

/// How many locks guard the keys' invalidation generations.
const STRIPES: usize = 64;

/// A [`SessionStore`] that answers `read` from a bounded map in this process's memory when it
/// can, and passes everything else to the store `S`. See the [module docs](self).
///
/// It serves nothing until its invalidation channel says it is up ([`Invalidations::up`]);
/// `NearCache::redis` (with the feature `redis`) sets up and runs the channel of a
/// `RedisStore`.
pub struct NearCache<S> {
    store: S,
    shared: Arc<Shared>,
    /// Whatever keeps the invalidation channel running (a task aborted on drop).
    _source: Option<Arc<dyn Any + Send + Sync>>,
}

impl<S: Clone> Clone for NearCache<S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            shared: Arc::clone(&self.shared),
            _source: self._source.clone(),
        }
    }
}

impl<S> fmt::Debug for NearCache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NearCache")
            .field("capacity", &self.shared.capacity)
            .field("serving", &self.shared.healthy.load(Ordering::Acquire))
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<S: SessionStore> NearCache<S> {
    /// A cache of at most `capacity` records in front of `store`, fed by no channel yet: it
    /// serves nothing until something calls [`Invalidations::up`] on its
    /// [`invalidations`](Self::invalidations) handle. A `capacity` of 0 caches nothing.
    pub fn new(store: S, capacity: usize) -> Self {
        Self {
            store,
            shared: Arc::new(Shared::new(capacity)),
            _source: None,
        }
    }

    /// The handle through which an invalidation channel drops keys and says whether it is up.
    #[must_use]
    pub fn invalidations(&self) -> Invalidations {
        Invalidations {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The cache, keeping `source` alive as long as the cache or one of its clones is: what
    /// runs the invalidation channel (a task handle that ends it on drop, a client).
    #[must_use]
    pub fn with_source(mut self, source: impl Any + Send + Sync) -> Self {
        self._source = Some(Arc::new(source));
        self
    }

    /// The store behind the cache.
    pub fn store(&self) -> &S {
        &self.store
    }
}

impl<S: SessionStore> SessionStore for NearCache<S> {
    fn id(&self) -> StoreFuture<String> {
        self.store.id()
    }

    fn read(&self, key: &StoreKey) -> StoreFuture<Option<Record>> {
        if let Some(record) = self.shared.get(key.as_str()) {
            return StoreFuture::ready(Ok(Some(record)));
        }
        let ticket = self.shared.ticket(key.as_str());
        let answer = self.store.read(key);
        let Some(ticket) = ticket else {
            return answer;
        };
        let shared = Arc::clone(&self.shared);
        let name = key.as_str().to_owned();
        StoreFuture::boxed(async move {
            let record = answer.await?;
            if let Some(record) = &record {
                shared.fill(&ticket, name, record);
            }
            Ok(record)
        })
    }

    fn write(
        &self,
        key: &StoreKey,
        record: &Record,
        changes: &Changes,
        mode: WriteMode,
    ) -> StoreFuture<SystemTime> {
        self.around(key, self.store.write(key, record, changes, mode))
    }

    fn touch(&self, key: &StoreKey, from: SystemTime, to: SystemTime) -> StoreFuture<Touched> {
        self.around(key, self.store.touch(key, from, to))
    }

    fn destroy(&self, key: &StoreKey) -> StoreFuture<bool> {
        self.around(key, self.store.destroy(key))
    }

    fn cleanup(&self) -> StoreFuture<u64> {
        self.store.cleanup()
    }

    fn user_sessions(&self, user: &str) -> StoreFuture<Vec<(StoreKey, RecordSummary)>> {
        self.store.user_sessions(user)
    }

    fn indexes_users(&self) -> bool {
        self.store.indexes_users()
    }
}

impl<S> NearCache<S> {
    /// Whether reads may be answered from memory now (the channel is up).
    #[must_use]
    pub fn is_serving(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    /// How many records the cache holds now (expired ones included until they are evicted).
    #[must_use]
    pub fn len(&self) -> usize {
        self.shared.map.len()
    }

    /// Whether the cache holds no record.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The counters of the cache since it was made. With the feature `metrics`, each count is
    /// also recorded through the `metrics` facade (`session_engine_near_cache_*`).
    #[must_use]
    pub fn stats(&self) -> NearCacheStats {
        let counters = &self.shared.counters;
        NearCacheStats {
            hits: counters.hits.load(Ordering::Relaxed),
            misses: counters.misses.load(Ordering::Relaxed),
            fills: counters.fills.load(Ordering::Relaxed),
            fills_refused: counters.fills_refused.load(Ordering::Relaxed),
            invalidations: counters.invalidations.load(Ordering::Relaxed),
            resets: counters.resets.load(Ordering::Relaxed),
        }
    }

    /// Drops `key` now and once `change` is answered, whatever the answer.
    fn around<T: Send + 'static>(&self, key: &StoreKey, change: StoreFuture<T>) -> StoreFuture<T> {
        self.shared.invalidate(key.as_str(), Origin::Own);
        let change = match change.into_ready() {
            Ok(answer) => {
                self.shared.invalidate(key.as_str(), Origin::Own);
                return StoreFuture::ready(answer);
            }
            Err(pending) => pending,
        };
        let shared = Arc::clone(&self.shared);
        let name = key.as_str().to_owned();
        StoreFuture::boxed(async move {
            // Dropped on every way out, a cancelled request's included.
            let _drop = DropOnExit { shared, name };
            change.await
        })
    }
}

struct DropOnExit {
    shared: Arc<Shared>,
    name: String,
}

impl Drop for DropOnExit {
    fn drop(&mut self) {
        self.shared.invalidate(&self.name, Origin::Own);
    }
}

/// The counters of a [`NearCache`], from [`NearCache::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NearCacheStats {
    /// Reads answered from memory.
    pub hits: u64,
    /// Reads sent to the store (the channel was down, or the record was not held or expired).
    pub misses: u64,
    /// Answers of the store kept in memory.
    pub fills: u64,
    /// Answers not kept because an invalidation or a reset came while they were in flight.
    pub fills_refused: u64,
    /// Keys dropped, by the channel or by this instance's own changes.
    pub invalidations: u64,
    /// Times the cache was emptied because the channel went down, came up or fell behind.
    pub resets: u64,
}

/// What an invalidation channel does to a [`NearCache`]: drop keys, and say whether it is up.
/// Cloned freely; from [`NearCache::invalidations`].
#[derive(Clone)]
pub struct Invalidations {
    shared: Arc<Shared>,
}

impl fmt::Debug for Invalidations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invalidations").finish_non_exhaustive()
    }
}

impl Invalidations {
    /// Drops the record under `key` (the store key, as [`StoreKey::as_str`] gives it), and
    /// refuses the answer of any read of it in flight.
    pub fn invalidate(&self, key: &str) {
        self.shared.invalidate(key, Origin::Channel);
    }

    /// Empties the cache and refuses every read in flight, keeping it serving: for a channel
    /// that is up but lost messages.
    pub fn clear(&self) {
        self.shared.reset(Reset::Clear);
    }

    /// The channel is down or behind: empties the cache and serves nothing until [`up`](Self::up).
    pub fn down(&self) {
        self.shared.reset(Reset::Down);
    }

    /// The channel is up, and every change the store makes from now on will be told: empties
    /// the cache (it missed what happened while down) and serves again.
    pub fn up(&self) {
        self.shared.reset(Reset::Up);
    }

    /// Whether the cache serves now.
    #[must_use]
    pub fn is_up(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }
}

/// What `NearCache::stats` reads. Each event is also counted as a metric (features `metrics`
/// and `near-cache`): a recorder cannot be read back through the `metrics` facade, and
/// `stats` answers without one.
#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    fills: AtomicU64,
    fills_refused: AtomicU64,
    invalidations: AtomicU64,
    resets: AtomicU64,
    metrics: CacheMetrics,
}

impl Counters {
    fn count(&self, event: CacheEvent) {
        let counter = match event {
            CacheEvent::Hit => &self.hits,
            CacheEvent::Miss => &self.misses,
            CacheEvent::Fill => &self.fills,
            CacheEvent::FillRefused => &self.fills_refused,
            CacheEvent::Invalidated(_) => &self.invalidations,
            CacheEvent::Reset(_) => &self.resets,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.metrics.count(event);
    }
}

/// The channel's state: fills hold it shared while they check and insert, resets hold it
/// exclusively while they empty the map.
struct Epoch {
    epoch: u64,
    healthy: bool,
}

struct Ticket {
    epoch: u64,
    stripe: usize,
    generation: u64,
}

struct Shared {
    capacity: usize,
    map: Cache<String, Arc<Record>>,
    /// A fast copy of `epoch.healthy`, for reads.
    healthy: AtomicBool,
    epoch: RwLock<Epoch>,
    /// Per stripe of keys, how many invalidations it has seen; held while an invalidation
    /// removes a key and while a fill inserts one.
    stripes: [Mutex<u64>; STRIPES],
    hasher: RandomState,
    counters: Counters,
}

impl Shared {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            // quick_cache needs room for one entry; with a capacity of 0 nothing is inserted.
            map: Cache::new(capacity.max(1)),
            healthy: AtomicBool::new(false),
            epoch: RwLock::new(Epoch {
                epoch: 0,
                healthy: false,
            }),
            stripes: std::array::from_fn(|_| Mutex::new(0)),
            hasher: RandomState::new(),
            counters: Counters::default(),
        }
    }

    fn stripe(&self, key: &str) -> usize {
        // The remainder is below STRIPES, so it fits in usize.
        (self.hasher.hash_one(key) % STRIPES as u64) as usize
    }

    fn get(&self, key: &str) -> Option<Record> {
        if !self.healthy.load(Ordering::Acquire) {
            self.counters.count(CacheEvent::Miss);
            return None;
        }
        match self.map.get(key) {
            Some(record) if record.expires_at > SystemTime::now() => {
                self.counters.count(CacheEvent::Hit);
                Some(Record::clone(&record))
            }
            _ => {
                self.counters.count(CacheEvent::Miss);
                None
            }
        }
    }

    /// What a read remembers before it is sent; `None` when nothing may be kept.
    fn ticket(&self, key: &str) -> Option<Ticket> {
        if self.capacity == 0 {
            return None;
        }
        let epoch = self.epoch.read().unwrap_or_else(PoisonError::into_inner);
        if !epoch.healthy {
            return None;
        }
        let stripe = self.stripe(key);
        let generation = *self.stripes[stripe]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Some(Ticket {
            epoch: epoch.epoch,
            stripe,
            generation,
        })
    }

    fn fill(&self, ticket: &Ticket, key: String, record: &Record) {
        let epoch = self.epoch.read().unwrap_or_else(PoisonError::into_inner);
        let generation = self.stripes[ticket.stripe]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !epoch.healthy || epoch.epoch != ticket.epoch || *generation != ticket.generation {
            self.counters.count(CacheEvent::FillRefused);
            return;
        }
        self.map.insert(key, Arc::new(record.clone()));
        self.counters.count(CacheEvent::Fill);
    }

    fn invalidate(&self, key: &str, origin: Origin) {
        let mut generation = self.stripes[self.stripe(key)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *generation = generation.wrapping_add(1);
        self.map.remove(key);
        drop(generation);
        self.counters.count(CacheEvent::Invalidated(origin));
    }

    fn reset(&self, cause: Reset) {
        let mut epoch = self.epoch.write().unwrap_or_else(PoisonError::into_inner);
        let was_healthy = epoch.healthy;
        let healthy = match cause {
            Reset::Up => true,
            Reset::Down => false,
            // Decided under the lock, so that a `down` meanwhile is not undone.
            Reset::Clear => was_healthy,
        };
        epoch.epoch = epoch.epoch.wrapping_add(1);
        epoch.healthy = healthy;
        self.map.clear();
        self.healthy.store(healthy, Ordering::Release);
        drop(epoch);
        self.counters.count(CacheEvent::Reset(cause));
        if healthy != was_healthy {
            self.counters.metrics.serving(healthy);
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last handle on a cache that serves: one cache fewer serving.
        if *self.healthy.get_mut() {
            self.counters.metrics.serving(false);
        }
    }
}

#[cfg(all(test, feature = "memory-store"))]
mod tests {
    use std::time::Duration;

    use serde_json::{Map, json};

    use super::*;
    use crate::store::memory::MemoryStore;

    fn record(value: i64, ttl: Duration) -> Record {
        let mut data = Map::new();
        data.insert("n".into(), json!(value));
        let now = SystemTime::now();
        Record::new(data, now, now + ttl)
    }

    async fn insert(store: &impl SessionStore, key: &StoreKey, value: i64) {
        store
            .write(
                key,
                &record(value, Duration::from_secs(60)),
                &Changes::replace_all(),
                WriteMode::Insert,
            )
            .await
            .unwrap();
    }

    fn value(record: &Record) -> i64 {
        record.data["n"].as_i64().unwrap()
    }

    #[tokio::test]
    async fn near_cache_serves_nothing_until_the_channel_is_up() {
        let store = MemoryStore::new();
        let cache = NearCache::new(store.clone(), 10);
        let key = StoreKey::from("a");
        insert(&cache, &key, 1).await;
        cache.read(&key).await.unwrap().unwrap();
        assert!(cache.is_empty());
        cache.invalidations().up();
        cache.read(&key).await.unwrap().unwrap();
        assert_eq!(cache.len(), 1);
        // A change made behind the cache's back is served until it is invalidated...
        store.destroy(&key).await.unwrap();
        assert!(cache.read(&key).await.unwrap().is_some());
        assert_eq!(cache.stats().hits, 1);
        cache.invalidations().invalidate(key.as_str());
        assert!(cache.read(&key).await.unwrap().is_none());
        // ...and nothing is served while the channel is down.
        insert(&store, &key, 2).await;
        cache.read(&key).await.unwrap().unwrap();
        cache.invalidations().down();
        assert!(cache.is_empty());
        store.destroy(&key).await.unwrap();
        assert!(cache.read(&key).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn r9_own_changes_drop_the_key() {
        let cache = NearCache::new(MemoryStore::new(), 10);
        cache.invalidations().up();
        let key = StoreKey::from("a");
        insert(&cache, &key, 1).await;
        let read = cache.read(&key).await.unwrap().unwrap();
        assert_eq!(cache.len(), 1);
        let mut changed = record(2, Duration::from_secs(60));
        changed.created_at = read.created_at;
        cache
            .write(
                &key,
                &changed,
                &Changes::new().with_set("n"),
                WriteMode::Update,
            )
            .await
            .unwrap();
        assert_eq!(value(&cache.read(&key).await.unwrap().unwrap()), 2);
        let read = cache.read(&key).await.unwrap().unwrap();
        let to = read.expires_at + Duration::from_secs(5);
        cache.touch(&key, read.expires_at, to).await.unwrap();
        assert_eq!(
            to_ms(cache.read(&key).await.unwrap().unwrap().expires_at),
            to_ms(to)
        );
        assert!(cache.destroy(&key).await.unwrap());
        assert!(cache.read(&key).await.unwrap().is_none());
    }

    fn to_ms(time: SystemTime) -> u64 {
        crate::store::to_ms(time)
    }

    #[test]
    fn near_cache_refuses_a_fill_that_an_invalidation_or_reset_overtook() {
        let shared = Shared::new(10);
        shared.reset(Reset::Up);
        let stale = record(1, Duration::from_secs(60));
        let ticket = shared.ticket("a").unwrap();
        shared.invalidate("a", Origin::Channel);
        shared.fill(&ticket, "a".into(), &stale);
        assert!(shared.get("a").is_none());
        let ticket = shared.ticket("a").unwrap();
        shared.reset(Reset::Up);
        shared.fill(&ticket, "a".into(), &stale);
        assert!(shared.get("a").is_none());
        let ticket = shared.ticket("a").unwrap();
        shared.fill(&ticket, "a".into(), &stale);
        assert!(shared.get("a").is_some());
        assert_eq!(shared.counters.fills_refused.load(Ordering::Relaxed), 2);
        shared.reset(Reset::Down);
        assert!(shared.ticket("a").is_none());
    }

    #[test]
    fn r6_expired_records_are_never_served() {
        let shared = Shared::new(10);
        shared.reset(Reset::Up);
        let ticket = shared.ticket("a").unwrap();
        shared.fill(&ticket, "a".into(), &record(1, Duration::from_millis(30)));
        assert!(shared.get("a").is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(shared.get("a").is_none());
    }

    #[test]
    fn near_cache_memory_is_bounded_by_its_capacity() {
        let shared = Shared::new(100);
        shared.reset(Reset::Up);
        for n in 0..1_000 {
            let key = format!("k{n}");
            let ticket = shared.ticket(&key).unwrap();
            shared.fill(&ticket, key, &record(n, Duration::from_secs(60)));
        }
        assert!(shared.map.len() <= 100, "{}", shared.map.len());
        assert!(shared.map.len() >= 50, "{}", shared.map.len());
        let none = Shared::new(0);
        none.reset(Reset::Up);
        assert!(none.ticket("a").is_none());
    }
}
