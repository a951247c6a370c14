//! `RedisStore` against the real Redis server on 127.0.0.1:6379 (`REDIS_URL` overrides), each
//! test under a key prefix of its own, whose keys it removes when it ends, passed or failed.
//! The outage test runs a Redis server of its own, which it stops and starts.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::interfaces::{HashesInterface as _, KeysInterface as _, SortedSetsInterface as _};
use serde_json::{Map, json};
use session_engine::store::redis::{RedisStore, fred};
use session_engine::store::to_ms;
use session_engine::testing::Options;
use session_engine::{Changes, Record, SessionStore, StoreError, StoreKey, Touched, WriteMode};

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

/// On a single server, the keys under the test's prefix go with it (on a Cluster, with the
/// cluster).
impl Drop for Redis {
    fn drop(&mut self) {
        if self.url.starts_with("redis://") {
            let sweep =
                r#"redis-cli -u "$1" --scan --pattern "$2*" | xargs -r redis-cli -u "$1" del"#;
            let _ = Command::new("sh")
                .args(["-c", sweep, "sweep", &self.url, self.store.key_prefix()])
                .output();
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
