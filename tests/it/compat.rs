//! `compat::TowerSessionsLayer`: a `tower_sessions::Session` over the request's session, with
//! every rule of the end of a request still session-engine's (SPEC 7.1). axum-login and
//! axum-messages themselves run on it in `ecosystem/` (the login example and its tests).

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};
use session_engine::compat::TowerSessionsLayer;
use session_engine::{Error, Session};
use tower_sessions_core::Session as TowerSession;
use tower_sessions_core::session::Expiry;

use crate::faults::{Fault, Hook};
use crate::harness::{Harness, Reply, builder, cookie_value, id_of, max_age, serve};
use crate::logs::capture;

type Params = Query<HashMap<String, String>>;

/// Routes that use the tower-sessions session, behind [`TowerSessionsLayer`]. A route that
/// calls a method which fails answers 500 (the layer answers its own failure over it).
///
/// | route | does |
/// | --- | --- |
/// | `GET /t/get?key=K` | body = K's value as JSON, `null` if none |
/// | `GET /t/insert?key=K&value=V` | inserts the string V under K |
/// | `GET /t/remove?key=K` | removes K |
/// | `POST /t/cycle` | `cycle_id` |
/// | `POST /t/flush` | `flush` |
/// | `POST /t/flush-insert?key=K&value=V[&read]` | (reads K, with `read`), `flush`, inserts V under K |
/// | `POST /t/clear` | `clear` |
/// | `POST /t/clear-insert?key=K&value=V` | `clear`, inserts V under K |
/// | `POST /t/cycle-flush` | `cycle_id`, then `flush` |
/// | `POST /t/expiry?to=inactivity&ms=N` | `set_expiry(Some(Expiry::OnInactivity(N ms)))`; `to=session-end`: `OnSessionEnd`; `to=at`: `AtDateTime`; `to=none`: `None` |
/// | `GET /t/both` | theirs reads; our handle sets `visits` and `ours`; theirs inserts `theirs` |
/// | `POST /t/both-flush` | ours started; theirs flushes and inserts `flash`; ours sets `ours` |
/// | `GET /t/fail` | inserts `k`, then answers 500 |
/// | `GET /t/own` | our handle ties the session to `ada` and gives it a custom duration of 2 h |
/// | `GET /t/flush-later` | a spawned task flushes the session 100 ms after the response |
fn tower_routes() -> Router {
    fn status<T, E>(result: Result<T, E>) -> StatusCode {
        match result {
            Ok(_) => StatusCode::OK,
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
    async fn get_value(session: TowerSession, Query(q): Params) -> String {
        let value = session.get_value(&q["key"]).await.unwrap_or_default();
        serde_json::to_string(&value).expect("a JSON value")
    }
    async fn insert(session: TowerSession, Query(q): Params) -> StatusCode {
        status(session.insert(&q["key"], q["value"].clone()).await)
    }
    async fn remove(session: TowerSession, Query(q): Params) -> &'static str {
        let _ = session.remove_value(&q["key"]).await;
        "ok"
    }
    async fn flush_insert(session: TowerSession, Query(q): Params) -> StatusCode {
        if q.contains_key("read") {
            let _ = session.get_value(&q["key"]).await;
        }
        if session.flush().await.is_err() {
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
        status(session.insert(&q["key"], q["value"].clone()).await)
    }
    async fn clear_insert(session: TowerSession, Query(q): Params) -> StatusCode {
        session.clear().await;
        status(session.insert(&q["key"], q["value"].clone()).await)
    }
    async fn cycle_flush(session: TowerSession) -> StatusCode {
        if session.cycle_id().await.is_err() {
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
        status(session.flush().await)
    }
    async fn expiry(session: TowerSession, Query(q): Params) -> &'static str {
        let ms = || q["ms"].parse::<i64>().expect("ms is a number");
        let expiry = match q["to"].as_str() {
            "inactivity" => Some(Expiry::OnInactivity(time::Duration::milliseconds(ms()))),
            "session-end" => Some(Expiry::OnSessionEnd),
            "at" => Some(Expiry::AtDateTime(
                time::OffsetDateTime::now_utc() + time::Duration::hours(1),
            )),
            _ => None,
        };
        session.set_expiry(expiry);
        "ok"
    }
    async fn both(ours: Session, theirs: TowerSession) -> Result<&'static str, Error> {
        // tower-sessions reads first (`visits` is 1): it must not undo what our handle sets
        // afterwards.
        let _ = theirs.get_value("theirs").await;
        ours.set("visits", 5)?.set("ours", "1")?;
        theirs
            .insert("theirs", "2")
            .await
            .expect("the view inserts");
        Ok("ok")
    }
    async fn both_flush(ours: Session, theirs: TowerSession) -> Result<String, Error> {
        let before = ours.id();
        theirs.flush().await.expect("the view flushes");
        theirs
            .insert("flash", "bye")
            .await
            .expect("the view inserts");
        // Our handle is the fresh session too.
        ours.set("ours", 1)?;
        Ok((ours.id() != before).to_string())
    }
    async fn own(session: Session) -> Result<&'static str, Error> {
        session
            .set_user("ada")?
            .set_duration(Duration::from_secs(2 * 3600))?;
        Ok("ok")
    }
    Router::new()
        .route("/t/get", get(get_value))
        .route("/t/insert", get(insert))
        .route("/t/remove", get(remove))
        .route(
            "/t/cycle",
            post(|session: TowerSession| async move { status(session.cycle_id().await) }),
        )
        .route(
            "/t/flush",
            post(|session: TowerSession| async move { status(session.flush().await) }),
        )
        .route("/t/flush-insert", post(flush_insert))
        .route(
            "/t/clear",
            post(|session: TowerSession| async move {
                session.clear().await;
                "ok"
            }),
        )
        .route("/t/clear-insert", post(clear_insert))
        .route("/t/cycle-flush", post(cycle_flush))
        .route("/t/expiry", post(expiry))
        .route("/t/both", get(both))
        .route("/t/both-flush", post(both_flush))
        .route(
            "/t/fail",
            get(|session: TowerSession| async move {
                session.insert("k", "v").await.expect("the view inserts");
                StatusCode::INTERNAL_SERVER_ERROR
            }),
        )
        .route("/t/own", get(own))
        .route(
            "/t/flush-later",
            get(|session: TowerSession| async move {
                let _ = session.get_value("visits").await;
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    session.flush().await
                });
                "ok"
            }),
        )
        .layer(TowerSessionsLayer::new())
}

