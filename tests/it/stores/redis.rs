//! `RedisStore` against the real Redis server on 127.0.0.1:6379 (`REDIS_URL` overrides), each
//! test under a key prefix of its own, whose keys it removes when it ends, passed or failed.
//! The outage test runs a Redis server of its own, which it stops and starts.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fred::interfaces::{HashesInterface as _, KeysInterface as _, SortedSetsInterface as _};
use serde_json::{Map, Value, json};
use session_engine::store::redis::{RedisStore, fred};
use session_engine::store::to_ms;
use session_engine::testing::Options;
use session_engine::{
    Changes, ExpiryRule, Record, RecordSummary, SessionStore, StoreError, StoreKey, Touched,
    WriteMode,
};

use super::outage::{free_port, outage_and_recovery, wait_until};
use super::{Backend, Spoil, fresh_key, insert, now_ms};

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A store under a key prefix no other test uses, on the server (or Cluster) at `url`.
pub(crate) struct Redis {
    store: RedisStore,
    url: String,
}

impl Redis {
    pub(crate) async fn at(url: &str) -> Self {
        let prefix = format!(
            "test:{}:",
            session_engine::store::random_id().expect("an id")
        );
        Self {
            store: Self::client(url, &prefix).await,
            url: url.to_owned(),
        }
    }

    async fn client(url: &str, prefix: &str) -> RedisStore {
        RedisStore::connect(url)
            .await
            .unwrap_or_else(|e| panic!("{url} answers: {e}"))
            .with_key_prefix(prefix)
    }

    /// The Redis key of a store key.
    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.store.key_prefix())
    }
}

/// Deletes every key under the prefix `ARGV[1]`, in the server: a key name may hold any byte
/// (the conformance suite names a user `user-…\0é`, and so its set), which a pipe of key names
/// through `xargs` would cut or split. Returns how many keys went.
const SWEEP: &str = r"
local pattern = ARGV[1]:gsub('[%*%?%[%]\\]', '\\%0') .. '*'
local cursor, removed = '0', 0
repeat
  local page = redis.call('SCAN', cursor, 'MATCH', pattern, 'COUNT', 1000)
  cursor = page[1]
  for _, key in ipairs(page[2]) do
    removed = removed + redis.call('DEL', key)
  end
until cursor == '0'
return removed
";

/// On a single server, the keys under the test's prefix go with it (on a Cluster, with the
/// cluster).
impl Drop for Redis {
    fn drop(&mut self) {
        if self.url.starts_with("redis://") {
            let prefix = self.store.key_prefix();
            let swept = Command::new("redis-cli")
                .args(["-u", &self.url, "eval", SWEEP, "0", prefix])
                .output();
            // redis-cli prints a script's error and exits with 0: the answer is a count, or not.
            match swept {
                Ok(out)
                    if String::from_utf8_lossy(&out.stdout)
                        .trim()
                        .parse::<u64>()
                        .is_ok() => {}
                failed => eprintln!("the keys under {prefix} stay: {failed:?}"),
            }
        }
    }
}

impl Backend for Redis {
    type Store = RedisStore;

    async fn open() -> Self {
        Self::at(&url()).await
    }

    fn store(&self) -> RedisStore {
        self.store.clone()
    }

    async fn second(&self) -> RedisStore {
        Self::client(&self.url, self.store.key_prefix()).await
    }

    /// Redis expires each hash by itself: `cleanup` has nothing to remove.
    fn options() -> Options {
        Options::self_expiring()
    }
}

impl Spoil for Redis {
    /// A data field whose value is not JSON.
    async fn spoil(&self, key: &str) {
        let client = self.store.client();
        let _: i64 = client
            .hset(self.key(key), (".visits", "not json"))
            .await
            .expect("HSET");
    }

    async fn still_spoiled(&self, key: &str) -> bool {
        let client = self.store.client();
        let value: Option<String> = client.hget(self.key(key), ".visits").await.expect("HGET");
        value.as_deref() == Some("not json")
    }
}

store_tests!(Redis, spoilable);

/// A Redis deployment the tests reach another way than the server at `REDIS_URL`: a Cluster,
/// a server over TLS, a primary behind a Sentinel.
pub(crate) trait Deployment {
    /// Its URL, from its variable or of one started for this test binary.
    fn url() -> &'static str;
}

