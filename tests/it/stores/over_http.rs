//! The scenarios that go through an app: requests racing on one session, two instances of an
//! app, a large delta and a spoiled record, each over HTTP against the store under test.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::Query;
use axum::http::{Method, StatusCode};
use axum::routing::get;
use serde_json::{Map, Value, json};
use session_engine::{Error, Session, SessionEngine, SessionStore, StoreError, StoreKey};
use tokio::net::TcpListener;
use tokio::sync::{Barrier, Notify};

use super::{Backend, Spoil, shared};
use crate::harness::{
    Configure, builder, engine_on, get_with, max_age, new_session, post_with, routes, serve,
    store_key,
};
use crate::net;

/// An engine with the test secret over `store`, configured by `configure`.
fn engine_with(store: Arc<dyn SessionStore>, configure: Configure) -> SessionEngine {
    configure(builder().shared_store(store))
        .build()
        .expect("the test engine builds")
}

/// The data of the session a `Cookie` names, through `GET /all`.
async fn all(app: &Router, cookie: &str) -> Map<String, Value> {
    let reply = get_with(app, "/all", Some(cookie)).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    serde_json::from_str(&reply.body).expect("JSON data")
}

/// Holds a request between its read and its end (`GET /slow?write=BOOL`, which sets a key
/// when `write` is true) until the test lets it go.
#[derive(Clone, Default)]
struct Gate {
    read: Arc<Notify>,
    go: Arc<Notify>,
}

impl Gate {
    fn routes(&self) -> Router {
        let gate = self.clone();
        Router::new().route(
            "/slow",
            get(
                move |session: Session, Query(q): Query<HashMap<String, bool>>| {
                    let gate = gate.clone();
                    async move {
                        session.start().await?;
                        gate.read.notify_one();
                        gate.go.notified().await;
                        if q.get("write").copied().unwrap_or(false) {
                            session.set("late", "write")?;
                        }
                        Ok::<_, Error>("ok")
                    }
                },
            ),
        )
    }
}

/// Two requests on one session, each setting a different key after both have read it (a
/// barrier holds each until the other has started): with delta writes both keys survive; a
/// store that rewrote the whole data would keep only the last.
pub(crate) async fn concurrent_requests_changing_different_keys_both_survive<B: Backend>(
    backend: &B,
) {
    let barrier = Arc::new(Barrier::new(2));
    let gated = Router::new().route(
        "/gated-set",
        get(
            move |session: Session, Query(q): Query<HashMap<String, String>>| {
                let barrier = barrier.clone();
                async move {
                    session.start().await?;
                    barrier.wait().await;
                    session.set(q["key"].clone(), q["value"].clone())?;
                    Ok::<_, Error>("ok")
                }
            },
        ),
    );
    let app = serve(engine_on(shared(backend)), routes().merge(gated));
    let first = get_with(&app, "/set?key=base&value=0", None).await;
    assert_eq!(first.status, StatusCode::OK);
    let cookie = first.cookie();
    for round in 0..5 {
        let uri_a = format!("/gated-set?key=a{round}&value=A");
        let uri_b = format!("/gated-set?key=b{round}&value=B");
        let (a, b) = tokio::join!(
            get_with(&app, &uri_a, Some(&cookie)),
            get_with(&app, &uri_b, Some(&cookie)),
        );
        assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
    }
    let data = all(&app, &cookie).await;
    for round in 0..5 {
        assert_eq!(
            data.get(&format!("a{round}")),
            Some(&json!("A")),
            "{data:?}"
        );
        assert_eq!(
            data.get(&format!("b{round}")),
            Some(&json!("B")),
            "{data:?}"
        );
    }
    assert_eq!(data.get("base"), Some(&json!("0")));
}

