//! Guides: how each part of session-engine works and how to use it, beyond the API reference.
//! Each is a page of its own, also readable as markdown in the repository's `docs/`, and each
//! code block in them is compiled, and run, as a test.
//!
//! The behaviour contract itself, numbered, is the [rules page](crate::rules).

// Each guide's links are written for the markdown files in `docs/` (relative to them); the
// definitions given here first take precedence in rustdoc (a link's first definition wins in
// CommonMark), so that the same links lead to the pages of these docs.

#[doc = "[rules]: crate::rules"]
#[doc = include_str!("../../docs/lifecycle.md")]
pub mod lifecycle {}

#[doc = include_str!("../../docs/users.md")]
pub mod users {}

#[doc = include_str!("../../docs/header-transport.md")]
pub mod header_transport {}

#[doc = "[rules]: crate::rules"]
#[doc = include_str!("../../docs/security.md")]
pub mod security {}

#[doc = "[observability]: crate::guide::observability"]
#[doc = include_str!("../../docs/features.md")]
pub mod features {}

#[doc = include_str!("../../docs/stores.md")]
pub mod stores {}

#[doc = "[session-store]: crate::SessionStore"]
#[doc = include_str!("../../docs/custom-store.md")]
pub mod custom_store {}

#[doc = include_str!("../../docs/testing-handlers.md")]
pub mod testing_handlers {}

#[doc = "[stores]: crate::guide::stores"]
#[doc = include_str!("../../docs/performance.md")]
pub mod performance {}

#[doc = "[custom-store]: crate::guide::custom_store"]
#[doc = "[axum-login]: crate::guide::axum_login"]
#[doc = include_str!("../../docs/tower-sessions.md")]
pub mod tower_sessions {}

#[doc = "[tower-sessions]: crate::guide::tower_sessions"]
#[doc = include_str!("../../docs/axum-login.md")]
pub mod axum_login {}

#[doc = "[session-store-name]: crate::SessionStore::name"]
#[doc = "[observability]: crate::observability"]
#[doc = include_str!("../../docs/observability.md")]
pub mod observability {}

#[doc = include_str!("../../docs/hyper-express-session.md")]
pub mod hyper_express_session {}
