//! `compat::TowerSessionsLayer`: a `tower_sessions::Session` over the request's session, with
//! every rule of the end of a request still session-engine's (SPEC 7.1). axum-login and
//! axum-messages themselves run on it in `ecosystem/` (the login example and its tests).

use std::collections::HashMap;

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::{get, post};
use session_engine::compat::TowerSessionsLayer;
use session_engine::{Error, Session};
use tower_sessions_core::Session as TowerSession;

use crate::faults::{Fault, Hook};
use crate::harness::{Harness, Reply, builder, serve};

type Params = Query<HashMap<String, String>>;

/// Routes that use the tower-sessions session, behind [`TowerSessionsLayer`].
///
/// | route | does |
/// | --- | --- |
/// | `GET /t/get?key=K` | body = K's value as JSON, `null` if none |
/// | `GET /t/insert?key=K&value=V` | inserts the string V under K |
/// | `GET /t/remove?key=K` | removes K |
/// | `POST /t/cycle` | `cycle_id` |
/// | `POST /t/flush` | `flush` |
/// | `GET /t/both` | theirs reads; our handle sets `visits` and `ours`; theirs inserts `theirs` |
/// | `GET /t/fail` | inserts `k`, then answers 500 |
fn tower_routes() -> Router {
    async fn get_value(session: TowerSession, Query(q): Params) -> String {
        let value = session.get_value(&q["key"]).await.unwrap_or_default();
        serde_json::to_string(&value).expect("a JSON value")
    }
    async fn insert(session: TowerSession, Query(q): Params) -> StatusCode {
        match session.insert(&q["key"], q["value"].clone()).await {
            Ok(()) => StatusCode::OK,
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
    async fn remove(session: TowerSession, Query(q): Params) -> &'static str {
        let _ = session.remove_value(&q["key"]).await;
        "ok"
    }
    async fn both(ours: Session, theirs: TowerSession) -> Result<&'static str, Error> {
        // tower-sessions reads first (`visits` is 1): it must not undo what our handle sets
        // afterwards.
        let _ = theirs.get_value("theirs").await;
        ours.start().await?.set("visits", 5)?.set("ours", "1")?;
        theirs
            .insert("theirs", "2")
            .await
            .expect("the view inserts");
        Ok("ok")
    }
    Router::new()
        .route("/t/get", get(get_value))
        .route("/t/insert", get(insert))
        .route("/t/remove", get(remove))
        .route(
            "/t/cycle",
            post(|session: TowerSession| async move {
                session.cycle_id().await.expect("the view cycles");
                "ok"
            }),
        )
        .route(
            "/t/flush",
            post(|session: TowerSession| async move {
                session.flush().await.expect("the view flushes");
                "ok"
            }),
        )
        .route("/t/both", get(both))
        .route(
            "/t/fail",
            get(|session: TowerSession| async move {
                session.insert("k", "v").await.expect("the view inserts");
                StatusCode::INTERNAL_SERVER_ERROR
            }),
        )
        .layer(TowerSessionsLayer::new())
}

fn harness() -> Harness {
    Harness::serving(|builder| builder, tower_routes())
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
async fn r11_flush_destroys_the_session_and_removes_the_cookie() {
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
async fn without_a_session_layer_the_layer_answers_500() {
    let app = tower_routes().with_state(());
    let reply = crate::harness::get_with(&app, "/t/get?key=k", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    // And with one, under another engine, it works: the layer needs nothing else.
    let engine = builder().build().expect("the test engine builds");
    let app = serve(engine, tower_routes());
    let reply = crate::harness::get_with(&app, "/t/get?key=k", None).await;
    assert_eq!(reply.status, StatusCode::OK);
}
