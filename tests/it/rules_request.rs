//! R1 to R5: what a request reads, from which cookie, and when.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::Router;
use axum::http::header::{CACHE_CONTROL, VARY};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::routing::get;
use serde_json::json;
use session_engine::{Error, LazySession, Session, SessionStore as _, StoreKey, WriteMode};

use crate::faults::{Call, Fault, Hook};
use crate::harness::{
    DEFAULT_ATTRIBUTES, Harness, MINUTE, OLD_SECRET, SECRET, cookie_value, id_of, outcome,
    percent_encode, request, request_with_cookie_bytes, sign, store_key,
};

// ---- R1 lazy ----

#[tokio::test]
async fn r1_untouched_route_makes_no_store_call_and_no_cookie() {
    let h = Harness::new();
    let (cookie, _) = h.new_session().await;
    for uri in ["/health", "/untouched"] {
        for cookie in [None, Some(cookie.as_str())] {
            let reply = h.get(uri, cookie).await;
            assert_eq!(
                (reply.status, reply.body.as_str()),
                (StatusCode::OK, "ok"),
                "{uri}"
            );
            assert!(reply.set_cookies.is_empty(), "{uri}: {reply:?}");
            assert!(reply.headers.get(VARY).is_none(), "{uri}: {reply:?}");
            assert!(
                reply.headers.get(CACHE_CONTROL).is_none(),
                "{uri}: {reply:?}"
            );
        }
    }
    assert_eq!(h.store.total_calls(), 0, "{:?}", h.store.history());
}

