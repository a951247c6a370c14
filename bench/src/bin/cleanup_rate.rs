//! How fast the SQL stores' `cleanup()` walks a large table: a table filled in bulk, then
//! `cleanup()` called (each call one bounded step, 2 s at most by default) until a walk has
//! gone through every row.
//!
//! ```text
//! cargo run --release -p session-engine-bench --bin cleanup_rate -- STORE [ROWS] [EXPIRED_PERCENT]
//! ```
//!
//! `STORE`: `postgres` (`BENCH_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`,
//! table `BENCH_TABLE`, default `bench_cleanup_rate`) or `sqlite` (the file
//! `BENCH_SQLITE_PATH`, default one in the system's temporary directory). `ROWS`: default
//! 2,000,000; `EXPIRED_PERCENT`: the share of them expired, default 10.
//!
//! The rows are made by one `INSERT … SELECT` (keys in the stores' own form: 43 characters,
//! in random order; data `{"visits": 1}`), expired rows spread evenly through the key order,
//! plus one expired row under a key after every other, so that the walk has gone through the
//! whole table once every expired row is gone. PostgreSQL's table is then vacuumed and
//! analyzed (as autovacuum would have done to a table in use) and SQLite's WAL checkpointed.
//! Two walks are timed, each with the store's defaults (batches of 1,000 rows, a 2 s budget per
//! call): the first removes every expired row; the second walks the same table again with
//! only one row expired (its last, added again), the rate of a clean-up that finds little to
//! do. Printed per walk: the calls it took, its time (the sum of the calls'), rows walked per
//! second and rows removed per second, as a `RESULT` line for bench/scripts/bench.
//!
//! The walks stop with an error after `CLEANUP_LIMIT_S` seconds (default 300). The table, or
//! the file, is dropped at the end, on failure too.

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use session_engine::SessionStore;
use session_engine::store::postgres::PostgresStore;
use session_engine::store::sqlite::SqliteStore;
use sqlx::{AssertSqlSafe, Connection as _, PgConnection};

const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const TABLE: &str = "bench_cleanup_rate";
const USAGE: &str = "usage: cleanup_rate postgres|sqlite [ROWS] [EXPIRED_PERCENT]";

/// The key of the row after every other: the stores' keys are 43 characters of base64url (or
/// hex here, for SQLite), all of which sort before `z` repeated 64 times.
const LAST_KEY: &str = "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz";

/// One of the stores, and what fills and drops its table.
enum Bench {
    Postgres {
        store: PostgresStore,
        url: String,
        table: String,
    },
    Sqlite {
        store: SqliteStore,
        path: String,
    },
}

impl Bench {
    async fn open(name: &str) -> Result<Self, String> {
        match name {
            "postgres" => {
                let url = std::env::var("BENCH_POSTGRES_URL").unwrap_or(POSTGRES_URL.to_owned());
                let table = std::env::var("BENCH_TABLE").unwrap_or(TABLE.to_owned());
                let store = PostgresStore::connect(&url)
                    .await
                    .and_then(|store| store.with_table_name(&table))
                    .map_err(|e| e.to_string())?;
                Ok(Self::Postgres { store, url, table })
            }
            "sqlite" => {
                let path = std::env::var("BENCH_SQLITE_PATH").unwrap_or_else(|_| {
                    let file = format!("cleanup_rate-{}.db", std::process::id());
                    std::env::temp_dir().join(file).display().to_string()
                });
                let store = SqliteStore::open(&path).await.map_err(|e| e.to_string())?;
                Ok(Self::Sqlite { store, path })
            }
            _ => Err(USAGE.to_owned()),
        }
    }

    fn store(&self) -> &dyn SessionStore {
        match self {
            Self::Postgres { store, .. } => store,
            Self::Sqlite { store, .. } => store,
        }
    }

    async fn migrate(&self) -> Result<(), String> {
        match self {
            Self::Postgres { store, .. } => store.migrate().await,
            Self::Sqlite { store, .. } => store.migrate().await,
        }
        .map_err(|e| e.to_string())
    }

    /// A connection of its own, without the store's 5 s `statement_timeout`, for the
    /// statements that take longer: the fill, `VACUUM`, the drop.
    async fn admin(url: &str) -> Result<PgConnection, String> {
        PgConnection::connect(url).await.map_err(|e| e.to_string())
    }

