//! The shared harness of the HTTP-level tests: a [`Harness`] holds an app (the demo's routes and
//! any a test adds, behind a `SessionLayer`), the [`FaultyStore`] under it and the engine's
//! [`TestClock`]; [`Reply`] is what a request answered. Also an independent implementation of
//! the cookie format and of the store key, to check the crate against.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::Query;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use http_body_util::BodyExt as _;
use session_engine::{
    Error, LazySession, Record, Session, SessionEngine, SessionEngineBuilder, SessionLayer,
    SessionStore, StoreKey,
};
use sha2::{Digest, Sha256};
use tower::ServiceExt as _;

use crate::faults::FaultyStore;

/// The signing secret of every test engine (at least 32 bytes).
pub(crate) const SECRET: &str = "test-secret-0123456789-abcdefghijklmnop";
/// An older secret, for key rotation.
pub(crate) const OLD_SECRET: &str = "old-secret-9876543210-zyxwvutsrqponmlkj";
/// The attributes of the default cookie, after `Max-Age`.
pub(crate) const DEFAULT_ATTRIBUTES: &str = "Path=/; Secure; HttpOnly; SameSite=Lax";
pub(crate) const MINUTE: Duration = Duration::from_secs(60);

/// An engine option set, as tests pass them.
pub(crate) type Configure = fn(SessionEngineBuilder) -> SessionEngineBuilder;

/// An app behind a session layer, over a [`FaultyStore`], on a [`TestClock`].
pub(crate) struct Harness {
    pub(crate) app: Router,
    pub(crate) store: Arc<FaultyStore>,
    pub(crate) clock: TestClock,
    pub(crate) engine: SessionEngine,
}

impl Harness {
    /// The default engine and the routes of [`routes`].
    pub(crate) fn new() -> Self {
        Self::with(|builder| builder)
    }

    /// An engine configured by `configure`, and the routes of [`routes`].
    pub(crate) fn with(
        configure: impl FnOnce(SessionEngineBuilder) -> SessionEngineBuilder,
    ) -> Self {
        Self::serving(configure, Router::new())
    }

    /// An engine configured by `configure`, and the routes of [`routes`] with `extra`.
    pub(crate) fn serving(
        configure: impl FnOnce(SessionEngineBuilder) -> SessionEngineBuilder,
        extra: Router,
    ) -> Self {
        Self::serving_with(configure, |_| extra)
    }

    /// As [`serving`](Self::serving), with extra routes made from the store: routes that
    /// change records behind the engine's back, as another request would.
    pub(crate) fn serving_with(
        configure: impl FnOnce(SessionEngineBuilder) -> SessionEngineBuilder,
        extra: impl FnOnce(&Arc<FaultyStore>) -> Router,
    ) -> Self {
        let store = FaultyStore::new();
        let clock = TestClock::new();
        let builder = clock.install(builder().shared_store(store.clone()));
        let engine = configure(builder).build().expect("the test engine builds");
        Self {
            app: serve(engine.clone(), routes().merge(extra(&store))),
            store,
            clock,
            engine,
        }
    }

    pub(crate) async fn get(&self, uri: &str, cookie: Option<&str>) -> Reply {
        send(&self.app, request(Method::GET, uri, cookie)).await
    }

    pub(crate) async fn post(&self, uri: &str, cookie: Option<&str>) -> Reply {
        send(&self.app, request(Method::POST, uri, cookie)).await
    }

    pub(crate) async fn send(&self, request: Request<Body>) -> Reply {
        send(&self.app, request).await
    }

    /// A session made with `GET /visits` (its `visits` is 1): its `Cookie` header and its id.
    /// The store's history is cleared afterwards.
    pub(crate) async fn new_session(&self) -> (String, String) {
        let made = new_session(&self.app).await;
        self.store.clear_history();
        made
    }

