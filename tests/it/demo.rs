//! The demo (`examples/demo.rs`), the end-to-end contract: its routes and its settings, run as a
//! user runs it, over real HTTP on loopback.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{Method, StatusCode};

use crate::harness::{Reply, max_age};
use crate::net::{http, http_with};

/// The demo's binary, next to this test's own (`target/<profile>/examples/demo`); built with
/// this test's features when `cargo test` did not build it (`--test it` builds no example).
fn binary() -> &'static PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test's path");
        let profile = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target/<profile>");
        let binary = profile.join("examples").join("demo");
        if !binary.exists() {
            let features: Vec<&str> = [
                ("sqlite", cfg!(feature = "sqlite")),
                ("postgres", cfg!(feature = "postgres")),
                ("redis", cfg!(feature = "redis")),
                ("redis-tls", cfg!(feature = "redis-tls")),
            ]
            .into_iter()
            .filter_map(|(feature, on)| on.then_some(feature))
            .collect();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let status = Command::new(cargo)
                .args([
                    "build",
                    "--example",
                    "demo",
                    "--features",
                    &features.join(","),
                ])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("cargo runs");
            assert!(status.success(), "the demo builds");
        }
        binary
    })
}

/// A running demo, stopped when dropped.
struct Demo {
    child: Child,
    port: u16,
}

