//! R12 and R15: a store that fails, cannot decode a record, or is too slow.

use std::time::{Duration, SystemTime};

use axum::Router;
use axum::http::{Method, StatusCode};
use axum::routing::get;
use serde_json::Map;
use session_engine::{
    Changes, Error, LazySession, Record, Session, SessionStore as _, StoreError, StoreKey,
    WriteMode,
};
use tokio::time::Instant;

use crate::faults::{Call, FAULT_MESSAGE, Fault, Hook};
use crate::harness::{Harness, MINUTE, Reply, request, store_key};
use crate::logs;

/// The opaque failure response: `status`, an empty body, `no-store`, and no cookie.
fn assert_opaque(reply: &Reply, status: StatusCode, context: &str) {
    assert_eq!(reply.status, status, "{context}: {reply:?}");
    assert_eq!(reply.body, "", "{context}");
    assert_eq!(
        reply.header_values("cache-control"),
        ["no-store"],
        "{context}"
    );
    assert!(reply.set_cookies.is_empty(), "{context}: {reply:?}");
}

// ---- R12 failures ----

#[tokio::test]
async fn r12_read_error_from_start_is_an_opaque_500_or_503() {
    for (fault, status) in [
        (Fault::Backend, StatusCode::INTERNAL_SERVER_ERROR),
        (Fault::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
    ] {
        let h = Harness::new();
        let (cookie, _) = h.new_session().await;
        h.store.fail(Hook::Read, fault);
        let reply = h.get("/visits", Some(&cookie)).await;
        assert_opaque(&reply, status, &format!("{fault:?}"));
        assert_eq!(h.store.hooks(), [Hook::Read]);
        // A failed start leaves the session unstarted; the record is intact.
        h.store.heal(Hook::Read);
        assert_eq!(h.get("/peek", Some(&cookie)).await.body, "1");
    }
}

#[tokio::test]
async fn r12_an_undecodable_record_counts_as_absent_and_stays_in_the_store() {
    let h = Harness::new();
    let (cookie, id) = h.new_session().await;
    h.store.fail_times(Hook::Read, Fault::Undecodable, 1);
    let (logs, guard) = logs::capture();
    let reply = h.get("/visits", Some(&cookie)).await;
    drop(guard);
    // A fresh session, not a 500.
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "1"));
    let fresh = reply.cookie_id();
    assert_ne!(fresh, id);
    assert_eq!(
        h.store.history(),
        [
            Call::new(Hook::Read, &store_key(&id)),
            Call::new(Hook::Id, &fresh),
            Call::write(&store_key(&fresh), WriteMode::Insert),
        ]
    );
    // Logged, without what the store said (which may quote the data).
    let logs = logs.text();
    assert!(logs.contains("cannot be decoded"), "{logs}");
    assert!(!logs.contains(FAULT_MESSAGE), "{logs}");
    // The record is left as it was: once the store reads it again, the old cookie works.
    assert!(h.record(&id).await.is_some());
    assert_eq!(h.get("/peek", Some(&cookie)).await.body, "1");
}

#[tokio::test]
async fn r12_write_error_at_the_end_replaces_the_response_with_an_opaque_500() {
    let with_header = Router::new().route(
        "/visits-with-header",
        get(|session: Session| async move {
            session.start().await?.set("visits", 5)?;
            Ok::<_, Error>(([("x-handler", "yes")], "handler body"))
        }),
    );
    let h = Harness::serving(|b| b, with_header);
    let (cookie, _) = h.new_session().await;
    h.store.fail(Hook::Write, Fault::Backend);
    for cookie in [None, Some(cookie.as_str())] {
        let reply = h.get("/visits-with-header", cookie).await;
        assert_opaque(&reply, StatusCode::INTERNAL_SERVER_ERROR, "write");
        assert!(reply.headers.get("x-handler").is_none());
        assert_eq!(reply.header_values("vary"), ["cookie"]);
    }
    h.store.heal(Hook::Write);
    assert_eq!(h.get("/peek", Some(&cookie)).await.body, "1");
    // An unavailable store at the end is a 503, as a time-out is (R15).
    h.store.fail(Hook::Write, Fault::Unavailable);
    let reply = h.get("/visits", Some(&cookie)).await;
    assert_opaque(&reply, StatusCode::SERVICE_UNAVAILABLE, "unavailable write");
}

