//! [`SessionEngine`]: the cookie settings, the secrets, the timings and the store, shared by
//! every request; built with [`SessionEngineBuilder`].

mod builder;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use builder::{
    DEFAULT_DURATION, DEFAULT_MAX_DATA_BYTES, DEFAULT_MAX_SESSIONS_PER_USER, DEFAULT_STORE_TIMEOUT,
    SessionEngineBuilder,
};

use http::HeaderName;

use crate::cookie::{CookieFormat, Credentials};
use crate::id::{SessionId, StoreKey};
use crate::lifetime::Lifetime;
use crate::observe::Metrics;
use crate::signing::Keys;
use crate::store::gateway::Gateway;
use crate::store::{SessionStore, StoreError};

/// The session settings and the store, shared by every request (cheap to clone).
///
/// Made with [`SessionEngine::builder`]; served by [`SessionLayer`](crate::SessionLayer).
#[derive(Clone)]
pub struct SessionEngine {
    inner: Arc<Inner>,
}

struct Inner {
    keys: Keys,
    cookie_name: String,
    send_cookie: bool,
    header: Option<HeaderName>,
    track_users: bool,
    max_sessions_per_user: usize,
    cookie: CookieFormat,
    lifetime: Lifetime,
    automatic_touch: bool,
    hash_ids: bool,
    max_data_bytes: usize,
    gateway: Gateway,
}

impl SessionEngine {
    /// A builder with every option at its default. A secret is required.
    pub fn builder() -> SessionEngineBuilder {
        SessionEngineBuilder::default()
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        self.inner.gateway.store()
    }

    /// Removes expired records from the store; returns how many. Most stores need it now and
    /// then (the SQL stores keep expired rows until then); `MemoryStore` sweeps by itself and
    /// Redis expires its keys.
    ///
    /// A store may do it in bounded steps: one call of a SQL store is one step of a walk
    /// through its table, of at most its clean-up budget (2 s by default,
    /// `with_cleanup_budget`), going on from where the previous call stopped. So one call may
    /// leave expired records further along; [`spawn_cleanup`](Self::spawn_cleanup) goes
    /// through the whole table over successive periods.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn cleanup(&self) -> Result<u64, StoreError> {
        self.inner.gateway.cleanup().await
    }

    /// Spawns a tokio task that calls [`cleanup`](Self::cleanup) every `period`, logging
    /// failures, until the returned handle is aborted or the runtime shuts down.
    ///
    /// Each call does one bounded step, ended by the store's own budget (the SQL stores) or
    /// the engine's `store_timeout`, and the next goes on from where it stopped: the task
    /// goes through a table of any size over successive periods, and removes every expired
    /// record in the end. The larger the table, the more periods a walk takes: about its
    /// rows ÷ (2 s × the rate at which the store walks them), for a SQL store with its
    /// default budget. `cleanup_rate` in the crate's `bench/` measures that rate: on a busy
    /// two-core machine, 50,000 to 90,000 rows a second for a PostgreSQL table of two million
    /// rows (which lie on disk in random key order) and 500,000 to 1,500,000 for SQLite, so
    /// that a period of 5 minutes walks such a PostgreSQL table in one to two hours. Pick the
    /// period for the size of your table.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or if `period` is zero.
    pub fn spawn_cleanup(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        assert!(!period.is_zero(), "the cleanup period must not be zero");
        let engine = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match engine.cleanup().await {
                    Ok(removed) => tracing::debug!(removed, "session cleanup"),
                    Err(error) => tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "session cleanup failed"
                    ),
                }
            }
        })
    }

    // ---- what a session asks of its engine ----

    pub(crate) fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub(crate) fn cookie_name(&self) -> &str {
        &self.inner.cookie_name
    }

    pub(crate) fn cookie(&self) -> &CookieFormat {
        &self.inner.cookie
    }

    /// What a request carries that may name its session.
    pub(crate) fn credentials(&self, headers: &http::HeaderMap) -> Credentials {
        Credentials::from_headers(headers, self.inner.send_cookie, self.inner.header.as_ref())
    }

    /// Whether the cookie is sent and read (`cookie(false)` turns it off).
    pub(crate) fn sends_cookie(&self) -> bool {
        self.inner.send_cookie
    }

    /// Whether sessions may be tied to users (`track_users`).
    pub(crate) fn tracks_users(&self) -> bool {
        self.inner.track_users
    }

    /// The header that carries the signed id too, if any.
    pub(crate) fn header(&self) -> Option<&HeaderName> {
        self.inner.header.as_ref()
    }

    pub(crate) fn lifetime(&self) -> &Lifetime {
        &self.inner.lifetime
    }

    pub(crate) fn gateway(&self) -> &Gateway {
        &self.inner.gateway
    }

    /// The engine's metrics (nothing without the `metrics` feature).
    pub(crate) fn metrics(&self) -> &Metrics {
        self.inner.gateway.metrics()
    }

    pub(crate) fn automatic_touch(&self) -> bool {
        self.inner.automatic_touch
    }

    pub(crate) fn max_data_bytes(&self) -> usize {
        self.inner.max_data_bytes
    }

    /// How many live sessions one user may have (`max_sessions_per_user`).
    pub(crate) fn max_sessions_per_user(&self) -> usize {
        self.inner.max_sessions_per_user
    }

    /// The key the store sees for `id`: its hash unless `hash_ids` is off.
    pub(crate) fn store_key(&self, id: &SessionId) -> StoreKey {
        id.store_key(self.inner.hash_ids)
    }
}

impl fmt::Debug for SessionEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("SessionEngine")
            .field("secrets", &inner.keys)
            .field("cookie", &inner.cookie)
            .field("send_cookie", &inner.send_cookie)
            .field("header", &inner.header)
            .field("track_users", &inner.track_users)
            .field("max_sessions_per_user", &inner.max_sessions_per_user)
            .field("lifetime", &inner.lifetime)
            .field("automatic_touch", &inner.automatic_touch)
            .field("hash_ids", &inner.hash_ids)
            .field("max_data_bytes", &inner.max_data_bytes)
            .field("store", &inner.gateway)
            .finish()
    }
}
