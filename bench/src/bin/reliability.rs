//! Reliability measured: a client model drives one or two demo servers (`examples/demo.rs`) on
//! one store, while a fault is injected underneath (failover rows) or for a long run with
//! sessions expiring all along (soak rows); it counts what was lost. `scripts/reliability`
//! starts the servers, runs this per row and writes RELIABILITY.md from the results.
//!
//! ```text
//! reliability run            # one row; settings from the environment (below); JSON to RELI_OUT
//! reliability report DIR FILE  # the rows' JSON files in DIR → FILE's generated sections
//! ```
//!
//! # The client model
//!
//! `RELI_CLIENTS` virtual clients, each with a cookie jar of its own, turn between the
//! instances (`RELI_URLS`, comma-separated) request after request, with a think time of
//! `RELI_THINK_MS` (uniform between half and one and a half of it). A client logs in
//! (`POST /login`), then makes 5 to 30 requests: `GET /visits` (60 %), whose acknowledged count
//! it remembers, `GET /peek` (25 %) and `GET /me` (15 %); then it logs out (`POST /logout`) and
//! checks that `/me` answers 401 with the old cookie on every instance, or, with a share of
//! `RELI_ABANDON_PERCENT`, abandons the session, which must then expire: `/me` with its
//! cookie must answer 401 from `SESSION_DURATION_MS` (`RELI_SESSION_MS`) plus a second after its
//! last request.
//!
//! What it counts:
//! - acknowledged writes lost: a count lower than the last acknowledged `/visits` (`/visits`
//!   answering a count that is not one above it, or `/peek` lower than it), or the whole session
//!   gone (a `/visits` that answers a new session, `/me` 401 while logged in): each lost
//!   increment counts, and a lost login counts as one write;
//! - logouts undone: `/me` answering 200 with the cookie of an acknowledged logout, right after
//!   it and again once the run is over (the fault healed);
//! - expired sessions still served (soak): `/me` 200 after the session's expiry;
//! - slow requests: longer than `RELI_STORE_TIMEOUT_MS` plus `RELI_MARGIN_MS` (the engine's
//!   `store_timeout` bounds every store call, R15); requests give up at twice the store timeout
//!   plus the margin, and count as errors and slow then;
//! - per second (of a request's start): requests, errors (any answer but the expected, or no
//!   answer) and latency percentiles.
//!
//! A loss is *inside the store's guarantees* when `RELI_LOSS_ALLOWED` is `before-fault` (Redis'
//! asynchronous replication at a failover, a Redis without persistence restarted) and the lost
//! write, login or logout was acknowledged before the fault command returned: the command kills
//! the server (and, for a restart, starts it again), so whatever was acknowledged until then was
//! acknowledged by the server that died, and whatever after by its successor. Every other loss is
//! outside them: a bug.
//!
//! # Faults and samples
//!
//! At `RELI_FAULT_AT` seconds, `RELI_FAULT_CMD` runs under `bash -c` (the run goes on
//! meanwhile). Time to recover: from the fault to the first of five seconds in a row in each of
//! which requests completed and none failed (counted by the second a request *ends* in: a
//! request stuck in a store call fails seconds after it began, and a second in which nothing
//! completes is no sign of health). Each second the driver samples the
//! resident memory of `RELI_PIDS` (the demo servers, from `/proc/PID/status`), the store's size
//! (the output of `RELI_SIZE_CMD`, run under `bash -c`) and its own count of live sessions
//! (logged in, or abandoned and not yet expired).
//!
//! Other settings: `RELI_NAME`, `RELI_KIND` (`failover` or `soak`), `RELI_STORE` and
//! `RELI_FAULT` (what the report says of the row), `RELI_SECS` (the run's length).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};

const START_MARKER: &str = "<!-- reliability:start -->";
const END_MARKER: &str = "<!-- reliability:end -->";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => run(),
        Some("report") if args.len() == 3 => report(&args[1], &args[2]),
        _ => Err("usage: reliability run | reliability report DIR FILE".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("reliability: {error}");
            ExitCode::FAILURE
        }
    }
}

// ---- settings ----

