//! [`Session`]: the per-request handle, with the seed's properties and methods.
//!
//! The handle's state lives in `state` (where the session stands) and `data` (its data and
//! what changed); what the end of the request does with it lives in `finish`.

mod data;
mod finish;
mod lifecycle;
mod state;
mod users;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tracing::Span;

pub(crate) use finish::{Finish, Finishing, Outcome};
use state::{Phase, State};
pub use users::UserSession;

use crate::cookie::{self, Credentials, Presented};
use crate::engine::SessionEngine;
use crate::error::Error;
use crate::id::SessionId;
use crate::observe::{self, Event, Marks};
use crate::signing::{Key, Verified};
use crate::store::StoreFuture;
use crate::store::gateway::Gateway;

/// The session of one request: a cheap, `Clone + Send + Sync` handle.
///
/// [`SessionLayer`](crate::SessionLayer) puts one into each request's extensions; with the
/// `axum` feature it is an extractor that starts the session before the handler runs
/// (`LazySession` is the one that does not). Nothing is read from the store until [`start`];
/// at the end of the request the layer writes, touches or removes the session and sets the
/// cookie.
///
/// Methods that change the session return `Result<&Session, Error>` so they chain:
///
/// ```
/// # async fn handler(session: session_engine::Session) -> Result<(), session_engine::Error> {
/// session.set("user", "ada")?.set("visits", 1)?;
/// # Ok(()) }
/// ```
///
/// Clones share one state, and may be used from several tasks at once within the request.
/// The end of the request saves what the handle holds when the inner service has answered: a
/// clone kept beyond that (moved into a spawned task, say) can still be read, but its later
/// changes are not saved; its `destroy()` still removes the record.
///
/// [`start`]: Session::start
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    engine: SessionEngine,
    /// The request's `Cookie` headers, parsed only when the session is first used.
    credentials: Credentials,
    /// A std mutex: every critical section is a few field updates (and, at the end of the
    /// request, a store hook's synchronous part) and never spans an `.await`, so an async
    /// mutex would only add cost.
    state: Mutex<State>,
    /// An async mutex that orders the steps which call the store with the state they read
    /// (start, touch, destroy), so that clones calling `start` at once cause one read. It is
    /// held across the store call by design, and every such call has a deadline
    /// (`store_timeout`), so it is never held for ever; `state` never is.
    gate: tokio::sync::Mutex<()>,
    /// Told when a `destroy()` ends, for the end of the request to wait on it; made by the
    /// first `destroy()`, so that a request that never destroys pays nothing for it.
    destroyed: OnceLock<Arc<tokio::sync::Notify>>,
    /// The request's `session` span, made when the session is first used (a request that
    /// never uses it has none), in the span current then.
    span: OnceLock<Span>,
}

