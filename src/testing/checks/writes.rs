//! Checks of the ids, reads, inserts and updates.

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use super::*;

pub(super) async fn id_hook_makes_valid_distinct_ids(
    store: &dyn SessionStore,
    _: Options,
) -> CheckResult {
    let mut ids = HashSet::new();
    for _ in 0..200 {
        let id = timed("id", store.id()).await?;
        expect(is_valid_id(&id), || format!("id {id:?} is not a valid id"))?;
        expect(id.len() >= 22, || {
            format!("id {id:?} is shorter than 128 bits of base64")
        })?;
        expect(ids.insert(id), || "the id hook repeated an id".to_owned())?;
    }
    Ok(())
}

pub(super) async fn read_of_unknown_key_is_none(
    store: &dyn SessionStore,
    _: Options,
) -> CheckResult {
    let found = read(store, &key()).await?;
    expect(found.is_none(), || {
        "read returned a record for a key never written".to_owned()
    })
}

pub(super) async fn insert_then_read_round_trips(
    store: &dyn SessionStore,
    _: Options,
) -> CheckResult {
    let key = key();
    let data = json!({
        "n": 1, "f": 1.5, "s": "héllo \"quoted\" \u{1F600}", "t": true, "z": null,
        "a": [1, "two", {"three": 3}], "o": {"nested": {"deep": [true]}},
        "__cust_dur": 60000, "big": 9_007_199_254_740_993_u64, "neg": -5
    });
    let written = record(data, HOUR);
    insert(store, &key, &written).await?;
    let found = read_record(store, &key).await?;
    expect(found.data == written.data, || {
        format!(
            "data changed: wrote {:?}, read {:?}",
            written.data, found.data
        )
    })?;
    same_time("the expiry read back", found.expires_at, written.expires_at)?;
    same_time(
        "the creation read back",
        found.created_at,
        written.created_at,
    )
}

pub(super) async fn longest_ids_are_kept(store: &dyn SessionStore, _: Options) -> CheckResult {
    // With `hash_ids(false)` a store sees raw ids, up to 128 characters.
    let mut long = key().as_str().to_owned();
    while long.len() < MAX_ID_LEN {
        long.push('x');
    }
    long.truncate(MAX_ID_LEN);
    let mut other = long.clone();
    other.pop();
    other.push('y');
    let (long, other) = (StoreKey::from(long), StoreKey::from(other));
    insert(store, &long, &record(json!({"which": "long"}), HOUR)).await?;
    insert(store, &other, &record(json!({"which": "other"}), HOUR)).await?;
    let data = read_data(store, &long).await?;
    expect(data.get("which") == Some(&json!("long")), || {
        format!("a {MAX_ID_LEN}-character key read back {data:?}")
    })
}

pub(super) async fn insert_never_overwrites(store: &dyn SessionStore, _: Options) -> CheckResult {
    let key = key();
    insert(store, &key, &record(json!({"owner": "first"}), HOUR)).await?;
    let second = record(json!({"owner": "second"}), HOUR);
    let replace = Changes::replace_all();
    match answer(
        "an insert",
        store.write(&key, &second, &replace, WriteMode::Insert),
    )
    .await?
    {
        Err(StoreError::IdTaken) => {}
        Ok(_) => return Err("an insert over a live record succeeded".to_owned()),
        Err(other) => {
            return Err(format!(
                "an insert over a live record failed with {other:?}, not IdTaken"
            ));
        }
    }
    let data = read_data(store, &key).await?;
    expect(data.get("owner") == Some(&json!("first")), || {
        format!("the first record was overwritten: {data:?}")
    })
}

pub(super) async fn update_never_recreates(store: &dyn SessionStore, _: Options) -> CheckResult {
    let key = key();
    let record = record(json!({"a": 1}), HOUR);
    for changes in [Changes::new().with_set("a"), Changes::replace_all()] {
        expect_gone(
            "an update of an absent record",
            update(store, &key, &record, &changes).await?,
        )?;
    }
    expect(read(store, &key).await?.is_none(), || {
        "an update recreated an absent record".to_owned()
    })
}

pub(super) async fn update_after_destroy_is_gone(
    store: &dyn SessionStore,
    _: Options,
) -> CheckResult {
    let key = key();
    insert(store, &key, &record(json!({"a": 1}), HOUR)).await?;
    destroy(store, &key).await?;
    let record = record(json!({"a": 2}), HOUR);
    for changes in [Changes::new().with_set("a"), Changes::replace_all()] {
        expect_gone(
            "an update after destroy",
            update(store, &key, &record, &changes).await?,
        )?;
    }
    expect(read(store, &key).await?.is_none(), || {
        "an update after destroy resurrected the record".to_owned()
    })
}

