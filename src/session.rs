//! [`Session`]: the per-request handle, its state, and what the end of a request does with it.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::cookie;
use crate::engine::{EngineInner, SessionEngine};
use crate::error::Error;
use crate::signing::{self, Key};
use crate::store::{self, Changes, Record, StoreError};

/// The data key that keeps a custom duration, in milliseconds, as the seed does.
pub(crate) const CUSTOM_DURATION_KEY: &str = "__cust_dur";

/// How many fresh ids an insert tries before giving up (R8).
const INSERT_TRIES: usize = 3;

/// The session of one request: a cheap, `Clone + Send + Sync` handle.
///
/// [`SessionLayer`](crate::SessionLayer) puts one into each request's extensions; with the
/// `axum` feature it is an extractor. Nothing is read from the store until [`start`] (R1);
/// at the end of the request the layer writes, touches or removes the session (R7).
///
/// Methods that change the session return `Result<&Session, Error>` so they chain:
///
/// ```
/// # async fn f(session: session_engine::Session) -> Result<(), session_engine::Error> {
/// session.start().await?;
/// session.set("user", "ada")?.set("visits", 1)?;
/// # Ok(()) }
/// ```
///
/// Clones share one state, and may be used from several tasks at once within the request.
/// The end of the request persists what the handle holds when the inner service has answered:
/// a clone kept beyond that (moved into a spawned task, say) can still be read, but its later
/// changes are not saved.
///
/// [`start`]: Session::start
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

struct SessionInner {
    engine: SessionEngine,
    /// The request's `Cookie` headers, parsed only when the session is first used.
    cookies: cookie::Cookies,
    /// A std mutex: every critical section is a few field updates and never spans an
    /// `.await`, so an async mutex would only add cost.
    state: Mutex<State>,
    /// An async mutex that orders the steps which call the store with the state they read
    /// (start, touch, destroy), so that clones calling `start` at once cause one read (R5).
    /// It is held across the store call by design; `state` never is.
    gate: tokio::sync::Mutex<()>,
}

/// What the request's cookie carried, once verified.
struct Client {
    /// The cookie's value, percent-decoded: the id, a dot and its signature.
    value: String,
    /// The length of the id at the start of `value`.
    id_len: usize,
    /// Whether `value` was signed with the current secret and sent as is (not
    /// percent-encoded): a refresh of the same id then sends it again instead of signing anew.
    current: bool,
}

impl Client {
    fn id(&self) -> &str {
        &self.value[..self.id_len]
    }

