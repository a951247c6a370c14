//! In-process time per request of three session libraries side by side: session-engine (this
//! crate), tower-sessions 0.15 and axum_session 0.22, each with its in-memory store and its
//! defaults. Every scenario is a fresh axum `Router` with one `GET /` handler, finalized with
//! `.with_state(())`, driven as a tower `Service` on a current-thread runtime; the response body
//! is collected so that any lazy work happens.
//!
//! - `a_floor`: no session layer (the floor, one bench shared by all);
//! - `b_untouched`: layer present, the handler never touches the session (session-engine's takes
//!   `LazySession`: its `Session` extractor starts the session), no cookie sent;
//! - `c_new_visitor`: no cookie, the handler sets the counter;
//! - `d_read`: a returning visitor (cookie made once in setup), the handler reads the counter;
//! - `e_increment`: a returning visitor, the handler reads and increments the counter.
//!
//! The bench ids in each group are `session-engine`, `tower-sessions` and `axum_session`. After
//! the `d` and `e` benches of each library, one more request reads the counter back and the run
//! panics unless every `d` request read the value set up before and `e` wrote once per request.
//!
//! With the bench crate's `metrics` feature (its default) the library records its metrics, and
//! Prometheus' recorder is installed first, as an operator installs it (the observability
//! guide's buckets, upkeep every 5 s). Built with `--no-default-features`, the library has no
//! metrics code, and only session-engine runs, under the ids `session-engine-without-metrics`
//! and, for the floor of that build, `no-layer-without-metrics`: the cost of the metrics is the
//! difference between the two builds' overheads over their floors.
//!
//! Run with `cargo bench -p session-engine-bench --bench compare` (and again with
//! `--no-default-features`), then `python3 bench/scripts/compare-table.py` for a table of the
//! overhead over the floor.

// `criterion_group!` defines a public function that cannot carry a doc comment.
#![allow(missing_docs)]
// Without `metrics` only session-engine runs: the peers' subjects are compiled, not used.
#![cfg_attr(not(feature = "metrics"), allow(dead_code, unused_imports))]

use std::cell::Cell;
use std::hint::black_box;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::routing::get;
use axum_session::{SessionConfig, SessionNullPool};
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::BodyExt;
use session_engine_bench::{KEY, tower_sessions_peer};
use tokio::runtime::Runtime;
use tower::ServiceExt;

const SECRET: &str = "benchmark-secret-of-at-least-32-bytes";

/// The counter value the returning visitors of `d` and `e` start from: one increment in setup.
const SET_UP: u64 = 1;

/// The routers of one library. `reader` and `incrementer` share one store, which holds the
/// returning visitors of `d` and `e`; `untouched` and `new_visitor` have stores of their own.
struct Subject {
    name: &'static str,
    /// `b`: the handler never touches the session.
    untouched: Router,
    /// `c`: the handler increments the counter of a session that does not exist yet.
    new_visitor: Router,
    /// `d`: the handler reads the counter; the body is its value (0 if none).
    reader: Router,
    /// `e`: the handler reads and increments the counter; the body is the new value.
    incrementer: Router,
}

fn finish(router: Router) -> Router {
    router.with_state(())
}

// ---- session-engine ----

mod engine {
    use super::SECRET;
    use session_engine::SessionEngine;

    pub(super) fn engine() -> SessionEngine {
        SessionEngine::builder()
            .secret(SECRET)
            .build()
            .expect("valid session-engine options")
    }

    /// Not a default: a returning visitor's read touches the store on every request, as
    /// hyper-express-session does.
    pub(super) fn engine_touching_every_request() -> SessionEngine {
        SessionEngine::builder()
            .secret(SECRET)
            .touch_interval(std::time::Duration::ZERO)
            .build()
            .expect("valid session-engine options")
    }

    /// Not a default: the store is one of the app's own, written outside the crate, that
    /// answers at once (here by handing each call to a `MemoryStore`). It goes the same way
    /// as the built-in store, with no boxed future and no timer.
    pub(super) fn engine_on_a_users_store() -> SessionEngine {
        SessionEngine::builder()
            .secret(SECRET)
            .store(users_store::UsersStore::default())
            .build()
            .expect("valid session-engine options")
    }

    mod users_store {
        use std::time::SystemTime;

        use session_engine::{
            Changes, MemoryStore, Record, SessionStore, StoreFuture, StoreKey, Touched, WriteMode,
        };