/// A logout lands while a slow request on the same session is between its read and its end;
/// the slow request's write (or, when it changed nothing, its touch) finds the record gone:
/// it is dropped, the reply carries no `Set-Cookie` at all (R9 v2: a removal cookie could wipe
/// a newer session), and the session stays gone.
pub(crate) async fn r9_a_logout_during_a_slow_request_is_never_undone<B: Backend>(backend: &B) {
    let store = shared(backend);
    let gate = Gate::default();
    // Touch on every request, so that the slow request that changes nothing touches.
    let engine = engine_with(store.clone(), |b| b.touch_interval(Duration::ZERO));
    let app = serve(engine, routes().merge(gate.routes()));
    for write in [true, false] {
        let (cookie, id) = new_session(&app).await;
        let slow = tokio::spawn({
            let (app, cookie) = (app.clone(), cookie.clone());
            async move { get_with(&app, &format!("/slow?write={write}"), Some(&cookie)).await }
        });
        gate.read.notified().await;
        let logout = post_with(&app, "/logout", Some(&cookie)).await;
        assert!(logout.removes_cookie(), "{logout:?}");
        gate.go.notify_one();
        let reply = slow.await.expect("the slow request ran");
        assert_eq!(reply.status, StatusCode::OK, "write {write}");
        assert!(reply.set_cookies.is_empty(), "write {write}: {reply:?}");
        let key = StoreKey::from(store_key(&id));
        assert_eq!(store.read(&key).await.expect("read"), None, "write {write}");
        let after = get_with(&app, "/peek", Some(&cookie)).await;
        assert_eq!(after.body, "0", "the logged-out session never comes back");
    }
}

/// A slow request reads the session; meanwhile another sets a day-long duration. The slow
/// request's automatic touch (due on every request here) is then stale: it moves nothing and
/// sends no refresh cookie, and the day-long expiry stands (R17).
pub(crate) async fn r17_a_stale_touch_never_undoes_a_newer_expiry<B: Backend>(backend: &B) {
    const DAY_MS: u64 = 86_400_000;
    let store = shared(backend);
    let gate = Gate::default();
    let engine = engine_with(store.clone(), |b| b.touch_interval(Duration::ZERO));
    let app = serve(engine, routes().merge(gate.routes()));
    let (cookie, id) = new_session(&app).await;
    let slow = tokio::spawn({
        let (app, cookie) = (app.clone(), cookie.clone());
        async move { get_with(&app, "/slow?write=false", Some(&cookie)).await }
    });
    gate.read.notified().await;
    let longer = post_with(&app, &format!("/duration?ms={DAY_MS}"), Some(&cookie)).await;
    assert_eq!(longer.status, StatusCode::OK);
    assert!(max_age(longer.set_cookie()) > 86_000, "{longer:?}");
    gate.go.notify_one();
    let reply = slow.await.expect("the slow request ran");
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.set_cookies.is_empty(),
        "a stale touch refreshes nothing: {reply:?}"
    );
    let record = store
        .read(&StoreKey::from(store_key(&id)))
        .await
        .expect("read")
        .expect("the session lives");
    let left = record
        .expires_at
        .duration_since(SystemTime::now())
        .expect("in the future");
    assert!(
        left > Duration::from_secs(23 * 3600),
        "the day-long expiry stands: {left:?}"
    );
    // Leave no day-long session behind on a shared server.
    assert!(
        post_with(&app, "/logout", Some(&cookie))
            .await
            .removes_cookie()
    );
}

