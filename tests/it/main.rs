//! The integration tests, in one binary: the rules of a request (named after them, R1 to R18)
//! over HTTP with `tower::ServiceExt::oneshot`, concurrency, the conformance suite and the
//! stores it catches, every bundled store against its real server, the `Typed` extractor and
//! the test helper `Visitor`.

mod api;
#[cfg(feature = "tower-sessions")]
mod compat;
mod concurrency;
#[cfg(feature = "testing")]
mod conformance;
mod demo;
mod docs;
mod faults;
mod harness;
mod logs;
mod net;
#[cfg(feature = "metrics")]
mod observability;
mod rules_destroy;
mod rules_end;
mod rules_failures;
mod rules_headers;
mod rules_races;
mod rules_request;
#[cfg(feature = "testing")]
mod stores;
mod transport;
mod typed;
mod users;
#[cfg(feature = "testing")]
mod visitor;
