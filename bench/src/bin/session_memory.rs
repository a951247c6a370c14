//! Bytes of memory per stored session, for session-engine's `MemoryStore` and for
//! tower-sessions' `MemoryStore`: the growth of this process's resident set (`VmRSS`) while N
//! sessions, each holding one small counter (`visits = 0`), are created.
//!
//! ```text
//! cargo run --release -p session-engine-bench --bin session_memory -- LIB [N] [VIA]
//! ```
//!
//! - `LIB`: `engine` or `tower`; one library per process, so that neither sees the other's
//!   heap;
//! - `N`: how many sessions, default 1,000,000;
//! - `VIA`: `http` (default) creates each session with a real request through an axum
//!   `Router` and the library's layer (`oneshot`), exactly as an app would; `store` calls the
//!   store directly: for session-engine `write` of a `Record` under a key shaped like the
//!   engine's (base64url of SHA-256, 43 characters), for tower-sessions `create` of a
//!   `Record` with a random `Id`.
//!
//! The baseline is taken after the runtime, the router and the store exist and a few
//! warm-up sessions were created; the final reading after every request's temporaries were
//! dropped. The last line is machine-readable, for `scripts/bench`.

use std::process::ExitCode;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::http::header::SET_COOKIE;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use tower::ServiceExt;

/// Sessions created before the baseline, so that one-time allocations are not counted.
const WARM_UP: usize = 1_000;

const USAGE: &str = "usage: session_memory (engine|tower) [N] [http|store]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(lib) = args.first().cloned() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let count = match args
        .get(1)
        .map(|n| n.replace(['_', ','], "").parse::<usize>())
    {
        None => 1_000_000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("N must be a positive whole number; {USAGE}");
            return ExitCode::from(2);
        }
    };
    let via = args.get(2).cloned().unwrap_or_else(|| "http".to_owned());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot build the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match (lib.as_str(), via.as_str()) {
            ("engine", "http") => engine::via_http(count).await,
            ("engine", "store") => engine::via_store(count).await,
            ("tower", "http") => tower_sessions_lib::via_http(count).await,
            ("tower", "store") => tower_sessions_lib::via_store(count).await,
            _ => Err(USAGE.to_owned()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("session_memory: {message}");
            ExitCode::FAILURE
        }
    }
}

/// This process's resident set, in bytes, from `/proc/self/status`.
fn rss_bytes() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status (Linux only): {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kb| kb * 1024)
        .ok_or_else(|| "no VmRSS line in /proc/self/status".to_owned())
}

/// Measures the RSS growth of `create(i)` for `count` sessions, after `WARM_UP` more, and
/// prints it. `stored` says how many sessions the store holds at the end, when it can tell.
async fn measure<F, Fut>(
    lib: &str,
    via: &str,
    count: usize,
    mut create: F,
    stored: impl FnOnce() -> Option<usize>,
) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    for _ in 0..WARM_UP {
        create().await?;
    }
    let before = rss_bytes()?;
    let started = Instant::now();
    for _ in 0..count {
        create().await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = rss_bytes()?;
    let growth = after.saturating_sub(before);
    let per_session = growth as f64 / count as f64;
    let stored = stored().map_or_else(|| "n/a".to_owned(), |n| n.to_string());
    println!(
        "{lib} via {via}: {count} sessions (+{WARM_UP} warm-up) in {seconds:.1} s; \
         RSS {} -> {} MiB, +{:.1} MiB; {per_session:.0} bytes/session; store holds {stored}",
        before / (1024 * 1024),
        after / (1024 * 1024),
        growth as f64 / (1024.0 * 1024.0),
    );
    println!(
        "RESULT lib={lib} via={via} sessions={count} rss_before={before} rss_after={after} \
         bytes_per_session={per_session:.1} seconds={seconds:.1} stored={stored}"
    );
    Ok(())
}

/// Sends `GET /new` through `app` and checks that it answered 200 with a cookie.
async fn request_new(app: &Router) -> Result<(), String> {
    let request = Request::get("/new")
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    let response = app
        .clone()
        .oneshot(request)
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != StatusCode::OK || !response.headers().contains_key(SET_COOKIE) {
        return Err(format!(
            "GET /new answered {} {}",
            response.status(),
            if response.headers().contains_key(SET_COOKIE) {
                "with a cookie"
            } else {
                "without a cookie"
            }
        ));
    }
    Ok(())
}

