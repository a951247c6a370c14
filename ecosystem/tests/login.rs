//! The login example (`examples/login.rs`, SPEC 7.1): axum-login and axum-messages on
//! session-engine, run as a user runs it, over real HTTP on loopback, on every store.
//!
//! The store tests need the store's feature and its server: PostgreSQL on 127.0.0.1:5432
//! (`DATABASE_URL` overrides), where the example's table goes in a schema of the test's own,
//! dropped at the end; `redis-server` on `PATH`, for a Redis server of the test's own on a free
//! port (the example takes no key prefix: a server of its own keeps the flow out of the
//! developer's Redis); and a Redis Cluster at `REDIS_CLUSTER_URL` (`scripts/test` starts one
//! for the run and stops it; without it that test is skipped, saying so).

#[cfg(feature = "redis")]
use std::io::Write as _;
use std::net::SocketAddr;
#[cfg(feature = "redis")]
use std::net::TcpStream;
#[cfg(any(feature = "postgres", feature = "redis"))]
use std::process::Command;
#[cfg(feature = "redis")]
use std::process::{Child, Stdio};
use std::time::Duration;

use support::Example;

mod support;

const ADA: &str = "username=ada&password=correct+horse+battery+staple";
const BOB: &str = "username=bob&password=hunter2hunter2";
const WRONG: &str = "username=ada&password=hunter2hunter2";
const ADA_REMEMBERED: &str = "username=ada&password=correct+horse+battery+staple&remember=on";

/// A running login example, stopped when dropped.
struct Login(Example);

impl Login {
    /// Starts the example with `SESSION_STORE=store`.
    fn start(store: &str) -> Self {
        let envs = [
            (
                "SESSION_SECRETS",
                "a login secret that is at least 32 bytes",
            ),
            ("SESSION_STORE", store),
            ("RUST_LOG", "info"),
        ];
        let exe = env!("CARGO_BIN_EXE_login");
        Self(Example::start(exe, &envs, Duration::from_secs(30)))
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Reply {
        http(self.0.addr, "GET", path, cookie, None).await
    }

    async fn post(&self, path: &str, cookie: Option<&str>, form: Option<&str>) -> Reply {
        http(self.0.addr, "POST", path, cookie, form).await
    }
}

/// What a request answered.
#[derive(Debug)]
struct Reply {
    status: u16,
    set_cookies: Vec<String>,
    body: String,
}

impl Reply {
    /// The `Cookie` header that the one `Set-Cookie` of this reply asks a browser to send.
    fn cookie(&self) -> String {
        assert_eq!(self.set_cookies.len(), 1, "one Set-Cookie: {self:?}");
        let pair = self.set_cookies[0].split(';').next().expect("a pair");
        assert!(!pair.ends_with('='), "not a removal: {self:?}");
        pair.to_owned()
    }

    /// The `Max-Age` of the one `Set-Cookie` of this reply.
    fn max_age(&self) -> u64 {
        assert_eq!(self.set_cookies.len(), 1, "one Set-Cookie: {self:?}");
        self.set_cookies[0]
            .split(';')
            .find_map(|attribute| attribute.trim().strip_prefix("Max-Age="))
            .and_then(|seconds| seconds.parse().ok())
            .unwrap_or_else(|| panic!("a Max-Age: {self:?}"))
    }
}

/// One request, with its cookie and its form, if any.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> Reply {
    let mut headers = Vec::new();
    if form.is_some() {
        headers.push(("Content-Type", "application/x-www-form-urlencoded"));
    }
    if let Some(cookie) = cookie {
        headers.push(("Cookie", cookie));
    }
    let reply = support::http(addr, method, path, &headers, form.unwrap_or("")).await;
    Reply {
        status: reply.status,
        set_cookies: reply.all("set-cookie").map(str::to_owned).collect(),
        body: reply.body,
    }
}

