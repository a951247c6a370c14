//! [`TowerSessionsLayer`]: the `tower_sessions::Session` (0.14) that crates built on
//! tower-sessions, [axum-login](https://docs.rs/axum-login) 0.18 and
//! [axum-messages](https://docs.rs/axum-messages) 0.8 among them, take from a request, backed by
//! the request's session-engine [`Session`] (feature `tower-sessions`).
//!
//! Put it inside [`SessionLayer`](crate::SessionLayer), and those crates' layers inside it:
//!
//! ```
//! use axum::Router;
//! use axum::routing::get;
//! use session_engine::compat::TowerSessionsLayer;
//! use session_engine::{SessionEngine, SessionLayer};
//!
//! async fn visits(session: tower_sessions_core::Session) -> String {
//!     let visits: u64 = session.get("visits").await.ok().flatten().unwrap_or(0) + 1;
//!     // The end of the request writes it, as session-engine writes its own changes.
//!     let _ = session.insert("visits", visits).await;
//!     visits.to_string()
//! }
//!
//! # fn app() -> Result<Router, session_engine::ConfigError> {
//! let engine = SessionEngine::builder()
//!     .secret("a secret of at least thirty-two bytes!")
//!     .build()?;
//! let app: Router = Router::new()
//!     .route("/", get(visits))
//!     // Here, inside the bridge: `.layer(MessagesManagerLayer)`, then axum-login's
//!     // `AuthManager` (its `AuthManagerLayerBuilder` would bring tower-sessions' own
//!     // session manager, which the bridge replaces).
//!     .layer(TowerSessionsLayer::new())
//!     .layer(SessionLayer::new(engine));
//! # Ok(app) }
//! # app().unwrap();
//! ```
//!
//! `examples/login.rs` in the repository is a complete app with both crates, tested on every
//! store: its `app` function shows the wiring, axum-login's `AuthManager` included.
//!
//! The cookie, its signature and its rotation, the store, and every rule of the end of the
//! request stay session-engine's: the tower-sessions session is a view of the request's
//! session, and a handler may take both at once. Each of its methods does what tower-sessions
//! documents, whether or not anything read the session first:
//!
//! | tower-sessions | on session-engine |
//! | --- | --- |
//! | `get`, `insert`, `remove` | the session's data: keys set and deleted, written at the end of the request (keys the handler changed through session-engine's handle are left alone; keys beginning with `__` are the engine's, refused) |
//! | `clear()` | deletes every key of the data; the id stays, and so do the engine's own keys (the user tie, the custom duration) |
//! | `flush()`, `delete()` | [`invalidate`](Session::invalidate): the record is destroyed at once; whatever is inserted afterwards goes into a fresh session (a new id, tied to no user, the engine's duration and cookie kind); if nothing is, the cookie is removed |
//! | `cycle_id()` | [`roll`](Session::roll) |
//! | `set_expiry(Some(Expiry::OnInactivity(d)))` | [`set_duration(d)`](Session::set_duration), and the engine's cookie kind |
//! | `set_expiry(Some(Expiry::OnSessionEnd))` | a browser-session cookie ([`set_persistent(Some(false))`](Session::set_persistent)) and the engine's duration |
//! | `set_expiry(None)` | the engine's duration and cookie kind ([`clear_duration`](Session::clear_duration), `set_persistent(None)`) |
//! | `set_expiry(Some(Expiry::AtDateTime(_)))` | refused: the request answers the opaque 500, and the log says why (the engine's `max_lifetime` caps a session's life) |
//! | `expiry()` | once the session is read: its own duration (`OnInactivity`) or browser-session cookie (`OnSessionEnd`), as `set_expiry` would set them; `None` for the engine's |
//! | `save()`, `load()` | `save()` applies the changes to the session, which the end of the request writes; the data is read once |
//! | `id()` | a stand-in: the real id never leaves session-engine |
//!
//! A store that fails or is too slow, or a `set_expiry` that cannot be honoured, answers the
//! opaque 500 or 503 of the rest of the crate (whatever the handler answered), never a
//! half-saved session. Without a `SessionLayer` around it, the layer answers 500 with a body
//! that says so.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use async_trait::async_trait;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use serde_json::Value;
use tower_layer::Layer;
use tower_service::Service;
use tower_sessions_core::session::{Expiry, Id, Record};
use tower_sessions_core::session_store::{self, SessionStore};

