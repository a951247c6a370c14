//! The session-engine demo: a small axum server whose routes exercise every part of a session.
//!
//! ```sh
//! cargo run --example demo
//! # sessions in a file, kept across restarts (as long as the secret stays the same):
//! SESSION_SECRETS="$(openssl rand -base64 48)" SESSION_STORE=sqlite://demo.db \
//!   cargo run --example demo --features sqlite
//! ```
//!
//! It serves on `127.0.0.1:$PORT` (default 3000). Settings come from the environment:
//!
//! | variable | meaning | default |
//! | --- | --- | --- |
//! | `PORT` | the port to listen on (`0`: one the system chooses, logged at start) | `3000` |
//! | `SESSION_SECRETS` | comma-separated secrets, each at least 32 bytes; the first signs, all verify | a random one made at each start, with a warning: no session survives a restart |
//! | `SESSION_STORE` | `memory`; `sqlite://PATH` (feature `sqlite`); `redis://HOST:PORT`, `redis-cluster://HOST:PORT?node=HOST:PORT&…` or `redis-sentinel://SENTINEL:PORT?sentinelServiceName=NAME&node=SENTINEL:PORT&…` (feature `redis`); the same over TLS, `rediss://HOST:PORT`, `rediss-cluster://…` or `rediss-sentinel://…`, with `&tls_ca_file=/path/ca.pem` (or `?tls_ca_file=…`) to trust a CA of your own instead of the system's (feature `redis-tls`); `postgres://USER@HOST/DB` (feature `postgres`) | `memory` |
//! | `SESSION_NEAR_CACHE` | a read cache of this many records in this process, in front of a Redis store (features `redis` and `near-cache`), kept coherent across instances by Redis client tracking, or of a PostgreSQL store (features `postgres` and `near-cache`), kept coherent by `LISTEN`/`NOTIFY` (SPEC 7.5; `docs/stores.md`) | none |
//! | `SESSION_DURATION_MS` | idle lifetime in milliseconds | 30 minutes |
//! | `SESSION_MAX_LIFETIME_MS` | absolute lifetime in milliseconds | none |
//! | `SESSION_TOUCH_INTERVAL_MS` | how long after a write or touch a read touches again; `0` touches on every request | `min(60 s, duration / 10)` |
//! | `SESSION_COOKIE_SECURE` | the cookie's `Secure` attribute (`true` or `false`) | `true` |
//! | `SESSION_HEADER` | a header that carries the signed id too, for clients without cookies, such as `x-session` | none |
//! | `SESSION_COOKIE` | whether the cookie is sent and read (`false` needs `SESSION_HEADER`) | `true` |
//! | `RUST_LOG` | log filter, such as `info` or `warn,session_engine=debug` | `info` |
//!
//! `GET /` answers the list of routes ([`ROUTES`]), one a line. `GET /metrics` answers the
//! library's metrics (SPEC 7.4) in Prometheus' text format, through `metrics-exporter-prometheus`
//! installed as the process's recorder; the session spans go to the log (`RUST_LOG=info` shows
//! each request's `session{outcome=…}`, `RUST_LOG=info,session_engine=debug` its store calls too).
//!
//! The cookie is `Secure` by default. Browsers and recent curl releases send `Secure` cookies to
//! `127.0.0.1` and `localhost` over plain HTTP; for any other host over plain HTTP (behind a
//! proxy on a LAN address, say), or an older curl, run
//! `SESSION_COOKIE_SECURE=false cargo run --example demo`: otherwise the cookie never comes
//! back, and every request starts a new session.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use serde_json::{Value, json};
use session_engine::observability::{self, STORE_CALL_SECONDS};
use session_engine::{Error, Session, SessionEngine, SessionLayer};

#[path = "support/server.rs"]
mod server;

use server::MAX_DURATION;

/// The upper bounds of the store latency histogram's buckets, in seconds: from half a
/// millisecond (an in-process store) to the default store timeout (5 s).
const LATENCY_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// How often the recorder drains its histograms when no one scrapes `/metrics`, so that they
/// never grow without bound.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> ExitCode {
    // The recorder goes in first: whatever the engine records from its start on is kept.
    let metrics = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(STORE_CALL_SECONDS.to_owned()),
            &LATENCY_BUCKETS,
        )
        .and_then(PrometheusBuilder::install_recorder);
    let metrics = match metrics {
        Ok(handle) => handle,
        Err(error) => {
            eprintln!("demo: cannot install the metrics recorder: {error}");
            return ExitCode::FAILURE;
        }
    };
    observability::describe_metrics();
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(METRICS_UPKEEP);
        loop {
            ticks.tick().await;
            upkeep.run_upkeep();
        }
    });
    server::main("demo", |engine| app(engine, metrics)).await
}