#[derive(Debug, Clone)]
struct Config {
    name: String,
    kind: String,
    store: String,
    fault: String,
    urls: Vec<String>,
    clients: usize,
    think: Duration,
    secs: u64,
    fault_at: Option<u64>,
    fault_cmd: Option<String>,
    loss_allowed_before_fault: bool,
    store_timeout: Duration,
    margin: Duration,
    session: Duration,
    abandon_percent: u32,
    pids: Vec<u32>,
    size_cmd: Option<String>,
    out: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

fn env_or(name: &str, default: &str) -> String {
    env(name).unwrap_or_else(|| default.to_owned())
}

fn env_num(name: &str, default: u64) -> Result<u64, String> {
    match env(name) {
        None => Ok(default),
        Some(value) => value
            .trim()
            .parse()
            .map_err(|_| format!("{name} must be a whole number; got {value:?}")),
    }
}

impl Config {
    fn from_env() -> Result<Self, String> {
        let urls: Vec<String> = env_or("RELI_URLS", "http://127.0.0.1:7480")
            .split(',')
            .map(|url| url.trim().trim_end_matches('/').to_owned())
            .filter(|url| !url.is_empty())
            .collect();
        if urls.is_empty() {
            return Err("RELI_URLS names no server".into());
        }
        let loss = env_or("RELI_LOSS_ALLOWED", "none");
        let loss_allowed_before_fault = match loss.as_str() {
            "none" => false,
            "before-fault" => true,
            other => {
                return Err(format!(
                    "RELI_LOSS_ALLOWED must be none or before-fault; got {other:?}"
                ));
            }
        };
        let pids = match env("RELI_PIDS") {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|pid| {
                    pid.trim()
                        .parse()
                        .map_err(|_| format!("RELI_PIDS: not a pid: {pid:?}"))
                })
                .collect::<Result<_, _>>()?,
        };
        let clients = usize::try_from(env_num("RELI_CLIENTS", 32)?).unwrap_or(usize::MAX);
        if clients == 0 {
            return Err("RELI_CLIENTS must be at least 1".into());
        }
        Ok(Self {
            name: env_or("RELI_NAME", "row"),
            kind: env_or("RELI_KIND", "failover"),
            store: env_or("RELI_STORE", "?"),
            fault: env_or("RELI_FAULT", "none"),
            urls,
            clients,
            think: Duration::from_millis(env_num("RELI_THINK_MS", 40)?),
            secs: env_num("RELI_SECS", 60)?.max(1),
            fault_at: env("RELI_FAULT_AT")
                .map(|_| env_num("RELI_FAULT_AT", 0))
                .transpose()?,
            fault_cmd: env("RELI_FAULT_CMD"),
            loss_allowed_before_fault,
            store_timeout: Duration::from_millis(env_num("RELI_STORE_TIMEOUT_MS", 5000)?),
            margin: Duration::from_millis(env_num("RELI_MARGIN_MS", 1000)?),
            session: Duration::from_millis(env_num("RELI_SESSION_MS", 1_800_000)?),
            abandon_percent: u32::try_from(env_num("RELI_ABANDON_PERCENT", 0)?.min(100))
                .unwrap_or(100),
            pids,
            size_cmd: env("RELI_SIZE_CMD"),
            out: env_or("RELI_OUT", "reliability.json"),
        })
    }

    fn slow_after(&self) -> Duration {
        self.store_timeout + self.margin
    }

    fn give_up_after(&self) -> Duration {
        self.store_timeout * 2 + self.margin
    }
}

// ---- what the run records ----

/// One second of the run: the requests that started in it (and, apart, those that ended in it).
struct Second {
    ok: u64,
    errors: u64,
    ended_ok: u64,
    ended_errors: u64,
    latency_us: Histogram<u64>,
}

impl Second {
    fn new() -> Self {
        Self {
            ok: 0,
            errors: 0,
            ended_ok: 0,
            ended_errors: 0,
            latency_us: histogram(),
        }
    }
}

/// 1 µs to 2 min, 2 significant digits (1 %): about 20 KiB each, one per second of the run.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 2).expect("valid bounds")
}

/// A sample of the servers and the store, taken once a second.
#[derive(Clone, Copy, Default)]
struct Sample {
    rss_kb: Option<u64>,
    store_size: Option<u64>,
    live: i64,
}

#[derive(Default)]
struct Counts {
    logins: u64,
    writes_acked: u64,
    writes_lost_inside: u64,
    writes_lost_outside: u64,
    sessions_lost_inside: u64,
    sessions_lost_outside: u64,
    /// A count higher than every write sent could make it.
    phantom_writes: u64,
    logouts_acked: u64,
    logouts_undone_inside: u64,
    logouts_undone_outside: u64,
    expiry_checked: u64,
    expiry_outlived: u64,
    slow: u64,
    timeouts: u64,
    max_latency_us: u64,
    /// The first few losses, for the report: (what, acknowledged at s, found at s).
    events: Vec<String>,
    /// Errors by kind (status or transport failure), for the report.
    error_kinds: BTreeMap<String, u64>,
}

/// What every client and the sampler share. The mutexes are std's: each is held for a few
/// counter updates and never across an `.await`.
struct Shared {
    config: Config,
    http: Client<HttpConnector, Empty<Bytes>>,
    start: Instant,
    end: Instant,
    /// When the fault command began.
    fault: OnceLock<Instant>,
    /// When the fault command returned: the end of what the store may lose.
    fault_done: OnceLock<Instant>,
    seconds: Vec<Mutex<Second>>,
    counts: Mutex<Counts>,
    /// Sessions logged in and not yet logged out or abandoned.
    logged_in: AtomicI64,
    /// Expiry instants of abandoned sessions not yet expired.
    abandoned: Mutex<BinaryHeap<Reverse<Instant>>>,
}

impl Shared {
    fn second_of(&self, at: Instant) -> usize {
        let index = usize::try_from(at.saturating_duration_since(self.start).as_secs())
            .unwrap_or(usize::MAX);
        index.min(self.seconds.len() - 1)
    }

    fn at_s(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.start).as_secs_f64()
    }

    /// Whether a loss of something acknowledged at `acked` is one the store may make.
    fn inside(&self, acked: Instant) -> bool {
        self.config.loss_allowed_before_fault
            && self.fault_done.get().is_some_and(|done| acked < *done)
    }

    fn event(&self, counts: &mut Counts, what: String) {
        if counts.events.len() < 20 {
            counts.events.push(what);
        }
    }
}

// ---- requests ----

enum Jar {
    Set(String),
    Removed,
    Untouched,
}

struct Answer {
    status: Option<StatusCode>,
    body: String,
    jar: Jar,
}

impl Answer {
    fn is(&self, status: StatusCode) -> bool {
        self.status == Some(status)
    }
}

