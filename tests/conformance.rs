//! The conformance suite (`session_engine::testing`) passes for `MemoryStore` and catches
//! stores that break the contract of SPEC section 4.

#![cfg(feature = "testing")]

use std::time::SystemTime;

use async_trait::async_trait;
use session_engine::testing::{Options, assert_conforms, check, check_with};
use session_engine::{Changes, MemoryStore, Record, SessionStore, StoreError};

#[tokio::test]
async fn memory_store_conforms() {
    assert_conforms(&MemoryStore::new()).await;
}

/// Which rule a [`Broken`] store breaks.
#[derive(Clone, Copy, PartialEq)]
enum Defect {
    InsertOverwrites,
    UpdateRecreates,
    ReadReturnsExpired,
    TouchRewritesData,
    IgnoresDeltas,
    CleanupDoesNothing,
}

/// A `MemoryStore` with one defect.
struct Broken {
    inner: MemoryStore,
    defect: Defect,
    /// What `ReadReturnsExpired` serves: every record ever written, never expiring.
    shadow: std::sync::Mutex<std::collections::HashMap<String, Record>>,
}

impl Broken {
    fn new(defect: Defect) -> Self {
        Self {
            inner: MemoryStore::new(),
            defect,
            shadow: Default::default(),
        }
    }
}

#[async_trait]
impl SessionStore for Broken {
    async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
        if self.defect == Defect::ReadReturnsExpired {
            return Ok(self.shadow.lock().unwrap().get(key).cloned());
        }
        self.inner.read(key).await
    }

    async fn write(
        &self,
        key: &str,
        record: &Record,
        changes: &Changes,
        stored: bool,
    ) -> Result<(), StoreError> {
        self.shadow
            .lock()
            .unwrap()
            .insert(key.to_owned(), record.clone());
        match self.defect {
            Defect::InsertOverwrites if !stored => {
                self.inner.destroy(key).await?;
                self.inner.write(key, record, changes, false).await
            }
            Defect::UpdateRecreates if stored => {
                match self.inner.write(key, record, changes, true).await {
                    Err(StoreError::Gone) => {
                        self.inner
                            .write(key, record, &Changes::replace_all(), false)
                            .await
                    }
                    other => other,
                }
            }
            Defect::IgnoresDeltas if stored => {
                self.inner
                    .write(key, record, &Changes::replace_all(), true)
                    .await
            }
            _ => self.inner.write(key, record, changes, stored).await,
        }
    }

    async fn touch(&self, key: &str, expires_at: SystemTime) -> Result<(), StoreError> {
        if self.defect == Defect::TouchRewritesData {
            let Some(mut record) = self.inner.read(key).await? else {
                return Err(StoreError::Gone);
            };
            record.data.insert("touched".into(), true.into());
            record.expires_at = expires_at;
            return self
                .inner
                .write(key, &record, &Changes::replace_all(), true)
                .await;
        }
        self.inner.touch(key, expires_at).await
    }

    async fn destroy(&self, key: &str) -> Result<(), StoreError> {
        self.inner.destroy(key).await
    }

    async fn cleanup(&self) -> Result<u64, StoreError> {
        if self.defect == Defect::CleanupDoesNothing {
            return Ok(0);
        }
        self.inner.cleanup().await
    }
}

async fn failed_checks(defect: Defect) -> Vec<&'static str> {
    let failures = check(&Broken::new(defect))
        .await
        .expect_err("a broken store must fail the suite");
    failures.iter().map(|failure| failure.check).collect()
}

#[tokio::test]
async fn r8_suite_catches_an_insert_that_overwrites() {
    assert_eq!(
        failed_checks(Defect::InsertOverwrites).await,
        ["insert_never_overwrites"]
    );
}

#[tokio::test]
async fn r9_suite_catches_an_update_that_recreates() {
    let failed = failed_checks(Defect::UpdateRecreates).await;
    assert!(failed.contains(&"update_never_recreates"), "{failed:?}");
    assert!(
        failed.contains(&"update_after_destroy_is_gone"),
        "{failed:?}"
    );
}

#[tokio::test]
async fn r6_suite_catches_a_read_that_returns_expired_records() {
    let failed = failed_checks(Defect::ReadReturnsExpired).await;
    assert!(failed.contains(&"read_never_returns_expired"), "{failed:?}");
}

#[tokio::test]
async fn suite_catches_a_touch_that_rewrites_data() {
    let failed = failed_checks(Defect::TouchRewritesData).await;
    assert!(failed.contains(&"touch_moves_expiry_only"), "{failed:?}");
}

#[tokio::test]
async fn suite_catches_a_store_that_ignores_deltas() {
    let failed = failed_checks(Defect::IgnoresDeltas).await;
    assert!(failed.contains(&"update_applies_deltas"), "{failed:?}");
}

#[tokio::test]
#[should_panic(expected = "insert_never_overwrites")]
async fn assert_conforms_panics_with_the_rule_broken() {
    assert_conforms(&Broken::new(Defect::InsertOverwrites)).await;
}

#[tokio::test]
async fn suite_catches_a_cleanup_that_removes_nothing() {
    assert_eq!(
        failed_checks(Defect::CleanupDoesNothing).await,
        ["cleanup_removes_only_expired"]
    );
    // A backend that expires records by itself may find nothing to clean up.
    let store = Broken::new(Defect::CleanupDoesNothing);
    assert_eq!(check_with(&store, Options::self_expiring()).await, Ok(()));
}
