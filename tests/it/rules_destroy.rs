//! R11: a `destroy()` wins, whenever it lands before the response leaves: in the handler, from a
//! clone while the end of the request writes, or while the end of the request would decide
//! without the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::get;
use session_engine::{Error, Session, SessionStore as _, StoreKey};

use crate::faults::{Call, FaultyStore, Hook};
use crate::harness::{Harness, MINUTE, OLD_SECRET, max_age, outcome, sign, store_key};

#[tokio::test]
async fn r11_destroy_removes_at_once_and_nothing_persists_later_in_the_request() {
    let destroy_then_use = |store: &Arc<FaultyStore>| {
        let store = store.clone();
        Router::new().route(
            "/destroy-then-use",
            get(move |session: Session| async move {
                session.start().await?.set("x", 1)?;
                let key = StoreKey::from(store_key(&session.id().unwrap()));
                session.destroy().await?;
                let gone = store.inner().read(&key).await.unwrap().is_none();
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
        )
    };
    let h = Harness::serving_with(|b| b, destroy_then_use);
    let (cookie, id) = h.new_session().await;
    let reply = h.get("/destroy-then-use", Some(&cookie)).await;
    assert_eq!(
        reply.body,
        ["true", "false", "None", "Ok({})", "Ok(())", "Ok(false)"].join("\n")
    );
    assert!(reply.removes_cookie(), "{reply:?}");
    // The record is read, then destroyed; nothing is written or touched afterwards.
    let key = store_key(&id);
    assert_eq!(
        h.store.history(),
        [Call::new(Hook::Read, &key), Call::new(Hook::Destroy, &key)]
    );
    assert!(h.store.inner().is_empty());
    assert_eq!(h.get("/peek", Some(&cookie)).await.body, "0");
}

#[tokio::test]
async fn r11_destroy_without_start_removes_the_cookies_record_without_reading() {
    let h = Harness::new();
    let (cookie, id) = h.new_session().await;
    let reply = h.post("/logout", Some(&cookie)).await;
    assert_eq!(reply.body, "ok");
    assert!(reply.removes_cookie(), "{reply:?}");
    assert_eq!(
        h.store.history(),
        [Call::new(Hook::Destroy, &store_key(&id))]
    );
    assert!(h.store.inner().is_empty());
}

/// A clone of the handle, in a spawned task, destroys the session while the end of the
/// request waits on the store: inserting, updating, touching or rolling. The destroy wins: the
/// record just saved is removed and the removal cookie sent. tokio's clock is paused, so the
/// store's delay and the clone's wait cost no real time.
#[tokio::test(start_paused = true)]
async fn r11_a_destroy_from_a_clone_during_the_end_of_the_request_wins() {
    let clone_destroys = Router::new().route(
        "/clone-destroys",
        get(
            |session: Session, Query(q): Query<HashMap<String, String>>| async move {
                session.start().await?;
                match q["then"].as_str() {
                    "set" => drop(session.set("cart", "full")?),
                    "roll" => drop(session.roll().await?),
                    _ => {}
                }
                let clone = session.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    clone.destroy().await.map(drop)
                });
                Ok::<_, Error>("ok")
            },
        ),
    );
    // (what the end of the request does, with a cookie?, the route's step, the slow hook)
    let cases = [
        ("insert", false, "set", Hook::Write),
        ("update", true, "set", Hook::Write),
        ("touch", true, "peek", Hook::Touch),
        ("roll", true, "roll", Hook::Write),
    ];
    for (what, with_cookie, then, slow) in cases {
        let h = Harness::serving(|b| b, clone_destroys.clone());
        let (cookie, _) = h.new_session().await;
        let cookie = with_cookie.then_some(cookie.as_str());
        h.advance(MINUTE);
        h.store.delay(slow, Duration::from_millis(300));
        let reply = h.get(&format!("/clone-destroys?then={then}"), cookie).await;
        assert_eq!(reply.status, StatusCode::OK, "{what}");
        assert!(reply.removes_cookie(), "{what}: {reply:?}");
        assert_eq!(h.store.calls(slow), 1, "{what}");
        let left = h.store.inner().len();
        // Without a cookie, the session made by `new_session` is not this one.
        assert_eq!(left, usize::from(!with_cookie), "{what} left a record");
        if let Some(cookie) = cookie {
            assert_eq!(h.get("/peek", Some(cookie)).await.body, "0", "{what}");
        }
    }
}