/// [`Redis`] on the deployment `D`: the same store and the same scenarios, another way in.
pub(crate) struct On<D>(Redis, PhantomData<D>);

impl<D: Deployment> Backend for On<D> {
    type Store = RedisStore;

    async fn open() -> Self {
        Self(Redis::at(D::url()).await, PhantomData)
    }

    fn store(&self) -> RedisStore {
        self.0.store()
    }

    async fn second(&self) -> RedisStore {
        self.0.second().await
    }

    fn options() -> Options {
        Redis::options()
    }
}

impl<D: Deployment> Spoil for On<D> {
    async fn spoil(&self, key: &str) {
        self.0.spoil(key).await;
    }

    async fn still_spoiled(&self, key: &str) -> bool {
        self.0.still_spoiled(key).await
    }
}

/// A session is one hash: `c` and `e` in milliseconds, each data key as a `.`-prefixed field
/// holding JSON, and Redis's own expiry at `e`, which a touch moves (and a stale touch
/// leaves).
#[tokio::test]
async fn a_session_is_a_hash_that_redis_expires() {
    let redis = Redis::open().await;
    let store = redis.store();
    let (key, now) = (fresh_key(), now_ms());
    let expires = now + Duration::from_secs(90);
    let mut data = Map::new();
    data.insert(
        "c".into(),
        json!("a data key named like the creation field"),
    );
    data.insert("n".into(), json!(1));
    insert(&store, &key, &Record::new(data, now, expires)).await;
    let hash = redis.key(key.as_str());
    let fields: HashMap<String, String> = store.client().hgetall(&hash).await.expect("HGETALL");
    assert_eq!(fields.len(), 4, "{fields:?}");
    assert_eq!(fields[".n"], "1");
    assert_eq!(fields[".c"], "\"a data key named like the creation field\"");
    assert_eq!(fields["c"], to_ms(now).to_string());
    assert_eq!(fields["e"], to_ms(expires).to_string());
    let pttl = || async { store.client().pttl::<i64, _>(&hash).await.expect("PTTL") };
    assert!(
        (85_000..=90_000).contains(&pttl().await),
        "PTTL {}",
        pttl().await
    );
    let record = store.read(&key).await.expect("read").expect("live");
    assert_eq!(
        record.data["c"],
        json!("a data key named like the creation field")
    );

    let sooner = now + Duration::from_secs(30);
    let touched = store.touch(&key, expires, sooner).await.expect("touch");
    assert_eq!(touched, Touched::Moved);
    assert!(
        (25_000..=30_000).contains(&pttl().await),
        "PTTL after touch {}",
        pttl().await
    );
    let stale = store
        .touch(&key, expires, now + Duration::from_secs(600))
        .await;
    assert_eq!(stale.expect("touch"), Touched::Superseded);
    assert!(
        pttl().await <= 30_000,
        "a stale touch leaves Redis's expiry"
    );
    assert_eq!(
        store.cleanup().await.expect("cleanup"),
        0,
        "Redis expires keys itself"
    );
}

/// A listing that finds a member stale (its session untied, its score old) must not remove it
/// once a write has tied that session to the user again meanwhile: the write indexed it first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_racing_a_tie_never_drops_the_tied_session() {
    let redis = Redis::open().await;
    let store = redis.store();
    let hour = Duration::from_secs(3600);
    for round in 0..100 {
        let (user, key, now) = (format!("ann-{round}"), fresh_key(), now_ms());
        let mut tied = Map::new();
        tied.insert("__user".to_owned(), json!(user));
        tied.insert("n".to_owned(), json!(1));
        insert(&store, &key, &Record::new(tied.clone(), now, now + hour)).await;
        // Indexed two minutes ago, then untied (`clear_user`, no roll).
        let old = (to_ms(now) - 120_000) as f64;
        let set = format!("{}user:{user}", store.key_prefix());
        let _: i64 = store
            .client()
            .zadd(&set, None, None, false, false, (old, key.as_str()))
            .await
            .expect("ZADD");
        let mut untied = tied.clone();
        untied.remove("__user");
        let untie = Changes::new().with_deleted("__user");
        let record = Record::new(untied, now, now + hour);
        store
            .write(&key, &record, &untie, WriteMode::Update)
            .await
            .expect("untie");
        // `set_user` again, while a listing runs.
        let (writer, tie_key) = (store.clone(), key.clone());
        let record = Record::new(tied, now, now + hour);
        let tie = tokio::spawn(async move {
            let tie = Changes::new().with_set("__user");
            writer
                .write(&tie_key, &record, &tie, WriteMode::Update)
                .await
        });
        store.user_sessions(&user).await.expect("a listing");
        tie.await.expect("the tie ran").expect("the tie");
        let listed = store.user_sessions(&user).await.expect("a listing");
        assert_eq!(
            listed.len(),
            1,
            "round {round}: the tied session is missing"
        );
    }
}

