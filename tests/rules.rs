//! HTTP-level tests of the behaviour contract (`SPEC.md`, rules R1–R14), driving an axum
//! `Router` behind a `SessionLayer` with `tower::ServiceExt::oneshot`.
//!
//! Each test is named after the rule it checks. Store calls are observed through
//! `common::FaultyStore`, a `MemoryStore` wrapper that counts calls and injects faults; time is
//! moved with the engine's `.clock(..)` option, never by sleeping.

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::Query;
use axum::http::header::{CACHE_CONTROL, VARY};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::routing::get;
use serde_json::{Map, Value, json};
use session_engine::{
    Changes, Error, MemoryStore, Record, SameSite, Session, SessionEngine, SessionLayer,
    SessionStore as _, StoreError,
};
use tokio::sync::Notify;

use common::{
    Call, DEFAULT_ATTRIBUTES, FAULT_MESSAGE, Fault, FaultyStore, Hook, OLD_SECRET, SECRET,
    TestClock, app, attributes, builder, cookie_header, cookie_value, engine, engine_with,
    get_with, id_of, max_age, new_session, percent_encode, post_with, request,
    request_with_cookie_bytes, routes, send, serve, sign, store_key,
};

const MINUTE: Duration = Duration::from_secs(60);

/// `Debug` of a session method's result, without the `&Session` of a success.
fn outcome<T>(result: Result<T, Error>) -> String {
    format!("{:?}", result.map(|_| ()))
}

fn call(hook: Hook, key: &str, stored: Option<bool>) -> Call {
    Call {
        hook,
        key: Some(key.to_owned()),
        stored,
    }
}

// ---- R1 lazy ----

#[tokio::test]
async fn r1_untouched_route_makes_no_store_call_and_no_cookie() {
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| b));
    let (cookie, _) = new_session(&app).await;
    store.clear_history();
    for uri in ["/health", "/untouched"] {
        for cookie in [None, Some(cookie.as_str())] {
            let reply = get_with(&app, uri, cookie).await;
            assert_eq!(reply.status, StatusCode::OK, "{uri}");
            assert_eq!(reply.body, "ok");
            assert!(reply.set_cookies.is_empty(), "{uri}: {reply:?}");
            assert!(reply.headers.get(VARY).is_none(), "{uri}: {reply:?}");
            assert!(
                reply.headers.get(CACHE_CONTROL).is_none(),
                "{uri}: {reply:?}"
            );
        }
    }
    assert_eq!(store.total_calls(), 0, "{:?}", store.history());
}

#[tokio::test]
async fn r1_a_store_whose_every_hook_fails_does_not_break_lazy_routes() {
    let store = FaultyStore::new();
    let routes = routes().route(
        "/inspect",
        get(|session: Session| async move {
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
    let app = serve(engine_with(&store, |b| b), routes);
    let signed = sign(SECRET, "SomeValidLookingSessionId_000000");
    let cookie = format!("sid={signed}");
    store.fail_all(Fault::Backend);
    for uri in ["/health", "/untouched", "/inspect"] {
        for cookie in [None, Some(cookie.as_str())] {
            let reply = get_with(&app, uri, cookie).await;
            assert_eq!(reply.status, StatusCode::OK, "{uri}");
            assert!(reply.set_cookies.is_empty(), "{uri}: {reply:?}");
        }
    }
    assert_eq!(
        get_with(&app, "/inspect", Some(&cookie)).await.body,
        "None false false"
    );
    assert_eq!(store.total_calls(), 0, "{:?}", store.history());
    // The store really is down: a route that starts the session fails.
    let reply = get_with(&app, "/visits", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(store.calls(Hook::Read), 1);
}

// ---- R2 parsing ----

/// An app with two stored sessions: A has `visits` 1, B has `visits` 2. Returns their signed
/// cookie values.
async fn two_sessions(store: &Arc<FaultyStore>) -> (Router, String, String) {
    let app = app(engine_with(store, |b| b.automatic_touch(false)));
    let a = get_with(&app, "/visits", None).await;
    let b = get_with(&app, "/visits", None).await;
    let b = get_with(&app, "/visits", Some(&b.cookie())).await;
    assert_eq!(b.body, "2");
    let a = cookie_value(a.set_cookie()).to_owned();
    let b = cookie_value(b.set_cookie()).to_owned();
    store.clear_history();
    (app, a, b)
}

/// `GET /peek` with these `Cookie` headers: the `visits` of the session that won, and how
/// many reads it cost.
async fn peek_with(app: &Router, store: &FaultyStore, headers: &[&[u8]]) -> (String, usize) {
    store.clear_history();
    let reply = send(app, request_with_cookie_bytes("/peek", headers)).await;
    assert_eq!(reply.status, StatusCode::OK);
    (reply.body, store.calls(Hook::Read))
}

#[tokio::test]
async fn r2_first_cookie_that_verifies_wins() {
    let store = FaultyStore::new();
    let (app, a, b) = two_sessions(&store).await;
    // The right shape, signed with a secret the engine does not know.
    let forged = sign(OLD_SECRET, &id_of(&b));
    let cases = [
        (format!("sid={b}; sid={a}"), "2", 1),
        (format!("sid={a}; sid={b}"), "1", 1),
        (format!("sid=junk; sid={a}"), "1", 1),
        (format!("sid={forged}; sid={a}"), "1", 1),
        (format!("sid=; sid=\"\"; sid={a}"), "1", 1),
        // Other names holding our value do not count.
        (
            format!("other={b}; xsid={b}; sidx={b}; SID={b}; sid={a}"),
            "1",
            1,
        ),
    ];
    for (header, visits, reads) in cases {
        assert_eq!(
            peek_with(&app, &store, &[header.as_bytes()]).await,
            (visits.to_owned(), reads),
            "{header}"
        );
    }
}

#[tokio::test]
async fn r2_at_most_four_cookies_with_our_name_are_checked() {
    let store = FaultyStore::new();
    let (app, a, _) = two_sessions(&store).await;
    let three = format!("sid=x1; sid=x2; sid=x3; sid={a}");
    assert_eq!(
        peek_with(&app, &store, &[three.as_bytes()]).await,
        ("1".into(), 1)
    );
    let four = format!("sid=x1; sid=x2; sid=x3; sid=x4; sid={a}");
    assert_eq!(
        peek_with(&app, &store, &[four.as_bytes()]).await,
        ("0".into(), 0)
    );
    // The count spans `Cookie` headers.
    let last = format!("sid={a}");
    assert_eq!(
        peek_with(
            &app,
            &store,
            &[
                b"sid=x1; a=1",
                b"sid=x2",
                b"sid=x3; sid=x4",
                last.as_bytes()
            ]
        )
        .await,
        ("0".into(), 0)
    );
    assert_eq!(
        peek_with(
            &app,
            &store,
            &[b"sid=x1; sid=x2", b"sid=x3", last.as_bytes()]
        )
        .await,
        ("1".into(), 1)
    );
}

#[tokio::test]
async fn r2_a_value_over_4096_bytes_is_ignored() {
    let store = FaultyStore::new();
    let (app, a, _) = two_sessions(&store).await;
    let big = "a".repeat(4097);
    let line = format!("sid={big}; sid={a}");
    assert_eq!(
        peek_with(&app, &store, &[line.as_bytes()]).await,
        ("1".into(), 1)
    );
    // Ignored values are not candidates: five of them do not use up the four checks.
    let line = format!("{}sid={a}", format!("sid={big}; ").repeat(5));
    assert_eq!(
        peek_with(&app, &store, &[line.as_bytes()]).await,
        ("1".into(), 1)
    );
    // A huge value alone is no cookie.
    let line = format!("sid={}", "b".repeat(64 * 1024));
    assert_eq!(
        peek_with(&app, &store, &[line.as_bytes()]).await,
        ("0".into(), 0)
    );
}

#[tokio::test]
async fn r2_non_utf8_bytes_never_panic_nor_hide_a_valid_cookie() {
    let store = FaultyStore::new();
    let (app, a, _) = two_sessions(&store).await;
    let a = a.as_bytes();
    let lines: Vec<Vec<u8>> = vec![
        [b"x=\xff\xfe; \xc3\x28=1; sid=", a, b"; y=\x80"].concat(),
        [b"sid=\xff\xfe; sid=", a].concat(),
        [b"\xff\xff\xff; sid=", a].concat(),
        [b"sid=", a, b"; \x80\x81\x82=\xf0\x9f"].concat(),
        [b"\xe2\x82=\xa9; sid=\"\xff\"; sid=", a].concat(),
    ];
    for line in &lines {
        assert_eq!(
            peek_with(&app, &store, &[line]).await,
            ("1".into(), 1),
            "{line:?}"
        );
    }
    // Every byte a header may hold, as a neighbour's name and value, in front of ours.
    for byte in (0x20u8..=0xff).filter(|&b| b != 0x7f) {
        let line = [&b"n"[..], &[byte], b"=v", &[byte], b"; sid=", a].concat();
        assert_eq!(
            peek_with(&app, &store, &[&line]).await,
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
        assert_eq!(
            peek_with(&app, &store, &[line]).await,
            ("0".into(), 0),
            "{line:?}"
        );
    }
    let all: Vec<u8> = (0x20u8..=0xff).filter(|&b| b != 0x7f).collect();
    assert_eq!(peek_with(&app, &store, &[&all]).await, ("0".into(), 0));
}

#[tokio::test]
async fn r2_a_thousand_cookies() {
    let store = FaultyStore::new();
    let (app, a, _) = two_sessions(&store).await;
    let others: String = (0..1000).map(|i| format!("c{i}=v{i}; ")).collect();
    let line = format!("{others}sid={a}");
    assert_eq!(
        peek_with(&app, &store, &[line.as_bytes()]).await,
        ("1".into(), 1)
    );
    let line = format!("sid={a}; {others}");
    assert_eq!(
        peek_with(&app, &store, &[line.as_bytes()]).await,
        ("1".into(), 1)
    );
    // A thousand cookies with our name: the valid one comes too late.
    let ours: String = (0..1000).map(|i| format!("sid=x{i}; ")).collect();
    let line = format!("{ours}sid={a}");
    assert_eq!(
        peek_with(&app, &store, &[line.as_bytes()]).await,
        ("0".into(), 0)
    );
    // A thousand `Cookie` headers.
    let mut headers: Vec<Vec<u8>> = (0..1000).map(|i| format!("c{i}=v").into_bytes()).collect();
    headers.push(format!("sid={a}").into_bytes());
    let headers: Vec<&[u8]> = headers.iter().map(Vec::as_slice).collect();
    assert_eq!(peek_with(&app, &store, &headers).await, ("1".into(), 1));
}

#[tokio::test]
async fn r2_several_cookie_headers() {
    let store = FaultyStore::new();
    let (app, a, b) = two_sessions(&store).await;
    let a = format!("sid={a}");
    let b = format!("sid={b}");
    assert_eq!(
        peek_with(&app, &store, &[b"x=1; y=2", a.as_bytes()]).await,
        ("1".into(), 1)
    );
    assert_eq!(
        peek_with(&app, &store, &[b.as_bytes(), a.as_bytes()]).await,
        ("2".into(), 1)
    );
    assert_eq!(
        peek_with(&app, &store, &[b"sid=bad", a.as_bytes()]).await,
        ("1".into(), 1)
    );
}

#[tokio::test]
async fn r2_only_cookie_headers_count() {
    let store = FaultyStore::new();
    let (app, a, _) = two_sessions(&store).await;
    store.clear_history();
    let mut request = request(Method::GET, &format!("/peek?sid={a}"), None);
    for name in ["set-cookie", "x-cookie", "cookie2", "authorization"] {
        request
            .headers_mut()
            .insert(name, HeaderValue::from_str(&format!("sid={a}")).unwrap());
    }
    let reply = send(&app, request).await;
    assert_eq!(reply.body, "0");
    assert_eq!(store.calls(Hook::Read), 0);
}

// ---- R3 signature ----

#[tokio::test]
async fn r3_cookie_value_is_the_id_signed_in_the_seed_format() {
    let clock = TestClock::new();
    let app = app(clock.install(builder()).build().unwrap());
    let reply = get_with(&app, "/visits", None).await;
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
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| b));
    let (cookie, id) = new_session(&app).await;
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
        store.clear_history();
        let reply = get_with(&app, "/id", Some(&format!("sid={bad}"))).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_ne!(reply.body, id, "{bad} was accepted");
        assert_eq!(reply.body.len(), 32);
        assert_eq!(store.hooks(), [Hook::Id], "{bad}");
    }
}

#[tokio::test]
async fn r3_percent_encoded_value_is_accepted() {
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| b.automatic_touch(false)));
    let (cookie, id) = new_session(&app).await;
    let value = cookie_value(&cookie).to_owned();
    let partly: String = value
        .replace('+', "%2B")
        .replace('/', "%2f")
        .replace('.', "%2E");
    for encoded in [percent_encode(&value), partly] {
        assert!(encoded.contains('%'));
        store.clear_history();
        let reply = get_with(&app, "/peek", Some(&format!("sid={encoded}"))).await;
        assert_eq!(reply.body, "1", "{encoded}");
        assert_eq!(store.history(), [call(Hook::Read, &store_key(&id), None)]);
    }
}