/// Sends one request, records it in its second; `expected`: the statuses that are not errors.
async fn call(
    shared: &Shared,
    method: Method,
    url: &str,
    cookie: Option<&str>,
    expected: &[StatusCode],
) -> Answer {
    let mut request = Request::builder().method(method).uri(url);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let request = request.body(Empty::new()).expect("a valid request");
    let started = Instant::now();
    let exchange = async {
        let response = shared.http.request(request).await.map_err(|e| {
            if e.is_connect() {
                "connect".to_owned()
            } else {
                "transport".to_owned()
            }
        })?;
        let status = response.status();
        let jar = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .filter_map(|value| cookie::Cookie::parse(value.to_owned()).ok())
            .next_back()
            .map_or(Jar::Untouched, |set| {
                let removed = set.value().is_empty()
                    || set
                        .max_age()
                        .is_some_and(|age| age.is_zero() || age.is_negative());
                if removed {
                    Jar::Removed
                } else {
                    Jar::Set(format!("{}={}", set.name(), set.value()))
                }
            });
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|_| "body".to_owned())?
            .to_bytes();
        Ok::<_, String>((status, jar, String::from_utf8_lossy(&body).into_owned()))
    };
    let outcome = tokio::time::timeout(shared.config.give_up_after(), exchange).await;
    let took = started.elapsed();
    let (answer, failure) = match outcome {
        Ok(Ok((status, jar, body))) => {
            let failure = (!expected.contains(&status)).then(|| status.as_u16().to_string());
            let answer = Answer {
                status: Some(status),
                body,
                jar,
            };
            (answer, failure)
        }
        Ok(Err(kind)) => (no_answer(), Some(kind)),
        Err(_) => (no_answer(), Some("timeout".to_owned())),
    };
    let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    {
        let mut second = shared.seconds[shared.second_of(started)]
            .lock()
            .expect("not poisoned");
        second.latency_us.saturating_record(micros.max(1));
        if failure.is_some() {
            second.errors += 1;
        } else {
            second.ok += 1;
        }
    }
    {
        let mut second = shared.seconds[shared.second_of(Instant::now())]
            .lock()
            .expect("not poisoned");
        if failure.is_some() {
            second.ended_errors += 1;
        } else {
            second.ended_ok += 1;
        }
    }
    let mut counts = shared.counts.lock().expect("not poisoned");
    counts.max_latency_us = counts.max_latency_us.max(micros);
    if took > shared.config.slow_after() {
        counts.slow += 1;
    }
    if let Some(kind) = failure {
        if kind == "timeout" {
            counts.timeouts += 1;
        }
        *counts.error_kinds.entry(kind).or_default() += 1;
    }
    answer
}

fn no_answer() -> Answer {
    Answer {
        status: None,
        body: String::new(),
        jar: Jar::Untouched,
    }
}

// ---- the client model ----

/// A check to make later with a cookie that must no longer work.
struct Pending {
    due: Instant,
    cookie: String,
    /// When the logout was acknowledged; `None` for an abandoned session that must expire.
    logout_acked: Option<Instant>,
}

struct LoggedIn {
    cookie: String,
    user: String,
    /// The count of the last acknowledged `/visits` (0 after the login).
    acked: u64,
    /// When the last write (the login or a `/visits`) was acknowledged.
    acked_at: Instant,
    /// `/visits` that failed since: each may or may not have counted.
    unsure: u64,
    last_request: Instant,
}

struct VirtualClient {
    id: usize,
    shared: Arc<Shared>,
    rng: SmallRng,
    turn: usize,
    cycle: u64,
    pending: Vec<Pending>,
}

const OK: &[StatusCode] = &[StatusCode::OK];
const OK_OR_401: &[StatusCode] = &[StatusCode::OK, StatusCode::UNAUTHORIZED];

impl VirtualClient {
    fn next_url(&mut self, path: &str) -> String {
        let urls = &self.shared.config.urls;
        self.turn = (self.turn + 1) % urls.len();
        format!("{}{path}", urls[self.turn])
    }

    async fn think(&mut self) {
        let think = self.shared.config.think;
        if !think.is_zero() {
            let factor = self.rng.random_range(0.5..1.5);
            tokio::time::sleep(think.mul_f64(factor)).await;
        }
    }

    fn running(&self) -> bool {
        Instant::now() < self.shared.end
    }

    async fn run(mut self) {
        while self.running() {
            self.session_cycle().await;
            self.check_due(false).await;
        }
        self.check_due(true).await;
    }

    /// One session: a login, some requests, a logout or an abandon.
    async fn session_cycle(&mut self) {
        self.cycle += 1;
        let user = format!("c{}-{}", self.id, self.cycle);
        let url = self.next_url(&format!("/login?user={user}"));
        self.think().await;
        let answer = call(&self.shared, Method::POST, &url, None, OK).await;
        let cookie = match (answer.is(StatusCode::OK), answer.jar) {
            (true, Jar::Set(cookie)) => cookie,
            _ => {
                // Failed (recorded as an error): wait a little, as a user would.
                tokio::time::sleep(Duration::from_millis(200)).await;
                return;
            }
        };
        let now = Instant::now();
        let mut session = LoggedIn {
            cookie,
            user,
            acked: 0,
            acked_at: now,
            unsure: 0,
            last_request: now,
        };
        self.shared.counts.lock().expect("not poisoned").logins += 1;
        self.shared.logged_in.fetch_add(1, Ordering::Relaxed);
        let steps = self.rng.random_range(5..=30);
        let mut alive = true;
        for _ in 0..steps {
            if !self.running() {
                break;
            }
            self.think().await;
            let pick = self.rng.random_range(0..100);
            alive = if pick < 60 {
                self.visits(&mut session).await
            } else if pick < 85 {
                self.peek(&mut session).await
            } else {
                self.me(&mut session).await
            };
            if !alive {
                break;
            }
        }
        self.shared.logged_in.fetch_sub(1, Ordering::Relaxed);
        if !alive {
            return;
        }
        // Before leaving it, one more read on the other instance: the count must be there.
        if !self.peek(&mut session).await {
            return;
        }
        let abandon = self.rng.random_range(0..100) < self.shared.config.abandon_percent;
        if abandon {
            let expires = session.last_request + self.shared.config.session;
            self.shared
                .abandoned
                .lock()
                .expect("not poisoned")
                .push(Reverse(expires));
            self.pending.push(Pending {
                due: expires + Duration::from_secs(1),
                cookie: session.cookie,
                logout_acked: None,
            });
        } else {
            self.logout(session).await;
        }
    }