#[tokio::test]
async fn r12_destroy_error_is_an_opaque_500_without_cookie() {
    let h = Harness::new();
    let (cookie, _) = h.new_session().await;
    // At the end of the request: the old record of a roll.
    h.store.fail(Hook::Destroy, Fault::Backend);
    let reply = h.post("/login?user=ada", Some(&cookie)).await;
    assert_opaque(&reply, StatusCode::INTERNAL_SERVER_ERROR, "roll");
    // In the handler: `destroy()` returns the error, the session is unchanged.
    let reply = h.post("/logout", Some(&cookie)).await;
    assert_opaque(&reply, StatusCode::INTERNAL_SERVER_ERROR, "logout");
    h.store.heal(Hook::Destroy);
    assert_eq!(h.get("/peek", Some(&cookie)).await.body, "1");
}

#[tokio::test]
async fn r12_touch_error_passes_the_response_without_refresh() {
    let h = Harness::new();
    let (cookie, _) = h.new_session().await;
    h.advance(MINUTE);
    h.store.fail(Hook::Touch, Fault::Backend);
    let reply = h.get("/peek", Some(&cookie)).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "1"));
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    assert_eq!(h.store.hooks(), [Hook::Read, Hook::Touch]);
    assert_eq!(reply.header_values("vary"), ["cookie"]);
}

#[tokio::test]
async fn r12_error_bodies_never_carry_the_store_error() {
    let h = Harness::new();
    let (cookie, _) = h.new_session().await;
    let mut failures = 0;
    for hook in [Hook::Read, Hook::Write, Hook::Destroy, Hook::Id] {
        for fault in [Fault::Backend, Fault::Unavailable] {
            h.store.fail(hook, fault);
            for (method, uri) in [
                (Method::GET, "/visits"),
                (Method::POST, "/logout"),
                (Method::POST, "/login?user=a"),
            ] {
                for cookie in [None, Some(cookie.as_str())] {
                    let reply = h.send(request(method.clone(), uri, cookie)).await;
                    assert!(!reply.body.contains("fire"), "{hook:?} {uri}: {reply:?}");
                    if reply.status.is_server_error() {
                        failures += 1;
                        assert_opaque(&reply, fault_status(fault), &format!("{hook:?} {uri}"));
                    }
                }
            }
            h.store.heal(hook);
        }
    }
    // Many of these requests reached the failing hook (22 of 48 as the engine stands).
    assert!(failures >= 20, "{failures}");
}

