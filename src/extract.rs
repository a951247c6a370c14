//! The axum extractors: [`Session`] (started), `Option<Session>`, and [`LazySession`] (not
//! started) ([`Typed`](crate::Typed) has its own file); the rejections when [`SessionLayer`] is missing or the store fails; and
//! `IntoResponse` for [`Error`].
//!
//! [`SessionLayer`]: crate::SessionLayer

use std::convert::Infallible;
use std::ops::Deref;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use crate::error::{self, Error};
use crate::session::Session;

/// The request's session, as the layer put it into the extensions.
fn handle(parts: &Parts) -> Result<Session, MissingSessionLayer> {
    parts
        .extensions
        .get::<Session>()
        .cloned()
        .ok_or(MissingSessionLayer)
}

/// The started session: the extractor calls [`start`](Session::start), so the handler can use
/// the data at once. A store that fails there answers as `start` would: an opaque 500, or 503
/// when the store is unavailable. A handler that may not need the session at all takes
/// [`LazySession`] instead, which reads nothing until it is started.
impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let session = handle(parts)?;
        session.start().await?;
        Ok(session)
    }
}

/// `Option<Session>`: `None` on a route that is not behind a [`SessionLayer`](crate::SessionLayer),
/// for handlers shared by routes with sessions and routes without; else the started session.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Session {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        let Ok(session) = handle(parts) else {
            return Ok(None);
        };
        session.start().await?;
        Ok(Some(session))
    }
}

/// The request's [`Session`], not started: for a handler that decides later whether it needs
/// the session. Until the handler calls [`start`](Session::start) (or `touch`, or `destroy`),
/// the request causes no store call and no `Set-Cookie`, and a store that is down does not
/// break it.
///
/// It dereferences to the [`Session`]:
///
/// ```
/// use session_engine::{Error, LazySession};
///
/// async fn logout(session: LazySession) -> Result<&'static str, Error> {
///     // Removes the cookie's record without reading it first.
///     session.destroy().await?;
///     Ok("bye")
/// }
/// ```
#[derive(Clone, Debug)]
pub struct LazySession(pub Session);

impl LazySession {
    /// The session handle.
    #[must_use]
    pub fn into_inner(self) -> Session {
        self.0
    }
}

impl Deref for LazySession {
    type Target = Session;

    fn deref(&self) -> &Session {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for LazySession {
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        handle(parts).map(Self)
    }
}

/// `Option<LazySession>`: `None` on a route that is not behind a
/// [`SessionLayer`](crate::SessionLayer).
impl<S: Send + Sync> OptionalFromRequestParts<S> for LazySession {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(handle(parts).ok().map(Self))
    }
}

/// The rejection of the [`LazySession`] extractor when the route is not behind a
/// [`SessionLayer`](crate::SessionLayer): a 500 that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingSessionLayer;

impl std::fmt::Display for MissingSessionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the Session extractor needs a SessionLayer around this route")
    }
}

impl std::error::Error for MissingSessionLayer {}

impl IntoResponse for MissingSessionLayer {
    fn into_response(self) -> Response {
        tracing::error!("{self}");
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

/// The rejection of the [`Session`] extractor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionRejection {
    /// The route is not behind a [`SessionLayer`](crate::SessionLayer): a 500 whose body says
    /// so.
    #[error(transparent)]
    MissingLayer(#[from] MissingSessionLayer),
    /// Starting the session failed (the store's `read` or `id`): the opaque 500 or 503 of
    /// [`Error`].
    #[error(transparent)]
    Start(#[from] Error),
    /// The [`Typed`](crate::Typed) extractor's value could not be read: the stored value is
    /// not of its type ([`Error::Deserialize`], naming the key), or its key is reserved. The
    /// opaque 500 of [`Error`].
    #[error(transparent)]
    Data(Error),
}

impl IntoResponse for SessionRejection {
    fn into_response(self) -> Response {
        match self {
            Self::MissingLayer(missing) => missing.into_response(),
            Self::Start(error) | Self::Data(error) => error.into_response(),
        }
    }
}

impl IntoResponse for Error {
    /// The opaque failure response: 500, or 503 when the store is unavailable, with an empty
    /// body; the error itself is logged.
    fn into_response(self) -> Response {
        error::failure(&self)
    }
}
