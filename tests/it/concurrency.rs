//! Concurrency tests on a multi-threaded runtime: many parallel requests on one session
//! cookie, many new sessions at once, and clones of one `Session` handle used at once inside
//! one handler. Every test runs under a time-out, so a deadlock fails instead of hanging.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Map, Value};
use session_engine::{Error, Session};

use crate::faults::Hook;
use crate::harness::{Harness, Reply, cookie_header, get_with, new_session};

const PARALLEL: usize = 200;

/// Fails the test if `test` has not finished within 30 seconds.
async fn within_deadline<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), test)
        .await
        .expect("deadlock: the test did not finish within 30 seconds")
}

/// Sends `GET uri` with `cookie`, `PARALLEL` times at once on spawned tasks; `uri` gets the
/// request's index.
async fn in_parallel(
    app: &Router,
    cookie: Option<&str>,
    uri: impl Fn(usize) -> String,
) -> Vec<Reply> {
    let tasks: Vec<_> = (0..PARALLEL)
        .map(|i| {
            let app = app.clone();
            let cookie = cookie.map(str::to_owned);
            let uri = uri(i);
            tokio::spawn(async move { get_with(&app, &uri, cookie.as_deref()).await })
        })
        .collect();
    let mut replies = Vec::with_capacity(PARALLEL);
    for task in tasks {
        replies.push(task.await.expect("a request task panicked"));
    }
    replies
}

/// The harness's routes and `/inc/{key}`: start, add 1 to `key`, body = the new value.
fn harness() -> Harness {
    let inc = Router::new().route(
        "/inc/{key}",
        get(|session: Session, Path(key): Path<String>| async move {
            session.start().await?;
            let value = session.get::<u64>(&key)?.unwrap_or(0) + 1;
            session.set(key, value)?;
            Ok::<_, Error>(value.to_string())
        }),
    );
    Harness::serving(|b| b, inc)
}