fn fault_status(fault: Fault) -> StatusCode {
    match fault {
        Fault::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[tokio::test]
async fn r12_cleanup_returns_the_store_error_and_then_the_count() {
    let h = Harness::new();
    h.store.fail(Hook::Cleanup, Fault::Unavailable);
    assert!(matches!(
        h.engine.cleanup().await,
        Err(StoreError::Unavailable(_))
    ));
    h.store.heal(Hook::Cleanup);
    let past = SystemTime::now() - MINUTE;
    let expired = Record::new(Map::new(), past, past);
    let key = StoreKey::from("expired");
    let all = Changes::replace_all();
    h.store
        .inner()
        .write(&key, &expired, &all, WriteMode::Insert)
        .await
        .unwrap();
    assert_eq!(h.engine.cleanup().await.unwrap(), 1);
    assert_eq!(h.engine.cleanup().await.unwrap(), 0);
    assert_eq!(h.store.calls(Hook::Cleanup), 3);
}

// ---- R15 bounded waits ----
//
// tokio's clock is paused in these tests: a store's delay and the deadline cost no real time,
// and a request that waits on neither would hang the test instead of passing.

/// A request that waits on `hook` while the hook takes 6 s: what it answered, and after how
/// long (on tokio's clock).
async fn slow_hook(h: &Harness, hook: Hook, delay: Duration) -> (Reply, Duration) {
    let (cookie, _) = h.new_session().await;
    h.advance(MINUTE);
    h.store.delay(hook, delay);
    let (method, uri, cookie) = match hook {
        Hook::Id => (Method::GET, "/visits", None),
        Hook::Destroy => (Method::POST, "/logout", Some(cookie.as_str())),
        Hook::Touch => (Method::GET, "/peek", Some(cookie.as_str())),
        _ => (Method::GET, "/visits", Some(cookie.as_str())),
    };
    let start = Instant::now();
    let reply = h.send(request(method, uri, cookie)).await;
    assert_eq!(h.store.calls(hook), 1, "{hook:?}");
    (reply, start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn r15_a_hook_slower_than_the_default_timeout_answers_503_after_5_s() {
    for hook in [Hook::Read, Hook::Id, Hook::Write, Hook::Destroy] {
        let h = Harness::new();
        let (reply, waited) = slow_hook(&h, hook, Duration::from_secs(6)).await;
        assert_opaque(
            &reply,
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("{hook:?}"),
        );
        assert_eq!(waited, Duration::from_secs(5), "{hook:?}");
    }
    // A touch that times out is a touch error: the response passes without the refresh.
    let h = Harness::new();
    let (reply, waited) = slow_hook(&h, Hook::Touch, Duration::from_secs(6)).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "1"));
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    assert_eq!(waited, Duration::from_secs(5));
    // So is a cleanup.
    h.store.delay(Hook::Cleanup, Duration::from_secs(6));
    assert!(matches!(
        h.engine.cleanup().await,
        Err(StoreError::Unavailable(_))
    ));
    // Under the deadline, a slow store is only slow.
    let h = Harness::new();
    let (reply, waited) = slow_hook(&h, Hook::Read, Duration::from_secs(4)).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "2"));
    assert_eq!(waited, Duration::from_secs(4));
}

#[tokio::test(start_paused = true)]
async fn r15_store_timeout_sets_the_deadline_and_none_turns_it_off() {
    let h = Harness::with(|b| b.store_timeout(Duration::from_secs(1)));
    let (reply, waited) = slow_hook(&h, Hook::Read, Duration::from_secs(3600)).await;
    assert_opaque(&reply, StatusCode::SERVICE_UNAVAILABLE, "1 s");
    assert_eq!(waited, Duration::from_secs(1));
    // Without a deadline, the request waits as long as the store does.
    let h = Harness::with(|b| b.store_timeout(None));
    let (reply, waited) = slow_hook(&h, Hook::Read, Duration::from_secs(60)).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "2"));
    assert_eq!(waited, Duration::from_secs(60));
}

/// Clones of one handle wait on each other's store calls (one read at most): with a store that
/// hangs, each waits at most its own deadline and none is locked for ever; once the store
/// answers again, the same handle starts.
#[tokio::test(start_paused = true)]
async fn r15_a_hung_store_never_locks_the_handle_for_ever() {
    let clones = Router::new().route(
        "/clones-start",
        get(|session: LazySession| async move {
            let starts: Vec<_> = (0..3)
                .map(|_| {
                    let session = session.clone();
                    tokio::spawn(async move { session.start().await.map(drop) })
                })
                .collect();
            let mut failed = 0;
            for start in starts {
                failed += usize::from(start.await.expect("no panic").is_err());
            }
            // The store is back: the handle is not stuck.
            session.start().await?;
            Ok::<_, Error>(format!("{failed} {}", session.ready()))
        }),
    );
    let h = Harness::serving(|b| b, clones);
    let (cookie, _) = h.new_session().await;
    h.store.delay(Hook::Read, Duration::from_secs(3600));
    let healer = {
        let store = h.store.clone();
        tokio::spawn(async move {
            // Before the third clone's deadline (5 s each, one after the other): the reads
            // already waiting stay hung, the next one answers.
            tokio::time::sleep(Duration::from_secs(14)).await;
            store.delay(Hook::Read, Duration::ZERO);
        })
    };
    let start = Instant::now();
    let reply = h.get("/clones-start", Some(&cookie)).await;
    healer.await.expect("no panic");
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "3 true")
    );
    // Three deadlines in a row, then the read that works.
    assert_eq!(start.elapsed(), Duration::from_secs(15));
    assert_eq!(h.store.calls(Hook::Read), 4);
}
