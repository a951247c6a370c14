//! Sessions tied to users, apart from the store scenarios (`stores::users`, over every store):
//! what `build()` refuses, what an engine without `track_users` answers, and a user with no
//! session.

use std::sync::Arc;

use axum::routing::post;
use session_engine::{ConfigError, Error, Session, SessionStore};

use crate::faults::FaultyStore;
use crate::harness::{builder, engine_on, post_with, serve};

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
