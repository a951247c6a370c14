//! The conformance suite (`session_engine::testing`) catches stores that break the contract of
//! SPEC section 4: wrappers over `MemoryStore`, each with one defect, and exactly the checks
//! each one fails. (`MemoryStore` itself passes: `stores::memory::conformance`.)

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use serde_json::{Map, Value};
use session_engine::testing::{Options, assert_conforms, check_with};
use session_engine::{
    Changes, MemoryStore, Record, RecordSummary, SessionStore, StoreError, StoreFuture, StoreKey,
    Touched, WriteMode,
};

/// Which rule a [`Broken`] store breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Defect {
    /// None: the wrapper is faithful.
    Faithful,
    /// An insert over a live record replaces it.
    InsertOverwrites,
    /// An update of an absent record inserts it.
    UpdateRecreates,
    /// An update rewrites the whole data, whatever the changes say.
    IgnoresDeltas,
    /// An update applies only the first 1,000 keys of its changes.
    DropsKeysPastAThousand,
    /// A read returns a record past its expiry, as long as it was not destroyed.
    ReadReturnsExpired,
    /// A touch moves whatever expiry the record has: not a compare-and-set.
    TouchIgnoresFrom,
    /// A touch reads the record and writes it back whole, in two steps.
    TouchRewritesData,
    /// Destroy answers true, live record or not.
    DestroyAlwaysTrue,
    /// Destroy answers false, live record or not.
    DestroyNeverTrue,
    /// Cleanup removes nothing.
    CleanupDoesNothing,
    /// An update stores the expiry the writing request saw, not the one the updated record
    /// calls for (the rule its write carries is dropped).
    ExpiryFromTheRequest,
    /// Writes drop NUL characters from keys and values, as a backend that refuses them might.
    DropsNuls,
    /// `user_sessions` answers every summary without the record's own idle lifetime.
    SummaryWithoutDuration,
}

/// A `MemoryStore` with one defect.
struct Broken {
    inner: MemoryStore,
    defect: Defect,
    /// For [`Defect::ReadReturnsExpired`]: each record as last written or touched, expired or
    /// not, until destroyed.
    kept: Mutex<HashMap<String, Record>>,
}

impl Broken {
    fn new(defect: Defect) -> Self {
        Self {
            inner: MemoryStore::new(),
            defect,
            kept: Mutex::default(),
        }
    }

    fn kept(&self) -> MutexGuard<'_, HashMap<String, Record>> {
        self.kept.lock().expect("the lock")
    }

    /// Keeps what a successful write left, for [`Defect::ReadReturnsExpired`].
    fn keep(&self, key: &StoreKey, record: &Record) {
        if self.defect == Defect::ReadReturnsExpired {
            let stored = now(self.inner.read(key)).ok().flatten();
            let stored = stored.unwrap_or_else(|| record.clone());
            self.kept().insert(key.as_str().to_owned(), stored);
        }
    }
}

/// The answer of a `MemoryStore` hook, which it gives at once.
fn now<T>(future: StoreFuture<T>) -> Result<T, StoreError> {
    future.into_ready().expect("MemoryStore answers at once")
}

fn strip(text: &str) -> String {
    text.replace('\0', "")
}

/// `data` with every NUL character removed from its keys and string values.
fn without_nuls(data: &Map<String, Value>) -> Map<String, Value> {
    fn value(v: &Value) -> Value {
        match v {
            Value::String(text) => Value::String(strip(text)),
            Value::Array(items) => items.iter().map(value).collect(),
            Value::Object(map) => Value::Object(without_nuls(map)),
            other => other.clone(),
        }
    }
    data.iter().map(|(k, v)| (strip(k), value(v))).collect()
}

/// `changes` with every NUL character removed from the keys it names.
fn without_nuls_in(changes: &Changes) -> Changes {
    if changes.is_replace() {
        return Changes::replace_all();
    }
    let set = changes
        .set_keys()
        .fold(Changes::new(), |c, key| c.with_set(strip(key)));
    changes
        .deleted_keys()
        .fold(set, |c, key| c.with_deleted(strip(key)))
}

/// The first 1,000 keys of `changes`: those set, then those deleted.
fn first_thousand(changes: &Changes) -> Changes {
    let set: Vec<&str> = changes.set_keys().take(1_000).collect();
    let deleted = changes.deleted_keys().take(1_000 - set.len());
    let kept = set.iter().fold(Changes::new(), |c, key| c.with_set(*key));
    deleted.fold(kept, |c, key| c.with_deleted(key))
}

