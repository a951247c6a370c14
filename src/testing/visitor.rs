//! [`Visitor`]: unit tests of handlers with a real [`Session`] and no server.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::pin;

use axum_core::body::Body;
use axum_core::response::IntoResponse;
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body::Body as _;

use crate::engine::SessionEngine;
use crate::layer::ResponseFuture;
use crate::session::Session;

/// A visitor who calls handlers directly: each [`call`](Self::call) gives the handler a
/// started [`Session`] exactly as [`SessionLayer`](crate::SessionLayer) and the extractor would, ends the request as the
/// layer does (the store's write, touch or destroy, the cookie, the cache headers), and keeps
/// the cookie for the next call, as a browser would (and the session header, as an API client
/// would, when the engine has one). No server, no router; any engine, so any store.
///
/// ```
/// use session_engine::testing::Visitor;
/// use session_engine::{Error, Session, SessionEngine};
///
/// /// The handler under test.
/// async fn visits(session: Session) -> Result<String, Error> {
///     let visits = session.get::<u64>("visits")?.unwrap_or(0) + 1;
///     session.set("visits", visits)?;
///     Ok(visits.to_string())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), session_engine::ConfigError> {
/// let engine = SessionEngine::builder()
///     .secret("a test secret of at least 32 bytes")
///     .build()?;
/// let mut visitor = Visitor::new(&engine);
/// assert_eq!(visitor.call(visits).await.text(), "1");
/// assert!(visitor.cookie().is_some());
/// assert_eq!(visitor.call(visits).await.text(), "2");
/// // Another visitor has a session of its own.
/// assert_eq!(Visitor::new(&engine).call(visits).await.text(), "1");
/// # Ok(()) }
/// ```
///
/// A handler that takes more than the session is called through a closure:
/// `visitor.call(|session| handler(session, Query(params)))`.
#[derive(Clone, Debug)]
pub struct Visitor {
    engine: SessionEngine,
    /// The `Cookie` header the visitor sends: `name=value`.
    cookie: Option<String>,
    /// The session header's value the visitor sends, when the engine has one.
    header: Option<String>,
}

/// What a [`Visitor::call`] answered, after the end of the request.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Reply {
    /// The response's status.
    pub status: StatusCode,
    /// The response's headers, `Set-Cookie` and `Cache-Control` included.
    pub headers: HeaderMap,
    /// The response's body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text (invalid UTF-8 replaced).
    #[must_use]
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Visitor {
    /// A new visitor, with no cookie yet, of the app that `engine` serves.
    #[must_use]
    pub fn new(engine: &SessionEngine) -> Self {
        Self {
            engine: engine.clone(),
            cookie: None,
            header: None,
        }
    }

    /// Calls `handler` with this visitor's session, as a request through the layer would, and
    /// ends the request; the cookie the response sets (or removes) is kept for the next call.
    pub async fn call<H, F, R>(&mut self, handler: H) -> Reply
    where
        H: FnOnce(Session) -> F,
        F: Future<Output = R>,
        R: IntoResponse,
    {
        let mut headers = HeaderMap::new();
        if let Some(value) = self
            .cookie
            .as_deref()
            .and_then(|cookie| HeaderValue::from_str(cookie).ok())
        {
            headers.insert(COOKIE, value);
        }
        if let (Some(name), Some(value)) = (
            self.engine.header(),
            self.header
                .as_deref()
                .and_then(|value| HeaderValue::from_str(value).ok()),
        ) {
            headers.insert(name.clone(), value);
        }
        let session = Session::new(self.engine.clone(), self.engine.credentials(&headers));
        let handed = session.clone();
        // As the `Session` extractor does: started, or the failure `start` answers with.
        let handled = async move {
            Ok::<_, Infallible>(match handed.start().await {
                Ok(_) => handler(handed).await.into_response(),
                Err(error) => error.into_response(),
            })
        };
        let response = match ResponseFuture::new(handled, session).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let (parts, body) = response.into_parts();
        for set_cookie in parts.headers.get_all(SET_COOKIE) {
            self.keep(set_cookie);
        }
        if let Some(value) = self
            .engine
            .header()
            .and_then(|name| parts.headers.get(name))
        {
            // An empty value is the removal.
            self.header = value
                .to_str()
                .ok()
                .filter(|value| !value.is_empty())
                .map(str::to_owned);
        }
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: collect(body).await,
        }
    }

    /// The `Cookie` header this visitor sends (`name=value`), if it has a session cookie.
    #[must_use]
    pub fn cookie(&self) -> Option<&str> {
        self.cookie.as_deref()
    }

    /// The session header's value this visitor sends, if the engine has a session header and
    /// a response gave it one.
    #[must_use]
    pub fn header(&self) -> Option<&str> {
        self.header.as_deref()
    }

    /// Sends `cookie` as the `Cookie` header from now on (a forged or an old one, say), or
    /// none.
    pub fn set_cookie(&mut self, cookie: Option<String>) {
        self.cookie = cookie;
    }

    /// Keeps the session cookie of a `Set-Cookie`: its `name=value`, or none for a removal.
    fn keep(&mut self, set_cookie: &HeaderValue) {
        let Ok(text) = set_cookie.to_str() else {
            return;
        };
        let mut parts = text.split(';').map(str::trim);
        let Some((name, value)) = parts.next().and_then(|pair| pair.split_once('=')) else {
            return;
        };
        if name != self.engine.cookie_name() {
            return;
        }
        let removed =
            value.is_empty() || parts.any(|attribute| attribute.eq_ignore_ascii_case("Max-Age=0"));
        self.cookie = (!removed).then(|| format!("{name}={value}"));
    }
}

/// The whole body; a body that fails part-way ends there.
async fn collect(body: Body) -> Vec<u8> {
    let mut body = pin!(body);
    let mut bytes = Vec::new();
    while let Some(Ok(frame)) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        if let Ok(data) = frame.into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    bytes
}
