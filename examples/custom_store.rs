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
//! - an insert (`write` with `stored == false`) fails with `IdTaken` over a live record, and
//!   replaces an expired one;
//! - an update (`write` with `stored == true`) and a `touch` fail with `Gone` when the record is
//!   absent or expired, and never recreate it;
//! - an update applies only the keys the request changed (`Changes::apply`), so two requests
//!   that change different keys both survive;
//! - `read` never returns an expired record.
//!
//! Each hook does its check and its change under one lock, never as a read followed by a
//! separate write: that is what makes these rules hold when requests race. A store over a
//! database does the same with one statement (`INSERT … ON CONFLICT`, `UPDATE … WHERE
//! expires_at > now`) or a script.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use axum::routing::get;
use serde_json::{Map, Value};
use session_engine::async_trait;
use session_engine::{
    Changes, Error, Record, Session, SessionEngine, SessionLayer, SessionStore, StoreError,
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

impl Entry {
    fn is_live(&self, now_ms: u64) -> bool {
        self.expires_ms > now_ms
    }
}

impl BTreeStore {
    fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        // Every change below is a single map operation, so a panic elsewhere while the lock
        // was held cannot have left an entry half-written.
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The keys the store holds: what a dump of the store would show.
    fn keys(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }
}

fn now_ms() -> u64 {
    to_ms(SystemTime::now())
}

fn to_ms(time: SystemTime) -> u64 {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn encode(data: &Map<String, Value>) -> Result<String, StoreError> {
    serde_json::to_string(data).map_err(StoreError::backend)
}

fn decode(data: &str) -> Result<Map<String, Value>, StoreError> {
    serde_json::from_str(data).map_err(StoreError::backend)
}

#[async_trait]
impl SessionStore for BTreeStore {
    // `id` keeps its default: 24 random bytes from the OS, as 32 characters of base64url.

    async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let now = now_ms();
        let mut records = self.lock();
        match records.get(key) {
            Some(entry) if entry.is_live(now) => Ok(Some(Record::new(
                decode(&entry.data)?,
                from_ms(entry.created_ms),
                from_ms(entry.expires_ms),
            ))),
            Some(_) => {
                // Expired: never returned; drop it while we are here.
                records.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn write(
        &self,
        key: &str,
        record: &Record,
        changes: &Changes,
        stored: bool,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut records = self.lock();
        let live = records.get_mut(key).filter(|entry| entry.is_live(now));
        match (stored, live) {
            // Insert over a live record: refuse, never overwrite (R8).
            (false, Some(_)) => Err(StoreError::IdTaken),
            // Insert: a new record, or one that replaces an expired record.
            (false, None) => {
                let entry = Entry {
                    data: encode(&record.data)?,
                    created_ms: to_ms(record.created_at),
                    expires_ms: to_ms(record.expires_at),
                };
                records.insert(key.to_owned(), entry);
                Ok(())
            }
            // Update of an absent or expired record: refuse, never recreate (R9).
            (true, None) => {
                records.remove(key);
                Err(StoreError::Gone)
            }
            // Update: patch only the changed keys, move the expiry, keep `created_ms`.
            (true, Some(entry)) => {
                let mut data = decode(&entry.data)?;
                changes.apply(&mut data, &record.data);
                entry.data = encode(&data)?;
                entry.expires_ms = to_ms(record.expires_at);
                Ok(())
            }
        }
    }

    async fn touch(&self, key: &str, expires_at: SystemTime) -> Result<(), StoreError> {
        let now = now_ms();
        let mut records = self.lock();
        match records.get_mut(key) {
            Some(entry) if entry.is_live(now) => {
                entry.expires_ms = to_ms(expires_at);
                Ok(())
            }
            Some(_) => {
                records.remove(key);
                Err(StoreError::Gone)
            }
            None => Err(StoreError::Gone),
        }
    }

    async fn destroy(&self, key: &str) -> Result<(), StoreError> {
        self.lock().remove(key);
        Ok(())
    }

    async fn cleanup(&self) -> Result<u64, StoreError> {
        let now = now_ms();
        let mut records = self.lock();
        let before = records.len();
        records.retain(|_, entry| entry.is_live(now));
        Ok((before - records.len()) as u64)
    }
}

async fn visits(session: Session) -> Result<String, Error> {
    session.start().await?;
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
    session_engine::testing::assert_conforms(&BTreeStore::new()).await;
    println!("BTreeStore passes the session-engine conformance suite");

    // 2. The same store behind the session layer of an axum app.
    let store = Arc::new(BTreeStore::new());
    let engine = SessionEngine::builder()
        .secret("an example secret that is at least 32 bytes long")
        .shared_store(store.clone())
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