#[tokio::test]
async fn r3_extra_junk_rejects() {
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| b));
    let (cookie, _) = new_session(&app).await;
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
        store.clear_history();
        let reply = get_with(&app, "/peek", Some(&format!("sid={bad}"))).await;
        assert_eq!(reply.body, "0", "{bad} was accepted");
        assert_eq!(store.calls(Hook::Read), 0, "{bad}");
    }
}

// ---- R4 strict ids ----

#[tokio::test]
async fn r4_verified_id_without_record_gets_a_fresh_id_and_nothing_is_written_under_it() {
    for hash_ids in [true, false] {
        let store = FaultyStore::new();
        let app = app(engine_with(&store, |b| b.hash_ids(hash_ids)));
        let presented = "NeverStoredSessionId_0123456789ab";
        let presented_key = if hash_ids {
            store_key(presented)
        } else {
            presented.to_owned()
        };
        let cookie = format!("sid={}", sign(SECRET, presented));
        let reply = get_with(&app, "/visits", Some(&cookie)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "1");
        let fresh = reply.cookie_id();
        assert_ne!(fresh, presented);
        let fresh_key = if hash_ids {
            store_key(&fresh)
        } else {
            fresh.clone()
        };
        assert_eq!(
            store.history(),
            [
                call(Hook::Read, &presented_key, None),
                Call {
                    hook: Hook::Id,
                    key: Some(fresh.clone()),
                    stored: None
                },
                call(Hook::Write, &fresh_key, Some(false)),
            ],
            "hash_ids {hash_ids}"
        );
        assert!(store.inner().read(&presented_key).await.unwrap().is_none());
        assert!(store.inner().read(&fresh_key).await.unwrap().is_some());
        assert_eq!(store.inner().len(), 1);
        // The fresh id is the session from now on; the presented one stays dead.
        assert_eq!(
            get_with(&app, "/visits", Some(&reply.cookie())).await.body,
            "2"
        );
        assert_eq!(get_with(&app, "/visits", Some(&cookie)).await.body, "1");
        assert!(!store.written_keys().contains(&presented_key));
    }
}

// ---- R5 start ----

#[tokio::test]
async fn r5_start_is_idempotent() {
    let store = FaultyStore::new();
    let routes = routes().route(
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
    let app = serve(engine_with(&store, |b| b), routes);
    let (cookie, id) = new_session(&app).await;
    store.clear_history();
    let reply = get_with(&app, "/start-thrice", Some(&cookie)).await;
    assert_eq!(reply.body, "1 1");
    assert_eq!(reply.cookie_id(), id);
    assert_eq!(store.calls(Hook::Read), 1);
    assert_eq!(store.calls(Hook::Write), 1);
    store.clear_history();
    let reply = get_with(&app, "/start-thrice", None).await;
    assert_eq!(reply.body, "1 0");
    assert_eq!(store.calls(Hook::Id), 1);
}

#[tokio::test]
async fn r5_concurrent_start_from_clones_reads_once() {
    let store = FaultyStore::new();
    let routes = routes().route(
        "/clones",
        get(|session: Session| async move {
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let session = session.clone();
                    tokio::spawn(async move {
                        session.start().await.map(|_| ())?;
                        Ok::<_, Error>((session.id(), session.get::<u64>("visits")?))
                    })
                })
                .collect();
            let mut seen = Vec::new();
            for task in tasks {
                seen.push(task.await.expect("no panic")?);
            }
            let ids: std::collections::BTreeSet<_> = seen.iter().map(|(id, _)| id).collect();
            let visits: std::collections::BTreeSet<_> = seen.iter().map(|(_, v)| v).collect();
            Ok::<_, Error>(format!("{} {:?} {:?}", ids.len(), visits, session.id()))
        }),
    );
    let app = serve(engine_with(&store, |b| b.automatic_touch(false)), routes);
    let (cookie, id) = new_session(&app).await;
    store.delay(Hook::Read, Duration::from_millis(50));
    store.delay(Hook::Id, Duration::from_millis(50));
    store.clear_history();
    let reply = get_with(&app, "/clones", Some(&cookie)).await;
    assert_eq!(reply.body, format!("1 {{Some(1)}} Some({id:?})"));
    assert_eq!(store.hooks(), [Hook::Read]);
    store.clear_history();
    let reply = get_with(&app, "/clones", None).await;
    assert!(reply.body.starts_with("1 {None} Some("), "{}", reply.body);
    assert_eq!(store.hooks(), [Hook::Id]);
}