    /// The value to send back for `id`, when it can be sent again as it is.
    fn resend(&self, id: &str) -> Option<&str> {
        (self.current && self.id() == id).then_some(self.value.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not started: no store call yet.
    Idle,
    Started,
    /// Destroyed (or found gone): nothing more is persisted in this request (R11).
    Destroyed,
}

struct State {
    phase: Phase,
    /// The id, once chosen by `set_id` or by `start`.
    id: Option<String>,
    /// The store's key for `id`; empty until the session is stored or about to be written,
    /// so a new session that is never written costs no hash.
    key: String,
    /// The request's verified cookie, read on first use; `Some(None)` when it had none.
    client: Option<Option<Client>>,
    stored: bool,
    data: Map<String, Value>,
    /// The size of `data` as JSON, computed when first needed and then kept up to date.
    data_len: Option<usize>,
    /// Whether anything must be written at the end of the request.
    dirty: bool,
    changes: Changes,
    /// The key of the stored record that a roll left behind; destroyed once the new record
    /// is inserted (R10).
    rolled_from: Option<String>,
    created_at: SystemTime,
    expires_at: SystemTime,
    /// Whether `touch()` was called: the end of the request then only refreshes the cookie.
    touched: bool,
}

impl Session {
    pub(crate) fn new(engine: SessionEngine, cookies: cookie::Cookies) -> Self {
        Self {
            inner: Arc::new(SessionInner {
                engine,
                cookies,
                state: Mutex::new(State {
                    phase: Phase::Idle,
                    id: None,
                    key: String::new(),
                    client: None,
                    stored: false,
                    data: Map::new(),
                    data_len: None,
                    dirty: false,
                    changes: Changes::new(),
                    rolled_from: None,
                    // Set by `start`; a session that is never started has no times.
                    created_at: SystemTime::UNIX_EPOCH,
                    expires_at: SystemTime::UNIX_EPOCH,
                    touched: false,
                }),
                gate: tokio::sync::Mutex::new(()),
            }),
        }
    }

    fn engine(&self) -> &EngineInner {
        &self.inner.engine.inner
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while the lock was held leaves the state consistent: each
        // critical section validates before it mutates.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    // ---- properties ----

    /// The raw session id: the one chosen by `set_id`, or the one `start` settled on; `None`
    /// before either and after `destroy`.
    pub fn id(&self) -> Option<String> {
        let state = self.state();
        match state.phase {
            Phase::Destroyed => None,
            _ => state.id.clone(),
        }
    }

    /// The id as the cookie carries it, signed with the current secret.
    pub fn signed_id(&self) -> Option<String> {
        self.id().map(|id| self.engine().keys[0].sign(&id))
    }

    /// Whether the session has been started (and not destroyed).
    pub fn ready(&self) -> bool {
        self.state().phase == Phase::Started
    }

    /// Whether the session's record exists in the store.
    pub fn stored(&self) -> bool {
        self.state().stored
    }

    /// The idle lifetime: the custom one set with `set_duration`, else the engine's.
    pub fn duration(&self) -> Duration {
        duration_of(&self.state().data, self.engine())
    }

    /// When the session expires: the stored expiry of a loaded session, or the one it will
    /// be given when written; `UNIX_EPOCH` before `start`.
    pub fn expires_at(&self) -> SystemTime {
        self.state().expires_at
    }

    // ---- ids ----

    /// Makes a new id with the store's `id` hook, without changing this session.
    ///
    /// # Errors
    ///
    /// The hook's error, or [`Error::InvalidId`] if it made an id that is not acceptable.
    pub async fn generate_id(&self) -> Result<String, Error> {
        let engine = self.engine();
        let id = engine.id().await?;
        if store::is_valid_id(&id) {
            Ok(id)
        } else {
            Err(Error::InvalidId)
        }
    }

    /// Chooses the id that `start` will read, instead of the cookie's: for ids carried
    /// outside the cookie. An id with no live record is replaced by a fresh one (R4); the
    /// response's cookie follows the id.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidId`] for an id that is empty, longer than 128 bytes, or has characters
    /// outside `[A-Za-z0-9_-]`; [`Error::AlreadyStarted`] after `start` (or while a clone
    /// is starting, touching or destroying the session).
    pub fn set_id(&self, id: impl Into<String>) -> Result<&Self, Error> {
        let id = id.into();
        if !store::is_valid_id(&id) {
            return Err(Error::InvalidId);
        }
        // A clone that holds the gate may be starting the session with another id.
        let Ok(_gate) = self.inner.gate.try_lock() else {
            return Err(Error::AlreadyStarted);
        };
        let mut state = self.state();
        if state.phase != Phase::Idle {
            return Err(Error::AlreadyStarted);
        }
        state.id = Some(id);
        Ok(self)
    }

    /// Verifies a signed id (`id.signature`, raw or percent-encoded) and chooses it as
    /// [`set_id`](Self::set_id) does. `secret` verifies instead of the engine's secrets.
    ///
    /// # Errors
    ///
    /// [`Error::BadSignature`] when the signature does not verify, and the errors of
    /// `set_id`.
    pub fn set_signed_id(&self, signed_id: &str, secret: Option<&str>) -> Result<&Self, Error> {
        let verified = match secret {
            Some(secret) => verify_value(&[Key::new_unchecked(secret.as_bytes())], signed_id),
            None => verify_value(&self.engine().keys, signed_id),
        };
        let client = verified.ok_or(Error::BadSignature)?;
        self.set_id(client.id())
    }

    /// Sets a custom idle lifetime for this session, kept in its data (as `__cust_dur`, in
    /// milliseconds) so that later requests use it too.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`] before `start`; [`Error::ZeroDuration`] for a zero duration.
    /// Durations past [`MAX_DURATION`](crate::MAX_DURATION) are kept as that.
    pub fn set_duration(&self, duration: Duration) -> Result<&Self, Error> {
        if duration.is_zero() {
            return Err(Error::ZeroDuration);
        }
        let duration = duration.min(crate::MAX_DURATION);
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let mut state = self.started()?;
        let engine = self.engine();
        state.put(engine, CUSTOM_DURATION_KEY.to_owned(), Value::from(millis))?;
        let created_at = state.created_at;
        state.expires_at = engine.expiry(created_at, duration);
        Ok(self)
    }

    // ---- lifecycle ----

    /// Starts the session: reads the record of the cookie's id (or of the id chosen with
    /// `set_id`) from the store. Without a valid cookie, or when the id has no live record,
    /// the session gets a fresh id and no data (R4). Idempotent, and safe to call from
    /// several clones at once: the store is read at most once (R5); only when that read
    /// fails does a waiting clone try again.
    ///
    /// # Errors
    ///
    /// The store's `read` or `id` hook failed; the session stays unstarted, so a later call
    /// tries again. The error is `IntoResponse` (an opaque 500, or 503 if the store is
    /// unavailable).
    pub async fn start(&self) -> Result<&Self, Error> {
        if self.state().phase != Phase::Idle {
            return Ok(self);
        }
        let _gate = self.inner.gate.lock().await;
        self.start_locked().await?;
        Ok(self)
    }

    /// `start`, for a caller that holds the gate.
    async fn start_locked(&self) -> Result<(), Error> {
        let engine = self.engine();
        let candidate = {
            let mut state = self.state();
            if state.phase != Phase::Idle {
                return Ok(());
            }
            self.candidate_id(&mut state)
        };
        if let Some(id) = candidate {
            let key = engine.store_key(&id);
            let record = engine.read(&key).await?;
            // R6: the engine checks expiry itself; a store may hold an expired record.
            let record =
                record.filter(|record| !engine.is_expired(record.created_at, record.expires_at));
            if let Some(record) = record {
                let mut state = self.state();
                state.phase = Phase::Started;
                state.id = Some(id);
                state.key = key;
                state.stored = true;
                state.data = record.data;
                state.created_at = record.created_at;
                state.expires_at = record.expires_at;
                return Ok(());
            }
        }
        // R4: no valid cookie, or no live record: a fresh id, never the presented one.
        let id = self.generate_id().await?;
        let mut state = self.state();
        let now = engine.now();
        state.phase = Phase::Started;
        state.key.clear();
        state.id = Some(id);
        state.created_at = now;
        state.expires_at = engine.expiry(now, duration_of(&state.data, engine));
        Ok(())
    }

    /// The id `start` should read: the one set with `set_id`, else the cookie's.
    fn candidate_id(&self, state: &mut State) -> Option<String> {
        if state.id.is_some() {
            return state.id.clone();
        }
        self.client(state).map(|client| client.id().to_owned())
    }

    /// The request's cookie, verified, read once (R2, R3).
    fn client<'s>(&self, state: &'s mut State) -> Option<&'s Client> {
        state
            .client
            .get_or_insert_with(|| {
                let engine = self.engine();
                let mut found = None;
                cookie::find(self.inner.cookies.iter(), &engine.cookie.name, |value| {
                    found = verify_value(&engine.keys, value);
                    found.is_some()
                });
                found
            })
            .as_ref()
    }

    /// Rolls the session to a fresh id, keeping its data, its custom duration and its
    /// creation time. At the end of the request the new record is inserted, then the old one
    /// destroyed; if the insert fails the old one stays (R10). If the old record was
    /// destroyed meanwhile (a logout elsewhere), nothing is inserted and the cookie is
    /// cleared (R9). Returns `true`; `false` for a destroyed session.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`] before `start`; the store's `id` hook failed.
    pub async fn roll(&self) -> Result<bool, Error> {
        match self.state().phase {
            Phase::Idle => return Err(Error::NotStarted),
            Phase::Destroyed => return Ok(false),
            Phase::Started => {}
        }
        let id = self.generate_id().await?;
        let engine = self.engine();
        let mut state = self.state();
        match state.phase {
            Phase::Idle => return Err(Error::NotStarted),
            Phase::Destroyed => return Ok(false),
            Phase::Started => {}
        }
        if state.stored {
            state.rolled_from = Some(std::mem::take(&mut state.key));
            state.stored = false;
        }
        state.key = engine.store_key(&id);
        state.id = Some(id);
        state.changes.record_replace();
        state.dirty = true;
        Ok(true)
    }

    /// Moves the stored session's expiry to now + its duration (capped by `max_lifetime`),
    /// starting the session first if needed. The end of the request then refreshes the
    /// cookie. A session that is not stored yet has nothing to touch. If the record is found
    /// gone, the session is treated as destroyed (R9).
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn touch(&self) -> Result<&Self, Error> {
        let _gate = self.inner.gate.lock().await;
        self.start_locked().await?;
        let engine = self.engine();
        let (key, expires_at) = {
            let state = self.state();
            if state.phase != Phase::Started || !state.stored {
                return Ok(self);
            }
            let duration = duration_of(&state.data, engine);
            (state.key.clone(), engine.expiry(state.created_at, duration))
        };
        match engine.touch(&key, expires_at).await {
            Ok(()) => {
                let mut state = self.state();
                state.expires_at = expires_at;
                state.touched = true;
            }
            Err(StoreError::Gone) => self.state().mark_destroyed(),
            Err(error) => return Err(error.into()),
        }
        Ok(self)
    }

    /// Destroys the session: removes its record from the store at once, clears its data,
    /// and sends a removal cookie at the end of the request. Nothing is persisted for the
    /// rest of the request (R11). Needs no `start`.
    ///
    /// # Errors
    ///
    /// The store's `destroy` hook failed; the session is then unchanged.
    pub async fn destroy(&self) -> Result<&Self, Error> {
        let _gate = self.inner.gate.lock().await;
        let engine = self.engine();
        let keys: Vec<String> = {
            let mut state = self.state();
            match state.phase {
                Phase::Destroyed => return Ok(self),
                Phase::Started => {
                    let current = state.stored.then(|| state.key.clone());
                    current
                        .into_iter()
                        .chain(state.rolled_from.clone())
                        .collect()
                }
                Phase::Idle => self
                    .candidate_id(&mut state)
                    .map(|id| engine.store_key(&id))
                    .into_iter()
                    .collect(),
            }
        };
        for key in &keys {
            engine.destroy(key).await?;
        }
        self.state().mark_destroyed();
        Ok(self)
    }

    // ---- data ----

    /// The state, if the session was started (or destroyed, whose data is empty).
    fn started(&self) -> Result<MutexGuard<'_, State>, Error> {
        let state = self.state();
        match state.phase {
            Phase::Idle => Err(Error::NotStarted),
            _ => Ok(state),
        }
    }

