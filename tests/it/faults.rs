//! [`FaultyStore`]: a `MemoryStore` that fails hooks on demand, delays them, and records every
//! call made to it. Fault injection is the one thing the tests use a wrapper for; everything
//! else runs against the real stores.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use session_engine::{
    Changes, MemoryStore, Record, RecordSummary, SessionStore, StoreError, StoreFuture, StoreKey,
    Touched, WriteMode,
};

/// The message of every injected store error; it must never reach a response body.
pub(crate) const FAULT_MESSAGE: &str = "injected fault: disk on fire";

/// A store hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Hook {
    Id,
    Read,
    Write,
    Touch,
    Destroy,
    Cleanup,
    /// `user_sessions`.
    Users,
}

impl Hook {
    pub(crate) const ALL: [Hook; 7] = [
        Hook::Id,
        Hook::Read,
        Hook::Write,
        Hook::Touch,
        Hook::Destroy,
        Hook::Cleanup,
        Hook::Users,
    ];
}

/// The error an injected fault returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// `StoreError::backend(..)`: a 500.
    Backend,
    /// `StoreError::unavailable(..)`: a 503.
    Unavailable,
    /// `StoreError::Gone`.
    Gone,
    /// `StoreError::undecodable(..)`.
    Undecodable,
}

impl Fault {
    fn error(self) -> StoreError {
        match self {
            Fault::Backend => StoreError::backend(FAULT_MESSAGE),
            Fault::Unavailable => StoreError::unavailable(FAULT_MESSAGE),
            Fault::Gone => StoreError::Gone,
            Fault::Undecodable => StoreError::undecodable(FAULT_MESSAGE),
        }
    }
}

/// One call the engine made to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Call {
    pub(crate) hook: Hook,
    /// The key passed to `read`, `write`, `touch` and `destroy`; the id returned by `id`.
    pub(crate) key: Option<String>,
    /// `write`'s mode.
    pub(crate) mode: Option<WriteMode>,
}

impl Call {
    /// A call of `hook` with `key`.
    pub(crate) fn new(hook: Hook, key: &str) -> Self {
        Self {
            hook,
            key: Some(key.to_owned()),
            mode: None,
        }
    }

    /// A `write` of `key` in `mode`.
    pub(crate) fn write(key: &str, mode: WriteMode) -> Self {
        Self {
            mode: Some(mode),
            ..Self::new(Hook::Write, key)
        }
    }
}

struct Injected {
    fault: Fault,
    /// How many more calls fail; `None` for every call.
    remaining: Option<usize>,
}

/// A [`MemoryStore`] that fails hooks on demand and records every call made to it.
pub(crate) struct FaultyStore {
    inner: MemoryStore,
    faults: Mutex<HashMap<Hook, Injected>>,
    id_taken: AtomicUsize,
    ids: Mutex<VecDeque<String>>,
    delays: Mutex<HashMap<Hook, Duration>>,
    history: Mutex<Vec<Call>>,
    /// What `indexes_users` answers: true unless told otherwise.
    unindexed: AtomicBool,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FaultyStore {
    /// A store that behaves as a `MemoryStore` until told otherwise.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStore::new(),
            faults: Mutex::default(),
            id_taken: AtomicUsize::new(0),
            ids: Mutex::default(),
            delays: Mutex::default(),
            history: Mutex::default(),
            unindexed: AtomicBool::new(false),
        })
    }

    /// From now on, says that it keeps no user index, as a store without `user_sessions`.
    pub(crate) fn without_user_index(&self) {
        self.unindexed.store(true, Ordering::SeqCst);
    }

    /// The real store underneath, for inspecting and changing records behind the engine.
    pub(crate) fn inner(&self) -> &MemoryStore {
        &self.inner
    }

    /// Every later call of `hook` fails with `fault`.
    pub(crate) fn fail(&self, hook: Hook, fault: Fault) {
        let injected = Injected {
            fault,
            remaining: None,
        };
        locked(&self.faults).insert(hook, injected);
    }

    /// The next `times` calls of `hook` fail with `fault`.
    pub(crate) fn fail_times(&self, hook: Hook, fault: Fault, times: usize) {
        let injected = Injected {
            fault,
            remaining: Some(times),
        };
        locked(&self.faults).insert(hook, injected);
    }

    /// Every hook fails with `fault`.
    pub(crate) fn fail_all(&self, fault: Fault) {
        for hook in Hook::ALL {
            self.fail(hook, fault);
        }
    }

    /// `hook` works again.
    pub(crate) fn heal(&self, hook: Hook) {
        locked(&self.faults).remove(&hook);
    }

    /// The next `n` inserts fail with `IdTaken`.
    pub(crate) fn id_taken_for_next(&self, n: usize) {
        self.id_taken.store(n, Ordering::SeqCst);
    }

    /// The next calls of `id` return these ids, in order, before random ones.
    pub(crate) fn script_ids<I: IntoIterator<Item = S>, S: Into<String>>(&self, ids: I) {
        locked(&self.ids).extend(ids.into_iter().map(Into::into));
    }

    /// Every later call of `hook` waits `delay` (on the tokio clock) before it runs.
    pub(crate) fn delay(&self, hook: Hook, delay: Duration) {
        locked(&self.delays).insert(hook, delay);
    }

    /// How many times `hook` was called (failed calls included).
    pub(crate) fn calls(&self, hook: Hook) -> usize {
        locked(&self.history)
            .iter()
            .filter(|call| call.hook == hook)
            .count()
    }

    /// How many times any hook was called.
    pub(crate) fn total_calls(&self) -> usize {
        locked(&self.history).len()
    }

    /// Every call, in order.
    pub(crate) fn history(&self) -> Vec<Call> {
        locked(&self.history).clone()
    }

    /// The hooks called, in order.
    pub(crate) fn hooks(&self) -> Vec<Hook> {
        self.history().iter().map(|call| call.hook).collect()
    }

    /// Forgets the calls made so far.
    pub(crate) fn clear_history(&self) {
        locked(&self.history).clear();
    }

    /// The keys `write` was called with.
    pub(crate) fn written_keys(&self) -> Vec<String> {
        self.keys_of(Hook::Write)
    }

    /// The ids the `id` hook returned, in order.
    pub(crate) fn generated_ids(&self) -> Vec<String> {
        self.keys_of(Hook::Id)
    }

    fn keys_of(&self, hook: Hook) -> Vec<String> {
        self.history()
            .into_iter()
            .filter(|call| call.hook == hook)
            .filter_map(|call| call.key)
            .collect()
    }

    fn log(&self, hook: Hook, key: Option<&str>, mode: Option<WriteMode>) {
        locked(&self.history).push(Call {
            hook,
            key: key.map(str::to_owned),
            mode,
        });
    }

    /// The injected fault due for this call of `hook`, if any.
    fn fault(&self, hook: Hook) -> Option<StoreError> {
        let mut faults = locked(&self.faults);
        let injected = faults.get_mut(&hook)?;
        let fault = injected.fault;
        match &mut injected.remaining {
            None => {}
            Some(n) => {
                *n -= 1;
                if *n == 0 {
                    faults.remove(&hook);
                }
            }
        }
        Some(fault.error())
    }

    /// Runs `hook`'s call: at once when no delay is set (as the memory store answers), else
    /// after the delay. An injected fault is decided when the call is made.
    fn run<T: Send + 'static>(
        &self,
        hook: Hook,
        call: impl FnOnce() -> StoreFuture<T> + Send + 'static,
    ) -> StoreFuture<T> {
        let fault = self.fault(hook);
        let delay = locked(&self.delays).get(&hook).copied();
        match (delay, fault) {
            (None, Some(error)) => StoreFuture::ready(Err(error)),
            (None, None) => call(),
            (Some(delay), fault) => StoreFuture::boxed(async move {
                tokio::time::sleep(delay).await;
                match fault {
                    Some(error) => Err(error),
                    None => call().await,
                }
            }),
        }
    }
}

