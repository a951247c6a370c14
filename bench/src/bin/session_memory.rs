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
//!   `Record` with a random `Id`; `expiry` measures memory after expiry (below).
//!
//! The baseline is taken after the runtime, the router and the store exist and a few
//! warm-up sessions were created; the final reading after every request's temporaries were
//! dropped. The last line is machine-readable, for `bench/scripts/bench`.
//!
//! ## Memory after expiry
//!
//! ```text
//! session_memory LIB N expiry [SECONDS] [TRAFFIC_SECONDS] [RATE]
//! ```
//!
//! Does the memory of sessions that expired come back without a call to clean up? The
//! library's layer is set to a session duration of SECONDS (default 15; it must outlast the
//! creation of the N sessions). After the warm-up, the RSS is read (the start), N sessions are
//! created through the layer as above (the full reading), and nothing happens until every one
//! of them has expired (SECONDS after the last, plus one). Then light ordinary traffic runs
//! through the same layer, RATE requests a second (default 1000), for at most TRAFFIC_SECONDS
//! (default 60): new visitors first (`GET /new`) until 100 sessions exist, then these returning
//! visitors in turn, reading (`GET /d`) and incrementing (`GET /e`) their counters. The RSS is
//! read after every 10 ms batch; the run ends as soon as it is within 10 % of the start
//! ("recovered", with the time and requests it took), or at TRAFFIC_SECONDS. Nothing calls a
//! clean-up: session-engine's `MemoryStore` sweeps a few records on each call;
//! tower-sessions' `MemoryStore` only skips expired records on a read.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderValue, StatusCode};
use axum::routing::get;

/// Sessions created before the baseline, so that one-time allocations are not counted.
const WARM_UP: usize = 1_000;

const USAGE: &str = "usage: session_memory (engine|tower) [N] [http|store] | \
                     session_memory (engine|tower) N expiry [SECONDS] [TRAFFIC_SECONDS] [RATE]";

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
    let expiry = match Expiry::from_args(args.get(3..).unwrap_or_default()) {
        Ok(expiry) => expiry,
        Err(message) => {
            eprintln!("{message}; {USAGE}");
            return ExitCode::from(2);
        }
    };
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
            ("engine", "expiry") => engine::after_expiry(count, &expiry).await,
            ("tower", "expiry") => tower_sessions_lib::after_expiry(count, &expiry).await,
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
    new_visitor(app).await.map(drop)
}

/// Sends `GET /new` through `app`, checks that it answered 200 with a cookie, and returns the
/// `Cookie` header the visitor sends back.
async fn new_visitor(app: &Router) -> Result<HeaderValue, String> {
    let response = session_engine_bench::call(app, "GET", "/new", None).await?;
    session_engine_bench::cookie_from(&response)
        .ok_or_else(|| "GET /new answered without a cookie".to_owned())
}

/// Sends `GET PATH` with `cookie` through `app` and checks that it answered 200.
async fn returning_visitor(app: &Router, path: &str, cookie: &HeaderValue) -> Result<(), String> {
    session_engine_bench::call(app, "GET", path, Some(cookie))
        .await
        .map(drop)
}

/// The settings of the memory-after-expiry mode.
struct Expiry {
    /// The sessions' duration.
    duration: Duration,
    /// The longest the traffic after expiry runs.
    traffic: Duration,
    /// Requests per second of that traffic.
    rate: u32,
}

/// Returning visitors of the traffic after expiry.
const VISITORS: usize = 100;

impl Expiry {
    fn from_args(args: &[String]) -> Result<Self, String> {
        let seconds = |index: usize, default: u64, name: &str| -> Result<u64, String> {
            args.get(index).map_or(Ok(default), |text| {
                text.parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{name} must be a positive whole number"))
            })
        };
        Ok(Self {
            duration: Duration::from_secs(seconds(0, 15, "SECONDS")?),
            traffic: Duration::from_secs(seconds(1, 60, "TRAFFIC_SECONDS")?),
            rate: u32::try_from(seconds(2, 1000, "RATE")?).map_err(|e| e.to_string())?,
        })
    }
}

