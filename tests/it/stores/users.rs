//! A user's sessions listed and ended (SPEC 7.2), over HTTP against each store: the index
//! consistent with the sessions through logins on several devices, rolls, logouts, expiry and
//! "log out everywhere".

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;

use serde_json::{Value, json};
use session_engine::{Error, Session, SessionEngineBuilder};
use tokio::sync::Notify;

use super::{Backend, shared};
use crate::harness::{Reply, builder, get_with, post_with, serve};

/// The account routes of SPEC 7.2, as the demo has them.
///
/// | route | does |
/// | --- | --- |
/// | `POST /login?user=NAME` | start, roll, tie to NAME |
/// | `GET /me` | the user, or 401 |
/// | `GET /sessions` | the user's sessions as JSON, or 401 |
/// | `POST /logout-others` | ends the user's other sessions; 401 when not logged in |
/// | `POST /logout-everywhere` | ends all of them; 401 when not logged in |
/// | `POST /logout` | destroy |
/// | `POST /short` | sets a duration of 1 s |
/// | `POST /short-long` | sets a duration of 1 h |
pub(crate) fn account_routes() -> Router {
    async fn login(
        session: Session,
        Query(q): Query<HashMap<String, String>>,
    ) -> Result<&'static str, Error> {
        session.start().await?;
        session.roll().await?;
        session.set_user(q["user"].clone())?;
        Ok("ok")
    }
    async fn me(session: Session) -> Result<Response, Error> {
        session.start().await?;
        Ok(match session.user()? {
            Some(user) => user.into_response(),
            None => StatusCode::UNAUTHORIZED.into_response(),
        })
    }
    async fn sessions(session: Session) -> Result<Response, Error> {
        session.start().await?;
        if session.user()?.is_none() {
            return Ok(StatusCode::UNAUTHORIZED.into_response());
        }
        let list: Vec<Value> = session
            .user_sessions()
            .await?
            .iter()
            .map(|s| {
                json!({
                    "current": s.current,
                    "created_ms": ms(s.created_at),
                    "expires_ms": ms(s.expires_at),
                })
            })
            .collect();
        let json = Value::Array(list).to_string();
        Ok(([(CONTENT_TYPE, "application/json")], json).into_response())
    }
    async fn logout_others(session: Session) -> Result<Response, Error> {
        session.start().await?;
        if session.user()?.is_none() {
            return Ok(StatusCode::UNAUTHORIZED.into_response());
        }
        session.end_other_sessions().await?;
        Ok("ok".into_response())
    }
    async fn logout_everywhere(session: Session) -> Result<Response, Error> {
        session.start().await?;
        if session.user()?.is_none() {
            return Ok(StatusCode::UNAUTHORIZED.into_response());
        }
        session.end_all_sessions().await?;
        Ok("ok".into_response())
    }
    Router::new()
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/sessions", get(sessions))
        .route("/logout-others", post(logout_others))
        .route("/logout-everywhere", post(logout_everywhere))
        .route(
            "/logout",
            post(|session: Session| async move {
                session.destroy().await?;
                Ok::<_, Error>("ok")
            }),
        )
        .route(
            "/short",
            post(|session: Session| async move {
                session.set_duration(Duration::from_secs(1))?;
                Ok::<_, Error>("ok")
            }),
        )
        .route(
            "/short-long",
            post(|session: Session| async move {
                session.set_duration(Duration::from_secs(3600))?;
                Ok::<_, Error>("ok")
            }),
        )
}

