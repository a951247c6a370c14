//! `RedisStore` against a real Redis Cluster of three masters on loopback: the tests of a
//! single server, each under a key prefix of its own, on one cluster for the whole binary.
//!
//! `REDIS_CLUSTER_URL` names a running cluster (`scripts/test` starts one). Without it, the
//! first test that needs the cluster starts one with `scripts/redis-cluster.sh` on ports 7311
//! to 7313, stopped once this test binary has exited (see [`super::scripts`]).

use std::sync::OnceLock;

use session_engine::store::redis::RedisStore;
use session_engine::store::redis::fred::interfaces::ClientLike as _;
use session_engine::testing::Options;

use super::redis::Redis;
use super::scripts::Script;
use super::{Backend, Spoil};

/// The cluster's URL: `REDIS_CLUSTER_URL`, or a cluster started for this binary.
fn url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| Script("redis-cluster").url_or_start("REDIS_CLUSTER_URL", 7311))
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