use crate::error::{self, Error};
use crate::session::Session;

/// The id the tower-sessions session is given: the real id is session-engine's, and never
/// leaves it.
const VIEW_ID: Id = Id(0);

/// What a request through the layer answers when no `SessionLayer` is around it (logged too).
const MISSING_SESSION_LAYER: &str = "TowerSessionsLayer needs a SessionLayer around it: add `.layer(SessionLayer::new(engine))` \
     after `.layer(TowerSessionsLayer::new())`";

/// A [`tower::Layer`](tower_layer::Layer) that gives each request a `tower_sessions::Session`
/// backed by its session-engine [`Session`]. See the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct TowerSessionsLayer {
    _private: (),
}

impl TowerSessionsLayer {
    /// The layer.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for TowerSessionsLayer {
    type Service = TowerSessionsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TowerSessionsService { inner }
    }
}

/// The service made by [`TowerSessionsLayer`].
#[derive(Clone, Debug)]
pub struct TowerSessionsService<S> {
    inner: S,
}

impl<S> TowerSessionsService<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, without the layer.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TowerSessionsService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send,
    ReqBody: Send + 'static,
    ResBody: Default + From<&'static str> + Send,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    // Boxed, as the layers of tower-sessions and of the crates built on it are.
    type Future = BoxFuture<Result<Response<ResBody>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The ready service is the one to call (tower's advice on cloning services).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(session) = request.extensions().get::<Session>().cloned() else {
            return Box::pin(async { Ok(missing_session_layer()) });
        };
        let view = Arc::new(View {
            session,
            tower: Mutex::default(),
            state: Mutex::default(),
        });
        let tower = tower_sessions_core::Session::new(Some(VIEW_ID), Arc::clone(&view), None);
        let attached = Attached::new(view, tower.clone());
        request.extensions_mut().insert(tower);
        Box::pin(async move {
            let response = inner.call(request).await?;
            Ok(attached.finish(response).await)
        })
    }
}

/// The 500 of a request that reached the layer without a session: it says what is missing.
fn missing_session_layer<B: From<&'static str>>() -> Response<B> {
    tracing::error!("{MISSING_SESSION_LAYER}");
    let mut response = Response::new(B::from(MISSING_SESSION_LAYER));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Why the view replaces the response with the opaque failure.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The session failed (its store, most often).
    #[error(transparent)]
    Session(#[from] Error),
    #[error(
        "tower-sessions' `Expiry::AtDateTime` has no session-engine equivalent: set the \
         engine's `max_lifetime` for an absolute limit, or use `Expiry::OnInactivity`"
    )]
    AtDateTime,
    #[error("tower-sessions' `Expiry::OnInactivity` was given a negative duration")]
    NegativeDuration,
}

impl Failure {
    fn respond<B: Default>(&self) -> Response<B> {
        match self {
            Self::Session(error) => error::failure(error),
            _ => error::opaque(StatusCode::INTERNAL_SERVER_ERROR, self),
        }
    }
}

/// The tower-sessions store of one request: its session-engine session.
struct View {
    session: Session,
    /// The tower-sessions session this view backs, for what never reaches a store: whether a
    /// `delete` is a `flush` (whose id is still set) or a `cycle_id` (whose id is already
    /// cleared), and what `set_expiry` chose. Taken out when the request ends (see
    /// [`Attached`]), so that the two do not keep each other alive.
    tower: Mutex<Option<tower_sessions_core::Session>>,
    state: Mutex<ViewState>,
}