    /// Records the loss of writes acknowledged up to `session.acked_at`.
    fn lost(&self, session: &LoggedIn, lost_writes: u64, whole_session: bool, how: &str) {
        let shared = &self.shared;
        let inside = shared.inside(session.acked_at);
        let mut counts = shared.counts.lock().expect("not poisoned");
        // A lost session loses its login too.
        let writes = lost_writes + u64::from(whole_session);
        match (inside, whole_session) {
            (true, true) => counts.sessions_lost_inside += 1,
            (false, true) => counts.sessions_lost_outside += 1,
            _ => {}
        }
        if inside {
            counts.writes_lost_inside += writes;
        } else {
            counts.writes_lost_outside += writes;
        }
        let what = format!(
            "{} ({}): {} write(s) lost{}, the last acknowledged at {:.3} s, found at {:.3} s",
            session.user,
            how,
            writes,
            if whole_session {
                ", the whole session"
            } else {
                ""
            },
            shared.at_s(session.acked_at),
            shared.at_s(Instant::now()),
        );
        shared.event(&mut counts, what);
    }

    /// `GET /visits`; false when the session turned out lost.
    async fn visits(&mut self, session: &mut LoggedIn) -> bool {
        let url = self.next_url("/visits");
        let answer = call(&self.shared, Method::GET, &url, Some(&session.cookie), OK).await;
        session.last_request = Instant::now();
        if !answer.is(StatusCode::OK) {
            session.unsure += 1;
            return true;
        }
        let Ok(count) = answer.body.trim().parse::<u64>() else {
            session.unsure += 1;
            return true;
        };
        if let Jar::Set(cookie) = &answer.jar
            && *cookie != session.cookie
        {
            // A new session: the one logged in is gone.
            self.lost(
                session,
                session.acked,
                true,
                "/visits answered a new session",
            );
            return false;
        }
        let before = count.saturating_sub(1);
        if before < session.acked {
            self.lost(
                session,
                session.acked - before,
                false,
                "/visits counted from less",
            );
        } else if before > session.acked + session.unsure {
            let mut counts = self.shared.counts.lock().expect("not poisoned");
            counts.phantom_writes += before - session.acked - session.unsure;
        }
        session.acked = count;
        session.acked_at = Instant::now();
        session.unsure = 0;
        self.shared
            .counts
            .lock()
            .expect("not poisoned")
            .writes_acked += 1;
        true
    }

    /// `GET /peek`; false when the session turned out lost.
    async fn peek(&mut self, session: &mut LoggedIn) -> bool {
        let url = self.next_url("/peek");
        let answer = call(&self.shared, Method::GET, &url, Some(&session.cookie), OK).await;
        session.last_request = Instant::now();
        if !answer.is(StatusCode::OK) {
            return true;
        }
        let Ok(count) = answer.body.trim().parse::<u64>() else {
            return true;
        };
        if count < session.acked {
            let whole = count == 0;
            self.lost(session, session.acked - count, whole, "/peek lower");
            if whole {
                return false;
            }
            session.acked = count;
        }
        true
    }

    /// `GET /me`; false when the session turned out lost.
    async fn me(&mut self, session: &mut LoggedIn) -> bool {
        let url = self.next_url("/me");
        let answer = call(
            &self.shared,
            Method::GET,
            &url,
            Some(&session.cookie),
            OK_OR_401,
        )
        .await;
        session.last_request = Instant::now();
        if answer.is(StatusCode::UNAUTHORIZED) {
            self.lost(session, session.acked, true, "/me 401 while logged in");
            return false;
        }
        true
    }

    async fn logout(&mut self, session: LoggedIn) {
        let url = self.next_url("/logout");
        let answer = call(&self.shared, Method::POST, &url, Some(&session.cookie), OK).await;
        if !answer.is(StatusCode::OK) {
            return; // not acknowledged: nothing to hold it to
        }
        let acked = Instant::now();
        self.shared
            .counts
            .lock()
            .expect("not poisoned")
            .logouts_acked += 1;
        self.check_gone(&session.cookie, Some(acked)).await;
        // Again once the run is over, the fault healed.
        self.pending.push(Pending {
            due: self.shared.end,
            cookie: session.cookie,
            logout_acked: Some(acked),
        });
    }

    /// `/me` with `cookie` on every instance must answer 401; counts what answers 200.
    async fn check_gone(&mut self, cookie: &str, logout_acked: Option<Instant>) {
        let urls = self.shared.config.urls.clone();
        let mut served = false;
        let mut checked = false;
        for base in &urls {
            let url = format!("{base}/me");
            let answer = call(&self.shared, Method::GET, &url, Some(cookie), OK_OR_401).await;
            checked |= answer.status.is_some();
            served |= answer.is(StatusCode::OK);
        }
        let shared = &self.shared;
        let mut counts = shared.counts.lock().expect("not poisoned");
        match logout_acked {
            Some(acked) if served => {
                if shared.inside(acked) {
                    counts.logouts_undone_inside += 1;
                } else {
                    counts.logouts_undone_outside += 1;
                }
                let what = format!(
                    "a logout acknowledged at {:.3} s undone: /me 200 at {:.3} s",
                    shared.at_s(acked),
                    shared.at_s(Instant::now())
                );
                shared.event(&mut counts, what);
            }
            Some(_) => {}
            None if checked => {
                counts.expiry_checked += 1;
                if served {
                    counts.expiry_outlived += 1;
                    let what = format!(
                        "an abandoned session still served at {:.3} s, past its expiry",
                        shared.at_s(Instant::now())
                    );
                    shared.event(&mut counts, what);
                }
            }
            None => {}
        }
    }

