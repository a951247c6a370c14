//! An HTTP server for side-by-side load tests of session-engine and its peers
//! (tower-sessions, axum_session), driven by `bench/scripts/bench` with `wrk`.
//!
//! ```text
//! cargo run --release -p session-engine-bench --bin bench_server -- LIB STORE [PORT] [--seed]
//!     [--near-cache[=CAPACITY]]
//! ```
//!
//! - `LIB`: `engine` (session-engine), `tower` (tower-sessions), `axum_session`, or `none` (no
//!   session layer at all: the floor);
//! - `STORE`: `memory`; or, for `engine` and `tower` only:
//!   - `redis`: session-engine's `RedisStore` with the key prefix `bench:`, or tower-sessions
//!     0.14 with tower-sessions-redis-store, whose keys have no prefix. The URL is `REDIS_URL`,
//!     default `redis://127.0.0.1:6379/9` (a database of its own, which `bench/scripts/bench`
//!     empties); session-engine also takes a `redis-cluster://` URL;
//!   - `postgres`: the database at `BENCH_POSTGRES_URL` (default
//!     `postgres://postgres@127.0.0.1:5432/test`), in the table `BENCH_TABLE` (default
//!     `bench_sessions_engine`), created at start (`bench/scripts/bench` drops it at the end);
//!   - `sqlite`: the file `BENCH_SQLITE_PATH` (required), table `BENCH_TABLE`.
//!
//!   `tower postgres` and `tower sqlite` are served by `tower_sqlx_server` (tower-sessions 0.14
//!   on tower-sessions-sqlx-store 0.15, built from `bench/sqlx-peer/`, a workspace of its own):
//!   this binary replaces itself with that one, found beside it, with the same arguments;
//! - `PORT`: default 3900; the server listens on 127.0.0.1 only;
//! - `--seed`: adds `GET /seed?total=N[&sample=K][&concurrency=C]`, outside the session
//!   layer, which creates sessions, each with a real `GET /new` through the layer (in process,
//!   C at a time, default 64), until N were created since start, and answers a uniform random
//!   sample of K (default 1000) of all the sessions it created, one `Cookie` header value per
//!   line, for the load client to rotate through (headers `x-sessions`: how many it created in
//!   all, `x-seconds`: how long this call took). Later calls keep the sample uniform over all
//!   the sessions created so far (reservoir sampling), so that the load can grow in steps;
//! - `--near-cache[=CAPACITY]`: `engine redis` and `engine postgres` only: the store behind a
//!   `NearCache` of CAPACITY records (default 100,000), kept coherent by Redis client tracking
//!   (the keys then have the prefix `bench-near-cache:`, so that its tracking hears of its own
//!   keys only) or by PostgreSQL's `LISTEN`/`NOTIFY` (the cache puts its triggers on the table,
//!   which then notify every write: give it a table of its own).
//!
//! Routes: `GET /a` answers `ok` without touching the session; `GET /d` reads the counter
//! `visits` and answers it; `GET /e` reads it, adds one and answers the new value; `GET /new`
//! creates a session with `visits = 0` and answers `ok` (it mints cookies for the load client).
//! With `none` only `/a` exists.
//!
//! The runtime has exactly two worker threads, every library keeps its default settings (the
//! load client replays the `Cookie` header, so `Secure` cookies work over plain HTTP), and
//! nothing is logged. With the bench crate's `metrics` feature (its default), Prometheus'
//! recorder is installed as an operator installs it, its upkeep run every 5 s, so that
//! session-engine's metrics go somewhere real (nothing serves them).

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

const USAGE: &str = "usage: bench_server (engine|tower|axum_session|none) \
                     (memory|redis|postgres|sqlite) [PORT] [--seed] [--near-cache[=CAPACITY]]";

/// The near cache's capacity in records when `--near-cache` gives none.
const NEAR_CACHE_CAPACITY: usize = 100_000;