#[derive(Default)]
struct ViewState {
    /// The data as tower-sessions last saw it, loaded or saved: what its changes are computed
    /// against. `None` while it has read nothing: a `save` then carries the whole data (after
    /// a `clear()`).
    read: Option<HashMap<String, Value>>,
    /// The session's id when tower-sessions first read it: a `cycle_id` after the handler
    /// rolled the session itself needs no second roll.
    read_id: Option<String>,
    /// The expiry as session-engine's session has it: a `set_expiry` shows as a difference
    /// from it.
    shown: Option<Expiry>,
    /// tower-sessions cycled the id and has not created the session again since: unless it
    /// does, the session ends with the request, as it would in tower-sessions.
    cycled: bool,
    /// The first failure, for the response.
    failure: Option<Failure>,
}

/// Locks a view's mutex. A std mutex: each critical section is a few field updates, never
/// across an `.await`; a panic while one was held leaves nothing half-changed.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl View {
    fn state(&self) -> MutexGuard<'_, ViewState> {
        lock(&self.state)
    }

    /// The tower-sessions session, until the request ends.
    fn tower(&self) -> Option<tower_sessions_core::Session> {
        lock(&self.tower).clone()
    }

    /// Keeps a failure for the response, and gives tower-sessions an error without it (it
    /// logs errors as they come; ours are logged once, by the response).
    fn fail(&self, failure: impl Into<Failure>) -> session_store::Error {
        let failure = failure.into();
        let message = failure.to_string();
        self.state().failure.get_or_insert(failure);
        session_store::Error::Backend(message)
    }

    /// The session's expiry in tower-sessions' terms: its own cookie kind or duration, if it
    /// has one.
    fn engine_expiry(&self) -> Option<Expiry> {
        match self.session.own_lifetime() {
            (_, Some(false)) => Some(Expiry::OnSessionEnd),
            (Some(duration), _) => Some(Expiry::OnInactivity(
                time::Duration::try_from(duration).unwrap_or(time::Duration::MAX),
            )),
            (None, _) => None,
        }
    }

    /// Applies what tower-sessions changed since it read the data (keys set and deleted), and
    /// what `set_expiry` chose.
    fn apply(&self, record: &Record) -> Result<(), Failure> {
        self.apply_expiry()?;
        let read = self.state().read.take();
        let read = match read {
            Some(read) => read,
            // Nothing was read: the record is the whole data, as after `clear()`.
            None => self.session.get_all()?.into_iter().collect(),
        };
        for (key, value) in &record.data {
            if read.get(key) != Some(value) {
                self.session.set(key.as_str(), value)?;
            }
        }
        for key in read.keys().filter(|key| !record.data.contains_key(*key)) {
            self.session.delete(key)?;
        }
        self.state().read = Some(record.data.clone());
        Ok(())
    }

    /// Maps a `set_expiry` onto the session, once.
    fn apply_expiry(&self) -> Result<(), Failure> {
        let Some(wanted) = self.tower().map(|tower| tower.expiry()) else {
            return Ok(());
        };
        if wanted == self.state().shown {
            return Ok(());
        }
        let session = &self.session;
        match wanted {
            None => {
                session.clear_duration()?.set_persistent(None)?;
            }
            Some(Expiry::OnInactivity(duration)) => {
                let duration = duration.try_into().map_err(|_| Failure::NegativeDuration)?;
                session.set_duration(duration)?.set_persistent(None)?;
            }
            Some(Expiry::OnSessionEnd) => {
                session.clear_duration()?.set_persistent(Some(false))?;
            }
            Some(Expiry::AtDateTime(_)) => return Err(Failure::AtDateTime),
        }
        self.state().shown = wanted;
        Ok(())
    }

    /// The session's data as a tower-sessions record; none once it was destroyed or found
    /// gone in this request.
    fn record(&self) -> Result<Option<Record>, Error> {
        if !self.session.ready() {
            return Ok(None);
        }
        let data: HashMap<String, Value> = self.session.get_all()?.into_iter().collect();
        let shown = self.engine_expiry();
        let mut state = self.state();
        state.read = Some(data.clone());
        if state.read_id.is_none() {
            state.read_id = self.session.id();
        }
        state.shown = shown;
        drop(state);
        // tower-sessions shows the session's own expiry, unless the handler chose one before
        // anything was read (the only change possible before a read).
        if let Some(tower) = self.tower().filter(|tower| !tower.is_modified()) {
            if shown.is_some() {
                tower.set_expiry(shown);
            }
        }
        Ok(Some(Record {
            id: VIEW_ID,
            data,
            expiry_date: self.session.expires_at().into(),
        }))
    }
}

