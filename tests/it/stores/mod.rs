//! Every store against its real server (`MemoryStore` in process): the conformance suite and
//! the scenarios every store must pass, stamped over each store by [`store_tests!`]; what only
//! one store has is tested in that store's file.
//!
//! Each test works in a place of its own (a temporary SQLite file, a PostgreSQL table, a Redis
//! key prefix), removed when it ends where the store keeps data for good, so the tests run in
//! parallel against shared servers.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use session_engine::testing::{Options, assert_conforms_with};
use session_engine::{Changes, Record, SessionStore, StoreError, StoreKey, WriteMode};

mod model;
#[cfg(any(feature = "postgres", feature = "redis"))]
mod outage;
mod over_http;
mod users;

pub(crate) use model::*;
pub(crate) use over_http::*;
pub(crate) use users::*;

/// A store under test, in a place no other test uses, with whatever removes that place when
/// the test ends.
pub(crate) trait Backend: Sized {
    type Store: SessionStore + Clone;

    /// A migrated, empty store in a new place (file, table, key prefix).
    async fn open() -> Self;

    /// The store (a clone shares its connections).
    fn store(&self) -> Self::Store;

    /// A second client of the same place, as a second instance of the app has.
    async fn second(&self) -> Self::Store;

    /// What the conformance suite may expect of the store.
    fn options() -> Options {
        Options::default()
    }
}

/// A backend whose records a test can spoil behind the store's back (R12).
pub(crate) trait Spoil: Backend {
    /// Makes the record under `key` one the store cannot decode.
    async fn spoil(&self, key: &str);

    /// Whether the store still holds the spoiled record under `key`, as it was spoiled.
    async fn still_spoiled(&self, key: &str) -> bool;
}

/// Stamps the scenarios (of this module and of `over_http`) over one [`Backend`] as tests named
/// after them; `spoilable` adds those that need [`Spoil`]. `behind_a_cache` stamps those that
/// every store runs with a `NearCache` in front: none reads on one instance right after another
/// instance's change, which the cache may answer stale until the invalidation arrives (SPEC
/// 7.5; the coherence scenarios of `cached` poll for it instead); each cache's file adds what
/// else it runs.
macro_rules! store_tests {
    ($backend:ty) => {
        store_tests!($backend, behind_a_cache);
        store_tests!(@stamp $backend:
            two_app_instances_share_sessions,
            model_no_acknowledged_write_lost_and_no_logout_undone,
        );
    };
    ($backend:ty, spoilable) => {
        store_tests!($backend);
        store_tests!(@stamp $backend: r12_an_undecodable_record_is_a_fresh_session_and_stays);
    };
    ($backend:ty, behind_a_cache) => {
        store_tests!(@stamp $backend:
            conformance,
            concurrent_requests_changing_different_keys_both_survive,
            r9_a_destroy_racing_a_write_or_touch_stays_destroyed,
            r9_a_logout_during_a_slow_request_is_never_undone,
            r17_a_stale_touch_never_undoes_a_newer_expiry,
            odd_keys_survive_delta_writes,
            r20_every_float_reads_back_exactly,
            five_thousand_keys_set_then_deleted_over_http,
            users_two_devices_are_listed_with_exactly_one_current,
            users_ending_the_others_keeps_the_current_one,
            users_ending_all_kills_every_one_and_removes_the_cookie,
            users_a_logout_an_expiry_and_a_roll_keep_the_list_true,
            users_r19_a_login_in_flight_during_log_out_everywhere_is_ended,
            users_a_login_beyond_the_limit_ends_the_least_recently_used,
        );
    };
    (@stamp $backend:ty: $($scenario:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                let backend = <$backend as $crate::stores::Backend>::open().await;
                $crate::stores::$scenario(&backend).await;
            }
        )*
    };
}

/// Stamps the store-level scenarios of `sql` (R17 for writes, R20's round trips, the summaries
/// of a user's sessions) over a SQL backend, each with a store in a place of its own.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! sql_scenarios {
    ($backend:ty) => {
        sql_scenarios!(@stamp $backend:
            r17_a_slow_write_keeps_another_requests_duration,
            r17_a_slow_write_keeps_another_requests_login,
            r20_nul_characters_round_trip,
            r20_a_value_nested_64_deep_round_trips,
            users_the_listing_summarises_each_session,
        );
    };
    (@stamp $backend:ty: $($scenario:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $scenario() {
                let backend = <$backend as $crate::stores::Backend>::open().await;
                let store = $crate::stores::Backend::store(&backend);
                $crate::stores::sql::$scenario(&store).await;
            }
        )*
    };
}