    /// Makes the checks that are due (all the logout checks when `last`; expiry checks not
    /// due by then are dropped).
    async fn check_due(&mut self, last: bool) {
        let now = Instant::now();
        let (due, later): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.due <= now || (last && p.logout_acked.is_some()));
        self.pending = later;
        for pending in due {
            self.check_gone(&pending.cookie, pending.logout_acked).await;
        }
    }
}

// ---- samples and the fault ----

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn shell(command: &str) -> std::io::Result<std::process::Output> {
    std::process::Command::new("bash")
        .arg("-c")
        .arg(command)
        .output()
}

async fn sampler(shared: Arc<Shared>) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while Instant::now() < shared.end {
        tick.tick().await;
        let now = Instant::now();
        let expired_gone = {
            let mut heap = shared.abandoned.lock().expect("not poisoned");
            while heap.peek().is_some_and(|Reverse(at)| *at <= now) {
                heap.pop();
            }
            i64::try_from(heap.len()).unwrap_or(i64::MAX)
        };
        let live = shared.logged_in.load(Ordering::Relaxed) + expired_gone;
        let rss_kb = (!shared.config.pids.is_empty()).then(|| {
            shared
                .config
                .pids
                .iter()
                .filter_map(|&pid| rss_kb(pid))
                .sum()
        });
        let store_size = match shared.config.size_cmd.clone() {
            None => None,
            Some(command) => tokio::task::spawn_blocking(move || {
                let output = shell(&command).ok()?;
                String::from_utf8_lossy(&output.stdout)
                    .split_whitespace()
                    .filter_map(|word| word.parse::<u64>().ok())
                    .reduce(|a, b| a + b)
            })
            .await
            .ok()
            .flatten(),
        };
        samples.push(Sample {
            rss_kb,
            store_size,
            live,
        });
    }
    samples
}

async fn inject(shared: Arc<Shared>) -> Value {
    let (Some(at), Some(command)) = (shared.config.fault_at, shared.config.fault_cmd.clone())
    else {
        return Value::Null;
    };
    tokio::time::sleep_until((shared.start + Duration::from_secs(at)).into()).await;
    let began = Instant::now();
    let _ = shared.fault.set(began);
    let output = tokio::task::spawn_blocking(move || shell(&command)).await;
    let _ = shared.fault_done.set(Instant::now());
    let (status, stderr) = match output {
        Ok(Ok(output)) => (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ),
        Ok(Err(error)) => (None, error.to_string()),
        Err(error) => (None, error.to_string()),
    };
    json!({
        "at_s": shared.at_s(began),
        "took_s": began.elapsed().as_secs_f64(),
        "status": status,
        "stderr": stderr,
    })
}

// ---- the run ----

fn run() -> Result<(), String> {
    let config = Config::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start tokio: {error}"))?;
    let result = runtime.block_on(drive(config.clone()))?;
    let text = serde_json::to_string_pretty(&result).expect("JSON serializes");
    std::fs::write(&config.out, text).map_err(|error| format!("{}: {error}", config.out))?;
    println!("{}", summary_line(&result));
    Ok(())
}

async fn drive(config: Config) -> Result<Value, String> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    let http = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    let start = Instant::now();
    let end = start + Duration::from_secs(config.secs);
    // Room after the end for the requests still in flight and the last checks.
    let slots = usize::try_from(config.secs).unwrap_or(usize::MAX) + 60;
    let shared = Arc::new(Shared {
        http,
        start,
        end,
        fault: OnceLock::new(),
        fault_done: OnceLock::new(),
        seconds: (0..slots).map(|_| Mutex::new(Second::new())).collect(),
        counts: Mutex::new(Counts::default()),
        logged_in: AtomicI64::new(0),
        abandoned: Mutex::new(BinaryHeap::new()),
        config: config.clone(),
    });
    let sampling = tokio::spawn(sampler(Arc::clone(&shared)));
    let fault = tokio::spawn(inject(Arc::clone(&shared)));
    let mut clients = Vec::new();
    for id in 0..config.clients {
        let client = VirtualClient {
            id,
            shared: Arc::clone(&shared),
            rng: SmallRng::seed_from_u64(id as u64 ^ 0x5e55_1011),
            turn: id,
            cycle: 0,
            pending: Vec::new(),
        };
        clients.push(tokio::spawn(client.run()));
    }
    for client in clients {
        client
            .await
            .map_err(|error| format!("a client failed: {error}"))?;
    }
    let fault = fault
        .await
        .map_err(|error| format!("the fault task: {error}"))?;
    let samples = sampling
        .await
        .map_err(|error| format!("the sampler: {error}"))?;
    Ok(results(&shared, &samples, fault))
}

fn percentile_ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    if histogram.is_empty() {
        return 0.0;
    }
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

/// Errors, requests and latency over the seconds `range`.
fn phase(seconds: &[(u64, u64, Histogram<u64>)], range: std::ops::Range<usize>) -> Value {
    let range = range.start.min(seconds.len())..range.end.min(seconds.len());
    let mut histogram = histogram();
    let (mut ok, mut errors) = (0, 0);
    for (o, e, h) in &seconds[range.clone()] {
        ok += o;
        errors += e;
        histogram.add(h).expect("same bounds");
    }
    let total = ok + errors;
    json!({
        "from_s": range.start,
        "to_s": range.end,
        "requests": total,
        "errors": errors,
        "error_rate": if total == 0 { 0.0 } else { errors as f64 / total as f64 },
        "p50_ms": percentile_ms(&histogram, 0.5),
        "p99_ms": percentile_ms(&histogram, 0.99),
        "max_ms": histogram.max() as f64 / 1000.0,
    })
}

