//! Store-level scenarios of contract v3 that the SQL stores are checked with, each called from
//! the store's own file with a store in a place of its own: R17 for writes, R20's round trips
//! and the summaries of a user's sessions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use session_engine::store::{DURATION_KEY, ExpiryRule, LOGIN_KEY, USER_KEY};
use session_engine::{Changes, Record, RecordSummary, SessionStore, StoreKey, WriteMode};

use super::{fresh_key, insert, now_ms};

const MINUTE: Duration = Duration::from_secs(60);

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn ms(time: SystemTime) -> u64 {
    u64::try_from(
        time.duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("ms fit")
}

/// An update of `keys` from `data`, as the engine makes it at `now` with its duration of
/// 30 minutes and `max_lifetime`; `view` is the request's own view of the expiry, from `now`.
/// Returns `now` and the expiry stored.
async fn update(
    store: &dyn SessionStore,
    key: &StoreKey,
    data: &Map<String, Value>,
    created_at: SystemTime,
    view: impl FnOnce(SystemTime) -> SystemTime,
    max_lifetime: Option<Duration>,
    keys: &[&str],
) -> (SystemTime, SystemTime) {
    let now = now_ms();
    let record = Record::new(data.clone(), created_at, view(now)).with_rule(ExpiryRule::new(
        now,
        30 * MINUTE,
        max_lifetime,
    ));
    let changes = keys
        .iter()
        .fold(Changes::new(), |changes, key| changes.with_set(*key));
    let stored = store
        .write(key, &record, &changes, WriteMode::Update)
        .await
        .expect("update");
    (now, stored)
}

/// R17 (v3): request A sets a custom duration of one minute; request B, which read the
/// record before A wrote and changes only `x`, writes after it. B's update stores (and
/// returns) the expiry of the record as it stands, A's minute from B's write, not B's view
/// of 30 minutes; both keys are kept.
pub(crate) async fn r17_a_slow_write_keeps_another_requests_duration(store: &dyn SessionStore) {
    let (key, created) = (fresh_key(), now_ms());
    let before = object(json!({"x": 0, "y": 0}));
    insert(
        store,
        &key,
        &Record::new(before.clone(), created, created + 30 * MINUTE),
    )
    .await;

    let mut a = before.clone();
    a.insert(DURATION_KEY.into(), json!(60_000));
    let (a_now, a_stored) = update(
        store,
        &key,
        &a,
        created,
        |now| now + MINUTE,
        None,
        &[DURATION_KEY],
    )
    .await;
    assert_eq!(a_stored, a_now + MINUTE, "A's own duration");

    let mut b = before;
    b.insert("x".into(), json!(1));
    let view = |now: SystemTime| now + 30 * MINUTE;
    let (b_now, b_stored) = update(store, &key, &b, created, view, None, &["x"]).await;
    assert_eq!(
        b_stored,
        b_now + MINUTE,
        "B stored its own view of the duration (30 minutes) over A's minute"
    );
    let read = store.read(&key).await.expect("read").expect("live");
    assert_eq!(read.expires_at, b_now + MINUTE);
    assert_eq!(
        read.data,
        object(json!({"x": 1, "y": 0, DURATION_KEY: 60_000}))
    );
    assert_eq!(read.created_at, created);
}

/// R17 (v3), the absolute lifetime: A logs in (its `__login`, now), B (read before A, so
/// its view of the absolute lifetime runs from the creation two hours ago and ends in ten
/// minutes) writes after it: the stored expiry runs the absolute lifetime from A's login,
/// so B's 30 minutes of idle lifetime stand. A write without a rule keeps its own expiry.
pub(crate) async fn r17_a_slow_write_keeps_another_requests_login(store: &dyn SessionStore) {
    let max = 130 * MINUTE;
    let (key, now) = (fresh_key(), now_ms());
    let created = now - 120 * MINUTE;
    let before = object(json!({"x": 0}));
    insert(
        store,
        &key,
        &Record::new(before.clone(), created, now + 10 * MINUTE),
    )
    .await;

    let mut a = before.clone();
    a.insert(LOGIN_KEY.into(), json!(ms(now)));
    let (a_now, a_stored) = update(
        store,
        &key,
        &a,
        created,
        |now| now + 30 * MINUTE,
        Some(max),
        &[LOGIN_KEY],
    )
    .await;
    assert_eq!(a_stored, a_now + 30 * MINUTE);

    let mut b = before;
    b.insert("x".into(), json!(1));
    let view = |_: SystemTime| created + max;
    let (b_now, b_stored) = update(store, &key, &b, created, view, Some(max), &["x"]).await;
    assert_eq!(
        b_stored,
        b_now + 30 * MINUTE,
        "B capped the expiry by the lifetime from the creation, not from A's login"
    );
    let read = store.read(&key).await.expect("read").expect("live");
    assert_eq!(read.expires_at, b_now + 30 * MINUTE);
    assert_eq!(read.data, object(json!({"x": 1, LOGIN_KEY: ms(now)})));

    // The cap applies when it is the nearer: a login long ago ends the session at its
    // absolute lifetime, to the millisecond, whatever the request's view.
    let mut c = read.data.clone();
    let login = now - 125 * MINUTE + Duration::from_millis(7);
    c.insert(LOGIN_KEY.into(), json!(ms(login)));
    let (_, c_stored) = update(store, &key, &c, created, view, Some(max), &[LOGIN_KEY]).await;
    assert_eq!(c_stored, login + max);

    // Without a rule, the record's own expiry is stored.
    let fixed = now + 7 * MINUTE;
    let record = Record::new(read.data.clone(), created, fixed);
    let stored = store
        .write(
            &key,
            &record,
            &Changes::new().with_set("x"),
            WriteMode::Update,
        )
        .await
        .expect("update");
    assert_eq!(stored, fixed);
    let read = store.read(&key).await.expect("read").expect("live");
    assert_eq!(read.expires_at, fixed);
}

/// Text that the escape of NUL characters must keep apart: NUL, U+0001, both, and text that
/// only looks like their escapes.
fn odd_strings() -> Vec<String> {
    [
        "\u{0}",
        "a\u{0}b",
        "\u{1}",
        "\u{1}0",
        "\u{1}1",
        "\u{0}\u{1}\u{0}\u{1}",
        "\\u0000",
        "\\u0001",
        "\\\\u0000",
        "\u{1}\\u0000\u{0}",
        "plain",
        "",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// R20: NUL characters (and the characters an escape of them might use) in keys and values,
/// at the top and nested, read back exactly, through inserts, replacements and patches; a
/// user name holding NUL lists its sessions and no other's.
pub(crate) async fn r20_nul_characters_round_trip(store: &dyn SessionStore) {
    let now = now_ms();
    let key = fresh_key();
    let mut data = Map::new();
    for (i, text) in odd_strings().into_iter().enumerate() {
        let nested = json!({ text.clone(): [text.clone(), {"in": text.clone()}], "i": i });
        data.insert(format!("{text}#{i}"), nested);
        data.insert(format!("v{i}"), json!(text));
    }
    let record = Record::new(data.clone(), now, now + 30 * MINUTE);
    insert(store, &key, &record).await;
    assert_eq!(store.read(&key).await.expect("read"), Some(record.clone()));

    // A patch that sets and removes keys holding NUL.
    data.insert("new\u{0}key".into(), json!({"\u{0}": "\u{0}\u{1}"}));
    data.remove("a\u{0}b#1");
    let changes = Changes::new()
        .with_set("new\u{0}key")
        .with_deleted("a\u{0}b#1");
    let patched = Record::new(data.clone(), now, now + 31 * MINUTE);
    store
        .write(&key, &patched, &changes, WriteMode::Update)
        .await
        .expect("patch");
    assert_eq!(store.read(&key).await.expect("read"), Some(patched));

    // A replacement of all of it.
    data.insert("v0".into(), json!("replaced\u{0}"));
    let replaced = Record::new(data.clone(), now, now + 32 * MINUTE);
    store
        .write(&key, &replaced, &Changes::replace_all(), WriteMode::Update)
        .await
        .expect("replace");
    assert_eq!(store.read(&key).await.expect("read"), Some(replaced));

    // Users whose names hold NUL or look like its escape.
    let mut keys = Vec::new();
    for user in ["al\u{0}ice", "al", "al\u{1}0ice", "al\\u0000ice"] {
        let key = fresh_key();
        let data = object(json!({ USER_KEY: user, "v": "\u{0}" }));
        insert(store, &key, &Record::new(data, now, now + 30 * MINUTE)).await;
        keys.push((user, key));
    }
    for (user, key) in &keys {
        let listed = store.user_sessions(user).await.expect("user_sessions");
        assert_eq!(listed.len(), 1, "{user:?}: {listed:?}");
        assert_eq!(&listed[0].0, key, "{user:?}");
        assert_eq!(listed[0].1.user, *user);
    }
}

/// R20: a value nested as deep as `set` allows (64 levels, the value itself one of them)
/// reads back equal, written whole and as a patch.
pub(crate) async fn r20_a_value_nested_64_deep_round_trips(store: &dyn SessionStore) {
    let mut deep = json!("\u{0}bottom");
    for level in 0..64 {
        deep = if level % 2 == 0 {
            json!([deep])
        } else {
            json!({ "l": deep })
        };
    }
    let now = now_ms();
    let key = fresh_key();
    let mut data = Map::new();
    data.insert("deep".into(), deep.clone());
    let record = Record::new(data.clone(), now, now + 30 * MINUTE);
    insert(store, &key, &record).await;
    assert_eq!(store.read(&key).await.expect("read"), Some(record));
    data.insert("again".into(), deep);
    let patched = Record::new(data, now, now + 31 * MINUTE);
    store
        .write(
            &key,
            &patched,
            &Changes::new().with_set("again"),
            WriteMode::Update,
        )
        .await
        .expect("patch");
    assert_eq!(store.read(&key).await.expect("read"), Some(patched));
}

/// SPEC 7.2 (v3): the summaries of a user's sessions carry the tie, the times, the custom
/// duration and the last login, as the data has them after inserts and patches (a patch that
/// unties, or ties to another user, moves the record out of the list); nothing else is listed.
pub(crate) async fn users_the_listing_summarises_each_session(store: &dyn SessionStore) {
    let user = format!("u{}", fresh_key().as_str());
    let now = now_ms();
    let created = now - 5 * MINUTE;
    let login = now - 2 * MINUTE;
    let plain = object(json!({ USER_KEY: user, "big": "x".repeat(10_000) }));
    let full = object(json!({
        USER_KEY: user, DURATION_KEY: 90_000, LOGIN_KEY: ms(login), "n": 1
    }));
    let (k_plain, k_full, k_other, k_expired, k_untied) = (
        fresh_key(),
        fresh_key(),
        fresh_key(),
        fresh_key(),
        fresh_key(),
    );
    insert(
        store,
        &k_plain,
        &Record::new(plain.clone(), created, now + 10 * MINUTE),
    )
    .await;
    insert(
        store,
        &k_full,
        &Record::new(full.clone(), created, now + 20 * MINUTE),
    )
    .await;
    let other = object(json!({ USER_KEY: format!("{user}x") }));
    insert(
        store,
        &k_other,
        &Record::new(other, created, now + 20 * MINUTE),
    )
    .await;
    let expired = object(json!({ USER_KEY: user }));
    insert(
        store,
        &k_expired,
        &Record::new(expired, created, now - MINUTE),
    )
    .await;
    insert(
        store,
        &k_untied,
        &Record::new(plain.clone(), created, now + 20 * MINUTE),
    )
    .await;

    // Untied by a patch; `plain` gets a duration of its own by another.
    let mut untied = plain.clone();
    untied.remove(USER_KEY);
    store
        .write(
            &k_untied,
            &Record::new(untied, created, now + 20 * MINUTE),
            &Changes::new().with_deleted(USER_KEY),
            WriteMode::Update,
        )
        .await
        .expect("untie");
    let mut timed = plain;
    timed.insert(DURATION_KEY.into(), json!(45_000));
    let (_, timed_expiry) = update(
        store,
        &k_plain,
        &timed,
        created,
        |now| now + Duration::from_secs(45),
        None,
        &[DURATION_KEY],
    )
    .await;

    let mut listed = store.user_sessions(&user).await.expect("user_sessions");
    listed.sort_by_key(|a| a.1.expires_at);
    let expected = vec![
        (
            k_plain,
            RecordSummary::new(user.clone(), created, timed_expiry)
                .with_duration(Some(Duration::from_secs(45))),
        ),
        (
            k_full,
            RecordSummary::new(user.clone(), created, now + 20 * MINUTE)
                .with_duration(Some(Duration::from_secs(90)))
                .with_login(Some(login)),
        ),
    ];
    let mut expected = expected;
    expected.sort_by_key(|a| a.1.expires_at);
    assert_eq!(listed, expected);

    // Deleting the login and the duration by a patch clears them from the summary.
    let mut bare = full;
    bare.remove(DURATION_KEY);
    bare.remove(LOGIN_KEY);
    store
        .write(
            &expected[1].0,
            &Record::new(bare, created, now + 20 * MINUTE),
            &Changes::new()
                .with_deleted(DURATION_KEY)
                .with_deleted(LOGIN_KEY),
            WriteMode::Update,
        )
        .await
        .expect("patch");
    let listed = store.user_sessions(&user).await.expect("user_sessions");
    let summary = listed
        .iter()
        .find(|(key, _)| *key == expected[1].0)
        .map(|(_, summary)| summary.clone())
        .expect("listed");
    assert_eq!(summary.duration, None);
    assert_eq!(summary.login_at, None);
}

/// The rows a table of the previous layout (data only, no columns beside it) holds before
/// `migrate` brings it up to date: (key, data, created, expires).
pub(crate) struct OldRows {
    pub(crate) user: String,
    pub(crate) rows: Vec<(StoreKey, Map<String, Value>, SystemTime, SystemTime)>,
    login: SystemTime,
}

impl OldRows {
    /// Two sessions of a user (one with a duration and a login of its own), one of no user,
    /// one whose `__user` is not a string, one of the user that has expired.
    pub(crate) fn new() -> Self {
        let user = format!("old{}", fresh_key().as_str());
        let now = now_ms();
        let (created, login) = (now - 10 * MINUTE, now - 5 * MINUTE);
        let rows = vec![
            (
                fresh_key(),
                object(json!({ USER_KEY: user, DURATION_KEY: 90_000, LOGIN_KEY: ms(login) })),
                created,
                now + 20 * MINUTE,
            ),
            (
                fresh_key(),
                object(json!({ USER_KEY: user })),
                created,
                now + 10 * MINUTE,
            ),
            (
                fresh_key(),
                object(json!({ "n": 1 })),
                created,
                now + 10 * MINUTE,
            ),
            (
                fresh_key(),
                object(json!({ USER_KEY: 5 })),
                created,
                now + 10 * MINUTE,
            ),
            (
                fresh_key(),
                object(json!({ USER_KEY: user })),
                created,
                now - MINUTE,
            ),
        ];
        Self { user, rows, login }
    }

    /// After `migrate`: the user's two live sessions are listed with their summaries, every
    /// live row reads back, and a row tied by an update is listed too.
    pub(crate) async fn check(&self, store: &dyn SessionStore) {
        let mut listed = store
            .user_sessions(&self.user)
            .await
            .expect("user_sessions");
        listed.sort_by_key(|b| std::cmp::Reverse(b.1.expires_at));
        let [(k0, _, created, expires0), (k1, _, _, expires1), ..] = &self.rows[..] else {
            unreachable!()
        };
        assert_eq!(
            listed,
            [
                (
                    k0.clone(),
                    RecordSummary::new(self.user.clone(), *created, *expires0)
                        .with_duration(Some(Duration::from_secs(90)))
                        .with_login(Some(self.login))
                ),
                (
                    k1.clone(),
                    RecordSummary::new(self.user.clone(), *created, *expires1)
                ),
            ]
        );
        for (key, data, created, expires) in &self.rows[..4] {
            let read = store.read(key).await.expect("read");
            assert_eq!(read, Some(Record::new(data.clone(), *created, *expires)));
        }
        let (key, data, created, _) = &self.rows[2];
        let mut tied = data.clone();
        tied.insert(USER_KEY.into(), json!(self.user));
        let record = Record::new(tied, *created, now_ms() + 30 * MINUTE);
        store
            .write(
                key,
                &record,
                &Changes::new().with_set(USER_KEY),
                WriteMode::Update,
            )
            .await
            .expect("tie");
        let listed = store
            .user_sessions(&self.user)
            .await
            .expect("user_sessions");
        assert_eq!(listed.len(), 3, "{listed:?}");
    }
}

/// Milliseconds since the epoch, for a test that writes rows by hand.
pub(crate) fn millis(time: SystemTime) -> i64 {
    i64::try_from(ms(time)).expect("ms fit")
}
