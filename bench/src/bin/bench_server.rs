//! An HTTP server for side-by-side load tests of session-engine and its peers
//! (tower-sessions, axum_session), driven by `scripts/bench` with `wrk`.
//!
//! ```text
//! cargo run --release -p session-engine-bench --bin bench_server -- LIB STORE [PORT]
//! ```
//!
//! - `LIB`: `engine` (session-engine), `tower` (tower-sessions), `axum_session`, or `none` (no
//!   session layer at all: the floor);
//! - `STORE`: `memory`, or `redis` (for `engine` and `tower` only: session-engine's
//!   `RedisStore` with the key prefix `bench:`, or tower-sessions 0.14 with
//!   tower-sessions-redis-store, whose keys have no prefix). The Redis URL is `REDIS_URL`,
//!   default `redis://127.0.0.1:6379/9`: a database of its own, which `scripts/bench` empties;
//! - `PORT`: default 3900; the server listens on 127.0.0.1 only.
//!
//! Routes: `GET /a` answers `ok` without touching the session; `GET /d` reads the counter
//! `visits` and answers it; `GET /e` reads it, adds one and answers the new value; `GET /new`
//! creates a session with `visits = 0` and answers `ok` (it mints cookies for the load client).
//! With `none` only `/a` exists.
//!
//! The runtime has exactly two worker threads, every library keeps its default settings (the
//! load client replays the `Cookie` header, so `Secure` cookies work over plain HTTP), and
//! nothing is logged.

use std::fmt::Display;
use std::net::SocketAddr;
use std::process::ExitCode;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

/// What a failed handler answers: a 500 with the error's text.
type Failure = (StatusCode, String);

