#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cookie;
mod engine;
mod error;
#[cfg(feature = "axum")]
mod extract;
mod layer;
mod session;
mod signing;
pub mod store;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use crate::cookie::SameSite;
pub use crate::engine::{
    DEFAULT_DURATION, DEFAULT_MAX_DATA_BYTES, MAX_DURATION, SessionEngine, SessionEngineBuilder,
};
pub use crate::error::{ConfigError, Error};
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use crate::extract::MissingSessionLayer;
pub use crate::layer::{ResponseFuture, SessionLayer, SessionService};
pub use crate::session::Session;
#[cfg(feature = "memory-store")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory-store")))]
pub use crate::store::memory::MemoryStore;
pub use crate::store::{Changes, Record, SessionStore, StoreError};
/// The attribute that implements [`SessionStore`]: re-exported so that a store needs no
/// dependency of its own on `async-trait`.
pub use async_trait::async_trait;
