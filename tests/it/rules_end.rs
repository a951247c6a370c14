//! R6 to R8 and R18: when a session ends, and what the end of a request writes, touches and
//! sends.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::json;
use session_engine::{Error, SameSite, Session, WriteMode};

use crate::faults::{Call, Hook};
use crate::harness::{
    Configure, DEFAULT_ATTRIBUTES, Harness, MINUTE, OLD_SECRET, SECRET, attributes, cookie_header,
    max_age, session_cookie, sign, store_key,
};

const SECOND: Duration = Duration::from_secs(1);

// ---- R6 expiry ----

#[tokio::test]
async fn r6_a_record_past_its_expiry_is_absent_even_if_the_store_holds_it() {
    let h = Harness::with(|b| b.duration(10 * MINUTE));
    let (cookie, id) = h.new_session().await;
    h.advance(9 * MINUTE + 59 * SECOND);
    let reply = h.get("/visits", Some(&cookie)).await;
    assert_eq!(reply.body, "2");
    assert_eq!(reply.cookie_id(), id);
    assert_eq!(max_age(reply.set_cookie()), 600);
    // Unmodified requests slide the expiry too (a touch, due long since).
    h.advance(9 * MINUTE);
    let reply = h.get("/peek", Some(&cookie)).await;
    assert_eq!(reply.body, "2");
    assert_eq!(max_age(reply.set_cookie()), 600);
    h.advance(10 * MINUTE + SECOND);
    h.store.clear_history();
    let reply = h.get("/visits", Some(&cookie)).await;
    assert_eq!(reply.body, "1");
    assert_ne!(reply.cookie_id(), id);
    // The store (on its own, real, clock) still holds the old record: the engine refused it.
    assert!(h.record(&id).await.is_some());
    assert_eq!(h.store.written_keys(), [store_key(&reply.cookie_id())]);
}

#[tokio::test]
async fn r6_max_lifetime_caps_every_write_touch_and_roll() {
    let h = Harness::with(|b| b.duration(10 * MINUTE).max_lifetime(25 * MINUTE));
    let first = h.get("/visits", None).await;
    assert_eq!(max_age(first.set_cookie()), 600);
    let cookie = first.cookie();
    h.advance(9 * MINUTE);
    let reply = h.get("/visits", Some(&cookie)).await;
    assert_eq!(
        (reply.body.as_str(), max_age(reply.set_cookie())),
        ("2", 600)
    );
    h.advance(9 * MINUTE); // t = 18 min: the cap (25) comes before now + 10.
    let reply = h.get("/visits", Some(&cookie)).await;
    assert_eq!(
        (reply.body.as_str(), max_age(reply.set_cookie())),
        ("3", 420)
    );
    h.advance(2 * MINUTE); // t = 20 min: a roll keeps the creation time.
    let reply = h.post("/login?user=ada", Some(&cookie)).await;
    assert_eq!(reply.body, "true");
    assert_eq!(max_age(reply.set_cookie()), 300);
    let cookie = reply.cookie();
    h.advance(4 * MINUTE); // t = 24 min: a touch cannot move the expiry past 25.
    h.store.clear_history();
    let reply = h.get("/peek", Some(&cookie)).await;
    assert_eq!(reply.body, "3");
    assert_eq!(h.store.calls(Hook::Touch), 0);
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    let reply = h.get("/touch", Some(&cookie)).await;
    assert_eq!(max_age(reply.set_cookie()), 60);
    h.advance(59 * SECOND); // t = 24:59, still alive.
    assert_eq!(h.get("/me", Some(&cookie)).await.body, "ada");
    h.advance(2 * SECOND); // t = 25:01, past the cap.
    let reply = h.get("/me", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.get("/peek", Some(&cookie)).await.body, "0");
}

// ---- R7 end of request ----

