//! [`Gateway`]: the engine's one way to the store. Every hook call passes here, and every one
//! that has to wait gets the engine's deadline (`store_timeout`), so no request waits on a
//! store for ever; an answer given at once passes through untouched, with no timer.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{
    Changes, Record, RecordSummary, SessionStore, StoreError, StoreFuture, StoreKey, Touched,
    WriteMode,
};

/// The store, and the deadline of each call to it.
#[derive(Clone)]
pub(crate) struct Gateway {
    store: Arc<dyn SessionStore>,
    timeout: Option<Duration>,
}

impl Gateway {
    pub(crate) fn new(store: Arc<dyn SessionStore>, timeout: Option<Duration>) -> Self {
        Self { store, timeout }
    }

    pub(crate) fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    pub(crate) fn id(&self) -> StoreFuture<String> {
        self.deadline(self.store.id())
    }

    pub(crate) fn read(&self, key: &StoreKey) -> StoreFuture<Option<Record>> {
        self.deadline(self.store.read(key))
    }

    pub(crate) fn write(
        &self,
        key: &StoreKey,
        record: &Record,
        changes: &Changes,
        mode: WriteMode,
    ) -> StoreFuture<SystemTime> {
        self.deadline(self.store.write(key, record, changes, mode))
    }

    pub(crate) fn touch(
        &self,
        key: &StoreKey,
        from: SystemTime,
        to: SystemTime,
    ) -> StoreFuture<Touched> {
        self.deadline(self.store.touch(key, from, to))
    }

    pub(crate) fn destroy(&self, key: &StoreKey) -> StoreFuture<bool> {
        self.deadline(self.store.destroy(key))
    }

    pub(crate) fn cleanup(&self) -> StoreFuture<u64> {
        self.deadline(self.store.cleanup())
    }

    pub(crate) fn user_sessions(&self, user: &str) -> StoreFuture<Vec<(StoreKey, RecordSummary)>> {
        self.deadline(self.store.user_sessions(user))
    }

    /// `future` as it is when it is ready; else under the deadline, past which it counts as
    /// the store being unavailable.
    fn deadline<T: Send + 'static>(&self, future: StoreFuture<T>) -> StoreFuture<T> {
        match (future.into_ready(), self.timeout) {
            (Ok(result), _) => StoreFuture::ready(result),
            (Err(waiting), None) => waiting,
            (Err(waiting), Some(limit)) => StoreFuture::boxed(async move {
                tokio::time::timeout(limit, waiting)
                    .await
                    .unwrap_or_else(|elapsed| Err(StoreError::unavailable(elapsed)))
            }),
        }
    }
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