fn results(shared: &Shared, samples: &[Sample], fault: Value) -> Value {
    let config = &shared.config;
    let secs = usize::try_from(config.secs).unwrap_or(usize::MAX);
    let ended: Vec<(u64, u64)> = shared
        .seconds
        .iter()
        .map(|second| {
            let second = second.lock().expect("not poisoned");
            (second.ended_ok, second.ended_errors)
        })
        .collect();
    let seconds: Vec<(u64, u64, Histogram<u64>)> = shared
        .seconds
        .iter()
        .map(|second| {
            let second = second.lock().expect("not poisoned");
            (second.ok, second.errors, second.latency_us.clone())
        })
        .collect();
    // The run proper: the seconds in which requests started before the end.
    let run = &seconds[..secs.min(seconds.len())];
    let fault_s = fault
        .get("at_s")
        .and_then(Value::as_f64)
        .map(|at| at.floor() as usize);
    let (recovery_s, recovered_at) = match fault_s {
        None => (Value::Null, None),
        Some(from) => {
            // The first of five seconds in a row in which requests ended, none failed.
            let mut at = None;
            let mut clean = 0;
            let mut candidate = from;
            let ended_in_run = &ended[..secs.min(ended.len())];
            for (index, (ok, errors)) in ended_in_run.iter().enumerate().skip(from) {
                if *errors == 0 && *ok > 0 {
                    if clean == 0 {
                        candidate = index;
                    }
                    clean += 1;
                    if clean == 5 {
                        at = Some(candidate);
                        break;
                    }
                } else {
                    clean = 0;
                }
            }
            match at {
                Some(at) => (json!(at - from), Some(at)),
                None => (Value::String("not within the run".into()), None),
            }
        }
    };
    let phases = match fault_s {
        Some(from) => {
            let healed = recovered_at.unwrap_or(secs).max(from + 1);
            json!({
                "before": phase(run, 0..from),
                "during": phase(run, from..healed),
                "after": phase(run, healed..secs),
            })
        }
        None => json!({ "all": phase(run, 0..secs) }),
    };
    // Per minute (soak): p99, errors, and the samples at its end.
    let minutes: Vec<Value> = (0..secs.div_ceil(60))
        .map(|minute| {
            let range = minute * 60..((minute + 1) * 60).min(secs);
            let mut value = phase(run, range.clone());
            let sample = samples
                .get(range.end.saturating_sub(1))
                .copied()
                .unwrap_or_default();
            value["rss_kb"] = json!(sample.rss_kb);
            value["store_size"] = json!(sample.store_size);
            value["live"] = json!(sample.live);
            value
        })
        .collect();
    let series: Vec<Value> = run
        .iter()
        .enumerate()
        .map(|(index, (ok, errors, histogram))| {
            let sample = samples.get(index).copied().unwrap_or_default();
            let (ended_ok, ended_errors) = ended.get(index).copied().unwrap_or_default();
            json!([
                index,
                ok + errors,
                errors,
                percentile_ms(histogram, 0.99),
                sample.rss_kb,
                sample.store_size,
                sample.live,
                ended_ok,
                ended_errors
            ])
        })
        .collect();
    let counts = shared.counts.lock().expect("not poisoned");
    let total: u64 = run.iter().map(|(ok, errors, _)| ok + errors).sum();
    let errors: u64 = seconds.iter().map(|(_, errors, _)| errors).sum();
    let mut row = json!({
        "name": config.name,
        "kind": config.kind,
        "store": config.store,
        "fault": config.fault,
        "instances": config.urls.len(),
        "clients": config.clients,
        "think_ms": config.think.as_millis() as u64,
        "secs": config.secs,
        "session_ms": config.session.as_millis() as u64,
        "abandon_percent": config.abandon_percent,
        "loss_allowed": if config.loss_allowed_before_fault { "before-fault" } else { "none" },
        "slow_after_ms": config.slow_after().as_millis() as u64,
        "requests": total,
        "requests_per_s": total as f64 / config.secs as f64,
        "errors": errors,
        "error_kinds": counts.error_kinds,
        "slow": counts.slow,
        "timeouts": counts.timeouts,
        "max_latency_ms": counts.max_latency_us as f64 / 1000.0,
        "logins": counts.logins,
        "writes_acked": counts.writes_acked,
        "writes_lost_inside": counts.writes_lost_inside,
        "writes_lost_outside": counts.writes_lost_outside,
        "sessions_lost_inside": counts.sessions_lost_inside,
        "sessions_lost_outside": counts.sessions_lost_outside,
        "phantom_writes": counts.phantom_writes,
        "logouts_acked": counts.logouts_acked,
        "logouts_undone_inside": counts.logouts_undone_inside,
        "logouts_undone_outside": counts.logouts_undone_outside,
        "expiry_checked": counts.expiry_checked,
        "expiry_outlived": counts.expiry_outlived,
        "events": counts.events,
        "fault_run": fault,
        "recovery_s": recovery_s,
        "phases": phases,
        "minutes": minutes,
        "series_columns": ["second", "started", "errors", "p99_ms", "rss_kb", "store_size", "live", "ended_ok", "ended_errors"],
        "series": series,
    });
    // Where the row comes from, for the report (set by scripts/reliability).
    for field in ["commit", "date", "command"] {
        row[field] = json!(env(&env_name(field)));
    }
    row
}