    /// Moves the engine's clock.
    pub(crate) fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// The record the store holds for `id`, read behind the engine's back.
    pub(crate) async fn record(&self, id: &str) -> Option<Record> {
        let key = StoreKey::from(store_key(id));
        self.store
            .inner()
            .read(&key)
            .await
            .expect("the memory store reads")
    }
}

/// A builder with the test secret and every other option at its default.
pub(crate) fn builder() -> SessionEngineBuilder {
    SessionEngine::builder().secret(SECRET)
}

/// An engine with the test secret over `store`.
pub(crate) fn engine_on(store: Arc<dyn SessionStore>) -> SessionEngine {
    builder()
        .shared_store(store)
        .build()
        .expect("the test engine builds")
}

/// `Debug` of a session method's result, without the `&Session` of a success.
pub(crate) fn outcome<T>(result: Result<T, Error>) -> String {
    format!("{:?}", result.map(|_| ()))
}

/// `routes` behind a [`SessionLayer`] for `engine`, finalised with `.with_state(())`.
pub(crate) fn serve(engine: SessionEngine, routes: Router) -> Router {
    routes.layer(SessionLayer::new(engine)).with_state(())
}

/// The demo's routes (SPEC section 6) and a few more, without the layer. A handler that takes
/// `Session` has it started by the extractor; `/untouched`, `/logout` and `/touch` take
/// `LazySession`, which does not start it.
///
/// | route | does |
/// | --- | --- |
/// | `GET /health` | `ok`, no extractor |
/// | `GET /untouched` | takes the `LazySession` but never starts it; `ok` |
/// | `GET /visits` | start, add 1 to `visits`, body = the new count |
/// | `GET /peek` | start, body = `visits` (0 if none) |
/// | `GET /id` | start, body = the id |
/// | `POST /login?user=NAME` | start, roll, set `user`; body = what `roll` returned |
/// | `GET /me` | start; body = `user`, or 401 |
/// | `POST /logout` | destroy; `ok` |
/// | `POST /duration?ms=N` | start, `set_duration`; `ok` |
/// | `GET /set?key=K&value=V` | start, set `K` to the string `V`; `ok` |
/// | `GET /all` | start, body = `get_all` as JSON |
/// | `GET /touch` | `touch`; `ok` |
pub(crate) fn routes() -> Router {
    async fn visits(session: Session) -> Result<String, Error> {
        let visits = session.get::<u64>("visits")?.unwrap_or(0) + 1;
        session.set("visits", visits)?;
        Ok(visits.to_string())
    }
    async fn peek(session: Session) -> Result<String, Error> {
        Ok(session.get::<u64>("visits")?.unwrap_or(0).to_string())
    }
    async fn login(
        session: Session,
        Query(q): Query<HashMap<String, String>>,
    ) -> Result<String, Error> {
        let rolled = session.roll().await?;
        session.set("user", q.get("user").cloned().unwrap_or_default())?;
        Ok(rolled.to_string())
    }
    async fn me(session: Session) -> Result<Response, Error> {
        Ok(match session.get::<String>("user")? {
            Some(user) => user.into_response(),
            None => StatusCode::UNAUTHORIZED.into_response(),
        })
    }
    async fn duration(
        session: Session,
        Query(q): Query<HashMap<String, u64>>,
    ) -> Result<&'static str, Error> {
        let ms = q.get("ms").copied().unwrap_or(0);
        session.set_duration(Duration::from_millis(ms))?;
        Ok("ok")
    }
    async fn set(
        session: Session,
        Query(q): Query<HashMap<String, String>>,
    ) -> Result<&'static str, Error> {
        session.set(q["key"].clone(), q["value"].clone())?;
        Ok("ok")
    }
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/untouched", get(|_session: LazySession| async { "ok" }))
        .route("/visits", get(visits))
        .route("/peek", get(peek))
        .route(
            "/id",
            get(|session: Session| async move { Ok::<_, Error>(session.id().unwrap_or_default()) }),
        )
        .route("/login", post(login))
        .route("/me", get(me))
        .route(
            "/logout",
            post(|session: LazySession| async move {
                session.destroy().await?;
                Ok::<_, Error>("ok")
            }),
        )
        .route("/duration", post(duration))
        .route("/set", get(set))
        .route(
            "/all",
            get(|session: Session| async move {
                Ok::<_, Error>(serde_json::Value::Object(session.get_all()?).to_string())
            }),
        )
        .route(
            "/touch",
            get(|session: LazySession| async move {
                session.touch().await?;
                Ok::<_, Error>("ok")
            }),
        )
}