fn ms(time: SystemTime) -> u64 {
    u64::try_from(
        time.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

/// The app over the backend's store, users tracked.
fn app<B: Backend>(backend: &B) -> Router {
    app_with(backend, |b| b, Router::new())
}

/// The app over the backend's store, users tracked, with the engine options of `configure`
/// and the routes of `extra` beside the account routes.
fn app_with<B: Backend>(
    backend: &B,
    configure: impl FnOnce(SessionEngineBuilder) -> SessionEngineBuilder,
    extra: Router,
) -> Router {
    let engine = configure(builder().shared_store(shared(backend)).track_users(true))
        .build()
        .expect("the test engine builds, the store indexing users");
    serve(engine, account_routes().merge(extra))
}

/// A request that says it has started and waits to be let go, so that another one runs in
/// between.
#[derive(Clone, Default)]
struct Pause {
    started: Arc<Notify>,
    release: Arc<Notify>,
}

impl Pause {
    async fn wait(&self) {
        self.started.notify_one();
        self.release.notified().await;
    }

    /// Runs `slow` until it has started, then `meanwhile`, then lets `slow` finish.
    async fn run<T, U>(
        &self,
        slow: impl Future<Output = T>,
        meanwhile: impl Future<Output = U>,
    ) -> (T, U) {
        let meanwhile = async {
            self.started.notified().await;
            let other = meanwhile.await;
            self.release.notify_one();
            other
        };
        tokio::join!(slow, meanwhile)
    }
}

/// A user's name of this test's own.
fn name(who: &str) -> String {
    format!(
        "{who}-{}",
        session_engine::store::random_id().expect("an id")
    )
}

/// Logs `user` in on a new device; its `Cookie` header.
async fn device(app: &Router, user: &str) -> String {
    let reply = post_with(app, &format!("/login?user={user}"), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    reply.cookie()
}

async fn me(app: &Router, cookie: &str) -> Reply {
    get_with(app, "/me", Some(cookie)).await
}

/// The list `GET /sessions` answers for `cookie`.
async fn list(app: &Router, cookie: &str) -> Vec<Value> {
    let reply = get_with(app, "/sessions", Some(cookie)).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(
        reply.header_values("content-type"),
        ["application/json"],
        "{reply:?}"
    );
    serde_json::from_str(&reply.body).expect("a JSON list")
}

fn currents(list: &[Value]) -> usize {
    list.iter().filter(|s| s["current"] == json!(true)).count()
}

pub(crate) async fn users_two_devices_are_listed_with_exactly_one_current<B: Backend>(backend: &B) {
    let app = app(backend);
    let (ada, bob) = (name("ada"), name("bob"));
    let before = ms(SystemTime::now());
    let phone = device(&app, &ada).await;
    let laptop = device(&app, &ada).await;
    let other = device(&app, &bob).await;
    let after = ms(SystemTime::now());

    for cookie in [&phone, &laptop] {
        let sessions = list(&app, cookie).await;
        assert_eq!(sessions.len(), 2, "{sessions:?}");
        assert_eq!(currents(&sessions), 1, "{sessions:?}");
        for session in &sessions {
            let created = session["created_ms"].as_u64().expect("created_ms");
            let expires = session["expires_ms"].as_u64().expect("expires_ms");
            assert!((before..=after).contains(&created), "{session:?}");
            // The default duration: 30 minutes from the login.
            assert!(expires >= created + 29 * 60 * 1000, "{session:?}");
            // Never an id or a key in what a client sees.
            assert_eq!(session.as_object().map(|o| o.len()), Some(3), "{session:?}");
        }
    }
    // The current one is each device's own.
    let phone_list = list(&app, &phone).await;
    let laptop_list = list(&app, &laptop).await;
    assert_ne!(
        phone_list, laptop_list,
        "each device is current in its own list"
    );
    assert_eq!(list(&app, &other).await.len(), 1);
    // Not logged in: 401.
    let anonymous = get_with(&app, "/sessions", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

pub(crate) async fn users_ending_the_others_keeps_the_current_one<B: Backend>(backend: &B) {
    let app = app(backend);
    let (ada, bob) = (name("ada"), name("bob"));
    let here = device(&app, &ada).await;
    let there = [device(&app, &ada).await, device(&app, &ada).await];
    let bobs = device(&app, &bob).await;

    let reply = post_with(&app, "/logout-others", Some(&here)).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "ok"));
    assert!(
        reply.set_cookies.is_empty(),
        "the current session stays: {reply:?}"
    );
    assert_eq!(me(&app, &here).await.body, ada);
    for cookie in &there {
        assert_eq!(me(&app, cookie).await.status, StatusCode::UNAUTHORIZED);
    }
    let sessions = list(&app, &here).await;
    assert_eq!(
        (sessions.len(), currents(&sessions)),
        (1, 1),
        "{sessions:?}"
    );
    // Another user's sessions are untouched.
    assert_eq!(me(&app, &bobs).await.body, bob);
}

pub(crate) async fn users_ending_all_kills_every_one_and_removes_the_cookie<B: Backend>(
    backend: &B,
) {
    let app = app(backend);
    let (ada, bob) = (name("ada"), name("bob"));
    let here = device(&app, &ada).await;
    let there = device(&app, &ada).await;
    let bobs = device(&app, &bob).await;

    let reply = post_with(&app, "/logout-everywhere", Some(&here)).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "ok"));
    assert!(reply.removes_cookie(), "{reply:?}");
    for cookie in [&here, &there] {
        assert_eq!(me(&app, cookie).await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(me(&app, &bobs).await.body, bob);
    assert_eq!(list(&app, &bobs).await.len(), 1);
    // Not logged in: 401, and nothing ends.
    for route in ["/logout-others", "/logout-everywhere"] {
        let reply = post_with(&app, route, None).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{route}");
    }
    assert_eq!(me(&app, &bobs).await.body, bob);
}

pub(crate) async fn users_a_logout_an_expiry_and_a_roll_keep_the_list_true<B: Backend>(
    backend: &B,
) {
    let app = app(backend);
    let ada = name("ada");
    let here = device(&app, &ada).await;
    let logged_out = device(&app, &ada).await;
    let expiring = device(&app, &ada).await;
    assert_eq!(list(&app, &here).await.len(), 3);

    // A logout leaves the list.
    post_with(&app, "/logout", Some(&logged_out)).await;
    assert_eq!(list(&app, &here).await.len(), 2);

    // An expired session leaves it.
    let short = post_with(&app, "/short", Some(&expiring)).await;
    assert_eq!(short.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sessions = list(&app, &here).await;
    assert_eq!(
        (sessions.len(), currents(&sessions)),
        (1, 1),
        "{sessions:?}"
    );

    // A roll (a second login on the same device): the new id is listed, the old one is dead.
    let relogin = post_with(&app, &format!("/login?user={ada}"), Some(&here)).await;
    let rolled = relogin.cookie();
    assert_ne!(rolled, here);
    let sessions = list(&app, &rolled).await;
    assert_eq!(
        (sessions.len(), currents(&sessions)),
        (1, 1),
        "{sessions:?}"
    );
    assert_eq!(me(&app, &here).await.status, StatusCode::UNAUTHORIZED);
    // Tied to another user at the next login: it moves.
    let bob = name("bob");
    let moved = post_with(&app, &format!("/login?user={bob}"), Some(&rolled)).await;
    let moved = moved.cookie();
    assert_eq!(me(&app, &moved).await.body, bob);
    assert_eq!(list(&app, &moved).await.len(), 1);
    let another = device(&app, &ada).await;
    assert_eq!(
        list(&app, &another).await.len(),
        1,
        "none of ada's is left but this one"
    );
}

/// R19: a "log out everywhere" ends a login that was in flight while it ran (a password reset
/// on one device while an attacker logs in with the old password on another).
pub(crate) async fn users_r19_a_login_in_flight_during_log_out_everywhere_is_ended<B: Backend>(
    backend: &B,
) {
    let pause = Pause::default();
    let slow = Router::new().route(
        "/slow-login",
        post({
            let pause = pause.clone();
            move |session: Session, Query(q): Query<HashMap<String, String>>| async move {
                // The session started (the extractor), the password checked: then the race.
                pause.wait().await;
                session.roll().await?;
                session.set_user(q["user"].clone())?;
                Ok::<_, Error>("ok")
            }
        }),
    );
    let app = app_with(backend, |b| b, slow);
    let ada = name("ada");
    let here = device(&app, &ada).await;
    let anonymous = get_with(&app, "/sessions", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let (attacker, reset) = pause
        .run(
            post_with(&app, &format!("/slow-login?user={ada}"), None),
            post_with(&app, "/logout-everywhere", Some(&here)),
        )
        .await;
    assert_eq!(reset.status, StatusCode::OK);
    assert!(reset.removes_cookie(), "{reset:?}");
    // The login in flight answered, but its session is gone and no cookie was sent.
    assert_eq!(attacker.status, StatusCode::OK, "{attacker:?}");
    assert!(attacker.set_cookies.is_empty(), "{attacker:?}");
    assert_eq!(me(&app, &here).await.status, StatusCode::UNAUTHORIZED);
    // A login after the reset stands, and is the user's only session. (A moment later: the
    // end of the user's sessions is kept to the millisecond.)
    tokio::time::sleep(Duration::from_millis(5)).await;
    let later = device(&app, &ada).await;
    assert_eq!(me(&app, &later).await.body, ada);
    let sessions = list(&app, &later).await;
    assert_eq!(
        (sessions.len(), currents(&sessions)),
        (1, 1),
        "{sessions:?}"
    );
}

/// `max_sessions_per_user`: a login beyond it ends the user's least recently used sessions.
pub(crate) async fn users_a_login_beyond_the_limit_ends_the_least_recently_used<B: Backend>(
    backend: &B,
) {
    let app = app_with(backend, |b| b.max_sessions_per_user(3), Router::new());
    let (ada, bob) = (name("ada"), name("bob"));
    let bobs = device(&app, &bob).await;
    let mut devices = Vec::new();
    for _ in 0..3 {
        devices.push(device(&app, &ada).await);
        // Each login a moment after the last: their order is known to the millisecond.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The oldest is used again (a write: `/short` sets a duration), so it is not the least
    // recently used any more; the second is.
    let reused = post_with(&app, "/short-long", Some(&devices[0])).await;
    assert_eq!(reused.status, StatusCode::OK, "{reused:?}");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let fourth = device(&app, &ada).await;
    let sessions = list(&app, &fourth).await;
    assert_eq!(
        (sessions.len(), currents(&sessions)),
        (3, 1),
        "{sessions:?}"
    );
    assert_eq!(me(&app, &devices[1]).await.status, StatusCode::UNAUTHORIZED);
    for cookie in [&devices[0], &devices[2], &fourth] {
        assert_eq!(me(&app, cookie).await.body, ada);
    }
    // Another user's sessions are untouched.
    assert_eq!(me(&app, &bobs).await.body, bob);
}
