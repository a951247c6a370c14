//! [`SessionLayer`], the Tower layer; its [`SessionService`], which gives each request a
//! [`Session`](crate::Session); the [`ResponseFuture`] that finishes the session after the
//! inner service has answered; and the headers the response gets.

mod future;
mod response;
mod service;

use tower_layer::Layer;

pub use future::ResponseFuture;
pub use service::SessionService;

use crate::engine::SessionEngine;

/// A [`tower::Layer`](tower_layer::Layer) that gives each request a
/// [`Session`](crate::Session) and, after the response, writes or touches it and sets the
/// cookie.
///
/// ```
/// use axum::{Router, routing::get};
/// use session_engine::{Session, SessionEngine, SessionLayer};
///
/// # fn app() -> Result<Router, session_engine::ConfigError> {
/// let engine = SessionEngine::builder()
///     .secret("a secret of at least thirty-two bytes!")
///     .build()?;
/// let app: Router = Router::new()
///     .route("/", get(|session: Session| async move {
///         session.set("seen", true)?;
///         Ok::<_, session_engine::Error>("hello")
///     }))
///     .layer(SessionLayer::new(engine));
/// # Ok(app) }
/// # app().unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct SessionLayer {
    engine: SessionEngine,
}

impl SessionLayer {
    /// A layer serving `engine`'s sessions.
    #[must_use]
    pub fn new(engine: SessionEngine) -> Self {
        Self { engine }
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService::new(inner, self.engine.clone())
    }
}