    /// Sets `key` to `value`. Setting a key to an equal value is not a change (R7).
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`], [`Error::ReservedKey`] for keys beginning with `__`,
    /// [`Error::Serialize`], or [`Error::DataTooLarge`] (the data is then unchanged).
    pub fn set(&self, key: impl Into<String>, value: impl Serialize) -> Result<&Self, Error> {
        let key = key.into();
        check_key(&key)?;
        let value = serde_json::to_value(value).map_err(Error::Serialize)?;
        self.started()?.put(self.engine(), key, value)?;
        Ok(self)
    }

    /// Sets every key of `object` (a struct or map that serializes to a JSON object), keeping
    /// the other keys. All or nothing.
    ///
    /// # Errors
    ///
    /// As [`set`](Self::set), and [`Error::NotAnObject`].
    pub fn set_many(&self, object: impl Serialize) -> Result<&Self, Error> {
        let object = to_object(object)?;
        let engine = self.engine();
        let mut state = self.started()?;
        let changed: Vec<(String, Value)> = object
            .into_iter()
            .filter(|(key, value)| state.data.get(key) != Some(value))
            .collect();
        if changed.is_empty() {
            return Ok(self);
        }
        let mut merged = state.data.clone();
        merged.extend(changed.iter().cloned());
        let len = json_len(&merged);
        state.check_len(engine, len)?;
        state.data = merged;
        state.data_len = Some(len);
        for (key, _) in changed {
            state.changes.record_set(key);
        }
        state.dirty = true;
        Ok(self)
    }

    /// Replaces all data with `object`'s keys. The engine's own keys (the custom duration)
    /// are kept.
    ///
    /// # Errors
    ///
    /// As [`set_many`](Self::set_many).
    pub fn reset(&self, object: impl Serialize) -> Result<&Self, Error> {
        let mut data = to_object(object)?;
        let engine = self.engine();
        let mut state = self.started()?;
        for (key, value) in state.data.iter().filter(|(key, _)| is_reserved(key)) {
            data.insert(key.clone(), value.clone());
        }
        if data == state.data {
            return Ok(self);
        }
        let len = json_len(&data);
        state.check_len(engine, len)?;
        state.data = data;
        state.data_len = Some(len);
        state.changes.record_replace();
        state.dirty = true;
        Ok(self)
    }

    /// The value of `key`, or `None`. Reserved keys read as `None`.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`], or [`Error::Deserialize`] when the value is not a `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        let state = self.started()?;
        match state.data.get(key) {
            Some(value) if !is_reserved(key) => {
                T::deserialize(value).map(Some).map_err(Error::Deserialize)
            }
            _ => Ok(None),
        }
    }

    /// All data, without the engine's reserved keys.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`].
    pub fn get_all(&self) -> Result<Map<String, Value>, Error> {
        let state = self.started()?;
        Ok(state
            .data
            .iter()
            .filter(|(key, _)| !is_reserved(key))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }

    /// Deletes `key`; deleting an absent key is not a change.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`], or [`Error::ReservedKey`].
    pub fn delete(&self, key: &str) -> Result<&Self, Error> {
        check_key(key)?;
        let mut state = self.started()?;
        state.remove(key);
        Ok(self)
    }

    /// Deletes every key but the engine's own.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`].
    pub fn delete_all(&self) -> Result<&Self, Error> {
        let mut state = self.started()?;
        let keys: Vec<String> = state
            .data
            .keys()
            .filter(|key| !is_reserved(key))
            .cloned()
            .collect();
        for key in keys {
            state.remove(&key);
        }
        Ok(self)
    }

    // ---- the end of the request ----

    /// Decides what the end of the request does (R7), once the inner service has answered
    /// with a status below 500.
    pub(crate) fn finish(&self) -> Finish {
        let engine = self.engine();
        let mut state = self.state();
        match state.phase {
            Phase::Idle => Finish::Untouched,
            Phase::Destroyed => Finish::Done(Outcome::Remove),
            Phase::Started if state.dirty => {
                let duration = duration_of(&state.data, engine);
                let expires_at = engine.expiry(state.created_at, duration);
                let id = state.id.clone().unwrap_or_default();
                if state.key.is_empty() {
                    state.key = engine.store_key(&id);
                }
                let write = Write {
                    session: self.clone(),
                    id,
                    key: state.key.clone(),
                    record: Record::new(state.data.clone(), state.created_at, expires_at),
                    changes: std::mem::take(&mut state.changes),
                    stored: state.stored,
                    rolled_from: state.rolled_from.take(),
                };
                state.dirty = false;
                // `run` locks the state again.
                drop(state);
                #[cfg(feature = "memory-store")]
                if engine.memory().is_some() {
                    return write.run_now();
                }
                Finish::Pending(Box::pin(write.run()))
            }
            Phase::Started if state.stored => {
                // One clock read serves the expiry, the touch interval and `Max-Age`.
                let now = engine.now();
                let duration = duration_of(&state.data, engine);
                let expires_at = engine.expiry_at(now, state.created_at, duration);
                let touch_due = engine.automatic_touch
                    && !state.touched
                    && expires_at > state.expires_at
                    && engine.touch_interval.is_none_or(|interval| {
                        // The last touch set the expiry to (then + duration).
                        let last = state.expires_at.checked_sub(duration);
                        last.is_none_or(|last| {
                            now.duration_since(last).unwrap_or_default() >= interval
                        })
                    });
                // The client is read before the id is borrowed; its cookie may be re-sent.
                self.client(&mut state);
                let id = state.id.as_deref().unwrap_or_default();
                if touch_due {
                    // The refreshed cookie is made now, while the state is at hand; it is
                    // sent only if the touch finds the record.
                    let cookie = self.cookie_at(&state.signed(engine, id), expires_at, now);
                    // A store in this process answers at once: no future to box.
                    #[cfg(feature = "memory-store")]
                    if let Some(memory) = engine.memory() {
                        let touched = memory.touch_now(&state.key, expires_at);
                        return Finish::Done(touch_outcome(
                            &mut state, touched, expires_at, cookie,
                        ));
                    }
                    // A copy: a clone may destroy the session while the touch is away.
                    let key = state.key.clone();
                    let session = self.clone();
                    return Finish::Pending(Box::pin(async move {
                        session.auto_touch(key, expires_at, cookie).await
                    }));
                }
                // Key rotation: a cookie signed with an older secret (or carrying another id)
                // is re-issued even when no touch is due.
                let client_current = state
                    .client
                    .as_ref()
                    .and_then(Option::as_ref)
                    .is_some_and(|client| client.resend(id).is_some());
                if state.touched || !client_current {
                    let cookie = self.cookie_at(&state.signed(engine, id), state.expires_at, now);
                    Finish::Done(Outcome::Set(cookie))
                } else {
                    Finish::Done(Outcome::Unchanged)
                }
            }
            Phase::Started => Finish::Done(Outcome::Unchanged),
        }
    }

    async fn auto_touch(
        self,
        key: String,
        expires_at: SystemTime,
        cookie: HeaderValue,
    ) -> Result<Outcome, Error> {
        let touched = self.engine().touch(&key, expires_at).await;
        Ok(touch_outcome(
            &mut self.state(),
            touched,
            expires_at,
            cookie,
        ))
    }

    /// Whether the handler started, touched or destroyed the session.
    pub(crate) fn was_used(&self) -> bool {
        self.state().phase != Phase::Idle
    }

    /// The cookie that removes ours from the browser.
    pub(crate) fn removal_cookie(&self) -> HeaderValue {
        self.engine().cookie_format.removal()
    }

    /// `Set-Cookie` for a signed id, with `Max-Age` the seconds until `expires_at`.
    fn cookie_for(&self, signed: &str, expires_at: SystemTime) -> HeaderValue {
        self.cookie_at(signed, expires_at, self.engine().now())
    }

    /// [`cookie_for`](Self::cookie_for) for a `now` the caller has already read.
    fn cookie_at(&self, signed: &str, expires_at: SystemTime, now: SystemTime) -> HeaderValue {
        let max_age = expires_at.duration_since(now).unwrap_or_default().as_secs();
        self.engine().cookie_format.set(signed, max_age)
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // R14: never the id.
        let state = self.state();
        f.debug_struct("Session")
            .field("id", &"REDACTED")
            .field("phase", &state.phase)
            .field("stored", &state.stored)
            .field("keys", &state.data.len())
            .finish_non_exhaustive()
    }
}