impl fmt::Debug for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("View").finish_non_exhaustive()
    }
}

#[async_trait]
impl SessionStore for View {
    async fn load(&self, _id: &Id) -> session_store::Result<Option<Record>> {
        self.session
            .start()
            .await
            .map_err(|error| self.fail(error))?;
        self.record().map_err(|error| self.fail(error))
    }

    /// tower-sessions creates its session when it has none: after a `flush` or a `cycle_id`
    /// (each already applied by `delete`), or when the session ended in this request.
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        record.id = VIEW_ID;
        self.session
            .start()
            .await
            .map_err(|error| self.fail(error))?;
        self.state().cycled = false;
        self.apply(record).map_err(|error| self.fail(error))
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        // Started already, unless tower-sessions read nothing (a `clear()` first).
        self.session
            .start()
            .await
            .map_err(|error| self.fail(error))?;
        self.apply(record).map_err(|error| self.fail(error))
    }

    /// A `flush` (or a `delete`) while tower-sessions' session still has its id: the session
    /// ends at once, and what is inserted afterwards goes into a fresh one. A `cycle_id`
    /// (which cleared the id first): a roll, unless the handler rolled the session itself.
    /// Once the request is over (a clone kept by a spawned task), the two cannot be told
    /// apart: the session ends, so that a logout is never lost.
    async fn delete(&self, _id: &Id) -> session_store::Result<()> {
        let tower = self.tower();
        if tower.as_ref().is_none_or(|tower| tower.id().is_some()) {
            self.session
                .invalidate()
                .await
                .map_err(|error| self.fail(error))?;
            if let Some(tower) = tower {
                // The fresh session has the engine's lifetime, whatever the old one had.
                tower.set_expiry(None);
            }
            let mut state = self.state();
            state.read = Some(HashMap::new());
            state.shown = None;
            state.cycled = false;
            return Ok(());
        }
        self.session
            .start()
            .await
            .map_err(|error| self.fail(error))?;
        let id = self.session.id();
        let rolled = self
            .state()
            .read_id
            .as_ref()
            .is_some_and(|read| id.as_ref() != Some(read));
        if !rolled {
            self.session
                .roll()
                .await
                .map_err(|error| self.fail(error))?;
        }
        self.state().cycled = true;
        Ok(())
    }
}

/// A view attached to its tower-sessions session for the request; detached when dropped,
/// however the request ends (answered, or dropped half-way).
struct Attached(Arc<View>);

impl Attached {
    fn new(view: Arc<View>, tower: tower_sessions_core::Session) -> Self {
        *lock(&view.tower) = Some(tower);
        Self(view)
    }

    /// What tower-sessions' own manager does at the end of a request, on session-engine: save
    /// a modified session (never on a 5xx), and end one whose id was cycled and that was not
    /// created again (it was emptied). A failure on the way replaces the response with the
    /// opaque one.
    async fn finish<B: Default>(&self, response: Response<B>) -> Response<B> {
        let view = &self.0;
        if let Some(tower) = view
            .tower()
            .filter(|_| !response.status().is_server_error())
        {
            if tower.is_modified() && !tower.is_empty().await {
                // A failure is kept by `fail`.
                let _ = tower.save().await;
            }
            if std::mem::take(&mut view.state().cycled) {
                if let Err(error) = view.session.destroy().await {
                    view.state().failure.get_or_insert(error.into());
                }
            }
        }
        match view.state().failure.take() {
            Some(failure) => failure.respond(),
            None => response,
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        lock(&self.0.tower).take();
    }
}
