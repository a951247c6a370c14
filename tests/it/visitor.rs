//! `testing::Visitor` driving a whole `Router`: its cookie and its session header kept between
//! requests, layers inside and outside the `SessionLayer`, `send` with headers of its own, and
//! `Reply::json`.

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{Next, from_fn};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};
use session_engine::testing::Visitor;
use session_engine::{Error, Session, SessionLayer};
use tower::util::MapResponseLayer;

use crate::faults::{Fault, Hook};
use crate::harness::{Harness, SECRET, builder, routes, sign};

#[tokio::test]
async fn a_visitor_keeps_its_cookie_through_the_router() {
    let h = Harness::new();
    let mut ada = Visitor::with_router(&h.engine, h.app.clone());
    assert_eq!(ada.get("/visits").await.text(), "1");
    let cookie = ada.cookie().expect("a session cookie").to_owned();
    assert!(cookie.starts_with("sid="), "{cookie}");
    assert_eq!(ada.get("/visits").await.text(), "2");
    // A route that takes the `LazySession` and never starts it: no cookie, the same one kept.
    let untouched = ada.get("/untouched").await;
    assert_eq!(untouched.text(), "ok");
    assert!(untouched.headers.get(SET_COOKIE).is_none());
    assert_eq!(ada.cookie(), Some(cookie.as_str()));
    assert_eq!(ada.get("/peek").await.text(), "2");
    // Another visitor has a session of its own.
    assert_eq!(ada.another().get("/peek").await.text(), "0");
    // A logout removes the cookie; the next visit is a new session.
    assert_eq!(ada.post("/logout", "").await.text(), "ok");
    assert_eq!(ada.cookie(), None);
    assert_eq!(ada.get("/visits").await.text(), "1");
    assert_ne!(ada.cookie(), Some(cookie.as_str()));
}

#[tokio::test]
async fn a_visitor_keeps_the_session_header_through_the_router() {
    let h = Harness::with(|b| b.header("x-session").cookie(false));
    let mut client = Visitor::with_router(&h.engine, h.app.clone());
    assert_eq!(client.get("/visits").await.text(), "1");
    assert_eq!(client.cookie(), None);
    assert!(client.header().is_some());
    assert_eq!(client.get("/visits").await.text(), "2");
    client.post("/logout", "").await;
    assert_eq!(client.header(), None);
}

/// Marks the session, as axum-login's layer reads it, before the handler runs.
async fn mark(session: Session, request: Request, next: Next) -> Result<Response, Error> {
    session.set("marked", true)?;
    Ok(next.run(request).await)
}

#[tokio::test]
async fn the_routers_layers_run_inside_and_outside_the_session_layer() {
    let h = Harness::new();
    let marked = Router::new()
        .route(
            "/marked",
            get(|session: Session| async move {
                Ok::<_, Error>(format!("{:?}", session.get::<bool>("marked")?))
            }),
        )
        .layer(from_fn(mark))
        .layer(MapResponseLayer::new(|mut response: Response| {
            response
                .headers_mut()
                .insert("x-route-layer", HeaderValue::from_static("yes"));
            response
        }));
    let app = routes()
        .merge(marked)
        .layer(SessionLayer::new(h.engine.clone()))
        // Outside the session layer: it sees the response with its `Set-Cookie`.
        .layer(MapResponseLayer::new(|mut response: Response| {
            let cookies = response.headers().get_all(SET_COOKIE).iter().count();
            let count = HeaderValue::from(cookies);
            response.headers_mut().insert("x-cookies", count);
            response
        }));
    let mut ada = Visitor::with_router(&h.engine, app);
    let reply = ada.get("/marked").await;
    assert_eq!(reply.text(), "Some(true)");
    assert_eq!(reply.headers["x-route-layer"], "yes");
    assert_eq!(reply.headers["x-cookies"], "1");
    assert!(ada.cookie().is_some());
    // The middleware's change was saved with the session.
    assert_eq!(
        ada.get("/all").await.json::<Value>().unwrap()["marked"],
        true
    );
    // A route without the route layer.
    let reply = ada.get("/peek").await;
    assert!(reply.headers.get("x-route-layer").is_none());
    assert_eq!(reply.headers["x-cookies"], "0");
}

#[tokio::test]
async fn call_and_the_router_share_the_visitors_session() {
    let h = Harness::new();
    let mut ada = Visitor::with_router(&h.engine, h.app.clone());
    ada.call(|session| async move {
        session.set("visits", 41)?;
        Ok::<_, Error>("ok")
    })
    .await;
    assert_eq!(ada.get("/visits").await.text(), "42");
    let reply = ada
        .call(|session| async move {
            let visits = session.get::<u64>("visits")?;
            Ok::<_, Error>(serde_json::to_string(&visits).unwrap())
        })
        .await;
    assert_eq!(reply.json::<Option<u64>>().unwrap(), Some(42));
}

