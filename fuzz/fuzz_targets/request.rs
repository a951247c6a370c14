//! Whole requests through `SessionLayer` on the memory store, with fuzzed `Cookie` and session
//! headers, and fuzzed `Cache-Control` and `Vary` from the app (R2, R3, R13, and the header
//! transport of SPEC 7.3).
//!
//! Each run makes a session (`visits` = 1) with a first request, then sends one request with
//! any headers, where `@S` stands for that session's signed value and `@E` for a
//! percent-encoded spelling of it, then sends back what that response set, if anything.
//!
//! Properties: no panic and never a 5xx (no client input fails a request on a store that does
//! not fail); the session is found only when its value was sent, and always when it was sent
//! alone, as the one session header or as the first cookie; two session headers mean no
//! session; every id sent back verifies under the current key, and is kept from shared caches
//! (`no-store`, `private` or `no-cache="FIELD"` for each field that carries it) and varied on;
//! the id a response sets, sent back, finds the session with what the request wrote.

#![no_main]

use std::convert::Infallible;
use std::sync::LazyLock;

use arbitrary::{Result, Unstructured};
use http::header::{CACHE_CONTROL, COOKIE, SET_COOKIE, VARY};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use libfuzzer_sys::fuzz_target;
use session_engine::{MemoryStore, Session, SessionEngine, SessionLayer};
use session_engine_fuzz::{OLD_SECRET, SECRET, keys, percent_encode_some};
use tower::{Layer, ServiceExt, service_fn};

const HEADER: &str = "x-session";

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
});

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = RUNTIME.block_on(run(&mut u));
});

/// What the handler does, and what it answers besides.
#[derive(Clone, Default)]
struct Plan {
    /// Sets `k` (so the response sets the id), else only reads.
    write: Option<u8>,
    cache_control: Vec<HeaderValue>,
    vary: Vec<HeaderValue>,
}

/// The handler: starts the session, answers `found` when it has `visits` (else `new`), and
/// the `k` it holds, if any; then does what the plan says.
async fn handle(
    request: Request<String>,
    plan: Plan,
) -> std::result::Result<Response<String>, Infallible> {
    let session = request
        .extensions()
        .get::<Session>()
        .cloned()
        .expect("a SessionLayer");
    let Ok(session) = session.start().await else {
        return Ok(status(StatusCode::INTERNAL_SERVER_ERROR));
    };
    let visits: Option<u64> = session.get("visits").expect("started");
    let k: Option<u8> = session.get("k").expect("started");
    let body = format!("{} {k:?}", if visits.is_some() { "found" } else { "new" });
    if request.uri().path() == "/login" {
        session.set("visits", 1).expect("started");
    }
    if let Some(k) = plan.write {
        session.set("k", k).expect("started");
    }
    let mut response = Response::new(body);
    for value in plan.cache_control {
        response.headers_mut().append(CACHE_CONTROL, value);
    }
    for value in plan.vary {
        response.headers_mut().append(VARY, value);
    }
    Ok(response)
}

fn status(code: StatusCode) -> Response<String> {
    let mut response = Response::new(String::new());
    *response.status_mut() = code;
    response
}

async fn send(engine: &SessionEngine, request: Request<String>, plan: Plan) -> Response<String> {
    let service = SessionLayer::new(engine.clone())
        .layer(service_fn(move |request| handle(request, plan.clone())));
    let response = service.oneshot(request).await.expect("infallible");
    assert!(
        !response.status().is_server_error(),
        "a request failed: {}",
        response.status()
    );
    response
}

/// The signed value a response sets: in `Set-Cookie` and the session header, the same in
/// both, verified under the current key; `None` when it sets none; `Some("")` for a removal.
fn set_value(response: &Response<String>, cookie: bool, header: bool) -> Option<String> {
    let headers = response.headers();
    let cookies: Vec<&str> = headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|value| value.to_str().expect("a Set-Cookie is text"))
        .collect();
    assert!(cookies.len() <= 1, "{cookies:?}");
    let from_cookie = cookies.first().map(|set| {
        let pair = set.split(';').next().expect("a pair");
        pair.strip_prefix("sid=").expect("our cookie").to_owned()
    });
    let from_header = headers
        .get(HEADER)
        .map(|value| value.to_str().expect("a signed id is text").to_owned());
    assert!(
        cookie || from_cookie.is_none(),
        "a cookie set while the cookie is off"
    );
    assert!(
        header || from_header.is_none(),
        "a session header while it is off"
    );
    if cookie && header {
        assert_eq!(from_cookie, from_header, "the cookie and the header differ");
    }
    let value = from_cookie.or(from_header)?;
    if !value.is_empty() {
        let found = keys().verify(&value).expect("a value sent back verifies");
        assert!(found.current, "a value sent back under a retired key");
    }
    // Kept from shared caches: `no-store`, unqualified `private`, or `no-cache="FIELD"` for
    // each field that carries it.
    let directives: Vec<String> = headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(','))
        .map(|d| d.to_ascii_lowercase().replace([' ', '\t'], ""))
        .collect();
    let unshared = directives
        .iter()
        .any(|d| d == "no-store" || d.starts_with("no-store=") || d == "private");
    let fields = [cookie.then_some("set-cookie"), header.then_some(HEADER)];
    let each = fields
        .iter()
        .flatten()
        .all(|field| directives.contains(&format!("no-cache=\"{field}\"")));
    assert!(
        unshared || each,
        "an id open to shared caches: {directives:?}"
    );
    Some(value)
}

