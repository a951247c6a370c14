//! Model-based concurrency (SPEC section 5): random rounds of concurrent requests on a few
//! sessions (reads, writes of different keys, rolls, destroys and "log out everywhere"),
//! spread over two app instances on one store, checked after every round against a model of
//! what the rules allow. Two properties, on every store:
//!
//! - no acknowledged write is lost: a write answered 200 is read back, unless its session was
//!   ended since, or another write of the same key raced it (then one of the two is read);
//! - no logout is undone: a session ended by a logout, a roll or "log out everywhere" never
//!   answers with its user or its data again, whatever raced it.
//!
//! The rounds come from proptest, which shrinks a failing run to a short one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::{get, post};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use session_engine::{Error, Session};
use tokio::task::JoinSet;

use super::{Backend, shared};
use crate::harness::{Reply, builder, cookie_value, get_with, id_of, post_with, serve};
use crate::stores::account_routes;

const CLIENTS: usize = 3;
const USERS: usize = 2;
const KEYS: [&str; 2] = ["a", "b"];

/// One request of a client (a browser with its cookie jar).
#[derive(Clone, Copy, Debug)]
enum Op {
    /// Sets `KEYS[key]` to a value unique to this request.
    Put { client: usize, key: usize },
    /// Reads `KEYS[key]`.
    Get { client: usize, key: usize },
    /// Logs in as `USERS[user]`: a roll, then the tie.
    Login { client: usize, user: usize },
    /// Destroys the session.
    Logout { client: usize },
    /// Ends every session of the client's user ("log out everywhere").
    EndAll { client: usize },
}

impl Op {
    fn client(self) -> usize {
        match self {
            Self::Put { client, .. }
            | Self::Get { client, .. }
            | Self::Login { client, .. }
            | Self::Logout { client }
            | Self::EndAll { client } => client,
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    let client = 0..CLIENTS;
    prop_oneof![
        4 => (client.clone(), 0..KEYS.len()).prop_map(|(client, key)| Op::Put { client, key }),
        2 => (client.clone(), 0..KEYS.len()).prop_map(|(client, key)| Op::Get { client, key }),
        2 => (client.clone(), 0..USERS).prop_map(|(client, user)| Op::Login { client, user }),
        1 => client.clone().prop_map(|client| Op::Logout { client }),
        1 => client.prop_map(|client| Op::EndAll { client }),
    ]
}

/// Rounds of one to three requests, each round's run concurrently.
fn rounds(max: usize) -> impl Strategy<Value = Vec<Vec<Op>>> {
    prop::collection::vec(prop::collection::vec(op(), 1..=3), 1..=max)
}

/// What the model knows of one key of a session: one of these values (`None`: unset), or
/// nothing, where a failed request may or may not have landed.
#[derive(Clone, Debug, PartialEq)]
enum Known {
    OneOf(BTreeSet<Option<String>>),
    Unknown,
}

impl Known {
    fn exactly(value: Option<String>) -> Self {
        Self::OneOf(BTreeSet::from([value]))
    }
}

/// What the model knows of a client's session.
#[derive(Clone, Debug)]
struct Client {
    cookie: Option<String>,
    /// `Some(None)`: logged in as no one; `None`: not known.
    user: Option<Option<String>>,
    keys: BTreeMap<&'static str, Known>,
}

impl Client {
    fn fresh() -> Self {
        Self {
            cookie: None,
            user: Some(None),
            keys: KEYS.iter().map(|k| (*k, Known::exactly(None))).collect(),
        }
    }

    fn forget(&mut self) {
        self.user = None;
        for known in self.keys.values_mut() {
            *known = Known::Unknown;
        }
    }
}

/// The app's routes: the account routes, and a value per key.
fn routes() -> Router {
    async fn put(
        session: Session,
        Query(q): Query<HashMap<String, String>>,
    ) -> Result<&'static str, Error> {
        session.set(q["key"].clone(), q["value"].clone())?;
        Ok("ok")
    }
    async fn read(
        session: Session,
        Query(q): Query<HashMap<String, String>>,
    ) -> Result<String, Error> {
        Ok(session
            .get::<String>(&q["key"])?
            .map_or_else(|| "-".to_owned(), |v| format!("={v}")))
    }
    account_routes()
        .route("/put", post(put))
        .route("/get", get(read))
}

/// A value as `/get` answers it.
fn parse_value(body: &str) -> Option<String> {
    body.strip_prefix('=').map(str::to_owned)
}

/// The run of one case: two instances over one store, the model, and the cookies of every
/// session that was ended.
struct Run {
    apps: [Router; 2],
    users: [String; USERS],
    clients: Vec<Client>,
    dead: Vec<String>,
    /// How many of `dead` were checked after the round they were ended in.
    checked: usize,
    round: usize,
    /// What each round sent and was answered, for the message of a failure.
    log: Vec<String>,
    /// The last round in which each user's sessions were all ended.
    ended_round: HashMap<String, usize>,
    next_value: u64,
}

/// The new `Cookie` header a reply sets, if it sets a live one.
fn new_cookie(reply: &Reply) -> Option<String> {
    let set = reply.set_cookies.last()?;
    let value = cookie_value(set);
    (!value.is_empty()).then(|| reply.cookie())
}

fn same_session(a: &str, b: &str) -> bool {
    let id = |cookie: &str| id_of(cookie.split_once('=').map_or(cookie, |(_, v)| v));
    id(a) == id(b)
}

impl Run {
    fn request(&self, app: usize, op: Op, value: u64) -> (Router, String, bool) {
        let app = self.apps[app % 2].clone();
        let (uri, post) = match op {
            Op::Put { key, .. } => (format!("/put?key={}&value={value}", KEYS[key]), true),
            Op::Get { key, .. } => (format!("/get?key={}", KEYS[key]), false),
            Op::Login { user, .. } => (format!("/login?user={}", self.users[user]), true),
            Op::Logout { .. } => ("/logout".to_owned(), true),
            Op::EndAll { .. } => ("/logout-everywhere".to_owned(), true),
        };
        (app, uri, post)
    }

