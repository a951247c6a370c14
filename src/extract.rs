//! The axum extractors for [`Session`] and `Option<Session>`, the rejection when
//! [`SessionLayer`] is missing, and `IntoResponse` for [`Error`].
//!
//! [`SessionLayer`]: crate::SessionLayer

use std::convert::Infallible;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use crate::error::{self, Error};
use crate::session::Session;

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(MissingSessionLayer)
    }
}

/// `Option<Session>`: `None` on a route that is not behind a [`SessionLayer`](crate::SessionLayer),
/// for handlers shared by routes with sessions and routes without.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Session {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Session>().cloned())
    }
}

/// The rejection of the [`Session`] extractor when the route is not behind a
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
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

impl IntoResponse for Error {
    /// The opaque failure response: 500, or 503 when the store is unavailable, with an empty
    /// body; the error itself is logged.
    fn into_response(self) -> Response {
        error::failure(&self)
    }
}