/// The PostgreSQL database of the benchmark, unless `BENCH_POSTGRES_URL` names another.
const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let seed = args.iter().any(|arg| arg == "--seed");
    args.retain(|arg| arg != "--seed");
    let mut near_cache = None;
    for arg in &args {
        if arg == "--near-cache" {
            near_cache = Some(NEAR_CACHE_CAPACITY);
        } else if let Some(capacity) = arg.strip_prefix("--near-cache=") {
            let Ok(capacity) = capacity.replace('_', "").parse() else {
                eprintln!("--near-cache=CAPACITY takes a number of records; {USAGE}");
                return ExitCode::from(2);
            };
            near_cache = Some(capacity);
        }
    }
    args.retain(|arg| !arg.starts_with("--near-cache"));
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
    if near_cache.is_some() && !(lib == "engine" && matches!(store.as_str(), "redis" | "postgres"))
    {
        eprintln!("--near-cache is served for engine redis and engine postgres only; {USAGE}");
        return ExitCode::from(2);
    }
    if lib == "tower" && matches!(store.as_str(), "postgres" | "sqlite") {
        if seed {
            eprintln!("--seed is not served for {lib} {store}");
            return ExitCode::from(2);
        }
        return sqlx_peer(&store, port);
    }
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
    match runtime.block_on(run(&lib, &store, port, seed, near_cache)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench_server: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Replaces this process with `tower_sqlx_server` (beside this binary), for tower-sessions on
/// tower-sessions-sqlx-store: see `bench/sqlx-peer/Cargo.toml` for why it is built apart.
fn sqlx_peer(store: &str, port: u16) -> ExitCode {
    use std::os::unix::process::CommandExt;

    let peer = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name("tower_sqlx_server"),
        Err(error) => {
            eprintln!("bench_server: cannot find this binary's directory: {error}");
            return ExitCode::FAILURE;
        }
    };
    // `exec` only returns when it failed.
    let error = std::process::Command::new(&peer)
        .args(["tower", store, &port.to_string()])
        .exec();
    eprintln!(
        "bench_server: cannot run {} ({error}); build it with `cargo build --release \
         --manifest-path bench/sqlx-peer/Cargo.toml --target-dir target`",
        peer.display()
    );
    ExitCode::FAILURE
}

async fn run(
    lib: &str,
    store: &str,
    port: u16,
    seed: bool,
    near_cache: Option<usize>,
) -> Result<(), String> {
    let redis_url = env_or("REDIS_URL", "redis://127.0.0.1:6379/9");
    let app = match (lib, store) {
        ("none", "memory") => floor::app(),
        ("engine", "memory") => engine::app(session_engine::MemoryStore::new())?,
        ("engine", "redis") => {
            use session_engine::store::cache::NearCache;
            let prefix = if near_cache.is_some() {
                "bench-near-cache:"
            } else {
                "bench:"
            };
            let store = session_engine::store::redis::RedisStore::connect(&redis_url)
                .await
                .map_err(|e| format!("cannot connect to {redis_url}: {e}"))?
                .with_key_prefix(prefix);
            match near_cache {
                Some(capacity) => engine::app(
                    NearCache::redis(store, capacity)
                        .await
                        .map_err(|e| format!("cannot turn on tracking at {redis_url}: {e}"))?,
                )?,
                None => engine::app(store)?,
            }
        }
        ("engine", "postgres") => {
            use session_engine::store::postgres::PostgresStore;
            let url = env_or("BENCH_POSTGRES_URL", POSTGRES_URL);
            let table = env_or("BENCH_TABLE", "bench_sessions_engine");
            let store = PostgresStore::connect(&url)
                .await
                .map_err(|e| format!("cannot connect to {url}: {e}"))?
                .with_table_name(&table)
                .map_err(|e| format!("table {table}: {e}"))?;
            store
                .migrate()
                .await
                .map_err(|e| format!("cannot create the table {table} at {url}: {e}"))?;
            match near_cache {
                Some(capacity) => engine::app(
                    session_engine::store::cache::NearCache::postgres(store, capacity)
                        .await
                        .map_err(|e| format!("cannot listen for changes of {table}: {e}"))?,
                )?,
                None => engine::app(store)?,
            }
        }
        ("engine", "sqlite") => {
            use session_engine::store::sqlite::SqliteStore;
            let path = std::env::var("BENCH_SQLITE_PATH")
                .map_err(|_| "set BENCH_SQLITE_PATH to the database file to use".to_owned())?;
            let table = env_or("BENCH_TABLE", "bench_sessions_engine");
            let store = SqliteStore::open(&path)
                .await
                .map_err(|e| format!("cannot open {path}: {e}"))?
                .with_table_name(&table)
                .map_err(|e| format!("table {table}: {e}"))?;
            store
                .migrate()
                .await
                .map_err(|e| format!("cannot create the table {table} in {path}: {e}"))?;
            engine::app(store)?
        }
        ("tower", "memory") => tower::app(),
        ("tower", "redis") => tower_redis::app(&redis_url).await?,
        ("axum_session", "memory") => axum_session_app::app().await?,
        _ => return Err(format!("unsupported combination {lib} {store}; {USAGE}")),
    };
    let app = if seed { seeding::with_seed(app) } else { app };
    #[cfg(feature = "metrics")]
    {
        let metrics = session_engine_bench::install_prometheus()?;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                metrics.run_upkeep();
            }
        });
    }
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

/// `GET /seed`: sessions created in process through the app's own `GET /new`, and a uniform
/// random sample of their cookies for the load client.
mod seeding {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::{Instant, SystemTime, UNIX_EPOCH};

    use ::tower::ServiceExt;
    use axum::body::Body;
    use axum::extract::{Query, State};
    use axum::http::header::SET_COOKIE;
    use axum::http::{HeaderMap, Request};