#[tokio::test]
async fn r7_destroyed_sends_a_removal_cookie_with_the_same_attributes() {
    let configs: [(&str, Configure); 6] = [
        ("sid", |b| b),
        ("sid", |b| {
            b.cookie_path("/app")
                .cookie_domain("example.com")
                .same_site(SameSite::Strict)
        }),
        ("sid", |b| b.secure(false).http_only(false)),
        ("sid", |b| b.same_site(SameSite::None)),
        ("__Host-s", |b| b.cookie_name("__Host-s")),
        ("sid", |b| b.persistent(false)),
    ];
    for (name, configure) in configs {
        let h = Harness::with(configure);
        let created = h.get("/visits", None).await;
        let set = created.set_cookie().to_owned();
        assert!(set.starts_with(&format!("{name}=")), "{set}");
        h.store.clear_history();
        let reply = h.post("/logout", Some(&created.cookie())).await;
        assert_eq!(reply.body, "ok");
        assert!(reply.removes_cookie(), "{reply:?}");
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
        assert_eq!(h.store.hooks(), [Hook::Destroy]);
        assert!(h.store.inner().is_empty());
    }
    // The attributes themselves, spelled out once.
    let h = Harness::with(|b| {
        b.cookie_path("/app")
            .cookie_domain("example.com")
            .same_site(SameSite::Strict)
    });
    let reply = h.post("/logout", None).await;
    assert_eq!(
        reply.set_cookie(),
        "sid=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/app; \
         Domain=example.com; Secure; HttpOnly; SameSite=Strict"
    );
}

#[tokio::test]
async fn r7_destroy_wins_over_earlier_changes() {
    let set_then_destroy = Router::new().route(
        "/set-then-destroy",
        get(|session: Session| async move {
            session.start().await?.set("a", 1)?;
            session.destroy().await?;
            Ok::<_, Error>("ok")
        }),
    );
    let h = Harness::serving(|b| b, set_then_destroy);
    let (cookie, id) = h.new_session().await;
    let reply = h.get("/set-then-destroy", Some(&cookie)).await;
    assert!(reply.removes_cookie(), "{reply:?}");
    let key = store_key(&id);
    assert_eq!(
        h.store.history(),
        [Call::new(Hook::Read, &key), Call::new(Hook::Destroy, &key)]
    );
}

#[tokio::test]
async fn r7_modified_session_is_written_then_the_cookie_set_with_max_age() {
    let h = Harness::new();
    let reply = h.get("/visits", None).await;
    let id = reply.cookie_id();
    let key = store_key(&id);
    assert_eq!(
        h.store.history(),
        [
            Call::new(Hook::Id, &id),
            Call::write(&key, WriteMode::Insert)
        ]
    );
    assert_eq!(max_age(reply.set_cookie()), 1800);
    // Within the touch interval: a modification is written all the same.
    h.advance(SECOND);
    h.store.clear_history();
    let reply = h.get("/visits", Some(&reply.cookie())).await;
    assert_eq!(reply.body, "2");
    assert_eq!(
        h.store.history(),
        [
            Call::new(Hook::Read, &key),
            Call::write(&key, WriteMode::Update)
        ]
    );
    assert_eq!(reply.set_cookie(), session_cookie(&id, 1800));
    let record = h.record(&id).await.unwrap();
    assert_eq!(record.expires_at, h.clock.now() + 30 * MINUTE);
    assert_eq!(record.data, *json!({"visits": 2}).as_object().unwrap());
}

#[tokio::test]
async fn r7_stored_unmodified_session_is_touched_and_the_cookie_refreshed() {
    let h = Harness::new();
    let (cookie, id) = h.new_session().await;
    h.advance(5 * MINUTE);
    let reply = h.get("/peek", Some(&cookie)).await;
    assert_eq!(reply.body, "1");
    let key = store_key(&id);
    assert_eq!(
        h.store.history(),
        [Call::new(Hook::Read, &key), Call::new(Hook::Touch, &key)]
    );
    assert_eq!(reply.set_cookie(), session_cookie(&id, 1800));
    let record = h.record(&id).await.unwrap();
    assert_eq!(record.expires_at, h.clock.now() + 30 * MINUTE);
}

#[tokio::test]
async fn r7_without_automatic_touch_an_unmodified_session_is_left_alone() {
    let h = Harness::with(|b| b.automatic_touch(false));
    let created_at = h.clock.now();
    let (cookie, id) = h.new_session().await;
    h.advance(5 * MINUTE);
    let reply = h.get("/peek", Some(&cookie)).await;
    assert_eq!(reply.body, "1");
    assert_eq!(h.store.hooks(), [Hook::Read]);
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    let record = h.record(&id).await.unwrap();
    assert_eq!(record.expires_at, created_at + 30 * MINUTE);
}

