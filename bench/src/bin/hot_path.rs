//! One scenario of session-engine in a loop, in process, for a profiler: `valgrind
//! --tool=callgrind` counts its instructions (repeatable, whatever else the machine does),
//! `perf record` samples it.
//!
//! ```text
//! cargo build --release -p session-engine-bench --bin hot_path
//! valgrind --tool=callgrind target/release/hot_path e 20000
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='hot_path::measure*' \
//!     target/release/hot_path e 20000     # the requests alone
//! ```
//!
//! Scenarios, as in `benches/compare.rs`: `a` (no layer: the floor), `b` (layer, session untouched), `c` (a new visitor
//! sets a counter), `d` (a returning visitor reads it), `e` (a returning visitor increments
//! it). The same letters after `t` (`tb` to `te`) run tower-sessions 0.15 on its `MemoryStore`,
//! with its defaults, for a count to set beside ours. Prints the mean time per request; the
//! runtime is current-thread.
//!
//! With the bench crate's `metrics` feature (its default), Prometheus' recorder is installed
//! first, as an operator installs it, and its upkeep (which moves the histogram's samples into
//! its buckets) runs once after the loop, so that a count includes it and stays the same from
//! run to run. Built with `--no-default-features`, the library has no metrics code. The
//! requests run in `measure`, never inlined, for callgrind to count alone: the start-up's count
//! is not the same from run to run with the recorder installed (its clock calibrates itself
//! against the time of day for a while).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderValue, Request};
use axum::routing::get;
use http_body_util::BodyExt as _;
use session_engine::{SessionEngine, SessionLayer};
use session_engine_bench::{increment, read, tower_sessions_peer, untouched};
use tokio::runtime::Runtime;
use tower::ServiceExt as _;
use tower_sessions::{MemoryStore, SessionManagerLayer};

const USAGE: &str = "usage: hot_path (a|b|c|d|e|tb|tc|td|te) [REQUESTS]";

async fn send(app: &Router, uri: &str, cookie: Option<&HeaderValue>) -> axum::http::Response<Body> {
    let mut request = Request::get(uri).body(Body::empty()).expect("a request");
    if let Some(cookie) = cookie {
        request.headers_mut().insert(COOKIE, cookie.clone());
    }
    app.clone().oneshot(request).await.expect("infallible")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(scenario), requests) = (args.first().map(String::as_str), args.get(1)) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let Ok(requests) = requests.map_or(Ok(10_000), |n| n.parse::<u32>()) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    #[cfg(feature = "metrics")]
    let metrics = match session_engine_bench::install_prometheus() {
        Ok(handle) => handle,
        Err(error) => {
            eprintln!("hot_path: {error}");
            return ExitCode::FAILURE;
        }
    };
    let engine = SessionEngine::builder()
        .secret("hot-path-secret-hot-path-secret-0123456789")
        .build()
        .expect("valid options");
    let app = match scenario {
        "a" => Router::new().route("/", get(|| async { "ok" })),
        "b" | "c" | "d" | "e" => {
            let handler = match scenario {
                "b" => get(untouched),
                "d" => get(read),
                _ => get(increment),
            };
            Router::new()
                .route("/", handler)
                .route("/setup", get(increment))
                .layer(SessionLayer::new(engine))
        }
        "tb" | "tc" | "td" | "te" => {
            let handler = match scenario {
                "tb" => get(tower_sessions_peer::untouched),
                "td" => get(tower_sessions_peer::read),
                _ => get(tower_sessions_peer::increment),
            };
            Router::new()
                .route("/", handler)
                .route("/setup", get(tower_sessions_peer::increment))
                .layer(SessionManagerLayer::new(MemoryStore::default()))
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    }
    .with_state(());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    // A returning visitor's cookie, from a first request through a writing route.
    let first = runtime.block_on(send(&app, "/setup", None));
    let cookie = first.headers().get(SET_COOKIE).map(|set| {
        let pair = set
            .to_str()
            .expect("ASCII")
            .split(';')
            .next()
            .expect("a pair");
        HeaderValue::from_str(pair).expect("a cookie")
    });
    let cookie = if scenario.ends_with('c') {
        None
    } else {
        cookie
    };
    #[cfg(feature = "metrics")]
    let (after, built) = (|| metrics.run_upkeep(), "metrics into Prometheus' recorder");
    #[cfg(not(feature = "metrics"))]
    let (after, built) = (|| (), "built without metrics");
    let elapsed = measure(&runtime, &app, cookie.as_ref(), requests, after);
    println!(
        "{scenario}: {} ns per request over {requests} requests ({built})",
        elapsed.as_nanos() / u128::from(requests)
    );
    ExitCode::SUCCESS
}

/// Sends `requests` requests through `app`, then calls `after`; how long it all took.
#[inline(never)]
fn measure(
    runtime: &Runtime,
    app: &Router,
    cookie: Option<&HeaderValue>,
    requests: u32,
    after: impl FnOnce(),
) -> Duration {
    let started = Instant::now();
    runtime.block_on(async {
        for _ in 0..requests {
            let response = send(app, "/", cookie).await;
            let _ = response.into_body().collect().await;
        }
    });
    after();
    started.elapsed()
}
