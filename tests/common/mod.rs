//! Shared helpers for the HTTP-level tests: engines with a test secret, a `Router` with the
//! demo's routes, a `oneshot` sender that returns status, body and `Set-Cookie` headers, an
//! independent implementation of the cookie format (R3) and of the store key, an injectable
//! clock, and [`FaultyStore`], a [`MemoryStore`] wrapper that fails hooks on demand and counts
//! every call.
//!
//! Only fault injection uses a wrapper; everything else runs against the real `MemoryStore`.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
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
    Changes, Error, MemoryStore, Record, Session, SessionEngine, SessionEngineBuilder,
    SessionLayer, SessionStore, StoreError,
};
use sha2::{Digest, Sha256};

pub(crate) mod stores;
use tower::ServiceExt as _;

/// The signing secret of every test engine (at least 32 bytes).
pub(crate) const SECRET: &str = "test-secret-0123456789-abcdefghijklmnop";
/// An older secret, for key rotation.
pub(crate) const OLD_SECRET: &str = "old-secret-9876543210-zyxwvutsrqponmlkj";
/// The message of every injected store error; it must never reach a response body.
pub(crate) const FAULT_MESSAGE: &str = "injected fault: disk on fire";

/// The attributes of the default cookie, after `Max-Age`.
pub(crate) const DEFAULT_ATTRIBUTES: &str = "Path=/; Secure; HttpOnly; SameSite=Lax";

// ---- engines and routers ----

/// A builder with the test secret and every other option at its default.
pub(crate) fn builder() -> SessionEngineBuilder {
    SessionEngine::builder().secret(SECRET)
}

/// An engine with the test secret and a fresh `MemoryStore`.
pub(crate) fn engine() -> SessionEngine {
    builder().build().expect("the test engine builds")
}

/// An engine over `store` (kept by the caller to inspect it), configured by `f`.
pub(crate) fn engine_with(
    store: &Arc<FaultyStore>,
    f: impl FnOnce(SessionEngineBuilder) -> SessionEngineBuilder,
) -> SessionEngine {
    f(builder().shared_store(store.clone()))
        .build()
        .expect("the test engine builds")
}

/// `routes` behind a [`SessionLayer`] for `engine`, finalised with `.with_state(())`.
pub(crate) fn serve(engine: SessionEngine, routes: Router) -> Router {
    routes.layer(SessionLayer::new(engine)).with_state(())
}

/// The demo's routes (SPEC section 6) and a few more, behind a [`SessionLayer`] for `engine`.
pub(crate) fn app(engine: SessionEngine) -> Router {
    serve(engine, routes())
}

/// The routes of [`app`], without the layer.
///
/// | route | does |
/// | --- | --- |
/// | `GET /health` | `ok`, no extractor |
/// | `GET /untouched` | takes the `Session` but never starts it; `ok` |
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
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/untouched", get(|_session: Session| async { "ok" }))
        .route("/visits", get(visits))
        .route("/peek", get(peek))
        .route(
            "/id",
            get(|session: Session| async move {
                session.start().await?;
                Ok::<_, Error>(session.id().unwrap_or_default())
            }),
        )
        .route("/login", post(login))
        .route("/me", get(me))
        .route(
            "/logout",
            post(|session: Session| async move {
                session.destroy().await?;
                Ok::<_, Error>("ok")
            }),
        )
        .route("/duration", post(duration))
        .route("/set", get(set))
        .route(
            "/all",
            get(|session: Session| async move {
                session.start().await?;
                Ok::<_, Error>(serde_json::Value::Object(session.get_all()?).to_string())
            }),
        )
        .route(
            "/touch",
            get(|session: Session| async move {
                session.touch().await?;
                Ok::<_, Error>("ok")
            }),
        )
}

async fn visits(session: Session) -> Result<String, Error> {
    session.start().await?;
    let visits = session.get::<u64>("visits")?.unwrap_or(0) + 1;
    session.set("visits", visits)?;
    Ok(visits.to_string())
}

async fn peek(session: Session) -> Result<String, Error> {
    session.start().await?;
    Ok(session.get::<u64>("visits")?.unwrap_or(0).to_string())
}

async fn login(
    session: Session,
    Query(query): Query<HashMap<String, String>>,
) -> Result<String, Error> {
    session.start().await?;
    let rolled = session.roll().await?;
    session.set("user", query.get("user").cloned().unwrap_or_default())?;
    Ok(rolled.to_string())
}

async fn me(session: Session) -> Result<Response, Error> {
    session.start().await?;
    Ok(match session.get::<String>("user")? {
        Some(user) => user.into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    })
}

async fn duration(
    session: Session,
    Query(query): Query<HashMap<String, u64>>,
) -> Result<&'static str, Error> {
    session.start().await?;
    let ms = query.get("ms").copied().unwrap_or(0);
    session.set_duration(Duration::from_millis(ms))?;
    Ok("ok")
}