#[cfg(all(feature = "near-cache", any(feature = "redis", feature = "postgres")))]
#[macro_use]
mod cached;
#[cfg(feature = "redis")]
mod cluster;
#[cfg(all(feature = "redis", feature = "near-cache"))]
mod near_cache;
#[cfg(all(feature = "postgres", feature = "near-cache"))]
mod near_cache_postgres;
#[cfg(all(feature = "near-cache", any(feature = "redis", feature = "postgres")))]
mod near_cache_race;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod scripts;
#[cfg(feature = "redis")]
pub(crate) mod sentinel;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "redis-tls")]
pub(crate) mod tls;

mod memory {
    use session_engine::MemoryStore;
    use session_engine::testing::Options;

    /// `MemoryStore`: clones share the records, as two apps in one process would.
    pub(crate) struct Memory(MemoryStore);

    impl super::Backend for Memory {
        type Store = MemoryStore;

        async fn open() -> Self {
            Self(MemoryStore::new())
        }

        fn store(&self) -> MemoryStore {
            self.0.clone()
        }

        async fn second(&self) -> MemoryStore {
            self.0.clone()
        }

        /// It sweeps expired records by itself (R16): `cleanup` may find none left.
        fn options() -> Options {
            Options::self_expiring()
        }
    }

    store_tests!(Memory);
}

// ---- helpers ----

fn shared<B: Backend>(backend: &B) -> Arc<dyn SessionStore> {
    Arc::new(backend.store())
}

/// A key no other test uses.
fn fresh_key() -> StoreKey {
    StoreKey::from(session_engine::store::random_id().expect("an id"))
}

/// Now, to the millisecond, as the stores keep it (a touch compares expiries exactly).
fn now_ms() -> SystemTime {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).expect("ms fit"))
}

async fn insert(store: &dyn SessionStore, key: &StoreKey, record: &Record) {
    store
        .write(key, record, &Changes::replace_all(), WriteMode::Insert)
        .await
        .expect("insert");
}

// ---- the scenarios ----

pub(crate) async fn conformance<B: Backend>(backend: &B) {
    assert_conforms_with(&backend.store(), B::options()).await;
}

/// A destroy racing an update and a touch of the same record, each in its own task and in a
/// different order each round: whichever runs first, the destroy removes a live record and
/// the record is gone at the end; the others either land before it or find it gone (R9).
pub(crate) async fn r9_a_destroy_racing_a_write_or_touch_stays_destroyed<B: Backend>(backend: &B) {
    let store = shared(backend);
    let now = now_ms();
    let expires = now + Duration::from_secs(600);
    for round in 0..40 {
        let key = fresh_key();
        let mut data = Map::new();
        data.insert("n".into(), json!(round));
        insert(&*store, &key, &Record::new(data.clone(), now, expires)).await;
        data.insert("m".into(), json!("late"));
        let update = Record::new(data, now, expires + Duration::from_secs(60));
        let mut tasks = Vec::new();
        for hook in (0..3).map(|i| (i + round) % 3) {
            let (store, key, update) = (store.clone(), key.clone(), update.clone());
            tasks.push(tokio::spawn(async move {
                match hook {
                    0 => {
                        let changes = Changes::new().with_set("m");
                        let r = store
                            .write(&key, &update, &changes, WriteMode::Update)
                            .await;
                        (matches!(r, Ok(_) | Err(StoreError::Gone)), format!("{r:?}"))
                    }
                    1 => {
                        let to = expires + Duration::from_secs(120);
                        let r = store.touch(&key, expires, to).await;
                        (matches!(r, Ok(_) | Err(StoreError::Gone)), format!("{r:?}"))
                    }
                    _ => {
                        let r = store.destroy(&key).await;
                        (matches!(r, Ok(true)), format!("{r:?}"))
                    }
                }
            }));
        }
        for task in tasks {
            let (ok, what) = task.await.expect("the hook ran");
            assert!(ok, "round {round}: {what}");
        }
        assert!(
            store.read(&key).await.expect("read").is_none(),
            "round {round}"
        );
    }
}

