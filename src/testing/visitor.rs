//! [`Visitor`]: tests of handlers, or of a whole app, with a real [`Session`] and no server;
//! [`Reply`], what a request answered.

use std::convert::Infallible;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};

use axum_core::body::Body;
use axum_core::response::{IntoResponse, Response};
use http::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body::Body as _;
use serde::de::DeserializeOwned;
use tower_service::Service;

use crate::engine::SessionEngine;
use crate::layer::ResponseFuture;
use crate::session::Session;

/// A visitor of an app, as a browser is: it keeps the session cookie each response sets (or
/// removes) and sends it with the next request, and the session header too, as an API client
/// would, when the engine has one. No server, no socket; any engine, so any store.
///
/// It drives a whole app, every layer included ([`with_router`](Self::with_router), then
/// [`get`](Self::get), [`post`](Self::post) or [`send`](Self::send)), or calls one handler
/// with a started [`Session`] ([`call`](Self::call)), ending the request as
/// [`SessionLayer`](crate::SessionLayer) does (the store's write, touch or destroy, the
/// cookie, the cache headers).
///
/// An app:
///
/// ```
/// use axum::Router;
/// use axum::routing::get;
/// use session_engine::testing::Visitor;
/// use session_engine::{Error, Session, SessionEngine, SessionLayer};
///
/// /// The app under test, as `main` serves it.
/// fn app(engine: SessionEngine) -> Router {
///     let visits = |session: Session| async move {
///         let visits = session.get::<u64>("visits")?.unwrap_or(0) + 1;
///         session.set("visits", visits)?;
///         Ok::<_, Error>(visits.to_string())
///     };
///     Router::new()
///         .route("/", get(visits))
///         .layer(SessionLayer::new(engine))
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), session_engine::ConfigError> {
/// let engine = SessionEngine::builder()
///     .secret("a test secret of at least 32 bytes")
///     .build()?;
/// let mut ada = Visitor::with_router(&engine, app(engine.clone()));
/// assert_eq!(ada.get("/").await.text(), "1");
/// assert_eq!(ada.get("/").await.text(), "2");
/// // Another visitor has a session of its own.
/// assert_eq!(ada.another().get("/").await.text(), "1");
/// # Ok(()) }
/// ```
///
/// One handler:
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
/// # Ok(()) }
/// ```
///
/// A handler that takes more than the session is called through a closure:
/// `visitor.call(|session| handler(session, Query(params)))`.
#[derive(Clone, Debug)]
pub struct Visitor {
    engine: SessionEngine,
    /// The app that `get`, `post` and `send` go through, if any.
    app: Option<App>,
    /// The `Cookie` header the visitor sends: `name=value`.
    cookie: Option<String>,
    /// The session header's value the visitor sends, when the engine has one.
    header: Option<String>,
}

/// A request's answer, as the app gives it.
type Answer = Pin<Box<dyn Future<Output = Response> + Send>>;

/// The app a [`Visitor`] sends its requests through: any service, type-erased so that
/// `Visitor` stays one type whatever the app's layers are.
#[derive(Clone)]
struct App(Arc<dyn Fn(Request<Body>) -> Answer + Send + Sync>);

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("App")
    }
}

/// What a request of a [`Visitor`] answered, after the end of the request.
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

    /// The body, read as the JSON of a `T`.
    ///
    /// # Errors
    ///
    /// [`NotJson`] when the body is not the JSON of a `T`: it says why, and quotes the body.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_engine::testing::Visitor;
    /// use session_engine::{Error, Session, SessionEngine};
    ///
    /// async fn everything(session: Session) -> Result<String, Error> {
    ///     session.set("theme", "dark")?;
    ///     Ok(serde_json::Value::Object(session.get_all()?).to_string())
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let engine = SessionEngine::builder().secret("a test secret of at least 32 bytes").build()?;
    /// let reply = Visitor::new(&engine).call(everything).await;
    /// let data: serde_json::Value = reply.json()?;
    /// assert_eq!(data["theme"], "dark");
    /// # Ok(()) }
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, NotJson> {
        serde_json::from_slice(&self.body).map_err(|source| NotJson {
            expected: std::any::type_name::<T>(),
            body: self.text(),
            source,
        })
    }
}

/// Why [`Reply::json`] failed: the body is not the JSON of the type asked for. Its message
/// names the type, says what serde found wrong and quotes the body (the test's own data).
#[derive(thiserror::Error)]
#[error("the body is not the JSON of a `{expected}`: {source}; the body: {body:?}")]
pub struct NotJson {
    expected: &'static str,
    body: String,
    #[source]
    source: serde_json::Error,
}

impl NotJson {
    /// The body, as text (invalid UTF-8 replaced).
    #[must_use]
    pub fn body(&self) -> &str {
        &self.body
    }
}