#[tokio::test]
async fn prefixes_keep_apps_apart() {
    let (first, second) = (Redis::open().await, Redis::open().await);
    let (one, two) = (first.store(), second.store());
    let (key, now) = (StoreKey::from("k"), now_ms());
    let record = Record::new(Map::new(), now, now + Duration::from_secs(60));
    insert(&one, &key, &record).await;
    assert!(two.read(&key).await.expect("read").is_none());
    insert(&two, &key, &record).await;
    assert!(one.destroy(&key).await.expect("destroy"));
    assert!(two.read(&key).await.expect("read").is_some());
}

#[tokio::test]
async fn a_bad_url_is_an_error() {
    let error = RedisStore::connect("redis://127.0.0.1:notaport")
        .await
        .expect_err("a bad URL");
    assert!(matches!(error, StoreError::Backend(_)), "{error:?}");
}

/// A Redis server of the test's own on a free port, which keeps nothing on disk.
struct TempRedis {
    port: u16,
    child: Mutex<Option<Child>>,
}

impl TempRedis {
    async fn start(&self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        *self.child.lock().expect("a lock") = Some(child);
        let port = self.port;
        wait_until("the test Redis answering", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
    }

    fn kill(&self) {
        if let Some(mut child) = self.child.lock().expect("a lock").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TempRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_r12_r15_an_outage_fails_only_session_routes_and_the_app_recovers() {
    let server = Arc::new(TempRedis {
        port: free_port(),
        child: Mutex::new(None),
    });
    server.start().await;
    let store = RedisStore::connect(&format!("redis://127.0.0.1:{}", server.port))
        .await
        .expect("the test Redis answers");
    let (stopping, starting) = (server.clone(), server.clone());
    outage_and_recovery(
        Arc::new(store),
        async move { stopping.kill() },
        async move { starting.start().await },
    )
    .await;
}

// ---- store contract v3 on every Redis deployment ----

/// Stamps the scenarios below over a Redis deployment (a [`Backend`] whose store is a
/// `RedisStore`), as tests named after them.
macro_rules! redis_tests {
    ($backend:ty) => {
        $crate::stores::redis::redis_tests!(@stamp $backend:
            r17_a_slow_write_keeps_another_requests_duration,
            r17_a_slow_write_keeps_another_requests_login,
            r17_a_slow_write_stretches_the_user_set_to_the_expiry_it_stores,
            r17_the_stored_expiry_is_exactly_the_rules,
            r20_nul_characters_and_deep_values_round_trip,
            users_a_listing_summarizes_each_record_without_reading_its_data,
        );
    };
    (@stamp $backend:ty: $($scenario:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                let backend = <$backend as $crate::stores::Backend>::open().await;
                $crate::stores::redis::v3::$scenario(&backend).await;
            }
        )*
    };
}
pub(crate) use redis_tests;

redis_tests!(Redis);

/// The scenarios of [`redis_tests!`].
pub(crate) mod v3 {
    use super::*;
    use session_engine::store::MAX_DEPTH;

    const MINUTE: Duration = Duration::from_secs(60);

    /// The Redis key of `key` in `store`.
    fn hash_of(store: &RedisStore, key: &StoreKey) -> String {
        format!("{}{}", store.key_prefix(), key.as_str())
    }

    /// Redis's own time to live of `name`, in ms (-2 when there is no such key).
    async fn pttl(store: &RedisStore, name: &str) -> i64 {
        store.client().pttl(name).await.expect("PTTL")
    }

    /// Sets `key` in a copy of `data`.
    fn with(data: &Map<String, Value>, key: &str, value: Value) -> Map<String, Value> {
        let mut data = data.clone();
        data.insert(key.to_owned(), value);
        data
    }

    /// An update of `key` that sets only the keys `changed`, from `record` as its request sees
    /// it, under an engine whose idle lifetime is `duration`, capped by `max_lifetime`.
    async fn update(
        store: &RedisStore,
        key: &StoreKey,
        record: Record,
        changed: &[&str],
        duration: Duration,
        max_lifetime: Option<Duration>,
    ) -> SystemTime {
        let changes = changed
            .iter()
            .fold(Changes::new(), |changes, key| changes.with_set(*key));
        let record = record.with_rule(ExpiryRule::new(now_ms(), duration, max_lifetime));
        store
            .write(key, &record, &changes, WriteMode::Update)
            .await
            .expect("an update")
    }

    /// Asserts that `time` is `expected`, give or take the seconds a slow test machine takes.
    #[track_caller]
    fn about(time: SystemTime, expected: SystemTime, what: &str) {
        let gap = time
            .duration_since(expected)
            .unwrap_or_else(|early| early.duration());
        assert!(
            gap < Duration::from_secs(5),
            "{what}: {time:?}, {expected:?} expected"
        );
    }

    /// R17 v3: request A sets the session's own duration (60 s); request B, slower, read the
    /// record before A wrote and changes only `x`, with the engine's duration (30 min) in its
    /// view. B's update must store the expiry the record as it stands calls for, A's 60 s, and
    /// return it; Redis's own expiry follows.
    pub(crate) async fn r17_a_slow_write_keeps_another_requests_duration<B>(backend: &B)
    where
        B: Backend<Store = RedisStore>,
    {
        let store = backend.store();
        let (key, now) = (fresh_key(), now_ms());
        let engine_duration = 30 * MINUTE;
        let data = Map::from_iter([("x".to_owned(), json!(0))]);
        insert(&store, &key, &Record::new(data, now, now + engine_duration)).await;
        let before = store.read(&key).await.expect("read").expect("live");

        let a = with(&before.data, "__cust_dur", json!(60_000));
        let a_now = now_ms();
        let record = Record::new(a, before.created_at, a_now + MINUTE);
        let a_expiry = update(&store, &key, record, &["__cust_dur"], engine_duration, None).await;
        about(a_expiry, a_now + MINUTE, "A's expiry");

        let b = with(&before.data, "x", json!(1));
        let b_now = now_ms();
        let record = Record::new(b, before.created_at, b_now + engine_duration);
        let b_expiry = update(&store, &key, record, &["x"], engine_duration, None).await;
        about(b_expiry, b_now + MINUTE, "B's expiry follows A's duration");

        let stored = store.read(&key).await.expect("read").expect("live");
        assert_eq!(
            stored.expires_at, b_expiry,
            "the stored expiry is the one returned"
        );
        assert_eq!(stored.data["x"], json!(1), "B's change");
        assert_eq!(stored.data["__cust_dur"], json!(60_000), "A's change");
        assert_eq!(stored.created_at, now, "the creation is kept");
        let ttl = pttl(&store, &hash_of(&store, &key)).await;
        assert!((50_000..=60_000).contains(&ttl), "PTTL {ttl}");
    }

    /// R17 v3 with the absolute lifetime: a record created 50 minutes ago under a one-hour
    /// `max_lifetime`; request A logs in (`__login` now, tied to a user), which restarts the
    /// absolute lifetime; request B, which read the record before A and is tied to no one in its
    /// view, changes only `x` and would cap the expiry 10 minutes from now. B stores the expiry
    /// that A's login calls for, and the session stays listed under A's user, whose set outlives
    /// it.
    pub(crate) async fn r17_a_slow_write_keeps_another_requests_login<B>(backend: &B)
    where
        B: Backend<Store = RedisStore>,
    {
        let store = backend.store();
        let (key, now) = (fresh_key(), now_ms());
        let (duration, max_lifetime) = (30 * MINUTE, Some(60 * MINUTE));
        let created = now - 50 * MINUTE;
        let data = Map::from_iter([("x".to_owned(), json!(0))]);
        insert(&store, &key, &Record::new(data, created, now + 10 * MINUTE)).await;
        let before = store.read(&key).await.expect("read").expect("live");

        let login = now_ms();
        let a = with(&before.data, "__login", json!(to_ms(login)));
        let a = with(&a, "__user", json!("ann"));
        let record = Record::new(a, created, login + duration);
        let changed = ["__login", "__user"];
        let a_expiry = update(&store, &key, record, &changed, duration, max_lifetime).await;
        about(a_expiry, login + duration, "A's expiry");

        let b = with(&before.data, "x", json!(1));
        let b_now = now_ms();
        let record = Record::new(b, created, created + 60 * MINUTE);
        let b_expiry = update(&store, &key, record, &["x"], duration, max_lifetime).await;
        about(b_expiry, b_now + duration, "B's expiry follows A's login");

        let stored = store.read(&key).await.expect("read").expect("live");
        assert_eq!(stored.expires_at, b_expiry);
        assert_eq!(stored.data["x"], json!(1));
        assert_eq!(stored.data["__login"], json!(to_ms(login)));
        let ttl = pttl(&store, &hash_of(&store, &key)).await;
        assert!((25 * 60_000..=30 * 60_000).contains(&ttl), "PTTL {ttl}");

        let listed = store.user_sessions("ann").await.expect("a listing");
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].1.expires_at, b_expiry);
        let set = format!("{}user:ann", store.key_prefix());
        let set_ttl = pttl(&store, &set).await;
        assert!(
            set_ttl >= ttl,
            "the user's set ({set_ttl} ms) outlives its session ({ttl} ms)"
        );

        // The other way: a login 55 minutes ago caps the expiry 5 minutes from now, though the
        // slow request saw none and would give 30 minutes.
        let old_login = to_ms(now - 55 * MINUTE);
        let record = Record::new(
            with(&stored.data, "__login", json!(old_login)),
            created,
            now,
        );
        update(&store, &key, record, &["__login"], duration, max_lifetime).await;
        let record = Record::new(with(&before.data, "x", json!(2)), created, now + duration);
        let capped = update(&store, &key, record, &["x"], duration, max_lifetime).await;
        assert_eq!(capped, from_ms(old_login) + 60 * MINUTE, "the login's cap");
        assert_eq!(
            store
                .read(&key)
                .await
                .expect("read")
                .expect("live")
                .expires_at,
            capped
        );
    }

