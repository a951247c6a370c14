//! Logins with [axum-login](https://docs.rs/axum-login) and flash messages with
//! [axum-messages](https://docs.rs/axum-messages), unchanged, on session-engine: both crates
//! take tower-sessions' `Session` from the request, and `compat::TowerSessionsLayer` (feature
//! `tower-sessions`) gives them one backed by session-engine's, so signed cookies, key
//! rotation, fresh ids on login, bounded store calls and every rule of the end of a request
//! stay in force.
//!
//! ```sh
//! cargo run -p session-engine-ecosystem --bin login
//! curl -si -X POST -d 'username=ada&password=correct horse battery staple' localhost:3000/login
//! ```
//!
//! Its settings are the demo's (`PORT`, `SESSION_STORE`, `SESSION_SECRETS`, …: see
//! `examples/demo.rs`); the stores behind cargo features are the `sqlite`, `postgres` and
//! `redis` features of the `session-engine-ecosystem` package, which builds this example.
//!
//! | route | does |
//! | --- | --- |
//! | `GET /` | `home`, then one line per pending flash message, each shown once |
//! | `POST /login` (form `username`, `password`, and `remember` to stay logged in for 30 idle days) | 200 `welcome NAME` and a flash `logged in as NAME`, under a new session id tied to NAME; 401 for wrong credentials |
//! | `GET /protected` | 200 `hello NAME` when logged in, else 401 |
//! | `GET /sessions` | the sessions of the user this session is tied to, as JSON, `[{"current":true,"created_ms":…,"expires_ms":…}]`; 401 when it is tied to none |
//! | `POST /logout-others` | ends the user's other sessions; body `ok`; 401 when the session is tied to no user |
//! | `POST /logout` | 200 `bye` and a flash `logged out`: the logged-in session is destroyed, and the flash lives in a fresh session, tied to no user |
//!
//! The users, in memory: `ada` / `correct horse battery staple` and `bob` / `hunter2hunter2`.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Form;
use axum::Router;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_login::tower_sessions::Expiry;
use axum_login::tower_sessions::cookie::time;
use axum_login::{AuthManager, AuthSession, AuthUser, AuthnBackend, UserId, login_required};
use axum_messages::{Messages, MessagesManagerLayer};
use serde::Deserialize;
use serde_json::{Value, json};
use session_engine::compat::TowerSessionsLayer;
use session_engine::{Error, Session, SessionEngine, SessionLayer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use tower::layer::layer_fn;

#[path = "support/server.rs"]
mod server;

#[tokio::main]
async fn main() -> ExitCode {
    server::main("login", app).await
}

/// The routes, with axum-messages and axum-login inside the bridge, inside the session layer.
fn app(engine: SessionEngine) -> Router {
    let users = Users::new([
        ("ada", "correct horse battery staple"),
        ("bob", "hunter2hunter2"),
    ]);
    Router::new()
        .route("/protected", get(protected))
        .route_layer(login_required!(Users))
        .route("/", get(home))
        .route("/login", post(login))
        .route("/sessions", get(sessions))
        .route("/logout-others", post(logout_others))
        .route("/logout", post(logout))
        .layer(MessagesManagerLayer)
        // axum-login's own layer would also bring tower-sessions' session manager; its
        // `AuthManager` alone is the part that reads the session.
        .layer(layer_fn(move |inner| {
            AuthManager::new(inner, users.clone(), "axum-login.data")
        }))
        .layer(TowerSessionsLayer::new())
        .layer(SessionLayer::new(engine))
}

// ---- handlers ----

async fn home(messages: Messages) -> String {
    let mut body = String::from("home");
    for message in messages {
        body.push('\n');
        body.push_str(&message.message);
    }
    body
}

#[derive(Clone, Deserialize)]
struct Credentials {
    username: String,
    password: String,
    /// Present (a checkbox's `on`) to stay logged in for 30 idle days.
    remember: Option<String>,
}

async fn login(
    mut auth: AuthSession<Users>,
    session: Session,
    messages: Messages,
    Form(credentials): Form<Credentials>,
) -> Response {
    let remember = credentials.remember.is_some();
    let user = match auth.authenticate(credentials).await {
        Ok(Some(user)) => user,
        // Nothing changes: no cookie for a new visitor, a live session stays as it was.
        Ok(None) => {
            return (StatusCode::UNAUTHORIZED, "wrong username or password").into_response();
        }
        Err(error) => {
            tracing::error!(%error, "login failed");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    if let Err(error) = auth.login(&user).await {
        // A store that failed is answered by the layers with their 500 or 503.
        tracing::error!(%error, "login failed");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    // axum-login gives a new id only to a session that was not logged in; every login needs
    // one, so that an id planted or seen before is worthless. Tied to the user, the session is
    // listed with their others and ended with them.
    if let Err(error) = tie(&session, &user).await {
        tracing::error!(%error, "login failed");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    // In tower-sessions' words, on session-engine: 30 idle days for this session, or the
    // engine's duration.
    let expiry = remember.then(|| Expiry::OnInactivity(time::Duration::days(30)));
    auth.session.set_expiry(expiry);
    messages.success(format!("logged in as {}", user.name));
    format!("welcome {}", user.name).into_response()
}

/// Rolls the session to a new id and ties it to `user`.
async fn tie(session: &Session, user: &User) -> Result<(), Error> {
    session.roll().await?;
    session.set_user(&user.name)?;
    Ok(())
}

async fn protected(auth: AuthSession<Users>) -> Response {
    match auth.user {
        Some(user) => format!("hello {}", user.name).into_response(),
        // `login_required!` answered already.
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

/// The 401 of the account routes, when the session is tied to no user.
fn not_logged_in() -> Response {
    (StatusCode::UNAUTHORIZED, "not logged in").into_response()
}

async fn sessions(session: Session) -> Result<Response, Error> {
    if session.user()?.is_none() {
        return Ok(not_logged_in());
    }
    let ms = |at: SystemTime| {
        at.duration_since(UNIX_EPOCH).map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
    };
    let list: Vec<Value> = session
        .user_sessions()
        .await?
        .iter()
        .map(|listed| {
            json!({
                "current": listed.current,
                "created_ms": ms(listed.created_at),
                "expires_ms": ms(listed.expires_at),
            })
        })
        .collect();
    let body = Value::Array(list).to_string();
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

async fn logout_others(session: Session) -> Result<Response, Error> {
    if session.user()?.is_none() {
        return Ok(not_logged_in());
    }
    session.end_other_sessions().await?;
    Ok("ok".into_response())
}

/// axum-login's logout flushes the session: the bridge destroys it, and the flash that
/// axum-messages saves afterwards goes into a fresh session, tied to no user.
async fn logout(mut auth: AuthSession<Users>, messages: Messages) -> Response {
    match auth.logout().await {
        Ok(_) => {
            messages.info("logged out");
            "bye".into_response()
        }
        Err(error) => {
            tracing::error!(%error, "logout failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

// ---- users ----

/// A user: a name, and the SHA-256 of the password.
///
/// A real app keeps a slow, salted password hash (argon2, for example) in its database; the
/// session's auth hash is then derived from that hash, so that a password change logs the
/// user's other sessions out.
#[derive(Clone)]
struct User {
    name: String,
    password_hash: [u8; 32],
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the hash.
        f.debug_struct("User").field("name", &self.name).finish()
    }
}

impl AuthUser for User {
    type Id = String;

    fn id(&self) -> String {
        self.name.clone()
    }

    fn session_auth_hash(&self) -> &[u8] {
        &self.password_hash
    }
}

/// The users, by name: axum-login's backend.
#[derive(Clone, Debug)]
struct Users {
    by_name: Arc<HashMap<String, User>>,
}

impl Users {
    fn new<const N: usize>(users: [(&str, &str); N]) -> Self {
        let by_name = users
            .into_iter()
            .map(|(name, password)| {
                let user = User {
                    name: name.to_owned(),
                    password_hash: Sha256::digest(password).into(),
                };
                (name.to_owned(), user)
            })
            .collect();
        Self {
            by_name: Arc::new(by_name),
        }
    }
}

impl AuthnBackend for Users {
    type User = User;
    type Credentials = Credentials;
    type Error = std::convert::Infallible;

    async fn authenticate(&self, credentials: Credentials) -> Result<Option<User>, Self::Error> {
        let given: [u8; 32] = Sha256::digest(&credentials.password).into();
        Ok(self
            .by_name
            .get(&credentials.username)
            .filter(|user| bool::from(user.password_hash.ct_eq(&given)))
            .cloned())
    }

    async fn get_user(&self, name: &UserId<Self>) -> Result<Option<User>, Self::Error> {
        Ok(self.by_name.get(name).cloned())
    }
}