async fn all(app: &Router, cookie: &str) -> Map<String, Value> {
    let reply = get_with(app, "/all", Some(cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    serde_json::from_str(&reply.body).expect("a JSON object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_requests_on_one_session_keep_every_distinct_key() {
    within_deadline(async {
        let h = harness();
        let (store, app) = (&h.store, &h.app);
        let (cookie, id) = new_session(app).await;
        let replies = in_parallel(app, Some(&cookie), |i| format!("/inc/k{i}")).await;
        for reply in &replies {
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            assert_eq!(reply.body, "1");
            // Every response carries the same session, never a removal.
            assert_eq!(reply.cookie_id(), id);
        }
        // Each request changed only its own key, so every change survives (delta writes).
        let mut expected: Map<String, Value> = (0..PARALLEL)
            .map(|i| (format!("k{i}"), Value::from(1)))
            .collect();
        expected.insert("visits".into(), Value::from(1));
        assert_eq!(all(app, &cookie).await, expected);
        assert_eq!(store.inner().len(), 1);
        assert_eq!(store.calls(Hook::Read), PARALLEL + 1);
        assert_eq!(store.calls(Hook::Write), PARALLEL + 1);
        assert_eq!(
            store.written_keys().into_iter().collect::<BTreeSet<_>>(),
            BTreeSet::from([crate::harness::store_key(&id)])
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_increments_of_one_key_end_with_a_value_one_request_wrote() {
    within_deadline(async {
        let h = harness();
        let (store, app) = (&h.store, &h.app);
        let (cookie, id) = new_session(app).await;
        let replies = in_parallel(app, Some(&cookie), |_| "/inc/n".to_owned()).await;
        let mut written = BTreeSet::new();
        for reply in &replies {
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            assert_eq!(reply.cookie_id(), id);
            let n: u64 = reply.body.parse().expect("a count");
            assert!((1..=PARALLEL as u64).contains(&n), "{n}");
            written.insert(n);
        }
        // Without transactions, increments may be lost, but the final value is one that a
        // request wrote, and nothing else in the session was disturbed.
        let data = all(app, &cookie).await;
        assert_eq!(data.len(), 2, "{data:?}");
        assert_eq!(data["visits"], Value::from(1));
        let last = data["n"].as_u64().expect("a number");
        assert!(written.contains(&last), "{last} not in {written:?}");
        assert_eq!(store.inner().len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_new_sessions_get_distinct_ids() {
    within_deadline(async {
        let h = harness();
        let (store, app) = (&h.store, &h.app);
        let replies = in_parallel(app, None, |i| format!("/inc/k{i}")).await;
        let mut ids = BTreeSet::new();
        for reply in &replies {
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            assert_eq!(reply.body, "1");
            ids.insert(reply.cookie_id());
        }
        assert_eq!(ids.len(), PARALLEL);
        assert_eq!(store.inner().len(), PARALLEL);
        assert_eq!(store.calls(Hook::Read), 0);
        // Each cookie leads to its own data.
        for (i, reply) in replies.iter().enumerate().step_by(37) {
            let data = all(app, &reply.cookie()).await;
            assert_eq!(
                data,
                Map::from_iter([(format!("k{i}"), Value::from(1))]),
                "{i}"
            );
        }
    })
    .await;
}

/// A handler that uses `TASKS` clones of its session at once: each starts it, adds 1 to its
/// own key `c{i}`, and reads it back. The body is the number of `c` keys and the id all the
/// clones saw.
const TASKS: usize = 16;

async fn clones(session: Session) -> Result<String, Error> {
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let session = session.clone();
            tokio::spawn(async move {
                session.start().await?;
                let key = format!("c{i}");
                let value = session.get::<u64>(&key)?.unwrap_or(0) + 1;
                session.set(key.clone(), value)?;
                assert_eq!(session.get::<u64>(&key)?, Some(value));
                Ok::<_, Error>(session.id().expect("started"))
            })
        })
        .collect();
    let mut seen = BTreeMap::new();
    for (i, task) in tasks.into_iter().enumerate() {
        seen.insert(i, task.await.expect("a clone's task panicked")?);
    }
    let ids: BTreeSet<_> = seen.values().collect();
    assert_eq!(ids.len(), 1, "clones saw different ids: {ids:?}");
    let keys = session
        .get_all()?
        .keys()
        .filter(|k| k.starts_with('c'))
        .count();
    Ok(format!("{keys} {}", seen[&0]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_of_one_handle_used_at_once_read_once_and_keep_every_key() {
    within_deadline(async {
        let h = Harness::serving(|b| b, Router::new().route("/clones", get(clones)));
        let (store, app) = (&h.store, &h.app);
        // A slow store widens the window in which the clones race to start.
        store.delay(Hook::Read, Duration::from_millis(20));
        store.delay(Hook::Id, Duration::from_millis(20));
        // A new session.
        let reply = get_with(app, "/clones", None).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        let id = reply.cookie_id();
        assert_eq!(reply.body, format!("{TASKS} {id}"));
        assert_eq!(store.hooks(), [Hook::Id, Hook::Write]);
        // A stored one: one read for all the clones, one write of all their keys.
        let cookie = reply.cookie();
        store.clear_history();
        let reply = get_with(app, "/clones", Some(&cookie)).await;
        assert_eq!(reply.body, format!("{TASKS} {id}"));
        assert_eq!(store.hooks(), [Hook::Read, Hook::Write]);
        let data = all(app, &cookie).await;
        let expected: Map<String, Value> = (0..TASKS)
            .map(|i| (format!("c{i}"), Value::from(2)))
            .collect();
        assert_eq!(data, expected);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_each_using_many_clones_at_once() {
    within_deadline(async {
        let h = Harness::serving(|b| b, Router::new().route("/clones", get(clones)));
        let (store, app) = (&h.store, &h.app);
        let (cookie, id) = new_session(app).await;
        let replies = in_parallel(app, Some(&cookie), |_| "/clones".to_owned()).await;
        for reply in &replies {
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            assert_eq!(reply.body, format!("{TASKS} {id}"));
            assert_eq!(reply.cookie_id(), id);
        }
        // Every key is there; increments of one key by parallel requests may be lost, so
        // each ends between 1 and the number of requests.
        let data = all(app, &cookie).await;
        assert_eq!(data.len(), TASKS + 1, "{data:?}");
        assert_eq!(data["visits"], Value::from(1));
        for i in 0..TASKS {
            let value = data[&format!("c{i}")].as_u64().expect("a number");
            assert!((1..=PARALLEL as u64).contains(&value), "c{i} = {value}");
        }
        assert_eq!(store.calls(Hook::Read), PARALLEL + 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_racing_destroy_against_set_and_touch_end_destroyed() {
    within_deadline(async {
        let race = Router::new().route(
            "/race",
            get(|session: Session| async move {
                session.start().await?;
                let mut tasks = Vec::new();
                for i in 0..TASKS {
                    let session = session.clone();
                    tasks.push(tokio::spawn(async move {
                        match i % 4 {
                            0 => session.destroy().await.map(drop),
                            1 => session.touch().await.map(drop),
                            2 => session.start().await.map(drop),
                            _ => session.set(format!("r{i}"), i).map(drop),
                        }
                    }));
                }
                for task in tasks {
                    task.await.expect("a clone's task panicked")?;
                }
                Ok::<_, Error>(format!("{} {:?}", session.ready(), session.id()))
            }),
        );
        let h = Harness::serving(|b| b, race);
        for _ in 0..20 {
            let (cookie, id) = new_session(&h.app).await;
            let reply = h.get("/race", Some(&cookie)).await;
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            assert_eq!(reply.body, "false None");
            assert_eq!(cookie_header(reply.set_cookie()), "sid=");
            assert!(h.record(&id).await.is_none());
        }
        let store = &h.store;
        assert!(store.inner().is_empty());
        assert_eq!(store.calls(Hook::Write), 20);
    })
    .await;
}
