// The README's links are written for the repository (relative paths to `docs/` and `src/`);
// these definitions come first, so in rustdoc they win (a link's first definition does, in
// CommonMark) and the same links lead to the pages of these docs.
#![doc = "[rules]: crate::rules"]
#![doc = "[lifecycle]: crate::guide::lifecycle"]
#![doc = "[users]: crate::guide::users"]
#![doc = "[header-transport]: crate::guide::header_transport"]
#![doc = "[security]: crate::guide::security"]
#![doc = "[features]: crate::guide::features"]
#![doc = "[stores]: crate::guide::stores"]
#![doc = "[custom-store]: crate::guide::custom_store"]
#![doc = "[testing-handlers]: crate::guide::testing_handlers"]
#![doc = "[observability]: crate::guide::observability"]
#![doc = "[performance]: crate::guide::performance"]
#![doc = "[tower-sessions]: crate::guide::tower_sessions"]
#![doc = "[axum-login]: crate::guide::axum_login"]
#![doc = "[hyper-express-session]: crate::guide::hyper_express_session"]
#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "tower-sessions")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower-sessions")))]
pub mod compat;
mod cookie;
mod engine;
mod error;
#[cfg(feature = "axum")]
mod extract;
// Wrappers for the fuzz targets in `fuzz/`: not a public API (see the module).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod guide;
mod id;
mod layer;
mod lifetime;
pub mod observability;
mod observe;
pub mod rules;
mod session;
mod signing;
pub mod store;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
#[cfg(feature = "axum")]
mod typed;

pub use crate::cookie::SameSite;
pub use crate::engine::{
    DEFAULT_DURATION, DEFAULT_MAX_DATA_BYTES, DEFAULT_MAX_SESSIONS_PER_USER, DEFAULT_STORE_TIMEOUT,
    SessionEngine, SessionEngineBuilder,
};
pub use crate::error::{ConfigError, DataError, Error};
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use crate::extract::{LazySession, MissingSessionLayer, SessionRejection};
pub use crate::layer::{ResponseFuture, SessionLayer, SessionService};
pub use crate::lifetime::MAX_DURATION;
pub use crate::session::{Session, UserSession};
#[cfg(feature = "memory-store")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory-store")))]
pub use crate::store::memory::MemoryStore;
pub use crate::store::{
    Changes, ExpiryRule, Record, RecordSummary, SessionStore, StoreError, StoreFuture, StoreKey,
    Touched, USER_KEY, WriteMode,
};
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use crate::typed::{SessionData, Typed};