impl State {
    /// `id` signed with the current secret: the request's own cookie value when it already
    /// is exactly that, else a new signature.
    fn signed(&self, engine: &EngineInner, id: &str) -> Cow<'_, str> {
        match self
            .client
            .as_ref()
            .and_then(Option::as_ref)
            .and_then(|client| client.resend(id))
        {
            Some(value) => Cow::Borrowed(value),
            None => Cow::Owned(engine.keys[0].sign(id)),
        }
    }

    /// Sets `key`, keeping the size within the limit; an equal value is no change.
    fn put(&mut self, engine: &EngineInner, key: String, value: Value) -> Result<(), Error> {
        if self.data.get(&key) == Some(&value) {
            return Ok(());
        }
        let len = self.len();
        let new_len = match self.data.get(&key) {
            Some(old) => len - entry_len(&key, old) + entry_len(&key, &value),
            None if self.data.is_empty() => 1 + entry_len(&key, &value),
            None => len + entry_len(&key, &value),
        };
        self.check_len(engine, new_len)?;
        self.data.insert(key.clone(), value);
        self.data_len = Some(new_len);
        self.changes.record_set(key);
        self.dirty = true;
        Ok(())
    }

    fn remove(&mut self, key: &str) {
        let len = self.len();
        if let Some(old) = self.data.remove(key) {
            let entry = entry_len(key, &old);
            self.data_len = Some(if self.data.is_empty() { 2 } else { len - entry });
            self.changes.record_delete(key.to_owned());
            self.dirty = true;
        }
    }

    /// The size of the data as JSON.
    fn len(&mut self) -> usize {
        *self.data_len.get_or_insert_with(|| json_len(&self.data))
    }

    fn check_len(&self, engine: &EngineInner, size: usize) -> Result<(), Error> {
        if size > engine.max_data_bytes {
            return Err(Error::DataTooLarge {
                size,
                limit: engine.max_data_bytes,
            });
        }
        Ok(())
    }

    fn mark_destroyed(&mut self) {
        self.phase = Phase::Destroyed;
        self.stored = false;
        self.data.clear();
        self.data_len = None;
        self.changes = Changes::new();
        self.dirty = false;
        self.rolled_from = None;
    }
}

