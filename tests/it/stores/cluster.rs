//! `RedisStore` against a real Redis Cluster of three masters on loopback: the tests of a
//! single server, each under a key prefix of its own, on one cluster for the whole binary.
//!
//! `REDIS_CLUSTER_URL` names a running cluster (`scripts/test` starts one). Without it, the
//! first test that needs the cluster starts one with `scripts/redis-cluster.sh` on ports 7311
//! to 7313, and a watcher process stops it once this test binary has exited. The tests share
//! it through a `OnceLock`, so they may run in parallel threads; a runner that gives each test
//! a process of its own (as nextest does) must set `REDIS_CLUSTER_URL` instead.

use std::process::Command;
use std::sync::OnceLock;

use session_engine::store::redis::RedisStore;
use session_engine::store::redis::fred::interfaces::ClientLike as _;
use session_engine::testing::Options;

use super::redis::Redis;
use super::{Backend, Spoil};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/redis-cluster.sh");
const FIRST_PORT: &str = "7311";

/// Puts in the background a watcher that waits for this process (`$1`) to exit, then stops
/// the cluster, unless another run has replaced it meanwhile (its first node's pidfile `$2`
/// no longer holds `$3`).
const WATCH: &str = r#"(
while kill -0 "$1" 2>/dev/null; do sleep 0.2; done
[ "$(cat "$2" 2>/dev/null)" = "$3" ] && exec "$4" stop "$5"
) </dev/null >/dev/null 2>&1 &"#;

/// The cluster's URL: `REDIS_CLUSTER_URL`, or a cluster started for this binary.
fn url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| std::env::var("REDIS_CLUSTER_URL").unwrap_or_else(|_| start()))
}

/// Starts a cluster, and the watcher that stops it after this process; returns its URL.
fn start() -> String {
    let output = Command::new(SCRIPT)
        .args(["start", FIRST_PORT])
        .output()
        .expect("the cluster script runs");
    assert!(
        output.status.success(),
        "the cluster did not start: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tmp = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".to_owned());
    let pidfile = format!("{tmp}/session-engine-redis-cluster-{FIRST_PORT}/{FIRST_PORT}.pid");
    let node = std::fs::read_to_string(&pidfile).expect("the first node's pidfile");
    let this = std::process::id().to_string();
    let watching = Command::new("sh")
        .args([
            "-c",
            WATCH,
            "watch",
            &this,
            &pidfile,
            node.trim(),
            SCRIPT,
            FIRST_PORT,
        ])
        .status()
        .expect("the watcher starts");
    assert!(watching.success(), "the watcher starts: {watching}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .expect("the script prints the URL")
        .to_owned()
}

/// [`Redis`], on the cluster.
pub(crate) struct Cluster(Redis);

impl Backend for Cluster {
    type Store = RedisStore;

    async fn open() -> Self {
        Self(Redis::at(url()).await)
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

impl Spoil for Cluster {
    async fn spoil(&self, key: &str) {
        self.0.spoil(key).await;
    }

    async fn still_spoiled(&self, key: &str) -> bool {
        self.0.still_spoiled(key).await
    }
}

store_tests!(Cluster, spoilable);

#[tokio::test]
async fn the_client_knows_it_talks_to_a_cluster() {
    let cluster = Cluster::open().await;
    assert!(
        cluster.store().client().is_clustered(),
        "{} is a cluster, and the client knows it",
        url()
    );
}