/// Two app instances, each with its own engine and its own client of one backend, served on
/// real loopback sockets: a session made on the first is read and changed on the second, and
/// a logout on the second is seen by the first.
pub(crate) async fn two_app_instances_share_sessions<B: Backend>(backend: &B) {
    let second: Arc<dyn SessionStore> = Arc::new(backend.second().await);
    let one = spawn_server(serve(engine_on(shared(backend)), routes())).await;
    let two = spawn_server(serve(engine_on(second), routes())).await;

    let made = net::http(one, Method::GET, "/visits", None).await;
    assert_eq!((made.status, made.body.as_str()), (StatusCode::OK, "1"));
    let cookie = made.cookie();
    let changed = net::http(two, Method::GET, "/visits", Some(&cookie)).await;
    assert_eq!(
        (changed.status, changed.body.as_str()),
        (StatusCode::OK, "2")
    );
    let seen = net::http(one, Method::GET, "/peek", Some(&cookie)).await;
    assert_eq!(
        seen.body, "2",
        "the first instance sees the second's change"
    );

    let logout = net::http(two, Method::POST, "/logout", Some(&cookie)).await;
    assert!(logout.removes_cookie(), "{logout:?}");
    let after = net::http(one, Method::GET, "/peek", Some(&cookie)).await;
    assert_eq!(after.body, "0", "the first instance sees the logout");
    let again = net::http(one, Method::GET, "/visits", Some(&cookie)).await;
    assert_eq!(again.body, "1", "a fresh session, not the logged-out one");
    assert_ne!(again.cookie_id(), made.cookie_id());
}

/// A request that sets 5,000 keys, one that swaps them for 5,000 others (10,000 keys in one
/// delta), and one that deletes those: any number of keys, through HTTP (SPEC section 4;
/// the v1 SQLite store failed with 500 past 500 keys).
pub(crate) async fn five_thousand_keys_set_then_deleted_over_http<B: Backend>(backend: &B) {
    const N: usize = 5_000;
    let many = Router::new().route(
        "/many",
        get(
            |session: Session, Query(q): Query<HashMap<String, String>>| async move {
                session.start().await?;
                for i in 0..N {
                    if let Some(prefix) = q.get("delete") {
                        session.delete(&format!("{prefix}{i}"))?;
                    }
                    if let Some(prefix) = q.get("set") {
                        session.set(format!("{prefix}{i}"), i)?;
                    }
                }
                Ok::<_, Error>("ok")
            },
        ),
    );
    let app = serve(engine_on(shared(backend)), routes().merge(many));
    let (cookie, _) = new_session(&app).await;
    let count = |data: &Map<String, Value>, prefix: char| {
        data.keys().filter(|k| k.starts_with(prefix)).count()
    };
    for (uri, k, n) in [
        ("/many?set=k", N, 0),
        ("/many?delete=k&set=n", 0, N),
        ("/many?delete=n", 0, 0),
    ] {
        let reply = get_with(&app, uri, Some(&cookie)).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.body);
        let data = all(&app, &cookie).await;
        assert_eq!(
            (count(&data, 'k'), count(&data, 'n')),
            (k, n),
            "after {uri}"
        );
        assert_eq!(data.get("visits"), Some(&json!(1)), "after {uri}");
    }
    assert_eq!(all(&app, &cookie).await.len(), 1);
}

/// A record the store cannot decode (spoiled behind its back) counts as absent: the request
/// gets a fresh session and answers 200, not 500, on every request; the record is left in
/// the store, untouched (R12 v2).
pub(crate) async fn r12_an_undecodable_record_is_a_fresh_session_and_stays<B: Spoil>(backend: &B) {
    let store = shared(backend);
    let app = serve(engine_on(store.clone()), routes());
    let (cookie, id) = new_session(&app).await;
    let key = store_key(&id);
    backend.spoil(&key).await;
    let read = store.read(&StoreKey::from(key.as_str())).await;
    assert!(matches!(read, Err(StoreError::Undecodable(_))), "{read:?}");

    for _ in 0..2 {
        let reply = get_with(&app, "/visits", Some(&cookie)).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "1"),
            "{reply:?}"
        );
        assert_ne!(reply.cookie_id(), id, "a fresh id, never the presented one");
        let fresh = get_with(&app, "/visits", Some(&reply.cookie())).await;
        assert_eq!(fresh.body, "2", "the fresh session works");
    }
    assert!(
        backend.still_spoiled(&key).await,
        "the record stays as it was"
    );
}

/// Serves `app` on a fresh loopback port; the server runs until the test's runtime ends.
async fn spawn_server(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("the server runs");
    });
    addr
}
