//! `SqliteStore` against a real SQLite database in a temporary file.

#![cfg(all(feature = "sqlite", feature = "testing"))]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use common::stores;
use serde_json::Map;
use session_engine::store::sqlite::SqliteStore;
use session_engine::testing::assert_conforms;
use session_engine::{Changes, Record, SessionStore};
use tempfile::TempDir;

/// A migrated store in a new database file; the directory goes when the guard drops.
async fn store() -> (SqliteStore, TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
    let store = SqliteStore::open(&url).await.expect("the database opens");
    store.migrate().await.expect("migrate");
    (store, dir)
}

#[tokio::test]
async fn sqlite_store_conforms() {
    let (store, _dir) = store().await;
    assert_conforms(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_changing_different_keys_both_survive() {
    let (store, _dir) = store().await;
    stores::different_keys_both_survive(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r9_a_destroy_racing_a_write_stays_destroyed() {
    let (store, _dir) = store().await;
    stores::destroy_wins_over_a_racing_write(Arc::new(store)).await;
}

#[tokio::test]
async fn odd_keys_survive_delta_writes() {
    let (store, _dir) = store().await;
    stores::odd_keys_survive_delta_writes(Arc::new(store)).await;
}

#[tokio::test]
async fn two_apps_on_one_file_share_sessions() {
    let (first, dir) = store().await;
    let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
    let second = SqliteStore::open(&url).await.expect("the database opens");
    stores::two_instances_share_sessions(Arc::new(first), Arc::new(second)).await;
}

#[tokio::test]
async fn sessions_survive_closing_and_reopening_the_file() {
    let (store, dir) = store().await;
    let app = common::app(stores::engine_on(Arc::new(store.clone())));
    let (cookie, _) = common::new_session(&app).await;
    let second = common::get_with(&app, "/visits", Some(&cookie)).await;
    assert_eq!(second.body, "2");
    store.pool().close().await;
    drop((app, store));

    let path = dir.path().join("sessions.db");
    let reopened = SqliteStore::open(path.to_str().expect("a UTF-8 path"))
        .await
        .expect("the database opens again");
    reopened.migrate().await.expect("migrate is idempotent");
    let app = common::app(stores::engine_on(Arc::new(reopened)));
    let after = common::get_with(&app, "/visits", Some(&second.cookie())).await;
    assert_eq!((after.status, after.body.as_str()), (StatusCode::OK, "3"));
}

#[tokio::test]
async fn migrate_is_idempotent_and_tables_are_separate() {
    let (store, _dir) = store().await;
    store.migrate().await.expect("a second migrate");
    let other = store
        .clone()
        .with_table_name("other_sessions")
        .expect("a valid name");
    other.migrate().await.expect("migrate the other table");
    other.migrate().await.expect("and again");
    let now = SystemTime::now();
    let record = Record::new(Map::new(), now, now + Duration::from_secs(60));
    store
        .write("k", &record, &Changes::replace_all(), false)
        .await
        .expect("insert");
    assert!(other.read("k").await.expect("read").is_none());
    assert!(store.read("k").await.expect("read").is_some());
    assert_eq!(other.table_name(), "other_sessions");
}

#[tokio::test]
async fn bad_table_names_are_refused() {
    let (store, _dir) = store().await;
    for name in [
        "",
        "x; DROP TABLE sessions",
        "a\"b",
        "9lives",
        "schema.table",
    ] {
        let error = store.clone().with_table_name(name).expect_err(name);
        assert!(error.to_string().contains("failed"), "{error}");
    }
}

#[tokio::test]
async fn cleanup_deletes_expired_rows_in_batches() {
    let (store, _guard) = store().await;
    let store = store.with_cleanup_batch(10);
    stores::cleanup_works_in_batches(&store, store.cleanup_one_batch()).await;
}

#[tokio::test]
async fn an_in_memory_database_is_one_database_for_the_whole_pool() {
    for url in ["sqlite::memory:", ":memory:"] {
        let store = SqliteStore::open(url).await.expect("opens");
        store.migrate().await.expect("migrate");
        // Every connection of the pool sees the table and the rows the others wrote.
        assert_conforms(&store).await;
    }
}
