//! What each part of the library's metrics costs on this machine, timed alone: a sample in the
//! store call histogram, a counter's increment, and the clock a store call is timed with (two
//! raw reads of `quanta`'s counter and their difference), beside one read of
//! `quanta::Instant::now` and of the OS's clock (`std::time::Instant::now`).
//!
//! ```text
//! cargo run --release -p session-engine-bench --bin metric_costs -- [COUNT]
//! ```
//!
//! Prometheus' recorder is installed as the in-process benchmarks install it
//! ([`session_engine_bench::install_prometheus`]), and the handles are registered with it as
//! the engine registers its own (once, then kept). Each part runs COUNT times (default
//! 10,000,000) in a loop, twice; printed: ns per operation. The histogram's upkeep, which
//! moves its samples into the buckets, runs every 1,000,000 samples in the loop, so that its
//! share is counted. A loop keeps its data in the CPU's caches, so these are lower bounds of
//! what the same work costs inside a request.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use metrics::{Key, Level, Metadata};
use session_engine::observability::STORE_CALL_SECONDS;

const USAGE: &str = "usage: metric_costs [COUNT]";

static HISTOGRAM: Key = Key::from_static_name(STORE_CALL_SECONDS);
static COUNTER: Key = Key::from_static_name("metric_costs_counter");
static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

/// ns per run of `op`, over `count` runs.
fn time(count: u64, mut op: impl FnMut(u64)) -> f64 {
    let started = Instant::now();
    for i in 0..count {
        op(i);
    }
    started.elapsed().as_secs_f64() * 1e9 / count as f64
}

fn main() -> ExitCode {
    let count = match std::env::args().nth(1).map(|n| n.parse::<u64>()) {
        None => 10_000_000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let prometheus = match session_engine_bench::install_prometheus() {
        Ok(handle) => handle,
        Err(failure) => {
            eprintln!("installing Prometheus' recorder: {failure}");
            return ExitCode::FAILURE;
        }
    };
    let histogram = metrics::with_recorder(|r| r.register_histogram(&HISTOGRAM, &METADATA));
    let counter = metrics::with_recorder(|r| r.register_counter(&COUNTER, &METADATA));
    let clock = quanta::Clock::new();
    println!("{count} of each, ns per operation:");
    for round in 1..=2 {
        let sample = time(count, |i| {
            histogram.record(black_box(i as f64 * 1e-9));
            if i % 1_000_000 == 999_999 {
                prometheus.run_upkeep();
            }
        });
        let increment = time(count, |_| counter.increment(black_box(1)));
        let raw = time(count, |_| {
            let started = clock.raw();
            black_box(clock.delta(started, clock.raw()));
        });
        let instant = time(count, |_| {
            black_box(quanta::Instant::now());
        });
        let os_clock = time(count, |_| {
            black_box(std::time::Instant::now());
        });
        println!(
            "round {round}: histogram sample {sample:.1}, counter increment {increment:.1}, \
             two raw counter reads and their difference {raw:.1}, quanta::Instant::now \
             {instant:.1}, std::time::Instant::now {os_clock:.1}"
        );
    }
    ExitCode::SUCCESS
}