/// Memory after expiry (see the module docs): `app` serves `/new`, `/d` and `/e` with sessions
/// lasting `expiry.duration`; `stored` tells how many records the store holds, when it can.
async fn after_expiry(
    lib: &str,
    count: usize,
    expiry: &Expiry,
    app: Router,
    stored: impl Fn() -> Option<usize>,
) -> Result<(), String> {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    for _ in 0..WARM_UP {
        request_new(&app).await?;
    }
    let start = rss_bytes()?;
    let created = Instant::now();
    for _ in 0..count {
        request_new(&app).await?;
    }
    let creation = created.elapsed();
    let full = rss_bytes()?;
    if creation >= expiry.duration {
        return Err(format!(
            "creating {count} sessions took {:.1} s, longer than their duration of {} s: \
             give them a longer one",
            creation.as_secs_f64(),
            expiry.duration.as_secs()
        ));
    }
    let stored_full = stored();
    println!(
        "{lib} expiry: {count} sessions of {} s created in {:.1} s; RSS {:.1} -> {:.1} MiB; \
         waiting for them to expire",
        expiry.duration.as_secs(),
        creation.as_secs_f64(),
        mib(start),
        mib(full),
    );
    tokio::time::sleep(expiry.duration + Duration::from_secs(1)).await;
    let expired = rss_bytes()?;
    let stored_expired = stored();
    let limit = start + start / 10;

    let mut visitors: Vec<HeaderValue> = Vec::with_capacity(VISITORS);
    let mut requests = 0_u64;
    let mut lowest = expired;
    let mut recovered = None;
    let per_batch = (expiry.rate / 100).max(1);
    let mut batches = tokio::time::interval(Duration::from_millis(10));
    let traffic = Instant::now();
    let mut next_report = Duration::from_secs(5);
    let mut rss = expired;
    while traffic.elapsed() < expiry.traffic {
        batches.tick().await;
        for _ in 0..per_batch {
            if visitors.len() < VISITORS {
                visitors.push(new_visitor(&app).await?);
            } else {
                let visitor = &visitors[(requests % VISITORS as u64) as usize];
                let path = if requests.is_multiple_of(2) {
                    "/d"
                } else {
                    "/e"
                };
                returning_visitor(&app, path, visitor).await?;
            }
            requests += 1;
        }
        rss = rss_bytes()?;
        lowest = lowest.min(rss);
        if rss <= limit {
            recovered = Some((traffic.elapsed(), requests));
            break;
        }
        if traffic.elapsed() >= next_report {
            println!(
                "  {:.0} s of traffic, {requests} requests: RSS {:.1} MiB",
                traffic.elapsed().as_secs_f64(),
                mib(rss)
            );
            next_report += Duration::from_secs(5);
        }
    }
    let seconds = traffic.elapsed().as_secs_f64();
    let stored_end = stored();
    let show = |n: Option<usize>| n.map_or_else(|| "n/a".to_owned(), |n| n.to_string());
    match recovered {
        Some((after, after_requests)) => println!(
            "{lib} expiry: RSS {:.1} MiB, within 10 % of the start ({:.1} MiB), after {:.1} s \
             and {after_requests} requests of traffic",
            mib(rss),
            mib(start),
            after.as_secs_f64()
        ),
        None => println!(
            "{lib} expiry: RSS {:.1} MiB after {seconds:.1} s and {requests} requests of \
             traffic (lowest {:.1} MiB): not within 10 % of the start ({:.1} MiB)",
            mib(rss),
            mib(lowest),
            mib(start)
        ),
    }
    println!(
        "RESULT mode=expiry lib={lib} sessions={count} duration_s={} rate={} traffic_limit_s={} \
         creation_s={:.1} rss_start={start} rss_full={full} rss_expired={expired} \
         rss_end={rss} rss_lowest={lowest} recovered={} recovered_after_s={} \
         recovered_after_requests={} traffic_s={seconds:.1} requests={requests} \
         stored_full={} stored_expired={} stored_end={}",
        expiry.duration.as_secs(),
        expiry.rate,
        expiry.traffic.as_secs(),
        creation.as_secs_f64(),
        if recovered.is_some() { "yes" } else { "no" },
        recovered.map_or_else(
            || "n/a".to_owned(),
            |(t, _)| format!("{:.1}", t.as_secs_f64())
        ),
        recovered.map_or_else(|| "n/a".to_owned(), |(_, n)| n.to_string()),
        show(stored_full),
        show(stored_expired),
        show(stored_end),
    );
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

    pub(crate) async fn after_expiry(count: usize, expiry: &Expiry) -> Result<(), String> {
        let store = Arc::new(MemoryStore::new());
        let engine = SessionEngine::builder()
            .secret(SECRET)
            .shared_store(store.clone())
            .duration(expiry.duration)
            .build()
            .map_err(|e| e.to_string())?;
        let app = Router::new()
            .route("/new", get(session_engine_bench::new))
            .route("/d", get(session_engine_bench::read))
            .route("/e", get(session_engine_bench::increment))
            .layer(SessionLayer::new(engine))
            .with_state(());
        super::after_expiry("engine", count, expiry, app, || Some(store.len())).await
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
                .map(drop)
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
    use tower_sessions::{Expiry, MemoryStore, Session, SessionManagerLayer, SessionStore};

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

    pub(crate) async fn after_expiry(count: usize, expiry: &super::Expiry) -> Result<(), String> {
        let seconds = i64::try_from(expiry.duration.as_secs()).map_err(|e| e.to_string())?;
        let app = Router::new()
            .route("/new", get(new))
            .route("/d", get(read))
            .route("/e", get(increment))
            .layer(
                SessionManagerLayer::new(MemoryStore::default())
                    .with_expiry(Expiry::OnInactivity(Duration::seconds(seconds))),
            )
            .with_state(());
        // The store cannot tell its size.
        super::after_expiry("tower", count, expiry, app, || None).await
    }

    async fn read(session: Session) -> Result<String, StatusCode> {
        let visits = session
            .get::<u64>("visits")
            .await
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        Ok(visits.unwrap_or(0).to_string())
    }

    async fn increment(session: Session) -> Result<String, StatusCode> {
        let visits = session
            .get::<u64>("visits")
            .await
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
            .unwrap_or(0)
            + 1;
        session
            .insert("visits", visits)
            .await
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        Ok(visits.to_string())
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