/// The message itself, so that a test's `unwrap` or `expect` shows it as it reads.
impl fmt::Debug for NotJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Visitor {
    /// A new visitor, with no cookie yet, of the app that `engine` serves: one that calls
    /// handlers with [`call`](Self::call).
    #[must_use]
    pub fn new(engine: &SessionEngine) -> Self {
        Self {
            engine: engine.clone(),
            app: None,
            cookie: None,
            header: None,
        }
    }

    /// A new visitor, with no cookie yet, of `app`: an axum `Router` (or any service) that
    /// serves `engine`'s sessions, with its [`SessionLayer`](crate::SessionLayer) and every
    /// other layer it has, such as axum-login's. [`get`](Self::get), [`post`](Self::post) and
    /// [`send`](Self::send) go through it; [`call`](Self::call) still calls a handler alone.
    ///
    /// `engine` is the one the app's `SessionLayer` was made with: the visitor reads its
    /// cookie's name and its session header's.
    #[must_use]
    pub fn with_router<S>(engine: &SessionEngine, app: S) -> Self
    where
        S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
    {
        // A mutex only so that a service that is `Send` but not `Sync` fits; each request
        // clones the service under it, and never holds it.
        let app = Mutex::new(app);
        let app = App(Arc::new(move |request| {
            let mut service = app.lock().unwrap_or_else(PoisonError::into_inner).clone();
            Box::pin(async move {
                // Called only once ready, as a server would.
                let ready = poll_fn(|cx| service.poll_ready(cx)).await;
                let result = match ready {
                    Ok(()) => service.call(request).await,
                    Err(never) => Err(never),
                };
                match result {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            })
        }));
        Self {
            app: Some(app),
            ..Self::new(engine)
        }
    }

    /// A new visitor of the same app: no cookie, no session header.
    #[must_use]
    pub fn another(&self) -> Self {
        Self {
            engine: self.engine.clone(),
            app: self.app.clone(),
            cookie: None,
            header: None,
        }
    }

    /// `GET uri` through the app, with this visitor's cookie.
    ///
    /// # Panics
    ///
    /// When the visitor has no app (it was made with [`new`](Self::new), not
    /// [`with_router`](Self::with_router)), or `uri` is not a valid URI.
    pub async fn get(&mut self, uri: &str) -> Reply {
        self.send(request(Method::GET, uri, Body::empty())).await
    }

    /// `POST uri` through the app with `form` as its body (`name=value&…`, URL-encoded; `""`
    /// for none), sent as `application/x-www-form-urlencoded`, with this visitor's cookie.
    ///
    /// # Panics
    ///
    /// As [`get`](Self::get).
    pub async fn post(&mut self, uri: &str, form: &str) -> Reply {
        let mut request = request(Method::POST, uri, Body::from(form.to_owned()));
        request.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        self.send(request).await
    }

    /// Sends `request` through the app, with this visitor's cookie (unless the request has a
    /// `Cookie` header already) and session header (unless it has that header already); the
    /// cookie the response sets (or removes) is kept for the next request.
    ///
    /// # Panics
    ///
    /// When the visitor has no app (it was made with [`new`](Self::new), not
    /// [`with_router`](Self::with_router)).
    pub async fn send(&mut self, mut request: Request<Body>) -> Reply {
        let Some(app) = self.app.clone() else {
            panic!(
                "this Visitor has no app to send requests through: make it with \
                 `Visitor::with_router(&engine, app)`, or call a handler with `call`"
            );
        };
        let credentials = self.credentials();
        for (name, value) in &credentials {
            if !request.headers().contains_key(name) {
                request.headers_mut().insert(name.clone(), value.clone());
            }
        }
        let response = (app.0)(request).await;
        self.finish(response).await
    }

    /// Calls `handler` with this visitor's session, started as the
    /// [`Session`](crate::Session) extractor starts it, and ends the request as
    /// [`SessionLayer`](crate::SessionLayer) would; the cookie the response sets (or removes)
    /// is kept for the next request. A store that fails to start the session answers as the
    /// extractor would, without calling `handler`.
    pub async fn call<H, F, R>(&mut self, handler: H) -> Reply
    where
        H: FnOnce(Session) -> F,
        F: Future<Output = R>,
        R: IntoResponse,
    {
        let credentials = self.engine.credentials(&self.credentials());
        let session = Session::new(self.engine.clone(), credentials);
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
        self.finish(response).await
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

    /// The headers that carry this visitor's session: its cookie, and its session header.
    fn credentials(&self) -> HeaderMap {
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
        headers
    }

    /// Keeps what `response` says of the session (its cookie, its session header) and reads
    /// its body.
    async fn finish(&mut self, response: Response) -> Reply {
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

/// A request with no header yet.
fn request(method: Method, uri: &str, body: Body) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(body)
        .unwrap_or_else(|error| panic!("not a request URI: {uri:?}: {error}"))
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
