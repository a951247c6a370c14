//! A session store of your own, checked by the conformance suite and plugged into axum.
//!
//! ```sh
//! cargo run --example custom_store --features testing
//! ```
//!
//! `BTreeStore` keeps each record as a JSON string with its creation and expiry times, in a
//! `BTreeMap` behind one mutex. It is deliberately plain; what matters is that every hook keeps
//! the storage contract (see `session_engine::SessionStore`):
//!
//! - an insert (`WriteMode::Insert`) fails with `IdTaken` over a live record, and replaces an
//!   expired one;
//! - an update (`WriteMode::Update`) and a `touch` fail with `Gone` when the record is absent
//!   or expired, and never recreate it;
//! - an update applies only the keys the request changed (`Changes::apply`), so two requests
//!   that change different keys both survive;
//! - a touch is a compare-and-set: it moves the expiry only if the record still has the one
//!   the request read, so a slow request never undoes a newer write;
//! - `destroy` says whether it removed a live record; `read` never returns an expired one;
//! - `user_sessions` (optional, for `track_users`: a user's sessions listed and ended) finds
//!   every live record whose data ties it to the user (`store::user_of`), and no other.
//!
//! Each hook does its check and its change under one lock, never as a read followed by a
//! separate write: that is what makes these rules hold when requests race. A store over a
//! database does the same with one statement (`INSERT … ON CONFLICT`, `UPDATE … WHERE
//! expires_at > now`) or a script.
//!
//! The store answers at once, so each hook returns `StoreFuture::ready(…)`: the engine then
//! finishes a request without allocating a future or arming a timer, exactly as it does for
//! the built-in `MemoryStore`. A store that waits on a network returns
//! `StoreFuture::boxed(async move { … })` instead, with what it needs moved into the future.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use axum::routing::get;
use session_engine::store::{decode_data, encode_data};
use session_engine::{
    Changes, Error, Record, RecordSummary, Session, SessionEngine, SessionLayer, SessionStore,
    StoreError, StoreFuture, StoreKey, Touched, WriteMode,
};
use tower::ServiceExt as _;

/// Sessions in a `BTreeMap`: key → (data as JSON, created, expires), times in Unix
/// milliseconds.
#[derive(Debug, Default)]
struct BTreeStore {
    // A std mutex, not an async one: no hook holds it across an `.await`, and each critical
    // section is a map lookup and a JSON (de)serialization.
    records: Mutex<BTreeMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    data: String,
    created_ms: u64,
    expires_ms: u64,
}

impl BTreeStore {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        // Every change below is a single map operation, so a panic elsewhere while the lock
        // was held cannot have left an entry half-written.
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The live entry under `key`; an expired one is dropped on the way.
    fn live<'m>(records: &'m mut BTreeMap<String, Entry>, key: &str) -> Option<&'m mut Entry> {
        let now = ms(SystemTime::now());
        if records
            .get(key)
            .is_some_and(|entry| entry.expires_ms <= now)
        {
            records.remove(key);
        }
        records.get_mut(key)
    }

    /// The keys the store holds: what a dump of the store would show.
    fn keys(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }
}

