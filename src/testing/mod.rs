//! Test helpers:
#![cfg_attr(feature = "axum", doc = "[`Visitor`],")]
#![cfg_attr(not(feature = "axum"), doc = "`Visitor` (feature `axum`),")]
//! which sends requests through an app, or calls a handler with a real `Session`, with no
//! server, and the store conformance suite,
//! which checks every rule of the storage contract (see [`SessionStore`]) against any store.
//!
//! Every store in this crate runs it, and a custom store can too:
//!
//! ```
//! use session_engine::testing::{Options, assert_conforms_with};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // `MemoryStore` sweeps expired records by itself; a store that does not uses
//! // `assert_conforms(&store)`, which also checks what `cleanup` counts.
//! let store = session_engine::MemoryStore::new();
//! assert_conforms_with(&store, Options::self_expiring()).await;
//! # }
//! ```
//!
//! Each check uses fresh random keys, so the suite can run against a shared server, and in
//! parallel with itself. It needs a tokio runtime with the time driver, and real time (not
//! `start_paused`): one check waits for a record to expire in the store. A run takes about
//! three seconds.

mod checks;
#[cfg(feature = "axum")]
mod visitor;

use std::fmt;

use crate::store::SessionStore;
#[cfg(feature = "axum")]
pub use visitor::{NotJson, Reply, Visitor};

/// A check that a store failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The check's name, such as `insert_never_overwrites`.
    pub check: &'static str,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.check, self.message)
    }
}

/// What the suite may expect of a store beyond the contract's common core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// The store removes expired records by itself (Redis key expiry, `MemoryStore`'s
    /// sweeping), so `cleanup` may find nothing left to remove and return 0. When false,
    /// `cleanup` must count the expired records it removed.
    pub self_expiring: bool,
}

impl Options {
    /// Options for a store whose backend removes expired records by itself.
    #[must_use]
    pub fn self_expiring() -> Self {
        Self {
            self_expiring: true,
        }
    }
}

/// Runs every check against `store` with the default [`Options`]; returns the failures.
///
/// # Errors
///
/// The checks that failed, each with what went wrong.
pub async fn check(store: &dyn SessionStore) -> Result<(), Vec<Failure>> {
    check_with(store, Options::default()).await
}

/// Runs every check against `store`; returns the failures, if any.
///
/// # Errors
///
/// The checks that failed, each with what went wrong.
pub async fn check_with(store: &dyn SessionStore, options: Options) -> Result<(), Vec<Failure>> {
    let failures = checks::run(store, options).await;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// Runs every check against `store` and panics with the list of failures, if any.
///
/// # Panics
///
/// When the store breaks a rule of the contract.
pub async fn assert_conforms(store: &dyn SessionStore) {
    assert_conforms_with(store, Options::default()).await;
}

/// [`assert_conforms`] with [`Options`].
///
/// # Panics
///
/// When the store breaks a rule of the contract.
pub async fn assert_conforms_with(store: &dyn SessionStore, options: Options) {
    if let Err(failures) = check_with(store, options).await {
        let list: Vec<String> = failures.iter().map(ToString::to_string).collect();
        panic!(
            "the store breaks {} rule(s) of the contract:\n  {}",
            list.len(),
            list.join("\n  ")
        );
    }
}