// ---- requests and replies ----

/// What a request answered.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: String,
    /// Every `Set-Cookie` header, in order.
    pub(crate) set_cookies: Vec<String>,
    pub(crate) headers: HeaderMap,
}

impl Reply {
    pub(crate) fn new(status: StatusCode, headers: HeaderMap, body: String) -> Self {
        let set_cookies = headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().expect("Set-Cookie is ASCII").to_owned())
            .collect();
        Self {
            status,
            body,
            set_cookies,
            headers,
        }
    }

    /// The one `Set-Cookie` of this reply; panics unless there is exactly one.
    pub(crate) fn set_cookie(&self) -> &str {
        assert_eq!(
            self.set_cookies.len(),
            1,
            "expected exactly one Set-Cookie, got {:?}",
            self.set_cookies
        );
        &self.set_cookies[0]
    }

    /// The `Cookie` header value a browser would send back after this reply's `Set-Cookie`.
    pub(crate) fn cookie(&self) -> String {
        cookie_header(self.set_cookie())
    }

    /// The session id this reply's `Set-Cookie` carries.
    pub(crate) fn cookie_id(&self) -> String {
        id_of(cookie_value(self.set_cookie()))
    }

    /// Whether this reply removes the cookie (its one `Set-Cookie` is the removal).
    pub(crate) fn removes_cookie(&self) -> bool {
        cookie_value(self.set_cookie()).is_empty() && max_age(self.set_cookie()) == 0
    }

    /// Every value of header `name`, as strings.
    pub(crate) fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("an ASCII header").to_owned())
            .collect()
    }
}

/// Sends `request` to `app` with `oneshot` and collects the reply.
pub(crate) async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("a Router never fails");
    let (parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .expect("the body is readable")
        .to_bytes();
    let body = String::from_utf8(bytes.to_vec()).expect("a UTF-8 body");
    Reply::new(parts.status, parts.headers, body)
}

/// A request with an empty body and, when given, one `Cookie` header.
pub(crate) fn request(method: Method, uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(cookie) = cookie {
        builder = builder.header(COOKIE, cookie);
    }
    builder.body(Body::empty()).expect("a valid request")
}

/// A request whose `Cookie` headers are these raw byte strings, one header each.
pub(crate) fn request_with_cookie_bytes(uri: &str, headers: &[&[u8]]) -> Request<Body> {
    let mut request = request(Method::GET, uri, None);
    for bytes in headers {
        let value = HeaderValue::from_bytes(bytes).expect("a valid header value");
        request.headers_mut().append(COOKIE, value);
    }
    request
}

/// `GET uri` with an optional `Cookie` header.
pub(crate) async fn get_with(app: &Router, uri: &str, cookie: Option<&str>) -> Reply {
    send(app, request(Method::GET, uri, cookie)).await
}

/// `POST uri` with an optional `Cookie` header.
pub(crate) async fn post_with(app: &Router, uri: &str, cookie: Option<&str>) -> Reply {
    send(app, request(Method::POST, uri, cookie)).await
}

/// A `Cookie` header for a session created with `GET /visits` (its `visits` is 1), and the
/// session's id.
pub(crate) async fn new_session(app: &Router) -> (String, String) {
    let reply = get_with(app, "/visits", None).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "1"));
    (reply.cookie(), reply.cookie_id())
}

// ---- the cookie format ----