        #[derive(Default)]
        pub(in super::super) struct UsersStore(MemoryStore);

        impl SessionStore for UsersStore {
            fn read(&self, key: &StoreKey) -> StoreFuture<Option<Record>> {
                self.0.read(key)
            }

            fn write(
                &self,
                key: &StoreKey,
                record: &Record,
                changes: &Changes,
                mode: WriteMode,
            ) -> StoreFuture<SystemTime> {
                self.0.write(key, record, changes, mode)
            }

            fn touch(
                &self,
                key: &StoreKey,
                from: SystemTime,
                to: SystemTime,
            ) -> StoreFuture<Touched> {
                self.0.touch(key, from, to)
            }

            fn destroy(&self, key: &StoreKey) -> StoreFuture<bool> {
                self.0.destroy(key)
            }

            fn cleanup(&self) -> StoreFuture<u64> {
                self.0.cleanup()
            }
        }
    }
}

fn session_engine_subject() -> Subject {
    session_engine_with("session-engine", engine::engine)
}

/// session-engine with `touch_interval(ZERO)`: shown beside the defaults, not compared.
fn session_engine_every_request_subject() -> Subject {
    session_engine_with(
        "session-engine-touch-every-request",
        engine::engine_touching_every_request,
    )
}

/// session-engine on a store of the app's own that answers at once: shown beside the
/// defaults, not compared.
fn session_engine_users_store_subject() -> Subject {
    session_engine_with(
        "session-engine-users-store",
        engine::engine_on_a_users_store,
    )
}

fn session_engine_with(
    name: &'static str,
    engine: fn() -> session_engine::SessionEngine,
) -> Subject {
    use session_engine::SessionLayer;
    let layered = |handler: axum::routing::MethodRouter, engine| {
        finish(
            Router::new()
                .route("/", handler)
                .layer(SessionLayer::new(engine)),
        )
    };
    // A clone of an engine shares its store.
    let returning = engine();
    Subject {
        name,
        untouched: layered(get(session_engine_bench::untouched), engine()),
        new_visitor: layered(get(session_engine_bench::increment), engine()),
        reader: layered(get(session_engine_bench::read), returning.clone()),
        incrementer: layered(get(session_engine_bench::increment), returning),
    }
}

// ---- tower-sessions ----

fn tower_sessions_subject() -> Subject {
    use tower_sessions::{MemoryStore, SessionManagerLayer};
    let layered = |handler: axum::routing::MethodRouter, store| {
        finish(
            Router::new()
                .route("/", handler)
                .layer(SessionManagerLayer::new(store)),
        )
    };
    // A clone of a `MemoryStore` shares its map.
    let returning = MemoryStore::default();
    Subject {
        name: "tower-sessions",
        untouched: layered(get(tower_sessions_peer::untouched), MemoryStore::default()),
        new_visitor: layered(get(tower_sessions_peer::increment), MemoryStore::default()),
        reader: layered(get(tower_sessions_peer::read), returning.clone()),
        incrementer: layered(get(tower_sessions_peer::increment), returning),
    }
}

// ---- axum_session ----

mod axum_session_peer {
    use super::KEY;
    use axum_session::SessionNullPool;

    type Session = axum_session::Session<SessionNullPool>;

    pub(super) async fn untouched(_session: Session) -> &'static str {
        "ok"
    }

    pub(super) async fn read(session: Session) -> String {
        session.get::<u64>(KEY).unwrap_or(0).to_string()
    }

    pub(super) async fn increment(session: Session) -> String {
        let visits = session.get::<u64>(KEY).unwrap_or(0) + 1;
        session.set(KEY, visits);
        visits.to_string()
    }
}

/// Its layer spawns a background task when it wraps a service, so this runs on the runtime.
async fn axum_session_subject() -> Subject {
    use axum_session::{SessionLayer, SessionStore};
    async fn store() -> SessionStore<SessionNullPool> {
        SessionStore::<SessionNullPool>::new(None, SessionConfig::default())
            .await
            .expect("an axum_session memory store")
    }
    let layered = |handler: axum::routing::MethodRouter, store| {
        finish(
            Router::new()
                .route("/", handler)
                .layer(SessionLayer::new(store)),
        )
    };
    // A clone of a `SessionStore` shares its map.
    let returning = store().await;
    Subject {
        name: "axum_session",
        untouched: layered(get(axum_session_peer::untouched), store().await),
        new_visitor: layered(get(axum_session_peer::increment), store().await),
        reader: layered(get(axum_session_peer::read), returning.clone()),
        incrementer: layered(get(axum_session_peer::increment), returning),
    }
}

