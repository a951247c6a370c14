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
//! parallel with itself. It needs a tokio runtime with the time driver.

use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::store::{Changes, Record, SessionStore, StoreError, is_valid_id, random_id};

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

/// Runs every check against `store`; returns the failures, if any.
pub async fn check(store: &dyn SessionStore) -> Result<(), Vec<Failure>> {
    let mut failures = Vec::new();
    macro_rules! run {
        ($($name:ident),* $(,)?) => {
            $(
                if let Err(message) = $name(store).await {
                    failures.push(Failure { check: stringify!($name), message });
                }
            )*
        };
    }
    run!(
        id_hook_makes_valid_distinct_ids,
        read_of_unknown_key_is_none,
        insert_then_read_round_trips,
        insert_never_overwrites,
        update_never_recreates,
        update_after_destroy_is_gone,
        update_applies_deltas,
        concurrent_deltas_both_survive,
        update_replaces_all_data,
        update_keeps_created_at,
        touch_moves_expiry_only,
        touch_never_recreates,
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
    if let Err(failures) = check(store).await {
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

async fn timed<T>(
    what: &str,
    hook: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, String> {
    match tokio::time::timeout(Duration::from_secs(10), hook).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(format!("{what} failed: {error} ({error:?})")),
        Err(_) => Err(format!("{what} did not answer within 10 s")),
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

fn close(a: SystemTime, b: SystemTime) -> bool {
    let diff = a
        .duration_since(b)
        .or_else(|e| Ok::<_, ()>(e.duration()))
        .unwrap_or_default();
    diff <= Duration::from_millis(1)
}

// ---- the checks ----

async fn id_hook_makes_valid_distinct_ids(store: &dyn SessionStore) -> CheckResult {
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

async fn read_of_unknown_key_is_none(store: &dyn SessionStore) -> CheckResult {
    let found = read(store, &key()).await?;
    expect(found.is_none(), || {
        "read returned a record for a key never written".to_owned()
    })
}

async fn insert_then_read_round_trips(store: &dyn SessionStore) -> CheckResult {
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
    expect(close(found.expires_at, written.expires_at), || {
        format!(
            "expiry changed: wrote {:?}, read {:?}",
            written.expires_at, found.expires_at
        )
    })?;
    expect(close(found.created_at, written.created_at), || {
        format!(
            "creation changed: wrote {:?}, read {:?}",
            written.created_at, found.created_at
        )
    })
}

async fn insert_never_overwrites(store: &dyn SessionStore) -> CheckResult {
    let key = key();
    insert(store, &key, &record(json!({"owner": "first"}), HOUR)).await?;
    let second = record(json!({"owner": "second"}), HOUR);
    match store
        .write(&key, &second, &Changes::replace_all(), false)
        .await
    {
        Err(StoreError::IdTaken) => {}
        Ok(()) => return Err("an insert over a live record succeeded".to_owned()),
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

async fn update_never_recreates(store: &dyn SessionStore) -> CheckResult {
    let key = key();
    let update = record(json!({"a": 1}), HOUR);
    match store
        .write(&key, &update, &Changes::new().with_set("a"), true)
        .await
    {
        Err(StoreError::Gone) => {}
        Ok(()) => return Err("an update of an absent record succeeded".to_owned()),
        Err(other) => {
            return Err(format!(
                "an update of an absent record failed with {other:?}, not Gone"
            ));
        }
    }
    let found = read(store, &key).await?;
    expect(found.is_none(), || {
        "an update recreated an absent record".to_owned()
    })
}

async fn update_after_destroy_is_gone(store: &dyn SessionStore) -> CheckResult {
    let key = key();
    insert(store, &key, &record(json!({"a": 1}), HOUR)).await?;
    timed("destroy", store.destroy(&key)).await?;
    let update = record(json!({"a": 2}), HOUR);
    for changes in [Changes::new().with_set("a"), Changes::replace_all()] {
        match store.write(&key, &update, &changes, true).await {
            Err(StoreError::Gone) => {}
            other => return Err(format!("an update after destroy gave {other:?}, not Gone")),
        }
    }
    let found = read(store, &key).await?;
    expect(found.is_none(), || {
        "an update after destroy resurrected the record".to_owned()
    })
}

async fn update_applies_deltas(store: &dyn SessionStore) -> CheckResult {
    let key = key();
    insert(
        store,
        &key,
        &record(json!({"keep": 1, "change": 1, "drop": 1}), HOUR),
    )
    .await?;
    // The request's view holds a stale `keep`; only the changed keys may be written.
    let update = record(json!({"keep": "stale", "change": 2, "add": 3}), HOUR);
    let changes = Changes::new()
        .with_set("change")
        .with_set("add")
        .with_deleted("drop");
    timed("update", store.write(&key, &update, &changes, true)).await?;
    let data = read_data(store, &key).await?;
    let want = object(json!({"keep": 1, "change": 2, "add": 3}));
    expect(data == want, || {
        format!("after a delta update: {data:?}, want {want:?}")
    })
}

async fn concurrent_deltas_both_survive(store: &dyn SessionStore) -> CheckResult {
    let key = key();
    insert(store, &key, &record(json!({"a": 0, "b": 0}), HOUR)).await?;
    let first = record(json!({"a": 1, "b": 0}), HOUR);
    let second = record(json!({"a": 0, "b": 1}), HOUR);
    let set_a = Changes::new().with_set("a");
    let set_b = Changes::new().with_set("b");
    let (one, two) = tokio::join!(
        timed("update", store.write(&key, &first, &set_a, true)),
        timed("update", store.write(&key, &second, &set_b, true)),
    );
    one?;
    two?;
    let data = read_data(store, &key).await?;
    let want = object(json!({"a": 1, "b": 1}));
    expect(data == want, || {
        format!("two updates of different keys gave {data:?}, want {want:?}")
    })
}

async fn update_replaces_all_data(store: &dyn SessionStore) -> CheckResult {
    let key = key();
    insert(store, &key, &record(json!({"old": 1, "both": 1}), HOUR)).await?;
    let update = record(json!({"both": 2, "new": 2}), HOUR);
    timed(
        "update",
        store.write(&key, &update, &Changes::replace_all(), true),
    )
    .await?;
    let data = read_data(store, &key).await?;
    expect(data == update.data, || {
        format!("after a replacement: {data:?}, want {:?}", update.data)
    })
}

async fn update_keeps_created_at(store: &dyn SessionStore) -> CheckResult {
    let key = key();
    let first = record(json!({}), HOUR);
    insert(store, &key, &first).await?;
    let mut update = record(json!({"a": 1}), 2 * HOUR);
    update.created_at = first.created_at + HOUR;
    timed(
        "update",
        store.write(&key, &update, &Changes::new().with_set("a"), true),
    )
    .await?;
    let found = read(store, &key).await?.ok_or("the record is missing")?;
    expect(close(found.created_at, first.created_at), || {
        format!(
            "an update moved created_at from {:?} to {:?}",
            first.created_at, found.created_at
        )
    })?;
    expect(close(found.expires_at, update.expires_at), || {
        format!(
            "an update did not move the expiry to {:?}: {:?}",
            update.expires_at, found.expires_at
        )
    })
}

async fn touch_moves_expiry_only(store: &dyn SessionStore) -> CheckResult {
    let key = key();
    let first = record(json!({"a": 1}), HOUR);
    insert(store, &key, &first).await?;
    let later = first.expires_at + HOUR;
    timed("touch", store.touch(&key, later)).await?;
    let found = read(store, &key)
        .await?
        .ok_or("the touched record is missing")?;
    expect(close(found.expires_at, later), || {
        format!(
            "touch did not move the expiry to {later:?}: {:?}",
            found.expires_at
        )
    })?;
    expect(found.data == first.data, || {
        format!("touch changed the data: {:?}", found.data)
    })?;
    expect(close(found.created_at, first.created_at), || {
        "touch changed created_at".to_owned()
    })
}

async fn touch_never_recreates(store: &dyn SessionStore) -> CheckResult {
    let key = key();
    match store.touch(&key, now() + HOUR).await {
        Err(StoreError::Gone) => {}
        other => {
            return Err(format!(
                "a touch of an absent record gave {other:?}, not Gone"
            ));
        }
    }
    insert(store, &key, &record(json!({}), HOUR)).await?;
    timed("destroy", store.destroy(&key)).await?;
    match store.touch(&key, now() + HOUR).await {
        Err(StoreError::Gone) => {}
        other => return Err(format!("a touch after destroy gave {other:?}, not Gone")),
    }
    let found = read(store, &key).await?;
    expect(found.is_none(), || "a touch recreated a record".to_owned())
}

async fn destroy_removes_and_absent_is_fine(store: &dyn SessionStore) -> CheckResult {
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
    timed("destroy of an absent record", store.destroy(&key)).await
}

async fn read_never_returns_expired(store: &dyn SessionStore) -> CheckResult {
    let key = key();
    insert(store, &key, &expired(json!({"a": 1}))).await?;
    expect(read(store, &key).await?.is_none(), || {
        "read returned an expired record".to_owned()
    })?;
    let key = self::key();
    insert(store, &key, &record(json!({"a": 1}), HOUR)).await?;
    timed("touch", store.touch(&key, now() - Duration::from_secs(1))).await?;
    expect(read(store, &key).await?.is_none(), || {
        "read returned a record touched to an expiry in the past".to_owned()
    })?;
    // A record that expires while it is held.
    let key = self::key();
    insert(
        store,
        &key,
        &record(json!({"a": 1}), Duration::from_millis(1200)),
    )
    .await?;
    expect(read(store, &key).await?.is_some(), || {
        "a live record is missing".to_owned()
    })?;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    expect(read(store, &key).await?.is_none(), || {
        "read returned a record after it expired".to_owned()
    })
}

async fn expired_record_is_gone_for_update_and_touch(store: &dyn SessionStore) -> CheckResult {
    let key = key();
    insert(store, &key, &expired(json!({"a": 1}))).await?;
    let update = record(json!({"a": 2}), HOUR);
    match store
        .write(&key, &update, &Changes::new().with_set("a"), true)
        .await
    {
        Err(StoreError::Gone) => {}
        other => {
            return Err(format!(
                "an update of an expired record gave {other:?}, not Gone"
            ));
        }
    }
    match store.touch(&key, now() + HOUR).await {
        Err(StoreError::Gone) => {}
        other => {
            return Err(format!(
                "a touch of an expired record gave {other:?}, not Gone"
            ));
        }
    }
    expect(read(store, &key).await?.is_none(), || {
        "an expired record came back".to_owned()
    })
}

async fn insert_over_expired_record_succeeds(store: &dyn SessionStore) -> CheckResult {
    let key = key();
    insert(store, &key, &expired(json!({"old": 1}))).await?;
    let fresh = record(json!({"new": 1}), HOUR);
    insert(store, &key, &fresh).await?;
    let data = read_data(store, &key).await?;
    expect(data == fresh.data, || {
        format!("an insert over an expired record left {data:?}")
    })
}

async fn cleanup_removes_only_expired(store: &dyn SessionStore) -> CheckResult {
    let live = key();
    insert(store, &live, &record(json!({"live": true}), HOUR)).await?;
    let dead: Vec<String> = (0..3).map(|_| key()).collect();
    for key in &dead {
        insert(store, key, &expired(json!({}))).await?;
    }
    timed("cleanup", store.cleanup()).await?;
    for key in &dead {
        expect(read(store, key).await?.is_none(), || {
            "an expired record survived cleanup".to_owned()
        })?;
    }
    expect(read(store, &live).await?.is_some(), || {
        "cleanup removed a live record".to_owned()
    })
}