/// Keys that need escaping in a JSON path or a hash field (dots, quotes, backslashes,
/// brackets, the empty key, non-ASCII) are set, kept and removed by delta writes like any
/// other key.
pub(crate) async fn odd_keys_survive_delta_writes<B: Backend>(backend: &B) {
    let store = shared(backend);
    let odd = [
        "a.b",
        "a\"b",
        "back\\slash",
        "$",
        "[0]",
        "$.x",
        "",
        "ключ 🗝",
        "tab\there",
        " c",
        ".e",
    ];
    let key = fresh_key();
    let now = now_ms();
    let expires = now + Duration::from_secs(600);
    let mut data = Map::new();
    data.insert("kept".into(), json!(1));
    insert(&*store, &key, &Record::new(data.clone(), now, expires)).await;
    let update = |data: Map<String, Value>, changes: Changes| {
        let (store, key) = (store.clone(), key.clone());
        async move {
            let record = Record::new(data.clone(), now, expires);
            store
                .write(&key, &record, &changes, WriteMode::Update)
                .await
                .expect("a delta with odd keys");
            let stored = store.read(&key).await.expect("read").expect("live");
            assert_eq!(stored.data, data);
        }
    };

    let mut changes = Changes::new();
    for (i, name) in odd.iter().enumerate() {
        let value = json!({"i": i, "nested": {"null": null}, "list": [name]});
        data.insert((*name).into(), value);
        changes = changes.with_set(*name);
    }
    update(data.clone(), changes).await;
    let mut changes = Changes::new();
    for name in odd.iter().step_by(2) {
        data.remove(*name);
        changes = changes.with_deleted(*name);
    }
    update(data, changes).await;
    assert!(store.destroy(&key).await.expect("destroy"));
}

/// Floats whose shortest spelling the default JSON parsing reads back as a neighbour (the
/// first one was found by the `sql_row` fuzz target), subnormals and the extremes: written
/// whole and then as a delta, each reads back as the same `f64` (R20).
pub(crate) async fn r20_every_float_reads_back_exactly<B: Backend>(backend: &B) {
    let store = shared(backend);
    let floats = [
        -9.857_879_186_114_048e305,
        0.1,
        1.0 / 3.0,
        5e-324,
        2.225_073_858_507_201e-308,
        f64::MAX,
        -f64::MAX,
        f64::MIN_POSITIVE,
        9_007_199_254_740_993.0,
    ];
    let key = fresh_key();
    let now = now_ms();
    let expires = now + Duration::from_secs(600);
    let mut data = Map::new();
    for (i, float) in floats.iter().enumerate() {
        data.insert(format!("f{i}"), json!(float));
    }
    data.insert("all".into(), json!(floats));
    insert(&*store, &key, &Record::new(data.clone(), now, expires)).await;
    let check = |data: Map<String, Value>| {
        let (store, key) = (store.clone(), key.clone());
        async move {
            let stored = store.read(&key).await.expect("read").expect("live");
            for (name, value) in &data {
                assert_eq!(stored.data.get(name), Some(value), "{name}");
            }
            assert_eq!(stored.data, data);
        }
    };
    check(data.clone()).await;
    data.insert("delta".into(), json!(-9.857_879_186_114_048e305));
    let record = Record::new(data.clone(), now, expires);
    store
        .write(
            &key,
            &record,
            &Changes::new().with_set("delta"),
            WriteMode::Update,
        )
        .await
        .expect("a delta");
    check(data).await;
    assert!(store.destroy(&key).await.expect("destroy"));
}

/// 25 expired records and 5 live ones in a table of their own; `one_batch` (a store's
/// `cleanup_one_batch` with a batch of 10) looks at the first 10 rows in key order and removes
/// the expired ones among them; `cleanup` removes the rest, never a live one.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) async fn cleanup_works_in_batches<F>(store: &dyn SessionStore, one_batch: F)
where
    F: Future<Output = Result<u64, StoreError>>,
{
    let now = now_ms();
    let past = now - Duration::from_secs(5);
    let prefix = session_engine::store::random_id().expect("an id");
    let mut keys = Vec::new();
    for i in 0..30 {
        // Every sixth record is live; its key (`live…`) sorts before the expired ones (`old…`).
        let (name, live) = if i % 6 == 5 {
            (format!("{prefix}live{i:02}"), true)
        } else {
            (format!("{prefix}old{i:02}"), false)
        };
        let key = StoreKey::from(name);
        let record = if live {
            Record::new(Map::new(), now, now + Duration::from_secs(60))
        } else {
            Record::new(Map::new(), past, past)
        };
        insert(store, &key, &record).await;
        keys.push((key, live));
    }
    keys.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let expired_in_first_batch = keys[..10].iter().filter(|(_, live)| !live).count();
    assert_eq!(expired_in_first_batch, 5, "the 5 live keys sort first");
    assert_eq!(one_batch.await.expect("one batch"), 5);
    assert_eq!(store.cleanup().await.expect("cleanup"), 20);
    assert_eq!(store.cleanup().await.expect("cleanup"), 0);
    for (key, live) in &keys {
        assert_eq!(store.read(key).await.expect("read").is_some(), *live);
    }
}

