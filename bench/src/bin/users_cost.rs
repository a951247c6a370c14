//! What the user index (`track_users(true)`) costs, per store: a login, a returning visitor's
//! read (d) and a logout, each with the index on and off, in one run.
//!
//! ```text
//! cargo run --release -p session-engine-bench --bin users_cost -- [ROUNDS] [STORE…]
//! ```
//!
//! `STORE`: `memory`, `sqlite` (a temporary file), `postgres` (`BENCH_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`, table `bench_users_cost`, dropped at the end),
//! `redis` (`REDIS_URL`, default `redis://127.0.0.1:6379/9`, keys under `bench-users:`) and
//! `cluster` (`REDIS_CLUSTER_URL`, a `redis-cluster://` URL, when set); all of them by default.
//! `ROUNDS`: default 2000 per store and setting.
//!
//! Each round, untimed, makes an anonymous session (`GET /new`); then, timed one by one:
//! `POST /login` (start, roll, tie: `set_user` with the index on, an ordinary key of the same
//! size with it off), `GET /d` on the new cookie, `POST /logout` (destroy). The two engines share
//! one store and take turns round by round, each going first every other round, so that both
//! meet the same server and the same noise. The requests go through the whole layer in process
//! (no socket) to the real server. Printed: the median of each operation in µs, both settings,
//! and their ratio; for `redis`, also the commands the server ran per operation (its
//! `total_commands_processed`, less the `INFO` that reads it; a script counts once for itself
//! and once for each command it runs), which, unlike time, does not vary from run to run.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::http::HeaderValue;
use axum::routing::{get, post};
use fred::interfaces::ClientLike;
use session_engine::store::redis::{RedisStore, fred};
use session_engine::{Error, Session, SessionEngine, SessionLayer, SessionStore};

const SECRET: &str = "users-cost-secret-users-cost-secret-users-cost-secret-0123456789";
const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const TABLE: &str = "bench_users_cost";
const USAGE: &str = "usage: users_cost [ROUNDS] [memory|sqlite|postgres|redis|cluster]…";

/// A login: the privilege changes, so the id rolls, and the session is tied to its user.
async fn login_tied(session: Session) -> Result<&'static str, Error> {
    session.start().await?;
    session.roll().await?;
    session.set_user("user-0001")?;
    Ok("ok")
}

/// The same login with the index off: the same bytes under an ordinary key, so that only the
/// index differs.
async fn login_plain(session: Session) -> Result<&'static str, Error> {
    session.start().await?;
    session.roll().await?;
    session.set("_user_", "user-0001")?;
    Ok("ok")
}

async fn logout(session: Session) -> Result<&'static str, Error> {
    session.start().await?;
    session.destroy().await?;
    Ok("ok")
}

fn app(store: Arc<dyn SessionStore>, indexed: bool) -> Result<Router, String> {
    let engine = SessionEngine::builder()
        .secret(SECRET)
        .shared_store(store)
        .track_users(indexed)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Router::new()
        .route("/new", get(session_engine_bench::new))
        .route(
            "/login",
            if indexed {
                post(login_tied)
            } else {
                post(login_plain)
            },
        )
        .route("/d", get(session_engine_bench::read))
        .route("/logout", post(logout))
        .layer(SessionLayer::new(engine))
        .with_state(()))
}

/// Sends one request; answers its new cookie (`name=value`), if it set one.
async fn send(
    app: &Router,
    method: &str,
    path: &str,
    cookie: Option<&HeaderValue>,
) -> Result<Option<HeaderValue>, String> {
    let response = session_engine_bench::call(app, method, path, cookie).await?;
    Ok(session_engine_bench::cookie_from(&response))
}

/// The operations timed in each round, in order.
const OPERATIONS: [&str; 3] = ["login", "d", "logout"];

/// The times of each of [`OPERATIONS`], in ns, and the Redis commands each ran in all.
#[derive(Default)]
struct Costs {
    times: [Vec<u64>; 3],
    commands: [u64; 3],
}

/// Reads Redis's count of commands it ran, less the `INFO` that reads it.
async fn commands(redis: Option<&fred::clients::Client>) -> Result<u64, String> {
    let Some(redis) = redis else { return Ok(0) };
    let info: String = redis
        .info(Some(fred::types::InfoKind::Stats))
        .await
        .map_err(|e| e.to_string())?;
    info.lines()
        .find_map(|line| line.strip_prefix("total_commands_processed:"))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .ok_or_else(|| "no total_commands_processed in INFO stats".to_owned())
}

async fn round(
    app: &Router,
    costs: &mut Costs,
    redis: Option<&fred::clients::Client>,
) -> Result<(), String> {
    let anonymous = send(app, "GET", "/new", None)
        .await?
        .ok_or("no cookie from /new")?;
    let mut timed = async |index: usize, method, path, cookie| {
        let before = commands(redis).await?;
        let started = Instant::now();
        let set = send(app, method, path, Some(cookie)).await?;
        let elapsed = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let ran = commands(redis).await? - before;
        // The INFO after the request counts itself.
        costs.commands[index] += ran.saturating_sub(u64::from(redis.is_some()));
        costs.times[index].push(elapsed);
        Ok::<_, String>(set)
    };
    let cookie = timed(0, "POST", "/login", &anonymous).await?;
    let cookie = cookie.ok_or("no cookie from /login")?;
    timed(1, "GET", "/d", &cookie).await?;
    timed(2, "POST", "/logout", &cookie).await?;
    Ok(())
}