fn fail(error: impl Display) -> Failure {
    (StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
}

/// A fixed signing secret (64 bytes): the benchmark needs no real one.
const SECRET: &str = "bench-server-secret-bench-server-secret-bench-server-secret-0123";

const USAGE: &str = "usage: bench_server (engine|tower|axum_session|none) (memory|redis) [PORT]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (lib, store) = match (args.first(), args.get(1)) {
        (Some(lib), Some(store)) => (lib.clone(), store.clone()),
        (Some(lib), None) => (lib.clone(), "memory".to_owned()),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let port: u16 = match args.get(2).map(|p| p.parse()) {
        None => 3900,
        Some(Ok(port)) => port,
        Some(Err(_)) => {
            eprintln!("PORT must be a port number; {USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot build the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&lib, &store, port)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench_server: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(lib: &str, store: &str, port: u16) -> Result<(), String> {
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/9".to_owned());
    let app = match (lib, store) {
        ("none", "memory") => floor::app(),
        ("engine", "memory") => engine::app(session_engine::MemoryStore::new())?,
        ("engine", "redis") => {
            let store = session_engine::store::redis::RedisStore::connect(&redis_url)
                .await
                .map_err(|e| format!("cannot connect to {redis_url}: {e}"))?
                .with_key_prefix("bench:");
            engine::app(store)?
        }
        ("tower", "memory") => tower::app(),
        ("tower", "redis") => tower_redis::app(&redis_url).await?,
        ("axum_session", "memory") => axum_session_app::app().await?,
        _ => return Err(format!("unsupported combination {lib} {store}; {USAGE}")),
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    println!("bench_server {lib} {store} listening on http://{addr}");
    axum::serve(listener, app)
        .await
        .map_err(|e| format!("server error: {e}"))
}

async fn ok() -> &'static str {
    "ok"
}

/// No session layer: the floor.
mod floor {
    use super::*;

    pub(crate) fn app() -> Router {
        Router::new().route("/a", get(ok)).with_state(())
    }
}

/// session-engine.
mod engine {
    use super::*;
    use session_engine::{SessionEngine, SessionLayer, SessionStore};
    use session_engine_bench::{increment, new, read};

    pub(crate) fn app(store: impl SessionStore) -> Result<Router, String> {
        let engine = SessionEngine::builder()
            .secret(SECRET)
            .store(store)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Router::new()
            .route("/a", get(ok))
            .route("/d", get(read))
            .route("/e", get(increment))
            .route("/new", get(new))
            .layer(SessionLayer::new(engine))
            .with_state(()))
    }
}

/// tower-sessions 0.15 with its `MemoryStore`, default settings.
mod tower {
    use super::*;
    use tower_sessions::{MemoryStore, Session, SessionManagerLayer};

    pub(crate) fn app() -> Router {
        Router::new()
            .route("/a", get(ok))
            .route("/d", get(read))
            .route("/e", get(increment))
            .route("/new", get(new))
            .layer(SessionManagerLayer::new(MemoryStore::default()))
            .with_state(())
    }

    async fn read(session: Session) -> Result<String, Failure> {
        let visits = session.get::<u64>("visits").await.map_err(fail)?;
        Ok(visits.unwrap_or(0).to_string())
    }

    async fn increment(session: Session) -> Result<String, Failure> {
        let visits = session
            .get::<u64>("visits")
            .await
            .map_err(fail)?
            .unwrap_or(0)
            + 1;
        session.insert("visits", visits).await.map_err(fail)?;
        Ok(visits.to_string())
    }

    async fn new(session: Session) -> Result<&'static str, Failure> {
        session.insert("visits", 0_u64).await.map_err(fail)?;
        Ok("ok")
    }
}

/// tower-sessions 0.14 (the version tower-sessions-redis-store 0.16 implements its store for)
/// with tower-sessions-redis-store, on a fred client configured exactly as session-engine's
/// `RedisStore::connect` configures its own.
mod tower_redis {
    use super::*;
    use tower_sessions_014::{Session, SessionManagerLayer};
    use tower_sessions_redis_store::RedisStore;

    pub(crate) async fn app(url: &str) -> Result<Router, String> {
        let client = session_engine::store::redis::RedisStore::connect(url)
            .await
            .map_err(|e| format!("cannot connect to {url}: {e}"))?
            .client()
            .clone();
        Ok(Router::new()
            .route("/a", get(ok))
            .route("/d", get(read))
            .route("/e", get(increment))
            .route("/new", get(new))
            .layer(SessionManagerLayer::new(RedisStore::new(client)))
            .with_state(()))
    }

    async fn read(session: Session) -> Result<String, Failure> {
        let visits = session.get::<u64>("visits").await.map_err(fail)?;
        Ok(visits.unwrap_or(0).to_string())
    }

    async fn increment(session: Session) -> Result<String, Failure> {
        let visits = session
            .get::<u64>("visits")
            .await
            .map_err(fail)?
            .unwrap_or(0)
            + 1;
        session.insert("visits", visits).await.map_err(fail)?;
        Ok(visits.to_string())
    }

    async fn new(session: Session) -> Result<&'static str, Failure> {
        session.insert("visits", 0_u64).await.map_err(fail)?;
        Ok("ok")
    }
}

/// axum_session 0.22, memory only (`SessionNullPool`), default settings.
mod axum_session_app {
    use super::*;
    use axum_session::{Session, SessionConfig, SessionLayer, SessionNullPool, SessionStore};

    type NullSession = Session<SessionNullPool>;

    pub(crate) async fn app() -> Result<Router, String> {
        let store = SessionStore::<SessionNullPool>::new(None, SessionConfig::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok(Router::new()
            .route("/a", get(ok))
            .route("/d", get(read))
            .route("/e", get(increment))
            .route("/new", get(new))
            .layer(SessionLayer::new(store))
            .with_state(()))
    }

    async fn read(session: NullSession) -> String {
        session.get::<u64>("visits").unwrap_or(0).to_string()
    }

    async fn increment(session: NullSession) -> String {
        let visits = session.get::<u64>("visits").unwrap_or(0) + 1;
        session.set("visits", visits);
        visits.to_string()
    }

    async fn new(session: NullSession) -> &'static str {
        session.set("visits", 0_u64);
        "ok"
    }
}