/// A clone's `destroy()` is still waiting on the store when the end of the request would
/// decide without the store (a session never started, one merely read, or one whose cookie
/// must be re-issued under the current secret): the end of the request waits for the destroy
/// and sends its removal cookie, never a cookie for the id being destroyed.
#[tokio::test(start_paused = true)]
async fn r11_the_end_of_the_request_waits_for_a_destroy_under_way() {
    let destroy_and_return = Router::new().route(
        "/destroy-and-return",
        get(
            |session: Session, Query(q): Query<HashMap<String, String>>| async move {
                if q.contains_key("start") {
                    session.start().await?;
                }
                let clone = session.clone();
                let destroying = tokio::spawn(async move { clone.destroy().await.map(drop) });
                // The destroy has reached the store and waits there.
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(destroying);
                Ok::<_, Error>("ok")
            },
        ),
    );
    for (what, uri, old_cookie) in [
        ("never started", "/destroy-and-return", false),
        ("read", "/destroy-and-return?start", false),
        ("read, old secret", "/destroy-and-return?start", true),
    ] {
        let h = Harness::serving(
            |b| b.secrets([crate::harness::SECRET, OLD_SECRET]),
            destroy_and_return.clone(),
        );
        let (cookie, id) = h.new_session().await;
        let cookie = match old_cookie {
            true => format!("sid={}", sign(OLD_SECRET, &id)),
            false => cookie,
        };
        h.store.delay(Hook::Destroy, Duration::from_millis(300));
        let reply = h.get(uri, Some(&cookie)).await;
        assert_eq!(reply.status, StatusCode::OK, "{what}");
        assert!(reply.removes_cookie(), "{what}: {reply:?}");
        assert_eq!(reply.header_values("vary"), ["cookie"], "{what}");
        assert!(h.record(&id).await.is_none(), "{what}");
    }
}

