//! The `Typed` extractor over HTTP: absent values, changes kept across requests and written as
//! deltas, a stored value of another shape, no layer, and a store that fails at its start.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use session_engine::{Error, SessionData, Typed};
use tokio::sync::Barrier;

use crate::faults::{Fault, Hook};
use crate::harness::{Harness, get_with, store_key};

#[derive(Default, Serialize, Deserialize)]
struct Cart {
    items: Vec<String>,
}

impl SessionData for Cart {
    const KEY: &'static str = "cart";
}

#[derive(Default, Serialize, Deserialize)]
struct Prefs {
    theme: String,
}

impl SessionData for Prefs {
    const KEY: &'static str = "prefs";
}

type Params = Query<HashMap<String, String>>;

/// | route | does |
/// | --- | --- |
/// | `GET /cart` | the items, joined by `,` |
/// | `POST /cart?item=NAME` | adds an item; body = the number of items |
/// | `POST /theme?name=NAME` | sets the theme; `ok` |
fn cart_routes() -> Router {
    Router::new()
        .route(
            "/cart",
            get(|cart: Typed<Cart>| async move { cart.items.join(",") }).post(
                |mut cart: Typed<Cart>, Query(q): Params| async move {
                    cart.update(|cart| cart.items.push(q["item"].clone()))?;
                    Ok::<_, Error>(cart.items.len().to_string())
                },
            ),
        )
        .route(
            "/theme",
            post(|mut prefs: Typed<Prefs>, Query(q): Params| async move {
                prefs.set(Prefs {
                    theme: q["name"].clone(),
                })?;
                Ok::<_, Error>("ok")
            }),
        )
}

#[tokio::test]
async fn r7_an_absent_value_reads_as_its_default_and_stores_nothing() {
    let h = Harness::serving(|b| b, cart_routes());
    let reply = h.get("/cart", None).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, ""));
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    assert!(h.store.written_keys().is_empty());
    // A returning visitor's read stores nothing either.
    let (cookie, id) = h.new_session().await;
    assert_eq!(h.get("/cart", Some(&cookie)).await.body, "");
    assert!(h.store.written_keys().is_empty());
    let data = h.record(&id).await.expect("the session is stored").data;
    assert_eq!(data.get("cart"), None);
}

#[tokio::test]
async fn an_update_is_kept_across_requests() {
    let h = Harness::serving(|b| b, cart_routes());
    let first = h.post("/cart?item=tea", None).await;
    assert_eq!(first.body, "1");
    let cookie = first.cookie();
    assert_eq!(h.post("/cart?item=scones", Some(&cookie)).await.body, "2");
    assert_eq!(h.get("/cart", Some(&cookie)).await.body, "tea,scones");
    let data = h.record(&first.cookie_id()).await.expect("stored").data;
    assert_eq!(data["cart"], json!({"items": ["tea", "scones"]}));
}

#[tokio::test]
async fn two_requests_changing_two_types_both_keep_their_change() {
    // Both requests read the session before either writes: each write carries only the key
    // its handler changed, so neither undoes the other's.
    let barrier = Arc::new(Barrier::new(2));
    let (cart_barrier, prefs_barrier) = (barrier.clone(), barrier);
    let routes = Router::new()
        .route(
            "/slow-cart",
            post(|mut cart: Typed<Cart>| async move {
                cart_barrier.wait().await;
                cart.update(|cart| cart.items.push("tea".to_owned()))?;
                Ok::<_, Error>("ok")
            }),
        )
        .route(
            "/slow-theme",
            post(|mut prefs: Typed<Prefs>| async move {
                prefs_barrier.wait().await;
                prefs.update(|prefs| prefs.theme = "dark".to_owned())?;
                Ok::<_, Error>("ok")
            }),
        );
    let h = Arc::new(Harness::serving(|b| b, routes));
    let (cookie, id) = h.new_session().await;
    let requests = ["/slow-cart", "/slow-theme"].map(|uri| {
        let (h, cookie) = (h.clone(), cookie.clone());
        tokio::spawn(async move { h.post(uri, Some(&cookie)).await })
    });
    for request in requests {
        assert_eq!(request.await.unwrap().status, StatusCode::OK);
    }
    let data = h.record(&id).await.expect("stored").data;
    assert_eq!(data["cart"], json!({"items": ["tea"]}));
    assert_eq!(data["prefs"], json!({"theme": "dark"}));
    assert_eq!(data["visits"], json!(1));
}

#[tokio::test]
async fn a_stored_value_of_another_shape_is_a_500_naming_the_key_and_the_session_lives_on() {
    let h = Harness::serving(|b| b, cart_routes());
    let (cookie, id) = h.new_session().await;
    // An older release kept the cart as a string.
    let set = h.get("/set?key=cart&value=tea", Some(&cookie)).await;
    assert_eq!(set.status, StatusCode::OK);
    let (logs, _guard) = crate::logs::capture();
    for reply in [
        h.get("/cart", Some(&cookie)).await,
        h.post("/cart?item=jam", Some(&cookie)).await,
    ] {
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(reply.body, "");
        assert!(reply.set_cookies.is_empty(), "{reply:?}");
    }
    let logs = logs.text();
    assert!(
        logs.contains(r#"the session value under "cart" is not of the type asked for"#),
        "{logs}"
    );
    // The session and its other keys still work, and the cart is as it was.
    assert_eq!(h.get("/visits", Some(&cookie)).await.body, "2");
    assert_eq!(h.post("/theme?name=dark", Some(&cookie)).await.body, "ok");
    let data = h.record(&id).await.expect("stored").data;
    assert_eq!(data["cart"], Value::from("tea"));
    assert_eq!(data["prefs"], json!({"theme": "dark"}));
}

#[tokio::test]
async fn the_extractor_without_the_layer_is_a_500_naming_session_layer() {
    let app: Router = cart_routes().with_state(());
    let reply = get_with(&app, "/cart", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        reply.body,
        "the Session extractor needs a SessionLayer around this route"
    );
}

#[tokio::test]
async fn r12_a_store_that_fails_at_the_extractors_start_answers_503_or_500() {
    let h = Harness::serving(|b| b, cart_routes());
    let first = h.post("/cart?item=tea", None).await;
    let cookie = first.cookie();
    for (fault, status) in [
        (Fault::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
        (Fault::Backend, StatusCode::INTERNAL_SERVER_ERROR),
    ] {
        h.store.fail(Hook::Read, fault);
        let reply = h.post("/cart?item=jam", Some(&cookie)).await;
        assert_eq!(reply.status, status, "{fault:?}");
        assert_eq!(reply.body, "", "{fault:?}");
        assert!(reply.set_cookies.is_empty(), "{fault:?}");
        h.store.heal(Hook::Read);
    }
    // A new visitor's start fails at the store's `id` hook.
    h.store.fail(Hook::Id, Fault::Unavailable);
    let reply = h.get("/cart", None).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    h.store.heal(Hook::Id);
    // Nothing was lost.
    assert_eq!(h.get("/cart", Some(&cookie)).await.body, "tea");
    assert!(
        h.store
            .written_keys()
            .iter()
            .all(|key| *key == store_key(&first.cookie_id()))
    );
}
