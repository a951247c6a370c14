//! Checks that every bundled store runs against its real server: two requests that change
//! different keys of one session at once, a destroy racing a write, two app instances sharing
//! one store, and an outage of the server. Also a bare HTTP/1.1 client for apps served on real
//! loopback sockets.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::Query;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::routing::get;
use serde_json::{Map, Value, json};
use session_engine::{Changes, Error, Record, Session, SessionEngine, SessionStore, StoreError};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Barrier, Notify};

use super::{Reply, app, builder, get_with, routes, serve, store_key};

/// An engine with the test secret over `store`.
pub(crate) fn engine_on(store: Arc<dyn SessionStore>) -> SessionEngine {
    builder()
        .shared_store(store)
        .build()
        .expect("the test engine builds")
}

/// Two requests on one session, each setting a different key after both have read the
/// session (a barrier holds each until the other has started): with delta writes both keys
/// survive; a store that rewrote the whole data would keep only the last.
pub(crate) async fn different_keys_both_survive(store: Arc<dyn SessionStore>) {
    let barrier = Arc::new(Barrier::new(2));
    let gated = Router::new().route(
        "/gated-set",
        get(
            move |session: Session,
                  Query(query): Query<std::collections::HashMap<String, String>>| {
                let barrier = barrier.clone();
                async move {
                    session.start().await?;
                    barrier.wait().await;
                    session.set(query["key"].clone(), query["value"].clone())?;
                    Ok::<_, Error>("ok")
                }
            },
        ),
    );
    let app = serve(engine_on(store), routes().merge(gated));
    let first = get_with(&app, "/set?key=base&value=0", None).await;
    assert_eq!(first.status, StatusCode::OK);
    let cookie = first.cookie();
    for round in 0..5 {
        let (uri_a, uri_b) = (
            format!("/gated-set?key=a{round}&value=A"),
            format!("/gated-set?key=b{round}&value=B"),
        );
        let (a, b) = tokio::join!(
            get_with(&app, &uri_a, Some(&cookie)),
            get_with(&app, &uri_b, Some(&cookie)),
        );
        assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
    }
    let all = get_with(&app, "/all", Some(&cookie)).await;
    let data: Map<String, Value> = serde_json::from_str(&all.body).expect("JSON data");
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

/// A destroy racing an update or a touch of the same record, many times over: whichever runs
/// first, the record is gone at the end (R9). Then the same over HTTP: a logout lands while a
/// slow request on the same session is between its read and its write; the slow request's
/// write is dropped, its reply clears the cookie, and the session stays gone.
pub(crate) async fn destroy_wins_over_a_racing_write(store: Arc<dyn SessionStore>) {
    let now = SystemTime::now();
    let expires = now + Duration::from_secs(600);
    for round in 0..40 {
        let key = session_engine::store::random_id().expect("an id");
        let mut data = Map::new();
        data.insert("n".into(), json!(round));
        let record = Record::new(data.clone(), now, expires);
        store
            .write(&key, &record, &Changes::replace_all(), false)
            .await
            .expect("insert");
        data.insert("m".into(), json!("late"));
        let update = Record::new(data, now, expires + Duration::from_secs(60));
        // Each hook in its own task, started in a different order each round.
        let mut tasks = Vec::new();
        for hook in (0..3).map(|i| (i + round) % 3) {
            let (store, key, update) = (store.clone(), key.clone(), update.clone());
            tasks.push(tokio::spawn(async move {
                let changes = Changes::new().with_set("m");
                let result = match hook {
                    0 => store.write(&key, &update, &changes, true).await,
                    1 => store.touch(&key, expires + Duration::from_secs(120)).await,
                    _ => store.destroy(&key).await,
                };
                (hook, result)
            }));
        }
        for task in tasks {
            let (hook, result) = task.await.expect("the hook ran");
            assert!(
                matches!(result, Ok(()) | Err(StoreError::Gone)) && (hook != 2 || result.is_ok()),
                "round {round}, hook {hook}: {result:?}"
            );
        }
        assert_eq!(store.read(&key).await.expect("read"), None, "round {round}");
    }

    let read = Arc::new(Notify::new());
    let logged_out = Arc::new(Notify::new());
    let (read_tx, logged_out_rx) = (read.clone(), logged_out.clone());
    let slow = Router::new().route(
        "/slow-set",
        get(move |session: Session| {
            let (read, logged_out) = (read_tx.clone(), logged_out_rx.clone());
            async move {
                session.start().await?;
                read.notify_one();
                logged_out.notified().await;
                session.set("late", "write")?;
                Ok::<_, Error>("ok")
            }
        }),
    );
    let app = serve(engine_on(store.clone()), routes().merge(slow));
    let (cookie, id) = super::new_session(&app).await;
    let slow_request = tokio::spawn({
        let (app, cookie) = (app.clone(), cookie.clone());
        async move { get_with(&app, "/slow-set", Some(&cookie)).await }
    });
    read.notified().await;
    let logout = super::post_with(&app, "/logout", Some(&cookie)).await;
    assert_eq!(logout.status, StatusCode::OK);
    logged_out.notify_one();
    let slow_reply = slow_request.await.expect("the slow request ran");
    assert_eq!(slow_reply.status, StatusCode::OK);
    assert!(
        slow_reply.set_cookie().contains("Max-Age=0"),
        "the slow request clears the cookie: {:?}",
        slow_reply.set_cookies
    );
    assert_eq!(store.read(&store_key(&id)).await.expect("read"), None);
    let after = get_with(&app, "/peek", Some(&cookie)).await;
    assert_eq!(after.body, "0", "the logged-out session never comes back");
}

/// Two app instances, each with its own engine and its own client of one shared backend
/// (`first` and `second`), served on real loopback sockets: a session made on the first is
/// read and changed on the second, and a logout on the second is seen by the first.
pub(crate) async fn two_instances_share_sessions(
    first: Arc<dyn SessionStore>,
    second: Arc<dyn SessionStore>,
) {
    let one = spawn_server(app(engine_on(first))).await;
    let two = spawn_server(app(engine_on(second))).await;

    let made = http(one, Method::GET, "/visits", None).await;
    assert_eq!((made.status, made.body.as_str()), (StatusCode::OK, "1"));
    let cookie = made.cookie();
    let changed = http(two, Method::GET, "/visits", Some(&cookie)).await;
    assert_eq!(
        (changed.status, changed.body.as_str()),
        (StatusCode::OK, "2")
    );
    let seen = http(one, Method::GET, "/peek", Some(&cookie)).await;
    assert_eq!(
        seen.body, "2",
        "the first instance sees the second's change"
    );

    let logout = http(two, Method::POST, "/logout", Some(&cookie)).await;
    assert_eq!(logout.status, StatusCode::OK);
    assert!(logout.set_cookie().contains("Max-Age=0"));
    let after = http(one, Method::GET, "/peek", Some(&cookie)).await;
    assert_eq!(after.body, "0", "the first instance sees the logout");
    let again = http(one, Method::GET, "/visits", Some(&cookie)).await;
    assert_eq!(again.body, "1", "a fresh session, not the logged-out one");
    assert_ne!(again.cookie_id(), made.cookie_id());
}

/// The store's server goes down (`stop`) and comes back (`start`) under a running app:
/// meanwhile routes that never start a session answer 200 (R1) and routes that do answer an
/// opaque 503 (the store is unavailable) with no `Set-Cookie` (R12); once the server is back,
/// the same app serves sessions again.
pub(crate) async fn outage_and_recovery<Stop, Start>(
    store: Arc<dyn SessionStore>,
    stop: Stop,
    start: Start,
) where
    Stop: Future<Output = ()>,
    Start: Future<Output = ()>,
{
    let app = app(engine_on(store));
    let (cookie, _) = super::new_session(&app).await;

    stop.await;
    for uri in ["/health", "/untouched"] {
        let reply = get_with(&app, uri, Some(&cookie)).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{uri} while the store is down"
        );
        assert!(reply.set_cookies.is_empty());
    }
    for cookie in [None, Some(cookie.as_str())] {
        let reply = get_with(&app, "/visits", cookie).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "/visits (cookie: {}) while the store is down: {reply:?}",
            cookie.is_some()
        );
        assert!(reply.set_cookies.is_empty(), "{reply:?}");
        assert!(
            !reply.body.to_ascii_lowercase().contains("redis")
                && !reply.body.to_ascii_lowercase().contains("sql")
                && !reply.body.contains("127.0.0.1"),
            "the error is opaque: {}",
            reply.body
        );
    }

    start.await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let reply = loop {
        let reply = get_with(&app, "/visits", Some(&cookie)).await;
        if reply.status == StatusCode::OK || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(reply.status, StatusCode::OK, "the app recovers: {reply:?}");
    assert_eq!(reply.set_cookies.len(), 1);
    for _ in 0..5 {
        let steady = get_with(&app, "/visits", Some(&reply.cookie())).await;
        assert_eq!(steady.status, StatusCode::OK, "and stays up: {steady:?}");
    }
}

