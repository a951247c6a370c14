//! The handle's API over HTTP: ids chosen by the application, key rotation, the extractor,
//! the data rules (size limit, reserved keys, custom duration), and R16 (the memory store
//! forgets expired sessions by itself).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use session_engine::{Error, LazySession, MemoryStore, Session, WriteMode};

use crate::faults::{Call, Fault, Hook};
use crate::harness::{
    DEFAULT_ATTRIBUTES, Harness, MINUTE, OLD_SECRET, SECRET, builder, cookie_value, engine_on,
    get_with, max_age, outcome, percent_encode, post_with, routes, serve, session_cookie, sign,
    store_key,
};

type Params = Query<HashMap<String, String>>;

// ---- key rotation ----

#[tokio::test]
async fn key_rotation_old_secret_cookie_is_accepted_and_reissued_under_the_current_one() {
    let h = Harness::with(|b| b.secrets([SECRET, OLD_SECRET]));
    // The same store, before the rotation: only the old secret.
    let before = h.clock.install(builder().secrets([OLD_SECRET]));
    let before = serve(
        before.shared_store(h.store.clone()).build().unwrap(),
        routes(),
    );
    let created = get_with(&before, "/visits", None).await;
    let id = created.cookie_id();
    assert_eq!(cookie_value(created.set_cookie()), sign(OLD_SECRET, &id));
    let old_cookie = created.cookie();
    // Accepted, and re-issued under the current secret though no touch is due (R18).
    h.store.clear_history();
    let reply = h.get("/peek", Some(&old_cookie)).await;
    assert_eq!(reply.body, "1");
    assert_eq!(reply.set_cookie(), session_cookie(&id, 1800));
    assert_eq!(h.store.hooks(), [Hook::Read]);
    let new_cookie = reply.cookie();
    // The re-issued cookie needs no re-issue.
    let reply = h.get("/peek", Some(&new_cookie)).await;
    assert_eq!(reply.body, "1");
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    // A modification or a touch also signs with the current secret.
    let reply = h.get("/visits", Some(&old_cookie)).await;
    assert_eq!(cookie_value(reply.set_cookie()), sign(SECRET, &id));
    h.advance(MINUTE);
    h.store.clear_history();
    let reply = h.get("/peek", Some(&old_cookie)).await;
    assert_eq!(reply.body, "2");
    assert_eq!(h.store.hooks(), [Hook::Read, Hook::Touch]);
    assert_eq!(cookie_value(reply.set_cookie()), sign(SECRET, &id));
    // The engine that knows only the old secret refuses the new cookie: it really is re-signed.
    assert_eq!(
        get_with(&before, "/peek", Some(&new_cookie)).await.body,
        "0"
    );
    // A secret that is not in the list verifies nothing.
    let foreign = format!("sid={}", sign("a-foreign-secret-of-32-bytes-or-more", &id));
    assert_eq!(h.get("/peek", Some(&foreign)).await.body, "0");
}

// ---- ids chosen by the application ----

#[tokio::test]
async fn set_signed_id_with_a_bad_signature_errors() {
    let signed = Router::new().route(
        "/signed",
        get(|session: LazySession, Query(q): Params| async move {
            outcome(session.set_signed_id(&q["v"], q.get("secret").map(String::as_str)))
        }),
    );
    let h = Harness::serving(|b| b, signed);
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
        let reply = h.get(&uri, None).await;
        assert_eq!(reply.body, expected, "{value} {secret:?}");
        assert!(reply.set_cookies.is_empty());
    }
    assert_eq!(h.store.total_calls(), 0);
}

#[tokio::test]
async fn set_signed_id_chooses_the_session_and_the_cookie_follows() {
    let adopt = Router::new().route(
        "/adopt-signed",
        get(|session: LazySession, Query(q): Params| async move {
            session.set_signed_id(&q["v"], None)?;
            session.start().await?;
            Ok::<_, Error>(session.get::<u64>("visits")?.unwrap_or(0).to_string())
        }),
    );
    let h = Harness::serving(|b| b, adopt);
    let (_, id) = h.new_session().await;
    h.advance(Duration::from_secs(10));
    let uri = format!("/adopt-signed?v={}", percent_encode(&sign(SECRET, &id)));
    let reply = h.get(&uri, None).await;
    assert_eq!(reply.body, "1");
    // No touch is due: the cookie carries the record's current expiry.
    assert_eq!(
        reply.set_cookie(),
        format!(
            "sid={}; Max-Age=1790; {DEFAULT_ATTRIBUTES}",
            sign(SECRET, &id)
        )
    );
    assert_eq!(h.store.hooks(), [Hook::Read]);
    let uri = format!("/adopt-signed?v={}", percent_encode(&sign(OLD_SECRET, &id)));
    let reply = h.get(&uri, None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.set_cookies.is_empty());
}

