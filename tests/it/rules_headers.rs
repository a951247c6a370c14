//! R13 and R14: the headers around the cookie (caching, `Vary`, a browser-session cookie),
//! and what the logs and `Debug` may show.

use std::collections::HashMap;

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, VARY};
use axum::routing::{MethodRouter, get, post};
use session_engine::{Error, Session, SessionEngine, SessionLayer};

use crate::faults::{Fault, Hook};
use crate::harness::{
    DEFAULT_ATTRIBUTES, Harness, MINUTE, OLD_SECRET, SECRET, cookie_value, percent_encode, sign,
};
use crate::logs;

// ---- R13 caching ----

#[tokio::test]
async fn r13_cache_control_no_store_only_when_the_cookie_is_set_or_cleared() {
    let cached = Router::new().route(
        "/cached",
        get(|session: Session| async move {
            session.start().await?.set("a", 1)?;
            Ok::<_, Error>(([(CACHE_CONTROL, "private, max-age=60")], "ok"))
        }),
    );
    let h = Harness::serving(|b| b, cached);
    let created = h.get("/visits", None).await;
    assert_eq!(created.header_values("cache-control"), ["no-store"]);
    let cookie = created.cookie();
    // Within the touch interval nothing is set, so nothing is added.
    let read = h.get("/peek", Some(&cookie)).await;
    assert!(read.set_cookies.is_empty(), "{read:?}");
    assert!(read.header_values("cache-control").is_empty());
    // A refresh sets the cookie too.
    h.advance(MINUTE);
    let refreshed = h.get("/peek", Some(&cookie)).await;
    assert_eq!(refreshed.set_cookies.len(), 1);
    assert_eq!(refreshed.header_values("cache-control"), ["no-store"]);
    // The handler's own Cache-Control, which keeps shared caches out, is kept as it is.
    let own = h.get("/cached", Some(&cookie)).await;
    assert_eq!(own.set_cookies.len(), 1);
    assert_eq!(own.header_values("cache-control"), ["private, max-age=60"]);
    // No cookie, no Cache-Control.
    for uri in ["/id", "/health", "/untouched"] {
        let reply = h.get(uri, None).await;
        assert!(reply.set_cookies.is_empty());
        assert!(reply.header_values("cache-control").is_empty(), "{uri}");
    }
    let cleared = h.post("/logout", Some(&cookie)).await;
    assert!(cleared.removes_cookie(), "{cleared:?}");
    assert_eq!(cleared.header_values("cache-control"), ["no-store"]);
}

#[tokio::test]
async fn r13_a_cache_control_that_lets_a_shared_cache_store_gets_no_cache_set_cookie() {
    /// A route that answers with `Cache-Control: cc`, after `work` on the session.
    fn with_cache_control(work: &'static str) -> MethodRouter {
        let handler = move |session: Session, Query(q): Query<HashMap<String, String>>| async move {
            match work {
                "set" => drop(session.start().await?.set("a", q["cc"].clone())?),
                "destroy" => drop(session.destroy().await?),
                _ => drop(session.start().await?),
            }
            Ok::<_, Error>(([(CACHE_CONTROL, q["cc"].clone())], "ok"))
        };
        get(handler).post(handler)
    }
    let routes = Router::new()
        .route("/cc-set", with_cache_control("set"))
        .route("/cc-read", with_cache_control("read"))
        .route("/cc-logout", with_cache_control("destroy"));
    let h = Harness::serving(|b| b, routes);
    let no_cache = "no-cache=\"Set-Cookie\"";
    let shared = [
        "public",
        "public, max-age=60",
        "s-maxage=300",
        "max-age=60",
        "no-cache",
    ];
    let unshared = [
        "no-store",
        "private",
        "private, max-age=60",
        "max-age=0, private",
    ];
    for cc in shared.into_iter().chain(unshared) {
        let (cookie, _) = h.new_session().await;
        let query = format!("?cc={}", percent_encode(cc));
        let added = |reply: &crate::harness::Reply| {
            let values = reply.header_values("cache-control");
            assert_eq!(values[0], cc, "{reply:?}");
            values[1..] == [no_cache]
        };
        let want = shared.contains(&cc);
        // A write sets the cookie.
        let reply = h.get(&format!("/cc-set{query}"), Some(&cookie)).await;
        assert_eq!(reply.set_cookies.len(), 1, "{cc}");
        assert_eq!(added(&reply), want, "{cc}: {reply:?}");
        // A read within the touch interval sets nothing, and nothing is added.
        let reply = h.get(&format!("/cc-read{query}"), Some(&cookie)).await;
        assert!(reply.set_cookies.is_empty(), "{cc}: {reply:?}");
        assert_eq!(reply.header_values("cache-control"), [cc]);
        // A refresh, and a removal.
        h.advance(MINUTE);
        let reply = h.get(&format!("/cc-read{query}"), Some(&cookie)).await;
        assert_eq!(reply.set_cookies.len(), 1, "{cc}");
        assert_eq!(added(&reply), want, "{cc}: {reply:?}");
        let reply = h.post(&format!("/cc-logout{query}"), Some(&cookie)).await;
        assert!(reply.removes_cookie(), "{cc}: {reply:?}");
        assert_eq!(added(&reply), want, "{cc}: {reply:?}");
    }
}

