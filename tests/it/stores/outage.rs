//! An outage of a store's server, with a server of the test's own that it stops and starts,
//! and the small tools that need.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use session_engine::SessionStore;

use crate::harness::{builder, get_with, new_session, routes, serve};

/// The store's server goes down (`stop`) and comes back (`start`) under a running app:
/// meanwhile routes that never start a session answer 200 (R1) and routes that do answer an
/// opaque 503 (the store is unavailable) with no `Set-Cookie` (R12), within the engine's
/// `store_timeout` (R15); once the server is back, the same app serves sessions again.
pub(crate) async fn outage_and_recovery(
    store: Arc<dyn SessionStore>,
    stop: impl Future<Output = ()>,
    start: impl Future<Output = ()>,
) {
    const TIMEOUT: Duration = Duration::from_secs(2);
    let engine = builder()
        .shared_store(store)
        .store_timeout(TIMEOUT)
        .build()
        .expect("the test engine builds");
    let app = serve(engine, routes());
    let (cookie, _) = new_session(&app).await;

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
        let started = Instant::now();
        let reply = get_with(&app, "/visits", cookie).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "/visits (cookie: {}) while the store is down: {reply:?}",
            cookie.is_some()
        );
        assert!(started.elapsed() < TIMEOUT * 2, "{:?}", started.elapsed());
        assert!(reply.set_cookies.is_empty(), "{reply:?}");
        let body = reply.body.to_ascii_lowercase();
        assert!(
            !body.contains("redis") && !body.contains("sql") && !body.contains("127.0.0.1"),
            "the error is opaque: {body}"
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
    let cookie = reply.cookie();
    for _ in 0..5 {
        let steady = get_with(&app, "/visits", Some(&cookie)).await;
        assert_eq!(steady.status, StatusCode::OK, "and stays up: {steady:?}");
    }
}

/// Runs `program` with `args`, panicking with its output if it fails; returns its stdout.
#[cfg(feature = "postgres")]
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
#[cfg(any(feature = "redis", feature = "near-cache"))]
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

/// A free loopback port (bound, then released for a server to take).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}
