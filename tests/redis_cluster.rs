//! `RedisStore` against a real Redis Cluster of three masters on loopback.
//!
//! `REDIS_CLUSTER_URL` names a running cluster (`.ci/run` starts one with
//! `scripts/redis-cluster.sh`); without it, this test starts its own with that script on ports
//! 7311 to 7313 and stops it at the end.

#![cfg(all(feature = "redis", feature = "testing"))]

mod common;

use std::process::Command;
use std::sync::Arc;

use common::stores;
use session_engine::store::redis::RedisStore;
use session_engine::store::redis::fred::interfaces::ClientLike;
use session_engine::testing::{Options, assert_conforms_with};

/// A cluster this test started, stopped when dropped.
struct Cluster {
    first_port: &'static str,
}

impl Cluster {
    const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/redis-cluster.sh");

    fn start(first_port: &'static str) -> (Self, String) {
        let output = Command::new(Self::SCRIPT)
            .args(["start", first_port])
            .output()
            .expect("the cluster script runs");
        let cluster = Self { first_port };
        assert!(
            output.status.success(),
            "the cluster did not start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let url = String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .expect("the script prints the URL")
            .to_owned();
        (cluster, url)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(Self::SCRIPT)
            .args(["stop", self.first_port])
            .output();
    }
}

/// A store under a prefix no other run uses.
async fn store(url: &str, prefix: &str) -> RedisStore {
    RedisStore::connect(url)
        .await
        .expect("the cluster answers")
        .with_key_prefix(prefix)
}

/// One test, so that one cluster serves every check and is stopped after the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_store_passes_every_check() {
    let (_cluster, url) = match std::env::var("REDIS_CLUSTER_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let (cluster, url) = Cluster::start("7311");
            (Some(cluster), url)
        }
    };
    let prefix = format!(
        "test:{}:",
        session_engine::store::random_id().expect("an id")
    );
    let first = store(&url, &prefix).await;
    assert!(
        first.client().is_clustered(),
        "{url} is a cluster, and the client knows it"
    );

    assert_conforms_with(&first, Options::self_expiring()).await;
    stores::different_keys_both_survive(Arc::new(first.clone())).await;
    stores::destroy_wins_over_a_racing_write(Arc::new(first.clone())).await;
    stores::odd_keys_survive_delta_writes(Arc::new(first.clone())).await;
    let second = store(&url, &prefix).await;
    stores::two_instances_share_sessions(Arc::new(first), Arc::new(second)).await;
}
