//! `RedisStore` behind Redis Sentinel: the tests of a single server on the primary that a
//! Sentinel names, each under a key prefix of its own, and a failover that the store follows.
//!
//! `REDIS_SENTINEL_URL` names a running deployment (`redis-sentinel://…`; `scripts/test`
//! starts one). Without it, the first test that needs one starts it with
//! `scripts/redis-sentinel.sh` on ports 7335 to 7337, stopped once this test binary has
//! exited (see [`super::scripts`]). The failover test runs a deployment of its own, on ports
//! 7340 to 7342, since it moves the primary.

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Map, json};
use session_engine::store::redis::RedisStore;
use session_engine::{Changes, Record, SessionStore, StoreError, WriteMode};

use super::outage::wait_until;
use super::redis::{Deployment, On};
use super::scripts::{Own, Script};
use super::{fresh_key, insert, now_ms};

const SCRIPT: Script = Script("redis-sentinel");
/// The name the script's Sentinel knows its primary by.
const SERVICE: &str = "session-engine";

/// The deployment's URL: `REDIS_SENTINEL_URL`, or one started for this binary.
pub(crate) fn url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| SCRIPT.url_or_start("REDIS_SENTINEL_URL", 7335))
}

/// The primary a Sentinel names, for [`On`].
pub(crate) struct Sentinel;

impl Deployment for Sentinel {
    fn url() -> &'static str {
        url()
    }
}

store_tests!(On<Sentinel>, spoilable);

/// `redis-cli -p PORT ARGS…`, its output trimmed.
fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The port of the primary that the Sentinel on `sentinel` names.
fn primary(sentinel: u16) -> String {
    let address = cli(sentinel, &["sentinel", "get-master-addr-by-name", SERVICE]);
    address.lines().last().unwrap_or_default().to_owned()
}

/// The Sentinel promotes the replica: the store, connected before, finds the session on the
/// new primary and writes there, without being told, once the old primary has stepped down
/// (the Sentinel makes it a replica and closes its clients' connections, some seconds after
/// the switch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_follows_the_primary_through_a_failover() {
    let (first, replica, sentinel) = (7340, 7341, 7342);
    let deployment = Own::start(SCRIPT, first);
    let store = RedisStore::connect(&deployment.url)
        .await
        .expect("the Sentinel names a primary");
    let (key, now) = (fresh_key(), now_ms());
    let expires = now + Duration::from_secs(600);
    let mut data = Map::new();
    data.insert("before".into(), json!(1));
    insert(&store, &key, &Record::new(data.clone(), now, expires)).await;
    let hash = format!("{}{}", store.key_prefix(), key.as_str());
    wait_until("the replica holding the session", || {
        cli(replica, &["exists", &hash]) == "1"
    })
    .await;

    assert_eq!(cli(sentinel, &["sentinel", "failover", SERVICE]), "OK");
    wait_until("the Sentinel naming the replica", || {
        primary(sentinel) == replica.to_string()
    })
    .await;
    wait_until("the old primary stepping down", || {
        cli(first, &["role"]).starts_with("slave")
    })
    .await;

    data.insert("after".into(), json!(2));
    let update = Record::new(data.clone(), now, expires);
    let changes = Changes::new().with_set("after");
    let mut tries = 0;
    loop {
        match store
            .write(&key, &update, &changes, WriteMode::Update)
            .await
        {
            Ok(_) => break,
            Err(StoreError::Unavailable(error)) if tries < 100 => {
                tries += 1;
                tracing::debug!(%error, "the store is not on the new primary yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("the write after the failover: {error:?}"),
        }
    }
    let record = store.read(&key).await.expect("read").expect("live");
    assert_eq!(record.data, data);
    assert_eq!(
        cli(replica, &["hget", &hash, ".after"]),
        "2",
        "the write went to the new primary"
    );
    assert!(
        cli(replica, &["role"]).starts_with("master"),
        "the promoted replica is the primary"
    );
}
super::redis::redis_tests!(On<Sentinel>);
