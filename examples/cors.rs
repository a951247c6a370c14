//! An API for clients that keep no cookies, called by a browser app from another origin: the
//! signed session id travels in the `x-session` header (the engine's `header` option, with the
//! cookie off), and tower-http's CORS layer lets the browser app send that header and read it
//! back (`Access-Control-Expose-Headers`: without it, the browser hides the header from the
//! app's script).
//!
//! ```sh
//! cargo run -p session-engine-ecosystem --bin cors     # on 127.0.0.1:3000 (PORT to change it)
//! curl -si localhost:3000/visits                       # 1, and an x-session header
//! curl -si -H 'x-session: VALUE' localhost:3000/visits # 2
//! ```
//!
//! | route | does |
//! | --- | --- |
//! | `GET /visits` | adds 1 to this client's count; body = the count |
//! | `POST /logout` | ends the session (`x-session` comes back empty); body `bye` |
//!
//! The browser app is served from `http://localhost:5173` (`APP_ORIGIN` to change it).

use std::net::{Ipv4Addr, SocketAddr};

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::routing::{get, post};
use session_engine::{Error, Session, SessionEngine, SessionLayer};
use tower_http::cors::CorsLayer;

/// The header that carries the session.
const SESSION_HEADER: HeaderName = HeaderName::from_static("x-session");

async fn visits(session: Session) -> Result<String, Error> {
    let visits = session.get::<u64>("visits")?.unwrap_or(0) + 1;
    session.set("visits", visits)?;
    Ok(visits.to_string())
}

async fn logout(session: Session) -> Result<&'static str, Error> {
    session.destroy().await?;
    Ok("bye")
}

fn app(engine: SessionEngine, app_origin: HeaderValue) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(app_origin)
        .allow_methods([Method::GET, Method::POST])
        // The app sends the header…
        .allow_headers([SESSION_HEADER])
        // …and must be allowed to read it from responses.
        .expose_headers([SESSION_HEADER]);
    Router::new()
        .route("/visits", get(visits))
        .route("/logout", post(logout))
        .layer(SessionLayer::new(engine))
        // Outside the session layer: a preflight never touches a session.
        .layer(cors)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A real app reads at least 32 random bytes from its secret store.
    let secret = std::env::var("SESSION_SECRET")
        .unwrap_or_else(|_| "an example secret, at least 32 bytes long".to_owned());
    let engine = SessionEngine::builder()
        .secret(secret)
        .header(SESSION_HEADER.as_str())
        .cookie(false)
        .build()?;
    let origin = std::env::var("APP_ORIGIN").unwrap_or_else(|_| "http://localhost:5173".into());
    let port = std::env::var("PORT").map_or(Ok(3000), |port| port.parse())?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(engine, origin.parse()?)).await?;
    Ok(())
}