#[tokio::test]
async fn r7_new_unmodified_session_persists_nothing() {
    let h = Harness::new();
    let reply = h.get("/id", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len(), 32);
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    assert_eq!(h.store.hooks(), [Hook::Id]);
    assert!(h.store.inner().is_empty());
}

#[tokio::test]
async fn r7_inner_5xx_means_no_write_no_touch_no_cookie() {
    let failing = Router::new()
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
    let h = Harness::serving(|b| b, failing);
    let (cookie, _) = h.new_session().await;
    for (uri, status) in [
        ("/set-then-fail", StatusCode::INTERNAL_SERVER_ERROR),
        ("/peek-then-fail", StatusCode::SERVICE_UNAVAILABLE),
    ] {
        // A touch is due: only the 5xx keeps it from happening.
        h.advance(2 * MINUTE);
        for cookie in [None, Some(cookie.as_str())] {
            h.store.clear_history();
            let reply = h.get(uri, cookie).await;
            assert_eq!(reply.status, status);
            assert!(reply.set_cookies.is_empty(), "{uri}: {reply:?}");
            // R13: the started session still made the response depend on the cookie.
            assert_eq!(reply.header_values("vary"), ["cookie"], "{uri}");
            let expected = if cookie.is_some() {
                Hook::Read
            } else {
                Hook::Id
            };
            assert_eq!(h.store.hooks(), [expected], "{uri}");
        }
    }
    assert_eq!(h.store.inner().len(), 1);
    assert_eq!(h.get("/peek", Some(&cookie)).await.body, "1");
    // A 4xx is not a failure of the server: the session is saved.
    let reply = h.get("/set-then-401", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(max_age(reply.set_cookie()), 1800);
    assert_eq!(h.get("/peek", Some(&cookie)).await.body, "7");
}

#[tokio::test]
async fn r7_setting_an_equal_value_is_not_a_modification() {
    let same = Router::new().route(
        "/same",
        get(|session: Session| async move {
            session.start().await?;
            session.set("visits", 1)?.set_many(json!({"visits": 1}))?;
            session.reset(json!({"visits": 1}))?.delete("absent")?;
            Ok::<_, Error>("ok")
        }),
    );
    let h = Harness::serving(|b| b.automatic_touch(false), same);
    let (cookie, _) = h.new_session().await;
    let reply = h.get("/same", Some(&cookie)).await;
    assert_eq!(reply.body, "ok");
    assert_eq!(h.store.hooks(), [Hook::Read]);
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    // A different value is a modification.
    h.store.clear_history();
    let reply = h.get("/set?key=visits&value=1", Some(&cookie)).await;
    assert_eq!(h.store.hooks(), [Hook::Read, Hook::Write]);
    assert_eq!(reply.set_cookies.len(), 1);
}

// ---- R8 no overwrite ----

#[tokio::test]
async fn r8_taken_ids_are_retried_with_fresh_ids() {
    let h = Harness::new();
    h.store.id_taken_for_next(2);
    let reply = h.get("/visits", None).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "1"));
    assert_eq!(h.store.hooks(), [Hook::Id, Hook::Write].repeat(3));
    let ids = h.store.generated_ids();
    assert_eq!(ids.len(), 3);
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    let keys: Vec<_> = ids.iter().map(|id| store_key(id)).collect();
    assert_eq!(h.store.written_keys(), keys);
    assert_eq!(reply.cookie_id(), ids[2]);
    assert_eq!(h.store.inner().len(), 1);
    assert_eq!(h.get("/peek", Some(&reply.cookie())).await.body, "1");
}

#[tokio::test]
async fn r8_three_taken_ids_answer_500() {
    let h = Harness::new();
    h.store.id_taken_for_next(3);
    let reply = h.get("/visits", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.body, "");
    assert!(reply.set_cookies.is_empty());
    assert_eq!(h.store.calls(Hook::Write), 3);
    assert_eq!(h.store.calls(Hook::Id), 3);
    assert!(h.store.inner().is_empty());
}

