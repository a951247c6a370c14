//! [`SessionLayer`], its [`SessionService`] and the [`ResponseFuture`] that finishes each
//! request's session.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::header::{CACHE_CONTROL, SET_COOKIE, VARY};
use http::{HeaderMap, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::cookie::Cookies;
use crate::engine::SessionEngine;
use crate::error::Error;
use crate::session::{Finish, Outcome, Session};

/// A [`tower::Layer`](tower_layer::Layer) that gives each request a [`Session`] and, after the
/// response, writes or touches it and sets the cookie (R7–R13).
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
///         session.start().await?;
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
    pub fn new(engine: SessionEngine) -> Self {
        Self { engine }
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            engine: self.engine.clone(),
        }
    }
}

/// The service made by [`SessionLayer`].
#[derive(Clone, Debug)]
pub struct SessionService<S> {
    inner: S,
    engine: SessionEngine,
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
        let cookies = Cookies::from_headers(request.headers());
        let session = Session::new(self.engine.clone(), cookies);
        request.extensions_mut().insert(session.clone());
        ResponseFuture {
            state: State::Inner {
                future: self.inner.call(request),
                session,
            },
        }
    }
}

type Persist = Pin<Box<dyn Future<Output = Result<Outcome, Error>> + Send>>;

pin_project! {
    /// The response future of [`SessionService`]: the inner service's response, then the
    /// session's end-of-request store call when one is needed.
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Inner {
            #[pin]
            future: F,
            session: Session,
        },
        Persisting {
            persist: Persist,
            response: Option<Response<B>>,
            session: Session,
        },
        Done,
    }
}

impl<F, B> std::fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Inner { future, session } => {
                    let result = ready!(future.poll(cx));
                    let session = session.clone();
                    this.state.set(State::Done);
                    let mut response = result?;
                    // R7: a failed response persists nothing and sets no cookie.
                    if response.status().is_server_error() {
                        if session.was_used() {
                            add_vary(response.headers_mut());
                        }
                        return Poll::Ready(Ok(response));
                    }
                    match session.finish() {
                        Finish::Untouched => return Poll::Ready(Ok(response)),
                        Finish::Done(outcome) => {
                            apply(response.headers_mut(), &session, outcome);
                            return Poll::Ready(Ok(response));
                        }
                        #[cfg(feature = "memory-store")]
                        Finish::Failed(error) => return Poll::Ready(Ok(failure(&error))),
                        Finish::Pending(persist) => this.state.set(State::Persisting {
                            persist,
                            response: Some(response),
                            session,
                        }),
                    }
                }
                StateProj::Persisting {
                    persist,
                    response,
                    session,
                } => {
                    let result = ready!(persist.as_mut().poll(cx));
                    let mut response = response.take().expect("set with the state");
                    let session = session.clone();
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(match result {
                        Ok(outcome) => {
                            apply(response.headers_mut(), &session, outcome);
                            response
                        }
                        Err(error) => failure(&error),
                    }));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

/// Adds the session's headers to a response: `Set-Cookie` (R7), and `Cache-Control` and
/// `Vary` (R13).
fn apply(headers: &mut HeaderMap, session: &Session, outcome: Outcome) {
    let cookie = match outcome {
        Outcome::Unchanged => None,
        Outcome::Set(cookie) => Some(cookie),
        Outcome::Remove => Some(session.removal_cookie()),
    };
    if let Some(cookie) = cookie {
        headers.append(SET_COOKIE, cookie);
        if !headers.contains_key(CACHE_CONTROL) {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
    }
    add_vary(headers);
}

/// `Vary: Cookie`, unless the response already varies by it (R13).
fn add_vary(headers: &mut HeaderMap) {
    if !varies_by_cookie(headers) {
        headers.append(VARY, HeaderValue::from_static("cookie"));
    }
}

fn varies_by_cookie(headers: &HeaderMap) -> bool {
    headers.get_all(VARY).iter().any(|value| {
        value.as_bytes().split(|&b| b == b',').any(|field| {
            let field = field.trim_ascii();
            field == b"*" || field.eq_ignore_ascii_case(b"cookie")
        })
    })
}

/// The opaque response that replaces one whose session could not be saved (R12).
fn failure<B: Default>(error: &Error) -> Response<B> {
    tracing::error!(
        error = error as &dyn std::error::Error,
        "session could not be saved; answering with an error"
    );
    let mut response = Response::new(B::default());
    *response.status_mut() = error.status();
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    add_vary(headers);
    response
}