#[tokio::test]
async fn r13_a_started_session_varies_by_cookie() {
    fn with_vary(vary: &'static str) -> MethodRouter {
        get(move |session: Session| async move {
            session.start().await?;
            Ok::<_, Error>(([(VARY, vary)], "ok"))
        })
    }
    let routes = Router::new()
        .route("/vary-encoding", with_vary("Accept-Encoding"))
        .route("/vary-cookie", with_vary("Accept-Encoding, Cookie"))
        .route("/vary-star", with_vary("*"));
    let h = Harness::serving(|b| b, routes);
    let (cookie, _) = h.new_session().await;
    for cookie in [None, Some(cookie.as_str())] {
        let vary = async |uri: &str| h.get(uri, cookie).await.header_values("vary");
        assert_eq!(vary("/id").await, ["cookie"]);
        assert_eq!(vary("/vary-encoding").await, ["Accept-Encoding", "cookie"]);
        assert_eq!(vary("/vary-cookie").await, ["Accept-Encoding, Cookie"]);
        assert_eq!(vary("/vary-star").await, ["*"]);
        for uri in ["/health", "/untouched"] {
            assert!(vary(uri).await.is_empty(), "{uri}");
        }
    }
    let logout = h.post("/logout", None).await;
    assert_eq!(logout.header_values("vary"), ["cookie"]);
}

// ---- the browser-session cookie ----

#[tokio::test]
async fn persistent_false_sends_a_browser_session_cookie_and_keeps_the_server_expiry() {
    let h = Harness::with(|b| b.persistent(false));
    let created = h.get("/visits", None).await;
    let id = created.cookie_id();
    let browser_session = format!("sid={}; {DEFAULT_ATTRIBUTES}", sign(SECRET, &id));
    assert_eq!(created.set_cookie(), browser_session);
    let expiry = async || h.record(&id).await.unwrap().expires_at;
    assert_eq!(expiry().await, h.clock.now() + 30 * MINUTE);
    let cookie = created.cookie();
    // A refresh after a touch has no Max-Age either; the expiry still slides.
    h.advance(2 * MINUTE);
    let reply = h.get("/peek", Some(&cookie)).await;
    assert_eq!(reply.set_cookie(), browser_session);
    assert_eq!(expiry().await, h.clock.now() + 30 * MINUTE);
    // A write, too; and the server still ends the idle session.
    let reply = h.get("/visits", Some(&cookie)).await;
    assert_eq!(reply.set_cookie(), browser_session);
    h.advance(30 * MINUTE);
    assert_eq!(h.get("/peek", Some(&cookie)).await.body, "0");
    // The removal still carries Max-Age=0 and a past Expires.
    let (cookie, _) = h.new_session().await;
    let removal = h.post("/logout", Some(&cookie)).await;
    assert_eq!(
        removal.set_cookie(),
        format!("sid=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; {DEFAULT_ATTRIBUTES}")
    );
}