fn harness() -> Harness {
    Harness::serving(|builder| builder.track_users(true), tower_routes())
}

#[tokio::test]
async fn data_goes_both_ways_between_the_two_handles() {
    let h = harness();
    let (cookie, id) = h.new_session().await;
    // Ours wrote `visits`; theirs reads it.
    assert_eq!(h.get("/t/get?key=visits", Some(&cookie)).await.body, "1");
    // Theirs writes; ours reads it, in the same signed session.
    let reply = h.get("/t/insert?key=visits&value=7", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(h.get("/all", Some(&cookie)).await.body, r#"{"visits":"7"}"#);
    // A removal is a delete of that key alone.
    h.get("/t/insert?key=other&value=x", Some(&cookie)).await;
    h.get("/t/remove?key=visits", Some(&cookie)).await;
    assert_eq!(h.get("/all", Some(&cookie)).await.body, r#"{"other":"x"}"#);
    assert!(h.record(&id).await.is_some());
}

#[tokio::test]
async fn a_new_visitor_gets_our_signed_cookie_and_a_read_alone_sets_none() {
    let h = harness();
    let reply = h.get("/t/get?key=k", None).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "null")
    );
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    assert_eq!(h.store.calls(Hook::Write), 0, "nothing is written");

    let reply = h.get("/t/insert?key=k&value=v", None).await;
    let cookie = reply.cookie();
    assert!(h.record(&reply.cookie_id()).await.is_some());
    assert_eq!(h.get("/t/get?key=k", Some(&cookie)).await.body, r#""v""#);
}

#[tokio::test]
async fn r10_cycle_id_is_a_roll() {
    let h = harness();
    let (cookie, id) = h.new_session().await;
    let reply = h.post("/t/cycle", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let rolled = reply.cookie_id();
    assert_ne!(rolled, id);
    // The data moved with the session; the old id is dead.
    assert_eq!(h.get("/peek", Some(&reply.cookie())).await.body, "1");
    assert!(h.record(&id).await.is_none());
    assert_eq!(h.get("/peek", Some(&cookie)).await.body, "0");
}

#[tokio::test]
async fn r11_flush_alone_destroys_the_session_and_removes_the_cookie() {
    let h = harness();
    let (cookie, id) = h.new_session().await;
    let reply = h.post("/t/flush", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.removes_cookie(), "{reply:?}");
    assert!(h.record(&id).await.is_none());
}

#[tokio::test]
async fn keys_our_handle_changes_are_left_alone() {
    let h = harness();
    let (cookie, _) = h.new_session().await;
    let reply = h.get("/t/both", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        h.get("/all", Some(&cookie)).await.body,
        r#"{"ours":"1","theirs":"2","visits":5}"#
    );
}

#[tokio::test]
async fn r8_a_server_error_saves_nothing_of_theirs() {
    let h = harness();
    let reply = h.get("/t/fail", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    assert_eq!(h.store.calls(Hook::Write), 0);
}

fn assert_opaque(reply: &Reply, status: StatusCode) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(reply.body, "");
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
}

#[tokio::test]
async fn r12_a_failed_read_is_the_opaque_failure_not_an_empty_session() {
    for (fault, status) in [
        (Fault::Backend, StatusCode::INTERNAL_SERVER_ERROR),
        (Fault::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
    ] {
        let h = harness();
        let (cookie, _) = h.new_session().await;
        h.store.fail(Hook::Read, fault);
        // tower-sessions would answer its own 500, or go on with an empty session; the
        // store's failure is what the client sees.
        assert_opaque(&h.get("/t/get?key=visits", Some(&cookie)).await, status);
        assert_opaque(
            &h.get("/t/insert?key=visits&value=9", Some(&cookie)).await,
            status,
        );
        h.store.heal(Hook::Read);
        assert_eq!(h.get("/peek", Some(&cookie)).await.body, "1", "{fault:?}");
    }
}

#[tokio::test]
async fn r12_a_failed_write_or_destroy_is_the_opaque_failure() {
    let h = harness();
    let (cookie, _) = h.new_session().await;
    h.store.fail(Hook::Write, Fault::Unavailable);
    assert_opaque(
        &h.get("/t/insert?key=visits&value=9", Some(&cookie)).await,
        StatusCode::SERVICE_UNAVAILABLE,
    );
    assert_opaque(
        &h.post("/t/cycle", Some(&cookie)).await,
        StatusCode::SERVICE_UNAVAILABLE,
    );
    h.store.heal(Hook::Write);
    // Nothing was half-done: the session is as it was, under its old id.
    assert_eq!(h.get("/peek", Some(&cookie)).await.body, "1");

    h.store.fail(Hook::Destroy, Fault::Backend);
    assert_opaque(
        &h.post("/t/flush", Some(&cookie)).await,
        StatusCode::INTERNAL_SERVER_ERROR,
    );
}

#[tokio::test]
async fn without_a_session_layer_the_layer_answers_500_naming_it() {
    let (logs, _guard) = capture();
    let app = tower_routes().with_state(());
    let reply = crate::harness::get_with(&app, "/t/get?key=k", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.body.contains("SessionLayer"), "{reply:?}");
    let logged = logs.text();
    assert!(
        logged
            .lines()
            .any(|line| line.contains("ERROR") && line.contains("SessionLayer")),
        "{logged}"
    );
    // And with one, under another engine, it works: the layer needs nothing else.
    let engine = builder().build().expect("the test engine builds");
    let app = serve(engine, tower_routes());
    let reply = crate::harness::get_with(&app, "/t/get?key=k", None).await;
    assert_eq!(reply.status, StatusCode::OK);
}

/// The data of `id`'s record, the engine's own keys included.
async fn data_of(h: &Harness, id: &str) -> Value {
    Value::Object(h.record(id).await.expect("the session is stored").data)
}

#[tokio::test]
async fn r11_flush_then_insert_goes_into_a_fresh_session_whether_or_not_it_read_first() {
    for uri in [
        "/t/flush-insert?key=flash&value=bye",
        "/t/flush-insert?key=flash&value=bye&read",
    ] {
        let h = harness();
        let (cookie, id) = h.new_session().await;
        // Tied to a user, with a custom duration: the engine's own keys.
        assert_eq!(h.get("/t/own", Some(&cookie)).await.status, StatusCode::OK);
        assert_eq!(h.engine.user_sessions("ada").await.unwrap().len(), 1);

        let reply = h.post(uri, Some(&cookie)).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}");
        let fresh = reply.cookie_id();
        assert_ne!(fresh, id, "{uri}");
        // The engine's duration, not the old session's.
        assert_eq!(max_age(reply.set_cookie()), 1800, "{uri}");
        assert!(h.record(&id).await.is_none(), "{uri}");
        assert_eq!(data_of(&h, &fresh).await, json!({"flash": "bye"}), "{uri}");
        assert!(
            h.engine.user_sessions("ada").await.unwrap().is_empty(),
            "{uri}"
        );
        // The old cookie is dead; the new one reads the flash.
        assert_eq!(h.get("/peek", Some(&cookie)).await.body, "0", "{uri}");
        let flash = h.get("/t/get?key=flash", Some(&reply.cookie())).await;
        assert_eq!(flash.body, r#""bye""#, "{uri}");
    }
}

#[tokio::test]
async fn r11_flush_beside_our_handle_moves_both_to_the_fresh_session() {
    let h = harness();
    let (cookie, id) = h.new_session().await;
    let reply = h.post("/t/both-flush", Some(&cookie)).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "true")
    );
    let fresh = reply.cookie_id();
    assert_ne!(fresh, id);
    assert!(h.record(&id).await.is_none());
    assert_eq!(
        data_of(&h, &fresh).await,
        json!({"flash": "bye", "ours": 1})
    );
}

#[tokio::test]
async fn r11_cycle_id_then_flush_ends_the_session() {
    let h = harness();
    let (cookie, id) = h.new_session().await;
    let reply = h.post("/t/cycle-flush", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.removes_cookie(), "{reply:?}");
    assert!(h.record(&id).await.is_none());
    assert!(h.store.inner().is_empty());
}

#[tokio::test]
async fn clear_alone_empties_the_data_and_keeps_the_id() {
    let h = harness();
    let (cookie, id) = h.new_session().await;
    h.get("/set?key=other&value=x", Some(&cookie)).await;
    let reply = h.post("/t/clear", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply
            .set_cookies
            .iter()
            .all(|set| id_of(cookie_value(set)) == id),
        "{reply:?}"
    );
    assert_eq!(h.get("/all", Some(&cookie)).await.body, "{}");
    assert_eq!(data_of(&h, &id).await, json!({}));
}

#[tokio::test]
async fn clear_then_insert_keeps_the_id_and_only_the_new_key() {
    let h = harness();
    let (cookie, id) = h.new_session().await;
    h.get("/set?key=other&value=x", Some(&cookie)).await;
    let reply = h.post("/t/clear-insert?key=k&value=v", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert!(
        reply
            .set_cookies
            .iter()
            .all(|set| id_of(cookie_value(set)) == id),
        "{reply:?}"
    );
    assert_eq!(h.get("/all", Some(&cookie)).await.body, r#"{"k":"v"}"#);
}

#[tokio::test]
async fn set_expiry_on_inactivity_is_a_custom_duration() {
    let h = harness();
    let (cookie, id) = h.new_session().await;
    let reply = h
        .post("/t/expiry?to=inactivity&ms=7200000", Some(&cookie))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.cookie_id(), id);
    assert_eq!(max_age(reply.set_cookie()), 7200, "{reply:?}");
    assert_eq!(data_of(&h, &id).await["__cust_dur"], json!(7_200_000));
    // Later responses follow it.
    let reply = h.get("/t/insert?key=k&value=v", Some(&cookie)).await;
    assert_eq!(max_age(reply.set_cookie()), 7200, "{reply:?}");
}

#[tokio::test]
async fn set_expiry_on_session_end_is_a_browser_session_cookie() {
    let h = harness();
    let (cookie, id) = h.new_session().await;
    for reply in [
        h.post("/t/expiry?to=session-end", Some(&cookie)).await,
        // Later responses too.
        h.get("/t/insert?key=k&value=v", Some(&cookie)).await,
    ] {
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.cookie_id(), id);
        assert!(!reply.set_cookie().contains("Max-Age"), "{reply:?}");
        assert!(!reply.set_cookie().contains("Expires"), "{reply:?}");
    }
}

#[tokio::test]
async fn set_expiry_none_goes_back_to_the_engines_lifetime() {
    let h = harness();
    let (cookie, id) = h.new_session().await;
    h.post("/t/expiry?to=inactivity&ms=7200000", Some(&cookie))
        .await;
    h.post("/t/expiry?to=session-end", Some(&cookie)).await;
    // Each request reads nothing first: the session's own choices are what it goes back from.
    let reply = h.post("/t/expiry?to=none", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(max_age(reply.set_cookie()), 1800, "{reply:?}");
    assert_eq!(data_of(&h, &id).await, json!({"visits": 1}));
    let reply = h
        .post("/t/expiry?to=inactivity&ms=7200000", Some(&cookie))
        .await;
    assert_eq!(max_age(reply.set_cookie()), 7200, "{reply:?}");
    let reply = h.post("/t/expiry?to=none", Some(&cookie)).await;
    assert_eq!(max_age(reply.set_cookie()), 1800, "{reply:?}");
    assert_eq!(data_of(&h, &id).await, json!({"visits": 1}));
}

#[tokio::test]
async fn set_expiry_without_an_equivalent_is_a_500_that_says_why() {
    for (uri, why) in [
        ("/t/expiry?to=at", "AtDateTime"),
        ("/t/expiry?to=inactivity&ms=-1", "negative"),
    ] {
        let h = harness();
        let (cookie, id) = h.new_session().await;
        let (logs, guard) = capture();
        let reply = h.post(uri, Some(&cookie)).await;
        drop(guard);
        assert_opaque(&reply, StatusCode::INTERNAL_SERVER_ERROR);
        let logged = logs.text();
        assert!(
            logged
                .lines()
                .any(|line| line.contains("ERROR") && line.contains(why)),
            "{uri}: {logged}"
        );
        assert_eq!(data_of(&h, &id).await, json!({"visits": 1}), "{uri}");
    }
}

/// A flush from a task that outlives the request still ends the session, as our own
/// `destroy()` from such a task does. tokio's clock is paused: the wait costs no real time.
#[tokio::test(start_paused = true)]
async fn r11_a_flush_from_a_task_that_outlives_the_request_still_ends_the_session() {
    let h = harness();
    let (cookie, id) = h.new_session().await;
    let reply = h.get("/t/flush-later", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(h.record(&id).await.is_some(), "the response leaves first");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(h.record(&id).await.is_none());
}
