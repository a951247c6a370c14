//! `RedisStore` against a real Redis Cluster of three masters on loopback: the tests of a
//! single server, each under a key prefix of its own, on one cluster for the whole binary.
//!
//! `REDIS_CLUSTER_URL` names a running cluster (`scripts/test` starts one). Without it, the
//! first test that needs the cluster starts one with `scripts/redis-cluster.sh` on ports 7311
//! to 7313, stopped once this test binary has exited (see [`super::scripts`]).

use std::sync::OnceLock;

use session_engine::store::redis::fred::interfaces::ClientLike as _;

use super::Backend;
use super::redis::{Deployment, On};
use super::scripts::Script;

/// The cluster's URL: `REDIS_CLUSTER_URL`, or a cluster started for this binary.
fn url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| Script("redis-cluster").url_or_start("REDIS_CLUSTER_URL", 7311))
}

/// The cluster, for [`On`].
pub(crate) struct Cluster;

impl Deployment for Cluster {
    fn url() -> &'static str {
        url()
    }
}

store_tests!(On<Cluster>, spoilable);

#[tokio::test]
async fn the_client_knows_it_talks_to_a_cluster() {
    let cluster = On::<Cluster>::open().await;
    assert!(
        cluster.store().client().is_clustered(),
        "{} is a cluster, and the client knows it",
        url()
    );
}

super::redis::redis_tests!(On<Cluster>);