/// A SQL table that the clean-up tests fill in bulk and count behind the store's back.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) trait BulkRows: Backend {
    /// Adds `rows` rows in one statement, with the keys `k00000000`, `k00000001`… (key order
    /// is number order): the even ones expired an hour ago, the odd ones live for an hour.
    async fn fill(&self, rows: u32);

    /// How many rows are expired, and how many live.
    async fn count(&self) -> (u64, u64);

    /// Whether the row of number `n` is still there.
    async fn holds(&self, n: u32) -> bool;
}

/// The key of the row of number `n` of [`BulkRows::fill`].
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn bulk_key(n: u32) -> String {
    format!("k{n:08}")
}

/// Polls `backend` until it holds no expired row, for at most two minutes (a bound for a
/// test that would otherwise wait for ever, not a measure of speed); then checks that every
/// live row is still there.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn every_expired_row_goes<B: BulkRows>(backend: &B, rows: u32) {
    let started = std::time::Instant::now();
    loop {
        let (expired, live) = backend.count().await;
        assert_eq!(live, u64::from(rows / 2), "a live row was removed");
        if expired == 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{expired} expired rows are still there after two minutes of clean-up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// R21: a table that one `cleanup` call cannot walk in its budget (`store`'s budget is a
/// small fraction of what the walk takes) is cleaned up all the same, in steps: one call
/// leaves expired rows at the far end of the key order, and `spawn_cleanup`, whose calls each
/// go on from where the previous one stopped, removes every expired row and no live one.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) async fn r21_cleanup_goes_through_a_large_table_in_steps<B: BulkRows>(
    backend: &B,
    store: Arc<dyn SessionStore>,
    rows: u32,
) {
    backend.fill(rows).await;
    let last_expired = rows - 2;
    let removed = store.cleanup().await.expect("one step");
    assert!(
        removed > 0 && removed < u64::from(rows / 2),
        "one step removed {removed} of {} expired rows",
        rows / 2
    );
    assert!(
        backend.holds(last_expired).await,
        "one step walked the whole table: it proves nothing"
    );
    let engine = crate::harness::builder()
        .shared_store(store)
        .build()
        .expect("the test engine builds");
    let sweeper = engine.spawn_cleanup(Duration::from_millis(10));
    every_expired_row_goes(backend, rows).await;
    sweeper.abort();
}

/// R21: when the engine's `store_timeout` cuts off every `cleanup` call (it is a small
/// fraction of what a walk of the table takes), each call still keeps the batches it
/// finished, and `spawn_cleanup` removes every expired row, those at the far end of the key
/// order included, and no live one.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) async fn r21_cleanup_cut_off_by_the_deadline_keeps_its_progress<B: BulkRows>(
    backend: &B,
    store: Arc<dyn SessionStore>,
    rows: u32,
    store_timeout: Duration,
) {
    backend.fill(rows).await;
    let engine = crate::harness::builder()
        .shared_store(store)
        .store_timeout(store_timeout)
        .build()
        .expect("the test engine builds");
    let once = engine.cleanup().await;
    assert!(
        backend.holds(rows - 2).await,
        "one call walked the whole table ({once:?}): it proves nothing"
    );
    let sweeper = engine.spawn_cleanup(Duration::from_millis(10));
    every_expired_row_goes(backend, rows).await;
    sweeper.abort();
}

/// A directory of the test's own under the system's temporary directory, removed with all it
/// holds when dropped.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis-tls"))]
pub(crate) struct TempDir(std::path::PathBuf);

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis-tls"))]
impl TempDir {
    pub(crate) fn new() -> Self {
        let name = format!(
            "session-engine-test-{}",
            session_engine::store::random_id().expect("an id")
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir(&path).expect("a temporary directory");
        Self(path)
    }

    /// The directory's path, as UTF-8.
    pub(crate) fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temporary path")
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis-tls"))]
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