/// A write at the end of a request (R7, R8, R9, R10), run after the handler.
struct Write {
    session: Session,
    id: String,
    key: String,
    record: Record,
    changes: Changes,
    stored: bool,
    rolled_from: Option<String>,
}

impl Write {
    async fn run(mut self) -> Result<Outcome, Error> {
        let session = self.session.clone();
        let engine = session.engine();
        if self.stored {
            let update = engine.write(&self.key, &self.record, &self.changes, true);
            match update.await {
                Ok(()) => {}
                Err(StoreError::Gone) => {
                    // R9: never resurrect; the write is dropped and the cookie cleared.
                    session.state().mark_destroyed();
                    return Ok(Outcome::Remove);
                }
                Err(error) => return Err(error.into()),
            }
        } else {
            self.insert(engine).await?;
            if let Some(old) = &self.rolled_from {
                // R9: a roll must not carry a session that was destroyed meanwhile (a logout
                // in another tab) to the new id. Once the new record is in, a touch of the
                // old one shows whether it still lives, without recreating it; only then is
                // it destroyed. Were the old one checked before the insert, a logout between
                // the two would be undone.
                match engine.touch(old, self.record.expires_at).await {
                    Ok(()) => engine.destroy(old).await?,
                    Err(StoreError::Gone) => {
                        engine.destroy(&self.key).await?;
                        session.state().mark_destroyed();
                        return Ok(Outcome::Remove);
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        }
        let mut state = session.state();
        if state.phase == Phase::Started {
            state.stored = true;
            state.id = Some(self.id.clone());
            state.key = self.key;
            state.expires_at = self.record.expires_at;
        }
        let cookie = session.cookie_for(&state.signed(engine, &self.id), self.record.expires_at);
        Ok(Outcome::Set(cookie))
    }

    /// Runs the write on the in-process store: each of its hooks is ready at once, so the
    /// write is done at its first poll, with no future to box. `run` must therefore never
    /// await anything but the engine's store hooks (no lock, no timer): a write abandoned
    /// half-way could leave a roll's old record behind.
    #[cfg(feature = "memory-store")]
    fn run_now(self) -> Finish {
        use std::task::{Context, Poll, Waker};
        let mut run = std::pin::pin!(self.run());
        match run.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(outcome)) => Finish::Done(outcome),
            Poll::Ready(Err(error)) => Finish::Failed(error),
            Poll::Pending => {
                debug_assert!(false, "a write on the in-process store waited");
                Finish::Failed(Error::Store(StoreError::backend(
                    "the in-process store did not answer at once",
                )))
            }
        }
    }

    /// Inserts the record; an id that is taken is replaced by a fresh one (R8).
    async fn insert(&mut self, engine: &EngineInner) -> Result<(), Error> {
        let changes = Changes::replace_all();
        for attempt in 1..=INSERT_TRIES {
            match engine.write(&self.key, &self.record, &changes, false).await {
                Ok(()) => return Ok(()),
                Err(StoreError::IdTaken) if attempt < INSERT_TRIES => {
                    self.id = self.session.generate_id().await?;
                    self.key = engine.store_key(&self.id);
                }
                Err(error) => return Err(error.into()),
            }
        }
        unreachable!("the last attempt returns")
    }
}

/// What the end of a request does, decided without waiting where possible.
pub(crate) enum Finish {
    /// The session was never used: the response passes untouched (R1).
    Untouched,
    /// Decided, and any store call made.
    Done(Outcome),
    /// A store call made at once failed: the response is replaced by an opaque error (R12).
    #[cfg(feature = "memory-store")]
    Failed(Error),
    /// A store call must finish first.
    Pending(Pin<Box<dyn Future<Output = Result<Outcome, Error>> + Send>>),
}

/// What the end of a request does to the session cookie.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// No `Set-Cookie`.
    Unchanged,
    /// This `Set-Cookie`.
    Set(HeaderValue),
    /// The removal cookie.
    Remove,
}

