//! The tower-sessions bridge (`compat::TowerSessionsLayer`, SPEC 7.1): its mapping between
//! tower-sessions' record and the request's session, driven by any sequence of
//! tower-sessions calls over three requests on the memory store.
//!
//! Each call is also applied to a model of what tower-sessions promises (a map of keys to
//! values; `clear` and `flush` empty it; `cycle_id` keeps it). Properties: no panic; every
//! `get` answers what the model holds; a request answers 500 only after a call the bridge
//! documents as refused (a key beginning with `__`, `Expiry::AtDateTime`, an inactivity under a
//! millisecond); after a request that succeeded, the next one sees the model's data, through
//! tower-sessions and through session-engine's own handle alike.

#![no_main]

use std::convert::Infallible;
use std::sync::{Arc, LazyLock, Mutex};

use arbitrary::{Arbitrary, Result, Unstructured};
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use session_engine::compat::TowerSessionsLayer;
use session_engine::{MemoryStore, Session, SessionEngine, SessionLayer};
use session_engine_fuzz::{SECRET, json_value};
use tower::{Layer, ServiceExt, service_fn};
use tower_sessions_core::session::Expiry;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
});

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = RUNTIME.block_on(run(&mut u));
});

#[derive(Debug, Clone)]
enum Call {
    Insert(String, Value),
    Get(String),
    Remove(String),
    Clear,
    Flush,
    CycleId,
    SetExpiry(Option<ExpiryKind>),
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum ExpiryKind {
    OnSessionEnd,
    /// Milliseconds, negative ones too.
    OnInactivity(i32),
    AtDateTime,
}

fn key(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.choose_index(5)? {
        0 => "a".to_owned(),
        1 => "b".to_owned(),
        2 => "__user".to_owned(),
        3 => "__x".to_owned(),
        _ => u.arbitrary()?,
    })
}

fn call(u: &mut Unstructured<'_>) -> Result<Call> {
    Ok(match u.choose_index(7)? {
        0 | 1 => Call::Insert(key(u)?, json_value(u, 1)?),
        2 => Call::Get(key(u)?),
        3 => Call::Remove(key(u)?),
        4 => match u.choose_index(3)? {
            0 => Call::Clear,
            1 => Call::Flush,
            _ => Call::CycleId,
        },
        _ => Call::SetExpiry(u.arbitrary()?),
    })
}

/// What tower-sessions promises: the data, and whether a refused call was made.
#[derive(Debug, Default, Clone)]
struct Model {
    data: Map<String, Value>,
    refused: bool,
}

/// Runs `calls` on the request's tower-sessions session, and leaves the model as they left it.
async fn handle(
    request: Request<String>,
    calls: Vec<Call>,
    shared: Arc<Mutex<Model>>,
) -> std::result::Result<Response<String>, Infallible> {
    let tower = request
        .extensions()
        .get::<tower_sessions_core::Session>()
        .cloned()
        .expect("the bridge");
    let mut model = shared.lock().expect("not poisoned").clone();
    model.refused = false;
    let code = apply(&tower, calls, &mut model).await;
    *shared.lock().expect("not poisoned") = model;
    let mut response = Response::new(String::new());
    *response.status_mut() = code;
    Ok(response)
}