    /// Runs one round: its requests at once, then the model's update and its checks.
    async fn round(&mut self, ops: &[Op]) -> Result<(), TestCaseError> {
        // A client with no cookie yet sends one request per round: two would make two sessions.
        let mut seen = BTreeSet::new();
        let ops: Vec<Op> = ops
            .iter()
            .copied()
            .filter(|op| self.clients[op.client()].cookie.is_some() || seen.insert(op.client()))
            .collect();
        let before = self.clients.clone();
        let mut tasks = JoinSet::new();
        let mut values = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            self.next_value += 1;
            values.push(self.next_value.to_string());
            let (app, uri, post) = self.request(i + self.round, *op, self.next_value);
            let cookie = before[op.client()].cookie.clone();
            tasks.spawn(async move {
                let reply = if post {
                    post_with(&app, &uri, cookie.as_deref()).await
                } else {
                    get_with(&app, &uri, cookie.as_deref()).await
                };
                (i, reply)
            });
        }
        let mut replies: Vec<Option<Reply>> = ops.iter().map(|_| None).collect();
        while let Some(done) = tasks.join_next().await {
            let (i, reply) = done.expect("a request task");
            replies[i] = Some(reply);
        }
        let replies: Vec<Reply> = replies
            .into_iter()
            .map(|r| r.expect("every reply"))
            .collect();
        let id = |cookie: &str| id_of(cookie.split_once('=').map_or(cookie, |(_, v)| v));
        for (i, op) in ops.iter().enumerate() {
            let sent = before[op.client()].cookie.as_deref().map(id);
            let set = replies[i]
                .set_cookies
                .last()
                .map(|c| match cookie_value(c) {
                    "" => "(removed)".to_owned(),
                    value => id_of(value),
                });
            self.log.push(format!(
                "round {}: {op:?} value {} with {sent:?} -> {} {:?}, set {set:?}",
                self.round, values[i], replies[i].status, replies[i].body
            ));
        }
        self.update(&ops, &values, &replies, &before)?;
        self.round += 1;
        self.check(false).await
    }