fn is_reserved(key: &str) -> bool {
    key.starts_with("__")
}

fn check_key(key: &str) -> Result<(), Error> {
    if is_reserved(key) {
        Err(Error::ReservedKey)
    } else {
        Ok(())
    }
}

fn duration_of(data: &Map<String, Value>, engine: &EngineInner) -> Duration {
    data.get(CUSTOM_DURATION_KEY)
        .and_then(Value::as_u64)
        .map_or(engine.duration, Duration::from_millis)
}

fn to_object(object: impl Serialize) -> Result<Map<String, Value>, Error> {
    match serde_json::to_value(object).map_err(Error::Serialize)? {
        Value::Object(map) => {
            if map.keys().any(|key| is_reserved(key)) {
                return Err(Error::ReservedKey);
            }
            Ok(map)
        }
        _ => Err(Error::NotAnObject),
    }
}

/// What the end of the request sends after an automatic touch.
fn touch_outcome(
    state: &mut State,
    touched: Result<(), StoreError>,
    expires_at: SystemTime,
    cookie: HeaderValue,
) -> Outcome {
    match touched {
        Ok(()) => {
            state.expires_at = expires_at;
            Outcome::Set(cookie)
        }
        Err(StoreError::Gone) => {
            // R9: destroyed or expired meanwhile; the client's cookie is stale.
            state.mark_destroyed();
            Outcome::Remove
        }
        Err(error) => {
            // R12: a touch failure costs only the refresh.
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                "session touch failed; response sent without a cookie refresh"
            );
            Outcome::Unchanged
        }
    }
}