    use super::*;

    struct Seeder {
        /// The app without `/seed`: its `GET /new` creates each session.
        app: Router,
        /// Sessions created so far, all calls together.
        created: AtomicU64,
        /// One call at a time.
        running: tokio::sync::Mutex<()>,
        sample: Mutex<Reservoir>,
    }

    /// A uniform random sample of fixed size of all the cookies offered (algorithm R).
    #[derive(Default)]
    struct Reservoir {
        capacity: usize,
        seen: u64,
        cookies: Vec<String>,
        /// splitmix64 state.
        rng: u64,
    }

    impl Reservoir {
        fn offer(&mut self, cookie: String) {
            self.seen += 1;
            if self.cookies.len() < self.capacity {
                self.cookies.push(cookie);
                return;
            }
            let slot = self.random() % self.seen;
            if let Ok(slot) = usize::try_from(slot)
                && slot < self.capacity
            {
                self.cookies[slot] = cookie;
            }
        }

        fn random(&mut self) -> u64 {
            self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }

    pub(crate) fn with_seed(app: Router) -> Router {
        let seeder = Arc::new(Seeder {
            app: app.clone(),
            created: AtomicU64::new(0),
            running: tokio::sync::Mutex::new(()),
            sample: Mutex::new(Reservoir::default()),
        });
        app.merge(Router::new().route("/seed", get(seed)).with_state(seeder))
    }

    fn number<T: std::str::FromStr>(
        query: &HashMap<String, String>,
        name: &str,
        default: Option<T>,
    ) -> Result<T, Failure> {
        match (query.get(name), default) {
            (Some(text), _) => text
                .replace(['_', ','], "")
                .parse()
                .map_err(|_| (StatusCode::BAD_REQUEST, format!("{name}: not a number"))),
            (None, Some(default)) => Ok(default),
            (None, None) => Err((StatusCode::BAD_REQUEST, format!("{name} is required"))),
        }
    }

    async fn seed(
        State(seeder): State<Arc<Seeder>>,
        Query(query): Query<HashMap<String, String>>,
    ) -> Result<([(&'static str, String); 2], String), Failure> {
        let total: u64 = number(&query, "total", None)?;
        let sample: usize = number(&query, "sample", Some(1000))?;
        let concurrency: usize = number(&query, "concurrency", Some(64))?;
        let _one_at_a_time = seeder.running.lock().await;
        {
            let mut reservoir = seeder.sample.lock().unwrap_or_else(PoisonError::into_inner);
            if reservoir.capacity == 0 {
                reservoir.capacity = sample.max(1);
                reservoir.rng = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0x5EED, |t| t.as_nanos() as u64)
                    ^ u64::from(std::process::id());
            } else if reservoir.capacity != sample.max(1) {
                return Err((
                    StatusCode::BAD_REQUEST,
                    format!("the sample size is {} for this process", reservoir.capacity),
                ));
            }
        }
        let started = Instant::now();
        let next = Arc::new(AtomicU64::new(seeder.created.load(Ordering::Relaxed)));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency.max(1) {
            let seeder = Arc::clone(&seeder);
            let next = Arc::clone(&next);
            tasks.spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let cookie = create(&seeder.app).await?;
                    seeder.created.fetch_add(1, Ordering::Relaxed);
                    seeder
                        .sample
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .offer(cookie);
                }
                Ok::<(), Failure>(())
            });
        }
        // On an error the set is dropped, which aborts the other tasks.
        while let Some(result) = tasks.join_next().await {
            result.map_err(fail)??;
        }
        let seconds = started.elapsed().as_secs_f64();
        let created = seeder.created.load(Ordering::Relaxed);
        let mut body = seeder
            .sample
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cookies
            .join("\n");
        body.push('\n');
        Ok((
            [
                ("x-sessions", created.to_string()),
                ("x-seconds", format!("{seconds:.2}")),
            ],
            body,
        ))
    }

    /// One `GET /new` through the app: the `Cookie` header value that its `Set-Cookie`
    /// headers give the client (name=value pairs; removals left out).
    async fn create(app: &Router) -> Result<String, Failure> {
        let request = Request::get("/new").body(Body::empty()).map_err(fail)?;
        let response = app.clone().oneshot(request).await.map_err(fail)?;
        if response.status() != StatusCode::OK {
            return Err(fail(format!("GET /new answered {}", response.status())));
        }
        let cookie = cookie_header(response.headers());
        if cookie.is_empty() {
            return Err(fail("GET /new set no cookie"));
        }
        Ok(cookie)
    }

    fn cookie_header(headers: &HeaderMap) -> String {
        headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .filter_map(|value| {
                let pair = value.split(';').next()?.trim();
                let (_, cookie_value) = pair.split_once('=')?;
                (!cookie_value.is_empty()).then(|| pair.to_owned())
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
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