#[tokio::test]
async fn r5_data_methods_and_roll_before_start_are_not_started() {
    let store = FaultyStore::new();
    let routes = routes().route(
        "/early",
        get(|session: Session| async move {
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
    let app = serve(engine_with(&store, |b| b), routes);
    let (cookie, _) = new_session(&app).await;
    store.clear_history();
    for cookie in [None, Some(cookie.as_str())] {
        let reply = get_with(&app, "/early", cookie).await;
        assert_eq!(reply.body, ["Err(NotStarted)"; 9].join("\n"));
        assert!(reply.set_cookies.is_empty());
    }
    assert_eq!(store.total_calls(), 0);
}

// ---- R6 expiry ----

#[tokio::test]
async fn r6_a_record_past_its_expiry_is_absent_even_if_the_store_holds_it() {
    let clock = TestClock::new();
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| {
        clock.install(b).duration(10 * MINUTE)
    }));
    let (cookie, id) = new_session(&app).await;
    clock.advance(9 * MINUTE + Duration::from_secs(59));
    let reply = get_with(&app, "/visits", Some(&cookie)).await;
    assert_eq!(reply.body, "2");
    assert_eq!(reply.cookie_id(), id);
    assert_eq!(max_age(reply.set_cookie()), 600);
    // Unmodified requests slide the expiry too (touch).
    clock.advance(9 * MINUTE);
    let reply = get_with(&app, "/peek", Some(&cookie)).await;
    assert_eq!(reply.body, "2");
    assert_eq!(max_age(reply.set_cookie()), 600);
    clock.advance(10 * MINUTE + Duration::from_secs(1));
    store.clear_history();
    let reply = get_with(&app, "/visits", Some(&cookie)).await;
    assert_eq!(reply.body, "1");
    assert_ne!(reply.cookie_id(), id);
    // The store (on its own, real, clock) still holds the old record: the engine refused it.
    assert!(store.inner().read(&store_key(&id)).await.unwrap().is_some());
    assert_eq!(store.written_keys(), [store_key(&reply.cookie_id())]);
}

#[tokio::test]
async fn r6_max_lifetime_caps_every_write_touch_and_roll() {
    let clock = TestClock::new();
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| {
        clock
            .install(b)
            .duration(10 * MINUTE)
            .max_lifetime(25 * MINUTE)
    }));
    let first = get_with(&app, "/visits", None).await;
    assert_eq!(max_age(first.set_cookie()), 600);
    let cookie = first.cookie();
    clock.advance(9 * MINUTE);
    let reply = get_with(&app, "/visits", Some(&cookie)).await;
    assert_eq!(
        (reply.body.as_str(), max_age(reply.set_cookie())),
        ("2", 600)
    );
    clock.advance(9 * MINUTE); // t = 18 min: the cap (25) comes before now + 10.
    let reply = get_with(&app, "/visits", Some(&cookie)).await;
    assert_eq!(
        (reply.body.as_str(), max_age(reply.set_cookie())),
        ("3", 420)
    );
    clock.advance(2 * MINUTE); // t = 20 min: a roll keeps the creation time.
    let reply = post_with(&app, "/login?user=ada", Some(&cookie)).await;
    assert_eq!(reply.body, "true");
    assert_eq!(max_age(reply.set_cookie()), 300);
    let cookie = reply.cookie();
    clock.advance(4 * MINUTE); // t = 24 min: a touch cannot move the expiry past 25.
    store.clear_history();
    let reply = get_with(&app, "/peek", Some(&cookie)).await;
    assert_eq!(reply.body, "3");
    assert_eq!(store.calls(Hook::Touch), 0);
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    let reply = get_with(&app, "/touch", Some(&cookie)).await;
    assert_eq!(max_age(reply.set_cookie()), 60);
    clock.advance(Duration::from_secs(59)); // t = 24:59, still alive.
    assert_eq!(get_with(&app, "/me", Some(&cookie)).await.body, "ada");
    clock.advance(Duration::from_secs(2)); // t = 25:01, past the cap.
    let reply = get_with(&app, "/me", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(get_with(&app, "/peek", Some(&cookie)).await.body, "0");
}

// ---- R7 end of request ----

#[tokio::test]
async fn r7_destroyed_sends_a_removal_cookie_with_the_same_attributes() {
    type Configure =
        fn(session_engine::SessionEngineBuilder) -> session_engine::SessionEngineBuilder;
    let configs: [(&str, Configure); 5] = [
        ("sid", |b| b),
        ("sid", |b| {
            b.cookie_path("/app")
                .cookie_domain("example.com")
                .same_site(SameSite::Strict)
        }),
        ("sid", |b| b.secure(false).http_only(false)),
        ("sid", |b| b.same_site(SameSite::None)),
        ("__Host-s", |b| b.cookie_name("__Host-s")),
    ];
    for (name, configure) in configs {
        let store = FaultyStore::new();
        let app = app(engine_with(&store, configure));
        let created = get_with(&app, "/visits", None).await;
        let set = created.set_cookie().to_owned();
        assert!(set.starts_with(&format!("{name}=")), "{set}");
        store.clear_history();
        let reply = post_with(&app, "/logout", Some(&created.cookie())).await;
        assert_eq!(reply.body, "ok");
        let removal = reply.set_cookie();
        assert_eq!(cookie_header(removal), format!("{name}="), "{removal}");
        let mut expected = vec![
            "Max-Age=0".to_owned(),
            "Expires=Thu, 01 Jan 1970 00:00:00 GMT".to_owned(),
        ];
        expected.extend(
            attributes(&set)
                .into_iter()
                .filter(|a| !a.starts_with("Max-Age=")),
        );
        assert_eq!(attributes(removal), expected, "{removal}");
        assert_eq!(store.hooks(), [Hook::Destroy]);
        assert!(store.inner().is_empty());
    }
    // The attributes themselves, spelled out once.
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| {
        b.cookie_path("/app")
            .cookie_domain("example.com")
            .same_site(SameSite::Strict)
    }));
    let reply = post_with(&app, "/logout", None).await;
    assert_eq!(
        reply.set_cookie(),
        "sid=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/app; \
         Domain=example.com; Secure; HttpOnly; SameSite=Strict"
    );
}

#[tokio::test]
async fn r7_destroy_wins_over_earlier_changes() {
    let store = FaultyStore::new();
    let routes = routes().route(
        "/set-then-destroy",
        get(|session: Session| async move {
            session.start().await?.set("a", 1)?;
            session.destroy().await?;
            Ok::<_, Error>("ok")
        }),
    );
    let app = serve(engine_with(&store, |b| b), routes);
    let (cookie, id) = new_session(&app).await;
    store.clear_history();
    let reply = get_with(&app, "/set-then-destroy", Some(&cookie)).await;
    assert_eq!(cookie_header(reply.set_cookie()), "sid=");
    assert_eq!(
        store.history(),
        [
            call(Hook::Read, &store_key(&id), None),
            call(Hook::Destroy, &store_key(&id), None),
        ]
    );
}

#[tokio::test]
async fn r7_modified_session_is_written_then_the_cookie_set_with_max_age() {
    let clock = TestClock::new();
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| clock.install(b)));
    let reply = get_with(&app, "/visits", None).await;
    let id = reply.cookie_id();
    assert_eq!(
        store.history(),
        [
            Call {
                hook: Hook::Id,
                key: Some(id.clone()),
                stored: None
            },
            call(Hook::Write, &store_key(&id), Some(false)),
        ]
    );
    assert_eq!(max_age(reply.set_cookie()), 1800);
    clock.advance(MINUTE);
    store.clear_history();
    let reply = get_with(&app, "/visits", Some(&reply.cookie())).await;
    assert_eq!(reply.body, "2");
    assert_eq!(
        store.history(),
        [
            call(Hook::Read, &store_key(&id), None),
            call(Hook::Write, &store_key(&id), Some(true)),
        ]
    );
    assert_eq!(
        reply.set_cookie(),
        format!(
            "sid={}; Max-Age=1800; {DEFAULT_ATTRIBUTES}",
            sign(SECRET, &id)
        )
    );
    let record = store.inner().read(&store_key(&id)).await.unwrap().unwrap();
    assert_eq!(record.expires_at, clock.now() + 30 * MINUTE);
    assert_eq!(
        record.data,
        json!({"visits": 2}).as_object().unwrap().clone()
    );
}

#[tokio::test]
async fn r7_stored_unmodified_session_is_touched_and_the_cookie_refreshed() {
    let clock = TestClock::new();
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| clock.install(b)));
    let (cookie, id) = new_session(&app).await;
    clock.advance(5 * MINUTE);
    store.clear_history();
    let reply = get_with(&app, "/peek", Some(&cookie)).await;
    assert_eq!(reply.body, "1");
    assert_eq!(
        store.history(),
        [
            call(Hook::Read, &store_key(&id), None),
            call(Hook::Touch, &store_key(&id), None),
        ]
    );
    assert_eq!(
        reply.set_cookie(),
        format!(
            "sid={}; Max-Age=1800; {DEFAULT_ATTRIBUTES}",
            sign(SECRET, &id)
        )
    );
    let record = store.inner().read(&store_key(&id)).await.unwrap().unwrap();
    assert_eq!(record.expires_at, clock.now() + 30 * MINUTE);
}

#[tokio::test]
async fn r7_without_automatic_touch_an_unmodified_session_is_left_alone() {
    let clock = TestClock::new();
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| {
        clock.install(b).automatic_touch(false)
    }));
    let created_at = clock.now();
    let (cookie, id) = new_session(&app).await;
    clock.advance(5 * MINUTE);
    store.clear_history();
    let reply = get_with(&app, "/peek", Some(&cookie)).await;
    assert_eq!(reply.body, "1");
    assert_eq!(store.hooks(), [Hook::Read]);
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    let record = store.inner().read(&store_key(&id)).await.unwrap().unwrap();
    assert_eq!(record.expires_at, created_at + 30 * MINUTE);
}

#[tokio::test]
async fn r7_new_unmodified_session_persists_nothing() {
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| b));
    let reply = get_with(&app, "/id", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len(), 32);
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    assert_eq!(store.hooks(), [Hook::Id]);
    assert!(store.inner().is_empty());
}

