//! Sessions tied to users, apart from the store scenarios (`stores::users`, over every store):
//! what `build()` refuses, what an engine without `track_users` answers, and a user with no
//! session.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::{get, post};
use session_engine::{ConfigError, Error, Session, SessionStore};

use crate::faults::FaultyStore;
use crate::harness::{Harness, MINUTE, builder, engine_on, max_age, post_with, serve};

#[tokio::test]
async fn track_users_on_a_store_without_the_index_fails_at_build_not_at_a_request() {
    let store = FaultyStore::new();
    store.without_user_index();
    let store: Arc<dyn SessionStore> = store;
    let refused = builder()
        .shared_store(store.clone())
        .track_users(true)
        .build();
    assert!(
        matches!(refused, Err(ConfigError::UsersNotIndexed)),
        "{refused:?}"
    );
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("track_users"), "{message}");
    // Without `track_users`, the same store serves.
    let engine = builder().shared_store(store).build();
    assert!(engine.is_ok(), "{engine:?}");
}

#[tokio::test]
async fn without_track_users_tying_listing_and_ending_are_a_clear_error() {
    let engine = engine_on(FaultyStore::new());
    let listed = engine.user_sessions("ada").await;
    assert!(matches!(listed, Err(Error::UsersNotTracked)), "{listed:?}");
    let ended = engine.end_user_sessions("ada").await;
    assert!(matches!(ended, Err(Error::UsersNotTracked)), "{ended:?}");

    async fn tie(session: Session) -> String {
        let tied = async {
            session.start().await?;
            session.set_user("ada").map(|_| ())
        };
        format!("{:?}", tied.await)
    }
    let app = serve(engine, axum::Router::new().route("/tie", post(tie)));
    let reply = post_with(&app, "/tie", None).await;
    assert_eq!(reply.body, "Err(UsersNotTracked)");
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
}

#[tokio::test]
async fn a_user_with_no_session_is_listed_empty_and_ending_their_sessions_ends_none() {
    let store = FaultyStore::new();
    let engine = builder()
        .shared_store(store)
        .track_users(true)
        .build()
        .unwrap();
    assert_eq!(engine.user_sessions("nobody").await.unwrap(), []);
    assert_eq!(engine.end_user_sessions("nobody").await.unwrap(), 0);
}

/// The absolute lifetime runs from the last login (ASVS: from authentication), not from the
/// anonymous visit that came before it.
#[tokio::test]
async fn r6_max_lifetime_runs_from_the_last_login() {
    let login =
        Router::new()
            .route(
                "/tie",
                post(
                    |session: Session, Query(q): Query<HashMap<String, String>>| async move {
                        session.roll().await?;
                        session.set_user(q["user"].clone())?;
                        Ok::<_, Error>("ok")
                    },
                ),
            )
            .route(
                "/who",
                get(|session: Session| async move {
                    Ok::<_, Error>(session.user()?.unwrap_or_default())
                }),
            );
    let h = Harness::serving(
        |b| {
            b.track_users(true)
                .duration(2 * 60 * MINUTE)
                .max_lifetime(60 * MINUTE)
        },
        login,
    );
    let (cookie, _) = h.new_session().await;
    // Logged in 59 minutes into an anonymous visit.
    h.advance(59 * MINUTE);
    let reply = h.post("/tie?user=ada", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        max_age(reply.set_cookie()),
        3600,
        "the whole lifetime from the login"
    );
    let cookie = reply.cookie();
    // Past an hour from the visit, but not from the login: still logged in.
    h.advance(2 * MINUTE);
    assert_eq!(h.get("/who", Some(&cookie)).await.body, "ada");
    // An hour after the login: gone, however recently it was used.
    h.advance(58 * MINUTE - Duration::from_millis(1));
    assert_eq!(h.get("/who", Some(&cookie)).await.body, "ada");
    h.advance(Duration::from_millis(1));
    assert_eq!(h.get("/who", Some(&cookie)).await.body, "");
}