// ---- requests ----

fn request(cookie: Option<&HeaderValue>) -> Request<Body> {
    let mut request = Request::get("/")
        .body(Body::empty())
        .expect("valid request");
    if let Some(cookie) = cookie {
        request.headers_mut().insert(COOKIE, cookie.clone());
    }
    request
}

/// One request through `router`: the status, the headers and the collected body.
async fn send(router: &Router, cookie: Option<&HeaderValue>) -> (StatusCode, HeaderMap, Bytes) {
    let response = router
        .clone()
        .oneshot(request(cookie))
        .await
        .expect("infallible");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("a body").to_bytes();
    (parts.status, parts.headers, body)
}

/// The `Cookie` header that a response's `Set-Cookie` headers ask a browser to send: the
/// `name=value` pair of each cookie set, leaving out the ones it asks to remove (`Max-Age=0`,
/// as axum_session does for its unused `store` cookie).
fn cookie_of(name: &str, headers: &HeaderMap) -> HeaderValue {
    let mut pairs = Vec::new();
    for set_cookie in headers.get_all(SET_COOKIE) {
        let set_cookie = set_cookie.to_str().expect("an ASCII Set-Cookie");
        let mut parts = set_cookie.split(';').map(str::trim);
        let pair = parts.next().expect("a name=value pair");
        let removal = parts.any(|attribute| attribute.eq_ignore_ascii_case("Max-Age=0"));
        if !removal && !pair.ends_with('=') {
            pairs.push(pair.to_owned());
        }
    }
    assert!(
        !pairs.is_empty(),
        "{name}: the setup response set no session cookie (Set-Cookie: {:?})",
        headers.get_all(SET_COOKIE).iter().collect::<Vec<_>>()
    );
    HeaderValue::from_str(&pairs.join("; ")).expect("a valid Cookie header")
}

fn counter(name: &str, status: StatusCode, body: &[u8]) -> u64 {
    assert_eq!(status, StatusCode::OK, "{name}: the counter request failed");
    std::str::from_utf8(body)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("{name}: the body {body:?} is not a counter"))
}

/// A returning visitor: a session whose counter is `SET_UP`, made by one increment.
fn returning_visitor(runtime: &Runtime, subject: &Subject) -> HeaderValue {
    let (status, headers, body) = runtime.block_on(send(&subject.incrementer, None));
    assert_eq!(
        counter(subject.name, status, &body),
        SET_UP,
        "{}: the setup increment",
        subject.name
    );
    cookie_of(subject.name, &headers)
}

/// Whether a response carries a `Set-Cookie`, for the behaviour line printed before the run.
fn sets_cookie(headers: &HeaderMap) -> &'static str {
    if headers.contains_key(SET_COOKIE) {
        "yes"
    } else {
        "no"
    }
}

/// Prints which scenarios answer with a `Set-Cookie`, probing with throwaway sessions so that
/// the benchmarked ones are left as set up.
fn describe(runtime: &Runtime, subject: &Subject) {
    let (_, untouched, _) = runtime.block_on(send(&subject.untouched, None));
    let (_, new_visitor, _) = runtime.block_on(send(&subject.new_visitor, None));
    let probe = returning_visitor(runtime, subject);
    let (_, read, _) = runtime.block_on(send(&subject.reader, Some(&probe)));
    let (_, increment, _) = runtime.block_on(send(&subject.incrementer, Some(&probe)));
    println!(
        "behaviour {}: Set-Cookie on b {}, c {}, d {}, e {}",
        subject.name,
        sets_cookie(&untouched),
        sets_cookie(&new_visitor),
        sets_cookie(&read),
        sets_cookie(&increment),
    );
}

type Group<'a> = BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// Benchmarks `router` with an optional cookie, collecting each response's body.
fn bench_requests(
    group: &mut Group<'_>,
    runtime: &Runtime,
    id: &str,
    router: &Router,
    cookie: Option<&HeaderValue>,
) {
    group.bench_function(id, |b| {
        b.to_async(runtime)
            .iter(|| async { black_box(send(router, cookie).await) })
    });
}