#[tokio::test]
async fn r7_inner_5xx_means_no_write_no_touch_no_cookie() {
    let clock = TestClock::new();
    let store = FaultyStore::new();
    let routes = routes()
        .route(
            "/set-then-fail",
            get(|session: Session| async move {
                session.start().await?.set("visits", 99)?;
                Ok::<_, Error>(StatusCode::INTERNAL_SERVER_ERROR)
            }),
        )
        .route(
            "/peek-then-fail",
            get(|session: Session| async move {
                session.start().await?;
                Ok::<_, Error>(StatusCode::SERVICE_UNAVAILABLE)
            }),
        )
        .route(
            "/set-then-401",
            get(|session: Session| async move {
                session.start().await?.set("visits", 7)?;
                Ok::<_, Error>(StatusCode::UNAUTHORIZED)
            }),
        );
    let app = serve(engine_with(&store, |b| clock.install(b)), routes);
    let (cookie, _) = new_session(&app).await;
    for (uri, status) in [
        ("/set-then-fail", StatusCode::INTERNAL_SERVER_ERROR),
        ("/peek-then-fail", StatusCode::SERVICE_UNAVAILABLE),
    ] {
        clock.advance(MINUTE);
        for cookie in [None, Some(cookie.as_str())] {
            store.clear_history();
            let reply = get_with(&app, uri, cookie).await;
            assert_eq!(reply.status, status);
            assert!(reply.set_cookies.is_empty(), "{uri}: {reply:?}");
            // R13: the started session still made the response depend on the cookie.
            assert_eq!(reply.headers.get("vary").unwrap(), "cookie", "{uri}");
            let expected = if cookie.is_some() {
                [Hook::Read]
            } else {
                [Hook::Id]
            };
            assert_eq!(store.hooks(), expected, "{uri}");
        }
    }
    assert_eq!(store.inner().len(), 1);
    assert_eq!(get_with(&app, "/peek", Some(&cookie)).await.body, "1");
    // A 4xx is not a failure of the server: the session is saved.
    let reply = get_with(&app, "/set-then-401", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(max_age(reply.set_cookie()), 1800);
    assert_eq!(get_with(&app, "/peek", Some(&cookie)).await.body, "7");
}

#[tokio::test]
async fn r7_setting_an_equal_value_is_not_a_modification() {
    let store = FaultyStore::new();
    let routes = routes().route(
        "/same",
        get(|session: Session| async move {
            session.start().await?;
            session.set("visits", 1)?.set_many(json!({"visits": 1}))?;
            session.reset(json!({"visits": 1}))?.delete("absent")?;
            Ok::<_, Error>("ok")
        }),
    );
    let app = serve(engine_with(&store, |b| b.automatic_touch(false)), routes);
    let (cookie, _) = new_session(&app).await;
    store.clear_history();
    let reply = get_with(&app, "/same", Some(&cookie)).await;
    assert_eq!(reply.body, "ok");
    assert_eq!(store.hooks(), [Hook::Read]);
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    // A different value is a modification.
    store.clear_history();
    let reply = get_with(&app, "/set?key=visits&value=1", Some(&cookie)).await;
    assert_eq!(store.hooks(), [Hook::Read, Hook::Write]);
    assert_eq!(reply.set_cookies.len(), 1);
}

#[tokio::test]
async fn r7_touch_interval_skips_the_touch_and_the_refresh() {
    let clock = TestClock::new();
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| {
        clock.install(b).touch_interval(5 * MINUTE)
    }));
    let (cookie, _) = new_session(&app).await;
    let peek = async |advance: Duration| {
        clock.advance(advance);
        store.clear_history();
        let reply = get_with(&app, "/peek", Some(&cookie)).await;
        assert_eq!(reply.body, "1");
        (store.calls(Hook::Touch), reply.set_cookies)
    };
    assert_eq!(peek(MINUTE).await, (0, vec![]));
    assert_eq!(
        peek(3 * MINUTE + Duration::from_secs(59)).await,
        (0, vec![])
    );
    // Five minutes after the write: due.
    let (touches, cookies) = peek(Duration::from_secs(1)).await;
    assert_eq!(touches, 1);
    assert_eq!(max_age(&cookies[0]), 1800);
    // One minute after that touch: skipped again.
    assert_eq!(peek(MINUTE).await, (0, vec![]));
    // A modification is written whatever the interval.
    store.clear_history();
    let reply = get_with(&app, "/visits", Some(&cookie)).await;
    assert_eq!(store.hooks(), [Hook::Read, Hook::Write]);
    assert_eq!(max_age(reply.set_cookie()), 1800);
}

// ---- R8 no overwrite ----

#[tokio::test]
async fn r8_taken_ids_are_retried_with_fresh_ids() {
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| b));
    store.id_taken_for_next(2);
    let reply = get_with(&app, "/visits", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "1");
    assert_eq!(
        store.hooks(),
        [
            Hook::Id,
            Hook::Write,
            Hook::Id,
            Hook::Write,
            Hook::Id,
            Hook::Write
        ]
    );
    let ids = store.generated_ids();
    assert_eq!(ids.len(), 3);
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    assert_eq!(
        store.written_keys(),
        ids.iter().map(|id| store_key(id)).collect::<Vec<_>>()
    );
    assert_eq!(reply.cookie_id(), ids[2]);
    assert_eq!(store.inner().len(), 1);
    assert_eq!(
        get_with(&app, "/peek", Some(&reply.cookie())).await.body,
        "1"
    );
}

#[tokio::test]
async fn r8_three_taken_ids_answer_500() {
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| b));
    store.id_taken_for_next(3);
    let reply = get_with(&app, "/visits", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.body, "");
    assert!(reply.set_cookies.is_empty());
    assert_eq!(store.calls(Hook::Write), 3);
    assert_eq!(store.calls(Hook::Id), 3);
    assert!(store.inner().is_empty());
}

