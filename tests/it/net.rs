//! A bare HTTP/1.1 client for apps served on real loopback sockets.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::harness::Reply;

/// One HTTP/1.1 request on a new connection (`Connection: close`), read to the end.
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
    let mut stream = TcpStream::connect(addr).await.expect("the server accepts");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("the request is sent");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("the server answers within 30 s")
        .expect("the reply is readable");
    let text = String::from_utf8(raw).expect("a UTF-8 reply");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.split("\r\n");
    let code: u16 = lines
        .next()
        .and_then(|status| status.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').expect("a header line");
        headers.append(
            HeaderName::try_from(name.trim()).expect("a header name"),
            HeaderValue::try_from(value.trim()).expect("a header value"),
        );
    }
    let set_cookies = headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().expect("Set-Cookie is ASCII").to_owned())
        .collect();
    Reply {
        status: StatusCode::from_u16(code).expect("a valid status"),
        body: body.to_owned(),
        set_cookies,
        headers,
    }
}
