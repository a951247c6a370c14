//! What the benchmarks share: session-engine's handlers for each scenario, the same in the
//! criterion benches, the load server and the profiling loop. Every handler keeps its session's
//! counter under [`KEY`].

use session_engine::{Error, LazySession, Session};

/// The session key every handler reads or writes.
pub const KEY: &str = "visits";

/// The buckets (seconds) of the store call histogram, as the observability guide
/// (`docs/observability.md`) recommends them for Prometheus.
#[cfg(feature = "metrics")]
pub const STORE_CALL_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Installs Prometheus' recorder as an operator of the library would (the observability
/// guide's setup: the histogram's buckets, then the metrics' descriptions), so that with the
/// `metrics` feature every count and latency the engine records goes to a real recorder. The
/// caller runs the handle's upkeep, as it would before serving `render()`.
///
/// # Errors
///
/// A recorder is installed already.
#[cfg(feature = "metrics")]
pub fn install_prometheus() -> Result<metrics_exporter_prometheus::PrometheusHandle, String> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    use session_engine::observability::{self, STORE_CALL_SECONDS};

    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(STORE_CALL_SECONDS.to_owned()),
            &STORE_CALL_BUCKETS,
        )
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    observability::describe_metrics();
    Ok(handle)
}

/// b: the layer is there, the handler never touches the session. It takes `LazySession`, the
/// handle that reads nothing until it is started (tower-sessions' `Session` is lazy the same
/// way): the `Session` extractor starts the session, which reads the store, so a handler
/// taking it touches its session even if it never calls a method.
pub async fn untouched(_session: LazySession) -> &'static str {
    "ok"
}

/// d: a returning visitor reads the counter; the body is its value (0 if none).
pub async fn read(session: Session) -> Result<String, Error> {
    session.start().await?;
    Ok(session.get::<u64>(KEY)?.unwrap_or(0).to_string())
}

/// c and e: the counter goes up by one; the body is the new value.
pub async fn increment(session: Session) -> Result<String, Error> {
    session.start().await?;
    let visits = session.get::<u64>(KEY)?.unwrap_or(0) + 1;
    session.set(KEY, visits)?;
    Ok(visits.to_string())
}

/// A new session with the counter at 0 (the load client's cookies come from it).
pub async fn new(session: Session) -> Result<&'static str, Error> {
    session.start().await?;
    session.set(KEY, 0_u64)?;
    Ok("ok")
}

/// Sends `METHOD PATH`, with `cookie` as its `Cookie` header if any, through `app` in process;
/// the response if it answered 200, else what it answered.
pub async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    cookie: Option<&http::HeaderValue>,
) -> Result<axum::response::Response, String> {
    use tower::ServiceExt as _;
    let mut request = http::Request::builder().method(method).uri(path);
    if let Some(cookie) = cookie {
        request = request.header(http::header::COOKIE, cookie);
    }
    let request = request
        .body(axum::body::Body::empty())
        .map_err(|e| e.to_string())?;
    let response = app
        .clone()
        .oneshot(request)
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("{method} {path} answered {}", response.status()));
    }
    Ok(response)
}

/// The `Cookie` header a browser sends back after `response`: the `name=value` pairs of its
/// `Set-Cookie` headers, removals left out; `None` when there is none.
#[must_use]
pub fn cookie_from(response: &axum::response::Response) -> Option<http::HeaderValue> {
    let cookie = response
        .headers()
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|value| value.split(';').next())
        .filter(|pair| {
            pair.split_once('=')
                .is_some_and(|(_, value)| !value.is_empty())
        })
        .collect::<Vec<_>>()
        .join("; ");
    http::HeaderValue::from_str(&cookie)
        .ok()
        .filter(|_| !cookie.is_empty())
}

/// tower-sessions 0.15's handlers for the same scenarios, for the benches that compare.
pub mod tower_sessions_peer {
    use axum::http::StatusCode;
    use tower_sessions::Session;

    use super::KEY;

    fn failed(error: tower_sessions::session::Error) -> (StatusCode, String) {
        (StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
    }

    /// b: the layer is there, the handler never touches the session.
    pub async fn untouched(_session: Session) -> &'static str {
        "ok"
    }

    /// d: a returning visitor reads the counter.
    pub async fn read(session: Session) -> Result<String, (StatusCode, String)> {
        let visits = session.get::<u64>(KEY).await.map_err(failed)?.unwrap_or(0);
        Ok(visits.to_string())
    }

    /// c and e: the counter goes up by one.
    pub async fn increment(session: Session) -> Result<String, (StatusCode, String)> {
        let visits = session.get::<u64>(KEY).await.map_err(failed)?.unwrap_or(0) + 1;
        session.insert(KEY, visits).await.map_err(failed)?;
        Ok(visits.to_string())
    }
}