#[tokio::test]
async fn r8_an_insert_never_overwrites_a_live_record() {
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| b));
    let (victim_cookie, victim) = new_session(&app).await;
    // The id hook hands out the victim's id twice: the real store refuses both inserts.
    store.script_ids([victim.as_str(), victim.as_str()]);
    let reply = get_with(&app, "/set?key=user&value=mallory", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_ne!(reply.cookie_id(), victim);
    let all = get_with(&app, "/all", Some(&victim_cookie)).await;
    assert_eq!(all.body, r#"{"visits":1}"#);
    // Three times: a 500, and the victim is still intact.
    store.script_ids([victim.as_str(), victim.as_str(), victim.as_str()]);
    let reply = get_with(&app, "/set?key=user&value=mallory", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.set_cookies.is_empty());
    let all = get_with(&app, "/all", Some(&victim_cookie)).await;
    assert_eq!(all.body, r#"{"visits":1}"#);
}

// ---- R9 no resurrection ----

/// Routes that remove the session's record behind the engine's back, as another request
/// would, after starting it.
fn vanishing_routes(store: &Arc<FaultyStore>) -> Router {
    async fn vanish(store: &FaultyStore, session: &Session) {
        let key = store_key(&session.id().unwrap());
        store.inner().destroy(&key).await.unwrap();
    }
    let (s1, s2, s3) = (store.clone(), store.clone(), store.clone());
    routes()
        .route(
            "/vanish-then-set",
            get(move |session: Session| async move {
                session.start().await?;
                vanish(&s1, &session).await;
                session.set("cart", "full")?;
                Ok::<_, Error>("ok")
            }),
        )
        .route(
            "/vanish",
            get(move |session: Session| async move {
                session.start().await?;
                vanish(&s2, &session).await;
                Ok::<_, Error>("ok")
            }),
        )
        .route(
            "/vanish-then-touch",
            get(move |session: Session| async move {
                session.start().await?;
                vanish(&s3, &session).await;
                session.touch().await?;
                Ok::<_, Error>(format!("{} {:?}", session.ready(), session.id()))
            }),
        )
}

#[tokio::test]
async fn r9_update_never_resurrects() {
    let store = FaultyStore::new();
    let app = serve(engine_with(&store, |b| b), vanishing_routes(&store));
    let (cookie, id) = new_session(&app).await;
    store.clear_history();
    let reply = get_with(&app, "/vanish-then-set", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(cookie_header(reply.set_cookie()), "sid=");
    assert_eq!(max_age(reply.set_cookie()), 0);
    assert_eq!(
        store.history(),
        [
            call(Hook::Read, &store_key(&id), None),
            call(Hook::Write, &store_key(&id), Some(true)),
        ]
    );
    assert!(store.inner().is_empty());
    assert_eq!(get_with(&app, "/peek", Some(&cookie)).await.body, "0");
    // The same with an injected `Gone`.
    let (cookie, _) = new_session(&app).await;
    store.fail_times(Hook::Write, Fault::Gone, 1);
    let reply = get_with(&app, "/visits", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(cookie_header(reply.set_cookie()), "sid=");
}

#[tokio::test]
async fn r9_touch_that_finds_the_record_gone_clears_the_cookie() {
    let clock = TestClock::new();
    let store = FaultyStore::new();
    let app = serve(
        engine_with(&store, |b| clock.install(b)),
        vanishing_routes(&store),
    );
    // The automatic touch at the end of the request.
    let (cookie, id) = new_session(&app).await;
    clock.advance(MINUTE);
    store.clear_history();
    let reply = get_with(&app, "/vanish", Some(&cookie)).await;
    assert_eq!(cookie_header(reply.set_cookie()), "sid=");
    assert_eq!(
        store.history(),
        [
            call(Hook::Read, &store_key(&id), None),
            call(Hook::Touch, &store_key(&id), None),
        ]
    );
    assert!(store.inner().is_empty());
    // An explicit `touch()`: the session counts as destroyed.
    let (cookie, _) = new_session(&app).await;
    let reply = get_with(&app, "/vanish-then-touch", Some(&cookie)).await;
    assert_eq!(reply.body, "false None");
    assert_eq!(cookie_header(reply.set_cookie()), "sid=");
    assert!(store.inner().is_empty());
    // An injected `Gone` from the touch hook.
    let (cookie, _) = new_session(&app).await;
    clock.advance(MINUTE);
    store.fail_times(Hook::Touch, Fault::Gone, 1);
    let reply = get_with(&app, "/peek", Some(&cookie)).await;
    assert_eq!(reply.body, "1");
    assert_eq!(cookie_header(reply.set_cookie()), "sid=");
}

/// An app with `/slow-*` routes that start the session, tell `started`, wait for `release`,
/// then do their work: two browser tabs racing on one cookie.
fn racing_app(store: &Arc<FaultyStore>, clock: &TestClock) -> (Router, Arc<Notify>, Arc<Notify>) {
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (s1, r1) = (started.clone(), release.clone());
    let (s2, r2) = (started.clone(), release.clone());
    let (s3, r3) = (started.clone(), release.clone());
    let routes = routes()
        .route(
            "/slow-set",
            get(move |session: Session| async move {
                session.start().await?;
                s1.notify_one();
                r1.notified().await;
                session.set("cart", "full")?;
                Ok::<_, Error>("ok")
            }),
        )
        .route(
            "/slow-peek",
            get(move |session: Session| async move {
                session.start().await?;
                s2.notify_one();
                r2.notified().await;
                Ok::<_, Error>(session.get::<u64>("visits")?.unwrap_or(0).to_string())
            }),
        )
        .route(
            "/slow-login",
            get(move |session: Session| async move {
                session.start().await?;
                s3.notify_one();
                r3.notified().await;
                session.roll().await?;
                session.set("user", "ada")?;
                Ok::<_, Error>("ok")
            }),
        );
    let app = serve(engine_with(store, |b| clock.install(b)), routes);
    (app, started, release)
}

#[tokio::test]
async fn r9_logout_in_one_tab_is_not_undone_by_a_slower_request_in_another() {
    for slow in ["/slow-set", "/slow-peek", "/slow-login"] {
        let clock = TestClock::new();
        let store = FaultyStore::new();
        let (app, started, release) = racing_app(&store, &clock);
        let (cookie, _) = new_session(&app).await;
        let reply = post_with(&app, "/login?user=ada", Some(&cookie)).await;
        let cookie = reply.cookie();
        assert_eq!(get_with(&app, "/me", Some(&cookie)).await.body, "ada");
        clock.advance(MINUTE);
        // Tab 1 starts a slow request; tab 2 logs out meanwhile; then tab 1 finishes.
        let slow_tab = {
            let (app, cookie) = (app.clone(), cookie.clone());
            tokio::spawn(async move { get_with(&app, slow, Some(&cookie)).await })
        };
        started.notified().await;
        let logout = post_with(&app, "/logout", Some(&cookie)).await;
        assert_eq!(cookie_header(logout.set_cookie()), "sid=");
        release.notify_one();
        let slow_reply = slow_tab.await.unwrap();
        assert_eq!(slow_reply.status, StatusCode::OK, "{slow}");
        assert_eq!(
            slow_reply.set_cookies.len(),
            1,
            "{slow}: {:?}",
            slow_reply.set_cookies
        );
        assert_eq!(
            cookie_header(slow_reply.set_cookie()),
            "sid=",
            "{slow} undid the logout: {:?}",
            slow_reply.set_cookies
        );
        assert!(
            store.inner().is_empty(),
            "{slow} left a record behind: {} records",
            store.inner().len()
        );
        let me = get_with(&app, "/me", Some(&cookie)).await;
        assert_eq!(me.status, StatusCode::UNAUTHORIZED, "{slow}");
    }
}

#[tokio::test]
async fn r9_a_roll_whose_old_record_vanished_after_the_insert_leaves_nothing() {
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| b));
    let (cookie, old_id) = new_session(&app).await;
    // The old record is destroyed elsewhere once the new one is in: the touch finds it gone.
    store.fail(Hook::Touch, Fault::Gone);
    store.clear_history();
    let reply = post_with(&app, "/login?user=ada", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(cookie_header(reply.set_cookie()), "sid=");
    let hooks = store.hooks();
    assert_eq!(
        hooks,
        [
            Hook::Read,
            Hook::Id,
            Hook::Write,
            Hook::Touch,
            Hook::Destroy
        ]
    );
    // The new record was removed again, so the logout stands; the old one is untouched.
    assert_eq!(store.inner().len(), 1);
    assert!(
        store
            .inner()
            .read(&store_key(&old_id))
            .await
            .unwrap()
            .is_some()
    );
}

// ---- R10 roll ----

#[tokio::test]
async fn r10_roll_keeps_data_custom_duration_and_creation_time() {
    let clock = TestClock::new();
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| clock.install(b)));
    let created_at = clock.now();
    let (cookie, old_id) = new_session(&app).await;
    let reply = post_with(&app, "/duration?ms=7200000", Some(&cookie)).await;
    assert_eq!(max_age(reply.set_cookie()), 7200);
    clock.advance(10 * MINUTE);
    store.clear_history();
    let reply = post_with(&app, "/login?user=ada", Some(&cookie)).await;
    assert_eq!(reply.body, "true");
    let new_id = reply.cookie_id();
    assert_ne!(new_id, old_id);
    assert_eq!(max_age(reply.set_cookie()), 7200);
    // The new record is inserted, the old one confirmed live (R9), then destroyed.
    assert_eq!(
        store.history(),
        [
            call(Hook::Read, &store_key(&old_id), None),
            Call {
                hook: Hook::Id,
                key: Some(new_id.clone()),
                stored: None
            },
            call(Hook::Write, &store_key(&new_id), Some(false)),
            call(Hook::Touch, &store_key(&old_id), None),
            call(Hook::Destroy, &store_key(&old_id), None),
        ]
    );
    let record = store
        .inner()
        .read(&store_key(&new_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        Value::Object(record.data),
        json!({"visits": 1, "user": "ada", "__cust_dur": 7_200_000})
    );
    assert_eq!(record.created_at, created_at);
    assert_eq!(record.expires_at, clock.now() + 120 * MINUTE);
    assert!(
        store
            .inner()
            .read(&store_key(&old_id))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.inner().len(), 1);
    assert_eq!(get_with(&app, "/peek", Some(&cookie)).await.body, "0");
    assert_eq!(
        get_with(&app, "/me", Some(&reply.cookie())).await.body,
        "ada"
    );
}

#[tokio::test]
async fn r10_failed_insert_keeps_the_old_record() {
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| b));
    let (cookie, old_id) = new_session(&app).await;
    store.fail_times(Hook::Write, Fault::Backend, 1);
    store.clear_history();
    let reply = post_with(&app, "/login?user=ada", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.set_cookies.is_empty());
    assert_eq!(store.calls(Hook::Destroy), 0);
    assert_eq!(store.inner().len(), 1);
    let old = store
        .inner()
        .read(&store_key(&old_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Value::Object(old.data), json!({"visits": 1}));
    assert_eq!(get_with(&app, "/peek", Some(&cookie)).await.body, "1");
    assert_eq!(
        get_with(&app, "/me", Some(&cookie)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn r10_roll_of_a_new_session_inserts_once_and_destroys_nothing() {
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| b));
    let reply = post_with(&app, "/login?user=ada", None).await;
    assert_eq!(reply.body, "true");
    assert_eq!(store.hooks(), [Hook::Id, Hook::Id, Hook::Write]);
    let ids = store.generated_ids();
    assert_eq!(reply.cookie_id(), ids[1]);
    assert_eq!(store.written_keys(), [store_key(&ids[1])]);
    assert_eq!(
        get_with(&app, "/me", Some(&reply.cookie())).await.body,
        "ada"
    );
}

// ---- R11 destroy ----

#[tokio::test]
async fn r11_destroy_removes_at_once_and_nothing_persists_later_in_the_request() {
    let store = FaultyStore::new();
    let inner_store = store.clone();
    let routes = routes().route(
        "/destroy-then-use",
        get(move |session: Session| async move {
            session.start().await?.set("x", 1)?;
            let key = store_key(&session.id().unwrap());
            session.destroy().await?;
            let gone = inner_store.inner().read(&key).await.unwrap().is_none();
            let data = format!("{:?}", session.get_all());
            // Changes after a destroy are not persisted.
            let _ = session.set("y", 2);
            let after = [
                format!("{gone}"),
                format!("{}", session.ready()),
                format!("{:?}", session.id()),
                data,
                outcome(session.start().await),
                format!("{:?}", session.roll().await),
            ];
            Ok::<_, Error>(after.join("\n"))
        }),
    );
    let app = serve(engine_with(&store, |b| b), routes);
    let (cookie, id) = new_session(&app).await;
    store.clear_history();
    let reply = get_with(&app, "/destroy-then-use", Some(&cookie)).await;
    assert_eq!(
        reply.body,
        ["true", "false", "None", "Ok({})", "Ok(())", "Ok(false)"].join("\n")
    );
    assert_eq!(cookie_header(reply.set_cookie()), "sid=");
    // The record is read, then destroyed; nothing is written or touched afterwards (the
    // `roll` after the destroy may still ask the `id` hook for an id it then drops).
    let history = store.history();
    assert_eq!(
        history[..2],
        [
            call(Hook::Read, &store_key(&id), None),
            call(Hook::Destroy, &store_key(&id), None),
        ]
    );
    assert!(
        history[2..].iter().all(|call| call.hook == Hook::Id),
        "{history:?}"
    );
    assert!(store.inner().is_empty());
    assert_eq!(get_with(&app, "/peek", Some(&cookie)).await.body, "0");
}

#[tokio::test]
async fn r11_destroy_without_start_removes_the_cookies_record_without_reading() {
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| b));
    let (cookie, id) = new_session(&app).await;
    store.clear_history();
    let reply = post_with(&app, "/logout", Some(&cookie)).await;
    assert_eq!(reply.body, "ok");
    assert_eq!(cookie_header(reply.set_cookie()), "sid=");
    assert_eq!(
        store.history(),
        [call(Hook::Destroy, &store_key(&id), None)]
    );
    assert!(store.inner().is_empty());
}

// ---- R12 failures ----

