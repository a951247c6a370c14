//! What the benchmarks share: session-engine's handlers for each scenario, the same in the
//! criterion benches, the load server and the profiling loop. Every handler keeps its session's
//! counter under [`KEY`].

use session_engine::{Error, Session};

/// The session key every handler reads or writes.
pub const KEY: &str = "visits";

/// b: the layer is there, the handler never touches the session.
pub async fn untouched(_session: Session) -> &'static str {
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
