//! [`MemoryStore`]: sessions in this process's memory, the default store.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use indexmap::IndexMap;
use sha2::{Digest, Sha256};

use serde_json::{Map, Value};

use crate::store::{
    Changes, Record, RecordSummary, SessionStore, StoreError, StoreFuture, StoreKey, Touched,
    WriteMode, custom_duration_of, decode_data, encode_data, from_ms, login_of, to_ms, user_of,
};

/// Sessions kept in this process's memory: fast, and gone when the process ends.
///
/// Every hook answers at once ([`StoreFuture::ready`]), so the engine finishes a request that
/// uses it without allocating a future or arming a timer.
///
/// The map is split into shards, each behind its own lock, so that requests on different
/// sessions do not queue on one lock. A record is its key (the 32 bytes of the digest the
/// engine hashed the id into, used as they are) and its expiry in the shard's map, and its
/// creation time and data as JSON text (several times smaller than a parsed map) in the
/// shard's one buffer of bytes: no allocation of its own.
///
/// Expired records are never returned, and the store removes them by itself: every call that
/// locks a shard also looks at a few of its records, in turn, and drops the expired ones
/// (more while most of those it looks at have expired), so memory follows the live sessions
/// at a small, steady cost and no clean-up task is needed. A shard that has shrunk a lot gives
/// its memory back to the allocator. Whether the allocator gives it to the system is its own
/// choice: glibc's malloc raises its mmap threshold each time a large block is freed, and
/// keeps what later blocks of that size leave free in its heap, for reuse. After a million
/// sessions expire, a process that started near 3.7 MiB kept 5.2 to 11 MiB in our runs; with
/// the threshold fixed (`GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072` in the
/// environment) it kept 3.9 to 4.3 MiB (`BENCHMARKS.md` has both).
///
/// Clones share the same records: keep a clone to call [`len`](Self::len) while the engine
/// owns the store.
#[derive(Clone)]
pub struct MemoryStore {
    shards: Arc<[Mutex<Shard>]>,
    users: Arc<Users>,
    /// Salts the hash of keys that are not digests, so that no key can be chosen to land on
    /// another key's 32 bytes.
    salt: [u8; 16],
}

/// How many records one call looks at, in a step.
const SWEEP_STEP: usize = 4;
/// How many records one call looks at, at most.
const SWEEP_MAX: usize = 64;

/// A store key in 32 bytes: a digest, or the salted hash of any other key.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key([u8; 32]);

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The bytes are a digest: any eight of them are a hash. The shard index uses the
        // first two; the map uses the next eight.
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.0[8..16]);
        state.write_u64(u64::from_le_bytes(word));
    }
}

/// Passes a [`Key`]'s own bits through.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `Key::hash` feeds this hasher, through `write_u64`.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }
}

/// One record: its expiry beside the map's key, so that sweeping reads the map's own memory,
/// and where its bytes lie in its shard's [`Shard::bytes`].
#[derive(Clone, Copy)]
struct Entry {
    expires_ms: u64,
    /// Where the record's bytes start: its creation time (milliseconds, little-endian), then
    /// its data as JSON text.
    at: usize,
    /// How many bytes, creation time included; the top bit says the record is tied to a user
    /// (in [`Users`]), so that no entry grows for a flag that few records carry.
    size: usize,
}

/// The bit of [`Entry::size`] that marks a record tied to a user.
const TIED: usize = 1 << (usize::BITS - 1);

impl Entry {
    fn is_live(&self, now_ms: u64) -> bool {
        self.expires_ms > now_ms
    }

    fn len(&self) -> usize {
        self.size & !TIED
    }

    fn tied(&self) -> bool {
        self.size & TIED != 0
    }
}

/// The records tied to each user, by user: their keys as the engine gave them, with what a
/// listing needs of their data (so that [`SessionStore::user_sessions`] parses none). Kept in
/// step with the shards: a record is added (or its tie refreshed) before it is written and
/// forgotten as it is removed, under its shard's lock (shard first, then this one).
#[derive(Default)]
struct Users(Mutex<HashMap<String, HashMap<Key, Tie>>>);

/// A record's tie to its user: its key as the engine gave it, and its own idle lifetime and
/// last login.
#[derive(Clone)]
struct Tie {
    key: StoreKey,
    duration: Option<Duration>,
    login_at: Option<SystemTime>,
}

