//! The CORS example (`examples/cors.rs`, SPEC 7.3): the session in the `x-session` header,
//! exposed to a browser app on another origin by tower-http's CORS layer.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ORIGIN: &str = "http://localhost:5173";

/// The running example, stopped when dropped.
struct Cors {
    child: Child,
    addr: SocketAddr,
}

impl Cors {
    fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cors"))
            .env_clear()
            .env("PORT", "0")
            .env("APP_ORIGIN", ORIGIN)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the cors example starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("its first line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("not an address line: {line:?}"));
        Self { child, addr }
    }

    /// One request; the reply's status, headers (names lowercased) and body.
    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut stream = TcpStream::connect(self.addr).expect("the example accepts");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("a timeout");
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: 0\r\n",
            self.addr
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).expect("sent");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).expect("a UTF-8 reply");
        let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .expect("a status line");
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        Reply {
            status,
            headers,
            body: body.to_owned(),
        }
    }
}

impl Drop for Cors {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_str())
    }
}

#[test]
fn a_browser_app_on_another_origin_keeps_its_session_in_the_header() {
    let api = Cors::start();
    // The browser's preflight: may the app send x-session? It never touches a session.
    let preflight = api.send(
        "OPTIONS",
        "/visits",
        &[
            ("Origin", ORIGIN),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "x-session"),
        ],
    );
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

    let first = api.send("GET", "/visits", &[("Origin", ORIGIN)]);
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
    let second = api.send(
        "GET",
        "/visits",
        &[("Origin", ORIGIN), ("x-session", &signed)],
    );
    assert_eq!(second.body, "2");

    let bye = api.send(
        "POST",
        "/logout",
        &[("Origin", ORIGIN), ("x-session", &signed)],
    );
    assert_eq!(
        (bye.body.as_str(), bye.header("x-session")),
        ("bye", Some(""))
    );
    let after = api.send("GET", "/visits", &[("x-session", &signed)]);
    assert_eq!(after.body, "1", "the old value is dead");
}
