//! In-process time per request of a session layer, driving an axum `Router` as a tower
//! `Service` on a current-thread runtime. Scenarios:
//!
//! - a: no session layer (the floor);
//! - b: layer present, the handler never touches the session;
//! - c: a new visitor, the handler sets a counter;
//! - d: a returning visitor, the handler reads the counter (the demo's `/peek`);
//! - e: a returning visitor, the handler reads and increments it (the demo's `/visits`).
//!
//! Run with `cargo bench --bench overhead`.

// `criterion_group!` defines a public function that cannot carry a doc comment.
#![allow(missing_docs)]

use std::hint::black_box;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderValue, Request, Response};
use session_engine::{Session, SessionEngine, SessionLayer};
use tower::ServiceExt;

const SECRET: &str = "benchmark-secret-of-at-least-32-bytes";

async fn read_counter(session: Session) -> Result<String, session_engine::Error> {
    session.start().await?;
    Ok(session.get::<u64>("visits")?.unwrap_or(0).to_string())
}

async fn increment_counter(session: Session) -> Result<String, session_engine::Error> {
    session.start().await?;
    let visits = session.get::<u64>("visits")?.unwrap_or(0) + 1;
    session.set("visits", visits)?;
    Ok(visits.to_string())
}

fn engine() -> SessionEngine {
    SessionEngine::builder()
        .secret(SECRET)
        .build()
        .expect("valid options")
}

fn request(cookie: Option<&HeaderValue>) -> Request<Body> {
    let mut request = Request::get("/")
        .body(Body::empty())
        .expect("valid request");
    if let Some(cookie) = cookie {
        request.headers_mut().insert(COOKIE, cookie.clone());
    }
    request
}

/// The `Cookie` header that a response's `Set-Cookie` asks for.
fn cookie_of(response: &Response<Body>) -> HeaderValue {
    let set_cookie = response.headers()[SET_COOKIE]
        .to_str()
        .expect("ASCII cookie");
    let pair = set_cookie.split(';').next().expect("a name=value pair");
    HeaderValue::from_str(pair).expect("a valid header")
}

fn router(handler: Option<axum::routing::MethodRouter>) -> Router {
    match handler {
        None => Router::new()
            .route("/", get(|| async { "ok" }))
            .with_state(()),
        Some(handler) => Router::new()
            .route("/", handler)
            .layer(SessionLayer::new(engine()))
            .with_state(()),
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut group = c.benchmark_group("session-engine");

    let floor = router(None);
    group.bench_function("a_floor", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(floor.clone().oneshot(request(None)).await) })
    });

    let untouched = router(Some(get(|_session: Session| async { "ok" })));
    group.bench_function("b_untouched", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(untouched.clone().oneshot(request(None)).await) })
    });

    let counter = router(Some(get(increment_counter)));
    group.bench_function("c_new_visitor_sets", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(counter.clone().oneshot(request(None)).await) })
    });

    // One returning visitor: a session made once, then read or incremented on every request.
    let reader = Router::new()
        .route("/", get(read_counter))
        .route("/inc", get(increment_counter));
    let shared = SessionLayer::new(engine());
    let reader = reader.layer(shared).with_state(());
    let made = runtime
        .block_on(
            reader
                .clone()
                .oneshot(Request::get("/inc").body(Body::empty()).unwrap()),
        )
        .expect("infallible");
    let reader_cookie = cookie_of(&made);
    group.bench_function("d_returning_reads (/peek)", |b| {
        b.to_async(&runtime).iter(|| async {
            black_box(reader.clone().oneshot(request(Some(&reader_cookie))).await)
        })
    });
    let body = runtime.block_on(async {
        let response = reader
            .clone()
            .oneshot(request(Some(&reader_cookie)))
            .await
            .unwrap();
        axum::body::to_bytes(response.into_body(), 64)
            .await
            .unwrap()
    });
    assert_eq!(&body[..], b"1", "d must read the counter its session holds");

    let mut incremented = Router::new().route("/", get(increment_counter));
    incremented = incremented
        .layer(SessionLayer::new(engine()))
        .with_state(());
    let made = runtime
        .block_on(incremented.clone().oneshot(request(None)))
        .expect("infallible");
    let inc_cookie = cookie_of(&made);
    let mut iterations = 0u64;
    group.bench_function("e_returning_increments (/visits)", |b| {
        b.to_async(&runtime).iter(|| {
            iterations += 1;
            let router = incremented.clone();
            let cookie = inc_cookie.clone();
            async move { black_box(router.oneshot(request(Some(&cookie))).await) }
        })
    });
    // e must really write: the counter went up once per request.
    let body = runtime.block_on(async {
        let response = incremented
            .clone()
            .oneshot(request(Some(&inc_cookie)))
            .await
            .unwrap();
        axum::body::to_bytes(response.into_body(), 64)
            .await
            .unwrap()
    });
    let count: u64 = std::str::from_utf8(&body).unwrap().parse().unwrap();
    assert_eq!(
        count,
        iterations + 2,
        "e must write the counter on every request"
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