#[tokio::test]
async fn send_keeps_the_cookie_a_request_brings() {
    let h = Harness::new();
    let mut ada = Visitor::with_router(&h.engine, h.app.clone());
    ada.get("/visits").await;
    ada.get("/visits").await;
    let own = ada.cookie().expect("a session").to_owned();
    // A request with a cookie of its own (one whose record does not exist) is sent as it is.
    let forged = format!("sid={}", sign(SECRET, "NoSuchSessionId0123456789abcdef"));
    let request = axum::http::Request::get("/visits")
        .header(COOKIE, &forged)
        .body(Body::empty())
        .unwrap();
    assert_eq!(ada.send(request).await.text(), "1");
    // Its answer's cookie is kept, as a browser would keep it.
    let fresh = ada.cookie().expect("a new session").to_owned();
    assert_ne!(fresh, own);
    assert_eq!(ada.get("/visits").await.text(), "2");
    // Without a `Cookie` header of its own, a request carries the visitor's.
    let request = axum::http::Request::get("/peek")
        .body(Body::empty())
        .unwrap();
    assert_eq!(ada.send(request).await.text(), "2");
}

#[tokio::test]
async fn r12_a_failure_answers_and_the_visitor_keeps_its_cookie() {
    let h = Harness::new();
    let mut ada = Visitor::with_router(&h.engine, h.app.clone());
    ada.get("/visits").await;
    let cookie = ada.cookie().map(str::to_owned);
    h.store.fail(Hook::Read, Fault::Unavailable);
    assert_eq!(
        ada.get("/visits").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    h.store.heal(Hook::Read);
    assert_eq!(ada.cookie().map(str::to_owned), cookie);
    assert_eq!(ada.get("/visits").await.text(), "2");
}

#[tokio::test]
async fn reply_json_reads_the_body_or_says_what_it_was() {
    let h = Harness::new();
    let mut ada = Visitor::with_router(&h.engine, h.app.clone());
    ada.get("/set?key=theme&value=dark").await;
    let all = ada.get("/all").await;
    assert_eq!(all.json::<Value>().unwrap(), json!({"theme": "dark"}));
    let as_map: HashMap<String, String> = all.json().unwrap();
    assert_eq!(as_map["theme"], "dark");
    // Not that JSON: the message names the type, says why and quotes the body.
    let error = all.json::<Vec<u64>>().unwrap_err();
    let message = format!("{error:?}");
    assert!(message.contains("Vec<u64>"), "{message}");
    assert!(message.contains("invalid type: map"), "{message}");
    assert!(message.contains(r#"{\"theme\":\"dark\"}"#), "{message}");
    assert_eq!(error.body(), r#"{"theme":"dark"}"#);
    // Not JSON at all.
    let error = ada.get("/health").await.json::<Value>().unwrap_err();
    assert!(error.to_string().ends_with(r#"the body: "ok""#), "{error}");
}

#[tokio::test]
#[should_panic(expected = "Visitor::with_router")]
async fn a_visitor_without_a_router_says_how_to_make_one() {
    let engine = builder().build().unwrap();
    Visitor::new(&engine).get("/").await;
}

#[tokio::test]
async fn a_router_with_state_and_typed_routes() {
    // `Router<S>` made whole with `with_state`, as an app's `main` serves it.
    #[derive(Clone)]
    struct Greeting(&'static str);
    let h = Harness::new();
    let app: Router = Router::new()
        .route(
            "/",
            get(
                |axum::extract::State(greeting): axum::extract::State<Greeting>,
                 session: Session| async move {
                    let n = session.get::<u64>("n")?.unwrap_or(0) + 1;
                    session.set("n", n)?;
                    Ok::<_, Error>(format!("{} {n}", greeting.0))
                },
            ),
        )
        .layer(SessionLayer::new(h.engine.clone()))
        .with_state(Greeting("hello"));
    let mut ada = Visitor::with_router(&h.engine, app);
    assert_eq!(ada.get("/").await.text(), "hello 1");
    assert_eq!(ada.get("/").await.text(), "hello 2");
}

#[tokio::test]
async fn a_boxed_service_that_is_not_sync_will_do() {
    let h = Harness::new();
    let boxed = tower::util::BoxCloneService::new(h.app.clone());
    let mut ada = Visitor::with_router(&h.engine, boxed);
    assert_eq!(ada.get("/visits").await.text(), "1");
    assert_eq!(ada.get("/visits").await.text(), "2");
}