// ---- R14 secrets in logs ----

#[tokio::test]
async fn r14_logged_events_never_carry_an_id_a_signed_id_a_secret_or_a_data_value() {
    let wrong_type = Router::new().route(
        "/wrong-type",
        get(|session: Session| async move {
            session.start().await?;
            Ok::<_, Error>(session.get::<u64>("token")?.unwrap_or(0).to_string())
        }),
    );
    let h = Harness::serving(|b| b.secrets([SECRET, OLD_SECRET]), wrong_type);
    let (logs, guard) = logs::capture();
    let mut ids = Vec::new();
    // A session signed with the old secret, re-issued under the current one.
    let (cookie, id) = h.new_session().await;
    ids.push(id.clone());
    let old_cookie = format!("sid={}", sign(OLD_SECRET, &id));
    assert_eq!(h.get("/peek", Some(&old_cookie)).await.set_cookies.len(), 1);
    // A touch failure (warn), a write failure, a read failure, a destroy failure (errors).
    h.advance(MINUTE);
    h.store.fail(Hook::Touch, Fault::Backend);
    assert_eq!(h.get("/peek", Some(&cookie)).await.status, StatusCode::OK);
    h.store.heal(Hook::Touch);
    h.store.fail(Hook::Write, Fault::Unavailable);
    let reply = h.get("/visits", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    h.store.heal(Hook::Write);
    h.store.fail(Hook::Read, Fault::Backend);
    let reply = h.get("/visits", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    h.store.heal(Hook::Read);
    h.store.fail(Hook::Destroy, Fault::Backend);
    let reply = h.post("/logout", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    h.store.heal(Hook::Destroy);
    // A roll, and three taken ids.
    let rolled = h.post("/login?user=ada", Some(&cookie)).await.cookie();
    h.store.id_taken_for_next(3);
    let reply = h.get("/visits", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    ids.extend(h.store.generated_ids());
    // A data value read as the wrong type: serde's message would quote it.
    let value = "hunter2-correct-horse";
    let set = format!("/set?key=token&value={value}");
    assert_eq!(h.get(&set, Some(&rolled)).await.status, StatusCode::OK);
    let reply = h.get("/wrong-type", Some(&rolled)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    h.post("/logout", Some(&rolled)).await;
    drop(guard);

    let logs = logs.text();
    for expected in ["session touch failed", "session error", "\"token\""] {
        assert!(logs.contains(expected), "no {expected:?} in:\n{logs}");
    }
    assert!(
        !logs.contains("hunter2"),
        "a data value was logged:\n{logs}"
    );
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
    let debug = Router::new().route(
        "/debug",
        post(|session: Session| async move {
            session.start().await?.set("user", "ada-lovelace")?;
            Ok::<_, Error>(format!("{session:?}\n{session:#?}"))
        }),
    );
    let h = Harness::serving(|b| b.secrets([SECRET, OLD_SECRET]), debug);
    for debug in [
        format!("{:?}", h.engine),
        format!("{:#?}", h.engine),
        format!("{:?}", SessionLayer::new(h.engine.clone())),
        format!(
            "{:?}",
            SessionEngine::builder().secrets([SECRET, OLD_SECRET])
        ),
    ] {
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(!debug.contains(OLD_SECRET), "{debug}");
        assert!(debug.contains("REDACTED"), "{debug}");
    }
    let reply = h.post("/debug", None).await;
    let id = reply.cookie_id();
    let signed = cookie_value(reply.set_cookie());
    assert!(reply.body.contains("REDACTED"), "{}", reply.body);
    for needle in [id.as_str(), signed, "ada-lovelace"] {
        assert!(!reply.body.contains(needle), "{}", reply.body);
    }
}
