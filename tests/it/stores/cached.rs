//! What the tests of `NearCache` share, whatever the store behind it: reading until an
//! invalidation has arrived, and until a record is served from memory.

use std::time::{Duration, Instant};

use serde_json::{Map, json};
use session_engine::store::cache::NearCache;
use session_engine::{Record, SessionStore, StoreKey};

pub(crate) fn data(n: i64) -> Map<String, serde_json::Value> {
    let mut data = Map::new();
    data.insert("n".into(), json!(n));
    data
}

pub(crate) fn n_of(record: &Record) -> i64 {
    record.data["n"].as_i64().expect("n")
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