impl Demo {
    /// Starts the demo with these settings on a port the system chooses (`PORT=0`), and reads
    /// which from its start-up log line; the rest of its output is drained, never read.
    async fn start(settings: &[(&str, &str)]) -> Self {
        let mut child = Command::new(binary())
            .env_clear()
            .env("PORT", "0")
            .env(
                "SESSION_SECRETS",
                "a demo secret that is at least 32 bytes long",
            )
            .env("RUST_LOG", "info")
            .envs(settings.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the demo starts");
        let stdout = child.stdout.take().expect("piped");
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line
                    .split_once("addr=127.0.0.1:")
                    .and_then(|(_, rest)| rest.split(' ').next())
                    .and_then(|port| port.parse::<u16>().ok())
                {
                    let _ = port_tx.send(port);
                }
            }
        });
        let port =
            tokio::task::spawn_blocking(move || port_rx.recv_timeout(Duration::from_secs(20)))
                .await
                .expect("the reader ran")
                .expect("the demo says where it listens within 20 s");
        Self { child, port }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Reply {
        http(
            ([127, 0, 0, 1], self.port).into(),
            Method::GET,
            path,
            cookie,
        )
        .await
    }

    async fn post(&self, path: &str, cookie: Option<&str>) -> Reply {
        http(
            ([127, 0, 0, 1], self.port).into(),
            Method::POST,
            path,
            cookie,
        )
        .await
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_demos_routes_answer_as_the_contract_says() {
    let demo = Demo::start(&[("SESSION_DURATION_MS", "600000")]).await;
    let health = demo.get("/health", None).await;
    assert_eq!(
        (health.status, health.body.as_str()),
        (StatusCode::OK, "ok")
    );
    assert!(health.set_cookies.is_empty());

    let first = demo.get("/visits", None).await;
    assert_eq!(first.body, "1");
    assert_eq!(max_age(first.set_cookie()), 600);
    let cookie = first.cookie();
    assert_eq!(demo.get("/visits", Some(&cookie)).await.body, "2");
    // A read within the touch interval writes nothing and sends no cookie.
    let peek = demo.get("/peek", Some(&cookie)).await;
    assert_eq!(peek.body, "2");
    assert!(peek.set_cookies.is_empty(), "{peek:?}");
    assert_eq!(
        demo.get("/me", Some(&cookie)).await.status,
        StatusCode::UNAUTHORIZED
    );

    let login = demo.post("/login?user=ada", Some(&cookie)).await;
    assert_eq!((login.status, login.body.as_str()), (StatusCode::OK, "ok"));
    assert_ne!(login.cookie_id(), first.cookie_id(), "a login rolls the id");
    let cookie = login.cookie();
    assert_eq!(demo.get("/me", Some(&cookie)).await.body, "ada");
    assert_eq!(
        demo.get("/peek", Some(&cookie)).await.body,
        "2",
        "the roll kept the data"
    );

    let duration = demo.post("/duration?ms=7200000", Some(&cookie)).await;
    assert_eq!(duration.body, "ok");
    assert_eq!(max_age(duration.set_cookie()), 7200);

    let logout = demo.post("/logout", Some(&cookie)).await;
    assert_eq!(logout.body, "ok");
    assert!(logout.removes_cookie(), "{logout:?}");
    assert_eq!(
        demo.get("/me", Some(&cookie)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// `GET /` answers the route table, one route a line (SPEC section 6), without a session; every
/// route it lists is served.
#[tokio::test]
async fn the_root_lists_every_route() {
    let demo = Demo::start(&[]).await;
    let root = demo.get("/", None).await;
    assert_eq!(root.status, StatusCode::OK, "{root:?}");
    assert!(root.set_cookies.is_empty(), "{root:?}");
    let listed: Vec<(Method, String)> = root
        .body
        .lines()
        .map(|line| {
            let mut words = line.split_whitespace();
            let method = words
                .next()
                .and_then(|m| Method::from_bytes(m.as_bytes()).ok());
            let path = words.next().filter(|path| path.starts_with('/'));
            match (method, path) {
                (Some(method), Some(path)) => (method, path.to_owned()),
                _ => panic!("not a route line: {line:?}"),
            }
        })
        .collect();
    let paths: Vec<&str> = listed
        .iter()
        .map(|(_, path)| path.split('?').next().unwrap_or_default())
        .collect();
    assert_eq!(
        paths,
        [
            "/",
            "/health",
            "/metrics",
            "/visits",
            "/peek",
            "/login",
            "/me",
            "/sessions",
            "/logout-others",
            "/logout-everywhere",
            "/logout",
            "/duration",
        ]
    );
    for (method, path) in listed {
        let addr = ([127, 0, 0, 1], demo.port).into();
        let reply = http(addr, method.clone(), &path, None).await;
        assert_ne!(reply.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_ne!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
    }
}

/// The value of the sample `name` (with its labels, as the exposition writes them) in a
/// Prometheus text exposition; 0 when it is not there yet.
fn sample(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            (series == name).then(|| value.parse::<f64>().expect("a number"))
        })
        .unwrap_or(0.0)
}

/// SPEC section 6 (v3) and 7.4: `GET /metrics` answers the library's metrics in Prometheus'
/// text format, and they move with the traffic; no sample carries an id or a user name.
#[tokio::test]
async fn the_metrics_route_counts_what_the_sessions_do() {
    let demo = Demo::start(&[("SESSION_TOUCH_INTERVAL_MS", "0")]).await;
    let before = demo.get("/metrics", None).await;
    assert_eq!(before.status, StatusCode::OK, "{before:?}");
    assert!(before.set_cookies.is_empty(), "{before:?}");
    assert!(
        before.header_values("content-type")[0].starts_with("text/plain; version=0.0.4"),
        "{before:?}"
    );

    let first = demo.get("/visits", None).await;
    let cookie = first.cookie();
    assert_eq!(demo.get("/visits", Some(&cookie)).await.body, "2");
    // A touch interval of 0: a read moves the expiry.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(demo.get("/peek", Some(&cookie)).await.body, "2");
    let login = demo.post("/login?user=grace-hopper", Some(&cookie)).await;
    let cookie = login.cookie();
    assert_eq!(demo.post("/logout", Some(&cookie)).await.body, "ok");
    // The logged-out id again, and a forged one.
    assert_eq!(demo.get("/peek", Some(&cookie)).await.body, "0");
    assert_eq!(
        demo.get("/peek", Some("sid=forged.signature")).await.body,
        "0"
    );

    let after = demo.get("/metrics", None).await;
    let text = after.body.as_str();
    let rose = |name: &str| sample(text, name) - sample(&before.body, name);
    assert_eq!(rose("session_engine_sessions_created_total"), 1.0, "{text}");
    assert_eq!(rose("session_engine_sessions_written_total"), 1.0, "{text}");
    assert!(
        rose("session_engine_sessions_touched_total") >= 1.0,
        "{text}"
    );
    assert_eq!(rose("session_engine_sessions_rolled_total"), 1.0, "{text}");
    assert_eq!(
        rose("session_engine_sessions_destroyed_total"),
        1.0,
        "{text}"
    );
    assert_eq!(
        rose("session_engine_sessions_absent_total{reason=\"missing\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        rose("session_engine_sessions_absent_total{reason=\"invalid\"}"),
        1.0,
        "{text}"
    );
    for hook in ["id", "read", "write", "destroy"] {
        let count = format!("session_engine_store_call_seconds_count{{hook=\"{hook}\"}}");
        assert!(rose(&count) >= 1.0, "{hook}: {text}");
        let bucket =
            format!("session_engine_store_call_seconds_bucket{{hook=\"{hook}\",le=\"+Inf\"}}");
        assert_eq!(
            sample(text, &bucket),
            sample(text, &count),
            "{hook}: {text}"
        );
    }
    assert!(
        text.contains("# HELP session_engine_sessions_created_total"),
        "{text}"
    );
    for secret in [
        first.cookie_id(),
        login.cookie_id(),
        "grace-hopper".to_owned(),
    ] {
        assert!(!text.contains(&secret), "{secret} in {text}");
    }
}

#[tokio::test]
async fn session_touch_interval_ms_sets_the_touch_interval() {
    for (interval, refreshed) in [("0", true), ("3600000", false)] {
        let demo = Demo::start(&[("SESSION_TOUCH_INTERVAL_MS", interval)]).await;
        let cookie = demo.get("/visits", None).await.cookie();
        // A few milliseconds later: past a zero interval, well within an hour.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let peek = demo.get("/peek", Some(&cookie)).await;
        assert_eq!(peek.body, "1");
        assert_eq!(
            peek.set_cookies.len(),
            usize::from(refreshed),
            "{interval}: {peek:?}"
        );
    }
}

#[tokio::test]
async fn session_header_and_session_cookie_choose_the_transport() {
    let addr = |demo: &Demo| ([127, 0, 0, 1], demo.port).into();
    let demo = Demo::start(&[("SESSION_HEADER", "x-session")]).await;
    let first = demo.get("/visits", None).await;
    let signed = first.header_values("x-session");
    assert_eq!(signed.len(), 1, "{first:?}");
    assert_eq!(crate::harness::cookie_value(first.set_cookie()), signed[0]);
    let header = [("x-session", signed[0].as_str())];
    let second = http_with(addr(&demo), Method::GET, "/visits", &header).await;
    assert_eq!(second.body, "2");

    let demo = Demo::start(&[("SESSION_HEADER", "x-session"), ("SESSION_COOKIE", "false")]).await;
    let first = demo.get("/visits", None).await;
    assert!(first.set_cookies.is_empty(), "{first:?}");
    let signed = first.header_values("x-session");
    let header = [("x-session", signed[0].as_str())];
    let second = http_with(addr(&demo), Method::GET, "/visits", &header).await;
    assert_eq!(second.body, "2");
}

/// `SESSION_STORE` alone puts the sessions in Redis over TLS (trusting the CA the URL names)
/// or on the primary a Sentinel names.
#[cfg(all(feature = "testing", feature = "redis-tls"))]
#[tokio::test]
async fn session_store_takes_tls_and_sentinel_urls() {
    for url in [crate::stores::tls::url(), crate::stores::sentinel::url()] {
        let demo = Demo::start(&[("SESSION_STORE", url)]).await;
        let first = demo.get("/visits", None).await;
        assert_eq!(first.body, "1", "{url}: {first:?}");
        let second = demo.get("/visits", Some(&first.cookie())).await;
        assert_eq!(second.body, "2", "{url}: {second:?}");
    }
}

#[tokio::test]
async fn the_account_routes_list_and_end_a_users_sessions() {
    let demo = Demo::start(&[]).await;
    let login = |demo: &Demo| {
        let addr = ([127, 0, 0, 1], demo.port).into();
        async move {
            http(addr, Method::POST, "/login?user=ada", None)
                .await
                .cookie()
        }
    };
    let here = login(&demo).await;
    let there = login(&demo).await;
    let sessions = demo.get("/sessions", Some(&here)).await;
    assert_eq!(sessions.header_values("content-type"), ["application/json"]);
    let list: serde_json::Value = serde_json::from_str(&sessions.body).expect("JSON");
    let list = list.as_array().expect("a list");
    assert_eq!(list.len(), 2, "{list:?}");
    let current: Vec<bool> = list.iter().map(|s| s["current"] == true).collect();
    assert_eq!(current.iter().filter(|c| **c).count(), 1, "{list:?}");
    for listed in list {
        assert!(listed["created_ms"].as_u64().is_some() && listed["expires_ms"].as_u64().is_some());
    }

    let others = demo.post("/logout-others", Some(&here)).await;
    assert_eq!(
        (others.status, others.body.as_str()),
        (StatusCode::OK, "ok")
    );
    assert_eq!(
        demo.get("/me", Some(&there)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(demo.get("/me", Some(&here)).await.body, "ada");

    let everywhere = demo.post("/logout-everywhere", Some(&here)).await;
    assert_eq!(everywhere.status, StatusCode::OK);
    assert_eq!(max_age(everywhere.set_cookie()), 0, "the cookie is removed");
    assert_eq!(
        demo.get("/me", Some(&here)).await.status,
        StatusCode::UNAUTHORIZED
    );
    for route in ["/logout-others", "/logout-everywhere"] {
        assert_eq!(
            demo.post(route, None).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        demo.get("/sessions", None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn bad_settings_stop_the_demo_with_a_message() {
    for (name, value) in [
        ("SESSION_TOUCH_INTERVAL_MS", "soon"),
        ("SESSION_DURATION_MS", "0"),
        ("SESSION_SECRETS", "short"),
        ("SESSION_STORE", "mongodb://localhost"),
        ("SESSION_COOKIE_SECURE", "maybe"),
        ("SESSION_COOKIE", "maybe"),
        ("SESSION_COOKIE", "false"),
        ("SESSION_HEADER", "x session"),
    ] {
        let output = Command::new(binary())
            .env_clear()
            .env("PORT", "0")
            .env(name, value)
            .output()
            .expect("the demo runs");
        assert_eq!(output.status.code(), Some(1), "{name}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let named = stderr.contains(name) || stderr.contains("secret #0");
        assert!(named, "{name}={value}: {stderr}");
    }
}
