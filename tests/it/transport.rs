//! Header transport (SPEC 7.3): the signed id in a request and response header beside the
//! cookie, or instead of it, for clients that keep no cookies.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, SET_COOKIE, VARY};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing;
use session_engine::{Error, Session};

use crate::harness::{Harness, Reply, SECRET, request, sign};

const NAME: &str = "x-session";

/// A request with, when given, one `Cookie` header and each of `headers` as a session header
/// field of its own.
async fn send(
    h: &Harness,
    method: Method,
    uri: &str,
    cookie: Option<&str>,
    headers: &[&str],
) -> Reply {
    let mut request = request(method, uri, cookie);
    for value in headers {
        request.headers_mut().append(
            NAME,
            HeaderValue::from_str(value).expect("a valid header value"),
        );
    }
    h.send(request).await
}

async fn get(h: &Harness, uri: &str, headers: &[&str]) -> Reply {
    send(h, Method::GET, uri, None, headers).await
}

/// The session header of a reply: its one value.
fn carried(reply: &Reply) -> String {
    let values = reply.header_values(NAME);
    assert_eq!(values.len(), 1, "one {NAME}: {reply:?}");
    values[0].clone()
}

fn header_only() -> Harness {
    Harness::with(|builder| builder.header(NAME).cookie(false))
}

fn both() -> Harness {
    Harness::with(|builder| builder.header(NAME))
}

#[tokio::test]
async fn a_client_on_the_header_alone_keeps_its_session() {
    let h = header_only();
    let first = get(&h, "/visits", &[]).await;
    assert_eq!((first.status, first.body.as_str()), (StatusCode::OK, "1"));
    assert!(first.set_cookies.is_empty(), "the cookie is off: {first:?}");
    let signed = carried(&first);
    assert_eq!(first.header_values(CACHE_CONTROL.as_str()), ["no-store"]);
    assert_eq!(first.header_values(VARY.as_str()), [NAME]);
    // The value is the cookie's format: the id, a dot, the seed's signature.
    let (id, _) = signed.rsplit_once('.').expect("id.tag");
    assert_eq!(signed, sign(SECRET, id));

    for expected in ["2", "3"] {
        let reply = get(&h, "/visits", &[&signed]).await;
        assert_eq!(reply.body, expected);
        // Within the touch interval, a write re-sends the same value; nothing else changes.
        assert_eq!(carried(&reply), signed);
        assert!(reply.set_cookies.is_empty());
    }
    // A read sends nothing back.
    let peek = get(&h, "/peek", &[&signed]).await;
    assert_eq!(peek.body, "3");
    assert!(peek.header_values(NAME).is_empty(), "{peek:?}");
    assert_eq!(peek.header_values(VARY.as_str()), [NAME]);
}

#[tokio::test]
async fn with_both_on_a_response_carries_the_same_signed_id_in_both() {
    let h = both();
    let reply = get(&h, "/visits", &[]).await;
    let cookie_value = crate::harness::cookie_value(reply.set_cookie()).to_owned();
    assert_eq!(carried(&reply), cookie_value);
    assert_eq!(reply.header_values(VARY.as_str()), ["cookie", NAME]);
    // Either one alone finds the session.
    assert_eq!(get(&h, "/peek", &[&cookie_value]).await.body, "1");
    assert_eq!(h.get("/peek", Some(&reply.cookie())).await.body, "1");
}

#[tokio::test]
async fn a_request_with_the_header_is_judged_by_it_alone() {
    let h = both();
    let (cookie, _) = h.new_session().await; // visits = 1
    let other = get(&h, "/visits", &[]).await;
    let other = carried(&get(&h, "/visits", &[&carried(&other)]).await); // visits = 2
    // Header and cookie disagree: the header wins.
    let reply = send(&h, Method::GET, "/peek", Some(&cookie), &[&other]).await;
    assert_eq!(reply.body, "2");
    // A forged header beside a valid cookie: no session, not the cookie's.
    let forged = format!("{}x", &other[..other.len() - 1]);
    for header in [vec![forged.as_str()], vec![other.as_str(), other.as_str()]] {
        let reply = send(&h, Method::GET, "/peek", Some(&cookie), &header).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "0"),
            "{header:?}"
        );
    }
    // The cookie alone still works.
    assert_eq!(h.get("/peek", Some(&cookie)).await.body, "1");
}