impl SessionStore for Broken {
    fn read(&self, key: &StoreKey) -> StoreFuture<Option<Record>> {
        let found = now(self.inner.read(key));
        match found {
            Ok(None) if self.defect == Defect::ReadReturnsExpired => {
                Ok(self.kept().get(key.as_str()).cloned())
            }
            other => other,
        }
        .into()
    }

    fn write(
        &self,
        key: &StoreKey,
        record: &Record,
        changes: &Changes,
        mode: WriteMode,
    ) -> StoreFuture<SystemTime> {
        let inner = &self.inner;
        let result = match (self.defect, mode) {
            (Defect::InsertOverwrites, WriteMode::Insert) => {
                now(inner.destroy(key)).and_then(|_| now(inner.write(key, record, changes, mode)))
            }
            (Defect::UpdateRecreates, WriteMode::Update) => {
                match now(inner.write(key, record, changes, mode)) {
                    Err(StoreError::Gone) => {
                        let all = Changes::replace_all();
                        now(inner.write(key, record, &all, WriteMode::Insert))
                    }
                    other => other,
                }
            }
            (Defect::IgnoresDeltas, WriteMode::Update) => {
                now(inner.write(key, record, &Changes::replace_all(), mode))
            }
            (Defect::DropsKeysPastAThousand, WriteMode::Update) if !changes.is_replace() => {
                now(inner.write(key, record, &first_thousand(changes), mode))
            }
            (Defect::ExpiryFromTheRequest, WriteMode::Update) => {
                let as_seen =
                    Record::new(record.data.clone(), record.created_at, record.expires_at);
                now(inner.write(key, &as_seen, changes, mode))
            }
            (Defect::DropsNuls, _) => {
                let mut stripped = record.clone();
                stripped.data = without_nuls(&record.data);
                let changes = without_nuls_in(changes);
                now(inner.write(key, &stripped, &changes, mode))
            }
            _ => now(inner.write(key, record, changes, mode)),
        };
        if result.is_ok() {
            self.keep(key, record);
        }
        result.into()
    }

    fn touch(&self, key: &StoreKey, from: SystemTime, to: SystemTime) -> StoreFuture<Touched> {
        let inner = self.inner.clone();
        let result = match self.defect {
            Defect::TouchIgnoresFrom => match now(inner.read(key)) {
                Ok(Some(record)) => now(inner.touch(key, record.expires_at, to)),
                Ok(None) => Err(StoreError::Gone),
                Err(error) => Err(error),
            },
            Defect::TouchRewritesData => {
                let key = key.clone();
                return StoreFuture::boxed(async move {
                    let mut record = now(inner.read(&key))?.ok_or(StoreError::Gone)?;
                    if record.expires_at != from {
                        return Ok(Touched::Superseded);
                    }
                    // Another request may write here; its change is then overwritten.
                    tokio::task::yield_now().await;
                    record.expires_at = to;
                    let all = Changes::replace_all();
                    now(inner.write(&key, &record, &all, WriteMode::Update))?;
                    Ok(Touched::Moved)
                });
            }
            _ => now(inner.touch(key, from, to)),
        };
        if let Ok(Touched::Moved) = result {
            if let Some(kept) = self.kept().get_mut(key.as_str()) {
                kept.expires_at = to;
            }
        }
        result.into()
    }

    fn destroy(&self, key: &StoreKey) -> StoreFuture<bool> {
        self.kept().remove(key.as_str());
        let removed = now(self.inner.destroy(key));
        match self.defect {
            Defect::DestroyAlwaysTrue => removed.map(|_| true),
            Defect::DestroyNeverTrue => removed.map(|_| false),
            _ => removed,
        }
        .into()
    }

    fn cleanup(&self) -> StoreFuture<u64> {
        if self.defect == Defect::CleanupDoesNothing {
            return StoreFuture::ready(Ok(0));
        }
        self.inner.cleanup()
    }

    fn user_sessions(&self, user: &str) -> StoreFuture<Vec<(StoreKey, RecordSummary)>> {
        let listed = now(self.inner.user_sessions(user));
        if self.defect != Defect::SummaryWithoutDuration {
            return listed.into();
        }
        listed
            .map(|list| {
                list.into_iter()
                    .map(|(key, summary)| (key, summary.with_duration(None)))
                    .collect()
            })
            .into()
    }

    /// The checks of `user_sessions` run for the faithful wrapper and the one whose defect is
    /// in them only, so that every other wrapper fails exactly the checks of its own defect.
    fn indexes_users(&self) -> bool {
        matches!(
            self.defect,
            Defect::Faithful | Defect::SummaryWithoutDuration
        )
    }
}

/// The checks `defect` fails, with `options`.
async fn failed_checks(defect: Defect, options: Options) -> Vec<&'static str> {
    match check_with(&Broken::new(defect), options).await {
        Ok(()) => Vec::new(),
        Err(failures) => failures.iter().map(|failure| failure.check).collect(),
    }
}