/// What `GET /` answers: the routes, one a line.
const ROUTES: &str = "\
GET  /                     this list
GET  /health               ok; never touches the session
GET  /metrics              the session metrics, in Prometheus' text format; never touches the session
GET  /visits               adds 1 to this visitor's count; body = the new count
GET  /peek                 body = the count (0 if none); writes nothing
POST /login?user=NAME      a new id, the user NAME, the session tied to NAME; body ok
GET  /me                   body = the user, or 401
GET  /sessions             the user's sessions as JSON; 401 when not logged in
POST /logout-others        ends the user's other sessions; body ok; 401 when not logged in
POST /logout-everywhere    ends all the user's sessions, this one too; body ok; 401 when not logged in
POST /logout               ends the session (the cookie is removed); body ok
POST /duration?ms=N        this session's idle lifetime, in milliseconds; body ok
";

/// The demo's routes, behind the session layer.
///
/// `/`, `/health` and `/metrics` sit behind the layer too: they take no session, so they cause
/// no store call and no `Set-Cookie`: sessions are lazy.
fn app(engine: SessionEngine, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/", get(routes))
        .route("/health", get(health))
        .route("/metrics", get(move || render(metrics.clone())))
        .route("/visits", get(visits))
        .route("/peek", get(peek))
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/sessions", get(sessions))
        .route("/logout-others", post(logout_others))
        .route("/logout-everywhere", post(logout_everywhere))
        .route("/logout", post(logout))
        .route("/duration", post(set_duration))
        .layer(SessionLayer::new(engine))
}

// ---- handlers ----

async fn routes() -> &'static str {
    ROUTES
}

async fn health() -> &'static str {
    "ok"
}

/// `GET /metrics`: what the recorder holds, in Prometheus' text format (version 0.0.4).
async fn render(metrics: PrometheusHandle) -> Response {
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    ([(CONTENT_TYPE, content_type)], metrics.render()).into_response()
}

async fn visits(session: Session) -> Result<String, Error> {
    let visits = session.get::<u64>("visits")?.unwrap_or(0) + 1;
    session.set("visits", visits)?;
    Ok(visits.to_string())
}

async fn peek(session: Session) -> Result<String, Error> {
    let visits = session.get::<u64>("visits")?.unwrap_or(0);
    Ok(visits.to_string())
}

#[derive(Deserialize)]
struct Login {
    user: String,
}

async fn login(session: Session, Query(login): Query<Login>) -> Result<Response, Error> {
    if login.user.is_empty() {
        return Ok((StatusCode::BAD_REQUEST, "user must not be empty").into_response());
    }
    // A new id at a change of privilege, so an id planted before the login is worthless.
    session.roll().await?;
    session.set("user", &login.user)?;
    // Listed with the user's other sessions, and ended with them.
    session.set_user(login.user)?;
    Ok("ok".into_response())
}

async fn me(session: Session) -> Result<Response, Error> {
    Ok(match session.get::<String>("user")? {
        Some(user) => user.into_response(),
        None => (StatusCode::UNAUTHORIZED, "not logged in").into_response(),
    })
}

/// The 401 of the account routes, when the session is tied to no user.
fn not_logged_in() -> Response {
    (StatusCode::UNAUTHORIZED, "not logged in").into_response()
}

/// `GET /sessions`: `[{"current":true,"created_ms":…,"expires_ms":…,"last_active_ms":…}]`, the
/// times in milliseconds since the Unix epoch (`last_active_ms` is `null` when unknown).
async fn sessions(session: Session) -> Result<Response, Error> {
    if session.user()?.is_none() {
        return Ok(not_logged_in());
    }
    let ms = |time: SystemTime| {
        time.duration_since(UNIX_EPOCH).map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
    };
    let list: Vec<Value> = session
        .user_sessions()
        .await?
        .iter()
        .map(|listed| {
            json!({
                "current": listed.current,
                "created_ms": ms(listed.created_at),
                "expires_ms": ms(listed.expires_at),
                "last_active_ms": listed.last_active.map(ms),
            })
        })
        .collect();
    let body = Value::Array(list).to_string();
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

async fn logout_others(session: Session) -> Result<Response, Error> {
    if session.user()?.is_none() {
        return Ok(not_logged_in());
    }
    session.end_other_sessions().await?;
    Ok("ok".into_response())
}

async fn logout_everywhere(session: Session) -> Result<Response, Error> {
    if session.user()?.is_none() {
        return Ok(not_logged_in());
    }
    session.end_all_sessions().await?;
    Ok("ok".into_response())
}

async fn logout(session: Session) -> Result<&'static str, Error> {
    session.destroy().await?;
    Ok("ok")
}

#[derive(Deserialize)]
struct SetDuration {
    ms: u64,
}

async fn set_duration(
    session: Session,
    Query(SetDuration { ms }): Query<SetDuration>,
) -> Result<Response, Error> {
    let duration = Duration::from_millis(ms);
    if duration.is_zero() || duration > MAX_DURATION {
        let message = format!("ms must be between 1 and {}", MAX_DURATION.as_millis());
        return Ok((StatusCode::BAD_REQUEST, message).into_response());
    }
    session.set_duration(duration)?;
    Ok("ok".into_response())
}