    /// The model after a round: what each reply acknowledged.
    fn update(
        &mut self,
        ops: &[Op],
        values: &[String],
        replies: &[Reply],
        before: &[Client],
    ) -> Result<(), TestCaseError> {
        let ok = |i: usize| replies[i].status == StatusCode::OK;
        // Users whose sessions an acknowledged "log out everywhere" ended.
        let ended_users: BTreeSet<String> = ops
            .iter()
            .enumerate()
            .filter(|(i, op)| matches!(op, Op::EndAll { .. }) && ok(*i))
            .filter_map(|(_, op)| before[op.client()].user.clone().flatten())
            .collect();
        for user in &ended_users {
            self.ended_round.insert(user.clone(), self.round);
        }
        for (c, was) in before.iter().enumerate() {
            let mine: Vec<usize> = (0..ops.len()).filter(|i| ops[*i].client() == c).collect();
            let ended_by_all = was
                .user
                .as_ref()
                .and_then(Option::as_ref)
                .is_some_and(|u| ended_users.contains(u));
            let logged_out = mine
                .iter()
                .any(|i| matches!(ops[*i], Op::Logout { .. }) && ok(*i));
            let logins: Vec<usize> = mine
                .iter()
                .copied()
                .filter(|i| matches!(ops[*i], Op::Login { .. }) && ok(*i))
                .collect();
            // Of two logins racing on one session, one rolls it; the other finds it gone, as
            // after a logout, and leaves no session (200, no cookie). The browser keeps the
            // cookie of the one that set it.
            let login = logins
                .iter()
                .find(|i| new_cookie(&replies[**i]).is_some())
                .or(logins.first());
            let mut now = was.clone();

            // The session a client had is ended: by its logout, by a roll, or by the end of
            // all its user's sessions. Its cookie must never work again.
            if logged_out || login.is_some() || ended_by_all {
                if let Some(cookie) = &was.cookie {
                    self.dead.push(cookie.clone());
                }
            }
            if logged_out || ended_by_all {
                now = Client::fresh();
                // A request that raced the end may have started a new session of its own.
                if let Some(cookie) = mine.iter().rev().find_map(|i| new_cookie(&replies[*i])) {
                    if was
                        .cookie
                        .as_deref()
                        .is_none_or(|old| !same_session(old, &cookie))
                    {
                        now.cookie = Some(cookie);
                        now.forget();
                    }
                }
                if mine.len() > 1 || login.is_some() {
                    now.forget();
                }
            } else if let Some(&i) = login {
                let Op::Login { user, .. } = ops[i] else {
                    unreachable!()
                };
                now.cookie = new_cookie(&replies[i]);
                now.user = Some(Some(self.users[user].clone()));
                if now.cookie.is_none() {
                    // R19 ends a login whose session started no later than an end of all its
                    // user's sessions, to the millisecond the stores keep: one in this round
                    // or the last may end it.
                    let ended_lately = self
                        .ended_round
                        .get(&self.users[user])
                        .is_some_and(|r| r + 1 >= self.round)
                        || ended_users.contains(&self.users[user]);
                    prop_assert!(
                        logins.len() > 1 || ended_lately,
                        "a login sets a cookie: {:?}",
                        replies[i]
                    );
                    now = Client::fresh();
                }
                if logins.len() > 1 {
                    now.forget();
                }
                // A login racing the end of all its user's sessions may be ended (R19) or not.
                if ended_users.contains(&self.users[user]) {
                    now.forget();
                }
                // A write racing the roll lands in the new session or not at all.
                for &j in &mine {
                    if let Op::Put { key, .. } = ops[j] {
                        if let Known::OneOf(set) = now.keys.get_mut(KEYS[key]).expect("a key") {
                            set.insert(Some(values[j].clone()));
                        }
                    }
                }
            } else {
                // A request whose session was gone (ended, or never stored) starts a new one.
                let moved = mine.iter().find_map(|i| {
                    new_cookie(&replies[*i]).filter(|cookie| {
                        was.cookie
                            .as_deref()
                            .is_none_or(|old| !same_session(old, cookie))
                    })
                });
                // Two requests that both found the session gone start one session each, and
                // the browser keeps whichever cookie came last: what each wrote is unknown.
                let scattered = moved.is_some() && mine.len() > 1;
                if let Some(cookie) = moved {
                    now = Client::fresh();
                    now.cookie = Some(cookie);
                    if scattered {
                        now.forget();
                    }
                }
                // Writes of this round: the acknowledged ones are the candidates; a failed one
                // may or may not have landed.
                let mut written: BTreeMap<&str, (BTreeSet<Option<String>>, bool)> = BTreeMap::new();
                for &j in &mine {
                    if let Op::Put { key, .. } = ops[j] {
                        let entry = written.entry(KEYS[key]).or_default();
                        if ok(j) {
                            entry.0.insert(Some(values[j].clone()));
                        } else {
                            entry.1 = true;
                        }
                    }
                }
                for (key, (acked, failed)) in written {
                    let known = now.keys.get_mut(key).expect("a key");
                    *known = if failed || scattered {
                        Known::Unknown
                    } else {
                        Known::OneOf(acked)
                    };
                }
                // A read saw the value before the round, or one written during it.
                for &j in &mine {
                    let Op::Get { key, .. } = ops[j] else {
                        continue;
                    };
                    if !ok(j) {
                        continue;
                    }
                    let seen = parse_value(&replies[j].body);
                    let mut allowed = match &was.keys[KEYS[key]] {
                        Known::OneOf(set) => set.clone(),
                        Known::Unknown => continue,
                    };
                    for &w in &mine {
                        if matches!(ops[w], Op::Put { key: k, .. } if k == key) {
                            allowed.insert(Some(values[w].clone()));
                        }
                    }
                    prop_assert!(
                        allowed.contains(&seen),
                        "client {c} read {:?} = {seen:?}, allowed {allowed:?}",
                        KEYS[key]
                    );
                }
            }
            self.clients[c] = now;
        }
        Ok(())
    }