#[tokio::test]
async fn r12_read_error_from_start_is_an_opaque_500_or_503() {
    for (fault, status, body) in [
        (
            Fault::Backend,
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal server error",
        ),
        (
            Fault::Unavailable,
            StatusCode::SERVICE_UNAVAILABLE,
            "service unavailable",
        ),
    ] {
        let store = FaultyStore::new();
        let app = app(engine_with(&store, |b| b));
        let (cookie, _) = new_session(&app).await;
        store.fail(Hook::Read, fault);
        store.clear_history();
        let reply = get_with(&app, "/visits", Some(&cookie)).await;
        assert_eq!((reply.status, reply.body.as_str()), (status, body));
        assert!(reply.set_cookies.is_empty());
        assert_eq!(store.hooks(), [Hook::Read]);
        // A failed start leaves the session unstarted; the record is intact.
        store.heal(Hook::Read);
        assert_eq!(get_with(&app, "/peek", Some(&cookie)).await.body, "1");
    }
}

#[tokio::test]
async fn r12_write_error_at_the_end_replaces_the_response_with_an_opaque_500() {
    let store = FaultyStore::new();
    let routes = routes().route(
        "/visits-with-header",
        get(|session: Session| async move {
            session.start().await?.set("visits", 5)?;
            Ok::<_, Error>(([("x-handler", "yes")], "handler body"))
        }),
    );
    let app = serve(engine_with(&store, |b| b), routes);
    let (cookie, _) = new_session(&app).await;
    store.fail(Hook::Write, Fault::Backend);
    for cookie in [None, Some(cookie.as_str())] {
        let reply = get_with(&app, "/visits-with-header", cookie).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(reply.body, "");
        assert!(reply.set_cookies.is_empty());
        assert!(reply.headers.get("x-handler").is_none());
        assert_eq!(reply.headers.get("cache-control").unwrap(), "no-store");
        assert_eq!(reply.headers.get("vary").unwrap(), "cookie");
    }
    store.heal(Hook::Write);
    assert_eq!(get_with(&app, "/peek", Some(&cookie)).await.body, "1");
    // An unavailable store at the end is a 503, as a time-out is (SPEC section 2).
    store.fail(Hook::Write, Fault::Unavailable);
    let reply = get_with(&app, "/visits", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body, "");
    assert!(reply.set_cookies.is_empty());
}

#[tokio::test]
async fn r12_destroy_error_is_an_opaque_500_without_cookie() {
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| b));
    let (cookie, _) = new_session(&app).await;
    // At the end of the request: the old record of a roll.
    store.fail(Hook::Destroy, Fault::Backend);
    let reply = post_with(&app, "/login?user=ada", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.body, "");
    assert!(reply.set_cookies.is_empty());
    // In the handler: `destroy()` returns the error, the session is unchanged.
    let reply = post_with(&app, "/logout", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.body, "internal server error");
    assert!(reply.set_cookies.is_empty());
    store.heal(Hook::Destroy);
    assert_eq!(get_with(&app, "/peek", Some(&cookie)).await.body, "1");
}

#[tokio::test]
async fn r12_touch_error_passes_the_response_without_refresh() {
    let clock = TestClock::new();
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| clock.install(b)));
    let (cookie, _) = new_session(&app).await;
    clock.advance(MINUTE);
    store.fail(Hook::Touch, Fault::Backend);
    store.clear_history();
    let reply = get_with(&app, "/peek", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "1");
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    assert_eq!(store.hooks(), [Hook::Read, Hook::Touch]);
    assert_eq!(reply.header_values("vary"), ["cookie"]);
}

#[tokio::test]
async fn r12_error_bodies_never_carry_the_store_error() {
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| b));
    let (cookie, _) = new_session(&app).await;
    for hook in [Hook::Read, Hook::Write, Hook::Destroy, Hook::Id] {
        for fault in [Fault::Backend, Fault::Unavailable] {
            store.fail(hook, fault);
            for (method, uri) in [
                (Method::GET, "/visits"),
                (Method::POST, "/logout"),
                (Method::POST, "/login?user=a"),
            ] {
                for cookie in [None, Some(cookie.as_str())] {
                    let reply = send(&app, request(method.clone(), uri, cookie)).await;
                    assert!(
                        !reply.body.contains(FAULT_MESSAGE) && !reply.body.contains("fire"),
                        "{hook:?} {uri}: {reply:?}"
                    );
                }
            }
            store.heal(hook);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn r12_store_timeout_counts_as_unavailable() {
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| {
        b.store_timeout(Duration::from_secs(1))
    }));
    let (cookie, _) = new_session(&app).await;
    store.delay(Hook::Read, Duration::from_secs(3600));
    let reply = get_with(&app, "/visits", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body, "service unavailable");
    assert!(reply.set_cookies.is_empty());
}

#[tokio::test]
async fn r12_cleanup_returns_the_store_error_and_then_the_count() {
    let store = FaultyStore::new();
    let engine = engine_with(&store, |b| b);
    store.fail(Hook::Cleanup, Fault::Unavailable);
    assert!(matches!(
        engine.cleanup().await,
        Err(StoreError::Unavailable(_))
    ));
    store.heal(Hook::Cleanup);
    let past = SystemTime::now() - MINUTE;
    let expired = Record::new(Map::new(), past, past);
    store
        .inner()
        .write("expired", &expired, &Changes::replace_all(), false)
        .await
        .unwrap();
    assert_eq!(engine.cleanup().await.unwrap(), 1);
    assert_eq!(engine.cleanup().await.unwrap(), 0);
    assert_eq!(store.calls(Hook::Cleanup), 3);
}

// ---- R13 caching ----

#[tokio::test]
async fn r13_cache_control_no_store_only_when_the_cookie_is_set_or_cleared() {
    let clock = TestClock::new();
    let routes = routes().route(
        "/cached",
        get(|session: Session| async move {
            session.start().await?.set("a", 1)?;
            Ok::<_, Error>(([(CACHE_CONTROL, "private, max-age=60")], "ok"))
        }),
    );
    let app = serve(clock.install(builder()).build().unwrap(), routes);
    let created = get_with(&app, "/visits", None).await;
    assert_eq!(created.header_values("cache-control"), ["no-store"]);
    let cookie = created.cookie();
    // A refresh sets the cookie too.
    clock.advance(MINUTE);
    let refreshed = get_with(&app, "/peek", Some(&cookie)).await;
    assert_eq!(refreshed.set_cookies.len(), 1);
    assert_eq!(refreshed.header_values("cache-control"), ["no-store"]);
    // The handler's own Cache-Control is kept as it is.
    let own = get_with(&app, "/cached", Some(&cookie)).await;
    assert_eq!(own.set_cookies.len(), 1);
    assert_eq!(own.header_values("cache-control"), ["private, max-age=60"]);
    // No cookie, no Cache-Control.
    for uri in ["/id", "/health", "/untouched"] {
        let reply = get_with(&app, uri, None).await;
        assert!(reply.set_cookies.is_empty());
        assert!(reply.header_values("cache-control").is_empty(), "{uri}");
    }
    let cleared = post_with(&app, "/logout", Some(&cookie)).await;
    assert_eq!(cookie_header(cleared.set_cookie()), "sid=");
    assert_eq!(cleared.header_values("cache-control"), ["no-store"]);
}

#[tokio::test]
async fn r13_a_started_session_varies_by_cookie() {
    fn with_vary(vary: &'static str) -> axum::routing::MethodRouter {
        get(move |session: Session| async move {
            session.start().await?;
            Ok::<_, Error>(([(VARY, vary)], "ok"))
        })
    }
    let routes = routes()
        .route("/vary-encoding", with_vary("Accept-Encoding"))
        .route("/vary-cookie", with_vary("Accept-Encoding, Cookie"))
        .route("/vary-star", with_vary("*"));
    let app = serve(engine(), routes);
    let (cookie, _) = new_session(&app).await;
    for cookie in [None, Some(cookie.as_str())] {
        let started = get_with(&app, "/id", cookie).await;
        let vary = started.header_values("vary");
        assert_eq!(vary.len(), 1);
        assert!(vary[0].eq_ignore_ascii_case("cookie"), "{vary:?}");
        assert_eq!(
            get_with(&app, "/vary-encoding", cookie)
                .await
                .header_values("vary"),
            ["Accept-Encoding", "cookie"]
        );
        assert_eq!(
            get_with(&app, "/vary-cookie", cookie)
                .await
                .header_values("vary"),
            ["Accept-Encoding, Cookie"]
        );
        assert_eq!(
            get_with(&app, "/vary-star", cookie)
                .await
                .header_values("vary"),
            ["*"]
        );
        for uri in ["/health", "/untouched"] {
            assert!(
                get_with(&app, uri, cookie)
                    .await
                    .header_values("vary")
                    .is_empty()
            );
        }
    }
    let logout = post_with(&app, "/logout", None).await;
    assert_eq!(logout.header_values("vary"), ["cookie"]);
}

// ---- R14 secrets in logs ----