/// Asserts that the suite fails exactly `expected` for `defect`. `MemoryStore` sweeps expired
/// records by itself, so the wrappers run with `Options::self_expiring()`, as it does.
async fn assert_caught(defect: Defect, expected: &[&str]) {
    let failed = failed_checks(defect, Options::self_expiring()).await;
    assert_eq!(failed, expected, "{defect:?}");
}

#[tokio::test]
async fn a_faithful_wrapper_passes_so_each_failure_below_is_its_defect() {
    assert_caught(Defect::Faithful, &[]).await;
}

#[tokio::test]
async fn r8_suite_catches_an_insert_that_overwrites() {
    assert_caught(Defect::InsertOverwrites, &["insert_never_overwrites"]).await;
}

#[tokio::test]
async fn r9_suite_catches_an_update_that_recreates() {
    let expected = [
        "update_never_recreates",
        "update_after_destroy_is_gone",
        "expired_record_is_gone_for_update_and_touch",
    ];
    assert_caught(Defect::UpdateRecreates, &expected).await;
}

#[tokio::test]
async fn suite_catches_a_store_that_ignores_deltas() {
    // A whole-data write also carries the request's stale view of the custom duration.
    let expected = [
        "update_applies_deltas",
        "concurrent_deltas_both_survive",
        "update_expiry_follows_the_updated_record",
    ];
    assert_caught(Defect::IgnoresDeltas, &expected).await;
}

#[tokio::test]
async fn r17_suite_catches_an_update_that_keeps_the_requests_own_expiry() {
    let expected = ["update_expiry_follows_the_updated_record"];
    assert_caught(Defect::ExpiryFromTheRequest, &expected).await;
}

#[tokio::test]
async fn r20_suite_catches_a_store_that_drops_nul_characters() {
    let expected = ["nul_characters_and_the_deepest_values_round_trip"];
    assert_caught(Defect::DropsNuls, &expected).await;
}

#[tokio::test]
async fn suite_catches_a_listing_whose_summaries_lose_the_duration() {
    let expected = ["users_listing_summarizes_each_record"];
    assert_caught(Defect::SummaryWithoutDuration, &expected).await;
}

#[tokio::test]
async fn suite_catches_a_store_that_drops_keys_past_the_first_thousand_of_a_delta() {
    assert_caught(
        Defect::DropsKeysPastAThousand,
        &["thousands_of_keys_at_once"],
    )
    .await;
}

#[tokio::test]
async fn r6_suite_catches_a_read_that_returns_expired_records() {
    let expected = [
        "read_never_returns_expired",
        "expired_record_is_gone_for_update_and_touch",
        "cleanup_removes_only_expired",
    ];
    assert_caught(Defect::ReadReturnsExpired, &expected).await;
}

#[tokio::test]
async fn r17_suite_catches_a_touch_that_is_not_a_compare_and_set() {
    let expected = [
        "touch_is_a_compare_and_set",
        "touch_after_another_write_is_superseded",
    ];
    assert_caught(Defect::TouchIgnoresFrom, &expected).await;
}

#[tokio::test]
async fn suite_catches_a_touch_that_rewrites_data() {
    assert_caught(Defect::TouchRewritesData, &["touch_never_rewrites_data"]).await;
}

#[tokio::test]
async fn suite_catches_a_destroy_that_always_answers_true() {
    let expected = ["destroy_says_whether_a_live_record_went"];
    assert_caught(Defect::DestroyAlwaysTrue, &expected).await;
}

#[tokio::test]
async fn suite_catches_a_destroy_that_never_answers_true() {
    let expected = ["destroy_says_whether_a_live_record_went"];
    assert_caught(Defect::DestroyNeverTrue, &expected).await;
}

/// With the default options the suite counts what `cleanup` removed. With
/// `Options::self_expiring()` it cannot tell a cleanup that does nothing from a backend that
/// expires records by itself (it only checks that expired records are not read back, which
/// `read` already ensures): that option is for such backends only.
#[tokio::test]
async fn suite_catches_a_cleanup_that_removes_nothing_unless_told_the_store_self_expires() {
    let defect = Defect::CleanupDoesNothing;
    let failed = failed_checks(defect, Options::default()).await;
    assert_eq!(failed, ["cleanup_removes_only_expired"]);
    assert_caught(defect, &[]).await;
}

#[tokio::test]
#[should_panic(expected = "insert_never_overwrites")]
async fn assert_conforms_panics_naming_the_rule_broken() {
    assert_conforms(&Broken::new(Defect::InsertOverwrites)).await;
}