fn median(times: &mut [u64]) -> f64 {
    times.sort_unstable();
    times
        .get(times.len() / 2)
        .map_or(0.0, |&ns| ns as f64 / 1000.0)
}

async fn measure(
    name: &str,
    store: Arc<dyn SessionStore>,
    redis: Option<fred::clients::Client>,
    rounds: u32,
) -> Result<(), String> {
    let apps = [app(store.clone(), false)?, app(store, true)?];
    let mut costs = [Costs::default(), Costs::default()];
    // A warm-up of each, untimed.
    for (app, costs) in apps.iter().zip(&mut costs) {
        for _ in 0..rounds / 10 {
            round(app, costs, None).await?;
        }
        *costs = Costs::default();
    }
    for i in 0..rounds {
        // Which goes first changes every round: neither always follows the other's writes.
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            round(&apps[which], &mut costs[which], redis.as_ref()).await?;
        }
    }
    for (index, op) in OPERATIONS.into_iter().enumerate() {
        let off = median(&mut costs[0].times[index]);
        let on = median(&mut costs[1].times[index]);
        let mut line = format!(
            "| {name} | {op} | {off:.1} | {on:.1} | {:.2} |",
            on / off.max(f64::MIN_POSITIVE)
        );
        if redis.is_some() {
            let per = |c: &Costs| c.commands[index] as f64 / f64::from(rounds);
            line += &format!(" {:.1} → {:.1} |", per(&costs[0]), per(&costs[1]));
        } else {
            line += " |";
        }
        println!("{line}");
    }
    Ok(())
}

async fn run(rounds: u32, stores: &[String]) -> Result<(), String> {
    println!(
        "| store | operation | index off (µs, median) | index on (µs, median) | on / off | commands Redis ran per operation (those of its scripts included), off → on |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for store in stores {
        match store.as_str() {
            "memory" => {
                let store = Arc::new(session_engine::MemoryStore::new());
                measure("memory", store, None, rounds).await?;
            }
            "sqlite" => {
                use session_engine::store::sqlite::SqliteStore;
                let dir = std::env::temp_dir().join(format!("users-cost-{}", std::process::id()));
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                let path = dir.join("sessions.db");
                let opened = SqliteStore::open(&path.to_string_lossy()).await;
                let store = opened.map_err(|e| format!("sqlite: {e}"))?;
                store.migrate().await.map_err(|e| e.to_string())?;
                let measured = measure("sqlite", Arc::new(store), None, rounds).await;
                let _ = std::fs::remove_dir_all(&dir);
                measured?;
            }
            "postgres" => {
                use session_engine::store::postgres::PostgresStore;
                let url = std::env::var("BENCH_POSTGRES_URL").unwrap_or(POSTGRES_URL.into());
                let store = PostgresStore::connect(&url)
                    .await
                    .map_err(|e| format!("cannot connect to {url}: {e}"))?
                    .with_table_name(TABLE)
                    .map_err(|e| e.to_string())?;
                store.migrate().await.map_err(|e| e.to_string())?;
                let measured = measure("postgres", Arc::new(store.clone()), None, rounds).await;
                let dropped = sqlx_drop(&store).await;
                measured?;
                dropped?;
            }
            "redis" | "cluster" => {
                let url = if store == "redis" {
                    std::env::var("REDIS_URL").unwrap_or("redis://127.0.0.1:6379/9".into())
                } else {
                    match std::env::var("REDIS_CLUSTER_URL") {
                        Ok(url) => url,
                        Err(_) => {
                            eprintln!("cluster: skipped, REDIS_CLUSTER_URL is not set");
                            continue;
                        }
                    }
                };
                let redis = RedisStore::connect(&url)
                    .await
                    .map_err(|e| format!("cannot connect to {url}: {e}"))?
                    .with_key_prefix("bench-users:");
                // Commands are counted on a standalone server only: a Cluster's are spread.
                let counter = (store == "redis").then(|| redis.client().clone());
                measure(store, Arc::new(redis), counter, rounds).await?;
            }
            other => return Err(format!("unknown store {other}; {USAGE}")),
        }
    }
    Ok(())
}

async fn sqlx_drop(store: &session_engine::store::postgres::PostgresStore) -> Result<(), String> {
    sqlx::query("DROP TABLE IF EXISTS bench_users_cost")
        .execute(store.pool())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let rounds = match args.first().map(|a| a.parse::<u32>()) {
        Some(Ok(rounds)) => {
            args.remove(0);
            rounds
        }
        _ => 2000,
    };
    if args.is_empty() {
        args = ["memory", "sqlite", "postgres", "redis", "cluster"]
            .map(String::from)
            .to_vec();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match runtime.block_on(run(rounds, &args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("users_cost: {message}");
            ExitCode::FAILURE
        }
    }
}
