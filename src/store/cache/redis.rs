//! The invalidation channel of a [`RedisStore`]: server-assisted client-side caching.
//!
//! A client of its own, on RESP3, asks every primary (`CLIENT TRACKING ON BCAST PREFIX
//! <the store's prefix>`) to push the name of every key under the prefix that any client
//! changes, expires or evicts. Such a push drops the key; a lost connection, a reconnection, a
//! Cluster's change of shape or messages this process fell behind on turn the cache off and
//! empty until tracking is on again. Every second the channel is checked end to end: the
//! tracking client writes a key of its own under the prefix (`near-cache-probe:…`, expiring
//! after 10 s), and if its invalidation has not come back 2 s later the channel counts as
//! behind (or silently gone): off, and tracking turned on again. After any loss the cache
//! serves again only once a probe written after tracking was back has come back. On a
//! Cluster the probe checks the node that holds its key.

use std::any::Any;
use std::fmt;
use std::time::{Duration, Instant};

use fred::clients::Client;
use fred::error::{Error as RedisError, ErrorKind};
use fred::interfaces::{
    ClientLike, ClusterInterface, EventInterface, KeysInterface, TrackingInterface,
};
use fred::prelude::ClientInterface;
use fred::types::Expiration;
use fred::types::{Builder, RespVersion};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::{Invalidations, NearCache};
use crate::store::StoreError;
use crate::store::redis::RedisStore;

/// How long to wait before asking again for tracking that the server refused.
const RETRY: Duration = Duration::from_millis(100);
/// How often the channel is checked end to end: a key of its own written under the prefix,
/// whose invalidation must come back.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How late that invalidation may be before the channel counts as behind (or silently gone).
const PROBE_LATE: Duration = Duration::from_secs(2);

/// What runs a [`NearCache`]'s Redis invalidation channel: the tracking client and the task
/// that reads its pushes. Ended (the task aborted, the client closed) when the last clone of
/// the cache is dropped.
pub struct RedisTracking {
    client: Client,
    task: JoinHandle<()>,
}

impl fmt::Debug for RedisTracking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTracking").finish_non_exhaustive()
    }
}

impl Drop for RedisTracking {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            runtime.spawn(async move {
                let _ = client.quit().await;
            });
        }
    }
}

impl RedisTracking {
    /// The client whose connections receive the invalidations (for example to find their ids
    /// with `connection_ids()`).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl NearCache<RedisStore> {
    /// A cache of at most `capacity` records in front of `store`, kept coherent by Redis
    /// client tracking: on a client of its own, built from the store client's settings (the
    /// same servers, TLS, credentials and reconnection policy) but speaking RESP3 (Redis 6 or
    /// later). Standalone, Sentinel and Cluster alike; on a Cluster, tracking is asked of every
    /// primary, and again whenever the Cluster changes.
    ///
    /// Returns once tracking is on, so the cache serves from the start.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the server cannot be reached, [`StoreError::Backend`]
    /// when it refuses tracking (a server before Redis 6, or a proxy that does not pass
    /// `CLIENT TRACKING` on).
    pub async fn redis(store: RedisStore, capacity: usize) -> Result<Self, StoreError> {
        let base = store.client();
        let mut config = base.client_config();
        config.version = RespVersion::RESP3;
        let mut builder = Builder::from_config(config);
        builder
            .set_connection_config(base.connection_config().clone())
            .set_performance_config(base.perf_config());
        if let Some(policy) = base.client_reconnect_policy() {
            builder.set_policy(policy);
        }
        let client = builder.build().map_err(error)?;
        client.init().await.map_err(error)?;

        let cache = Self::new(store, capacity);
        let feed = cache.invalidations();
        let prefix = cache.store().key_prefix().to_owned();
        // Listen before tracking is on, so that no push is missed.
        let pushes = client.invalidation_rx();
        let errors = client.error_rx();
        let reconnects = client.reconnect_rx();
        let changes = client.cluster_change_rx();
        if let Err(failure) = track(&client, &prefix).await {
            let _ = client.quit().await;
            return Err(error(failure));
        }
        feed.up();
        let task = tokio::spawn(run(
            client.clone(),
            prefix,
            feed,
            Receivers {
                pushes,
                errors,
                reconnects,
                changes,
            },
        ));
        Ok(cache.with_source(RedisTracking { client, task }))
    }

    /// The tracking client of a cache made by `NearCache::redis`.
    pub fn tracking_client(&self) -> Option<&Client> {
        let source: &(dyn Any + Send + Sync) = self._source.as_deref()?;
        source
            .downcast_ref::<RedisTracking>()
            .map(RedisTracking::client)
    }
}