pub(super) async fn update_applies_deltas(store: &dyn SessionStore, _: Options) -> CheckResult {
    let key = key();
    insert(
        store,
        &key,
        &record(json!({"keep": 1, "change": 1, "drop": 1}), HOUR),
    )
    .await?;
    // The request's view holds a stale `keep`; only the changed keys may be written.
    let record = record(json!({"keep": "stale", "change": 2, "add": 3}), HOUR);
    let changes = Changes::new()
        .with_set("change")
        .with_set("add")
        .with_deleted("drop");
    expect_ok("update", update(store, &key, &record, &changes).await?)?;
    let data = read_data(store, &key).await?;
    let want = object(json!({"keep": 1, "change": 2, "add": 3}));
    expect(data == want, || {
        format!("after a delta update: {data:?}, want {want:?}")
    })
}

pub(super) async fn concurrent_deltas_both_survive(
    store: &dyn SessionStore,
    _: Options,
) -> CheckResult {
    // Against a server the two updates overlap; in process they may run one after the other,
    // which must give the same result.
    for _ in 0..5 {
        let key = key();
        insert(store, &key, &record(json!({"a": 0, "b": 0}), HOUR)).await?;
        let first = record(json!({"a": 1, "b": 0}), HOUR);
        let second = record(json!({"a": 0, "b": 1}), HOUR);
        let set_a = Changes::new().with_set("a");
        let set_b = Changes::new().with_set("b");
        let (one, two) = tokio::join!(
            update(store, &key, &first, &set_a),
            update(store, &key, &second, &set_b),
        );
        expect_ok("update", one?)?;
        expect_ok("update", two?)?;
        let data = read_data(store, &key).await?;
        let want = object(json!({"a": 1, "b": 1}));
        expect(data == want, || {
            format!("two updates of different keys gave {data:?}, want {want:?}")
        })?;
    }
    Ok(())
}

pub(super) async fn update_replaces_all_data(store: &dyn SessionStore, _: Options) -> CheckResult {
    let key = key();
    insert(store, &key, &record(json!({"old": 1, "both": 1}), HOUR)).await?;
    let record = record(json!({"both": 2, "new": 2}), HOUR);
    expect_ok(
        "update",
        update(store, &key, &record, &Changes::replace_all()).await?,
    )?;
    let data = read_data(store, &key).await?;
    expect(data == record.data, || {
        format!("after a replacement: {data:?}, want {:?}", record.data)
    })
}

pub(super) async fn update_keeps_created_at(store: &dyn SessionStore, _: Options) -> CheckResult {
    let key = key();
    let first = record(json!({}), HOUR);
    insert(store, &key, &first).await?;
    let mut record = record(json!({"a": 1}), 2 * HOUR);
    record.created_at = first.created_at + HOUR;
    expect_ok(
        "update",
        update(store, &key, &record, &Changes::new().with_set("a")).await?,
    )?;
    let found = read_record(store, &key).await?;
    same_time(
        "created_at after an update",
        found.created_at,
        first.created_at,
    )?;
    same_time(
        "the expiry after an update",
        found.expires_at,
        record.expires_at,
    )
}

/// Thousands of keys written, set and deleted at once, as a large session may be: nothing is
/// lost to a backend's limit on arguments.
pub(super) async fn thousands_of_keys_at_once(store: &dyn SessionStore, _: Options) -> CheckResult {
    const KEYS: usize = 5_000;
    let key = key();
    let mut data: Map<String, Value> = (0..KEYS).map(|i| (format!("k{i}"), json!(i))).collect();
    let first = Record::new(data.clone(), now(), now() + HOUR);
    insert(store, &key, &first).await?;
    expect(read_data(store, &key).await? == data, || {
        format!("an insert of {KEYS} keys did not read back")
    })?;
    let mut changes = Changes::new();
    for i in 0..KEYS {
        data.insert(format!("n{i}"), json!({"i": i}));
        changes = changes.with_set(format!("n{i}"));
        data.remove(&format!("k{i}"));
        changes = changes.with_deleted(format!("k{i}"));
    }
    let second = Record::new(data.clone(), first.created_at, now() + HOUR);
    expect_ok(
        "an update of many keys",
        update(store, &key, &second, &changes).await?,
    )?;
    let found = read_data(store, &key).await?;
    expect(found == data, || {
        let kept = found.keys().filter(|k| k.starts_with('k')).count();
        let set = found.keys().filter(|k| k.starts_with('n')).count();
        format!(
            "after setting {KEYS} keys and deleting {KEYS} in one update: {set} set, {kept} \
             not deleted"
        )
    })
}

