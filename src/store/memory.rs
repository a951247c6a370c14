//! [`MemoryStore`]: sessions in this process's memory, the default store.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::store::{Changes, Record, SessionStore, StoreError, from_ms, to_ms};

/// Sessions kept in this process's memory: fast, and gone when the process ends.
///
/// The map is split into shards, each behind its own lock, so that requests on different
/// sessions running on different cores do not queue on one lock. Data is kept as serialized
/// JSON, which is several times smaller than a parsed `serde_json::Map`.
///
/// Expired records are never returned; they are removed when next touched by a hook, or by
/// [`cleanup`](SessionStore::cleanup) (see `SessionEngine::spawn_cleanup`).
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
}

type Shard = HashMap<Box<str>, Entry>;

struct Entry {
    /// The data as a JSON object.
    data: Box<str>,
    /// Milliseconds since the Unix epoch.
    created_ms: u64,
    expires_ms: u64,
}

impl Entry {
    fn is_live(&self, now_ms: u64) -> bool {
        self.expires_ms > now_ms
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let count = (cores * 8).next_power_of_two().max(16);
        Self {
            shards: (0..count).map(|_| Mutex::new(Shard::new())).collect(),
        }
    }

    /// How many records the store holds, expired ones included until they are cleaned up.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        // FNV-1a: keys are random ids or their hashes, so a cheap hash spreads them evenly.
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        // `shards.len()` is a power of two.
        &self.shards[(hash as usize) & (self.shards.len() - 1)]
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

/// Locks a shard. A panic while a shard was held cannot leave an entry half-written (every
/// change is a single map operation), so a poisoned lock is still safe to use.
///
/// The lock is a std mutex, not an async one: it is never held across an `.await`, and each
/// critical section is one map operation.
fn lock(shard: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn encode(data: &Map<String, Value>) -> Result<Box<str>, StoreError> {
    serde_json::to_string(data)
        .map(String::into_boxed_str)
        .map_err(StoreError::backend)
}

fn decode(data: &str) -> Result<Map<String, Value>, StoreError> {
    serde_json::from_str(data).map_err(StoreError::backend)
}

/// The hooks as plain functions: the trait calls them, and so does the engine directly when
/// its store is a `MemoryStore`, which saves boxing a future for each call.
impl MemoryStore {
    pub(crate) fn read_now(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let now = to_ms(SystemTime::now());
        let mut shard = lock(self.shard(key));
        match shard.get(key) {
            Some(entry) if entry.is_live(now) => Ok(Some(Record::new(
                decode(&entry.data)?,
                from_ms(entry.created_ms)?,
                from_ms(entry.expires_ms)?,
            ))),
            Some(_) => {
                shard.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    pub(crate) fn write_now(
        &self,
        key: &str,
        record: &Record,
        changes: &Changes,
        stored: bool,
    ) -> Result<(), StoreError> {
        let now = to_ms(SystemTime::now());
        let expires_ms = to_ms(record.expires_at);
        let mut shard = lock(self.shard(key));
        let live = shard.get_mut(key).filter(|entry| entry.is_live(now));
        match (stored, live) {
            (false, Some(_)) => Err(StoreError::IdTaken),
            (false, None) => {
                let entry = Entry {
                    data: encode(&record.data)?,
                    created_ms: to_ms(record.created_at),
                    expires_ms,
                };
                shard.insert(key.into(), entry);
                Ok(())
            }
            (true, None) => {
                shard.remove(key);
                Err(StoreError::Gone)
            }
            (true, Some(entry)) => {
                entry.data = if changes.is_replace() {
                    encode(&record.data)?
                } else {
                    let mut data = decode(&entry.data)?;
                    changes.apply(&mut data, &record.data);
                    encode(&data)?
                };
                entry.expires_ms = expires_ms;
                Ok(())
            }
        }
    }

    pub(crate) fn touch_now(&self, key: &str, expires_at: SystemTime) -> Result<(), StoreError> {
        let now = to_ms(SystemTime::now());
        let mut shard = lock(self.shard(key));
        match shard.get_mut(key) {
            Some(entry) if entry.is_live(now) => {
                entry.expires_ms = to_ms(expires_at);
                Ok(())
            }
            Some(_) => {
                shard.remove(key);
                Err(StoreError::Gone)
            }
            None => Err(StoreError::Gone),
        }
    }

    pub(crate) fn destroy_now(&self, key: &str) {
        lock(self.shard(key)).remove(key);
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
        self.read_now(key)
    }

    async fn write(
        &self,
        key: &str,
        record: &Record,
        changes: &Changes,
        stored: bool,
    ) -> Result<(), StoreError> {
        self.write_now(key, record, changes, stored)
    }

    async fn touch(&self, key: &str, expires_at: SystemTime) -> Result<(), StoreError> {
        self.touch_now(key, expires_at)
    }

    async fn destroy(&self, key: &str) -> Result<(), StoreError> {
        self.destroy_now(key);
        Ok(())
    }

    async fn cleanup(&self) -> Result<u64, StoreError> {
        let now = to_ms(SystemTime::now());
        let mut removed = 0;
        for shard in &self.shards {
            let mut shard = lock(shard);
            let before = shard.len();
            shard.retain(|_, entry| entry.is_live(now));
            removed += (before - shard.len()) as u64;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn shards_are_a_power_of_two() {
        let store = MemoryStore::new();
        assert!(store.shards.len().is_power_of_two());
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn expired_records_are_dropped_on_read_and_cleanup() {
        let store = MemoryStore::new();
        let past = SystemTime::now() - Duration::from_secs(1);
        let record = Record::new(Map::new(), past, past);
        store
            .write("k", &record, &Changes::replace_all(), false)
            .await
            .unwrap();
        assert_eq!(store.len(), 1);
        assert_eq!(store.cleanup().await.unwrap(), 1);
        assert!(store.is_empty());
    }
}
