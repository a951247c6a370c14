//! The store conformance suite: checks every rule of the storage contract against any
//! [`SessionStore`].
//!
//! Every store in this crate runs it, and a custom store can too:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = session_engine::MemoryStore::new();
//! session_engine::testing::assert_conforms(&store).await;
//! # }
//! ```
//!
//! Each check uses fresh random keys, so the suite can run against a shared server, and in
//! parallel with itself. It needs a tokio runtime with the time driver, and real time (not
//! `start_paused`): one check waits for a record to expire in the store. A run takes about
//! three seconds.

use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::store::{Changes, MAX_ID_LEN, Record, SessionStore, StoreError, is_valid_id, random_id};

/// A check that a store failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The check's name, such as `insert_never_overwrites`.
    pub check: &'static str,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.check, self.message)
    }
}

type CheckResult = Result<(), String>;

/// What the suite may expect of a store beyond the contract's common core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// The backend removes expired records by itself (Redis key expiry, for one), so
    /// `cleanup` may find nothing to remove and return 0. When false, `cleanup` must count
    /// the expired records it removed.
    pub self_expiring: bool,
}

impl Options {
    /// Options for a store whose backend removes expired records by itself.
    pub fn self_expiring() -> Self {
        Self {
            self_expiring: true,
        }
    }
}

/// Runs every check against `store` with the default [`Options`]; returns the failures.
pub async fn check(store: &dyn SessionStore) -> Result<(), Vec<Failure>> {
    check_with(store, Options::default()).await
}