#[tokio::test]
async fn r8_an_insert_never_overwrites_a_live_record() {
    let h = Harness::new();
    let (victim_cookie, victim) = h.new_session().await;
    // The id hook hands out the victim's id twice: the real store refuses both inserts.
    h.store.script_ids([victim.as_str(), victim.as_str()]);
    let reply = h.get("/set?key=user&value=mallory", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_ne!(reply.cookie_id(), victim);
    let all = h.get("/all", Some(&victim_cookie)).await;
    assert_eq!(all.body, r#"{"visits":1}"#);
    // Three times: a 500, and the victim is still intact.
    h.store
        .script_ids([victim.as_str(), victim.as_str(), victim.as_str()]);
    let reply = h.get("/set?key=user&value=mallory", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.set_cookies.is_empty());
    let all = h.get("/all", Some(&victim_cookie)).await;
    assert_eq!(all.body, r#"{"visits":1}"#);
}

// ---- R18 throttled touch ----

/// `GET /peek` after moving the clock by `by`: how many touches it made and its cookies.
async fn peek_after(h: &Harness, cookie: &str, by: Duration) -> (usize, Vec<String>) {
    h.advance(by);
    h.store.clear_history();
    let reply = h.get("/peek", Some(cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_ne!(reply.body, "0", "the session was lost");
    (h.store.calls(Hook::Touch), reply.set_cookies)
}

#[tokio::test]
async fn r18_default_interval_no_write_and_no_cookie_until_it_has_passed() {
    // The default duration is 30 min: the interval is min(60 s, 3 min) = 60 s.
    let h = Harness::new();
    let (cookie, id) = h.new_session().await;
    let written = h.clock.now();
    for _ in 0..3 {
        h.advance(19 * SECOND);
        let reply = h.get("/peek", Some(&cookie)).await;
        assert_eq!(reply.body, "1");
        assert!(reply.set_cookies.is_empty(), "{reply:?}");
        assert!(reply.header_values("cache-control").is_empty());
        assert_eq!(reply.header_values("vary"), ["cookie"]);
    }
    assert_eq!(h.store.hooks(), [Hook::Read; 3]);
    assert_eq!(
        h.record(&id).await.unwrap().expires_at,
        written + 30 * MINUTE
    );
    // 60 s after the write: a touch, and the refresh.
    let (touches, cookies) = peek_after(&h, &cookie, 3 * SECOND).await;
    assert_eq!((touches, cookies.len()), (1, 1), "{cookies:?}");
    assert_eq!(max_age(&cookies[0]), 1800);
    let touched = h.clock.now();
    assert_eq!(
        h.record(&id).await.unwrap().expires_at,
        touched + 30 * MINUTE
    );
    // The interval runs from that touch.
    assert_eq!(peek_after(&h, &cookie, 59 * SECOND).await, (0, vec![]));
    let (touches, cookies) = peek_after(&h, &cookie, SECOND).await;
    assert_eq!((touches, max_age(&cookies[0])), (1, 1800));
}

#[tokio::test]
async fn r18_an_idle_session_ends_between_duration_minus_interval_and_duration_after_its_last_use()
{
    let h = Harness::new();
    let (a, _) = h.new_session().await;
    let (b, _) = h.new_session().await;
    // Both are used 59 s after they were written: no touch, so their expiry stays put.
    assert_eq!(peek_after(&h, &a, 59 * SECOND).await, (0, vec![]));
    assert_eq!(peek_after(&h, &b, Duration::ZERO).await, (0, vec![]));
    // Alive just short of 30 min after the write (29:01 after the last use) ...
    h.advance(29 * MINUTE + SECOND - Duration::from_millis(1));
    assert_eq!(h.get("/peek", Some(&a)).await.body, "1");
    // ... and gone at 30 min: 29:01 after the last use, more than 30 min - 60 s.
    h.advance(Duration::from_millis(1));
    assert_eq!(h.get("/peek", Some(&b)).await.body, "0");
}

#[tokio::test]
async fn r18_the_interval_follows_a_custom_duration() {
    // 5 min: the interval is 30 s. 2 h: 60 s, the most the default allows.
    for (ms, interval) in [(300_000, 30 * SECOND), (7_200_000, MINUTE)] {
        let h = Harness::new();
        let (cookie, _) = h.new_session().await;
        let reply = h.post(&format!("/duration?ms={ms}"), Some(&cookie)).await;
        assert_eq!(max_age(reply.set_cookie()), ms / 1000);
        assert_eq!(
            peek_after(&h, &cookie, interval - Duration::from_millis(1)).await,
            (0, vec![]),
            "{ms}"
        );
        let (touches, cookies) = peek_after(&h, &cookie, Duration::from_millis(1)).await;
        assert_eq!(touches, 1, "{ms}");
        assert_eq!(max_age(&cookies[0]), ms / 1000, "{ms}");
    }
}

#[tokio::test]
async fn r18_a_fixed_interval_skips_the_touch_and_the_refresh() {
    let h = Harness::with(|b| b.touch_interval(5 * MINUTE));
    let (cookie, _) = h.new_session().await;
    assert_eq!(peek_after(&h, &cookie, MINUTE).await, (0, vec![]));
    let almost = 3 * MINUTE + 59 * SECOND;
    assert_eq!(peek_after(&h, &cookie, almost).await, (0, vec![]));
    // Five minutes after the write: due.
    let (touches, cookies) = peek_after(&h, &cookie, SECOND).await;
    assert_eq!((touches, max_age(&cookies[0])), (1, 1800));
    // One minute after that touch: skipped again.
    assert_eq!(peek_after(&h, &cookie, MINUTE).await, (0, vec![]));
    // A modification is written whatever the interval.
    h.store.clear_history();
    let reply = h.get("/visits", Some(&cookie)).await;
    assert_eq!(h.store.hooks(), [Hook::Read, Hook::Write]);
    assert_eq!(max_age(reply.set_cookie()), 1800);
}

#[tokio::test]
async fn r18_a_fixed_interval_longer_than_half_the_duration_counts_as_half() {
    let h = Harness::with(|b| b.duration(10 * MINUTE).touch_interval(20 * MINUTE));
    let (cookie, _) = h.new_session().await;
    let almost = 5 * MINUTE - Duration::from_millis(1);
    assert_eq!(peek_after(&h, &cookie, almost).await, (0, vec![]));
    let (touches, cookies) = peek_after(&h, &cookie, Duration::from_millis(1)).await;
    assert_eq!((touches, max_age(&cookies[0])), (1, 600));
}

#[tokio::test]
async fn r18_a_zero_interval_touches_on_every_request() {
    let h = Harness::with(|b| b.touch_interval(Duration::ZERO));
    let (cookie, _) = h.new_session().await;
    for _ in 0..3 {
        let (touches, cookies) = peek_after(&h, &cookie, SECOND).await;
        assert_eq!((touches, max_age(&cookies[0])), (1, 1800));
    }
}

#[tokio::test]
async fn r18_a_rotated_cookie_is_reissued_within_the_interval_without_a_write() {
    let h = Harness::with(|b| b.secrets([SECRET, OLD_SECRET]));
    let (_, id) = h.new_session().await;
    let old_cookie = format!("sid={}", sign(OLD_SECRET, &id));
    h.advance(30 * SECOND);
    let reply = h.get("/peek", Some(&old_cookie)).await;
    assert_eq!(reply.body, "1");
    // The record's current expiry: written 30 s ago for 30 min.
    assert_eq!(
        reply.set_cookie(),
        format!(
            "sid={}; Max-Age=1770; {DEFAULT_ATTRIBUTES}",
            sign(SECRET, &id)
        )
    );
    assert_eq!(h.store.hooks(), [Hook::Read]);
    // The cookie as re-issued needs nothing more within the interval.
    let reply = h.get("/peek", Some(&reply.cookie())).await;
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    assert_eq!(h.store.hooks(), [Hook::Read, Hook::Read]);
}

/// Setting a session's duration to the one it already has changes nothing to write, and must
/// not stop its touches either: the expiry the store holds still moves once the interval has
/// passed, so a user who keeps using the site stays signed in.
#[tokio::test]
async fn r18_setting_the_same_duration_again_keeps_the_session_alive() {
    let h = Harness::new();
    let (cookie, id) = h.new_session().await;
    h.post("/duration?ms=600000", Some(&cookie)).await;
    h.advance(5 * MINUTE);
    h.store.clear_history();
    let reply = h.post("/duration?ms=600000", Some(&cookie)).await;
    let key = store_key(&id);
    assert_eq!(
        h.store.history(),
        [Call::new(Hook::Read, &key), Call::new(Hook::Touch, &key)]
    );
    assert_eq!(max_age(reply.set_cookie()), 600);
    // 11 minutes after the first write, 6 after the last use: alive.
    h.advance(6 * MINUTE);
    assert_eq!(h.get("/id", Some(&cookie)).await.body, id);
}
