//! [`Gateway`]: the engine's one way to the store. Every hook call passes here, and every one
//! that has to wait gets the engine's deadline (`store_timeout`), so no request waits on a
//! store for ever; an answer given at once passes through untouched, with no timer.
//!
//! Each call is observed here too (SPEC 7.4): a `session_store` span around it, with its hook,
//! the store's name, its outcome and its duration, and, with the `metrics` feature, its
//! latency, errors and time-outs counted by hook.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::observe::{Hook, Metrics, StoreCall};

use tracing::Instrument as _;

use super::{
    Changes, Record, RecordSummary, SessionStore, StoreError, StoreFuture, StoreKey, Touched,
    WriteMode,
};

/// The store, the deadline of each call to it, and the engine's metrics.
#[derive(Clone)]
pub(crate) struct Gateway {
    store: Arc<dyn SessionStore>,
    /// The store's name, as spans give it.
    name: &'static str,
    timeout: Option<Duration>,
    /// The engine's metrics: the store calls', and the sessions' events.
    metrics: Arc<Metrics>,
}

impl Gateway {
    pub(crate) fn new(store: Arc<dyn SessionStore>, timeout: Option<Duration>) -> Self {
        let name = store.name();
        Self {
            store,
            name,
            timeout,
            metrics: Arc::default(),
        }
    }

    pub(crate) fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn id(&self) -> StoreFuture<String> {
        self.call(Hook::Id, |store| store.id())
    }

    pub(crate) fn read(&self, key: &StoreKey) -> StoreFuture<Option<Record>> {
        self.call(Hook::Read, |store| store.read(key))
    }

    pub(crate) fn write(
        &self,
        key: &StoreKey,
        record: &Record,
        changes: &Changes,
        mode: WriteMode,
    ) -> StoreFuture<SystemTime> {
        self.call(Hook::Write, |store| store.write(key, record, changes, mode))
    }

    pub(crate) fn touch(
        &self,
        key: &StoreKey,
        from: SystemTime,
        to: SystemTime,
    ) -> StoreFuture<Touched> {
        self.call(Hook::Touch, |store| store.touch(key, from, to))
    }

    pub(crate) fn destroy(&self, key: &StoreKey) -> StoreFuture<bool> {
        self.call(Hook::Destroy, |store| store.destroy(key))
    }

    pub(crate) fn cleanup(&self) -> StoreFuture<u64> {
        self.call(Hook::Cleanup, |store| store.cleanup())
    }

    pub(crate) fn user_sessions(&self, user: &str) -> StoreFuture<Vec<(StoreKey, RecordSummary)>> {
        self.call(Hook::UserSessions, |store| store.user_sessions(user))
    }

    /// Calls `hook` on the store, within its span: the answer as it is when it is given at
    /// once; else the future, under the deadline, past which it counts as the store being
    /// unavailable.
    fn call<T: Send + 'static>(
        &self,
        hook: Hook,
        call: impl FnOnce(&dyn SessionStore) -> StoreFuture<T>,
    ) -> StoreFuture<T> {
        let observed = StoreCall::begin(hook, self.name);
        let future = {
            let _entered = observed.span().enter();
            call(&*self.store)
        };
        let waiting = match future.into_ready() {
            Ok(result) => {
                observed.end(&result, false, &self.metrics);
                return StoreFuture::ready(result);
            }
            Err(waiting) => waiting,
        };
        match (self.timeout, observed.observed()) {
            (None, false) => waiting,
            (limit, _) => {
                let span = observed.span().clone();
                let metrics = Arc::clone(&self.metrics);
                StoreFuture::boxed(
                    async move {
                        let (result, timed_out) = match limit {
                            Some(limit) => match tokio::time::timeout(limit, waiting).await {
                                Ok(result) => (result, false),
                                Err(elapsed) => (Err(StoreError::unavailable(elapsed)), true),
                            },
                            None => (waiting.await, false),
                        };
                        observed.end(&result, timed_out, &metrics);
                        result
                    }
                    .instrument(span),
                )
            }
        }
    }
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field("store", &self.name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