#[tokio::test]
async fn r1_a_store_whose_every_hook_fails_does_not_break_lazy_routes() {
    let inspect = Router::new().route(
        "/inspect",
        get(|session: LazySession| async move {
            // Properties and refused data methods never reach the store.
            let _ = session.set("a", 1);
            let _ = session.get::<u64>("a");
            format!(
                "{:?} {} {}",
                session.id(),
                session.ready(),
                session.stored()
            )
        }),
    );
    let h = Harness::serving(|b| b, inspect);
    let cookie = format!("sid={}", sign(SECRET, "SomeValidLookingSessionId_000000"));
    h.store.fail_all(Fault::Backend);
    for uri in ["/health", "/untouched", "/inspect"] {
        for cookie in [None, Some(cookie.as_str())] {
            let reply = h.get(uri, cookie).await;
            assert_eq!(reply.status, StatusCode::OK, "{uri}");
            assert!(reply.set_cookies.is_empty(), "{uri}: {reply:?}");
        }
    }
    assert_eq!(
        h.get("/inspect", Some(&cookie)).await.body,
        "None false false"
    );
    assert_eq!(h.store.total_calls(), 0, "{:?}", h.store.history());
    // The store really is down: a route that starts the session fails.
    let reply = h.get("/visits", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(h.store.calls(Hook::Read), 1);
}

// ---- R2 parsing ----

/// A harness with two stored sessions, A (`visits` 1) and B (`visits` 2), and their signed
/// cookie values; no automatic touch, so that a request costs a read at most.
async fn two_sessions() -> (Harness, String, String) {
    let h = Harness::with(|b| b.automatic_touch(false));
    let a = h.get("/visits", None).await;
    let b = h.get("/visits", None).await;
    let b = h.get("/visits", Some(&b.cookie())).await;
    assert_eq!(b.body, "2");
    let a = cookie_value(a.set_cookie()).to_owned();
    let b = cookie_value(b.set_cookie()).to_owned();
    (h, a, b)
}

/// `GET /peek` with these `Cookie` headers: the `visits` of the session that won, and how
/// many reads it cost.
async fn peek_with(h: &Harness, headers: &[&[u8]]) -> (String, usize) {
    h.store.clear_history();
    let reply = h.send(request_with_cookie_bytes("/peek", headers)).await;
    assert_eq!(reply.status, StatusCode::OK);
    (reply.body, h.store.calls(Hook::Read))
}

#[tokio::test]
async fn r2_first_cookie_that_verifies_wins() {
    let (h, a, b) = two_sessions().await;
    // The right shape, signed with a secret the engine does not know.
    let forged = sign(OLD_SECRET, &id_of(&b));
    let cases = [
        (format!("sid={b}; sid={a}"), "2"),
        (format!("sid={a}; sid={b}"), "1"),
        (format!("sid=junk; sid={a}"), "1"),
        (format!("sid={forged}; sid={a}"), "1"),
        (format!("sid=; sid=\"\"; sid={a}"), "1"),
        // Other names holding our value do not count.
        (
            format!("other={b}; xsid={b}; sidx={b}; SID={b}; sid={a}"),
            "1",
        ),
    ];
    for (header, visits) in cases {
        assert_eq!(
            peek_with(&h, &[header.as_bytes()]).await,
            (visits.to_owned(), 1),
            "{header}"
        );
    }
}

#[tokio::test]
async fn r2_at_most_four_cookies_with_our_name_are_checked() {
    let (h, a, _) = two_sessions().await;
    let three = format!("sid=x1; sid=x2; sid=x3; sid={a}");
    assert_eq!(peek_with(&h, &[three.as_bytes()]).await, ("1".into(), 1));
    let four = format!("sid=x1; sid=x2; sid=x3; sid=x4; sid={a}");
    assert_eq!(peek_with(&h, &[four.as_bytes()]).await, ("0".into(), 0));
    // The count spans `Cookie` headers.
    let last = format!("sid={a}");
    let headers: [&[u8]; 4] = [
        b"sid=x1; a=1",
        b"sid=x2",
        b"sid=x3; sid=x4",
        last.as_bytes(),
    ];
    assert_eq!(peek_with(&h, &headers).await, ("0".into(), 0));
    let headers: [&[u8]; 3] = [b"sid=x1; sid=x2", b"sid=x3", last.as_bytes()];
    assert_eq!(peek_with(&h, &headers).await, ("1".into(), 1));
}

#[tokio::test]
async fn r2_a_value_over_4096_bytes_is_ignored() {
    let (h, a, _) = two_sessions().await;
    let big = "a".repeat(4097);
    let line = format!("sid={big}; sid={a}");
    assert_eq!(peek_with(&h, &[line.as_bytes()]).await, ("1".into(), 1));
    // Ignored values are not candidates: five of them do not use up the four checks.
    let line = format!("{}sid={a}", format!("sid={big}; ").repeat(5));
    assert_eq!(peek_with(&h, &[line.as_bytes()]).await, ("1".into(), 1));
    // A huge value alone is no cookie.
    let line = format!("sid={}", "b".repeat(64 * 1024));
    assert_eq!(peek_with(&h, &[line.as_bytes()]).await, ("0".into(), 0));
}

#[tokio::test]
async fn r2_non_utf8_bytes_never_panic_nor_hide_a_valid_cookie() {
    let (h, a, _) = two_sessions().await;
    let a = a.as_bytes();
    let lines: Vec<Vec<u8>> = vec![
        [b"x=\xff\xfe; \xc3\x28=1; sid=", a, b"; y=\x80"].concat(),
        [b"sid=\xff\xfe; sid=", a].concat(),
        [b"\xff\xff\xff; sid=", a].concat(),
        [b"sid=", a, b"; \x80\x81\x82=\xf0\x9f"].concat(),
        [b"\xe2\x82=\xa9; sid=\"\xff\"; sid=", a].concat(),
    ];
    for line in &lines {
        assert_eq!(peek_with(&h, &[line]).await, ("1".into(), 1), "{line:?}");
    }
    // Every byte a header may hold, as a neighbour's name and value, in front of ours.
    for byte in (0x20u8..=0xff).filter(|&b| b != 0x7f) {
        let line = [&b"n"[..], &[byte], b"=v", &[byte], b"; sid=", a].concat();
        assert_eq!(
            peek_with(&h, &[&line]).await,
            ("1".into(), 1),
            "byte {byte:#x}"
        );
    }
    // Garbage alone is no cookie, and no panic.
    let garbage: [&[u8]; 8] = [
        b";;;;",
        b"=",
        b"sid",
        b"sid=",
        b"  ;= ;",
        b"\"",
        b"sid=\"",
        b"sid=\xff\xfe\xfd.\x80\x80",
    ];
    for line in garbage {
        assert_eq!(peek_with(&h, &[line]).await, ("0".into(), 0), "{line:?}");
    }
    let all: Vec<u8> = (0x20u8..=0xff).filter(|&b| b != 0x7f).collect();
    assert_eq!(peek_with(&h, &[&all]).await, ("0".into(), 0));
}

#[tokio::test]
async fn r2_a_thousand_cookies() {
    let (h, a, _) = two_sessions().await;
    let others: String = (0..1000).map(|i| format!("c{i}=v{i}; ")).collect();
    let line = format!("{others}sid={a}");
    assert_eq!(peek_with(&h, &[line.as_bytes()]).await, ("1".into(), 1));
    let line = format!("sid={a}; {others}");
    assert_eq!(peek_with(&h, &[line.as_bytes()]).await, ("1".into(), 1));
    // A thousand cookies with our name: the valid one comes too late.
    let ours: String = (0..1000).map(|i| format!("sid=x{i}; ")).collect();
    let line = format!("{ours}sid={a}");
    assert_eq!(peek_with(&h, &[line.as_bytes()]).await, ("0".into(), 0));
    // A thousand `Cookie` headers.
    let mut headers: Vec<Vec<u8>> = (0..1000).map(|i| format!("c{i}=v").into_bytes()).collect();
    headers.push(format!("sid={a}").into_bytes());
    let headers: Vec<&[u8]> = headers.iter().map(Vec::as_slice).collect();
    assert_eq!(peek_with(&h, &headers).await, ("1".into(), 1));
}

#[tokio::test]
async fn r2_several_cookie_headers() {
    let (h, a, b) = two_sessions().await;
    let a = format!("sid={a}");
    let b = format!("sid={b}");
    assert_eq!(
        peek_with(&h, &[b"x=1; y=2", a.as_bytes()]).await,
        ("1".into(), 1)
    );
    assert_eq!(
        peek_with(&h, &[b.as_bytes(), a.as_bytes()]).await,
        ("2".into(), 1)
    );
    assert_eq!(
        peek_with(&h, &[b"sid=bad", a.as_bytes()]).await,
        ("1".into(), 1)
    );
}

#[tokio::test]
async fn r2_only_cookie_headers_count() {
    let (h, a, _) = two_sessions().await;
    h.store.clear_history();
    let mut request = request(Method::GET, &format!("/peek?sid={a}"), None);
    for name in ["set-cookie", "x-cookie", "cookie2", "authorization"] {
        let value = HeaderValue::from_str(&format!("sid={a}")).unwrap();
        request.headers_mut().insert(name, value);
    }
    assert_eq!(h.send(request).await.body, "0");
    assert_eq!(h.store.calls(Hook::Read), 0);
}

// ---- R3 signature ----

#[tokio::test]
async fn r3_cookie_value_is_the_id_signed_in_the_seed_format() {
    let h = Harness::new();
    let reply = h.get("/visits", None).await;
    let set_cookie = reply.set_cookie();
    let value = cookie_value(set_cookie);
    let id = id_of(value);
    assert_eq!(value, sign(SECRET, &id));
    // SPEC section 4: the default id is 32 characters of base64url.
    assert_eq!(id.len(), 32, "{id}");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{id}"
    );
    assert_eq!(
        set_cookie,
        format!("sid={value}; Max-Age=1800; {DEFAULT_ATTRIBUTES}")
    );
}