/// A `MakeWriter` that keeps everything the subscriber writes.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn r14_logged_events_never_carry_an_id_a_signed_id_or_a_secret() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let capture = capture.clone();
            move || capture.clone()
        })
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    // tracing-core caches each callsite's interest for the whole process and, while at most
    // one dispatcher exists, computes it from the registering thread's default alone: an
    // event first hit by a test on another thread (which has no subscriber) would stay
    // disabled here. A second dispatcher that lives as long as the process makes every
    // registration consult all dispatchers, this one included.
    static SECOND: OnceLock<tracing::Dispatch> = OnceLock::new();
    SECOND.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
    let guard = tracing::subscriber::set_default(subscriber);

    let clock = TestClock::new();
    let store = FaultyStore::new();
    let app = app(engine_with(&store, |b| {
        clock.install(b).secrets([SECRET, OLD_SECRET])
    }));
    let mut ids = Vec::new();
    // A session signed with the old secret, re-issued under the current one.
    let (cookie, id) = new_session(&app).await;
    ids.push(id.clone());
    let old_cookie = format!("sid={}", sign(OLD_SECRET, &id));
    clock.advance(MINUTE);
    assert_eq!(get_with(&app, "/peek", Some(&old_cookie)).await.body, "1");
    // A touch failure (warn), a write failure (error), a read failure (error), a destroy
    // failure (error), a roll.
    clock.advance(MINUTE);
    store.fail(Hook::Touch, Fault::Backend);
    assert_eq!(
        get_with(&app, "/peek", Some(&cookie)).await.status,
        StatusCode::OK
    );
    store.heal(Hook::Touch);
    store.fail(Hook::Write, Fault::Unavailable);
    assert_eq!(
        get_with(&app, "/visits", Some(&cookie)).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    store.heal(Hook::Write);
    store.fail(Hook::Read, Fault::Backend);
    assert_eq!(
        get_with(&app, "/visits", Some(&cookie)).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    store.heal(Hook::Read);
    store.fail(Hook::Destroy, Fault::Backend);
    assert_eq!(
        post_with(&app, "/logout", Some(&cookie)).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    store.heal(Hook::Destroy);
    let rolled = post_with(&app, "/login?user=ada", Some(&cookie)).await;
    ids.push(rolled.cookie_id());
    store.id_taken_for_next(3);
    assert_eq!(
        get_with(&app, "/visits", None).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    ids.extend(store.generated_ids());
    post_with(&app, "/logout", Some(&rolled.cookie())).await;
    drop(guard);

    let logs = capture.text();
    for expected in [
        "session touch failed",
        "session could not be saved",
        "session error",
    ] {
        assert!(logs.contains(expected), "no {expected:?} in:\n{logs}");
    }
    for secret in [SECRET, OLD_SECRET] {
        assert!(!logs.contains(secret), "a secret was logged:\n{logs}");
    }
    ids.sort();
    ids.dedup();
    assert!(ids.len() >= 5, "{ids:?}");
    for id in &ids {
        for secret in [SECRET, OLD_SECRET] {
            let signed = sign(secret, id);
            let tag = &signed[id.len() + 1..];
            for needle in [id.as_str(), &signed, &percent_encode(&signed), tag] {
                assert!(!logs.contains(needle), "{needle:?} was logged:\n{logs}");
            }
        }
    }
}

#[tokio::test]
async fn r14_debug_of_the_engine_and_the_session_redacts() {
    let engine = SessionEngine::builder()
        .secrets([SECRET, OLD_SECRET])
        .build()
        .unwrap();
    for debug in [
        format!("{engine:?}"),
        format!("{engine:#?}"),
        format!("{:?}", SessionLayer::new(engine.clone())),
        format!(
            "{:?}",
            SessionEngine::builder().secrets([SECRET, OLD_SECRET])
        ),
    ] {
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(!debug.contains(OLD_SECRET), "{debug}");
        assert!(debug.contains("REDACTED"), "{debug}");
    }
    let routes = routes().route(
        "/debug",
        get(|session: Session| async move {
            session.start().await?.set("user", "ada")?;
            Ok::<_, Error>(format!("{session:?}\n{session:#?}"))
        }),
    );
    let app = serve(engine, routes);
    let reply = get_with(&app, "/debug", None).await;
    let id = reply.cookie_id();
    let signed = cookie_value(reply.set_cookie());
    assert!(reply.body.contains("REDACTED"), "{}", reply.body);
    assert!(!reply.body.contains(&id), "{}", reply.body);
    assert!(!reply.body.contains(signed), "{}", reply.body);
}

// ---- key rotation ----

#[tokio::test]
async fn key_rotation_old_secret_cookie_is_accepted_and_reissued_under_the_current_one() {
    let clock = TestClock::new();
    let store = Arc::new(MemoryStore::new());
    let make = |secrets: &[&str], touch: bool| {
        app(clock
            .install(SessionEngine::builder())
            .secrets(secrets)
            .automatic_touch(touch)
            .shared_store(store.clone())
            .build()
            .unwrap())
    };
    let before = make(&[OLD_SECRET], true);
    let after = make(&[SECRET, OLD_SECRET], false);
    let after_touching = make(&[SECRET, OLD_SECRET], true);
    let created = get_with(&before, "/visits", None).await;
    let id = created.cookie_id();
    assert_eq!(cookie_value(created.set_cookie()), sign(OLD_SECRET, &id));
    let old_cookie = created.cookie();
    // Accepted, and re-issued under the current secret even without a touch.
    let reply = get_with(&after, "/peek", Some(&old_cookie)).await;
    assert_eq!(reply.body, "1");
    assert_eq!(
        reply.set_cookie(),
        format!(
            "sid={}; Max-Age=1800; {DEFAULT_ATTRIBUTES}",
            sign(SECRET, &id)
        )
    );
    let new_cookie = reply.cookie();
    // The re-issued cookie needs no re-issue.
    let reply = get_with(&after, "/peek", Some(&new_cookie)).await;
    assert_eq!(reply.body, "1");
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    // A modification or a touch also signs with the current secret.
    let reply = get_with(&after, "/visits", Some(&old_cookie)).await;
    assert_eq!(cookie_value(reply.set_cookie()), sign(SECRET, &id));
    clock.advance(MINUTE);
    let reply = get_with(&after_touching, "/peek", Some(&old_cookie)).await;
    assert_eq!(reply.body, "2");
    assert_eq!(cookie_value(reply.set_cookie()), sign(SECRET, &id));
    // The engine that knows only the old secret refuses the new cookie: it really is re-signed.
    assert_eq!(
        get_with(&before, "/peek", Some(&new_cookie)).await.body,
        "0"
    );
    // A secret that is not in the list verifies nothing.
    let foreign = format!("sid={}", sign("a-foreign-secret-of-32-bytes-or-more", &id));
    assert_eq!(get_with(&after, "/peek", Some(&foreign)).await.body, "0");
}

// ---- ids chosen by the application ----

#[tokio::test]
async fn set_signed_id_with_a_bad_signature_errors() {
    let routes = routes().route(
        "/signed",
        get(
            |session: Session, Query(q): Query<std::collections::HashMap<String, String>>| async move {
                outcome(session.set_signed_id(&q["v"], q.get("secret").map(String::as_str)))
            },
        ),
    );
    let app = serve(engine(), routes);
    let custom = "a-custom-secret-for-set-signed-id";
    let good = sign(SECRET, "abc");
    let cases = [
        ("abc.def".to_owned(), None, "Err(BadSignature)"),
        ("abc".to_owned(), None, "Err(BadSignature)"),
        (format!("{good}x"), None, "Err(BadSignature)"),
        (sign(OLD_SECRET, "abc"), None, "Err(BadSignature)"),
        (sign(custom, "abc"), None, "Err(BadSignature)"),
        (sign(custom, "abc"), Some(SECRET), "Err(BadSignature)"),
        (good.clone(), Some(custom), "Err(BadSignature)"),
        (good.clone(), None, "Ok(())"),
        (percent_encode(&good), None, "Ok(())"),
        (sign(custom, "abc"), Some(custom), "Ok(())"),
        // A valid signature over an id the engine would not accept.
        (sign(SECRET, "a b"), None, "Err(BadSignature)"),
    ];
    for (value, secret, expected) in cases {
        let mut uri = format!("/signed?v={}", percent_encode(&value));
        if let Some(secret) = secret {
            uri.push_str(&format!("&secret={}", percent_encode(secret)));
        }
        let reply = get_with(&app, &uri, None).await;
        assert_eq!(reply.body, expected, "{value} {secret:?}");
        assert!(reply.set_cookies.is_empty());
    }
}

#[tokio::test]
async fn set_signed_id_chooses_the_session_and_the_cookie_follows() {
    let routes = routes().route(
        "/adopt-signed",
        get(
            |session: Session, Query(q): Query<std::collections::HashMap<String, String>>| async move {
                session.set_signed_id(&q["v"], None)?;
                session.start().await?;
                Ok::<_, Error>(session.get::<u64>("visits")?.unwrap_or(0).to_string())
            },
        ),
    );
    let app = serve(engine(), routes);
    let (_, id) = new_session(&app).await;
    let uri = format!("/adopt-signed?v={}", percent_encode(&sign(SECRET, &id)));
    let reply = get_with(&app, &uri, None).await;
    assert_eq!(reply.body, "1");
    assert_eq!(cookie_value(reply.set_cookie()), sign(SECRET, &id));
    let uri = format!("/adopt-signed?v={}", percent_encode(&sign(OLD_SECRET, &id)));
    assert_eq!(
        get_with(&app, &uri, None).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[tokio::test]
async fn set_id_before_start_chooses_the_read_id_and_the_cookie_follows() {
    let clock = TestClock::new();
    let store = FaultyStore::new();
    let routes = routes().route(
        "/adopt",
        get(
            |session: Session, Query(q): Query<std::collections::HashMap<String, String>>| async move {
                session.set_id(q["id"].clone())?;
                session.start().await?;
                let visits = session.get::<u64>("visits")?.unwrap_or(0) + 1;
                session.set("visits", visits)?;
                let late = outcome(session.set_id("another-id"));
                Ok::<_, Error>(format!("{visits} {} {late}", session.id().unwrap()))
            },
        ),
    );
    let app = serve(engine_with(&store, |b| clock.install(b)), routes);
    let (_, a) = new_session(&app).await;
    let (cookie_b, b) = new_session(&app).await;
    store.clear_history();
    // The request carries B's cookie; the handler chooses A.
    let reply = get_with(&app, &format!("/adopt?id={a}"), Some(&cookie_b)).await;
    assert_eq!(reply.body, format!("2 {a} Err(AlreadyStarted)"));
    assert_eq!(
        reply.set_cookie(),
        format!(
            "sid={}; Max-Age=1800; {DEFAULT_ATTRIBUTES}",
            sign(SECRET, &a)
        )
    );
    assert_eq!(
        store.history(),
        [
            call(Hook::Read, &store_key(&a), None),
            call(Hook::Write, &store_key(&a), Some(true)),
        ]
    );
    assert_eq!(get_with(&app, "/peek", Some(&cookie_b)).await.body, "1");
    assert_ne!(a, b);
    // An id without a record is replaced by a fresh one (R4), and nothing is written under it.
    store.clear_history();
    let unknown = "UnknownIdChosenByTheApplication0";
    let reply = get_with(&app, &format!("/adopt?id={unknown}"), None).await;
    let fresh = reply.cookie_id();
    assert_ne!(fresh, unknown);
    assert_eq!(reply.body, format!("1 {fresh} Err(AlreadyStarted)"));
    assert_eq!(store.written_keys(), [store_key(&fresh)]);
    // An id the engine does not accept.
    let reply = get_with(&app, "/adopt?id=a.b", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
}

// ---- the extractor ----

#[tokio::test]
async fn extractor_without_the_layer_is_a_500_naming_session_layer() {
    let app: Router = Router::new()
        .route("/", get(|_session: Session| async { "unreachable" }))
        .with_state(());
    let reply = get_with(&app, "/", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        reply.body,
        "the Session extractor needs a SessionLayer around this route"
    );
}

// ---- data ----

#[tokio::test]
async fn max_data_bytes_refuses_oversize_data_and_keeps_the_old() {
    let store = FaultyStore::new();
    let routes = routes()
        .route(
            "/big",
            get(
                |session: Session, Query(q): Query<std::collections::HashMap<String, usize>>| async move {
                    session.start().await?;
                    Ok::<_, Error>(outcome(session.set("big", "y".repeat(q["n"]))))
                },
            ),
        )
        .route(
            "/many",
            get(|session: Session| async move {
                session.start().await?;
                let many = outcome(session.set_many(json!({"a": "z", "d": "y".repeat(60)})));
                let reset = outcome(session.reset(json!({"e": "y".repeat(60)})));
                Ok::<_, Error>(format!("{many} {reset}"))
            }),
        );
    let app = serve(
        engine_with(&store, |b| b.max_data_bytes(64).automatic_touch(false)),
        routes,
    );
    let created = get_with(&app, "/set?key=a&value=x", None).await;
    let cookie = created.cookie();
    // {"a":"x"} is 9 bytes; with ,"big":"…" it is 18 + n.
    store.clear_history();
    let reply = get_with(&app, "/big?n=47", Some(&cookie)).await;
    assert_eq!(reply.body, "Err(DataTooLarge { size: 65, limit: 64 })");
    assert!(reply.set_cookies.is_empty());
    assert_eq!(store.hooks(), [Hook::Read]);
    let reply = get_with(&app, "/big?n=1000", Some(&cookie)).await;
    assert_eq!(reply.body, "Err(DataTooLarge { size: 1018, limit: 64 })");
    assert_eq!(
        get_with(&app, "/all", Some(&cookie)).await.body,
        r#"{"a":"x"}"#
    );
    // All or nothing.
    let reply = get_with(&app, "/many", Some(&cookie)).await;
    assert_eq!(
        reply.body,
        "Err(DataTooLarge { size: 76, limit: 64 }) Err(DataTooLarge { size: 68, limit: 64 })"
    );
    assert!(reply.set_cookies.is_empty());
    assert_eq!(
        get_with(&app, "/all", Some(&cookie)).await.body,
        r#"{"a":"x"}"#
    );
    // Exactly at the limit is accepted.
    let reply = get_with(&app, "/big?n=46", Some(&cookie)).await;
    assert_eq!(reply.body, "Ok(())");
    assert_eq!(reply.set_cookies.len(), 1);
    let all = get_with(&app, "/all", Some(&cookie)).await;
    assert_eq!(all.body.len(), 64);
    assert_eq!(
        serde_json::from_str::<Value>(&all.body).unwrap(),
        json!({"a": "x", "big": "y".repeat(46)})
    );
}

#[tokio::test]
async fn reserved_keys_are_refused_by_set_and_hidden_from_get_all() {
    let store = FaultyStore::new();
    let routes = routes().route(
        "/reserved",
        get(|session: Session| async move {
            session.start().await?.set_duration(60 * MINUTE)?;
            session.set("ok", 1)?;
            Ok::<_, Error>(
                [
                    outcome(session.set("__x", 1)),
                    outcome(session.set("__cust_dur", 1)),
                    outcome(session.set_many(json!({"__y": 1, "fine": 2}))),
                    outcome(session.reset(json!({"__z": 1}))),
                    outcome(session.delete("__cust_dur")),
                    format!("{:?}", session.get::<u64>("__cust_dur")),
                    Value::Object(session.get_all()?).to_string(),
                ]
                .join("\n"),
            )
        }),
    );
    let app = serve(engine_with(&store, |b| b), routes);
    let reply = get_with(&app, "/reserved", None).await;
    assert_eq!(
        reply.body,
        [
            "Err(ReservedKey)",
            "Err(ReservedKey)",
            "Err(ReservedKey)",
            "Err(ReservedKey)",
            "Err(ReservedKey)",
            "Ok(None)",
            r#"{"ok":1}"#,
        ]
        .join("\n")
    );
    let id = reply.cookie_id();
    let record = store.inner().read(&store_key(&id)).await.unwrap().unwrap();
    assert_eq!(
        Value::Object(record.data),
        json!({"ok": 1, "__cust_dur": 3_600_000})
    );
    assert_eq!(
        get_with(&app, "/all", Some(&reply.cookie())).await.body,
        r#"{"ok":1}"#
    );
}

#[tokio::test]
async fn set_duration_persists_across_requests_via_cust_dur() {
    let clock = TestClock::new();
    let store = FaultyStore::new();
    let routes = routes().route(
        "/duration-now",
        get(|session: Session| async move {
            session.start().await?;
            Ok::<_, Error>(session.duration().as_millis().to_string())
        }),
    );
    let app = serve(engine_with(&store, |b| clock.install(b)), routes);
    let start = clock.now();
    let reply = post_with(&app, "/duration?ms=7200000", None).await;
    assert_eq!(max_age(reply.set_cookie()), 7200);
    let cookie = reply.cookie();
    let id = reply.cookie_id();
    let record = store.inner().read(&store_key(&id)).await.unwrap().unwrap();
    assert_eq!(Value::Object(record.data), json!({"__cust_dur": 7_200_000}));
    assert_eq!(record.expires_at, start + 120 * MINUTE);
    // Later requests use it: past the engine's 30 minutes, the session lives on, and each
    // touch gives it two more hours.
    clock.advance(60 * MINUTE);
    let reply = get_with(&app, "/duration-now", Some(&cookie)).await;
    assert_eq!(reply.body, "7200000");
    assert_eq!(max_age(reply.set_cookie()), 7200);
    clock.advance(119 * MINUTE);
    let reply = get_with(&app, "/id", Some(&cookie)).await;
    assert_eq!(reply.body, id);
    // A session without it uses the engine's duration.
    let other = get_with(&app, "/duration-now", None).await;
    assert_eq!(other.body, "1800000");
    // Two hours and a second without a request: gone.
    clock.advance(120 * MINUTE + Duration::from_secs(1));
    assert_ne!(get_with(&app, "/id", Some(&cookie)).await.body, id);
}

// ---- helpers of this file ----

#[test]
fn helpers_parse_set_cookie() {
    let set = "sid=abc.def; Max-Age=60; Path=/; Secure";
    assert_eq!(cookie_header(set), "sid=abc.def");
    assert_eq!(cookie_value(set), "abc.def");
    assert_eq!(max_age(set), 60);
    assert_eq!(attributes(set), ["Max-Age=60", "Path=/", "Secure"]);
    assert_eq!(id_of("a.b.c"), "a.b");
    assert_eq!(
        sign("tobiiscool", "hello"),
        "hello.DGDUkGlIkCzPz+C0B064FNgHdEjox7ch8tOBGslZ5QI"
    );
    assert_eq!(percent_encode("a+b/c.d"), "a%2Bb%2Fc%2Ed");
}

/// R9 and R11: a clone of the handle (here in a spawned task) destroys the session while the
/// end of the request's automatic touch is still waiting on the store. The destroy removes the
/// record, the touch then finds it gone, and the response clears the cookie.
#[tokio::test]
async fn r9_a_destroy_from_a_clone_during_the_automatic_touch_wins() {
    let store = FaultyStore::new();
    let engine = engine_with(&store, |builder| builder);
    let routes = routes().route(
        "/read-then-logout-elsewhere",
        get(|session: Session| async move {
            session.start().await?;
            let clone = session.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                clone.destroy().await.map(|_| ())
            });
            Ok::<_, session_engine::Error>("ok")
        }),
    );
    let app = serve(engine, routes);
    let (cookie, id) = new_session(&app).await;
    store.delay(Hook::Touch, Duration::from_millis(300));
    let reply = get_with(&app, "/read-then-logout-elsewhere", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.set_cookie().contains("Max-Age=0"),
        "the cookie is cleared: {:?}",
        reply.set_cookies
    );
    assert_eq!(store.read(&store_key(&id)).await.unwrap(), None);
}
