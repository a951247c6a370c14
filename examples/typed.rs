//! A typed session: the app's own struct over [`Session`], an axum extractor with typed getters
//! and setters, so that handlers never spell a key or a type twice, and its unit tests with
//! [`testing::Visitor`](session_engine::testing::Visitor) (no server).
//!
//! ```sh
//! cargo run --example typed      # on 127.0.0.1:3000 (PORT to change it)
//! curl -si -X POST 'localhost:3000/theme?name=dark'
//! ```
//!
//! | route | does |
//! | --- | --- |
//! | `GET /` | `theme: light, cart: 0 items` |
//! | `POST /theme?name=dark` | sets the theme (`light` or `dark`; anything else is a 400) |
//! | `POST /cart?item=NAME` | adds an item; body = the items, one per line |

use std::net::{Ipv4Addr, SocketAddr};

use axum::Router;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use session_engine::{Error, Session, SessionEngine, SessionLayer};

// ---- the typed session ----

/// This app's session: every key and its type are named once, here.
struct AppSession(Session);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Theme {
    #[default]
    Light,
    Dark,
}

impl AppSession {
    const THEME: &str = "theme";
    const CART: &str = "cart";

    /// The visitor's session, read from the store.
    async fn load(session: Session) -> Result<Self, Error> {
        session.start().await?;
        Ok(Self(session))
    }

    fn theme(&self) -> Result<Theme, Error> {
        Ok(self.0.get(Self::THEME)?.unwrap_or_default())
    }

    fn set_theme(&self, theme: Theme) -> Result<(), Error> {
        self.0.set(Self::THEME, theme)?;
        Ok(())
    }

    fn cart(&self) -> Result<Vec<String>, Error> {
        Ok(self.0.get(Self::CART)?.unwrap_or_default())
    }

    /// Adds `item`; returns the cart.
    fn add_to_cart(&self, item: String) -> Result<Vec<String>, Error> {
        let mut cart = self.cart()?;
        cart.push(item);
        self.0.set(Self::CART, &cart)?;
        Ok(cart)
    }
}

/// Handlers take `AppSession` as they would `Session`: already read from the store.
impl<S: Send + Sync> FromRequestParts<S> for AppSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let session = Session::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Self::load(session)
            .await
            .map_err(IntoResponse::into_response)
    }
}

// ---- the app ----

async fn home(session: AppSession) -> Result<String, Error> {
    let theme = match session.theme()? {
        Theme::Light => "light",
        Theme::Dark => "dark",
    };
    Ok(format!(
        "theme: {theme}, cart: {} items",
        session.cart()?.len()
    ))
}

#[derive(Deserialize)]
struct SetTheme {
    name: Theme,
}

async fn set_theme(session: AppSession, Query(q): Query<SetTheme>) -> Result<&'static str, Error> {
    session.set_theme(q.name)?;
    Ok("ok")
}

#[derive(Deserialize)]
struct AddItem {
    item: String,
}

async fn add_to_cart(session: AppSession, Query(q): Query<AddItem>) -> Result<String, Error> {
    Ok(session.add_to_cart(q.item)?.join("\n"))
}

fn app(engine: SessionEngine) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/theme", post(set_theme))
        .route("/cart", post(add_to_cart))
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

// ---- its unit tests: `cargo test --example typed --features testing` ----

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use session_engine::testing::Visitor;

    fn engine() -> SessionEngine {
        SessionEngine::builder()
            .secret("a test secret of at least 32 bytes")
            .build()
            .expect("the test engine builds")
    }

    #[tokio::test]
    async fn the_theme_and_the_cart_are_kept_per_visitor() {
        let engine = engine();
        let mut ada = Visitor::new(&engine);
        let reply = ada
            .call(|s| async move { home(AppSession::load(s).await?).await })
            .await;
        assert_eq!(reply.text(), "theme: light, cart: 0 items");

        ada.call(|s| async move {
            set_theme(
                AppSession::load(s).await?,
                Query(SetTheme { name: Theme::Dark }),
            )
            .await
        })
        .await;
        for item in ["tea", "scones"] {
            let item = item.to_owned();
            ada.call(|s| async move {
                add_to_cart(AppSession::load(s).await?, Query(AddItem { item })).await
            })
            .await;
        }
        let reply = ada
            .call(|s| async move { home(AppSession::load(s).await?).await })
            .await;
        assert_eq!(reply.text(), "theme: dark, cart: 2 items");

        // Another visitor starts afresh.
        let reply = Visitor::new(&engine)
            .call(|s| async move { home(AppSession::load(s).await?).await })
            .await;
        assert_eq!(reply.text(), "theme: light, cart: 0 items");
    }

    #[tokio::test]
    async fn a_value_of_the_wrong_type_is_an_error_not_a_default() {
        let engine = engine();
        let mut visitor = Visitor::new(&engine);
        // Another part of the app, or an older release, stored the theme as a number.
        visitor
            .call(|s| async move {
                s.start().await?.set("theme", 7)?;
                Ok::<_, Error>("ok")
            })
            .await;
        let reply = visitor
            .call(|s| async move { home(AppSession::load(s).await?).await })
            .await;
        assert_eq!(reply.status, 500);
    }
}