#[tokio::test]
async fn r3_tampered_cookie_gets_a_fresh_id_and_no_read() {
    let h = Harness::new();
    let (cookie, id) = h.new_session().await;
    let value = cookie_value(&cookie).to_owned();
    let (_, tag) = value.rsplit_once('.').unwrap();
    let flip = |s: &str, i: usize| {
        let mut bytes = s.as_bytes().to_vec();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    };
    let tampered = [
        flip(&value, 0),
        flip(&value, id.len() - 1),
        flip(&value, id.len() + 1),
        flip(&value, value.len() - 1),
        sign(OLD_SECRET, &id),
        sign("some-other-secret-that-is-32-bytes-long", &id),
        format!("{}.{tag}", flip(&id, 5)),
        id.clone(),
        format!("{id}."),
        format!(".{tag}"),
    ];
    for bad in tampered {
        assert_ne!(bad, value);
        h.store.clear_history();
        let reply = h.get("/id", Some(&format!("sid={bad}"))).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_ne!(reply.body, id, "{bad} was accepted");
        assert_eq!(reply.body.len(), 32);
        assert_eq!(h.store.hooks(), [Hook::Id], "{bad}");
    }
}

#[tokio::test]
async fn r3_percent_encoded_value_is_accepted() {
    let h = Harness::with(|b| b.automatic_touch(false));
    let (cookie, id) = h.new_session().await;
    let value = cookie_value(&cookie).to_owned();
    let partly: String = value
        .replace('+', "%2B")
        .replace('/', "%2f")
        .replace('.', "%2E");
    for encoded in [percent_encode(&value), partly] {
        assert!(encoded.contains('%'));
        h.store.clear_history();
        let reply = h.get("/peek", Some(&format!("sid={encoded}"))).await;
        assert_eq!(reply.body, "1", "{encoded}");
        assert_eq!(h.store.history(), [Call::new(Hook::Read, &store_key(&id))]);
    }
}

