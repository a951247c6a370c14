//! Typed session data: each of the app's own structs is kept under one key, named once with
//! [`SessionData`], and handlers take [`Typed<T>`](Typed) instead of spelling keys and types;
//! with its tests, which drive the whole app through
//! [`testing::Visitor`](session_engine::testing::Visitor) (no server).
//!
//! ```sh
//! cargo run --example typed      # on 127.0.0.1:3000 (PORT to change it)
//! curl -si -X POST 'localhost:3000/theme?name=dark'
//! cargo test --example typed --features testing
//! ```
//!
//! | route | does |
//! | --- | --- |
//! | `GET /` | `theme: light, cart: 0 items` |
//! | `POST /theme?name=dark` | sets the theme (`light` or `dark`; anything else is a 400) |
//! | `POST /cart?item=NAME` | adds an item; body = the items, one per line |

use std::net::{Ipv4Addr, SocketAddr};

use axum::Router;
use axum::extract::Query;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use session_engine::{Error, SessionData, SessionEngine, SessionLayer, Typed};

// ---- the session's data: each type and its key, named once ----

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Theme {
    #[default]
    Light,
    Dark,
}

#[derive(Default, Serialize, Deserialize)]
struct Prefs {
    theme: Theme,
}

impl SessionData for Prefs {
    const KEY: &'static str = "prefs";
}

#[derive(Default, Serialize, Deserialize)]
struct Cart {
    items: Vec<String>,
}

impl SessionData for Cart {
    const KEY: &'static str = "cart";
}

// ---- the app ----

async fn home(prefs: Typed<Prefs>, cart: Typed<Cart>) -> String {
    let theme = match prefs.theme {
        Theme::Light => "light",
        Theme::Dark => "dark",
    };
    format!("theme: {theme}, cart: {} items", cart.items.len())
}

#[derive(Deserialize)]
struct SetTheme {
    name: Theme,
}

async fn set_theme(
    mut prefs: Typed<Prefs>,
    Query(q): Query<SetTheme>,
) -> Result<&'static str, Error> {
    prefs.set(Prefs { theme: q.name })?;
    Ok("ok")
}

#[derive(Deserialize)]
struct AddItem {
    item: String,
}

async fn add_to_cart(mut cart: Typed<Cart>, Query(q): Query<AddItem>) -> Result<String, Error> {
    cart.update(|cart| cart.items.push(q.item))?;
    Ok(cart.items.join("\n"))
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

// ---- its tests: `cargo test --example typed --features testing` ----

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use session_engine::testing::Visitor;

    fn visitor() -> Visitor {
        let engine = SessionEngine::builder()
            .secret("a test secret of at least 32 bytes")
            .build()
            .expect("the test engine builds");
        Visitor::with_router(&engine, app(engine.clone()))
    }

    #[tokio::test]
    async fn the_theme_and_the_cart_are_kept_per_visitor() {
        let mut ada = visitor();
        assert_eq!(ada.get("/").await.text(), "theme: light, cart: 0 items");
        // Reading the defaults stored nothing: no session yet.
        assert_eq!(ada.cookie(), None);

        assert_eq!(ada.post("/theme?name=dark", "").await.text(), "ok");
        assert_eq!(ada.post("/cart?item=tea", "").await.text(), "tea");
        assert_eq!(
            ada.post("/cart?item=scones", "").await.text(),
            "tea\nscones"
        );
        assert_eq!(ada.get("/").await.text(), "theme: dark, cart: 2 items");

        // Another visitor starts afresh.
        let reply = ada.another().get("/").await;
        assert_eq!(reply.text(), "theme: light, cart: 0 items");
    }

    #[tokio::test]
    async fn a_value_of_another_shape_is_an_error_not_a_default() {
        let mut ada = visitor();
        ada.post("/theme?name=dark", "").await;
        // An older release kept the cart as a number.
        ada.call(|session| async move {
            session.set("cart", 7)?;
            Ok::<_, Error>("ok")
        })
        .await;
        assert_eq!(ada.get("/").await.status, 500);
        assert_eq!(ada.post("/cart?item=tea", "").await.status, 500);
        // The rest of the session is untouched.
        assert_eq!(ada.post("/theme?name=light", "").await.text(), "ok");
    }
}
