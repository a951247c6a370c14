//! `RedisStore` against the real Redis server on 127.0.0.1:6379 (`REDIS_URL` overrides), each
//! test under a key prefix of its own. The outage test runs a Redis server of its own, which it
//! stops and starts.

#![cfg(all(feature = "redis", feature = "testing"))]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::stores::{self, free_port, wait_until};
use fred::interfaces::{HashesInterface, KeysInterface};
use serde_json::{Map, json};
use session_engine::store::redis::{RedisStore, fred};
use session_engine::testing::{Options, assert_conforms_with};
use session_engine::{Changes, Record, SessionStore, StoreError};

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A store under a prefix no other test uses.
async fn store() -> RedisStore {
    let prefix = format!(
        "test:{}:",
        session_engine::store::random_id().expect("an id")
    );
    RedisStore::connect(&url())
        .await
        .expect("Redis answers")
        .with_key_prefix(&prefix)
}

#[tokio::test]
async fn redis_store_conforms() {
    assert_conforms_with(&store().await, Options::self_expiring()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_changing_different_keys_both_survive() {
    stores::different_keys_both_survive(Arc::new(store().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r9_a_destroy_racing_a_write_stays_destroyed() {
    stores::destroy_wins_over_a_racing_write(Arc::new(store().await)).await;
}

#[tokio::test]
async fn odd_keys_survive_delta_writes() {
    stores::odd_keys_survive_delta_writes(Arc::new(store().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_app_instances_share_sessions() {
    let first = store().await;
    let second = RedisStore::connect(&url())
        .await
        .expect("Redis answers")
        .with_key_prefix(first.key_prefix());
    stores::two_instances_share_sessions(Arc::new(first), Arc::new(second)).await;
}

#[tokio::test]
async fn a_session_is_a_hash_that_redis_expires() {
    let store = store().await;
    let now = SystemTime::now();
    let expires = now + Duration::from_secs(90);
    let mut data = Map::new();
    data.insert(
        "c".into(),
        json!("a data key named like the creation field"),
    );
    data.insert("n".into(), json!(1));
    store
        .write(
            "k",
            &Record::new(data, now, expires),
            &Changes::replace_all(),
            false,
        )
        .await
        .expect("insert");
    let key = format!("{}k", store.key_prefix());
    let fields: std::collections::HashMap<String, String> =
        store.client().hgetall(&key).await.expect("HGETALL");
    assert_eq!(fields.len(), 4, "{fields:?}");
    assert_eq!(fields[".n"], "1");
    assert_eq!(fields[".c"], "\"a data key named like the creation field\"");
    let ttl: i64 = store.client().pttl(&key).await.expect("PTTL");
    assert!((85_000..=90_000).contains(&ttl), "PTTL {ttl}");
    let record = store.read("k").await.expect("read").expect("live");
    assert_eq!(
        record.data["c"],
        json!("a data key named like the creation field")
    );

    store
        .touch("k", now + Duration::from_secs(30))
        .await
        .expect("touch");
    let ttl: i64 = store.client().pttl(&key).await.expect("PTTL");
    assert!((25_000..=30_000).contains(&ttl), "PTTL after touch {ttl}");
    assert_eq!(
        store.cleanup().await.expect("cleanup"),
        0,
        "Redis expires keys itself"
    );
}

#[tokio::test]
async fn prefixes_keep_apps_apart() {
    let one = store().await;
    let two = store().await;
    let now = SystemTime::now();
    let record = Record::new(Map::new(), now, now + Duration::from_secs(60));
    one.write("k", &record, &Changes::replace_all(), false)
        .await
        .expect("insert");
    assert!(two.read("k").await.expect("read").is_none());
    two.write("k", &record, &Changes::replace_all(), false)
        .await
        .expect("the same key under another prefix is free");
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
    async fn start(port: u16) -> Arc<Self> {
        let server = Arc::new(Self {
            port,
            child: Mutex::new(None),
        });
        server.spawn().await;
        server
    }

    async fn spawn(&self) {
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
async fn r1_r12_an_outage_fails_only_session_routes_and_the_app_recovers() {
    let server = TempRedis::start(free_port()).await;
    let store = RedisStore::connect(&format!("redis://127.0.0.1:{}", server.port))
        .await
        .expect("the test Redis answers");
    let (stopping, starting) = (server.clone(), server.clone());
    stores::outage_and_recovery(
        Arc::new(store),
        async move { stopping.kill() },
        async move { starting.spawn().await },
    )
    .await;
}