/// Turns a `Set-Cookie` value into the `Cookie` header value a browser sends back
/// (`name=value`).
pub(crate) fn cookie_header(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .expect("split yields at least one part")
        .trim()
        .to_owned()
}

/// The value of a `Set-Cookie` (between `name=` and the first `;`).
pub(crate) fn cookie_value(set_cookie: &str) -> &str {
    let pair = set_cookie.split(';').next().expect("at least one part");
    pair.split_once('=').expect("a name=value pair").1.trim()
}

/// The attributes of a `Set-Cookie`, after the `name=value` pair, in order.
pub(crate) fn attributes(set_cookie: &str) -> Vec<String> {
    set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_owned())
        .collect()
}

/// The `Max-Age` of a `Set-Cookie`; panics if it has none.
pub(crate) fn max_age(set_cookie: &str) -> u64 {
    attributes(set_cookie)
        .iter()
        .find_map(|a| a.strip_prefix("Max-Age="))
        .unwrap_or_else(|| panic!("no Max-Age in {set_cookie:?}"))
        .parse()
        .expect("a numeric Max-Age")
}

/// The id of a signed cookie value: the part before the last `.`.
pub(crate) fn id_of(value: &str) -> String {
    value
        .rsplit_once('.')
        .unwrap_or_else(|| panic!("not a signed value: {value:?}"))
        .0
        .to_owned()
}

/// Signs `id` as the seed does, independently of the crate:
/// `id + "." + base64(HMAC-SHA256(secret, id))`, standard alphabet, no padding.
pub(crate) fn sign(secret: &str, id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(id.as_bytes());
    let tag = STANDARD_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{id}.{tag}")
}

/// The `Set-Cookie` of the default engine for `id`, expiring in `max_age` seconds.
pub(crate) fn session_cookie(id: &str, max_age: u64) -> String {
    format!(
        "sid={}; Max-Age={max_age}; {DEFAULT_ATTRIBUTES}",
        sign(SECRET, id)
    )
}

/// The key the store sees for `id` when `hash_ids` is on: base64url(SHA-256(id)).
pub(crate) fn store_key(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(id.as_bytes()))
}

/// Percent-encodes every byte of `value` that is not an ASCII letter or digit.
pub(crate) fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---- time ----

/// A clock for the engine's `.clock(..)` option that moves only when told to.
///
/// It starts on a whole second a little ahead of the real time, so that the memory store
/// (which keeps its own, real, clock and milliseconds) never sees a record expire before
/// the engine does, and so that every `Max-Age` is exact.
#[derive(Clone, Debug)]
pub(crate) struct TestClock(Arc<Mutex<SystemTime>>);

impl TestClock {
    pub(crate) fn new() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        Self(Arc::new(Mutex::new(
            UNIX_EPOCH + Duration::from_secs(now + 1),
        )))
    }

    pub(crate) fn now(&self) -> SystemTime {
        *self.0.lock().expect("the clock lock")
    }

    pub(crate) fn advance(&self, by: Duration) {
        *self.0.lock().expect("the clock lock") += by;
    }

    /// Puts this clock into `builder`.
    pub(crate) fn install(&self, builder: SessionEngineBuilder) -> SessionEngineBuilder {
        let clock = self.clone();
        builder.clock(move || clock.now())
    }
}

#[test]
fn helpers_parse_set_cookie() {
    let set = "sid=abc.def; Max-Age=60; Path=/; Secure";
    assert_eq!(cookie_header(set), "sid=abc.def");
    assert_eq!(cookie_value(set), "abc.def");
    assert_eq!(max_age(set), 60);
    assert_eq!(attributes(set), ["Max-Age=60", "Path=/", "Secure"]);
    assert_eq!(id_of("a.b.c"), "a.b");
    assert_eq!(
        sign("tobiiscool", "hello"),
        "hello.DGDUkGlIkCzPz+C0B064FNgHdEjox7ch8tOBGslZ5QI"
    );
    assert_eq!(percent_encode("a+b/c.d"), "a%2Bb%2Fc%2Ed");
}