impl Tie {
    fn of(key: &StoreKey, data: &Map<String, Value>) -> Self {
        Self {
            key: key.clone(),
            duration: custom_duration_of(data),
            login_at: login_of(data),
        }
    }
}

impl Users {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<Key, Tie>>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn add(&self, user: &str, key: Key, tie: Tie) {
        let mut users = self.lock();
        // The name is copied only for a user the map does not know yet.
        match users.get_mut(user) {
            Some(keys) => keys.insert(key, tie),
            None => users.entry(user.to_owned()).or_default().insert(key, tie),
        };
    }

    fn forget(&self, user: &str, key: &Key) {
        let mut users = self.lock();
        if let Some(keys) = users.get_mut(user) {
            keys.remove(key);
            if keys.is_empty() {
                users.remove(user);
            }
        }
    }

    fn ties_of(&self, user: &str) -> Vec<(Key, Tie)> {
        self.lock().get(user).map_or_else(Vec::new, |keys| {
            keys.iter().map(|(key, tie)| (*key, tie.clone())).collect()
        })
    }
}

#[derive(Default)]
struct Shard {
    map: IndexMap<Key, Entry, BuildHasherDefault<KeyHasher>>,
    /// The bytes of every record, one after another: a few large allocations that the shard
    /// gives back whole, rather than one small allocation per record, which would scatter
    /// across the allocator's heaps and keep them from shrinking after a mass expiry.
    bytes: Vec<u8>,
    /// How many of `bytes` no entry points at any more.
    dead: usize,
    /// Where sweeping goes on from.
    cursor: usize,
}

/// Dead bytes a shard keeps before it compacts, whatever its size.
const COMPACT_MIN: usize = 4096;

impl Shard {
    /// The index of the live entry under `key`; an expired one is removed on the way.
    fn live(&mut self, key: &Key, now: u64, users: &Users) -> Option<usize> {
        let index = self.map.get_index_of(key)?;
        if self.map[index].is_live(now) {
            return Some(index);
        }
        self.remove_index(index, users);
        None
    }

    /// Removes the entry at `index`, and its user's mention of it.
    fn remove_index(&mut self, index: usize, users: &Users) -> Option<Entry> {
        let (key, entry) = self.map.swap_remove_index(index)?;
        self.dead += entry.len();
        if entry.tied() {
            // Its bytes stay where they are until the next compaction.
            if let Some(user) = self.user(&entry) {
                users.forget(&user, &key);
            }
        }
        Some(entry)
    }

    /// The user the record of `entry` is tied to, read from its data.
    fn user(&self, entry: &Entry) -> Option<String> {
        let data = decode_data(self.data(entry)).ok()?;
        user_of(&data).map(str::to_owned)
    }