/// The floor's bench id in this build.
#[cfg(feature = "metrics")]
const FLOOR: &str = "no-layer";
#[cfg(not(feature = "metrics"))]
const FLOOR: &str = "no-layer-without-metrics";

/// Every library, the engine's metrics going to Prometheus' recorder, installed here with its
/// upkeep on a thread of its own (every 5 s, the exporter's own interval), as a server that
/// exports them runs it.
#[cfg(feature = "metrics")]
fn subjects(runtime: &Runtime) -> Vec<Subject> {
    let handle = session_engine_bench::install_prometheus().expect("Prometheus' recorder");
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(5));
            handle.run_upkeep();
        }
    });
    vec![
        session_engine_subject(),
        session_engine_every_request_subject(),
        session_engine_users_store_subject(),
        tower_sessions_subject(),
        runtime.block_on(axum_session_subject()),
    ]
}

/// session-engine alone, built without its metrics code, under a name of its own.
#[cfg(not(feature = "metrics"))]
fn subjects(_runtime: &Runtime) -> Vec<Subject> {
    vec![session_engine_with(
        "session-engine-without-metrics",
        engine::engine,
    )]
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");

    let subjects = subjects(&runtime);
    for subject in &subjects {
        describe(&runtime, subject);
    }

    let floor = finish(Router::new().route("/", get(|| async { "ok" })));
    let mut group = c.benchmark_group("a_floor");
    bench_requests(&mut group, &runtime, FLOOR, &floor, None);
    group.finish();

    let mut group = c.benchmark_group("b_untouched");
    for subject in &subjects {
        bench_requests(&mut group, &runtime, subject.name, &subject.untouched, None);
    }
    group.finish();

    let mut group = c.benchmark_group("c_new_visitor");
    for subject in &subjects {
        bench_requests(
            &mut group,
            &runtime,
            subject.name,
            &subject.new_visitor,
            None,
        );
    }
    group.finish();

    // d: every request must read the set-up counter; the ones that did not are counted.
    let mut reads = Vec::new();
    let mut group = c.benchmark_group("d_read");
    for subject in &subjects {
        let cookie = returning_visitor(&runtime, subject);
        let requests = Cell::new(0u64);
        let wrong = Cell::new(0u64);
        let expected = SET_UP.to_string();
        group.bench_function(subject.name, |b| {
            b.to_async(&runtime).iter(|| async {
                requests.set(requests.get() + 1);
                let (status, headers, body) = send(&subject.reader, Some(&cookie)).await;
                if status != StatusCode::OK || body != expected.as_bytes() {
                    wrong.set(wrong.get() + 1);
                }
                black_box((headers, body))
            })
        });
        let (status, _, body) = runtime.block_on(send(&subject.reader, Some(&cookie)));
        let after = counter(subject.name, status, &body);
        assert_eq!(
            wrong.get(),
            0,
            "{}: {} of {} d requests did not read the set-up counter {SET_UP}",
            subject.name,
            wrong.get(),
            requests.get()
        );
        assert_eq!(
            after, SET_UP,
            "{}: after d the counter must still be the set-up value",
            subject.name
        );
        reads.push((requests.get(), after));
    }
    group.finish();

    // e: the counter must go up once per request.
    let mut group = c.benchmark_group("e_increment");
    for (subject, (d_requests, d_read)) in subjects.iter().zip(reads) {
        let cookie = returning_visitor(&runtime, subject);
        let iterations = Cell::new(0u64);
        group.bench_function(subject.name, |b| {
            b.to_async(&runtime).iter(|| {
                iterations.set(iterations.get() + 1);
                let router = &subject.incrementer;
                let cookie = &cookie;
                async move { black_box(send(router, Some(cookie)).await) }
            })
        });
        let (status, _, body) = runtime.block_on(send(&subject.reader, Some(&cookie)));
        let after = counter(subject.name, status, &body);
        assert_eq!(
            after,
            SET_UP + iterations.get(),
            "{}: after {} e requests the counter must be {SET_UP} + {}",
            subject.name,
            iterations.get(),
            iterations.get()
        );
        println!(
            "check {}: d read {d_read} ({d_requests} reads, all saw {SET_UP}), \
             e wrote {} times (counter {after})",
            subject.name,
            iterations.get()
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = bench
}
criterion_main!(benches);