/// Runs every check against `store`; returns the failures, if any.
pub async fn check_with(store: &dyn SessionStore, options: Options) -> Result<(), Vec<Failure>> {
    let mut failures = Vec::new();
    macro_rules! run {
        ($($name:ident),* $(,)?) => {
            $(
                if let Err(message) = $name(store, options).await {
                    failures.push(Failure { check: stringify!($name), message });
                }
            )*
        };
    }
    run!(
        id_hook_makes_valid_distinct_ids,
        read_of_unknown_key_is_none,
        insert_then_read_round_trips,
        longest_ids_are_kept,
        insert_never_overwrites,
        update_never_recreates,
        update_after_destroy_is_gone,
        update_applies_deltas,
        concurrent_deltas_both_survive,
        update_replaces_all_data,
        update_keeps_created_at,
        touch_moves_expiry_only,
        touch_never_recreates,
        touch_never_rewrites_data,
        destroy_removes_and_absent_is_fine,
        read_never_returns_expired,
        expired_record_is_gone_for_update_and_touch,
        insert_over_expired_record_succeeds,
        cleanup_removes_only_expired,
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// Runs every check against `store` and panics with the list of failures, if any.
///
/// # Panics
///
/// When the store breaks a rule of the contract.
pub async fn assert_conforms(store: &dyn SessionStore) {
    assert_conforms_with(store, Options::default()).await;
}

/// [`assert_conforms`] with [`Options`].
///
/// # Panics
///
/// When the store breaks a rule of the contract.
pub async fn assert_conforms_with(store: &dyn SessionStore, options: Options) {
    if let Err(failures) = check_with(store, options).await {
        let list: Vec<String> = failures.iter().map(ToString::to_string).collect();
        panic!(
            "the store breaks {} rule(s) of the contract:\n  {}",
            list.len(),
            list.join("\n  ")
        );
    }
}

// ---- helpers ----

fn key() -> String {
    format!("conformance-{}", random_id().expect("the OS CSPRNG works"))
}

/// Now, at millisecond precision (what every store keeps at least).
fn now() -> SystemTime {
    ms(SystemTime::now())
}

fn ms(time: SystemTime) -> SystemTime {
    let millis = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

fn record(data: Value, expires_in: Duration) -> Record {
    let now = now();
    Record::new(object(data), now, now + expires_in)
}

fn expired(data: Value) -> Record {
    let now = now();
    Record::new(
        object(data),
        now - Duration::from_secs(60),
        now - Duration::from_secs(1),
    )
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

const HOUR: Duration = Duration::from_secs(3600);

/// How long one hook may take before the suite calls it hung.
const LIMIT: Duration = Duration::from_secs(10);

async fn timed<T>(
    what: &str,
    hook: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, String> {
    match tokio::time::timeout(LIMIT, hook).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(format!("{what} failed: {error} ({error:?})")),
        Err(_) => Err(format!("{what} did not answer within {LIMIT:?}")),
    }
}

async fn insert(store: &dyn SessionStore, key: &str, record: &Record) -> CheckResult {
    timed(
        "insert",
        store.write(key, record, &Changes::replace_all(), false),
    )
    .await
}

async fn read(store: &dyn SessionStore, key: &str) -> Result<Option<Record>, String> {
    timed("read", store.read(key)).await
}

async fn read_data(store: &dyn SessionStore, key: &str) -> Result<Map<String, Value>, String> {
    read(store, key)
        .await?
        .map(|record| record.data)
        .ok_or_else(|| "the record is missing".to_owned())
}

fn expect(condition: bool, message: impl FnOnce() -> String) -> CheckResult {
    if condition { Ok(()) } else { Err(message()) }
}

fn within(a: SystemTime, b: SystemTime, tolerance: Duration) -> bool {
    let diff = a.duration_since(b).unwrap_or_else(|e| e.duration());
    diff <= tolerance
}

/// Creation times are kept as written, to the millisecond.
fn same_time(a: SystemTime, b: SystemTime) -> bool {
    within(a, b, Duration::from_millis(1))
}

/// Expiries may be kept as a time to live (as Redis does), which drifts by a round trip.
fn same_expiry(a: SystemTime, b: SystemTime) -> bool {
    within(a, b, Duration::from_secs(1))
}

async fn update(
    store: &dyn SessionStore,
    key: &str,
    record: &Record,
    changes: &Changes,
) -> Result<Result<(), StoreError>, String> {
    match tokio::time::timeout(LIMIT, store.write(key, record, changes, true)).await {
        Ok(result) => Ok(result),
        Err(_) => Err(format!("an update did not answer within {LIMIT:?}")),
    }
}

async fn touch(
    store: &dyn SessionStore,
    key: &str,
    expires_at: SystemTime,
) -> Result<Result<(), StoreError>, String> {
    match tokio::time::timeout(LIMIT, store.touch(key, expires_at)).await {
        Ok(result) => Ok(result),
        Err(_) => Err(format!("a touch did not answer within {LIMIT:?}")),
    }
}

fn succeeded(what: &str, result: Result<(), StoreError>) -> CheckResult {
    result.map_err(|error| format!("{what} failed: {error} ({error:?})"))
}

fn expect_gone(what: &str, result: Result<(), StoreError>) -> CheckResult {
    match result {
        Err(StoreError::Gone) => Ok(()),
        Ok(()) => Err(format!("{what} succeeded; it must fail with Gone")),
        Err(other) => Err(format!("{what} failed with {other:?}, not Gone")),
    }
}

// ---- the checks ----

async fn id_hook_makes_valid_distinct_ids(store: &dyn SessionStore, _: Options) -> CheckResult {
    let mut ids = std::collections::HashSet::new();
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

async fn read_of_unknown_key_is_none(store: &dyn SessionStore, _: Options) -> CheckResult {
    let found = read(store, &key()).await?;
    expect(found.is_none(), || {
        "read returned a record for a key never written".to_owned()
    })
}

async fn insert_then_read_round_trips(store: &dyn SessionStore, _: Options) -> CheckResult {
    let key = key();
    let data = json!({
        "n": 1, "f": 1.5, "s": "héllo \"quoted\" \u{1F600}", "t": true, "z": null,
        "a": [1, "two", {"three": 3}], "o": {"nested": {"deep": [true]}},
        "__cust_dur": 60000, "big": 9_007_199_254_740_993_u64, "neg": -5
    });
    let written = record(data, HOUR);
    insert(store, &key, &written).await?;
    let found = read(store, &key)
        .await?
        .ok_or("the inserted record is missing")?;
    expect(found.data == written.data, || {
        format!(
            "data changed: wrote {:?}, read {:?}",
            written.data, found.data
        )
    })?;
    expect(same_expiry(found.expires_at, written.expires_at), || {
        format!(
            "expiry changed: wrote {:?}, read {:?}",
            written.expires_at, found.expires_at
        )
    })?;
    expect(same_time(found.created_at, written.created_at), || {
        format!(
            "creation changed: wrote {:?}, read {:?}",
            written.created_at, found.created_at
        )
    })
}

async fn longest_ids_are_kept(store: &dyn SessionStore, _: Options) -> CheckResult {
    // With `hash_ids(false)` a store sees raw ids, up to 128 characters.
    let mut key = key();
    while key.len() < MAX_ID_LEN {
        key.push('x');
    }
    key.truncate(MAX_ID_LEN);
    let mut other = key.clone();
    other.pop();
    other.push('y');
    insert(store, &key, &record(json!({"which": "long"}), HOUR)).await?;
    insert(store, &other, &record(json!({"which": "other"}), HOUR)).await?;
    let data = read_data(store, &key).await?;
    expect(data.get("which") == Some(&json!("long")), || {
        format!("a {MAX_ID_LEN}-character key read back {data:?}")
    })
}

async fn insert_never_overwrites(store: &dyn SessionStore, _: Options) -> CheckResult {
    let key = key();
    insert(store, &key, &record(json!({"owner": "first"}), HOUR)).await?;
    let second = record(json!({"owner": "second"}), HOUR);
    let replace = Changes::replace_all();
    let insert = store.write(&key, &second, &replace, false);
    match tokio::time::timeout(LIMIT, insert).await {
        Ok(Err(StoreError::IdTaken)) => {}
        Ok(Ok(())) => return Err("an insert over a live record succeeded".to_owned()),
        Ok(Err(other)) => {
            return Err(format!(
                "an insert over a live record failed with {other:?}, not IdTaken"
            ));
        }
        Err(_) => return Err(format!("an insert did not answer within {LIMIT:?}")),
    }
    let data = read_data(store, &key).await?;
    expect(data.get("owner") == Some(&json!("first")), || {
        format!("the first record was overwritten: {data:?}")
    })
}

async fn update_never_recreates(store: &dyn SessionStore, _: Options) -> CheckResult {
    let key = key();
    let record = record(json!({"a": 1}), HOUR);
    for changes in [Changes::new().with_set("a"), Changes::replace_all()] {
        let result = update(store, &key, &record, &changes).await?;
        expect_gone("an update of an absent record", result)?;
    }
    let found = read(store, &key).await?;
    expect(found.is_none(), || {
        "an update recreated an absent record".to_owned()
    })
}

async fn update_after_destroy_is_gone(store: &dyn SessionStore, _: Options) -> CheckResult {
    let key = key();
    insert(store, &key, &record(json!({"a": 1}), HOUR)).await?;
    timed("destroy", store.destroy(&key)).await?;
    let record = record(json!({"a": 2}), HOUR);
    for changes in [Changes::new().with_set("a"), Changes::replace_all()] {
        let result = update(store, &key, &record, &changes).await?;
        expect_gone("an update after destroy", result)?;
    }
    let found = read(store, &key).await?;
    expect(found.is_none(), || {
        "an update after destroy resurrected the record".to_owned()
    })
}

async fn update_applies_deltas(store: &dyn SessionStore, _: Options) -> CheckResult {
    let key = key();
    let first = json!({"keep": 1, "change": 1, "drop": 1});
    insert(store, &key, &record(first, HOUR)).await?;
    // The request's view holds a stale `keep`; only the changed keys may be written.
    let record = record(json!({"keep": "stale", "change": 2, "add": 3}), HOUR);
    let changes = Changes::new()
        .with_set("change")
        .with_set("add")
        .with_deleted("drop");
    succeeded("update", update(store, &key, &record, &changes).await?)?;
    let data = read_data(store, &key).await?;
    let want = object(json!({"keep": 1, "change": 2, "add": 3}));
    expect(data == want, || {
        format!("after a delta update: {data:?}, want {want:?}")
    })
}

async fn concurrent_deltas_both_survive(store: &dyn SessionStore, _: Options) -> CheckResult {
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
        succeeded("update", one?)?;
        succeeded("update", two?)?;
        let data = read_data(store, &key).await?;
        let want = object(json!({"a": 1, "b": 1}));
        expect(data == want, || {
            format!("two updates of different keys gave {data:?}, want {want:?}")
        })?;
    }
    Ok(())
}

async fn update_replaces_all_data(store: &dyn SessionStore, _: Options) -> CheckResult {
    let key = key();
    insert(store, &key, &record(json!({"old": 1, "both": 1}), HOUR)).await?;
    let record = record(json!({"both": 2, "new": 2}), HOUR);
    succeeded(
        "update",
        update(store, &key, &record, &Changes::replace_all()).await?,
    )?;
    let data = read_data(store, &key).await?;
    expect(data == record.data, || {
        format!("after a replacement: {data:?}, want {:?}", record.data)
    })
}

async fn update_keeps_created_at(store: &dyn SessionStore, _: Options) -> CheckResult {
    let key = key();
    let first = record(json!({}), HOUR);
    insert(store, &key, &first).await?;
    let mut record = record(json!({"a": 1}), 2 * HOUR);
    record.created_at = first.created_at + HOUR;
    succeeded(
        "update",
        update(store, &key, &record, &Changes::new().with_set("a")).await?,
    )?;
    let found = read(store, &key).await?.ok_or("the record is missing")?;
    expect(same_time(found.created_at, first.created_at), || {
        format!(
            "an update moved created_at from {:?} to {:?}",
            first.created_at, found.created_at
        )
    })?;
    expect(same_expiry(found.expires_at, record.expires_at), || {
        format!(
            "an update did not move the expiry to {:?}: {:?}",
            record.expires_at, found.expires_at
        )
    })
}

async fn touch_moves_expiry_only(store: &dyn SessionStore, _: Options) -> CheckResult {
    let key = key();
    let first = record(json!({"a": 1}), HOUR);
    insert(store, &key, &first).await?;
    let later = first.expires_at + HOUR;
    succeeded("touch", touch(store, &key, later).await?)?;
    let found = read(store, &key)
        .await?
        .ok_or("the touched record is missing")?;
    expect(same_expiry(found.expires_at, later), || {
        format!(
            "touch did not move the expiry to {later:?}: {:?}",
            found.expires_at
        )
    })?;
    expect(found.data == first.data, || {
        format!("touch changed the data: {:?}", found.data)
    })?;
    expect(same_time(found.created_at, first.created_at), || {
        "touch changed created_at".to_owned()
    })
}

async fn touch_never_recreates(store: &dyn SessionStore, _: Options) -> CheckResult {
    let key = key();
    expect_gone(
        "a touch of an absent record",
        touch(store, &key, now() + HOUR).await?,
    )?;
    insert(store, &key, &record(json!({}), HOUR)).await?;
    timed("destroy", store.destroy(&key)).await?;
    expect_gone(
        "a touch after destroy",
        touch(store, &key, now() + HOUR).await?,
    )?;
    let found = read(store, &key).await?;
    expect(found.is_none(), || "a touch recreated a record".to_owned())
}

async fn touch_never_rewrites_data(store: &dyn SessionStore, _: Options) -> CheckResult {
    // A touch that reads the record and writes it back loses an update that lands in
    // between. Against a server the two overlap; each round must keep the update.
    for round in 0..10 {
        let key = key();
        insert(store, &key, &record(json!({"n": 0}), HOUR)).await?;
        let changed = record(json!({"n": round + 1}), HOUR);
        let set_n = Changes::new().with_set("n");
        let (touched, updated) = tokio::join!(
            touch(store, &key, now() + 2 * HOUR),
            update(store, &key, &changed, &set_n),
        );
        succeeded("touch", touched?)?;
        succeeded("update", updated?)?;
        let data = read_data(store, &key).await?;
        expect(data.get("n") == Some(&json!(round + 1)), || {
            format!("an update that raced a touch was lost: {data:?}")
        })?;
    }
    Ok(())
}

async fn destroy_removes_and_absent_is_fine(store: &dyn SessionStore, _: Options) -> CheckResult {
    let key = key();
    let other = self::key();
    insert(store, &key, &record(json!({"a": 1}), HOUR)).await?;
    insert(store, &other, &record(json!({"b": 1}), HOUR)).await?;
    timed("destroy", store.destroy(&key)).await?;
    expect(read(store, &key).await?.is_none(), || {
        "destroy left the record".to_owned()
    })?;
    expect(read(store, &other).await?.is_some(), || {
        "destroy removed another record".to_owned()
    })?;
    timed("destroy of an absent record", store.destroy(&key)).await?;
    // The key is free again.
    let again = record(json!({"again": true}), HOUR);
    insert(store, &key, &again).await?;
    let data = read_data(store, &key).await?;
    expect(data == again.data, || {
        format!("an insert after destroy read back {data:?}")
    })
}

async fn read_never_returns_expired(store: &dyn SessionStore, _: Options) -> CheckResult {
    let key = key();
    insert(store, &key, &expired(json!({"a": 1}))).await?;
    expect(read(store, &key).await?.is_none(), || {
        "read returned an expired record".to_owned()
    })?;
    let key = self::key();
    insert(store, &key, &record(json!({"a": 1}), HOUR)).await?;
    succeeded("touch", touch(store, &key, now() - HOUR).await?)?;
    expect(read(store, &key).await?.is_none(), || {
        "read returned a record touched to an expiry in the past".to_owned()
    })?;
    // A record that expires while it is held. Real time: this needs an unpaused clock.
    let key = self::key();
    insert(
        store,
        &key,
        &record(json!({"a": 1}), Duration::from_millis(1500)),
    )
    .await?;
    expect(read(store, &key).await?.is_some(), || {
        "a live record is missing".to_owned()
    })?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    expect(read(store, &key).await?.is_none(), || {
        "read returned a record after it expired".to_owned()
    })
}

async fn expired_record_is_gone_for_update_and_touch(
    store: &dyn SessionStore,
    _: Options,
) -> CheckResult {
    let key = key();
    insert(store, &key, &expired(json!({"a": 1}))).await?;
    let record = record(json!({"a": 2}), HOUR);
    for changes in [Changes::new().with_set("a"), Changes::replace_all()] {
        let result = update(store, &key, &record, &changes).await?;
        expect_gone("an update of an expired record", result)?;
    }
    let result = touch(store, &key, now() + HOUR).await?;
    expect_gone("a touch of an expired record", result)?;
    expect(read(store, &key).await?.is_none(), || {
        "an expired record came back".to_owned()
    })
}

async fn insert_over_expired_record_succeeds(store: &dyn SessionStore, _: Options) -> CheckResult {
    let key = key();
    insert(store, &key, &expired(json!({"old": 1}))).await?;
    let fresh = record(json!({"new": 1}), HOUR);
    insert(store, &key, &fresh).await?;
    let data = read_data(store, &key).await?;
    expect(data == fresh.data, || {
        format!("an insert over an expired record left {data:?}")
    })
}

async fn cleanup_removes_only_expired(store: &dyn SessionStore, options: Options) -> CheckResult {
    let live = key();
    insert(store, &live, &record(json!({"live": true}), HOUR)).await?;
    let dead: Vec<String> = (0..3).map(|_| key()).collect();
    for key in &dead {
        insert(store, key, &expired(json!({}))).await?;
    }
    let removed = timed("cleanup", store.cleanup()).await?;
    if !options.self_expiring {
        // Others may share the store, so more may go, but never fewer than ours.
        expect(removed >= 3, || {
            format!("cleanup removed {removed} records; at least the 3 expired ones must go")
        })?;
    }
    for key in &dead {
        expect(read(store, key).await?.is_none(), || {
            "an expired record survived cleanup".to_owned()
        })?;
    }
    expect(read(store, &live).await?.is_some(), || {
        "cleanup removed a live record".to_owned()
    })
}