    /// Adds `rows` rows, `percent` % of them expired, spread evenly through the key order.
    async fn fill(&self, rows: u64, percent: u64) -> Result<(), String> {
        let (rows, percent) = (to_i64(rows)?, to_i64(percent)?);
        match self {
            Self::Postgres { url, table, .. } => {
                let mut admin = Self::admin(url).await?;
                let sql = format!(
                    "INSERT INTO \"{table}\" (key, data, created_at, expires_at) \
                     SELECT rtrim(translate(encode(sha256(('cleanup-rate ' || n)::bytea), \
                     'base64'), '+/', '-_'), '='), '{{\"visits\": 1}}', \
                     now() - interval '2 hours', \
                     now() + CASE WHEN n % 100 < $2 THEN interval '-1 hour' \
                     ELSE interval '1 hour' END \
                     FROM generate_series(0, $1::int8 - 1) AS n"
                );
                sqlx::query(AssertSqlSafe(sql))
                    .bind(rows)
                    .bind(percent)
                    .execute(&mut admin)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::raw_sql(AssertSqlSafe(format!("VACUUM ANALYZE \"{table}\"")))
                    .execute(&mut admin)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Self::Sqlite { store, .. } => {
                sqlx::query(
                    "WITH RECURSIVE n(i) AS \
                     (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?1) \
                     INSERT INTO sessions (key, data, created_ms, expires_ms) \
                     SELECT lower(substr(hex(randomblob(32)), 1, 43)), '{\"visits\":1}', \
                     ?3 - 7200000, ?3 + CASE WHEN i % 100 < ?2 THEN -3600000 ELSE 3600000 END \
                     FROM n",
                )
                .bind(rows)
                .bind(percent)
                .bind(now_ms()?)
                .execute(store.pool())
                .await
                .map_err(|e| e.to_string())?;
                sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(store.pool())
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        self.add_last_expired().await
    }

    /// The expired row whose key sorts after every other.
    async fn add_last_expired(&self) -> Result<(), String> {
        match self {
            Self::Postgres { store, table, .. } => {
                let sql = format!(
                    "INSERT INTO \"{table}\" (key, data, created_at, expires_at) \
                     VALUES ($1, '{{}}', now() - interval '2 hours', now() - interval '1 hour')"
                );
                sqlx::query(AssertSqlSafe(sql))
                    .bind(LAST_KEY)
                    .execute(store.pool())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Self::Sqlite { store, .. } => {
                sqlx::query(
                    "INSERT INTO sessions (key, data, created_ms, expires_ms) \
                     VALUES (?1, '{}', ?2 - 7200000, ?2 - 3600000)",
                )
                .bind(LAST_KEY)
                .bind(now_ms()?)
                .execute(store.pool())
                .await
                .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// Drops the table, or removes the file.
    async fn drop_all(self) -> Result<(), String> {
        match self {
            Self::Postgres { store, url, table } => {
                store.pool().close().await;
                let mut admin = Self::admin(&url).await?;
                sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE IF EXISTS \"{table}\"")))
                    .execute(&mut admin)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Self::Sqlite { store, path } => {
                store.pool().close().await;
                for suffix in ["", "-wal", "-shm"] {
                    let file = format!("{path}{suffix}");
                    match std::fs::remove_file(&file) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(format!("{file}: {e}"));
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }
}

fn to_i64(n: u64) -> Result<i64, String> {
    i64::try_from(n).map_err(|_| format!("{n} is too large"))
}

fn now_ms() -> Result<i64, String> {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?;
    i64::try_from(since.as_millis()).map_err(|e| e.to_string())
}

/// One walk: the calls it took, their time in all, and the rows they removed.
struct Walk {
    calls: u64,
    time: Duration,
    removed: u64,
}

/// Calls `cleanup()` until it has removed `expired` rows (the last of them under the last
/// key: the walk has then gone through the whole table).
async fn walk(store: &dyn SessionStore, expired: u64, limit: Instant) -> Result<Walk, String> {
    let mut walk = Walk {
        calls: 0,
        time: Duration::ZERO,
        removed: 0,
    };
    while walk.removed < expired {
        if Instant::now() > limit {
            return Err(format!(
                "the time limit passed after {} calls and {} of {expired} rows removed",
                walk.calls, walk.removed
            ));
        }
        let started = Instant::now();
        let removed = store.cleanup().await.map_err(|e| e.to_string())?;
        walk.time += started.elapsed();
        walk.calls += 1;
        walk.removed += removed;
    }
    Ok(walk)
}

fn report(store: &str, rows: u64, percent: u64, fill: Duration, name: &str, walk: &Walk) {
    let seconds = walk.time.as_secs_f64();
    let walked = rows as f64 / seconds;
    let removed = walk.removed as f64 / seconds;
    eprintln!(
        "{store}, {name} walk: {rows} rows, {} removed, in {} calls, {seconds:.2} s: \
         {walked:.0} rows walked/s, {removed:.0} rows removed/s",
        walk.removed, walk.calls
    );
    println!(
        "RESULT store={store} rows={rows} expired_percent={percent} fill_s={:.1} walk={name} \
         calls={} seconds={seconds:.3} removed={} walked_per_s={walked:.0} \
         removed_per_s={removed:.0}",
        fill.as_secs_f64(),
        walk.calls,
        walk.removed
    );
}

async fn run(bench: &Bench, name: &str, rows: u64, percent: u64) -> Result<(), String> {
    let limit_s: u64 = std::env::var("CLEANUP_LIMIT_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    bench.migrate().await?;
    let started = Instant::now();
    bench.fill(rows, percent).await?;
    let fill = started.elapsed();
    let total = rows + 1;
    eprintln!("{name}: {total} rows made in {:.1} s", fill.as_secs_f64());
    let expired = rows / 100 * percent + (rows % 100).min(percent) + 1;
    let limit = Instant::now() + Duration::from_secs(limit_s);
    let first = walk(bench.store(), expired, limit).await?;
    report(name, total, percent, fill, "first", &first);
    // The first walk ended on the last row: the next call finds no row after it, and starts
    // the next walk over.
    bench.add_last_expired().await?;
    let second = walk(bench.store(), 1, limit).await?;
    report(name, total - expired + 1, percent, fill, "second", &second);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: u64| -> Result<u64, String> {
        args.get(i)
            .map_or(Ok(default), |s| s.parse().map_err(|_| USAGE.to_owned()))
    };
    let parsed = (|| {
        let name = args.first().ok_or(USAGE)?.clone();
        let (rows, percent) = (number(1, 2_000_000)?, number(2, 10)?);
        if rows == 0 || percent > 100 {
            return Err(USAGE.to_owned());
        }
        Ok::<_, String>((name, rows, percent))
    })();
    let (name, rows, percent) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let bench = match Bench::open(&name).await {
        Ok(bench) => bench,
        Err(error) => {
            eprintln!("{name}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = run(&bench, &name, rows, percent).await;
    let dropped = bench.drop_all().await;
    let errors: Vec<String> = [result.err(), dropped.err()]
        .into_iter()
        .flatten()
        .collect();
    for error in &errors {
        eprintln!("{name}: {error}");
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