struct Receivers {
    pushes: tokio::sync::broadcast::Receiver<fred::types::client::Invalidation>,
    errors: tokio::sync::broadcast::Receiver<(RedisError, Option<fred::types::config::Server>)>,
    reconnects: tokio::sync::broadcast::Receiver<fred::types::config::Server>,
    changes: tokio::sync::broadcast::Receiver<Vec<fred::types::ClusterStateChange>>,
}

/// Turns tracking on, on every primary of a Cluster or on the one server.
async fn track(client: &Client, prefix: &str) -> Result<(), RedisError> {
    if client.is_clustered() {
        // fred's `start_tracking` asks one node only in BCAST mode, and each node tells of its
        // own keys only: ask every primary.
        client.sync_cluster().await?;
        let primaries = client
            .cached_cluster_state()
            .map(|state| state.unique_primary_nodes())
            .unwrap_or_default();
        if primaries.is_empty() {
            return Err(RedisError::new(ErrorKind::Cluster, "no primary is known"));
        }
        for server in primaries {
            let node = client.with_cluster_node(server);
            // A connection that kept tracking (the loss was another's) refuses to track the
            // same prefix twice: off first.
            node.client_tracking::<(), _, _>("off", None, None, false, false, false, false)
                .await?;
            node.client_tracking::<(), _, _>("on", None, prefix, true, false, false, false)
                .await?;
        }
        Ok(())
    } else {
        // As above: a connection that kept tracking refuses to track the prefix twice.
        client.stop_tracking().await?;
        client
            .start_tracking(prefix, true, false, false, false)
            .await
    }
}

async fn run(client: Client, prefix: String, feed: Invalidations, mut rx: Receivers) {
    // The probe: a key under the prefix that no session key can be (those have no `:`).
    let probe = format!(
        "{prefix}near-cache-probe:{}",
        crate::store::random_id().unwrap_or_default()
    );
    let mut probe_sent: Option<Instant> = None;
    // Tracking is on again, the cache off until a probe comes back.
    let mut confirming = false;
    let mut ticker = tokio::time::interval(PROBE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let lost = tokio::select! {
            biased;
            push = rx.pushes.recv() => match push {
                Ok(push) => {
                    for key in &push.keys {
                        let name = key.as_bytes();
                        if name == probe.as_bytes() {
                            probe_sent = None;
                            if confirming {
                                // Tracking is on again and told of a write made after it.
                                confirming = false;
                                feed.up();
                            }
                            continue;
                        }
                        let key = name
                            .strip_prefix(prefix.as_bytes())
                            .and_then(|rest| std::str::from_utf8(rest).ok());
                        if let Some(key) = key {
                            feed.invalidate(key);
                        }
                    }
                    false
                }
                // Pushes were lost: what they named is unknown.
                Err(RecvError::Lagged(_)) => {
                    feed.clear();
                    false
                }
                Err(RecvError::Closed) => {
                    feed.down();
                    return;
                }
            },
            _ = rx.errors.recv() => true,
            _ = rx.reconnects.recv() => true,
            _ = rx.changes.recv() => true,
            _ = ticker.tick() => match probe_sent {
                // The last probe's invalidation is late: the channel is behind or gone.
                Some(sent) if sent.elapsed() > PROBE_LATE => true,
                Some(_) => false,
                None => {
                    probe_sent = Some(send_probe(&client, &probe));
                    false
                }
            },
        };
        if lost {
            feed.down();
            tracing::debug!("near cache: invalidation channel lost, turning tracking on again");
            while let Err(failure) = track(&client, &prefix).await {
                tracing::debug!(%failure, "near cache: tracking not on yet");
                tokio::time::sleep(RETRY).await;
            }
            // Serving again once a probe's invalidation comes back, not before: a channel
            // that was behind may still be.
            confirming = true;
            probe_sent = Some(send_probe(&client, &probe));
        }
    }
}

/// Writes the probe key (its invalidation must come back), without waiting for the answer.
fn send_probe(client: &Client, probe: &str) -> Instant {
    let (client, probe) = (client.clone(), probe.to_owned());
    tokio::spawn(async move {
        let expiry = Some(Expiration::PX(10_000));
        let _: Result<(), _> = client.set(probe, 1, expiry, None, false).await;
    });
    Instant::now()
}

fn error(failure: RedisError) -> StoreError {
    if matches!(
        failure.kind(),
        ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled
    ) {
        StoreError::unavailable(failure)
    } else {
        StoreError::backend(failure)
    }
}