/// session-engine and its `MemoryStore`.
mod engine {
    use std::sync::Arc;
    use std::time::SystemTime;

    use axum::Extension;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::{Map, Value};
    use session_engine::store::random_id;
    use session_engine::{
        Changes, DEFAULT_DURATION, MemoryStore, Record, Session, SessionEngine, SessionLayer,
        SessionStore, StoreKey, WriteMode,
    };
    use sha2::{Digest, Sha256};

    use super::*;

    const SECRET: &str = "session-memory-secret-session-memory-secret-0123456789abcdef";

    pub(crate) async fn via_http(count: usize) -> Result<(), String> {
        let store = Arc::new(MemoryStore::new());
        let engine = SessionEngine::builder()
            .secret(SECRET)
            .shared_store(store.clone())
            .build()
            .map_err(|e| e.to_string())?;
        let app = Router::new()
            .route("/new", get(new))
            .layer(SessionLayer::new(engine))
            .with_state(());
        measure(
            "engine",
            "http",
            count,
            || request_new(&app),
            || Some(store.len()),
        )
        .await
    }

    async fn new(Extension(session): Extension<Session>) -> Result<&'static str, StatusCode> {
        session
            .start()
            .await
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        session
            .set("visits", 0_u64)
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        Ok("ok")
    }

    pub(crate) async fn via_store(count: usize) -> Result<(), String> {
        let store = MemoryStore::new();
        let create = || async {
            let key = StoreKey::from(URL_SAFE_NO_PAD.encode(Sha256::digest(
                random_id().map_err(|e| e.to_string())?.as_bytes(),
            )));
            let mut data = Map::new();
            data.insert("visits".to_owned(), Value::from(0_u64));
            let now = SystemTime::now();
            let record = Record::new(data, now, now + DEFAULT_DURATION);
            store
                .write(&key, &record, &Changes::replace_all(), WriteMode::Insert)
                .await
                .map_err(|e| e.to_string())
        };
        measure("engine", "store", count, create, || Some(store.len())).await
    }
}

/// tower-sessions 0.15 and its `MemoryStore`.
mod tower_sessions_lib {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::Value;
    use tower_sessions::cookie::time::{Duration, OffsetDateTime};
    use tower_sessions::session::{Id, Record};
    use tower_sessions::{MemoryStore, Session, SessionManagerLayer, SessionStore};

    use super::*;

    pub(crate) async fn via_http(count: usize) -> Result<(), String> {
        let app = Router::new()
            .route("/new", get(new))
            .layer(SessionManagerLayer::new(MemoryStore::default()))
            .with_state(());
        // The store cannot tell its size: count the sessions its layer reported created.
        let created = Arc::new(AtomicUsize::new(0));
        let create = || {
            let created = created.clone();
            let app = &app;
            async move {
                request_new(app).await?;
                created.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        };
        measure("tower", "http", count, create, || {
            Some(created.load(Ordering::Relaxed))
        })
        .await
    }

    async fn new(session: Session) -> Result<&'static str, StatusCode> {
        session
            .insert("visits", 0_u64)
            .await
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        Ok("ok")
    }

    pub(crate) async fn via_store(count: usize) -> Result<(), String> {
        let store = MemoryStore::default();
        let created = AtomicUsize::new(0);
        let create = || async {
            let mut data = HashMap::new();
            data.insert("visits".to_owned(), Value::from(0_u64));
            // tower-sessions' default expiry: the end of the browser session, stored as two
            // weeks from now.
            let mut record = Record {
                id: Id::default(),
                data,
                expiry_date: OffsetDateTime::now_utc() + Duration::weeks(2),
            };
            store.create(&mut record).await.map_err(|e| e.to_string())?;
            created.fetch_add(1, Ordering::Relaxed);
            Ok(())
        };
        measure("tower", "store", count, create, || {
            Some(created.load(Ordering::Relaxed))
        })
        .await
    }
}