/// R17 (v3): an update stores the expiry that the record calls for once the update is applied,
/// not the one the writing request saw. A request that read the record before another one set
/// a custom duration (or logged in) and then wrote another key must not undo that duration.
pub(super) async fn update_expiry_follows_the_updated_record(
    store: &dyn SessionStore,
    _: Options,
) -> CheckResult {
    const IDLE: Duration = Duration::from_secs(30 * 60);
    const OWN: Duration = Duration::from_secs(60);
    let key = key();
    let before = record(json!({"a": 1}), IDLE);
    insert(store, &key, &before).await?;

    // One request sets a custom duration of 60 s.
    let now_a = now();
    let mut a = before.clone();
    a.data.insert(DURATION_KEY.to_owned(), json!(60_000));
    a.expires_at = now_a + OWN;
    let a = a.with_rule(ExpiryRule::new(now_a, IDLE, None));
    let stored = expect_ok(
        "the update that sets the duration",
        update(store, &key, &a, &Changes::new().with_set(DURATION_KEY)).await?,
    )?;
    same_time("the expiry it returns", stored, now_a + OWN)?;

    // A slower request, which read the record before that, writes another key with its own
    // view of the expiry: the engine's 30 minutes.
    let now_b = now();
    let mut b = before.clone();
    b.data.insert("x".to_owned(), json!(2));
    b.expires_at = now_b + IDLE;
    let b = b.with_rule(ExpiryRule::new(now_b, IDLE, None));
    let stored = expect_ok(
        "the slow update of another key",
        update(store, &key, &b, &Changes::new().with_set("x")).await?,
    )?;
    same_time(
        "the expiry the slow update returns (the record's duration, not its own)",
        stored,
        now_b + OWN,
    )?;
    let found = read_record(store, &key).await?;
    same_time("the expiry read after it", found.expires_at, now_b + OWN)?;
    expect(
        found.data.get(DURATION_KEY) == Some(&json!(60_000))
            && found.data.get("x") == Some(&json!(2)),
        || format!("both writes must survive: {:?}", found.data),
    )?;

    // Removing the custom duration brings the engine's back.
    let now_c = now();
    let mut c = found.clone();
    c.data.remove(DURATION_KEY);
    let c = c.with_rule(ExpiryRule::new(now_c, IDLE, None));
    let stored = expect_ok(
        "the update that removes the duration",
        update(store, &key, &c, &Changes::new().with_deleted(DURATION_KEY)).await?,
    )?;
    same_time(
        "the expiry after the duration is removed",
        stored,
        now_c + IDLE,
    )?;

    // The absolute lifetime runs from the last login: a login stored by one request holds
    // for a slower request that saw none, whose own view would end the session sooner.
    const MAX: Duration = Duration::from_secs(3600);
    let key = super::key();
    let created = now() - Duration::from_secs(50 * 60);
    let before = Record::new(object(json!({"a": 1})), created, created + MAX);
    insert(store, &key, &before).await?;
    let now_l = now();
    let mut login = before.clone();
    login.data.insert(LOGIN_KEY.to_owned(), json!(to_ms(now_l)));
    let login = login.with_rule(ExpiryRule::new(now_l, IDLE, Some(MAX)));
    let stored = expect_ok(
        "the update that logs in",
        update(store, &key, &login, &Changes::new().with_set(LOGIN_KEY)).await?,
    )?;
    same_time("the expiry after the login", stored, now_l + IDLE)?;
    let now_s = now();
    let mut slow = before.clone();
    slow.data.insert("x".to_owned(), json!(2));
    slow.expires_at = created + MAX;
    let slow = slow.with_rule(ExpiryRule::new(now_s, IDLE, Some(MAX)));
    let stored = expect_ok(
        "the slow update that saw no login",
        update(store, &key, &slow, &Changes::new().with_set("x")).await?,
    )?;
    same_time(
        "the expiry the slow update returns (capped from the login, not the creation)",
        stored,
        now_s + IDLE,
    )
}

/// R20: any key or value JSON holds round-trips, NUL characters included, and values nested as
/// deep as `Session::set` accepts ([`MAX_DEPTH`]), through an insert and a delta write alike.
pub(super) async fn nul_characters_and_the_deepest_values_round_trip(
    store: &dyn SessionStore,
    _: Options,
) -> CheckResult {
    fn nested(depth: usize) -> Value {
        (1..depth).fold(json!([]), |inner, _| json!({ "d": [inner] }))
    }
    let deepest = (1..MAX_DEPTH).fold(json!([]), |inner, _| json!([inner]));
    let key = key();
    let mut written = record(
        json!({
            "k\u{0}ey": "va\u{0}lue",
            "nul": "\u{0}",
            "nested": {"a\u{0}b": ["\u{0}", {"\u{0}": "\\u0000"}]},
            "lookalike": "\\u0000 is not a NUL",
            "private": "\u{f8ff}\u{e000}\u{0}\u{f8ff}",
            "deep": deepest,
            "deep_objects": nested(MAX_DEPTH / 2),
        }),
        HOUR,
    );
    insert(store, &key, &written).await?;
    let found = read_data(store, &key).await?;
    expect(found == written.data, || {
        format!(
            "an insert changed the data: wrote {:?}, read {:?}",
            written.data, found
        )
    })?;

    // A delta write: a key set, a key with a NUL deleted.
    written.data.remove("k\u{0}ey");
    written
        .data
        .insert("set\u{0}".to_owned(), json!({"v": "\u{0}\u{0}"}));
    let changes = Changes::new().with_deleted("k\u{0}ey").with_set("set\u{0}");
    expect_ok(
        "a delta write",
        update(store, &key, &written, &changes).await?,
    )?;
    let found = read_data(store, &key).await?;
    expect(found == written.data, || {
        format!(
            "a delta write changed the data: want {:?}, read {:?}",
            written.data, found
        )
    })
}
