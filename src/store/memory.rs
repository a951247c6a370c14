//! [`MemoryStore`]: sessions in this process's memory, the default store.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::store::{Changes, Record, SessionStore, StoreError, from_ms, to_ms};

/// Sessions kept in this process's memory: fast, and gone when the process ends.
///
/// The map is split into shards, each behind its own lock, so that requests on different
/// sessions running on different cores do not queue on one lock. Each record takes one
/// allocation: its two times and its data as serialized JSON, which is several times smaller
/// than a parsed `serde_json::Map`. Keys are kept as 32 bytes: the engine's keys are already
/// base64url of a SHA-256 digest and are decoded, any other key is hashed.
///
/// Expired records are never returned; they are removed when next touched by a hook, or by
/// [`cleanup`](SessionStore::cleanup) (see `SessionEngine::spawn_cleanup`).
///
/// Clones share the same records: keep a clone to call [`len`](Self::len) while the engine
/// owns the store, and hand the engine the store with `store(…)` (not `shared_store`), which
/// lets it call the store without boxing futures.
#[derive(Clone)]
pub struct MemoryStore {
    shards: Arc<[Mutex<Shard>]>,
    /// Salts the hash of keys that are not the engine's, so that no other key can be chosen
    /// to land on an engine key's 32 bytes.
    salt: [u8; 16],
}

type Shard = HashMap<Key, Entry>;

/// A store key in 32 bytes.
type Key = [u8; 32];

/// The engine's key as it is (43 characters of base64url decode to the 32 bytes of its
/// digest; the decoder refuses any other spelling of those bytes), or the SHA-256 of `salt`
/// and any other key, so that every key fits the map's slot without an allocation of its own.
/// The salt is secret and random, so no key can be chosen whose hash is an engine key's bytes.
fn compact(key: &str, salt: &[u8; 16]) -> Key {
    let mut bytes = [0u8; 32];
    if key.len() == 43
        && URL_SAFE_NO_PAD
            .decode_slice(key, &mut bytes)
            .is_ok_and(|len| len == 32)
    {
        return bytes;
    }
    Sha256::new()
        .chain_update(salt)
        .chain_update(key.as_bytes())
        .finalize()
        .into()
}

/// One record in one allocation: creation and expiry times (milliseconds since the Unix
/// epoch, little-endian) followed by the data as a JSON object.
struct Entry(Box<[u8]>);

impl Entry {
    const DATA: usize = 16;

    fn new(created_ms: u64, expires_ms: u64, data: &str) -> Self {
        let mut bytes = Vec::with_capacity(Self::DATA + data.len());
        bytes.extend_from_slice(&created_ms.to_le_bytes());
        bytes.extend_from_slice(&expires_ms.to_le_bytes());
        bytes.extend_from_slice(data.as_bytes());
        Self(bytes.into_boxed_slice())
    }