impl Session {
    pub(crate) fn new(engine: SessionEngine, credentials: Credentials) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine,
                credentials,
                state: Mutex::new(State::new()),
                gate: tokio::sync::Mutex::new(()),
                destroyed: OnceLock::new(),
                span: OnceLock::new(),
            }),
        }
    }

    pub(crate) fn engine(&self) -> &SessionEngine {
        &self.inner.engine
    }

    /// The request's `session` span, made on first use; none at all, and nothing to make,
    /// while no `tracing` subscriber was ever set.
    fn span(&self) -> &Span {
        static NONE: Span = Span::none();
        if !tracing::dispatcher::has_been_set() {
            return &NONE;
        }
        self.inner.span.get_or_init(observe::session_span)
    }

    /// Runs `f` within the request's span, if the session was used.
    pub(crate) fn in_span<R>(&self, f: impl FnOnce() -> R) -> R {
        let _entered = self.inner.span.get().map(Span::enter);
        f()
    }

    /// A store call, made within the request's span, so that its own span is a child of it.
    fn call<T>(&self, call: impl FnOnce(&Gateway) -> StoreFuture<T>) -> StoreFuture<T> {
        let _entered = self.span().enter();
        call(self.engine().gateway())
    }

    /// Records the request's outcome on its span (`failed` when the session made the request
    /// fail, or nothing of it was saved because the response is a server error).
    pub(crate) fn record_outcome(&self, failed: bool) {
        let Some(span) = self.inner.span.get().filter(|span| !span.is_disabled()) else {
            return;
        };
        if let Some(outcome) = self.state().marks.outcome(failed) {
            span.record("outcome", outcome);
        }
    }

    /// Marks what happened to the session, and counts it.
    fn happened(&self, state: &mut State, mark: Marks, event: Event) {
        state.marks.set(mark);
        self.engine().metrics().count(event);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section checks before it changes anything, so a panic elsewhere
        // while the lock was held leaves the state consistent.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    // ---- properties ----

    /// The raw session id: the one chosen by `set_id`, or the one `start` settled on; `None`
    /// before either, and once the session is destroyed or found gone.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn handler(session: session_engine::LazySession) -> Result<(), session_engine::Error> {
    /// assert_eq!(session.id(), None); // nothing is known before `start`
    /// session.start().await?;
    /// assert_eq!(session.id().map(|id| id.len()), Some(32));
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn id(&self) -> Option<String> {
        let state = self.state();
        match state.phase {
            Phase::Destroyed | Phase::Vanished => None,
            _ => state.id.as_ref().map(|id| id.as_str().to_owned()),
        }
    }

    /// The id as the cookie carries it, signed with the current secret.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn handler(session: session_engine::Session) -> Result<(), session_engine::Error> {
    /// let signed = session.signed_id().expect("started");
    /// assert!(signed.starts_with(&session.id().expect("started")));
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn signed_id(&self) -> Option<String> {
        let state = self.state();
        match state.phase {
            Phase::Destroyed | Phase::Vanished => None,
            _ => state.id.as_ref().map(|id| self.engine().keys().sign(id)),
        }
    }

    /// Whether the session has been started (and not destroyed or found gone).
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn handler(session: session_engine::LazySession) -> Result<(), session_engine::Error> {
    /// assert!(!session.ready());
    /// session.start().await?;
    /// assert!(session.ready());
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn ready(&self) -> bool {
        self.state().phase == Phase::Started
    }

    /// Whether the store holds the session's record: true for a returning visitor, false for
    /// a new session until the end of its first request writes it.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn handler(session: session_engine::Session) -> Result<&'static str, session_engine::Error> {
    /// Ok(if session.stored() { "welcome back" } else { "welcome" })
    /// # }
    /// ```
    #[must_use]
    pub fn stored(&self) -> bool {
        let state = self.state();
        state.phase == Phase::Started && state.key.is_some()
    }

    /// The idle lifetime: the custom one set with `set_duration`, else the engine's.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # async fn handler(session: session_engine::Session) -> Result<(), session_engine::Error> {
    /// session.set_duration(Duration::from_secs(3600))?;
    /// assert_eq!(session.duration(), Duration::from_secs(3600));
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn duration(&self) -> Duration {
        let custom = self.state().data.custom_duration();
        self.engine().lifetime().duration(custom)
    }

    /// When the session expires: the stored expiry of a loaded session, or the one it will be
    /// given when written; `UNIX_EPOCH` before `start`.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn handler(session: session_engine::Session) -> Result<(), session_engine::Error> {
    /// assert!(session.expires_at() > std::time::SystemTime::now());
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn expires_at(&self) -> SystemTime {
        self.state().expires_at
    }

    // ---- ids ----

    /// Makes a new id with the store's `id` hook, without changing this session.
    ///
    /// # Errors
    ///
    /// The hook's error, or [`Error::InvalidId`] if it made an id that is not acceptable.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn handler(session: session_engine::Session) -> Result<(), session_engine::Error> {
    /// let id = session.generate_id().await?;
    /// assert_eq!(id.len(), 32);
    /// assert_eq!(session.id(), None);
    /// # Ok(()) }
    /// ```
    pub async fn generate_id(&self) -> Result<String, Error> {
        self.new_id().await.map(|id| id.as_str().to_owned())
    }

    async fn new_id(&self) -> Result<SessionId, Error> {
        let id = self.call(Gateway::id).await?;
        SessionId::parse(&id).ok_or(Error::InvalidId)
    }

    /// Chooses the id that `start` will read, instead of the cookie's: for ids carried
    /// outside the cookie. An id with no live record is replaced by a fresh one, as a cookie's
    /// is; the response's cookie follows the id.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidId`] for an id that is empty, longer than 128 bytes, or has characters
    /// outside `[A-Za-z0-9_-]`; [`Error::AlreadyStarted`] after `start` (or while a clone
    /// is starting, touching or destroying the session).
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn handler(session: session_engine::LazySession, id_from_a_form: String) -> Result<(), session_engine::Error> {
    /// session.set_id(id_from_a_form)?.start().await?;
    /// # Ok(()) }
    /// ```
    pub fn set_id(&self, id: impl Into<String>) -> Result<&Self, Error> {
        let id = SessionId::parse(&id.into()).ok_or(Error::InvalidId)?;
        self.choose(id)?;
        Ok(self)
    }

    fn choose(&self, id: SessionId) -> Result<(), Error> {
        // A clone that holds the gate may be starting the session with another id.
        let Ok(_gate) = self.inner.gate.try_lock() else {
            return Err(Error::AlreadyStarted);
        };
        let mut state = self.state();
        if state.phase != Phase::Idle {
            return Err(Error::AlreadyStarted);
        }
        state.id = Some(id);
        Ok(())
    }

    /// Verifies a signed id (`id.signature`, raw or percent-encoded) and chooses it as
    /// [`set_id`](Self::set_id) does. `secret` verifies instead of the engine's secrets.
    ///
    /// # Errors
    ///
    /// [`Error::BadSignature`] when the signature does not verify, and the errors of
    /// `set_id`.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn handler(session: session_engine::LazySession, signed: String) -> Result<(), session_engine::Error> {
    /// // A signed id handed over in a query string, say, instead of the cookie.
    /// session.set_signed_id(&signed, None)?.start().await?;
    /// # Ok(()) }
    /// ```
    pub fn set_signed_id(&self, signed_id: &str, secret: Option<&str>) -> Result<&Self, Error> {
        let presented = match secret {
            Some(secret) => cookie::decode_signed(signed_id, |value| {
                let id = Key::new(secret.as_bytes()).verify(value)?;
                Some(Verified { id, current: false })
            }),
            None => cookie::decode_signed(signed_id, |value| self.engine().keys().verify(value)),
        };
        self.choose(presented.ok_or(Error::BadSignature)?.id)?;
        Ok(self)
    }

    /// Sets a custom idle lifetime for this session, kept in its data (as `__cust_dur`, in
    /// milliseconds) so that later requests use it too; the expiry moves at once.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`] before `start`; [`Error::DurationTooShort`] for a duration under
    /// a millisecond (the unit stores keep times in).
    /// Durations past [`MAX_DURATION`](crate::MAX_DURATION) are kept as that.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # async fn handler(session: session_engine::Session) -> Result<(), session_engine::Error> {
    /// // "Remember me": this session lives for 30 idle days.
    /// session.set_duration(Duration::from_secs(30 * 24 * 3600))?;
    /// # Ok(()) }
    /// ```
    pub fn set_duration(&self, duration: Duration) -> Result<&Self, Error> {
        if duration < crate::lifetime::MIN_DURATION {
            return Err(Error::DurationTooShort);
        }
        let lifetime = self.engine().lifetime();
        let duration = lifetime.duration(Some(duration));
        let mut state = self.started()?;
        state
            .data
            .set_custom_duration(duration, self.engine().max_data_bytes())?;
        state.expires_at = lifetime.expiry(lifetime.now(), state.anchor(), duration);
        Ok(self)
    }

    /// Removes the custom idle lifetime that [`set_duration`](Self::set_duration) gave the
    /// session: it goes back to the engine's `duration`, in later requests too, and the expiry
    /// moves at once. A session without one is unchanged.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`] before `start`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # async fn forget_me(session: session_engine::Session) -> Result<(), session_engine::Error> {
    /// session.set_duration(Duration::from_secs(30 * 24 * 3600))?;
    /// session.clear_duration()?;
    /// assert_eq!(session.duration(), Duration::from_secs(30 * 60)); // the engine's default
    /// # Ok(()) }
    /// ```
    pub fn clear_duration(&self) -> Result<&Self, Error> {
        let lifetime = self.engine().lifetime();
        let mut state = self.started()?;
        if state.data.clear_custom_duration() {
            state.expires_at =
                lifetime.expiry(lifetime.now(), state.anchor(), lifetime.duration(None));
        }
        Ok(self)
    }

    /// The custom duration, if `set_duration` gave the session one, and the session's own
    /// choice of cookie kind (`set_persistent`), if it made one.
    #[cfg(feature = "tower-sessions")]
    pub(crate) fn own_lifetime(&self) -> (Option<Duration>, Option<bool>) {
        let state = self.state();
        (state.data.custom_duration(), state.data.persistent())
    }

    /// Chooses whether this session's cookie is persistent (carries `Max-Age`, so it outlives
    /// the browser) or a browser-session cookie (none, so the browser drops it when it
    /// closes), whatever the engine's [`persistent`](crate::SessionEngineBuilder::persistent)
    /// option says; `None` goes back to the engine's choice. Kept in the session's data, so
    /// later responses follow it too. The expiry in the store is unchanged.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`] before `start`.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn login(session: session_engine::Session, remember_me: bool) -> Result<(), session_engine::Error> {
    /// // Without "remember me", the cookie ends with the browser.
    /// session.set_persistent(Some(remember_me))?;
    /// # Ok(()) }
    /// ```
    pub fn set_persistent(&self, persistent: Option<bool>) -> Result<&Self, Error> {
        let limit = self.engine().max_data_bytes();
        self.started()?.data.set_persistent(persistent, limit)?;
        Ok(self)
    }

    /// Stores the session at the end of the request even if nothing changed: a new session
    /// with no data then gets a record and a cookie (a visitor who accepted the cookie banner,
    /// say), and a stored one is written again, which moves its expiry.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`] before `start`.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn hello(session: session_engine::Session) -> Result<(), session_engine::Error> {
    /// session.save()?; // the visitor gets a session cookie, though the data is empty
    /// # Ok(()) }
    /// ```
    pub fn save(&self) -> Result<&Self, Error> {
        self.started()?.data.mark_dirty();
        Ok(self)
    }

    // ---- data ----

    /// The state, if the session was started (or has ended, whose data is empty).
    fn started(&self) -> Result<MutexGuard<'_, State>, Error> {
        let state = self.state();
        match state.phase {
            Phase::Idle => Err(Error::NotStarted),
            _ => Ok(state),
        }
    }

    /// Sets `key` to `value`. Setting a key to an equal value is not a change.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`], [`Error::ReservedKey`] for keys beginning with `__`,
    /// [`Error::Serialize`], or [`Error::DataTooLarge`] (the data is then unchanged).
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn handler(session: session_engine::Session) -> Result<(), session_engine::Error> {
    /// session.set("cart", vec!["apple", "pear"])?.set("step", 2)?;
    /// # Ok(()) }
    /// ```
    pub fn set(&self, key: impl Into<String>, value: impl Serialize) -> Result<&Self, Error> {
        let limit = self.engine().max_data_bytes();
        self.started()?.data.set(key.into(), value, limit)?;
        Ok(self)
    }

    /// Sets every key of `object` (a struct or map that serializes to a JSON object), keeping
    /// the other keys. All or nothing.
    ///
    /// # Errors
    ///
    /// As [`set`](Self::set), and [`Error::NotAnObject`].
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn handler(session: session_engine::Session) -> Result<(), session_engine::Error> {
    /// session.set_many(serde_json::json!({"theme": "dark", "lang": "fr"}))?;
    /// # Ok(()) }
    /// ```
    pub fn set_many(&self, object: impl Serialize) -> Result<&Self, Error> {
        let limit = self.engine().max_data_bytes();
        self.started()?.data.set_many(object, limit)?;
        Ok(self)
    }

    /// Replaces all data with `object`'s keys. The engine's own keys (the custom duration)
    /// are kept.
    ///
    /// # Errors
    ///
    /// As [`set_many`](Self::set_many).
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn handler(session: session_engine::Session) -> Result<(), session_engine::Error> {
    /// session.reset(serde_json::json!({"step": 1}))?;
    /// assert_eq!(session.get_all()?.len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn reset(&self, object: impl Serialize) -> Result<&Self, Error> {
        let limit = self.engine().max_data_bytes();
        self.started()?.data.reset(object, limit)?;
        Ok(self)
    }

    /// The value of `key`, or `None`. Reserved keys read as `None`.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`], or [`Error::Deserialize`] when the value is not a `T`.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn handler(session: session_engine::Session) -> Result<(), session_engine::Error> {
    /// let user: Option<String> = session.get("user")?;
    /// # Ok(()) }
    /// ```
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.started()?.data.get(key)
    }

    /// All data, without the engine's reserved keys.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`].
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn handler(session: session_engine::Session) -> Result<String, session_engine::Error> {
    /// Ok(serde_json::Value::Object(session.get_all()?).to_string())
    /// # }
    /// ```
    pub fn get_all(&self) -> Result<Map<String, Value>, Error> {
        Ok(self.started()?.data.get_all())
    }

    /// Deletes `key`; deleting an absent key is not a change.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`], or [`Error::ReservedKey`].
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn handler(session: session_engine::Session) -> Result<(), session_engine::Error> {
    /// session.delete("cart")?;
    /// # Ok(()) }
    /// ```
    pub fn delete(&self, key: &str) -> Result<&Self, Error> {
        self.started()?.data.delete(key)?;
        Ok(self)
    }

    /// Deletes every key but the engine's own.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`].
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn handler(session: session_engine::Session) -> Result<(), session_engine::Error> {
    /// session.delete_all()?;
    /// assert!(session.get_all()?.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn delete_all(&self) -> Result<&Self, Error> {
        self.started()?.data.delete_all();
        Ok(self)
    }

    /// The request's signed id (its session header's, or its cookie's), verified, read once.
    fn presented<'s>(&self, state: &'s mut State) -> Option<&'s Presented> {
        state
            .presented
            .get_or_insert_with(|| {
                let engine = self.engine();
                cookie::presented(&self.inner.credentials, engine.cookie_name(), engine.keys())
            })
            .as_ref()
    }

    /// Whether the handler started, touched or destroyed the session.
    pub(crate) fn was_used(&self) -> bool {
        self.state().phase != Phase::Idle
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the id, nor the data.
        let state = self.state();
        f.debug_struct("Session")
            .field("id", &"REDACTED")
            .field("phase", &state.phase)
            .field("stored", &state.key.is_some())
            .field("keys", &state.data.map().len())
            .finish_non_exhaustive()
    }
}