#[tokio::test]
async fn r3_extra_junk_rejects() {
    let h = Harness::new();
    let (cookie, _) = h.new_session().await;
    let value = cookie_value(&cookie).to_owned();
    let junk = [
        format!("{value}x"),
        format!("{value}="),
        format!("{value}=="),
        format!("{value}."),
        format!("{value}%"),
        format!("{value}%2"),
        format!("{value}%zz"),
        format!("{value}%00"),
        format!("{value}%41"),
        format!("{value} x"),
        format!("x{value}"),
        format!("x.{value}"),
        format!("{value}.{value}"),
        format!("%{value}"),
    ];
    for bad in junk {
        h.store.clear_history();
        let reply = h.get("/peek", Some(&format!("sid={bad}"))).await;
        assert_eq!(reply.body, "0", "{bad} was accepted");
        assert_eq!(h.store.calls(Hook::Read), 0, "{bad}");
    }
}

// ---- R4 strict ids ----

#[tokio::test]
async fn r4_verified_id_without_record_gets_a_fresh_id_and_nothing_is_written_under_it() {
    for hash_ids in [true, false] {
        let h = Harness::with(|b| b.hash_ids(hash_ids));
        let key = |id: &str| match hash_ids {
            true => store_key(id),
            false => id.to_owned(),
        };
        let presented = "NeverStoredSessionId_0123456789ab";
        let cookie = format!("sid={}", sign(SECRET, presented));
        let reply = h.get("/visits", Some(&cookie)).await;
        assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "1"));
        let fresh = reply.cookie_id();
        assert_ne!(fresh, presented);
        assert_eq!(
            h.store.history(),
            [
                Call::new(Hook::Read, &key(presented)),
                Call::new(Hook::Id, &fresh),
                Call::write(&key(&fresh), WriteMode::Insert),
            ],
            "hash_ids {hash_ids}"
        );
        let inner = h.store.inner();
        let record = |id: &str| inner.read(&StoreKey::from(key(id)));
        assert!(record(presented).await.unwrap().is_none());
        assert!(record(&fresh).await.unwrap().is_some());
        assert_eq!(inner.len(), 1);
        // The fresh id is the session from now on; the presented one stays dead.
        assert_eq!(h.get("/visits", Some(&reply.cookie())).await.body, "2");
        assert_eq!(h.get("/visits", Some(&cookie)).await.body, "1");
        assert!(!h.store.written_keys().contains(&key(presented)));
    }
}