fn summary_line(result: &Value) -> String {
    format!(
        "{}: {} requests, {} errors, {} slow, writes lost {}/{} (inside/outside), sessions lost \
         {}/{}, logouts undone {}/{}, expiry outlived {}, recovery {}",
        result["name"].as_str().unwrap_or("?"),
        result["requests"],
        result["errors"],
        result["slow"],
        result["writes_lost_inside"],
        result["writes_lost_outside"],
        result["sessions_lost_inside"],
        result["sessions_lost_outside"],
        result["logouts_undone_inside"],
        result["logouts_undone_outside"],
        result["expiry_outlived"],
        result["recovery_s"],
    )
}

// ---- the report ----

fn report(dir: &str, file: &str) -> Result<(), String> {
    let mut rows = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|error| format!("{dir}: {error}"))?;
    for entry in entries {
        let path = entry.map_err(|error| format!("{dir}: {error}"))?.path();
        if path.extension().is_some_and(|ext| ext == "json") {
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let row: Value =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            rows.push((path.file_name().unwrap_or_default().to_owned(), row));
        }
    }
    // The script names the files in the order the table shows them.
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let rows: Vec<Value> = rows.into_iter().map(|(_, row)| row).collect();
    let sections = sections(&rows);
    let old = std::fs::read_to_string(file).unwrap_or_default();
    let new = match (old.find(START_MARKER), old.find(END_MARKER)) {
        (Some(start), Some(end)) if start < end => format!(
            "{}{START_MARKER}\n{sections}{END_MARKER}{}",
            &old[..start],
            &old[end + END_MARKER.len()..]
        ),
        _ if old.trim().is_empty() => format!(
            "# Reliability\n\nHow session-engine's demo fares when its store fails under it, \
             and over long runs.\n\n{START_MARKER}\n{sections}{END_MARKER}\n"
        ),
        _ => format!(
            "{}\n\n{START_MARKER}\n{sections}{END_MARKER}\n",
            old.trim_end()
        ),
    };
    std::fs::write(file, new).map_err(|error| format!("{file}: {error}"))
}

fn ms(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".into(), |ms| format!("{ms:.1}"))
}

fn percent(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".into(), |rate| format!("{:.2} %", rate * 100.0))
}

fn pair(row: &Value, inside: &str, outside: &str) -> String {
    format!("{} / **{}**", row[inside], row[outside])
}

fn load(row: &Value) -> String {
    format!(
        "{} clients × {} instance(s), think {} ms: {:.0} req/s",
        row["clients"],
        row["instances"],
        row["think_ms"],
        row["requests_per_s"].as_f64().unwrap_or(0.0)
    )
}

