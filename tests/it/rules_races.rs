//! R9 to R11 and R17: requests that race on one session (a logout, a roll, a `destroy()` from a
//! clone, a `set_duration`) and what the slower one may still do.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use session_engine::{Error, Session, SessionStore as _, StoreKey, WriteMode};
use tokio::sync::Notify;

use crate::faults::{Call, Fault, FaultyStore, Hook};
use crate::harness::{Harness, MINUTE, Reply, max_age, store_key};

/// What a test route does once its session is started and the test's interruption is over:
/// `set` a key, `peek` at `visits`, `login` (roll, set `user`), `touch`, or nothing.
async fn then(session: &Session, then: &str) -> Result<String, Error> {
    match then {
        "set" => drop(session.set("cart", "full")?),
        "peek" => return Ok(session.get::<u64>("visits")?.unwrap_or(0).to_string()),
        "login" => {
            session.roll().await?;
            session.set("user", "ada")?;
        }
        "touch" => {
            session.touch().await?;
            return Ok(format!("{} {:?}", session.ready(), session.id()));
        }
        _ => {}
    }
    Ok("ok".to_owned())
}

/// `/vanish/{then}`: starts the session, removes its record behind the engine's back (as
/// another request would), then does [`then`].
fn vanishing_routes(store: &Arc<FaultyStore>) -> Router {
    let store = store.clone();
    Router::new().route(
        "/vanish/{then}",
        get(move |session: Session, Path(step): Path<String>| {
            let store = store.clone();
            async move {
                session.start().await?;
                let key = StoreKey::from(store_key(&session.id().expect("started")));
                assert!(store.inner().destroy(&key).await.unwrap());
                then(&session, &step).await
            }
        }),
    )
}

// ---- R9 no resurrection ----