#[tokio::test]
async fn set_id_before_start_chooses_the_read_id_and_the_cookie_follows() {
    let adopt = Router::new().route(
        "/adopt",
        get(|session: LazySession, Query(q): Params| async move {
            session.set_id(q["id"].clone())?;
            session.start().await?;
            let visits = session.get::<u64>("visits")?.unwrap_or(0) + 1;
            session.set("visits", visits)?;
            let late = outcome(session.set_id("another-id"));
            Ok::<_, Error>(format!("{visits} {} {late}", session.id().unwrap()))
        }),
    );
    let h = Harness::serving(|b| b, adopt);
    let (_, a) = h.new_session().await;
    let (cookie_b, b) = h.new_session().await;
    assert_ne!(a, b);
    // The request carries B's cookie; the handler chooses A.
    let reply = h.get(&format!("/adopt?id={a}"), Some(&cookie_b)).await;
    assert_eq!(reply.body, format!("2 {a} Err(AlreadyStarted)"));
    assert_eq!(reply.set_cookie(), session_cookie(&a, 1800));
    let key = store_key(&a);
    assert_eq!(
        h.store.history(),
        [
            Call::new(Hook::Read, &key),
            Call::write(&key, WriteMode::Update)
        ]
    );
    assert_eq!(h.get("/peek", Some(&cookie_b)).await.body, "1");
    // An id without a record is replaced by a fresh one (R4), and nothing is written under it.
    h.store.clear_history();
    let unknown = "UnknownIdChosenByTheApplication0";
    let reply = h.get(&format!("/adopt?id={unknown}"), None).await;
    let fresh = reply.cookie_id();
    assert_ne!(fresh, unknown);
    assert_eq!(reply.body, format!("1 {fresh} Err(AlreadyStarted)"));
    assert_eq!(h.store.written_keys(), [store_key(&fresh)]);
    // An id the engine does not accept.
    let reply = h.get("/adopt?id=a.b", None).await;
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

#[tokio::test]
async fn r5_the_session_extractor_starts_the_session() {
    // The handler never calls `start`: the extractor did.
    let data =
        Router::new()
            .route(
                "/count",
                get(|session: Session| async move {
                    let ready = session.ready();
                    let n = session.get::<u64>("n")?.unwrap_or(0) + 1;
                    session.set("n", n)?;
                    Ok::<_, Error>(format!("{ready} {n}"))
                }),
            )
            .route(
                "/optional",
                get(|session: Option<Session>| async move {
                    format!("{:?}", session.map(|s| s.ready()))
                }),
            );
    let h = Harness::serving(|b| b, data);
    let first = h.get("/count", None).await;
    assert_eq!(first.body, "true 1");
    let cookie = first.cookie();
    assert_eq!(h.get("/count", Some(&cookie)).await.body, "true 2");
    assert_eq!(h.get("/optional", Some(&cookie)).await.body, "Some(true)");
    // A store that fails at the extractor's read answers as `start()` would: 503 or 500,
    // opaque, with no cookie.
    h.store.fail(Hook::Read, Fault::Unavailable);
    for uri in ["/count", "/optional"] {
        let reply = h.get(uri, Some(&cookie)).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert_eq!(reply.body, "", "{uri}");
        assert!(reply.set_cookies.is_empty(), "{uri}");
    }
    h.store.fail(Hook::Read, Fault::Backend);
    assert_eq!(
        h.get("/count", Some(&cookie)).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[tokio::test]
async fn r5_not_started_is_logged_at_error_with_the_fix() {
    let lazy = Router::new().route(
        "/lazy",
        get(|session: LazySession| async move {
            session.set("a", 1)?;
            Ok::<_, Error>("unreachable")
        }),
    );
    let h = Harness::serving(|b| b, lazy);
    let (logs, _guard) = crate::logs::capture();
    let reply = h.get("/lazy", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    let logs = logs.text();
    assert!(logs.contains("ERROR"), "{logs}");
    assert!(
        logs.contains("call `session.start().await` first"),
        "{logs}"
    );
}

#[tokio::test]
async fn the_lazy_extractors_without_the_layer() {
    let app: Router = Router::new()
        .route(
            "/lazy",
            get(|_session: LazySession| async { "unreachable" }),
        )
        .route(
            "/optional",
            get(|session: Option<LazySession>| async move { format!("{}", session.is_none()) }),
        )
        .route(
            "/optional-started",
            get(|session: Option<Session>| async move { format!("{}", session.is_none()) }),
        )
        .with_state(());
    let reply = get_with(&app, "/lazy", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        reply.body,
        "the Session extractor needs a SessionLayer around this route"
    );
    assert_eq!(get_with(&app, "/optional", None).await.body, "true");
    assert_eq!(get_with(&app, "/optional-started", None).await.body, "true");
}

// ---- destroy, save and the cookie's persistence ----

#[tokio::test]
async fn destroy_says_whether_a_live_record_was_removed() {
    let twice = Router::new().route(
        "/destroy-twice",
        get(|session: LazySession| async move {
            let first = session.destroy().await?;
            let second = session.destroy().await?;
            Ok::<_, Error>(format!("{first} {second}"))
        }),
    );
    let h = Harness::serving(|b| b, twice);
    // No cookie, or a cookie whose record is gone: nothing was removed.
    assert_eq!(h.get("/destroy-twice", None).await.body, "false false");
    let (cookie, id) = h.new_session().await;
    let reply = h.get("/destroy-twice", Some(&cookie)).await;
    assert_eq!(reply.body, "true false");
    assert!(reply.removes_cookie());
    assert!(h.record(&id).await.is_none());
    assert_eq!(
        h.get("/destroy-twice", Some(&cookie)).await.body,
        "false false"
    );
    // Rolled away by a login meanwhile: the old cookie's record is no longer live.
    let (cookie, _) = h.new_session().await;
    h.post("/login?user=ada", Some(&cookie)).await;
    assert_eq!(
        h.get("/destroy-twice", Some(&cookie)).await.body,
        "false false"
    );
}

#[tokio::test]
async fn save_stores_a_session_without_data_and_writes_a_stored_one_again() {
    let save = Router::new().route(
        "/save",
        get(|session: Session| async move {
            session.save()?;
            Ok::<_, Error>("ok")
        }),
    );
    let h = Harness::serving(|b| b, save);
    // Without `save`, a new session without data is not stored.
    assert!(h.get("/id", None).await.set_cookies.is_empty());
    let reply = h.get("/save", None).await;
    assert_eq!(reply.set_cookies.len(), 1, "{reply:?}");
    let id = reply.cookie_id();
    let record = h.record(&id).await.expect("stored");
    assert!(record.data.is_empty());
    let cookie = reply.cookie();
    assert_eq!(h.get("/id", Some(&cookie)).await.body, id);
    // A stored one is written again, though nothing changed, within the touch interval.
    h.advance(Duration::from_secs(10));
    h.store.clear_history();
    let reply = h.get("/save", Some(&cookie)).await;
    assert_eq!(h.store.hooks(), [Hook::Read, Hook::Write]);
    assert_eq!(max_age(reply.set_cookie()), 1800);
    assert_eq!(
        h.record(&id).await.unwrap().expires_at,
        h.clock.now() + 30 * MINUTE
    );
}

#[tokio::test]
async fn set_persistent_chooses_the_cookie_kind_for_this_session_and_later_responses() {
    let kind = Router::new().route(
        "/persistent",
        get(|session: Session, Query(q): Params| async move {
            let choice = match q.get("v").map(String::as_str) {
                Some("true") => Some(true),
                Some("false") => Some(false),
                _ => None,
            };
            session.set_persistent(choice)?;
            Ok::<_, Error>("ok")
        }),
    );
    for engine_persistent in [true, false] {
        let h = Harness::serving(|b| b.persistent(engine_persistent), kind.clone());
        let has_max_age = |reply: &crate::harness::Reply| reply.set_cookie().contains("Max-Age=");
        let reply = h.get("/persistent?v=false", None).await;
        assert!(!has_max_age(&reply), "{reply:?}");
        let cookie = reply.cookie();
        // Later responses (a write, a refresh) follow the session's choice.
        assert!(!has_max_age(&h.get("/visits", Some(&cookie)).await));
        h.advance(2 * MINUTE);
        assert!(!has_max_age(&h.get("/peek", Some(&cookie)).await));
        assert!(has_max_age(
            &h.get("/persistent?v=true", Some(&cookie)).await
        ));
        assert!(has_max_age(&h.get("/visits", Some(&cookie)).await));
        // `None` goes back to the engine's choice.
        let reply = h.get("/persistent", Some(&cookie)).await;
        assert_eq!(has_max_age(&reply), engine_persistent, "{reply:?}");
        // A removal always carries `Max-Age=0`.
        h.get("/persistent?v=false", Some(&cookie)).await;
        assert!(
            h.post("/logout", Some(&cookie))
                .await
                .set_cookie()
                .contains("Max-Age=0")
        );
    }
}

#[tokio::test]
async fn durations_under_a_millisecond_are_refused() {
    let short = Router::new().route(
        "/short",
        get(|session: Session, Query(q): Params| async move {
            let micros: u64 = q["us"].parse().unwrap();
            Ok::<_, Error>(outcome(session.set_duration(Duration::from_micros(micros))))
        }),
    );
    let h = Harness::serving(|b| b, short);
    for micros in [0, 1, 999] {
        let reply = h.get(&format!("/short?us={micros}"), None).await;
        assert_eq!(reply.body, "Err(DurationTooShort)");
        assert!(reply.set_cookies.is_empty());
    }
    let reply = h.get("/short?us=1000", None).await;
    assert_eq!(reply.body, "Ok(())");
    assert_eq!(
        h.record(&reply.cookie_id()).await.unwrap().data["__cust_dur"],
        json!(1)
    );
}

// ---- data ----

#[tokio::test]
async fn max_data_bytes_refuses_oversize_data_and_keeps_the_old() {
    let routes = Router::new()
        .route(
            "/big",
            get(|session: Session, Query(q): Params| async move {
                session.start().await?;
                let n: usize = q["n"].parse().unwrap();
                Ok::<_, Error>(outcome(session.set("big", "y".repeat(n))))
            }),
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
    let h = Harness::serving(|b| b.max_data_bytes(64).automatic_touch(false), routes);
    let cookie = h.get("/set?key=a&value=x", None).await.cookie();
    // {"a":"x"} is 9 bytes; with ,"big":"…" it is 18 + n.
    h.store.clear_history();
    let reply = h.get("/big?n=47", Some(&cookie)).await;
    assert_eq!(reply.body, "Err(DataTooLarge { size: 65, limit: 64 })");
    assert!(reply.set_cookies.is_empty());
    assert_eq!(h.store.hooks(), [Hook::Read]);
    let reply = h.get("/big?n=1000", Some(&cookie)).await;
    assert_eq!(reply.body, "Err(DataTooLarge { size: 1018, limit: 64 })");
    assert_eq!(h.get("/all", Some(&cookie)).await.body, r#"{"a":"x"}"#);
    // All or nothing.
    let reply = h.get("/many", Some(&cookie)).await;
    assert_eq!(
        reply.body,
        "Err(DataTooLarge { size: 76, limit: 64 }) Err(DataTooLarge { size: 68, limit: 64 })"
    );
    assert!(reply.set_cookies.is_empty());
    assert_eq!(h.get("/all", Some(&cookie)).await.body, r#"{"a":"x"}"#);
    // Exactly at the limit is accepted.
    let reply = h.get("/big?n=46", Some(&cookie)).await;
    assert_eq!(reply.body, "Ok(())");
    assert_eq!(reply.set_cookies.len(), 1);
    let all = h.get("/all", Some(&cookie)).await;
    assert_eq!(all.body.len(), 64);
    assert_eq!(
        serde_json::from_str::<Value>(&all.body).unwrap(),
        json!({"a": "x", "big": "y".repeat(46)})
    );
}

#[tokio::test]
async fn reserved_keys_are_refused_by_set_and_hidden_from_get_all() {
    let reserved = Router::new().route(
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
    let h = Harness::serving(|b| b, reserved);
    let reply = h.get("/reserved", None).await;
    let refused = ["Err(ReservedKey)"; 5].join("\n");
    assert_eq!(reply.body, format!("{refused}\nOk(None)\n{{\"ok\":1}}"));
    let record = h.record(&reply.cookie_id()).await.unwrap();
    assert_eq!(
        Value::Object(record.data),
        json!({"ok": 1, "__cust_dur": 3_600_000})
    );
    let all = h.get("/all", Some(&reply.cookie())).await;
    assert_eq!(all.body, r#"{"ok":1}"#);
}

#[tokio::test]
async fn set_duration_persists_across_requests_via_cust_dur() {
    let duration_now = Router::new().route(
        "/duration-now",
        get(|session: Session| async move {
            session.start().await?;
            Ok::<_, Error>(session.duration().as_millis().to_string())
        }),
    );
    let h = Harness::serving(|b| b, duration_now);
    let start = h.clock.now();
    let reply = h.post("/duration?ms=7200000", None).await;
    assert_eq!(max_age(reply.set_cookie()), 7200);
    let cookie = reply.cookie();
    let id = reply.cookie_id();
    let record = h.record(&id).await.unwrap();
    assert_eq!(Value::Object(record.data), json!({"__cust_dur": 7_200_000}));
    assert_eq!(record.expires_at, start + 120 * MINUTE);
    // Later requests use it: past the engine's 30 minutes, the session lives on, and each
    // touch gives it two more hours.
    h.advance(60 * MINUTE);
    let reply = h.get("/duration-now", Some(&cookie)).await;
    assert_eq!(reply.body, "7200000");
    assert_eq!(max_age(reply.set_cookie()), 7200);
    h.advance(119 * MINUTE);
    assert_eq!(h.get("/id", Some(&cookie)).await.body, id);
    // A session without it uses the engine's duration.
    assert_eq!(h.get("/duration-now", None).await.body, "1800000");
    // Two hours and a second without a request: gone.
    h.advance(120 * MINUTE + Duration::from_secs(1));
    assert_ne!(h.get("/id", Some(&cookie)).await.body, id);
}

#[tokio::test]
async fn clear_duration_goes_back_to_the_engines_duration_in_later_requests_too() {
    let clear = Router::new().route(
        "/clear-duration",
        get(|session: Session| async move {
            session.clear_duration()?;
            Ok::<_, Error>(session.duration().as_millis().to_string())
        }),
    );
    let h = Harness::serving(|b| b, clear);
    let reply = h.post("/duration?ms=7200000", None).await;
    let (cookie, id) = (reply.cookie(), reply.cookie_id());
    h.advance(MINUTE);
    let reply = h.get("/clear-duration", Some(&cookie)).await;
    assert_eq!(reply.body, "1800000");
    assert_eq!(max_age(reply.set_cookie()), 1800);
    let record = h.record(&id).await.unwrap();
    assert_eq!(Value::Object(record.data), json!({}));
    assert_eq!(record.expires_at, h.clock.now() + 30 * MINUTE);
    // A session without one is unchanged: nothing is written.
    h.store.clear_history();
    let reply = h.get("/clear-duration", Some(&cookie)).await;
    assert_eq!(reply.body, "1800000");
    assert_eq!(h.store.calls(Hook::Write), 0);
}

// ---- R16 bounded memory ----

/// The memory store keeps its own, real, clock: this test waits 1.5 s of real time for the
/// sessions it made to expire.
#[tokio::test]
async fn r16_the_memory_store_forgets_expired_sessions_through_ordinary_traffic() {
    let store = MemoryStore::new();
    let app = serve(engine_on(Arc::new(store.clone())), routes());
    let made = std::time::Instant::now();
    for _ in 0..500 {
        let reply = post_with(&app, "/duration?ms=1500", None).await;
        assert_eq!(max_age(reply.set_cookie()), 1);
    }
    let mut live = Vec::new();
    for _ in 0..10 {
        live.push(crate::harness::new_session(&app).await.0);
    }
    assert_eq!(store.len(), 510, "made in {:?}", made.elapsed());
    tokio::time::sleep(Duration::from_millis(1600).saturating_sub(made.elapsed())).await;
    // Ordinary traffic, with no cleanup call: visitors whose cookies name no record.
    for i in 0..1000 {
        let cookie = format!("sid={}", sign(SECRET, &format!("NoSuchSession{i:019}")));
        assert_eq!(get_with(&app, "/peek", Some(&cookie)).await.body, "0");
    }
    assert_eq!(store.len(), live.len());
    for cookie in &live {
        assert_eq!(get_with(&app, "/peek", Some(cookie)).await.body, "1");
    }
}
