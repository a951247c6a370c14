//! Flash messages on session-engine alone: a message one request leaves for the next, shown
//! exactly once. (Apps on axum-messages use it unchanged through `compat::TowerSessionsLayer`:
//! see `examples/login.rs`.)
//!
//! ```sh
//! cargo run --example flash      # on 127.0.0.1:3000 (PORT to change it)
//! curl -si -X POST 'localhost:3000/say?text=saved'   # then GET / with its cookie, twice
//! ```
//!
//! | route | does |
//! | --- | --- |
//! | `GET /` | `home`, then one line per pending message, each shown once |
//! | `POST /say?text=TEXT` | leaves a message for the next page; body `ok` |

use std::net::{Ipv4Addr, SocketAddr};

use axum::Router;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::routing::{get, post};
use serde::Deserialize;
use session_engine::{Error, Session, SessionEngine, SessionLayer, SessionRejection};

/// A visitor's flash messages: kept in the session until a page shows them.
struct Flash(Session);

impl Flash {
    const KEY: &str = "flash";

    /// Leaves `text` for the next page that shows messages.
    fn push(&self, text: impl Into<String>) -> Result<(), Error> {
        let mut pending: Vec<String> = self.0.get(Self::KEY)?.unwrap_or_default();
        pending.push(text.into());
        self.0.set(Self::KEY, pending)?;
        Ok(())
    }

    /// The pending messages, removed from the session: shown once. Without any, nothing is
    /// written, and a visitor without a session gets none.
    fn take(&self) -> Result<Vec<String>, Error> {
        let pending: Option<Vec<String>> = self.0.get(Self::KEY)?;
        if pending.is_some() {
            self.0.delete(Self::KEY)?;
        }
        Ok(pending.unwrap_or_default())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Flash {
    type Rejection = SessionRejection;

    /// The `Session` extractor's started session: the messages can be read at once.
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Session::from_request_parts(parts, state).await.map(Self)
    }
}

async fn home(flash: Flash) -> Result<String, Error> {
    let mut body = String::from("home");
    for message in flash.take()? {
        body.push('\n');
        body.push_str(&message);
    }
    Ok(body)
}

#[derive(Deserialize)]
struct Say {
    text: String,
}

async fn say(flash: Flash, Query(say): Query<Say>) -> Result<&'static str, Error> {
    flash.push(say.text)?;
    Ok("ok")
}

fn app(engine: SessionEngine) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/say", post(say))
        .layer(SessionLayer::new(engine))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A real app reads at least 32 random bytes from its secret store.
    let secret = std::env::var("SESSION_SECRET")
        .unwrap_or_else(|_| "an example secret, at least 32 bytes long".to_owned());
    let engine = SessionEngine::builder()
        .secret(secret)
        // Plain HTTP on a machine of one's own; keep the default (`Secure`) in production.
        .secure(false)
        .build()?;
    let port = std::env::var("PORT").map_or(Ok(3000), |port| port.parse())?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(engine)).await?;
    Ok(())
}

// ---- its unit tests: `cargo test --example flash --features testing` ----

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use axum::http::header::SET_COOKIE;
    use session_engine::testing::Visitor;

    async fn show(visitor: &mut Visitor) -> String {
        visitor
            .call(|s| async move { home(Flash(s)).await })
            .await
            .text()
    }

    async fn leave(visitor: &mut Visitor, text: &str) {
        let text = text.to_owned();
        let reply = visitor
            .call(|s| async move { say(Flash(s), Query(Say { text })).await })
            .await;
        assert_eq!(reply.text(), "ok");
    }

    #[tokio::test]
    async fn a_message_is_shown_exactly_once() {
        let engine = SessionEngine::builder()
            .secret("a test secret of at least 32 bytes")
            .build()
            .expect("the test engine builds");
        let mut visitor = Visitor::new(&engine);
        // No message, no session: nothing written, no cookie.
        let reply = visitor.call(|s| async move { home(Flash(s)).await }).await;
        assert_eq!(reply.text(), "home");
        assert!(reply.headers.get(SET_COOKIE).is_none());

        leave(&mut visitor, "saved").await;
        leave(&mut visitor, "and sent").await;
        assert_eq!(show(&mut visitor).await, "home\nsaved\nand sent");
        assert_eq!(show(&mut visitor).await, "home");
        // The session lives on; only the messages are gone.
        assert!(visitor.cookie().is_some());
    }
}