#[tokio::test]
async fn bad_header_values_are_no_session_never_an_error() {
    let h = header_only();
    let signed = carried(&get(&h, "/visits", &[]).await);
    let encoded = signed.replace('.', "%2E");
    let long = format!("{signed}{}", "A".repeat(5000));
    let quoted = format!("\"{signed}\"");
    // The id changed, its signature kept.
    let first = if signed.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{first}{}", &signed[1..]);
    for value in [
        "",
        "garbage",
        tampered.as_str(),
        ".",
        "a.b.c",
        encoded.as_str(),
        long.as_str(),
        quoted.as_str(),
    ] {
        let reply = get(&h, "/peek", &[value]).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "0"),
            "{value:?}"
        );
    }
    // Several fields, even all valid: none.
    let reply = get(&h, "/peek", &[&signed, &signed]).await;
    assert_eq!(reply.body, "0");
    // Bytes that are not text.
    let mut request = request(Method::GET, "/peek", None);
    request.headers_mut().insert(
        NAME,
        HeaderValue::from_bytes(b"\xff\xfe.abc").expect("opaque bytes are a valid value"),
    );
    assert_eq!(h.send(request).await.body, "0");
}

#[tokio::test]
async fn r10_a_roll_re_issues_in_the_header_and_the_old_value_dies() {
    let h = header_only();
    let signed = carried(&get(&h, "/visits", &[]).await);
    let login = send(&h, Method::POST, "/login?user=ada", None, &[&signed]).await;
    assert_eq!(login.status, StatusCode::OK);
    let rolled = carried(&login);
    assert_ne!(rolled, signed);
    assert_eq!(get(&h, "/me", &[&rolled]).await.body, "ada");
    assert_eq!(get(&h, "/peek", &[&rolled]).await.body, "1");
    assert_eq!(
        get(&h, "/me", &[&signed]).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn r11_a_removal_sends_the_header_empty() {
    for (h, cookie_on) in [(header_only(), false), (both(), true)] {
        let signed = carried(&get(&h, "/visits", &[]).await);
        let bye = send(&h, Method::POST, "/logout", None, &[&signed]).await;
        assert_eq!(carried(&bye), "");
        assert_eq!(bye.header_values(CACHE_CONTROL.as_str()), ["no-store"]);
        if cookie_on {
            assert!(bye.removes_cookie(), "{bye:?}");
        } else {
            assert!(bye.set_cookies.is_empty(), "{bye:?}");
        }
        assert_eq!(get(&h, "/peek", &[&signed]).await.body, "0");
    }
}

#[tokio::test]
async fn with_the_cookie_off_a_cookie_is_neither_read_nor_sent() {
    let h = header_only();
    // A value this engine's secret signed, presented as a cookie.
    let id = "a".repeat(32);
    let cookie = format!("sid={}", sign(SECRET, &id));
    let reply = h.get("/peek", Some(&cookie)).await;
    assert_eq!(reply.body, "0", "the cookie is not read");
    assert!(reply.set_cookies.is_empty());
    assert!(h.record(&id).await.is_none());
    let reply = h.get("/visits", Some(&cookie)).await;
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    assert!(!carried(&reply).is_empty());
}

#[tokio::test]
async fn r13_a_cacheable_response_gets_no_cache_for_the_header_too() {
    async fn public(session: Session) -> Result<impl IntoResponse, Error> {
        session.start().await?.set("k", 1)?;
        Ok(([(CACHE_CONTROL, "public, max-age=60")], "ok"))
    }
    let h = Harness::serving(
        |builder| builder.header(NAME),
        Router::new().route("/public", routing::get(public)),
    );
    let reply = get(&h, "/public", &[]).await;
    assert_eq!(
        reply.header_values(CACHE_CONTROL.as_str()),
        [
            "public, max-age=60",
            "no-cache=\"Set-Cookie\"",
            "no-cache=\"x-session\""
        ]
    );
    assert!(reply.headers.contains_key(SET_COOKIE));
}

#[cfg(feature = "testing")]
#[tokio::test]
async fn a_test_visitor_keeps_the_header_as_an_api_client_does() {
    use session_engine::testing::Visitor;
    let h = header_only();
    let mut visitor = Visitor::new(&h.engine);
    let visits = |session: Session| async move {
        session.start().await?;
        let visits = session.get::<u64>("visits")?.unwrap_or(0) + 1;
        session.set("visits", visits)?;
        Ok::<_, Error>(visits.to_string())
    };
    assert_eq!(visitor.call(visits).await.text(), "1");
    assert!(visitor.cookie().is_none());
    assert!(visitor.header().is_some());
    assert_eq!(visitor.call(visits).await.text(), "2");
    visitor
        .call(|session: Session| async move {
            session.destroy().await?;
            Ok::<_, Error>("bye")
        })
        .await;
    assert!(visitor.header().is_none());
}