/// Verifies a cookie value, raw or percent-encoded, with each key.
fn verify_value(keys: &[Key], value: &str) -> Option<Client> {
    let encoded = value.contains('%');
    let value = if encoded {
        Cow::Owned(signing::percent_decode(value)?)
    } else {
        Cow::Borrowed(value)
    };
    let (id, index) = signing::verify(keys, &value)?;
    if !store::is_valid_id(id) {
        return None;
    }
    // `verify` splits the value at its last dot: the id is the part before it.
    let id_len = id.len();
    Some(Client {
        value: value.into_owned(),
        id_len,
        current: index == 0 && !encoded,
    })
}

/// The size of `value` as JSON, in bytes, without building the string.
fn json_len(value: &impl Serialize) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Serializing a `Value` or a map of them cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// The bytes `"key":value` adds to an object, with its separating comma.
fn entry_len(key: &str, value: &Value) -> usize {
    json_len(&key) + 1 + json_len(value) + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn session(max_data_bytes: usize) -> Session {
        let engine = SessionEngine::builder()
            .secret("0123456789abcdef0123456789abcdef")
            .max_data_bytes(max_data_bytes)
            .build()
            .unwrap();
        Session::new(engine, cookie::Cookies::default())
    }

    /// The kept size must equal the real JSON size after every kind of change.
    #[tokio::test]
    async fn data_size_is_tracked_exactly() {
        let session = session(1 << 20);
        session.start().await.unwrap();
        let exact = |session: &Session| {
            let mut state = session.state();
            let real = serde_json::to_string(&state.data).unwrap().len();
            assert_eq!(state.len(), real, "data {:?}", state.data);
        };
        exact(&session);
        session.set("a", 1).unwrap();
        exact(&session);
        session.set("b", "text with \"quotes\" and é").unwrap();
        exact(&session);
        session.set("a", json!({"nested": [1, 2, 3]})).unwrap();
        exact(&session);
        session.set_duration(Duration::from_secs(5)).unwrap();
        exact(&session);
        session.delete("b").unwrap();
        exact(&session);
        session.set_many(json!({"x": 1, "a": null})).unwrap();
        exact(&session);
        session.delete_all().unwrap();
        exact(&session);
        session.reset(json!({"r": "s"})).unwrap();
        exact(&session);
        session.delete("r").unwrap();
        exact(&session);
    }

    #[tokio::test]
    async fn set_id_while_a_clone_holds_the_gate_is_refused() {
        let session = session(1 << 20);
        let clone = session.clone();
        let gate = session.inner.gate.lock().await;
        assert!(matches!(clone.set_id("abc"), Err(Error::AlreadyStarted)));
        drop(gate);
        assert!(clone.set_id("abc").is_ok());
        assert_eq!(session.id().as_deref(), Some("abc"));
    }

    #[tokio::test]
    async fn oversize_changes_are_refused_and_lose_nothing() {
        // {"a":"xxxxx"} is 13 bytes.
        let session = session(13);
        session.start().await.unwrap();
        session.set("a", "xxxxx").unwrap();
        let refused = session.set("a", "xxxxxx").unwrap_err();
        assert!(
            matches!(
                refused,
                Error::DataTooLarge {
                    size: 14,
                    limit: 13
                }
            ),
            "{refused:?}"
        );
        assert!(matches!(
            session.set_many(json!({"b": 1})),
            Err(Error::DataTooLarge { .. })
        ));
        assert!(matches!(
            session.reset(json!({"a": "xxxxxxx"})),
            Err(Error::DataTooLarge { .. })
        ));
        assert_eq!(
            session.get::<String>("a").unwrap().as_deref(),
            Some("xxxxx")
        );
        assert_eq!(session.get_all().unwrap().len(), 1);
    }
}