async fn set(
    session: Session,
    Query(query): Query<HashMap<String, String>>,
) -> Result<&'static str, Error> {
    session.start().await?;
    session.set(query["key"].clone(), query["value"].clone())?;
    Ok("ok")
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
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("the body is readable")
        .to_bytes();
    let set_cookies = headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().expect("Set-Cookie is ASCII").to_owned())
        .collect();
    Reply {
        status,
        body: String::from_utf8(bytes.to_vec()).expect("a UTF-8 body"),
        set_cookies,
        headers,
    }
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
        request.headers_mut().append(
            COOKIE,
            HeaderValue::from_bytes(bytes).expect("a valid header value"),
        );
    }
    request
}

/// `GET uri`, with an optional `Cookie` header.
pub(crate) async fn get_with(app: &Router, uri: &str, cookie: Option<&str>) -> Reply {
    send(app, request(Method::GET, uri, cookie)).await
}

/// `POST uri`, with an optional `Cookie` header.
pub(crate) async fn post_with(app: &Router, uri: &str, cookie: Option<&str>) -> Reply {
    send(app, request(Method::POST, uri, cookie)).await
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

/// The id of a signed cookie value: the part before the last `.` (R3).
pub(crate) fn id_of(value: &str) -> String {
    value
        .rsplit_once('.')
        .unwrap_or_else(|| panic!("not a signed value: {value:?}"))
        .0
        .to_owned()
}

/// Signs `id` as the seed does, independently of the crate:
/// `id + "." + base64(HMAC-SHA256(secret, id))`, standard alphabet, no padding (R3).
pub(crate) fn sign(secret: &str, id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(id.as_bytes());
    format!(
        "{id}.{}",
        STANDARD_NO_PAD.encode(mac.finalize().into_bytes())
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

// ---- fault injection ----

/// A store hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Hook {
    Id,
    Read,
    Write,
    Touch,
    Destroy,
    Cleanup,
}

impl Hook {
    pub(crate) const ALL: [Hook; 6] = [
        Hook::Id,
        Hook::Read,
        Hook::Write,
        Hook::Touch,
        Hook::Destroy,
        Hook::Cleanup,
    ];
}

/// The error an injected fault returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// `StoreError::backend(..)`: a 500.
    Backend,
    /// `StoreError::unavailable(..)`: a 503.
    Unavailable,
    /// `StoreError::Gone`.
    Gone,
}

impl Fault {
    fn error(self) -> StoreError {
        match self {
            Fault::Backend => StoreError::backend(FAULT_MESSAGE),
            Fault::Unavailable => StoreError::unavailable(FAULT_MESSAGE),
            Fault::Gone => StoreError::Gone,
        }
    }
}

/// One call the engine made to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Call {
    pub(crate) hook: Hook,
    /// The key passed to `read`, `write`, `touch` and `destroy`; the id returned by `id`.
    pub(crate) key: Option<String>,
    /// `write`'s `stored` flag.
    pub(crate) stored: Option<bool>,
}

struct Injected {
    fault: Fault,
    /// How many more calls fail; `None` for every call.
    remaining: Option<usize>,
}

