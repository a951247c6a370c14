//! An HTTP/1.1 client (hyper's) for apps served on real loopback sockets.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Method, Request};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::harness::Reply;

/// One request on a new connection, with no body, read to the end.
pub(crate) async fn http(
    addr: SocketAddr,
    method: Method,
    path: &str,
    cookie: Option<&str>,
) -> Reply {
    let cookie = cookie.map(|cookie| ("Cookie", cookie));
    http_with(addr, method, path, cookie.as_slice()).await
}

/// [`http`] with these request headers.
pub(crate) async fn http_with(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    // No connection is kept for a next request: each request meets the server afresh.
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<Empty<Bytes>>();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::new()).expect("a valid request");
    let exchange = async {
        let response = client.request(request).await.expect("the server answers");
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
        .expect("the server answers within 30 s");
    let body = String::from_utf8(body.to_vec()).expect("a UTF-8 body");
    Reply::new(parts.status, parts.headers, body)
}
