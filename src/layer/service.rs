//! [`SessionService`]: puts a [`Session`] into each request and hands the inner service's
//! future to a [`ResponseFuture`].

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::future::ResponseFuture;
use crate::engine::SessionEngine;
use crate::session::Session;

/// The service made by [`SessionLayer`](super::SessionLayer).
#[derive(Clone, Debug)]
pub struct SessionService<S> {
    inner: S,
    engine: SessionEngine,
}

impl<S> SessionService<S> {
    /// `inner` behind `engine`'s sessions (what [`SessionLayer`](super::SessionLayer) makes).
    pub fn new(inner: S, engine: SessionEngine) -> Self {
        Self { inner, engine }
    }

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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    // Session failures become responses (500/503), never service errors: an error here
    // would close the connection.
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let credentials = self.engine.credentials(request.headers());
        let session = Session::new(self.engine.clone(), credentials);
        request.extensions_mut().insert(session.clone());
        ResponseFuture::new(self.inner.call(request), session)
    }
}