    fn time(&self, at: usize) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&self.0[at..at + 8]);
        u64::from_le_bytes(bytes)
    }

    fn created_ms(&self) -> u64 {
        self.time(0)
    }

    fn expires_ms(&self) -> u64 {
        self.time(8)
    }

    fn set_expires_ms(&mut self, expires_ms: u64) {
        self.0[8..Self::DATA].copy_from_slice(&expires_ms.to_le_bytes());
    }

    fn data(&self) -> &[u8] {
        &self.0[Self::DATA..]
    }

    fn is_live(&self, now_ms: u64) -> bool {
        self.expires_ms() > now_ms
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let count = (cores * 8).next_power_of_two().max(16);
        let mut salt = [0u8; 16];
        // Without the OS's randomness the salt is weaker, not the store: keys still cannot
        // collide by accident.
        let _ = getrandom::fill(&mut salt);
        Self {
            shards: (0..count).map(|_| Mutex::new(Shard::new())).collect(),
            salt,
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

    /// The shard of a key: its bytes are a digest (or decode one), so any of them will do.
    fn shard(&self, key: &Key) -> &Mutex<Shard> {
        let index = u16::from_le_bytes([key[0], key[1]]);
        // `shards.len()` is a power of two.
        &self.shards[usize::from(index) & (self.shards.len() - 1)]
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

fn encode(data: &Map<String, Value>) -> Result<String, StoreError> {
    serde_json::to_string(data).map_err(StoreError::backend)
}

fn decode(data: &[u8]) -> Result<Map<String, Value>, StoreError> {
    serde_json::from_slice(data).map_err(StoreError::backend)
}

/// The hooks as plain functions: the trait calls them, and so does the engine directly when
/// its store is a `MemoryStore`, which saves boxing a future for each call.
impl MemoryStore {
    pub(crate) fn read_now(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let key = compact(key, &self.salt);
        let now = to_ms(SystemTime::now());
        let mut shard = lock(self.shard(&key));
        match shard.get(&key) {
            Some(entry) if entry.is_live(now) => Ok(Some(Record::new(
                decode(entry.data())?,
                from_ms(entry.created_ms())?,
                from_ms(entry.expires_ms())?,
            ))),
            Some(_) => {
                shard.remove(&key);
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
        let key = compact(key, &self.salt);
        let now = to_ms(SystemTime::now());
        let expires_ms = to_ms(record.expires_at);
        let mut shard = lock(self.shard(&key));
        let live = shard.get_mut(&key).filter(|entry| entry.is_live(now));
        match (stored, live) {
            (false, Some(_)) => Err(StoreError::IdTaken),
            (false, None) => {
                let data = encode(&record.data)?;
                let entry = Entry::new(to_ms(record.created_at), expires_ms, &data);
                shard.insert(key, entry);
                Ok(())
            }
            (true, None) => {
                shard.remove(&key);
                Err(StoreError::Gone)
            }
            (true, Some(entry)) => {
                let data = if changes.is_replace() {
                    encode(&record.data)?
                } else {
                    let mut data = decode(entry.data())?;
                    changes.apply(&mut data, &record.data);
                    encode(&data)?
                };
                *entry = Entry::new(entry.created_ms(), expires_ms, &data);
                Ok(())
            }
        }
    }

    pub(crate) fn touch_now(&self, key: &str, expires_at: SystemTime) -> Result<(), StoreError> {
        let key = compact(key, &self.salt);
        let now = to_ms(SystemTime::now());
        let mut shard = lock(self.shard(&key));
        match shard.get_mut(&key) {
            Some(entry) if entry.is_live(now) => {
                entry.set_expires_ms(to_ms(expires_at));
                Ok(())
            }
            Some(_) => {
                shard.remove(&key);
                Err(StoreError::Gone)
            }
            None => Err(StoreError::Gone),
        }
    }

    pub(crate) fn destroy_now(&self, key: &str) {
        let key = compact(key, &self.salt);
        lock(self.shard(&key)).remove(&key);
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
        for shard in self.shards.iter() {
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

    #[test]
    fn engine_keys_are_decoded_and_other_keys_hashed_with_a_salt() {
        let salt = [7u8; 16];
        let digest: [u8; 32] = Sha256::digest(b"some id").into();
        let engine_key = URL_SAFE_NO_PAD.encode(digest);
        assert_eq!(compact(&engine_key, &salt), digest);
        // Not 43 characters: hashed with the salt, so never the bare digest of the key.
        let short = compact("short", &salt);
        assert_ne!(short, <[u8; 32]>::from(Sha256::digest(b"short")));
        assert_ne!(short, compact("short", &[8u8; 16]));
        // Not canonical base64url: hashed, never decoded.
        let mut other_spelling = engine_key.clone();
        other_spelling.replace_range(42.., "B"); // a trailing bit the decoder must refuse
        assert_ne!(engine_key, other_spelling);
        assert_ne!(compact(&other_spelling, &salt), compact(&engine_key, &salt));
    }

    #[tokio::test]
    async fn a_key_and_the_encoded_hash_of_it_are_different_records() {
        let store = MemoryStore::new();
        let now = SystemTime::now();
        let record = Record::new(Map::new(), now, now + Duration::from_secs(60));
        store
            .write("alice", &record, &Changes::replace_all(), false)
            .await
            .unwrap();
        let alias = URL_SAFE_NO_PAD.encode(Sha256::digest(b"alice"));
        assert!(store.read(&alias).await.unwrap().is_none());
        store
            .write(&alias, &record, &Changes::replace_all(), false)
            .await
            .unwrap();
        assert_eq!(store.len(), 2);
    }

    #[tokio::test]
    async fn clones_share_their_records() {
        let store = MemoryStore::new();
        let clone = store.clone();
        let now = SystemTime::now();
        let record = Record::new(Map::new(), now, now + Duration::from_secs(60));
        clone
            .write("k", &record, &Changes::replace_all(), false)
            .await
            .unwrap();
        assert!(store.read("k").await.unwrap().is_some());
    }

    #[test]
    fn an_entry_keeps_its_times_and_data_in_one_allocation() {
        let mut entry = Entry::new(1, 2, r#"{"a":1}"#);
        assert_eq!((entry.created_ms(), entry.expires_ms()), (1, 2));
        entry.set_expires_ms(u64::MAX);
        assert_eq!((entry.created_ms(), entry.expires_ms()), (1, u64::MAX));
        assert_eq!(entry.data(), br#"{"a":1}"#);
    }

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