/// Whether the response varies on each field that carries the id.
fn check_vary(response: &Response<String>, cookie: bool, header: bool) {
    let fields: Vec<String> = response
        .headers()
        .get_all(VARY)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(|field| String::from_utf8_lossy(field.trim_ascii()).to_ascii_lowercase())
        .collect();
    let varies = |name: &str| fields.iter().any(|f| f == name || f == "*");
    assert!(!cookie || varies("cookie"), "{fields:?}");
    assert!(!header || varies(HEADER), "{fields:?}");
}

fn request(path: &str, headers: HeaderMap) -> Request<String> {
    let mut request = Request::builder()
        .uri(path)
        .body(String::new())
        .expect("a request");
    *request.headers_mut() = headers;
    request
}

async fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let cookie = u.arbitrary::<bool>()?;
    let header = !cookie || u.arbitrary::<bool>()?;
    let mut builder = SessionEngine::builder()
        .secrets([SECRET, OLD_SECRET])
        .store(MemoryStore::new())
        .cookie(cookie);
    if header {
        builder = builder.header(HEADER);
    }
    let engine = builder.build().expect("a valid engine");

    // The session: made by a first request, which sets its signed value.
    let made = send(
        &engine,
        request("/login", HeaderMap::new()),
        Plan::default(),
    )
    .await;
    let signed = set_value(&made, cookie, header).expect("a new session sets its id");
    let encoded = percent_encode_some(u, &signed)?;

    // Any headers.
    let mut headers = HeaderMap::new();
    for _ in 0..u.int_in_range(0..=6)? {
        let name = match u.choose_index(4)? {
            0 | 1 => COOKIE,
            2 => HeaderName::from_static(HEADER),
            _ => HeaderName::from_static("x-other"),
        };
        let text: &[u8] = u.arbitrary()?;
        let text = replace(
            &replace(text, b"@S", signed.as_bytes()),
            b"@E",
            encoded.as_bytes(),
        );
        if let Ok(value) = HeaderValue::from_bytes(&text) {
            headers.append(name, value);
        }
    }
    let values = |u: &mut Unstructured<'_>| -> Result<Vec<HeaderValue>> {
        let mut values = Vec::new();
        for _ in 0..u.int_in_range(0..=2)? {
            if let Ok(value) = HeaderValue::from_bytes(u.arbitrary::<&[u8]>()?) {
                values.push(value);
            }
        }
        Ok(values)
    };
    let plan = Plan {
        write: u.arbitrary()?,
        cache_control: values(u)?,
        vary: values(u)?,
    };
    let written = plan.write;
    let response = send(&engine, request("/", headers.clone()), plan).await;
    let body = response.body().clone();
    let found = body.starts_with("found");

    // Found only when sent.
    let sent = headers.values().any(|value| {
        let decoded: Vec<u8> = percent_encoding::percent_decode(value.as_bytes()).collect();
        contains(&decoded, signed.as_bytes())
    });
    assert!(!found || sent, "a session found that was never sent");
    let session_headers: Vec<&HeaderValue> = headers.get_all(HEADER).iter().collect();
    match (header, &session_headers[..]) {
        (true, [one]) => assert_eq!(found, one.as_bytes() == signed.as_bytes(), "{body}"),
        (true, [_, _, ..]) => assert!(!found, "two session headers found a session"),
        _ if cookie => {
            let first = headers.get(COOKIE).map(HeaderValue::as_bytes);
            if first == Some(format!("sid={signed}").as_bytes()) {
                assert!(found, "our cookie, alone and first, was not found");
            }
        }
        _ => assert!(!found, "a session found with neither cookie nor header"),
    }
    check_vary(&response, cookie, header);

    // Sent back, the id the response set (or the one the request found, when it set none)
    // finds what the request wrote.
    let value = match set_value(&response, cookie, header) {
        Some(value) => value,
        None if found => signed.clone(),
        None => {
            assert!(
                written.is_none(),
                "a new session was written and set no id: {body}"
            );
            return Ok(());
        }
    };
    if value.is_empty() {
        return Ok(());
    }
    let mut headers = HeaderMap::new();
    if header {
        headers.insert(HEADER, HeaderValue::from_str(&value).expect("text"));
    } else {
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&format!("sid={value}")).expect("text"),
        );
    }
    let again = send(&engine, request("/", headers), Plan::default()).await;
    let expected = format!("{} {written:?}", if found { "found" } else { "new" });
    if found || written.is_some() {
        assert_eq!(again.body(), &expected);
    }
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn replace(text: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if rest.starts_with(from) {
            out.extend_from_slice(to);
            rest = &rest[from.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}