/// Serves `app` on a fresh loopback port; the server runs until the test's runtime ends.
pub(crate) async fn spawn_server(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("the server runs");
    });
    addr
}

/// One HTTP/1.1 request on a new connection (`Connection: close`), read to the end.
pub(crate) async fn http(
    addr: SocketAddr,
    method: Method,
    path: &str,
    cookie: Option<&str>,
) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("the server accepts");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    if let Some(cookie) = cookie {
        request.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("the request is sent");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("the server answers within 30 s")
        .expect("the reply is readable");
    let text = String::from_utf8(raw).expect("a UTF-8 reply");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("a status line");
    let code: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').expect("a header line");
        headers.append(
            HeaderName::try_from(name.trim()).expect("a header name"),
            HeaderValue::try_from(value.trim()).expect("a header value"),
        );
    }
    let set_cookies = headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().expect("Set-Cookie is ASCII").to_owned())
        .collect();
    Reply {
        status: StatusCode::from_u16(code).expect("a valid status"),
        body: body.to_owned(),
        set_cookies,
        headers,
    }
}

/// Keys that need escaping in a JSON path or a hash field (dots, quotes, backslashes, brackets,
/// the empty key, non-ASCII) are set, kept and removed by delta writes like any other key.
pub(crate) async fn odd_keys_survive_delta_writes(store: Arc<dyn SessionStore>) {
    let keys = [
        "a.b",
        "a\"b",
        "back\\slash",
        "$",
        "[0]",
        "$.x",
        "",
        "ключ 🗝",
        "tab\there",
        " c",
        ".e",
    ];
    let key = session_engine::store::random_id().expect("an id");
    let now = SystemTime::now();
    let expires = now + Duration::from_secs(600);
    let mut data = Map::new();
    data.insert("kept".into(), json!(1));
    store
        .write(
            &key,
            &Record::new(data.clone(), now, expires),
            &Changes::replace_all(),
            false,
        )
        .await
        .expect("insert");

    let mut changes = Changes::new();
    for (i, odd) in keys.iter().enumerate() {
        data.insert(
            (*odd).into(),
            json!({"i": i, "nested": {"null": null}, "list": [odd]}),
        );
        changes = changes.with_set(*odd);
    }
    let update = |data: Map<String, Value>, changes: Changes| {
        let (store, key) = (store.clone(), key.clone());
        async move {
            let record = Record::new(data.clone(), now, expires);
            store
                .write(&key, &record, &changes, true)
                .await
                .expect("a delta with odd keys");
            let stored = store.read(&key).await.expect("read").expect("live");
            assert_eq!(stored.data, data);
        }
    };
    update(data.clone(), changes).await;

    let mut changes = Changes::new();
    for odd in keys.iter().step_by(2) {
        data.remove(*odd);
        changes = changes.with_deleted(*odd);
    }
    update(data, changes).await;
    store.destroy(&key).await.expect("destroy");
}

