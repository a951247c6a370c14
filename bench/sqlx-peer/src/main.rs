//! The PostgreSQL and SQLite peer of session-engine's load server: tower-sessions 0.14 with
//! tower-sessions-sqlx-store 0.15, serving the routes of `bench/src/bin/bench_server.rs` for
//! `wrk`. `bench_server tower postgres|sqlite` hands over to this binary (see the manifest for
//! why it is built apart).
//!
//! ```text
//! tower_sqlx_server tower (postgres|sqlite) [PORT]
//! ```
//!
//! - `postgres`: the database at `BENCH_POSTGRES_URL` (default
//!   `postgres://postgres@127.0.0.1:5432/test`), schema `public`, table `BENCH_TABLE` (default
//!   `bench_sessions_tower`), created at start; `bench/scripts/bench` drops it at the end;
//! - `sqlite`: the file `BENCH_SQLITE_PATH` (required), created if missing, table `BENCH_TABLE`.
//!
//! The layer keeps tower-sessions' defaults. The connection pool is set up the way
//! session-engine's own constructors set up theirs (`PostgresStore::connect`: 16 connections,
//! no test before acquire; `SqliteStore::open`: 4 connections, WAL, `synchronous = NORMAL`,
//! a 5 s busy timeout), so that the two libraries run on the same database settings and the
//! rows compare the libraries, not the pools.
//!
//! Routes: `GET /a` answers `ok` without touching the session; `GET /d` reads the counter
//! `visits`; `GET /e` reads and increments it; `GET /new` creates a session with `visits = 0`.
//! Two tokio workers; listens on 127.0.0.1 only.

use std::fmt::Display;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tower_sessions::{Session, SessionManagerLayer, SessionStore};
use tower_sessions_sqlx_store::sqlx::postgres::PgPoolOptions;
use tower_sessions_sqlx_store::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use tower_sessions_sqlx_store::{PostgresStore, SqliteStore};

const USAGE: &str = "usage: tower_sqlx_server tower (postgres|sqlite) [PORT]";

/// What a failed handler answers: a 500 with the error's text.
type Failure = (StatusCode, String);

fn fail(error: impl Display) -> Failure {
    (StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(lib), Some(store)) = (args.first(), args.get(1)) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if lib != "tower" {
        eprintln!("only the library `tower` is served here; {USAGE}");
        return ExitCode::from(2);
    }
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
    match runtime.block_on(run(store, port)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tower_sqlx_server: {message}");
            ExitCode::FAILURE
        }
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

async fn run(store: &str, port: u16) -> Result<(), String> {
    let table = env_or("BENCH_TABLE", "bench_sessions_tower");
    let app = match store {
        "postgres" => {
            let url = env_or(
                "BENCH_POSTGRES_URL",
                "postgres://postgres@127.0.0.1:5432/test",
            );
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(5))
                .test_before_acquire(false)
                .connect(&url)
                .await
                .map_err(|e| format!("cannot connect to {url}: {e}"))?;
            let store = PostgresStore::new(pool)
                .with_schema_name("public")?
                .with_table_name(&table)?;
            store
                .migrate()
                .await
                .map_err(|e| format!("cannot create the table {table}: {e}"))?;
            app(store)
        }
        "sqlite" => {
            let path = std::env::var("BENCH_SQLITE_PATH")
                .map_err(|_| "set BENCH_SQLITE_PATH to the database file to use".to_owned())?;
            let options = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(5))
                .test_before_acquire(false)
                .connect_with(options)
                .await
                .map_err(|e| format!("cannot open {path}: {e}"))?;
            let store = SqliteStore::new(pool).with_table_name(&table)?;
            store
                .migrate()
                .await
                .map_err(|e| format!("cannot create the table {table}: {e}"))?;
            app(store)
        }
        _ => return Err(format!("unsupported store {store}; {USAGE}")),
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    println!("tower_sqlx_server tower {store} listening on http://{addr}");
    axum::serve(listener, app)
        .await
        .map_err(|e| format!("server error: {e}"))
}

fn app(store: impl SessionStore + Clone) -> Router {
    Router::new()
        .route("/a", get(ok))
        .route("/d", get(read))
        .route("/e", get(increment))
        .route("/new", get(new))
        .layer(SessionManagerLayer::new(store))
        .with_state(())
}

async fn ok() -> &'static str {
    "ok"
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