    /// After a round, nothing racing: the sessions ended in it (with `all`, every one ended
    /// since the start) stay ended, and every live one answers what the model says. No request
    /// carries an ended session's cookie after the round it was ended in, so what holds then
    /// holds for good; the end of the run checks them all again.
    async fn check(&mut self, all: bool) -> Result<(), TestCaseError> {
        let from = if all { 0 } else { self.checked };
        self.checked = self.dead.len();
        for (i, cookie) in self.dead.iter().enumerate().skip(from) {
            let app = &self.apps[i % 2];
            let me = get_with(app, "/me", Some(cookie)).await;
            prop_assert_eq!(
                me.status,
                StatusCode::UNAUTHORIZED,
                "an ended session answered with its user: {:?}",
                me
            );
            for key in KEYS {
                let read = get_with(app, &format!("/get?key={key}"), Some(cookie)).await;
                prop_assert_eq!(
                    read.body.as_str(),
                    "-",
                    "an ended session answered with its data ({})",
                    key
                );
            }
        }
        for c in 0..CLIENTS {
            let Some(cookie) = self.clients[c].cookie.clone() else {
                continue;
            };
            let app = &self.apps[c % 2];
            let me = get_with(app, "/me", Some(&cookie)).await;
            let user = match me.status {
                StatusCode::OK => Some(me.body.clone()),
                StatusCode::UNAUTHORIZED => None,
                other => return Err(TestCaseError::fail(format!("/me answered {other}: {me:?}"))),
            };
            if let Some(known) = &self.clients[c].user {
                prop_assert_eq!(known, &user, "client {} is logged in as", c);
            }
            let client = &mut self.clients[c];
            client.user = Some(user);
            for key in KEYS {
                let read = get_with(app, &format!("/get?key={key}"), Some(&cookie)).await;
                prop_assert_eq!(read.status, StatusCode::OK, "{:?}", read);
                let seen = parse_value(&read.body);
                let known = client.keys.get_mut(key).expect("a key");
                if let Known::OneOf(allowed) = known {
                    prop_assert!(
                        allowed.contains(&seen),
                        "client {c} lost a write of {key:?}: read {seen:?}, allowed {allowed:?}"
                    );
                }
                *known = Known::exactly(seen);
            }
        }
        Ok(())
    }
}

/// Runs `cases` random runs of up to `max_rounds` rounds against the backend's store.
async fn check_model<B: Backend>(backend: &B, cases: u32, max_rounds: usize) {
    let first = shared(backend);
    let second: Arc<dyn session_engine::SessionStore> = Arc::new(backend.second().await);
    let app = |store| {
        let engine = builder()
            .shared_store(store)
            .track_users(true)
            .build()
            .expect("the test engine builds, the store indexing users");
        serve(engine, routes())
    };
    let apps = [app(first), app(second)];
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 1024,
        failure_persistence: None,
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        runner.run(&rounds(max_rounds), |rounds| {
            let suffix = session_engine::store::random_id().expect("an id");
            let mut run = Run {
                apps: apps.clone(),
                users: std::array::from_fn(|u| format!("model{u}-{suffix}")),
                clients: vec![Client::fresh(); CLIENTS],
                dead: Vec::new(),
                checked: 0,
                round: 0,
                ended_round: HashMap::new(),
                log: Vec::new(),
                next_value: 0,
            };
            let result = handle.block_on(async {
                for ops in &rounds {
                    run.round(ops).await?;
                }
                run.check(true).await
            });
            result.map_err(|error| {
                TestCaseError::fail(format!("{error}\nthe run:\n{}", run.log.join("\n")))
            })
        })
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}

/// The scenario of [`store_tests!`]: 24 runs of up to 12 rounds each.
pub(crate) async fn model_no_acknowledged_write_lost_and_no_logout_undone<B: Backend>(backend: &B) {
    check_model(backend, 24, 12).await;
}
