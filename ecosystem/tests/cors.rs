//! The CORS example (`examples/cors.rs`, SPEC 7.3): the session in the `x-session` header,
//! exposed to a browser app on another origin by tower-http's CORS layer.

use std::time::Duration;

use support::{Example, Reply, http};

mod support;

const ORIGIN: &str = "http://localhost:5173";

/// The running example, stopped when dropped.
struct Cors(Example);

impl Cors {
    fn start() -> Self {
        let exe = env!("CARGO_BIN_EXE_cors");
        Self(Example::start(
            exe,
            &[("APP_ORIGIN", ORIGIN)],
            Duration::from_secs(30),
        ))
    }

    /// One request with `headers`.
    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        http(self.0.addr, method, path, headers, "").await
    }
}

#[tokio::test]
async fn a_browser_app_on_another_origin_keeps_its_session_in_the_header() {
    let api = Cors::start();
    // The browser's preflight: may the app send x-session? It never touches a session.
    let preflight = api
        .send(
            "OPTIONS",
            "/visits",
            &[
                ("Origin", ORIGIN),
                ("Access-Control-Request-Method", "GET"),
                ("Access-Control-Request-Headers", "x-session"),
            ],
        )
        .await;
    assert_eq!(preflight.status, 200, "{preflight:?}");
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some(ORIGIN)
    );
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("x-session")
    );
    assert_eq!(preflight.header("x-session"), None);

    let first = api.send("GET", "/visits", &[("Origin", ORIGIN)]).await;
    assert_eq!(first.body, "1");
    // The app's script may read the header: it is exposed.
    assert_eq!(
        first.header("access-control-expose-headers"),
        Some("x-session")
    );
    assert_eq!(first.header("set-cookie"), None);
    let signed = first
        .header("x-session")
        .expect("the session header")
        .to_owned();
    let second = api
        .send(
            "GET",
            "/visits",
            &[("Origin", ORIGIN), ("x-session", &signed)],
        )
        .await;
    assert_eq!(second.body, "2");

    let bye = api
        .send(
            "POST",
            "/logout",
            &[("Origin", ORIGIN), ("x-session", &signed)],
        )
        .await;
    assert_eq!(
        (bye.body.as_str(), bye.header("x-session")),
        ("bye", Some(""))
    );
    let after = api.send("GET", "/visits", &[("x-session", &signed)]).await;
    assert_eq!(after.body, "1", "the old value is dead");
}