impl SessionStore for FaultyStore {
    fn id(&self) -> StoreFuture<String> {
        // The id is chosen now, so that the history names it.
        let scripted = locked(&self.ids).pop_front();
        let id = scripted.unwrap_or_else(|| session_engine::store::random_id().expect("an id"));
        let fault = self.fault(Hook::Id);
        self.log(Hook::Id, fault.is_none().then_some(id.as_str()), None);
        let delay = locked(&self.delays).get(&Hook::Id).copied();
        let answer = match fault {
            Some(error) => Err(error),
            None => Ok(id),
        };
        match delay {
            None => StoreFuture::ready(answer),
            Some(delay) => StoreFuture::boxed(async move {
                tokio::time::sleep(delay).await;
                answer
            }),
        }
    }

    fn read(&self, key: &StoreKey) -> StoreFuture<Option<Record>> {
        self.log(Hook::Read, Some(key.as_str()), None);
        let (inner, key) = (self.inner.clone(), key.clone());
        self.run(Hook::Read, move || inner.read(&key))
    }

    fn write(
        &self,
        key: &StoreKey,
        record: &Record,
        changes: &Changes,
        mode: WriteMode,
    ) -> StoreFuture<SystemTime> {
        self.log(Hook::Write, Some(key.as_str()), Some(mode));
        let taken = mode == WriteMode::Insert
            && self
                .id_taken
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        let (inner, key) = (self.inner.clone(), key.clone());
        let (record, changes) = (record.clone(), changes.clone());
        self.run(Hook::Write, move || {
            if taken {
                return StoreFuture::ready(Err(StoreError::IdTaken));
            }
            inner.write(&key, &record, &changes, mode)
        })
    }

    fn touch(&self, key: &StoreKey, from: SystemTime, to: SystemTime) -> StoreFuture<Touched> {
        self.log(Hook::Touch, Some(key.as_str()), None);
        let (inner, key) = (self.inner.clone(), key.clone());
        self.run(Hook::Touch, move || inner.touch(&key, from, to))
    }

    fn destroy(&self, key: &StoreKey) -> StoreFuture<bool> {
        self.log(Hook::Destroy, Some(key.as_str()), None);
        let (inner, key) = (self.inner.clone(), key.clone());
        self.run(Hook::Destroy, move || inner.destroy(&key))
    }

    fn cleanup(&self) -> StoreFuture<u64> {
        self.log(Hook::Cleanup, None, None);
        let inner = self.inner.clone();
        self.run(Hook::Cleanup, move || inner.cleanup())
    }

    fn user_sessions(&self, user: &str) -> StoreFuture<Vec<(StoreKey, RecordSummary)>> {
        self.log(Hook::Users, None, None);
        let (inner, user) = (self.inner.clone(), user.to_owned());
        self.run(Hook::Users, move || inner.user_sessions(&user))
    }

    fn indexes_users(&self) -> bool {
        !self.unindexed.load(Ordering::SeqCst)
    }
}
