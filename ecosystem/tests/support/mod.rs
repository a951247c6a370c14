//! What the ecosystem's tests share: an example run as a user runs it, and HTTP/1.1 to it on
//! loopback with hyper's client.

#![allow(dead_code, reason = "each test file uses a part of it")]

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::Request;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A running example, stopped when dropped.
pub(crate) struct Example {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl Example {
    /// Starts the program `exe` with nothing of this environment but `envs` and `PORT=0` (a
    /// port the system chooses), and waits up to `patience` for the address it says it
    /// listens on: a log line's `addr=…`, or a line `listening on http://…`.
    pub(crate) fn start(exe: &str, envs: &[(&str, &str)], patience: Duration) -> Self {
        let mut child = Command::new(exe)
            .env_clear()
            .env("PORT", "0")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{exe} starts: {e}"));
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        // Owned before anything can panic, so that it is stopped whatever happens.
        let mut example = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let (tx, rx) = mpsc::channel();
        let errors = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let said = line
                    .split_once("addr=")
                    .and_then(|(_, rest)| rest.split(' ').next())
                    .or_else(|| line.trim().strip_prefix("listening on http://"));
                if let Some(addr) = said.and_then(|addr| addr.parse::<SocketAddr>().ok()) {
                    let _ = tx.send(Ok(addr));
                }
            }
        });
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut text);
            let _ = errors.send(Err(text));
        });
        match rx.recv_timeout(patience) {
            Ok(Ok(addr)) => example.addr = addr,
            Ok(Err(stderr)) => panic!("{exe} stopped: {stderr}"),
            Err(_) => panic!("{exe} did not say where it listens within {patience:?}"),
        }
        example
    }

    /// The URL of `path` on the example: `http://127.0.0.1:…`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a request answered: its status, its headers (names lowercased) and its body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Reply {
    /// The first value of the header `name` (lowercase).
    pub(crate) fn header<'r>(&'r self, name: &'r str) -> Option<&'r str> {
        self.all(name).next()
    }

    /// Every value of the header `name` (lowercase), in order.
    pub(crate) fn all<'r>(&'r self, name: &'r str) -> impl Iterator<Item = &'r str> {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, value)| value.as_str())
    }
}

/// One request on a new connection, with `headers` and `body`, read to the end.
pub(crate) async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    // No connection is kept for a next request: each request meets the example afresh.
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<Full<Bytes>>();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("a valid request");
    let exchange = async {
        let response = client.request(request).await.expect("the example answers");
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .expect("the body is readable")
            .to_bytes();
        (parts, body)
    };
    let (parts, body) = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("the example answers within 30 s");
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let value = value.to_str().expect("an ASCII header value");
            (name.as_str().to_owned(), value.to_owned())
        })
        .collect();
    Reply {
        status: parts.status.as_u16(),
        headers,
        body: String::from_utf8(body.to_vec()).expect("a UTF-8 body"),
    }
}