    fn created_ms(&self, entry: &Entry) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&self.bytes[entry.at..entry.at + 8]);
        u64::from_le_bytes(bytes)
    }

    fn data(&self, entry: &Entry) -> &[u8] {
        &self.bytes[entry.at + 8..entry.at + entry.len()]
    }

    fn record(&self, index: usize) -> Result<Record, StoreError> {
        let entry = &self.map[index];
        Ok(Record::new(
            decode_data(self.data(entry))?,
            from_ms(self.created_ms(entry))?,
            from_ms(entry.expires_ms)?,
        ))
    }

    /// An entry for a record's bytes: written over `old`'s when they fit there, else added
    /// at the end.
    fn place(
        &mut self,
        old: Option<Entry>,
        created_ms: u64,
        data: &str,
        expires_ms: u64,
        tied: bool,
    ) -> Entry {
        let len = 8 + data.len();
        let size = if tied { len | TIED } else { len };
        let at = match old {
            Some(old) if old.len() >= len => {
                self.dead += old.len() - len;
                old.at
            }
            _ => {
                self.dead += old.map_or(0, |old| old.len());
                self.bytes.extend_from_slice(&created_ms.to_le_bytes());
                self.bytes.extend_from_slice(data.as_bytes());
                return Entry {
                    expires_ms,
                    at: self.bytes.len() - len,
                    size,
                };
            }
        };
        self.bytes[at..at + 8].copy_from_slice(&created_ms.to_le_bytes());
        self.bytes[at + 8..at + len].copy_from_slice(data.as_bytes());
        Entry {
            expires_ms,
            at,
            size,
        }
    }

    /// Looks at the next few records and removes the expired ones: more while most of those
    /// looked at had expired, up to [`SWEEP_MAX`]. Then gives memory back if much of it is
    /// unused.
    fn sweep(&mut self, now: u64, users: &Users) {
        let mut looked = 0;
        loop {
            let mut expired = 0;
            for _ in 0..SWEEP_STEP {
                if self.map.is_empty() {
                    break;
                }
                if self.cursor >= self.map.len() {
                    self.cursor = 0;
                }
                if self.map[self.cursor].is_live(now) {
                    self.cursor += 1;
                } else {
                    // The last record moves into the cursor's place: look there again.
                    self.remove_index(self.cursor, users);
                    expired += 1;
                }
            }
            looked += SWEEP_STEP;
            if expired * 2 <= SWEEP_STEP || looked >= SWEEP_MAX {
                break;
            }
        }
        self.tidy();
    }

    /// Gives memory back (rare: amortized): the map's once three quarters of its room are
    /// empty, and the bytes' once more than half of them are dead.
    ///
    /// The bytes are compacted where they are and then shrunk, rather than copied into a new
    /// buffer: a large allocation given back raises the allocator's threshold for the next
    /// ones (glibc's), which then come from its heap and keep it from shrinking after a mass
    /// expiry.
    fn tidy(&mut self) {
        if self.map.capacity() > 64 && self.map.len() * 4 < self.map.capacity() {
            self.map.shrink_to(self.map.len() * 2);
        }
        let live = self.bytes.len() - self.dead;
        if self.dead > live.max(COMPACT_MIN) || (self.map.is_empty() && self.bytes.capacity() > 0) {
            // Records in the order of their bytes, then each moved down over the dead ones.
            self.map.sort_unstable_by(|_, a, _, b| a.at.cmp(&b.at));
            let mut end = 0;
            for entry in self.map.values_mut() {
                self.bytes
                    .copy_within(entry.at..entry.at + entry.len(), end);
                entry.at = end;
                end += entry.len();
            }
            self.bytes.truncate(end);
            self.bytes.shrink_to(end + end / 4);
            self.dead = 0;
            self.cursor = 0;
        }
    }
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let count = (cores * 8).next_power_of_two().max(16);
        let mut salt = [0u8; 16];
        // Without the OS's randomness the salt is weaker, not the store: keys still cannot
        // collide by accident.
        let _ = getrandom::fill(&mut salt);
        Self {
            shards: (0..count).map(|_| Mutex::new(Shard::default())).collect(),
            users: Arc::default(),
            salt,
        }
    }

    /// How many records the store holds, expired ones included until they are swept.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).map.len()).sum()
    }

    /// Whether the store holds no record.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The 32 bytes of a key: a digest as it is; other text decoded when it spells 32 bytes
    /// in base64url (so that a key's text alone names its record), else hashed with the salt.
    fn compact(&self, key: &StoreKey) -> Key {
        if let Some(digest) = key.digest() {
            return Key(*digest);
        }
        let text = key.as_str();
        let mut bytes = [0u8; 32];
        // The decoder refuses any other spelling of the same bytes.
        if text.len() == 43 && URL_SAFE_NO_PAD.decode_slice(text, &mut bytes).ok() == Some(32) {
            return Key(bytes);
        }
        Key(Sha256::new()
            .chain_update(self.salt)
            .chain_update(text.as_bytes())
            .finalize()
            .into())
    }

    /// Locks the shard of `key`, after sweeping it a little, and sweeps one other shard in
    /// turn, so that shards no request lands on are swept too (an app whose few live sessions
    /// share a shard or two still sees every other shard emptied as its records expire).
    fn shard(&self, key: &Key, now: u64) -> MutexGuard<'_, Shard> {
        thread_local! {
            /// The shard this thread sweeps next, beside the one it locks.
            static TURN: Cell<usize> = const { Cell::new(0) };
        }
        // `shards.len()` is a power of two.
        let mask = self.shards.len() - 1;
        let index = usize::from(u16::from_le_bytes([key.0[0], key.0[1]])) & mask;
        let turn = TURN.with(|turn| {
            let next = turn.get().wrapping_add(1);
            turn.set(next);
            next & mask
        });
        if turn != index {
            // Never waits: a shard that is busy is swept by whoever holds it.
            let other = match self.shards[turn].try_lock() {
                Ok(other) => Some(other),
                Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            };
            if let Some(mut other) = other {
                other.sweep(now, &self.users);
            }
        }
        let mut shard = lock(&self.shards[index]);
        shard.sweep(now, &self.users);
        shard
    }

    fn read_now(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        let key = self.compact(key);
        let now = to_ms(SystemTime::now());
        let mut shard = self.shard(&key, now);
        shard
            .live(&key, now, &self.users)
            .map(|index| shard.record(index))
            .transpose()
    }

    fn write_now(
        &self,
        store_key: &StoreKey,
        record: &Record,
        changes: &Changes,
        mode: WriteMode,
    ) -> Result<SystemTime, StoreError> {
        let key = self.compact(store_key);
        let now = to_ms(SystemTime::now());
        let mut shard = self.shard(&key, now);
        match (mode, shard.live(&key, now, &self.users)) {
            (WriteMode::Insert, Some(_)) => Err(StoreError::IdTaken),
            (WriteMode::Insert, None) => {
                let user = user_of(&record.data);
                if let Some(user) = user {
                    self.users.add(user, key, Tie::of(store_key, &record.data));
                }
                let data = encode_data(&record.data);
                let created_ms = to_ms(record.created_at);
                let expires_ms = to_ms(record.expires_at);
                let entry = shard.place(None, created_ms, &data, expires_ms, user.is_some());
                shard.map.insert(key, entry);
                Ok(record.expires_at)
            }
            (WriteMode::Update, None) => Err(StoreError::Gone),
            (WriteMode::Update, Some(index)) => {
                let old = shard.map[index];
                // The old record's user, from the one parse a patch needs anyway.
                let (patched, old_user) = if changes.is_replace() {
                    (None, if old.tied() { shard.user(&old) } else { None })
                } else {
                    let mut data = decode_data(shard.data(&old))?;
                    let old_user = old.tied().then(|| user_of(&data).map(str::to_owned));
                    changes.apply(&mut data, &record.data);
                    (Some(data), old_user.flatten())
                };
                let new = patched.as_ref().unwrap_or(&record.data);
                // The expiry the record's own data calls for, whichever request set it (R17).
                let expires_at = record.expiry_after(new);
                let user = user_of(new);
                // Found under the new user (its tie refreshed) before the record says so;
                // then no longer under the old one.
                if let Some(user) = user {
                    self.users.add(user, key, Tie::of(store_key, new));
                }
                if let Some(old_user) = old_user.filter(|old| Some(old.as_str()) != user) {
                    self.users.forget(&old_user, &key);
                }
                let data = encode_data(new);
                let created_ms = shard.created_ms(&old);
                let tied = user.is_some();
                let expires_ms = to_ms(expires_at);
                shard.map[index] = shard.place(Some(old), created_ms, &data, expires_ms, tied);
                Ok(expires_at)
            }
        }
    }

    fn touch_now(
        &self,
        key: &StoreKey,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Touched, StoreError> {
        let key = self.compact(key);
        let now = to_ms(SystemTime::now());
        let mut shard = self.shard(&key, now);
        let index = shard.live(&key, now, &self.users).ok_or(StoreError::Gone)?;
        let entry = &mut shard.map[index];
        if entry.expires_ms != to_ms(from) {
            return Ok(Touched::Superseded);
        }
        entry.expires_ms = to_ms(to);
        Ok(Touched::Moved)
    }

    fn destroy_now(&self, key: &StoreKey) -> bool {
        let key = self.compact(key);
        let now = to_ms(SystemTime::now());
        let mut shard = self.shard(&key, now);
        let Some(index) = shard.map.get_index_of(&key) else {
            return false;
        };
        shard
            .remove_index(index, &self.users)
            .is_some_and(|entry| entry.is_live(now))
    }

    fn cleanup_now(&self) -> u64 {
        let now = to_ms(SystemTime::now());
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            // From the end, so that each removal moves only an entry already looked at.
            for index in (0..shard.map.len()).rev() {
                if !shard.map[index].is_live(now) {
                    shard.remove_index(index, &self.users);
                    removed += 1;
                }
            }
            shard.tidy();
        }
        removed
    }

    /// The summaries of `user`'s live records, from the index and the entries' times: no
    /// record's data is read.
    fn user_sessions_now(&self, user: &str) -> Result<Vec<(StoreKey, RecordSummary)>, StoreError> {
        let now = to_ms(SystemTime::now());
        let mut found = Vec::new();
        for (key, tie) in self.users.ties_of(user) {
            let mut shard = self.shard(&key, now);
            let Some(index) = shard.live(&key, now, &self.users) else {
                continue;
            };
            let entry = shard.map[index];
            let summary = RecordSummary::new(
                user,
                from_ms(shard.created_ms(&entry))?,
                from_ms(entry.expires_ms)?,
            )
            .with_duration(tie.duration)
            .with_login(tie.login_at);
            found.push((tie.key, summary));
        }
        Ok(found)
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
/// critical section is one map operation and a short sweep.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SessionStore for MemoryStore {
    fn read(&self, key: &StoreKey) -> StoreFuture<Option<Record>> {
        self.read_now(key).into()
    }

    fn write(
        &self,
        key: &StoreKey,
        record: &Record,
        changes: &Changes,
        mode: WriteMode,
    ) -> StoreFuture<SystemTime> {
        self.write_now(key, record, changes, mode).into()
    }

    fn touch(&self, key: &StoreKey, from: SystemTime, to: SystemTime) -> StoreFuture<Touched> {
        self.touch_now(key, from, to).into()
    }

    fn destroy(&self, key: &StoreKey) -> StoreFuture<bool> {
        StoreFuture::ready(Ok(self.destroy_now(key)))
    }

    fn cleanup(&self) -> StoreFuture<u64> {
        StoreFuture::ready(Ok(self.cleanup_now()))
    }

    fn user_sessions(&self, user: &str) -> StoreFuture<Vec<(StoreKey, RecordSummary)>> {
        StoreFuture::ready(self.user_sessions_now(user))
    }

    fn indexes_users(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;
    use std::time::Duration;

    fn record(expires_in_ms: i64) -> Record {
        let now = SystemTime::now();
        let expires = if expires_in_ms >= 0 {
            now + Duration::from_millis(expires_in_ms.unsigned_abs())
        } else {
            now - Duration::from_millis(expires_in_ms.unsigned_abs())
        };
        Record::new(Map::new(), now, expires)
    }

    fn insert(store: &MemoryStore, key: &str, record: &Record) {
        store
            .write_now(
                &StoreKey::from(key),
                record,
                &Changes::replace_all(),
                WriteMode::Insert,
            )
            .unwrap();
    }

    #[test]
    fn a_key_names_its_record_by_its_text_and_nothing_else_aliases() {
        let store = MemoryStore::new();
        let digest: [u8; 32] = Sha256::digest(b"some id").into();
        let text = URL_SAFE_NO_PAD.encode(digest);
        // A digest key and its text are one record.
        let id = crate::id::SessionId::parse("some-id").unwrap();
        let hashed = id.store_key(true);
        assert!(store.compact(&hashed) == store.compact(&StoreKey::from(hashed.as_str())));
        // Other text is hashed with the salt: never the bare digest of the text.
        assert!(store.compact(&StoreKey::from("some id")) != Key(digest));
        assert!(store.compact(&StoreKey::from(text.as_str())) == Key(digest));
        // Not canonical base64url: hashed, never decoded.
        let mut other_spelling = text.clone();
        other_spelling.replace_range(42.., "B");
        assert_ne!(other_spelling, text);
        assert!(
            store.compact(&StoreKey::from(other_spelling.as_str()))
                != store.compact(&StoreKey::from(text.as_str()))
        );
    }

    #[test]
    fn clones_share_their_records() {
        let store = MemoryStore::new();
        insert(&store.clone(), "k", &record(60_000));
        assert!(store.read_now(&StoreKey::from("k")).unwrap().is_some());
        assert!(store.shards.len().is_power_of_two());
    }

    /// Inserts `count` records that expire in 2 s, then waits for them to expire. The margin
    /// is for a loaded machine: none may expire while the others are inserted.
    fn expired(store: &MemoryStore, count: usize) {
        let before = store.len();
        for i in 0..count {
            insert(store, &format!("old{i}"), &record(2_000));
        }
        assert_eq!(store.len(), before + count);
        std::thread::sleep(Duration::from_millis(2_100));
    }

    #[test]
    fn r16_expired_records_are_swept_by_ordinary_calls() {
        let store = MemoryStore::new();
        expired(&store, 5_000);
        // Reads of keys that do not exist, spread over the shards: ordinary traffic.
        for i in 0..2_000 {
            store
                .read_now(&StoreKey::from(format!("other{i}")))
                .unwrap();
        }
        assert_eq!(store.len(), 0, "every expired record was swept");
        // Live records are never swept.
        for i in 0..1_000 {
            insert(&store, &format!("live{i}"), &record(60_000));
        }
        for i in 0..5_000 {
            store
                .read_now(&StoreKey::from(format!("other{i}")))
                .unwrap();
        }
        assert_eq!(store.len(), 1_000);
    }

    #[test]
    fn r16_shards_no_call_lands_on_are_swept_too() {
        let store = MemoryStore::new();
        expired(&store, 5_000);
        // One session's traffic: every call locks the same shard.
        insert(&store, "the one", &record(60_000));
        for _ in 0..2_000 {
            store.read_now(&StoreKey::from("the one")).unwrap().unwrap();
        }
        assert_eq!(store.len(), 1, "every other shard was swept");
    }

    #[test]
    fn r16_a_shard_gives_memory_back_after_a_mass_expiry() {
        let store = MemoryStore::new();
        expired(&store, 20_000);
        let capacity = |store: &MemoryStore| -> usize {
            store.shards.iter().map(|s| lock(s).map.capacity()).sum()
        };
        let bytes = |store: &MemoryStore| -> usize {
            store.shards.iter().map(|s| lock(s).bytes.capacity()).sum()
        };
        let full = capacity(&store);
        assert!(bytes(&store) >= 20_000 * 8);
        for i in 0..10_000 {
            store
                .read_now(&StoreKey::from(format!("other{i}")))
                .unwrap();
        }
        assert!(store.is_empty());
        assert!(
            capacity(&store) * 4 < full,
            "{} of {full}",
            capacity(&store)
        );
        assert_eq!(bytes(&store), 0, "an empty shard holds no bytes");
    }

    fn data(pairs: &[(&str, &str)]) -> Map<String, serde_json::Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).into()))
            .collect()
    }

    fn write(store: &MemoryStore, key: &str, data: &Map<String, serde_json::Value>) {
        let mut record = record(60_000);
        record.data = data.clone();
        store
            .write_now(
                &StoreKey::from(key),
                &record,
                &Changes::replace_all(),
                WriteMode::Update,
            )
            .unwrap();
    }

    fn read(store: &MemoryStore, key: &str) -> Map<String, serde_json::Value> {
        store.read_now(&StoreKey::from(key)).unwrap().unwrap().data
    }

    #[test]
    fn records_survive_rewrites_in_place_and_compaction() {
        // One shard, so that every record shares its buffer.
        let store = MemoryStore {
            shards: vec![Mutex::new(Shard::default())].into(),
            users: Arc::default(),
            salt: [0; 16],
        };
        for i in 0..100 {
            insert(&store, &format!("k{i}"), &record(60_000));
        }
        let long = "x".repeat(100);
        for round in 0..200 {
            for i in 0..100 {
                // Longer, then shorter: moved to the end, then written over in place.
                let value = if round % 2 == 0 {
                    long.as_str()
                } else {
                    "short"
                };
                write(
                    &store,
                    &format!("k{i}"),
                    &data(&[("v", value), ("i", &i.to_string())]),
                );
            }
            // Any call sweeps, and so compacts.
            store.read_now(&StoreKey::from("none")).unwrap();
            let shard = lock(&store.shards[0]);
            let live = shard.bytes.len() - shard.dead;
            assert_eq!(live, shard.map.values().map(Entry::len).sum::<usize>());
            assert!(shard.dead <= live.max(COMPACT_MIN), "round {round}");
        }
        for i in 0..100 {
            let expected = data(&[("v", "short"), ("i", &i.to_string())]);
            assert_eq!(read(&store, &format!("k{i}")), expected);
        }
        // Destroyed records are dead bytes too.
        for i in 0..100 {
            assert!(store.destroy_now(&StoreKey::from(format!("k{i}"))));
        }
        store.read_now(&StoreKey::from("none")).unwrap();
        assert_eq!(lock(&store.shards[0]).bytes.capacity(), 0);
    }

    #[test]
    fn cleanup_counts_what_it_removes() {
        let store = MemoryStore::new();
        // Live first: any other call may sweep the expired records before `cleanup` does.
        insert(&store, "live", &record(60_000));
        expired(&store, 3);
        assert_eq!(store.cleanup_now(), 3);
        assert_eq!(store.len(), 1);
    }
}