    fn from_ms(ms: u64) -> SystemTime {
        session_engine::store::from_ms(ms).expect("a time")
    }

    /// R17 v3 and the user index: a tied record's own duration (2 h), set by another request, is
    /// longer than the slow request's view (30 min); the expiry stored follows the record, and
    /// the user's set is stretched to outlive it, so the session is never missing from it.
    pub(crate) async fn r17_a_slow_write_stretches_the_user_set_to_the_expiry_it_stores<B>(
        backend: &B,
    ) where
        B: Backend<Store = RedisStore>,
    {
        let store = backend.store();
        let (key, now) = (fresh_key(), now_ms());
        let duration = 30 * MINUTE;
        let data = Map::from_iter([("__user".to_owned(), json!("bob"))]);
        insert(&store, &key, &Record::new(data, now, now + duration)).await;
        let before = store.read(&key).await.expect("read").expect("live");

        let a = with(&before.data, "__cust_dur", json!(7_200_000));
        let a_now = now_ms();
        let record = Record::new(a, now, a_now + 120 * MINUTE);
        update(&store, &key, record, &["__cust_dur"], duration, None).await;

        let b_now = now_ms();
        let record = Record::new(with(&before.data, "x", json!(1)), now, b_now + duration);
        let expiry = update(&store, &key, record, &["x"], duration, None).await;
        about(expiry, b_now + 120 * MINUTE, "the record's own duration");
        let ttl = pttl(&store, &hash_of(&store, &key)).await;
        assert!(ttl > 110 * 60_000, "PTTL {ttl}");
        let set_ttl = pttl(&store, &format!("{}user:bob", store.key_prefix())).await;
        assert!(
            set_ttl >= ttl,
            "the user's set ({set_ttl} ms) outlives its session ({ttl} ms)"
        );
        let listed = store.user_sessions("bob").await.expect("a listing");
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].1.expires_at, expiry);
    }

    /// R17 v3: what an update stores and returns is exactly [`ExpiryRule::expiry`] of the
    /// data as it stands after the update, to the millisecond, whatever the stored own
    /// duration and login hold (JSON that is no `u64`, values past the longest duration,
    /// a login far in the past or future) and whatever the rule's times (sub-millisecond
    /// parts, durations past [`session_engine::MAX_DURATION`]).
    pub(crate) async fn r17_the_stored_expiry_is_exactly_the_rules<B>(backend: &B)
    where
        B: Backend<Store = RedisStore>,
    {
        let store = backend.store();
        let now = now_ms();
        let created = now - 20 * MINUTE;
        let durations = [
            None,
            Some(json!(0)),
            Some(json!(1)),
            Some(json!(90_000)),
            Some(json!(u64::MAX)),
            Some(json!(4_000_000_000_000_u64)),
            Some(json!(18_446_744_073_709_551_616.0_f64)),
            Some(json!(-5)),
            Some(json!(1.5)),
            Some(json!("60000")),
            Some(json!(null)),
        ];
        let logins = [
            None,
            Some(json!(to_ms(now - 55 * MINUTE))),
            Some(json!(to_ms(now - 5 * MINUTE))),
            Some(json!(to_ms(now + 10 * MINUTE))),
            Some(json!(u64::MAX)),
            Some(json!(0)),
            Some(json!("soon")),
        ];
        let rules = [
            (Duration::from_micros(1_800_000_700), None),
            (30 * MINUTE, Some(60 * MINUTE)),
            (
                Duration::from_micros(30 * 60_000_000 + 999),
                Some(Duration::from_micros(3_600_000_999)),
            ),
            (Duration::MAX, Some(Duration::MAX)),
            (30 * MINUTE, Some(Duration::ZERO)),
        ];
        let (mut checked, mut live) = (0, 0);
        for duration in &durations {
            for login in &logins {
                let mut data = Map::from_iter([("x".to_owned(), json!(0))]);
                let reserved = [("__cust_dur", duration), ("__login", login)];
                for (name, value) in reserved {
                    if let Some(value) = value {
                        data.insert(name.to_owned(), value.clone());
                    }
                }
                for (engine_duration, max_lifetime) in rules {
                    let key = fresh_key();
                    let record = Record::new(data.clone(), created, now + 10 * MINUTE);
                    insert(&store, &key, &record).await;
                    // A write of `x` alone, from a request that saw none of the reserved keys.
                    let at = SystemTime::now() + Duration::from_nanos(123_456);
                    let rule = ExpiryRule::new(at, engine_duration, max_lifetime);
                    let seen = Map::from_iter([("x".to_owned(), json!(1))]);
                    let request = Record::new(seen, created, now).with_rule(rule);
                    let changes = Changes::new().with_set("x");
                    let written = store
                        .write(&key, &request, &changes, WriteMode::Update)
                        .await
                        .expect("an update");
                    let mut after = data.clone();
                    after.insert("x".to_owned(), json!(1));
                    let expected = rule.expiry(&after, created);
                    assert_eq!(
                        written, expected,
                        "own duration {duration:?}, login {login:?}, rule {rule:?}"
                    );
                    if let Some(read) = store.read(&key).await.expect("read") {
                        assert_eq!(read.expires_at, expected);
                        live += 1;
                    } else {
                        assert!(
                            expected <= SystemTime::now(),
                            "{rule:?}: gone before {expected:?}"
                        );
                    }
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, durations.len() * logins.len() * rules.len());
        assert!(
            live > checked / 2,
            "{live} of {checked} live: too few to check reads"
        );
    }

    /// R20: NUL characters in keys and values, and values nested [`MAX_DEPTH`] deep (as deep
    /// as `set` allows), round-trip through an insert, a delta update and a replacement.
    pub(crate) async fn r20_nul_characters_and_deep_values_round_trip<B>(backend: &B)
    where
        B: Backend<Store = RedisStore>,
    {
        let store = backend.store();
        let (key, now) = (fresh_key(), now_ms());
        let deep = (1..MAX_DEPTH).fold(json!(["\0 at the bottom"]), |inner, _| json!([inner]));
        let deep_map = (1..MAX_DEPTH).fold(json!({"\0": 0}), |inner, _| json!({"k\0": inner}));
        let mut data = Map::new();
        data.insert("nul\0key".into(), json!("nul\0value"));
        data.insert("\0".into(), json!({"\0": "\0\0"}));
        data.insert("deep".into(), deep.clone());
        let expires = now + 10 * MINUTE;
        insert(&store, &key, &Record::new(data.clone(), now, expires)).await;
        let read = store.read(&key).await.expect("read").expect("live");
        assert_eq!(read.data, data, "inserted");

        data.insert("deep\0map".into(), deep_map);
        data.insert("nul\0key".into(), json!(["\0", "a\0b"]));
        data.remove("\0");
        let changes = Changes::new()
            .with_set("deep\0map")
            .with_set("nul\0key")
            .with_deleted("\0");
        let record = Record::new(data.clone(), now, expires);
        store
            .write(&key, &record, &changes, WriteMode::Update)
            .await
            .expect("a delta");
        let read = store.read(&key).await.expect("read").expect("live");
        assert_eq!(read.data, data, "patched");

        let record = Record::new(data.clone(), now, expires);
        store
            .write(&key, &record, &Changes::replace_all(), WriteMode::Update)
            .await
            .expect("a replacement");
        let read = store.read(&key).await.expect("read").expect("live");
        assert_eq!(read.data, data, "replaced");
        assert_eq!(read.data["deep"], deep);
    }

    /// SPEC 7.2 v3: a listing gives each live record of the user with its creation, its expiry,
    /// its own duration and its last login, exactly; it reads none of the data, so a record
    /// whose data holds a value that is not JSON is listed all the same (log out everywhere can
    /// end it), and one holding megabytes costs no more. Records of another user, untied ones
    /// and expired ones are not listed.
    pub(crate) async fn users_a_listing_summarizes_each_record_without_reading_its_data<B>(
        backend: &B,
    ) where
        B: Backend<Store = RedisStore>,
    {
        let store = backend.store();
        let now = now_ms();
        let hour = 60 * MINUTE;
        let tied = |user: &str| Map::from_iter([("__user".to_owned(), json!(user))]);

        let plain = fresh_key();
        insert(
            &store,
            &plain,
            &Record::new(tied("ann"), now - hour, now + hour),
        )
        .await;
        let (own, login) = (fresh_key(), now - MINUTE);
        let mut data = tied("ann");
        data.insert("__cust_dur".into(), json!(5_000_000));
        data.insert("__login".into(), json!(to_ms(login)));
        data.insert("big".into(), json!("x".repeat(1 << 20)));
        insert(
            &store,
            &own,
            &Record::new(data, now - 2 * hour, now + 2 * hour),
        )
        .await;
        let spoiled = fresh_key();
        insert(&store, &spoiled, &Record::new(tied("ann"), now, now + hour)).await;
        let _: i64 = store
            .client()
            .hset(hash_of(&store, &spoiled), (".visits", "not json"))
            .await
            .expect("HSET");
        let other = fresh_key();
        insert(&store, &other, &Record::new(tied("bob"), now, now + hour)).await;
        let expired = fresh_key();
        let soon = now_ms() + Duration::from_millis(300);
        insert(&store, &expired, &Record::new(tied("ann"), now, soon)).await;
        let untied = fresh_key();
        insert(&store, &untied, &Record::new(tied("ann"), now, now + hour)).await;
        let record = Record::new(Map::new(), now, now + hour);
        let untie = Changes::new().with_deleted("__user");
        store
            .write(&untied, &record, &untie, WriteMode::Update)
            .await
            .expect("untie");
        tokio::time::sleep(Duration::from_millis(400)).await;

        let mut listed = store.user_sessions("ann").await.expect("a listing");
        listed.sort_by_key(|(_, summary)| summary.created_at);
        let expected = vec![
            (
                own,
                RecordSummary::new("ann", now - 2 * hour, now + 2 * hour)
                    .with_duration(Some(Duration::from_millis(5_000_000)))
                    .with_login(Some(login)),
            ),
            (plain, RecordSummary::new("ann", now - hour, now + hour)),
            (spoiled, RecordSummary::new("ann", now, now + hour)),
        ];
        assert_eq!(listed, expected);
        let bob = store.user_sessions("bob").await.expect("a listing");
        assert_eq!(bob, [(other, RecordSummary::new("bob", now, now + hour))]);
        assert!(
            store
                .user_sessions("cy")
                .await
                .expect("a listing")
                .is_empty()
        );
    }
}