/// 25 expired records and 5 live ones; `one_batch` (a store's `cleanup_one_batch` with a
/// batch of 10) removes 10 in one statement, and `cleanup` the 15 left, never a live one.
pub(crate) async fn cleanup_works_in_batches<F>(store: &dyn SessionStore, one_batch: F)
where
    F: Future<Output = Result<u64, StoreError>>,
{
    let now = SystemTime::now();
    let past = now - Duration::from_secs(5);
    let future = now + Duration::from_secs(60);
    let prefix = session_engine::store::random_id().expect("an id");
    for (name, count, created, expires) in [("old", 25, past, past), ("live", 5, now, future)] {
        for i in 0..count {
            let record = Record::new(Map::new(), created, expires);
            store
                .write(
                    &format!("{prefix}{name}{i}"),
                    &record,
                    &Changes::replace_all(),
                    false,
                )
                .await
                .expect("insert");
        }
    }
    assert_eq!(one_batch.await.expect("one batch"), 10);
    assert_eq!(store.cleanup().await.expect("cleanup"), 15);
    assert_eq!(store.cleanup().await.expect("cleanup"), 0);
    for i in 0..5 {
        let key = format!("{prefix}live{i}");
        assert!(store.read(&key).await.expect("read").is_some());
    }
}

/// A free loopback port (bound, then released for a server to take).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Runs `program` with `args`, panicking with its output if it fails.
pub(crate) fn run(program: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} could not start: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Waits up to 20 s for `ready` to hold.
pub(crate) async fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