#[tokio::test]
async fn r9_update_never_resurrects_and_sends_no_cookie() {
    let h = Harness::serving_with(|b| b, vanishing_routes);
    let (cookie, id) = h.new_session().await;
    let reply = h.get("/vanish/set", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    let key = store_key(&id);
    assert_eq!(
        h.store.history(),
        [
            Call::new(Hook::Read, &key),
            Call::write(&key, WriteMode::Update)
        ]
    );
    assert!(h.store.inner().is_empty());
    assert_eq!(h.get("/peek", Some(&cookie)).await.body, "0");
    // The same with an injected `Gone`.
    let (cookie, _) = h.new_session().await;
    h.store.fail_times(Hook::Write, Fault::Gone, 1);
    let reply = h.get("/visits", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
}

#[tokio::test]
async fn r9_a_touch_that_finds_the_record_gone_sends_no_cookie() {
    let h = Harness::serving_with(|b| b, vanishing_routes);
    // The automatic touch at the end of the request.
    let (cookie, id) = h.new_session().await;
    h.advance(MINUTE);
    let reply = h.get("/vanish/nothing", Some(&cookie)).await;
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    let key = store_key(&id);
    assert_eq!(
        h.store.history(),
        [Call::new(Hook::Read, &key), Call::new(Hook::Touch, &key)]
    );
    assert!(h.store.inner().is_empty());
    // An explicit `touch()`: the session ends for the request, and is not destroyed.
    let (cookie, _) = h.new_session().await;
    let reply = h.get("/vanish/touch", Some(&cookie)).await;
    assert_eq!(reply.body, "false None");
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    assert!(h.store.inner().is_empty());
    // An injected `Gone` from the touch hook.
    let (cookie, _) = h.new_session().await;
    h.advance(MINUTE);
    h.store.fail_times(Hook::Touch, Fault::Gone, 1);
    let reply = h.get("/peek", Some(&cookie)).await;
    assert_eq!(reply.body, "1");
    assert_eq!(h.store.hooks(), [Hook::Read, Hook::Touch]);
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
}

/// Two signals between a test and a slow request: the request says it has started, then
/// waits to be released. Two browser tabs racing on one cookie.
#[derive(Clone, Default)]
struct Race {
    started: Arc<Notify>,
    release: Arc<Notify>,
}

impl Race {
    /// In the slow request: says it has started, and waits to be released.
    async fn pause(&self) {
        self.started.notify_one();
        self.release.notified().await;
    }

    /// Runs `request` until it has started, then `meanwhile`, then lets `request` finish.
    async fn run<T>(
        &self,
        request: impl Future<Output = Reply>,
        meanwhile: impl Future<Output = T>,
    ) -> (Reply, T) {
        let meanwhile = async {
            self.started.notified().await;
            let other = meanwhile.await;
            self.release.notify_one();
            other
        };
        tokio::join!(request, meanwhile)
    }
}

/// `/slow/{then}`: starts the session, waits for the [`Race`], then does [`then`].
fn racing_routes(race: &Race) -> Router {
    let race = race.clone();
    Router::new().route(
        "/slow/{then}",
        get(move |session: Session, Path(step): Path<String>| {
            let race = race.clone();
            async move {
                session.start().await?;
                race.pause().await;
                then(&session, &step).await
            }
        }),
    )
}

/// A harness with the routes of [`racing_routes`], and their [`Race`].
fn racing() -> (Harness, Race) {
    let race = Race::default();
    let h = Harness::serving(|b| b, racing_routes(&race));
    (h, race)
}

#[tokio::test]
async fn r9_logout_in_one_tab_is_not_undone_by_a_slower_request_in_another() {
    for slow in ["/slow/set", "/slow/peek", "/slow/login"] {
        let (h, race) = racing();
        let (cookie, _) = h.new_session().await;
        let cookie = h.post("/login?user=ada", Some(&cookie)).await.cookie();
        assert_eq!(h.get("/me", Some(&cookie)).await.body, "ada");
        // A touch is due for the slow peek.
        h.advance(MINUTE);
        // Tab 1 starts a slow request; tab 2 logs out meanwhile; then tab 1 finishes.
        let slow_tab = h.get(slow, Some(&cookie));
        let (slow_reply, logout) = race.run(slow_tab, h.post("/logout", Some(&cookie))).await;
        assert!(logout.removes_cookie(), "{logout:?}");
        assert_eq!(slow_reply.status, StatusCode::OK, "{slow}");
        // No cookie at all: a removal could wipe a newer session the browser holds.
        assert!(slow_reply.set_cookies.is_empty(), "{slow}: {slow_reply:?}");
        assert!(
            h.store.inner().is_empty(),
            "{slow} left a record behind: {} records",
            h.store.inner().len()
        );
        let me = h.get("/me", Some(&cookie)).await;
        assert_eq!(me.status, StatusCode::UNAUTHORIZED, "{slow}");
    }
}

// ---- R10 roll ----

#[tokio::test]
async fn r10_roll_keeps_data_custom_duration_and_creation_time() {
    let h = Harness::new();
    let created_at = h.clock.now();
    let (cookie, old_id) = h.new_session().await;
    let reply = h.post("/duration?ms=7200000", Some(&cookie)).await;
    assert_eq!(max_age(reply.set_cookie()), 7200);
    h.advance(10 * MINUTE);
    h.store.clear_history();
    let reply = h.post("/login?user=ada", Some(&cookie)).await;
    assert_eq!(reply.body, "true");
    let new_id = reply.cookie_id();
    assert_ne!(new_id, old_id);
    assert_eq!(max_age(reply.set_cookie()), 7200);
    // The new record is inserted, then the old one destroyed (it was live: R9).
    let (old, new) = (store_key(&old_id), store_key(&new_id));
    assert_eq!(
        h.store.history(),
        [
            Call::new(Hook::Read, &old),
            Call::new(Hook::Id, &new_id),
            Call::write(&new, WriteMode::Insert),
            Call::new(Hook::Destroy, &old),
        ]
    );
    let record = h.record(&new_id).await.unwrap();
    assert_eq!(
        Value::Object(record.data),
        json!({"visits": 1, "user": "ada", "__cust_dur": 7_200_000})
    );
    assert_eq!(record.created_at, created_at);
    assert_eq!(record.expires_at, h.clock.now() + 120 * MINUTE);
    assert!(h.record(&old_id).await.is_none());
    assert_eq!(h.store.inner().len(), 1);
    assert_eq!(h.get("/peek", Some(&cookie)).await.body, "0");
    assert_eq!(h.get("/me", Some(&reply.cookie())).await.body, "ada");
}

#[tokio::test]
async fn r10_failed_insert_keeps_the_old_record() {
    let h = Harness::new();
    let (cookie, old_id) = h.new_session().await;
    h.store.fail_times(Hook::Write, Fault::Backend, 1);
    let reply = h.post("/login?user=ada", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.set_cookies.is_empty());
    assert_eq!(h.store.calls(Hook::Destroy), 0);
    assert_eq!(h.store.inner().len(), 1);
    let old = h.record(&old_id).await.unwrap();
    assert_eq!(Value::Object(old.data), json!({"visits": 1}));
    assert_eq!(h.get("/peek", Some(&cookie)).await.body, "1");
    let me = h.get("/me", Some(&cookie)).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn r10_roll_of_a_new_session_inserts_once_and_destroys_nothing() {
    let h = Harness::new();
    let reply = h.post("/login?user=ada", None).await;
    assert_eq!(reply.body, "true");
    assert_eq!(h.store.hooks(), [Hook::Id, Hook::Id, Hook::Write]);
    let ids = h.store.generated_ids();
    assert_eq!(reply.cookie_id(), ids[1]);
    assert_eq!(h.store.written_keys(), [store_key(&ids[1])]);
    assert_eq!(h.get("/me", Some(&reply.cookie())).await.body, "ada");
}

#[tokio::test]
async fn r10_a_roll_whose_old_record_is_no_longer_live_leaves_nothing_and_sends_no_cookie() {
    let h = Harness::serving_with(|b| b, vanishing_routes);
    let (cookie, old_id) = h.new_session().await;
    let reply = h.get("/vanish/login", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    let new_id = h.store.generated_ids().pop().unwrap();
    let (old, new) = (store_key(&old_id), store_key(&new_id));
    assert_eq!(
        h.store.history(),
        [
            Call::new(Hook::Read, &old),
            Call::new(Hook::Id, &new_id),
            Call::write(&new, WriteMode::Insert),
            Call::new(Hook::Destroy, &old),
            Call::new(Hook::Destroy, &new),
        ]
    );
    assert!(h.store.inner().is_empty());
}

/// A logout that lands while the roll's insert is waiting on the store: the login in flight
/// finds the old record gone and removes the new one (tokio's clock is paused).
#[tokio::test(start_paused = true)]
async fn r10_a_logout_during_the_roll_insert_is_never_undone() {
    let h = Harness::new();
    let (cookie, _) = h.new_session().await;
    h.store.delay(Hook::Write, Duration::from_secs(1));
    let logout = async {
        while h.store.calls(Hook::Write) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        h.post("/logout", Some(&cookie)).await
    };
    let (login, logout) = tokio::join!(h.post("/login?user=ada", Some(&cookie)), logout);
    assert!(logout.removes_cookie(), "{logout:?}");
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.set_cookies.is_empty(), "{login:?}");
    assert_eq!(
        h.store.hooks(),
        [
            Hook::Read,
            Hook::Id,
            Hook::Write,
            Hook::Destroy,
            Hook::Destroy,
            Hook::Destroy
        ]
    );
    assert!(h.store.inner().is_empty());
}

// ---- R17 stale touches ----

/// A slow request reads the session; another sets its duration meanwhile; then the slow one's
/// touch (automatic, or `touch()`) finds the expiry moved and leaves it alone.
#[tokio::test]
async fn r17_a_slow_touch_never_undoes_another_requests_set_duration() {
    // (the first duration, the second one, how long after the first write the race runs)
    let cases = [
        ("a day cut to 30 min", 86_400_000, 1_800_000, 2 * MINUTE),
        (
            "60 s stretched to 30 min",
            60_000,
            1_800_000,
            Duration::from_secs(10),
        ),
    ];
    for (name, first, second, after) in cases {
        for slow in ["/slow/peek", "/slow/touch"] {
            let (h, race) = racing();
            let (cookie, id) = h.new_session().await;
            h.post(&format!("/duration?ms={first}"), Some(&cookie))
                .await;
            // The slow request's touch is due: more than a tenth of its duration has passed.
            h.advance(after);
            h.store.clear_history();
            let slow_request = h.get(slow, Some(&cookie));
            let set_duration = format!("/duration?ms={second}");
            let meanwhile = h.post(&set_duration, Some(&cookie));
            let (slow_reply, set) = race.run(slow_request, meanwhile).await;
            assert_eq!(max_age(set.set_cookie()), second / 1000, "{name} {slow}");
            let expiry = h.clock.now() + Duration::from_millis(second);
            assert_eq!(slow_reply.status, StatusCode::OK, "{name} {slow}");
            // Refused: no refresh cookie, and the other request's expiry stands.
            assert!(
                slow_reply.set_cookies.is_empty(),
                "{name} {slow}: {slow_reply:?}"
            );
            // One touch, refused; the end of the request does not try again.
            assert_eq!(h.store.calls(Hook::Touch), 1, "{name} {slow}");
            let record = h.record(&id).await.unwrap();
            assert_eq!(record.expires_at, expiry, "{name} {slow}");
            assert_eq!(record.data["__cust_dur"], json!(second), "{name} {slow}");
        }
    }
}

/// R17 (v3, writes too): a slow request that writes a key after another request set a custom
/// duration keeps that duration's expiry, in the store and in its own cookie.
#[tokio::test]
async fn r17_a_slow_write_keeps_the_expiry_of_another_requests_set_duration() {
    // (the duration before, the one set meanwhile)
    for (before, meanwhile) in [(None, 60_000_u64), (Some(86_400_000_u64), 60_000)] {
        let (h, race) = racing();
        let (cookie, id) = h.new_session().await;
        if let Some(before) = before {
            h.post(&format!("/duration?ms={before}"), Some(&cookie))
                .await;
        }
        h.advance(Duration::from_secs(10));
        let slow_request = h.get("/slow/set", Some(&cookie));
        let set_duration = format!("/duration?ms={meanwhile}");
        let set_duration = h.post(&set_duration, Some(&cookie));
        let (slow_reply, set) = race.run(slow_request, set_duration).await;
        assert_eq!(max_age(set.set_cookie()), meanwhile / 1000);
        assert_eq!(slow_reply.status, StatusCode::OK);
        // The record's expiry follows its own duration, whichever request set it; the slow
        // request's cookie carries that expiry, not its own view of it.
        let expiry = h.clock.now() + Duration::from_millis(meanwhile);
        let record = h.record(&id).await.unwrap();
        assert_eq!(record.data["cart"], json!("full"), "{before:?}");
        assert_eq!(record.data["__cust_dur"], json!(meanwhile), "{before:?}");
        assert_eq!(record.expires_at, expiry, "{before:?}");
        assert_eq!(
            max_age(slow_reply.set_cookie()),
            meanwhile / 1000,
            "{before:?}"
        );
    }
}

// ---- R22 a started roll finishes ----

/// The client goes away while a login's roll is under way: once its insert is in, the old
/// record and the new one are both removed (tokio's clock is paused).
#[tokio::test(start_paused = true)]
async fn r22_a_roll_left_by_its_client_removes_the_old_and_the_new_record() {
    for slow in [Hook::Write, Hook::Destroy] {
        let h = Harness::new();
        let (cookie, old_id) = h.new_session().await;
        h.store.delay(slow, Duration::from_secs(1));
        // The client gives up half-way: while the insert (or the old record's destroy)
        // waits on the store.
        let login = h.post("/login?user=ada", Some(&cookie));
        let gone = tokio::time::timeout(Duration::from_millis(500), login).await;
        assert!(gone.is_err(), "{slow:?}: the request finished first");
        assert_eq!(h.store.calls(Hook::Write), 1, "{slow:?}");
        tokio::time::sleep(Duration::from_secs(5)).await;
        let new_id = h.store.generated_ids().pop().unwrap();
        assert!(
            h.record(&old_id).await.is_none(),
            "{slow:?}: the old record is live"
        );
        assert!(
            h.record(&new_id).await.is_none(),
            "{slow:?}: an orphan is live"
        );
        assert!(h.store.inner().is_empty(), "{slow:?}");
        assert_eq!(
            h.get("/me", Some(&cookie)).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
}

/// A roll whose destroy of the old record fails answers 500 and leaves no new record live
/// beside the old one.
#[tokio::test]
async fn r22_a_roll_whose_old_record_cannot_be_destroyed_leaves_no_new_record() {
    let h = Harness::new();
    let (cookie, old_id) = h.new_session().await;
    h.store.fail_times(Hook::Destroy, Fault::Backend, 1);
    let login = h.post("/login?user=ada", Some(&cookie)).await;
    assert_eq!(login.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(login.set_cookies.is_empty(), "{login:?}");
    let new_id = h.store.generated_ids().pop().unwrap();
    assert!(h.record(&new_id).await.is_none(), "the new record is live");
    // The old session is as it was.
    assert!(h.record(&old_id).await.is_some());
    assert_eq!(h.store.inner().len(), 1);
    assert_eq!(h.get("/peek", Some(&cookie)).await.body, "1");
}
