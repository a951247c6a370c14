//! The login example (`examples/login.rs`, SPEC 7.1): axum-login and axum-messages on
//! session-engine, run as a user runs it, over real HTTP on loopback, on every store.
//!
//! The store tests need the store's feature and its server: PostgreSQL on 127.0.0.1:5432
//! (`DATABASE_URL` overrides), Redis on 127.0.0.1:6379 (`REDIS_URL`), and a Redis Cluster at
//! `REDIS_CLUSTER_URL` (`scripts/test` starts one; without it that test is skipped, saying so).

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::Example;

mod support;

const ADA: &str = "username=ada&password=correct+horse+battery+staple";
const BOB: &str = "username=bob&password=hunter2hunter2";
const WRONG: &str = "username=ada&password=hunter2hunter2";

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

    fn get(&self, path: &str, cookie: Option<&str>) -> Reply {
        http(self.0.addr, "GET", path, cookie, None)
    }

    fn post(&self, path: &str, cookie: Option<&str>, form: Option<&str>) -> Reply {
        http(self.0.addr, "POST", path, cookie, form)
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

    fn removes_cookie(&self) -> bool {
        self.set_cookies.len() == 1 && self.set_cookies[0].contains("Max-Age=0")
    }
}

/// One request, with its cookie and its form, if any.
fn http(
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
    let reply = support::http(addr, method, path, &headers, form.unwrap_or(""));
    Reply {
        status: reply.status,
        set_cookies: reply.all("set-cookie").map(str::to_owned).collect(),
        body: reply.body,
    }
}

/// The whole flow of SPEC 7.1 against a running example.
fn the_flow(app: &Login) {
    // Anonymous: home, no session, no cookie; the protected page is closed.
    let home = app.get("/", None);
    assert_eq!((home.status, home.body.as_str()), (200, "home"));
    assert!(home.set_cookies.is_empty(), "{home:?}");
    assert_eq!(app.get("/protected", None).status, 401);

    // Wrong credentials: 401, and no session is made.
    let wrong = app.post("/login", None, Some(WRONG));
    assert_eq!(wrong.status, 401);
    assert!(wrong.set_cookies.is_empty(), "{wrong:?}");

    // A login: welcome, a session, a flash shown exactly once.
    let ada = app.post("/login", None, Some(ADA));
    assert_eq!((ada.status, ada.body.as_str()), (200, "welcome ada"));
    let ada_cookie = ada.cookie();
    assert_eq!(
        app.get("/", Some(&ada_cookie)).body,
        "home\nlogged in as ada"
    );
    assert_eq!(app.get("/", Some(&ada_cookie)).body, "home");
    assert_eq!(app.get("/protected", Some(&ada_cookie)).body, "hello ada");

    // A login over a logged-in session (axum-login would keep its id): a new id, and the
    // presented one is dead.
    let bob = app.post("/login", Some(&ada_cookie), Some(BOB));
    assert_eq!((bob.status, bob.body.as_str()), (200, "welcome bob"));
    let bob_cookie = bob.cookie();
    assert_ne!(bob_cookie, ada_cookie);
    assert_eq!(app.get("/protected", Some(&ada_cookie)).status, 401);
    assert_eq!(app.get("/protected", Some(&bob_cookie)).body, "hello bob");
    assert_eq!(
        app.get("/", Some(&bob_cookie)).body,
        "home\nlogged in as bob"
    );

    // Wrong credentials over a live session: 401, and the session stays as it was.
    let wrong = app.post("/login", Some(&bob_cookie), Some(WRONG));
    assert_eq!(wrong.status, 401);
    assert!(wrong.set_cookies.is_empty(), "{wrong:?}");
    assert_eq!(app.get("/protected", Some(&bob_cookie)).body, "hello bob");

    // A logout destroys the session and removes the cookie.
    let bye = app.post("/logout", Some(&bob_cookie), None);
    assert_eq!((bye.status, bye.body.as_str()), (200, "bye"));
    assert!(bye.removes_cookie(), "{bye:?}");
    assert_eq!(app.get("/protected", Some(&bob_cookie)).status, 401);

    // A forged cookie is no session, never an error.
    let forged = format!("{}x", &bob_cookie[..bob_cookie.len() - 1]);
    assert_eq!(app.get("/protected", Some(&forged)).status, 401);
}

#[test]
fn the_flow_on_the_memory_store() {
    the_flow(&Login::start("memory"));
}

#[cfg(feature = "sqlite")]
#[test]
fn the_flow_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("login-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join("sessions.db");
    the_flow(&Login::start(&format!("sqlite://{}", path.display())));
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "postgres")]
#[test]
fn the_flow_on_postgres() {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    the_flow(&Login::start(&url));
}

#[cfg(feature = "redis")]
#[test]
fn the_flow_on_redis() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    the_flow(&Login::start(&url));
}

#[cfg(feature = "redis")]
#[test]
fn the_flow_on_a_redis_cluster() {
    match std::env::var("REDIS_CLUSTER_URL") {
        Ok(url) => the_flow(&Login::start(&url)),
        Err(_) => {
            eprintln!("REDIS_CLUSTER_URL is not set: no cluster to test (scripts/test starts one)")
        }
    }
}

/// A Redis server of this test's own, on a free loopback port, to take down mid-flow.
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
#[test]
fn a_store_outage_is_a_503_and_never_half_a_login() {
    let mut redis = OwnRedis::start();
    let app = Login::start(&format!("redis://127.0.0.1:{}", redis.port));
    let ada = app.post("/login", None, Some(ADA));
    let cookie = ada.cookie();
    assert_eq!(app.get("/protected", Some(&cookie)).body, "hello ada");

    redis.stop();
    for reply in [
        app.get("/protected", Some(&cookie)),
        app.get("/", Some(&cookie)),
        app.post("/login", None, Some(BOB)),
        app.post("/login", Some(&cookie), Some(BOB)),
        app.post("/logout", Some(&cookie), None),
    ] {
        // Never a 401 that would log the user out, never a cookie for a session not saved.
        assert_eq!(reply.status, 503, "{reply:?}");
        assert!(reply.set_cookies.is_empty(), "{reply:?}");
        assert_eq!(reply.body, "");
    }
}
