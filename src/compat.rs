//! [`TowerSessionsLayer`]: the `tower_sessions::Session` that crates built on tower-sessions
//! (axum-login, axum-messages) take from a request, backed by the request's session-engine
//! [`Session`] (feature `tower-sessions`).
//!
//! Put it inside [`SessionLayer`](crate::SessionLayer), and the crates' own layers inside it:
//!
//! ```
//! use axum::Router;
//! use axum::routing::get;
//! use session_engine::compat::TowerSessionsLayer;
//! use session_engine::{SessionEngine, SessionLayer};
//!
//! # fn app() -> Result<Router, session_engine::ConfigError> {
//! let engine = SessionEngine::builder()
//!     .secret("a secret of at least thirty-two bytes!")
//!     .build()?;
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "home" }))
//!     // .layer(axum_messages::MessagesManagerLayer)
//!     // .layer(axum_login::AuthManager::layer(backend)) …
//!     .layer(TowerSessionsLayer::new())
//!     .layer(SessionLayer::new(engine));
//! # Ok(app) }
//! # app().unwrap();
//! ```
//!
//! The cookie, its signature and its rotation, the store, and every rule of the end of the
//! request stay session-engine's: the tower-sessions session is a view of the request's
//! session. What it reads comes from `start()`; what it changes is applied to the session as
//! keys set and deleted (keys the handler changed through the session-engine handle are left
//! alone); its `cycle_id()` is a [`roll`](Session::roll) and its `flush()` a
//! [`destroy`](Session::destroy). A store that fails or is too slow answers the opaque 500 or
//! 503 of the rest of the crate, never a half-saved session.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use async_trait::async_trait;
use http::{Request, Response};
use serde_json::Value;
use tower_layer::Layer;
use tower_service::Service;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{self, SessionStore};

use crate::error::{self, Error};
use crate::session::Session;

/// The id the tower-sessions session is given: the real id is session-engine's, and never
/// leaves it.
const VIEW_ID: Id = Id(0);

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
    ResBody: Default + Send,
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
            tracing::error!("TowerSessionsLayer needs a SessionLayer around it");
            return Box::pin(async { Ok(error::failure(&Error::NotStarted)) });
        };
        let view = Arc::new(View {
            session,
            state: Mutex::default(),
        });
        let tower = tower_sessions_core::Session::new(Some(VIEW_ID), Arc::clone(&view), None);
        request.extensions_mut().insert(tower.clone());
        Box::pin(async move {
            let response = inner.call(request).await?;
            Ok(view.finish(&tower, response).await)
        })
    }
}

/// The tower-sessions store of one request: its session-engine session.
struct View {
    session: Session,
    state: Mutex<ViewState>,
}

#[derive(Default)]
struct ViewState {
    /// The data as tower-sessions last read it: what its changes are computed against.
    read: Option<HashMap<String, Value>>,
    /// tower-sessions deleted the session: a flush, or the first half of a `cycle_id` (whose
    /// `create` follows, then it is a roll).
    deleted: bool,
    /// The session's id when tower-sessions first read it: a `cycle_id` after the handler
    /// rolled the session itself needs no second roll.
    read_id: Option<String>,
    /// The first failure, for the response.
    failure: Option<Error>,
}

impl View {
    fn state(&self) -> MutexGuard<'_, ViewState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps a failure for the response, and gives tower-sessions an error without it (it
    /// logs errors as they come; ours are logged once, by the response).
    fn fail(&self, error: Error) -> session_store::Error {
        let message = error.to_string();
        self.state().failure.get_or_insert(error);
        session_store::Error::Backend(message)
    }

    /// What tower-sessions' own manager does at the end of a request, on session-engine: save
    /// a modified session (never on a 5xx), and destroy one that was deleted and not
    /// re-created. A failure on the way replaces the response with the opaque one.
    async fn finish<B: Default>(
        &self,
        tower: &tower_sessions_core::Session,
        response: Response<B>,
    ) -> Response<B> {
        if !response.status().is_server_error() && tower.is_modified() && !tower.is_empty().await {
            // A failure is kept by `fail`.
            let _ = tower.save().await;
        }
        let deleted = std::mem::take(&mut self.state().deleted);
        if deleted && !response.status().is_server_error() {
            if let Err(error) = self.session.destroy().await {
                self.state().failure.get_or_insert(error);
            }
        }
        match self.state().failure.take() {
            Some(failure) => error::failure(&failure),
            None => response,
        }
    }

    /// Applies what tower-sessions changed since it read the data: keys set and deleted.
    fn apply(&self, record: &Record) -> Result<(), Error> {
        let read = self.state().read.clone().unwrap_or_default();
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

    /// The session's data as a tower-sessions record; none once it was destroyed or found
    /// gone in this request.
    fn record(&self, id: Id) -> Result<Option<Record>, Error> {
        if !self.session.ready() {
            return Ok(None);
        }
        let data: HashMap<String, Value> = self.session.get_all()?.into_iter().collect();
        let mut state = self.state();
        state.read = Some(data.clone());
        if state.read_id.is_none() {
            state.read_id = self.session.id();
        }
        drop(state);
        Ok(Some(Record {
            id,
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
    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        self.session
            .start()
            .await
            .map_err(|error| self.fail(error))?;
        self.record(*id).map_err(|error| self.fail(error))
    }

    /// tower-sessions creates a session when it has none (a new visitor) and after
    /// `cycle_id`; the second is a roll, unless the handler rolled the session itself.
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        record.id = VIEW_ID;
        self.session
            .start()
            .await
            .map_err(|error| self.fail(error))?;
        let roll = {
            let mut state = self.state();
            std::mem::take(&mut state.deleted) && state.read_id == self.session.id()
        };
        if roll {
            self.session
                .roll()
                .await
                .map_err(|error| self.fail(error))?;
        }
        self.apply(record).map_err(|error| self.fail(error))
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.apply(record).map_err(|error| self.fail(error))
    }

    /// Deleted for good only at the end of the request, unless a `create` follows (a cycle).
    async fn delete(&self, _id: &Id) -> session_store::Result<()> {
        self.state().deleted = true;
        Ok(())
    }
}
