//! `session_engine::testing::Visitor` driving an axum-login app, its layers included, with no
//! server: the app is wired as `examples/login.rs` wires it (axum-login's `AuthManager` inside
//! `compat::TowerSessionsLayer`, inside `SessionLayer`).

use std::convert::Infallible;

use axum::Form;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_login::{AuthManager, AuthSession, AuthUser, AuthnBackend, UserId, login_required};
use serde::Deserialize;
use session_engine::compat::TowerSessionsLayer;
use session_engine::testing::Visitor;
use session_engine::{Error, Session, SessionEngine, SessionLayer};
use tower::layer::layer_fn;

#[derive(Clone, Debug)]
struct User(String);

impl AuthUser for User {
    type Id = String;

    fn id(&self) -> String {
        self.0.clone()
    }

    fn session_auth_hash(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

#[derive(Clone, Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

/// One user: `ada`, password `pw`.
#[derive(Clone, Debug)]
struct Users;

impl AuthnBackend for Users {
    type User = User;
    type Credentials = Credentials;
    type Error = Infallible;

    async fn authenticate(&self, credentials: Credentials) -> Result<Option<User>, Infallible> {
        let known = credentials.username == "ada" && credentials.password == "pw";
        Ok(known.then_some(User(credentials.username)))
    }

    async fn get_user(&self, name: &UserId<Self>) -> Result<Option<User>, Infallible> {
        Ok((name == "ada").then(|| User(name.clone())))
    }
}

async fn login(mut auth: AuthSession<Users>, Form(credentials): Form<Credentials>) -> Response {
    match auth.authenticate(credentials).await {
        Ok(Some(user)) if auth.login(&user).await.is_ok() => {
            format!("welcome {}", user.0).into_response()
        }
        Ok(None) => StatusCode::UNAUTHORIZED.into_response(),
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn me(auth: AuthSession<Users>) -> String {
    auth.user
        .map(|user| format!("hello {}", user.0))
        .unwrap_or_default()
}

async fn logout(mut auth: AuthSession<Users>) -> StatusCode {
    match auth.logout().await {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A page that uses session-engine's own `Session` beside axum-login.
async fn visits(session: Session) -> Result<String, Error> {
    let visits = session.get::<u64>("visits")?.unwrap_or(0) + 1;
    session.set("visits", visits)?;
    Ok(visits.to_string())
}

fn app(engine: SessionEngine) -> Router {
    Router::new()
        .route("/me", get(me))
        .route_layer(login_required!(Users))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/visits", get(visits))
        // axum-login's `AuthManagerLayerBuilder` would bring tower-sessions' own session
        // manager and cookie; its `AuthManager` alone reads the session the bridge gives it.
        .layer(layer_fn(|inner| {
            AuthManager::new(inner, Users, "axum-login.data")
        }))
        .layer(TowerSessionsLayer::new())
        .layer(SessionLayer::new(engine))
}

#[tokio::test]
async fn a_visitor_logs_in_and_out_through_axum_login() {
    let engine = SessionEngine::builder()
        .secret("a test secret of at least 32 bytes")
        .build()
        .expect("the test engine builds");
    let mut ada = Visitor::with_router(&engine, app(engine.clone()));
    assert_eq!(ada.get("/me").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(ada.get("/visits").await.text(), "1");
    let before = ada.cookie().expect("a session").to_owned();

    let wrong = ada.post("/login", "username=ada&password=nope").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(ada.cookie(), Some(before.as_str()));

    let reply = ada.post("/login", "username=ada&password=pw").await;
    assert_eq!(reply.text(), "welcome ada");
    // A login gets a new id, and keeps the session's data.
    let logged_in = ada.cookie().expect("a session").to_owned();
    assert_ne!(logged_in, before);
    assert_eq!(ada.get("/me").await.text(), "hello ada");
    assert_eq!(ada.get("/visits").await.text(), "2");
    // Another visitor is not logged in.
    assert_eq!(
        ada.another().get("/me").await.status,
        StatusCode::UNAUTHORIZED
    );

    assert_eq!(ada.post("/logout", "").await.status, StatusCode::OK);
    assert_eq!(ada.get("/me").await.status, StatusCode::UNAUTHORIZED);
    // The old cookie is worthless too.
    ada.set_cookie(Some(logged_in));
    assert_eq!(ada.get("/me").await.status, StatusCode::UNAUTHORIZED);
}