fn ms(time: SystemTime) -> u64 {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

impl SessionStore for BTreeStore {
    // `id` keeps its default: 24 random bytes from the OS, as 32 characters of base64url.

    fn read(&self, key: &StoreKey) -> StoreFuture<Option<Record>> {
        let mut records = self.lock();
        let read = Self::live(&mut records, key.as_str())
            .map(|entry| {
                let data = decode_data(entry.data.as_bytes())?;
                Ok(Record::new(
                    data,
                    time(entry.created_ms),
                    time(entry.expires_ms),
                ))
            })
            .transpose();
        StoreFuture::ready(read)
    }

    fn write(
        &self,
        key: &StoreKey,
        record: &Record,
        changes: &Changes,
        mode: WriteMode,
    ) -> StoreFuture<SystemTime> {
        let mut records = self.lock();
        let written = match (mode, Self::live(&mut records, key.as_str())) {
            // Insert over a live record: refuse, never overwrite.
            (WriteMode::Insert, Some(_)) => Err(StoreError::IdTaken),
            (WriteMode::Insert, None) => {
                let entry = Entry {
                    data: encode_data(&record.data),
                    created_ms: ms(record.created_at),
                    expires_ms: ms(record.expires_at),
                };
                records.insert(key.as_str().to_owned(), entry);
                Ok(record.expires_at)
            }
            // Update of an absent or expired record: refuse, never recreate.
            (WriteMode::Update, None) => Err(StoreError::Gone),
            // Update: patch only the changed keys, keep `created_ms`, and set the expiry that
            // the patched data calls for (its custom duration may come from another request).
            (WriteMode::Update, Some(entry)) => {
                decode_data(entry.data.as_bytes()).map(|mut data| {
                    changes.apply(&mut data, &record.data);
                    let expires_at = record.expiry_after(&data);
                    entry.data = encode_data(&data);
                    entry.expires_ms = ms(expires_at);
                    expires_at
                })
            }
        };
        StoreFuture::ready(written)
    }

    fn touch(&self, key: &StoreKey, from: SystemTime, to: SystemTime) -> StoreFuture<Touched> {
        let mut records = self.lock();
        let touched = match Self::live(&mut records, key.as_str()) {
            None => Err(StoreError::Gone),
            // Another request wrote or touched it since this one read it: its expiry stands.
            Some(entry) if entry.expires_ms != ms(from) => Ok(Touched::Superseded),
            Some(entry) => {
                entry.expires_ms = ms(to);
                Ok(Touched::Moved)
            }
        };
        StoreFuture::ready(touched)
    }

    fn destroy(&self, key: &StoreKey) -> StoreFuture<bool> {
        let now = ms(SystemTime::now());
        let removed = self.lock().remove(key.as_str());
        StoreFuture::ready(Ok(removed.is_some_and(|entry| entry.expires_ms > now)))
    }

    fn cleanup(&self) -> StoreFuture<u64> {
        let now = ms(SystemTime::now());
        let mut records = self.lock();
        let before = records.len();
        records.retain(|_, entry| entry.expires_ms > now);
        StoreFuture::ready(Ok((before - records.len()) as u64))
    }

    // A scan of every record, which parses each one: plain, and enough for a small store. A
    // database keeps the user (and what a listing shows) in columns or fields of its own, so
    // that a listing reads no data, and a store that keeps an index beside the records adds a
    // record to it before writing the record, so that a live session is never missing from
    // "log out everywhere".
    fn user_sessions(&self, user: &str) -> StoreFuture<Vec<(StoreKey, RecordSummary)>> {
        let now = ms(SystemTime::now());
        let mut found = Vec::new();
        for (key, entry) in self.lock().iter() {
            // A record that cannot be decoded counts as absent, here as everywhere.
            let Ok(data) = decode_data(entry.data.as_bytes()) else {
                continue;
            };
            let record = Record::new(data, time(entry.created_ms), time(entry.expires_ms));
            match RecordSummary::of(&record) {
                Some(summary) if entry.expires_ms > now && summary.user == user => {
                    found.push((StoreKey::from(key.as_str()), summary));
                }
                _ => {}
            }
        }
        StoreFuture::ready(Ok(found))
    }

    fn indexes_users(&self) -> bool {
        true
    }
}

async fn visits(session: Session) -> Result<String, Error> {
    let visits = session.get::<u64>("visits")?.unwrap_or(0) + 1;
    session.set("visits", visits)?;
    Ok(visits.to_string())
}

/// Sends `GET /visits` with `cookie`; returns the body and the `name=value` part of the
/// `Set-Cookie` the response carried.
async fn get_visits(app: &Router, cookie: Option<&str>) -> (String, Option<String>) {
    let mut request = Request::get("/visits");
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let request = request.body(Body::empty()).expect("a valid request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    assert!(response.status().is_success(), "{}", response.status());
    let set_cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(str::to_owned);
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .expect("a small body");
    (String::from_utf8_lossy(&body).into_owned(), set_cookie)
}

#[tokio::main]
async fn main() {
    // 1. The conformance suite: every rule of the storage contract, against a fresh store.
    //    It panics with the list of broken rules, if any.
    session_engine::testing::assert_conforms(&BTreeStore::default()).await;
    println!("BTreeStore passes the session-engine conformance suite");

    // 2. The same store behind the session layer of an axum app.
    let store = Arc::new(BTreeStore::default());
    let engine = SessionEngine::builder()
        .secret("an example secret that is at least 32 bytes long")
        .shared_store(store.clone())
        // Lists and ends a user's sessions (`Session::user_sessions`, `end_all_sessions`):
        // `build()` refuses it for a store whose `indexes_users` is false.
        .track_users(true)
        .build()
        .expect("valid settings");
    let app = Router::new()
        .route("/visits", get(visits))
        .layer(SessionLayer::new(engine));

    let (body, cookie) = get_visits(&app, None).await;
    let cookie = cookie.expect("a new, modified session sets the cookie");
    assert_eq!(body, "1");
    let (body, _) = get_visits(&app, Some(&cookie)).await;
    assert_eq!(body, "2");
    println!("two requests through the app: visits = {body}");

    // The store holds one record, under a hash of the id: the cookie's id is not in it.
    let keys = store.keys();
    assert_eq!(keys.len(), 1);
    let id = cookie
        .split_once('=')
        .and_then(|(_, value)| value.rsplit_once('.'))
        .map(|(id, _)| id)
        .expect("a signed cookie value");
    assert!(!keys[0].contains(id));
    println!("the store holds 1 record, keyed by a hash of the session id");
}