// ---- R5 start ----

#[tokio::test]
async fn r5_start_is_idempotent() {
    let start_thrice = Router::new().route(
        "/start-thrice",
        get(|session: Session| async move {
            session.start().await?;
            let first = session.id();
            session.start().await?.set("a", 1)?;
            session.start().await?;
            assert_eq!(session.id(), first);
            Ok::<_, Error>(format!(
                "{} {}",
                session.get::<u64>("a")?.unwrap(),
                session.get::<u64>("visits")?.unwrap_or(0)
            ))
        }),
    );
    let h = Harness::serving(|b| b, start_thrice);
    let (cookie, id) = h.new_session().await;
    let reply = h.get("/start-thrice", Some(&cookie)).await;
    assert_eq!(reply.body, "1 1");
    assert_eq!(reply.cookie_id(), id);
    assert_eq!(h.store.hooks(), [Hook::Read, Hook::Write]);
    h.store.clear_history();
    let reply = h.get("/start-thrice", None).await;
    assert_eq!(reply.body, "1 0");
    assert_eq!(h.store.hooks(), [Hook::Id, Hook::Write]);
}

/// Clones wait on a slow store (tokio's clock is paused: the delay costs no real time).
#[tokio::test(start_paused = true)]
async fn r5_concurrent_start_from_clones_reads_once() {
    let clones = Router::new().route(
        "/clones",
        get(|session: Session| async move {
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let session = session.clone();
                    tokio::spawn(async move {
                        session.start().await?;
                        Ok::<_, Error>((session.id(), session.get::<u64>("visits")?))
                    })
                })
                .collect();
            let mut seen = Vec::new();
            for task in tasks {
                seen.push(task.await.expect("no panic")?);
            }
            let ids: BTreeSet<_> = seen.iter().map(|(id, _)| id).collect();
            let visits: BTreeSet<_> = seen.iter().map(|(_, v)| v).collect();
            Ok::<_, Error>(format!("{} {:?} {:?}", ids.len(), visits, session.id()))
        }),
    );
    let h = Harness::serving(|b| b.automatic_touch(false), clones);
    let (cookie, id) = h.new_session().await;
    h.store.delay(Hook::Read, Duration::from_millis(50));
    h.store.delay(Hook::Id, Duration::from_millis(50));
    let reply = h.get("/clones", Some(&cookie)).await;
    assert_eq!(reply.body, format!("1 {{Some(1)}} Some({id:?})"));
    assert_eq!(h.store.hooks(), [Hook::Read]);
    h.store.clear_history();
    let reply = h.get("/clones", None).await;
    assert!(reply.body.starts_with("1 {None} Some("), "{}", reply.body);
    assert_eq!(h.store.hooks(), [Hook::Id]);
}

#[tokio::test]
async fn r5_data_methods_and_roll_before_start_are_not_started() {
    let early = Router::new().route(
        "/early",
        get(|session: LazySession| async move {
            [
                outcome(session.set("a", 1)),
                outcome(session.set_many(json!({"a": 1}))),
                outcome(session.reset(json!({"a": 1}))),
                outcome(session.get::<u64>("a")),
                outcome(session.get_all()),
                outcome(session.delete("a")),
                outcome(session.delete_all()),
                outcome(session.set_duration(MINUTE)),
                outcome(session.roll().await),
            ]
            .join("\n")
        }),
    );
    let h = Harness::serving(|b| b, early);
    let (cookie, _) = h.new_session().await;
    for cookie in [None, Some(cookie.as_str())] {
        let reply = h.get("/early", cookie).await;
        assert_eq!(reply.body, ["Err(NotStarted)"; 9].join("\n"));
        assert!(reply.set_cookies.is_empty());
    }
    assert_eq!(h.store.total_calls(), 0);
}