/// The whole flow of SPEC 7.1 against a running example.
async fn the_flow(app: &Login) {
    // Anonymous: home, no session, no cookie; the protected page is closed.
    let home = app.get("/", None).await;
    assert_eq!((home.status, home.body.as_str()), (200, "home"));
    assert!(home.set_cookies.is_empty(), "{home:?}");
    assert_eq!(app.get("/protected", None).await.status, 401);

    // Wrong credentials: 401, and no session is made.
    let wrong = app.post("/login", None, Some(WRONG)).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.set_cookies.is_empty(), "{wrong:?}");

    // A login: welcome, a session, a flash shown exactly once.
    let ada = app.post("/login", None, Some(ADA)).await;
    assert_eq!((ada.status, ada.body.as_str()), (200, "welcome ada"));
    let ada_cookie = ada.cookie();
    assert_eq!(
        app.get("/", Some(&ada_cookie)).await.body,
        "home\nlogged in as ada"
    );
    assert_eq!(app.get("/", Some(&ada_cookie)).await.body, "home");
    assert_eq!(
        app.get("/protected", Some(&ada_cookie)).await.body,
        "hello ada"
    );

    // A login over a logged-in session (axum-login would keep its id): a new id, and the
    // presented one is dead.
    let bob = app.post("/login", Some(&ada_cookie), Some(BOB)).await;
    assert_eq!((bob.status, bob.body.as_str()), (200, "welcome bob"));
    let bob_cookie = bob.cookie();
    assert_ne!(bob_cookie, ada_cookie);
    assert_eq!(app.get("/protected", Some(&ada_cookie)).await.status, 401);
    assert_eq!(
        app.get("/protected", Some(&bob_cookie)).await.body,
        "hello bob"
    );
    assert_eq!(
        app.get("/", Some(&bob_cookie)).await.body,
        "home\nlogged in as bob"
    );

    // Wrong credentials over a live session: 401, and the session stays as it was.
    let wrong = app.post("/login", Some(&bob_cookie), Some(WRONG)).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.set_cookies.is_empty(), "{wrong:?}");
    assert_eq!(
        app.get("/protected", Some(&bob_cookie)).await.body,
        "hello bob"
    );

    // A logout destroys the session; its flash lives in a fresh one, shown once.
    let bye = app.post("/logout", Some(&bob_cookie), None).await;
    assert_eq!((bye.status, bye.body.as_str()), (200, "bye"));
    let after = bye.cookie();
    assert_ne!(after, bob_cookie);
    assert_eq!(app.get("/protected", Some(&bob_cookie)).await.status, 401);
    assert_eq!(app.get("/protected", Some(&after)).await.status, 401);
    assert_eq!(app.get("/", Some(&after)).await.body, "home\nlogged out");
    assert_eq!(app.get("/", Some(&after)).await.body, "home");

    // A forged cookie is no session, never an error.
    let forged = format!("{}x", &bob_cookie[..bob_cookie.len() - 1]);
    assert_eq!(app.get("/protected", Some(&forged)).await.status, 401);
}

/// A logout followed by a flash (SPEC 7.1 v3), as axum-login and axum-messages do it: ada is
/// logged in on a phone and on a laptop that asked to be remembered (a custom duration); the
/// laptop logs out. Its logged-in session is gone, the flash lives in a fresh session with the
/// engine's duration and no user, which can neither list nor end ada's sessions, and the
/// phone stays logged in.
async fn a_logout_with_a_flash(app: &Login) {
    let phone = app.post("/login", None, Some(ADA)).await.cookie();
    // ada's sessions that earlier runs left in this store end: the counts below are this run's.
    assert_eq!(
        app.post("/logout-others", Some(&phone), None).await.status,
        200
    );
    assert_eq!(listed(app, &phone).await, 1);
    let remembered = app.post("/login", None, Some(ADA_REMEMBERED)).await;
    assert_eq!(remembered.max_age(), 30 * 24 * 3600, "{remembered:?}");
    let laptop = remembered.cookie();
    assert_eq!(
        app.get("/", Some(&laptop)).await.body,
        "home\nlogged in as ada"
    );
    assert_eq!(listed(app, &phone).await, 2);

    let bye = app.post("/logout", Some(&laptop), None).await;
    assert_eq!((bye.status, bye.body.as_str()), (200, "bye"));
    let after = bye.cookie();
    assert_ne!(after, laptop);
    // The engine's 30 minutes, not the 30 days of the session logged out.
    assert_eq!(bye.max_age(), 30 * 60, "{bye:?}");

    // The logged-in session is gone.
    assert_eq!(app.get("/protected", Some(&laptop)).await.status, 401);
    assert_eq!(app.get("/sessions", Some(&laptop)).await.status, 401);
    // The fresh one is tied to no user.
    assert_eq!(app.get("/protected", Some(&after)).await.status, 401);
    assert_eq!(app.get("/sessions", Some(&after)).await.status, 401);
    assert_eq!(
        app.post("/logout-others", Some(&after), None).await.status,
        401
    );
    assert_eq!(app.get("/", Some(&after)).await.body, "home\nlogged out");
    assert_eq!(app.get("/", Some(&after)).await.body, "home");

    // The phone lives on, and ada's sessions are the phone's alone.
    assert_eq!(app.get("/protected", Some(&phone)).await.body, "hello ada");
    assert_eq!(listed(app, &phone).await, 1);
    // Its own logout leaves ada no session.
    app.post("/logout", Some(&phone), None).await;
    assert_eq!(app.get("/protected", Some(&phone)).await.status, 401);
}

