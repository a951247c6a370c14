//! The checks of the conformance suite, one function per rule (in `writes`, `expiry` and
//! `users`), and their helpers.

mod expiry;
mod users;
mod writes;

use expiry::*;
use users::*;
use writes::*;

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::{Failure, Options};
use crate::store::{
    Changes, DURATION_KEY, ExpiryRule, LOGIN_KEY, MAX_DEPTH, MAX_ID_LEN, Record, SessionStore,
    StoreError, StoreKey, Touched, WriteMode, is_valid_id, random_id, to_ms,
};

type CheckResult = Result<(), String>;

/// Runs every check; returns the failures.
pub(super) async fn run(store: &dyn SessionStore, options: Options) -> Vec<Failure> {
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
        thousands_of_keys_at_once,
        touch_moves_expiry_only,
        touch_is_a_compare_and_set,
        touch_after_another_write_is_superseded,
        touch_never_recreates,
        touch_never_rewrites_data,
        destroy_says_whether_a_live_record_went,
        read_never_returns_expired,
        expired_record_is_gone_for_update_and_touch,
        insert_over_expired_record_succeeds,
        cleanup_removes_only_expired,
        update_expiry_follows_the_updated_record,
        nul_characters_and_the_deepest_values_round_trip,
    );
    // `user_sessions` is optional: checked where the store says it has it.
    if store.indexes_users() {
        run!(
            users_every_tied_record_is_listed_and_no_other,
            users_updates_tie_move_and_untie,
            users_destroyed_expired_and_rolled_records_leave_the_list,
            users_listing_summarizes_each_record,
        );
    }
    failures
}

// ---- helpers ----

fn key() -> StoreKey {
    StoreKey::from(format!(
        "conformance-{}",
        random_id().expect("the OS CSPRNG works")
    ))
}

/// Now, to the millisecond (what every store keeps).
fn now() -> SystemTime {
    let millis = SystemTime::now()
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

/// The hook's answer, or why it has none: it did not answer in time.
async fn answer<T>(
    what: &str,
    hook: impl Future<Output = Result<T, StoreError>>,
) -> Result<Result<T, StoreError>, String> {
    tokio::time::timeout(LIMIT, hook)
        .await
        .map_err(|_| format!("{what} did not answer within {LIMIT:?}"))
}

/// The hook's value; an error is a failure of the check.
async fn timed<T>(
    what: &str,
    hook: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, String> {
    answer(what, hook)
        .await?
        .map_err(|error| format!("{what} failed: {error} ({error:?})"))
}

async fn insert(store: &dyn SessionStore, key: &StoreKey, record: &Record) -> CheckResult {
    let changes = Changes::replace_all();
    let expires_at = timed(
        "insert",
        store.write(key, record, &changes, WriteMode::Insert),
    )
    .await?;
    same_time(
        "the expiry an insert returns",
        expires_at,
        record.expires_at,
    )
}

async fn update(
    store: &dyn SessionStore,
    key: &StoreKey,
    record: &Record,
    changes: &Changes,
) -> Result<Result<SystemTime, StoreError>, String> {
    answer(
        "an update",
        store.write(key, record, changes, WriteMode::Update),
    )
    .await
}

async fn touch(
    store: &dyn SessionStore,
    key: &StoreKey,
    from: SystemTime,
    to: SystemTime,
) -> Result<Result<Touched, StoreError>, String> {
    answer("a touch", store.touch(key, from, to)).await
}

async fn destroy(store: &dyn SessionStore, key: &StoreKey) -> Result<bool, String> {
    timed("destroy", store.destroy(key)).await
}

async fn read(store: &dyn SessionStore, key: &StoreKey) -> Result<Option<Record>, String> {
    timed("read", store.read(key)).await
}

async fn read_record(store: &dyn SessionStore, key: &StoreKey) -> Result<Record, String> {
    read(store, key)
        .await?
        .ok_or_else(|| "the record is missing".to_owned())
}

async fn read_data(store: &dyn SessionStore, key: &StoreKey) -> Result<Map<String, Value>, String> {
    Ok(read_record(store, key).await?.data)
}

fn expect(condition: bool, message: impl FnOnce() -> String) -> CheckResult {
    if condition { Ok(()) } else { Err(message()) }
}

fn expect_ok<T>(what: &str, result: Result<T, StoreError>) -> Result<T, String> {
    result.map_err(|error| format!("{what} failed: {error} ({error:?})"))
}

fn expect_gone<T: std::fmt::Debug>(what: &str, result: Result<T, StoreError>) -> CheckResult {
    match result {
        Err(StoreError::Gone) => Ok(()),
        Ok(value) => Err(format!("{what} answered {value:?}; it must fail with Gone")),
        Err(other) => Err(format!("{what} failed with {other:?}, not Gone")),
    }
}

/// Times are kept to the millisecond, exactly: a touch compares the expiry it is given with
/// the one the store holds.
fn same_time(what: &str, found: SystemTime, want: SystemTime) -> CheckResult {
    expect(found == want, || {
        format!("{what} is {found:?}, want {want:?}")
    })
}