/// A [`MemoryStore`] that fails hooks on demand and records every call made to it.
pub(crate) struct FaultyStore {
    inner: MemoryStore,
    faults: Mutex<HashMap<Hook, Injected>>,
    id_taken: AtomicUsize,
    ids: Mutex<VecDeque<String>>,
    delays: Mutex<HashMap<Hook, Duration>>,
    counts: Mutex<HashMap<Hook, usize>>,
    history: Mutex<Vec<Call>>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FaultyStore {
    /// A store that behaves as a `MemoryStore` until told otherwise.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStore::new(),
            faults: Mutex::default(),
            id_taken: AtomicUsize::new(0),
            ids: Mutex::default(),
            delays: Mutex::default(),
            counts: Mutex::default(),
            history: Mutex::default(),
        })
    }

    /// The real store underneath, for inspecting and changing records behind the engine.
    pub(crate) fn inner(&self) -> &MemoryStore {
        &self.inner
    }

    /// Every later call of `hook` fails with `fault`.
    pub(crate) fn fail(&self, hook: Hook, fault: Fault) {
        locked(&self.faults).insert(
            hook,
            Injected {
                fault,
                remaining: None,
            },
        );
    }

    /// The next `times` calls of `hook` fail with `fault`.
    pub(crate) fn fail_times(&self, hook: Hook, fault: Fault, times: usize) {
        locked(&self.faults).insert(
            hook,
            Injected {
                fault,
                remaining: Some(times),
            },
        );
    }

    /// Every hook fails with `fault`.
    pub(crate) fn fail_all(&self, fault: Fault) {
        for hook in Hook::ALL {
            self.fail(hook, fault);
        }
    }

    /// `hook` works again.
    pub(crate) fn heal(&self, hook: Hook) {
        locked(&self.faults).remove(&hook);
    }

    /// The next `n` inserts (`write` with `stored == false`) fail with `IdTaken`.
    pub(crate) fn id_taken_for_next(&self, n: usize) {
        self.id_taken.store(n, Ordering::SeqCst);
    }

    /// The next calls of `id` return these ids, in order, before random ones.
    pub(crate) fn script_ids<I: IntoIterator<Item = S>, S: Into<String>>(&self, ids: I) {
        locked(&self.ids).extend(ids.into_iter().map(Into::into));
    }

    /// Every later call of `hook` waits `delay` (on the tokio clock) before it runs.
    pub(crate) fn delay(&self, hook: Hook, delay: Duration) {
        locked(&self.delays).insert(hook, delay);
    }

    /// How many times `hook` was called (failed calls included).
    pub(crate) fn calls(&self, hook: Hook) -> usize {
        locked(&self.counts).get(&hook).copied().unwrap_or(0)
    }

    /// How many times any hook was called.
    pub(crate) fn total_calls(&self) -> usize {
        locked(&self.counts).values().sum()
    }

    /// Every call, in order.
    pub(crate) fn history(&self) -> Vec<Call> {
        locked(&self.history).clone()
    }

    /// The hooks called, in order.
    pub(crate) fn hooks(&self) -> Vec<Hook> {
        self.history().iter().map(|call| call.hook).collect()
    }

    /// Forgets the calls made so far (counts and history).
    pub(crate) fn clear_history(&self) {
        locked(&self.counts).clear();
        locked(&self.history).clear();
    }

    /// The keys `write` was called with.
    pub(crate) fn written_keys(&self) -> Vec<String> {
        self.history()
            .into_iter()
            .filter(|call| call.hook == Hook::Write)
            .filter_map(|call| call.key)
            .collect()
    }

    /// The ids the `id` hook returned, in order.
    pub(crate) fn generated_ids(&self) -> Vec<String> {
        self.history()
            .into_iter()
            .filter(|call| call.hook == Hook::Id)
            .filter_map(|call| call.key)
            .collect()
    }

    /// Counts the call, waits any delay, and returns the injected fault, if one is due.
    async fn enter(&self, hook: Hook) -> Result<(), StoreError> {
        *locked(&self.counts).entry(hook).or_insert(0) += 1;
        let delay = locked(&self.delays).get(&hook).copied();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let mut faults = locked(&self.faults);
        let Some(injected) = faults.get_mut(&hook) else {
            return Ok(());
        };
        let fault = injected.fault;
        match &mut injected.remaining {
            None => {}
            Some(0) => {
                faults.remove(&hook);
                return Ok(());
            }
            Some(n) => {
                *n -= 1;
                if *n == 0 {
                    faults.remove(&hook);
                }
            }
        }
        Err(fault.error())
    }

    fn log(&self, hook: Hook, key: Option<&str>, stored: Option<bool>) {
        locked(&self.history).push(Call {
            hook,
            key: key.map(str::to_owned),
            stored,
        });
    }
}

#[async_trait]
impl SessionStore for FaultyStore {
    async fn id(&self) -> Result<String, StoreError> {
        let entered = self.enter(Hook::Id).await;
        let id = match entered {
            Ok(()) => {
                let scripted = locked(&self.ids).pop_front();
                match scripted {
                    Some(id) => Ok(id),
                    None => self.inner.id().await,
                }
            }
            Err(error) => Err(error),
        };
        self.log(Hook::Id, id.as_deref().ok(), None);
        id
    }

    async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
        self.log(Hook::Read, Some(key), None);
        self.enter(Hook::Read).await?;
        self.inner.read(key).await
    }

    async fn write(
        &self,
        key: &str,
        record: &Record,
        changes: &Changes,
        stored: bool,
    ) -> Result<(), StoreError> {
        self.log(Hook::Write, Some(key), Some(stored));
        self.enter(Hook::Write).await?;
        if !stored
            && self
                .id_taken
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(StoreError::IdTaken);
        }
        self.inner.write(key, record, changes, stored).await
    }

    async fn touch(&self, key: &str, expires_at: SystemTime) -> Result<(), StoreError> {
        self.log(Hook::Touch, Some(key), None);
        self.enter(Hook::Touch).await?;
        self.inner.touch(key, expires_at).await
    }

    async fn destroy(&self, key: &str) -> Result<(), StoreError> {
        self.log(Hook::Destroy, Some(key), None);
        self.enter(Hook::Destroy).await?;
        self.inner.destroy(key).await
    }

    async fn cleanup(&self) -> Result<u64, StoreError> {
        self.log(Hook::Cleanup, None, None);
        self.enter(Hook::Cleanup).await?;
        self.inner.cleanup().await
    }
}

/// A `Cookie` header for a session created with `GET /visits` (its `visits` is 1), and the
/// session's id.
pub(crate) async fn new_session(app: &Router) -> (String, String) {
    let reply = get_with(app, "/visits", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "1");
    (reply.cookie(), reply.cookie_id())
}