/// Runs `calls`, checking each `get` and `remove` against the model.
async fn apply(
    tower: &tower_sessions_core::Session,
    calls: Vec<Call>,
    model: &mut Model,
) -> StatusCode {
    for call in calls {
        match call {
            Call::Insert(key, value) => {
                if tower.insert(&key, &value).await.is_err() {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                model.refused |= key.starts_with("__");
                model.data.insert(key, value);
            }
            Call::Get(key) => {
                let Ok(value) = tower.get_value(&key).await else {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                };
                assert_eq!(value.as_ref(), model.data.get(&key), "get({key:?})");
            }
            Call::Remove(key) => {
                let Ok(value) = tower.remove_value(&key).await else {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                };
                assert_eq!(value, model.data.remove(&key), "remove({key:?})");
            }
            Call::Clear => {
                tower.clear().await;
                model.data.clear();
            }
            Call::Flush => {
                if tower.flush().await.is_err() {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                model.data.clear();
            }
            Call::CycleId => {
                if tower.cycle_id().await.is_err() {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
            }
            Call::SetExpiry(kind) => {
                let expiry = kind.map(|kind| match kind {
                    ExpiryKind::OnSessionEnd => Expiry::OnSessionEnd,
                    ExpiryKind::OnInactivity(ms) => {
                        // Under a millisecond: refused, as `set_duration` refuses it. Others
                        // last an hour at least, so that no session expires between the
                        // requests (one of a millisecond rightly did).
                        model.refused |= ms < 1;
                        let ms = if ms < 1 {
                            i64::from(ms)
                        } else {
                            3_600_000 + i64::from(ms)
                        };
                        Expiry::OnInactivity(time::Duration::milliseconds(ms))
                    }
                    ExpiryKind::AtDateTime => {
                        model.refused = true;
                        Expiry::AtDateTime(time::OffsetDateTime::UNIX_EPOCH)
                    }
                });
                tower.set_expiry(expiry);
            }
        }
    }
    StatusCode::OK
}

/// The handler of the last request: what both handles read.
async fn read_all(request: Request<String>) -> std::result::Result<Response<String>, Infallible> {
    let tower = request
        .extensions()
        .get::<tower_sessions_core::Session>()
        .cloned()
        .expect("the bridge");
    let ours = request
        .extensions()
        .get::<Session>()
        .cloned()
        .expect("a SessionLayer");
    ours.start().await.expect("the memory store does not fail");
    let data = ours.get_all().expect("started");
    for (key, value) in &data {
        let theirs = tower.get_value(key).await.expect("loads");
        assert_eq!(
            theirs.as_ref(),
            Some(value),
            "the two handles differ on {key:?}"
        );
    }
    Ok(Response::new(
        serde_json::to_string(&Value::Object(data)).expect("JSON"),
    ))
}

async fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let engine = SessionEngine::builder()
        .secret(SECRET)
        .store(MemoryStore::new())
        .build()
        .expect("a valid engine");
    let mut cookie: Option<String> = None;
    let model = Arc::new(Mutex::new(Model::default()));
    for _ in 0..2 {
        let calls: Vec<Call> = (0..u.int_in_range(0..=8)?)
            .map(|_| call(u))
            .collect::<Result<_>>()?;
        // FUZZ_DEBUG=1 shows what a crash's input does.
        if std::env::var_os("FUZZ_DEBUG").is_some() {
            eprintln!("request with {cookie:?}: {calls:?}");
        }
        let shared = Arc::clone(&model);
        let service = SessionLayer::new(engine.clone()).layer(TowerSessionsLayer::new().layer(
            service_fn(move |request| handle(request, calls.clone(), Arc::clone(&shared))),
        ));
        let response = service
            .oneshot(request(cookie.as_deref()))
            .await
            .expect("infallible");
        let refused = model.lock().expect("not poisoned").refused;
        if std::env::var_os("FUZZ_DEBUG").is_some() {
            eprintln!(
                "-> {} {:?} {:?}",
                response.status(),
                response.headers(),
                model.lock().expect("not poisoned")
            );
        }
        if response.status() != StatusCode::OK {
            assert!(
                refused,
                "a request failed with no refused call: {} {}",
                response.status(),
                response.body()
            );
            // A refused call: the request's changes may be half applied; stop here.
            return Ok(());
        }
        if let Some(set) = response.headers().get(SET_COOKIE) {
            let pair = set
                .to_str()
                .expect("text")
                .split(';')
                .next()
                .expect("a pair");
            cookie = pair
                .strip_prefix("sid=")
                .filter(|v| !v.is_empty())
                .map(|v| format!("sid={v}"));
        }
    }
    // The last request: both handles see the model's data.
    let service = SessionLayer::new(engine.clone())
        .layer(TowerSessionsLayer::new().layer(service_fn(read_all)));
    let response = service
        .oneshot(request(cookie.as_deref()))
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let seen: Map<String, Value> = serde_json::from_str(response.body()).expect("JSON");
    let expected = model.lock().expect("not poisoned").data.clone();
    assert_eq!(seen, expected, "the data after the requests");
    Ok(())
}

fn request(cookie: Option<&str>) -> Request<String> {
    let mut headers = HeaderMap::new();
    if let Some(cookie) = cookie {
        headers.insert(COOKIE, HeaderValue::from_str(cookie).expect("a cookie"));
    }
    let mut request = Request::builder()
        .uri("/")
        .body(String::new())
        .expect("a request");
    *request.headers_mut() = headers;
    request
}