/// A `destroy()` that does not finish (its caller gave up on it) or that fails ends nothing:
/// the rest of the request is saved as if it had not been called, and no removal cookie is
/// sent for a session that still lives.
#[tokio::test(start_paused = true)]
async fn r11_a_destroy_given_up_half_way_or_failed_destroys_nothing() {
    let give_up = Router::new().route(
        "/give-up-on-destroy",
        get(|session: Session| async move {
            session.start().await?;
            let gave_up = tokio::time::timeout(Duration::from_millis(50), session.destroy())
                .await
                .is_err();
            session.set("after", gave_up)?;
            Ok::<_, Error>(format!("{} {}", session.ready(), session.id().is_some()))
        }),
    );
    let h = Harness::serving(|b| b, give_up);
    let (cookie, id) = h.new_session().await;
    h.store.delay(Hook::Destroy, Duration::from_millis(300));
    let reply = h.get("/give-up-on-destroy", Some(&cookie)).await;
    assert_eq!(reply.body, "true true");
    assert!(!reply.removes_cookie(), "{reply:?}");
    assert_eq!(reply.cookie_id(), id);
    let record = h.record(&id).await.expect("the session lives");
    assert_eq!(record.data["after"], serde_json::json!(true));
    // A destroy that fails is the same: the handler sees the error, the session lives.
    h.store.delay(Hook::Destroy, Duration::ZERO);
    h.store
        .fail_times(Hook::Destroy, crate::faults::Fault::Backend, 1);
    let reply = h.post("/logout", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    assert_eq!(h.get("/peek", Some(&cookie)).await.body, "1");
}

/// Routes around `invalidate()`: `/own` gives the session a user, a custom duration and a
/// browser-session cookie (each of the engine's own keys); `/invalidate?flash=F` invalidates
/// it, then sets `flash` to F when given, and answers what `invalidate` returned and whether
/// the session is still tied to a user.
fn invalidate_routes() -> Router {
    Router::new()
        .route(
            "/own",
            get(|session: Session| async move {
                session
                    .set_user("ada")?
                    .set_duration(120 * MINUTE)?
                    .set_persistent(Some(false))?;
                Ok::<_, Error>("ok")
            }),
        )
        .route(
            "/invalidate",
            get(
                |session: Session, Query(q): Query<HashMap<String, String>>| async move {
                    let removed = session.invalidate().await?;
                    if let Some(flash) = q.get("flash") {
                        session.set("flash", flash)?;
                    }
                    Ok::<_, Error>(format!("{removed} {:?}", session.user()?))
                },
            ),
        )
}

/// `invalidate()` is a `destroy()` followed by a fresh session: the old record is gone at
/// once, and what the handler sets afterwards lives under a new id, with none of the engine's
/// own keys (no user tie, no custom duration, the engine's cookie kind). Left unwritten, the
/// fresh session sends the removal cookie, as a `destroy()` does.
#[tokio::test]
async fn r11_invalidate_destroys_and_what_follows_goes_into_a_fresh_session() {
    let h = Harness::serving(|b| b.track_users(true), invalidate_routes());
    let (cookie, id) = h.new_session().await;
    assert_eq!(h.get("/own", Some(&cookie)).await.status, StatusCode::OK);
    assert_eq!(h.engine.user_sessions("ada").await.unwrap().len(), 1);

    let reply = h.get("/invalidate?flash=bye", Some(&cookie)).await;
    assert_eq!(reply.body, "true None");
    let fresh = reply.cookie_id();
    assert_ne!(fresh, id);
    // The engine's duration (30 min), in a persistent cookie.
    assert_eq!(max_age(reply.set_cookie()), 1800, "{reply:?}");
    assert!(h.record(&id).await.is_none());
    let record = h.record(&fresh).await.expect("the fresh session is stored");
    assert_eq!(
        record.data,
        serde_json::json!({"flash": "bye"})
            .as_object()
            .cloned()
            .unwrap()
    );
    assert!(h.engine.user_sessions("ada").await.unwrap().is_empty());
    // The old cookie is dead.
    assert_eq!(h.get("/peek", Some(&cookie)).await.body, "0");

    // Nothing set after it: the cookie is removed, and nothing is stored.
    let reply = h.get("/invalidate", Some(&reply.cookie())).await;
    assert_eq!(reply.body, "true None");
    assert!(reply.removes_cookie(), "{reply:?}");
    assert!(h.store.inner().is_empty());
}

/// An `invalidate()` whose store fails (the new id, or the destroy) changes nothing: the
/// handler sees the error, and the session lives on as it was.
#[tokio::test]
async fn r11_an_invalidate_that_fails_changes_nothing() {
    for hook in [Hook::Id, Hook::Destroy] {
        let h = Harness::serving(|b| b.track_users(true), invalidate_routes());
        let (cookie, id) = h.new_session().await;
        h.store.fail_times(hook, crate::faults::Fault::Backend, 1);
        let reply = h.get("/invalidate?flash=bye", Some(&cookie)).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{hook:?}");
        assert!(reply.set_cookies.is_empty(), "{hook:?}: {reply:?}");
        assert_eq!(h.get("/peek", Some(&cookie)).await.body, "1", "{hook:?}");
        assert!(h.record(&id).await.is_some(), "{hook:?}");
    }
}

/// A clone's `invalidate()` while the end of the request waits on the store is a `destroy()`
/// that wins: the record just saved is removed and the removal cookie sent; what the clone
/// sets afterwards is never saved.
#[tokio::test(start_paused = true)]
async fn r11_an_invalidate_from_a_clone_during_the_end_of_the_request_is_a_destroy() {
    let clone_invalidates = Router::new().route(
        "/clone-invalidates",
        get(
            |session: Session, Query(q): Query<HashMap<String, String>>| async move {
                match q["then"].as_str() {
                    "set" => drop(session.set("cart", "full")?),
                    "roll" => drop(session.roll().await?),
                    _ => {}
                }
                let clone = session.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    clone.invalidate().await?;
                    clone.set("flash", "bye").map(drop)
                });
                Ok::<_, Error>("ok")
            },
        ),
    );
    for (what, with_cookie, then) in [
        ("insert", false, "set"),
        ("update", true, "set"),
        ("roll", true, "roll"),
    ] {
        let h = Harness::serving(|b| b, clone_invalidates.clone());
        let (cookie, _) = h.new_session().await;
        let cookie = with_cookie.then_some(cookie.as_str());
        h.store.delay(Hook::Write, Duration::from_millis(300));
        let reply = h
            .get(&format!("/clone-invalidates?then={then}"), cookie)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{what}");
        assert!(reply.removes_cookie(), "{what}: {reply:?}");
        assert_eq!(h.store.calls(Hook::Write), 1, "{what}");
        // Without a cookie, the session made by `new_session` is not this one.
        assert_eq!(h.store.inner().len(), usize::from(!with_cookie), "{what}");
    }
}