/// How many sessions `GET /sessions` lists for the user of `cookie`'s session.
async fn listed(app: &Login, cookie: &str) -> usize {
    let reply = app.get("/sessions", Some(cookie)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let list: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON");
    list.as_array().expect("a list").len()
}

/// Both flows, on one running example.
async fn the_flows(app: &Login) {
    the_flow(app).await;
    a_logout_with_a_flash(app).await;
}

#[tokio::test]
async fn the_flow_on_the_memory_store() {
    the_flows(&Login::start("memory")).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn the_flow_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("login-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join("sessions.db");
    the_flows(&Login::start(&format!("sqlite://{}", path.display()))).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A schema of the test's own in the developer's PostgreSQL, dropped with all it holds when
/// dropped, even when the test fails. The example makes its table under the default name,
/// `sessions`, in the first schema of the search path: a URL that puts this schema there keeps
/// it out of `public`.
#[cfg(feature = "postgres")]
struct Schema {
    server: String,
    name: String,
}

#[cfg(feature = "postgres")]
impl Schema {
    fn create() -> Self {
        let server = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .subsec_nanos();
        let name = format!("login_test_{}_{nanos}", std::process::id());
        let schema = Self { server, name };
        schema.psql(&format!("CREATE SCHEMA {}", schema.name));
        schema
    }

    /// The server's URL, with this schema first on the search path.
    fn url(&self) -> String {
        let separator = if self.server.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options=-c%20search_path%3D{}",
            self.server, self.name
        )
    }

    /// What `query` returns, one line per row; a panic when `psql` fails.
    fn psql(&self, query: &str) -> String {
        let output = Command::new("psql")
            .args([self.server.as_str(), "-wqAtc", query])
            .output()
            .expect("psql runs (it is on PATH where PostgreSQL is installed)");
        assert!(
            output.status.success(),
            "psql -c {query:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

#[cfg(feature = "postgres")]
impl Drop for Schema {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([self.server.as_str(), "-wqc"])
            .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
            .output();
    }
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn the_flow_on_postgres() {
    let schema = Schema::create();
    the_flows(&Login::start(&schema.url())).await;
    let table = format!("{}.sessions", schema.name);
    assert_eq!(
        schema.psql(&format!("SELECT to_regclass('{table}') IS NOT NULL")),
        "t",
        "the sessions were kept in the test's schema"
    );
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn the_flow_on_redis() {
    let redis = OwnRedis::start();
    the_flows(&Login::start(&format!("redis://127.0.0.1:{}", redis.port))).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn the_flow_on_a_redis_cluster() {
    match std::env::var("REDIS_CLUSTER_URL") {
        Ok(url) => the_flows(&Login::start(&url)).await,
        // Straight to the terminal: libtest keeps what `eprintln!` prints from a test that
        // passes to itself.
        Err(_) => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED the_flow_on_a_redis_cluster: REDIS_CLUSTER_URL is not set, so there is \
                 no cluster to test (scripts/test starts one)"
            );
        }
    }
}

/// A Redis server of the test's own, on a free loopback port, that keeps nothing on disk:
/// stopped when dropped, and what it held with it.
#[cfg(feature = "redis")]
struct OwnRedis {
    child: Child,
    port: u16,
}

#[cfg(feature = "redis")]
impl OwnRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        // Owned at once, so that a panic below still stops it.
        let mut redis = Self {
            child: Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                ])
                .args(["--appendonly", "no"])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server starts (it is on PATH where Redis is installed)"),
            port,
        };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        redis.stop();
        panic!("redis-server did not listen on {port}");
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(feature = "redis")]
impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_store_outage_is_a_503_and_never_half_a_login() {
    let mut redis = OwnRedis::start();
    let app = Login::start(&format!("redis://127.0.0.1:{}", redis.port));
    let ada = app.post("/login", None, Some(ADA)).await;
    let cookie = ada.cookie();
    assert_eq!(app.get("/protected", Some(&cookie)).await.body, "hello ada");

    redis.stop();
    for reply in [
        app.get("/protected", Some(&cookie)).await,
        app.get("/", Some(&cookie)).await,
        app.post("/login", None, Some(BOB)).await,
        app.post("/login", Some(&cookie), Some(BOB)).await,
        app.post("/logout", Some(&cookie), None).await,
    ] {
        // Never a 401 that would log the user out, never a cookie for a session not saved.
        assert_eq!(reply.status, 503, "{reply:?}");
        assert!(reply.set_cookies.is_empty(), "{reply:?}");
        assert_eq!(reply.body, "");
    }
}