fn sections(rows: &[Value]) -> String {
    let mut out = String::new();
    let header = |name: &str| env(name).unwrap_or_else(|| "?".into());
    // Each row says where it comes from; rows of an older driver fall back on this report's.
    let distinct = |name: &str, quote: &str| {
        let mut values: Vec<String> = Vec::new();
        for row in rows {
            let value = row[name]
                .as_str()
                .map_or_else(|| header(&env_name(name)), str::to_owned);
            if !values.contains(&value) {
                values.push(value);
            }
        }
        let quoted: Vec<String> = values
            .iter()
            .map(|v| format!("{quote}{v}{quote}"))
            .collect();
        quoted.join("; ")
    };
    let _ = writeln!(
        out,
        "Generated by `scripts/reliability` (the driver: `bench/src/bin/reliability.rs`; the \
         client model and every count are defined in its documentation). Machine: {} cores, \
         {}. Rows run: {}. Commit: {}. Commands: {}.\n",
        header("RELI_NPROC"),
        header("RELI_CPU"),
        distinct("date", ""),
        distinct("commit", ""),
        distinct("command", "`"),
    );
    let _ = writeln!(
        out,
        "Every run is on loopback. Each virtual client owns a cookie jar and turns between the \
         instances: it logs in, makes 5 to 30 requests (`/visits` 60 %, `/peek` 25 %, `/me` \
         15 %), then logs out and checks that `/me` answers 401 on every instance (again after \
         the run), or, in the soak, abandons the session and checks that it expired. *Inside / \
         outside* splits a loss between what the store's own guarantees allow (Redis' \
         asynchronous replication, or a Redis without persistence: what the server that died \
         acknowledged, until the fault command returned) and what they do not (a bug: **bold**, must be 0). A lost session \
         counts its login as one lost write.\n"
    );
    let failover: Vec<&Value> = rows
        .iter()
        .filter(|row| row["kind"] == "failover")
        .collect();
    let soak: Vec<&Value> = rows.iter().filter(|row| row["kind"] == "soak").collect();
    out.push_str("## Failover\n\n");
    if failover.is_empty() {
        out.push_str("Not run.\n\n");
    } else {
        out.push_str(
            "| store | fault (at) | run, load | errors before / during / after | p99 ms before / \
             during / after | recovery | slow | writes lost in / **out** | sessions lost in / \
             **out** | logouts undone in / **out** |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for row in &failover {
            let phases = &row["phases"];
            let rate = |name: &str| percent(&phases[name]["error_rate"]);
            let p99 = |name: &str| ms(&phases[name]["p99_ms"]);
            let recovery = match &row["recovery_s"] {
                Value::Number(n) => format!("{n} s"),
                other => other.as_str().unwrap_or("-").to_owned(),
            };
            let _ = writeln!(
                out,
                "| {} | {} (at {:.1} s) | {} s, {} | {} / {} / {} | {} / {} / {} | {} | {} (> {} ms) \
                 | {} of {} | {} | {} of {} |",
                row["store"].as_str().unwrap_or("?"),
                row["fault"].as_str().unwrap_or("?"),
                row["fault_run"]["at_s"].as_f64().unwrap_or(0.0),
                row["secs"],
                load(row),
                rate("before"),
                rate("during"),
                rate("after"),
                p99("before"),
                p99("during"),
                p99("after"),
                recovery,
                row["slow"],
                row["slow_after_ms"],
                pair(row, "writes_lost_inside", "writes_lost_outside"),
                row["writes_acked"].as_u64().unwrap_or(0) + row["logins"].as_u64().unwrap_or(0),
                pair(row, "sessions_lost_inside", "sessions_lost_outside"),
                pair(row, "logouts_undone_inside", "logouts_undone_outside"),
                row["logouts_acked"],
            );
        }
        out.push_str(
            "\n*Errors* and *p99* by the second a request began. *Recovery*: from the fault to \
             the first of five seconds in a row in which requests ended and none failed (by the \
             second a request ended); *during*: that span. *Slow*: requests that took longer than the \
             engine's `store_timeout` (5 s) plus a 1 s margin. *Writes lost … of N*: N is the \
             acknowledged logins and `/visits`.\n\n",
        );
        for row in &failover {
            notes(&mut out, row);
        }
    }
    out.push_str("## Soak\n\n");
    if soak.is_empty() {
        out.push_str("Not run.\n\n");
    } else {
        out.push_str(
            "| store | ran for | load | sessions made; live at end (max) | RSS MiB first min → \
             max → last | store size first min → max → last | p99 ms per minute: first / max / \
             last | errors | expired still served | writes lost / logouts undone |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for row in &soak {
            let minutes = row["minutes"].as_array().cloned().unwrap_or_default();
            let field = |index: usize, name: &str| minutes.get(index).map(|m| m[name].clone());
            let last = minutes.len().saturating_sub(1);
            let max_of = |name: &str| {
                minutes
                    .iter()
                    .filter_map(|m| m[name].as_f64())
                    .fold(None, |max: Option<f64>, v| {
                        Some(max.map_or(v, |m| m.max(v)))
                    })
            };
            let mib =
                |v: Option<f64>| v.map_or_else(|| "-".into(), |kb| format!("{:.1}", kb / 1024.0));
            let count = |v: Option<f64>| v.map_or_else(|| "-".into(), |n| format!("{n:.0}"));
            let first_f = |name: &str| field(0, name).and_then(|v| v.as_f64());
            let last_f = |name: &str| field(last, name).and_then(|v| v.as_f64());
            let max_live = max_of("live");
            let _ = writeln!(
                out,
                "| {} | {} s ({:.1} min) | {}, sessions of {} s, {} % abandoned | {}; {} ({}) | {} → {} → {} | {} → {} → {} | {} / {} / {} | {} | {} of {} | {} / {} |",
                row["store"].as_str().unwrap_or("?"),
                row["secs"],
                row["secs"].as_f64().unwrap_or(0.0) / 60.0,
                load(row),
                row["session_ms"].as_f64().unwrap_or(0.0) / 1000.0,
                row["abandon_percent"],
                row["logins"],
                count(last_f("live")),
                count(max_live),
                mib(first_f("rss_kb")),
                mib(max_of("rss_kb")),
                mib(last_f("rss_kb")),
                count(first_f("store_size")),
                count(max_of("store_size")),
                count(last_f("store_size")),
                ms(&field(0, "p99_ms").unwrap_or(Value::Null)),
                ms(&max_of("p99_ms").map_or(Value::Null, |v| json!(v))),
                ms(&field(last, "p99_ms").unwrap_or(Value::Null)),
                row["errors"],
                row["expiry_outlived"],
                row["expiry_checked"],
                row["writes_lost_inside"].as_u64().unwrap_or(0)
                    + row["writes_lost_outside"].as_u64().unwrap_or(0),
                row["logouts_undone_inside"].as_u64().unwrap_or(0)
                    + row["logouts_undone_outside"].as_u64().unwrap_or(0),
            );
        }
        out.push_str(
            "\n*Live*: the driver's own count (logged in, or abandoned and not yet expired). \
             RSS: the demo processes' VmRSS, summed, at the end of each minute; store size: \
             keys (Redis `DBSIZE`) or rows (`count(*)`), at the same moments.\n\n",
        );
        for row in &soak {
            notes(&mut out, row);
        }
    }
    out
}

/// The environment variable that `scripts/reliability` sets for a row's `field`.
fn env_name(field: &str) -> String {
    format!("RELI_{}", field.to_ascii_uppercase())
}

/// A row's details: its error kinds, its first losses, its fault command.
fn notes(out: &mut String, row: &Value) {
    let _ = write!(
        out,
        "- **{}** ({}): {} requests, {} errors",
        row["name"].as_str().unwrap_or("?"),
        row["store"].as_str().unwrap_or("?"),
        row["requests"],
        row["errors"],
    );
    if let Some(kinds) = row["error_kinds"].as_object()
        && !kinds.is_empty()
    {
        let list: Vec<String> = kinds.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = write!(out, " ({})", list.join(", "));
    }
    let _ = write!(
        out,
        ", max latency {} ms, phantom counts {}",
        ms(&row["max_latency_ms"]),
        row["phantom_writes"]
    );
    if let (Some(date), Some(commit)) = (row["date"].as_str(), row["commit"].as_str()) {
        let _ = write!(out, "; run {date} at {commit}");
    }
    let fault = &row["fault_run"];
    if !fault.is_null() {
        let _ = write!(
            out,
            "; the fault command ran {:.1} s, exit {}",
            fault["took_s"].as_f64().unwrap_or(0.0),
            fault["status"]
        );
    }
    out.push_str(".\n");
    if let Some(events) = row["events"].as_array() {
        for event in events.iter().take(5) {
            let _ = writeln!(out, "  - {}", event.as_str().unwrap_or("?"));
        }
        if events.len() > 5 {
            let _ = writeln!(out, "  - … ({} listed in the row's JSON)", events.len());
        }
    }
}
