//! [`capture`]: what `tracing` events a test's requests log, as text.

use std::sync::{Arc, Mutex, OnceLock};

use tracing::subscriber::DefaultGuard;

/// Everything a subscriber wrote while it was the test thread's default.
#[derive(Clone, Default)]
pub(crate) struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Captures every event of this thread (a `#[tokio::test]` runs its tasks on it) until the
/// guard is dropped.
pub(crate) fn capture() -> (Capture, DefaultGuard) {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let capture = capture.clone();
            move || capture.clone()
        })
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    // tracing-core caches each callsite's interest for the whole process and, while at most
    // one dispatcher exists, computes it from the registering thread's default alone: an
    // event first hit by a test on another thread (which has no subscriber) would stay
    // disabled here. A second dispatcher that lives as long as the process makes every
    // registration consult all dispatchers, this one included.
    static SECOND: OnceLock<tracing::Dispatch> = OnceLock::new();
    SECOND.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
    let guard = tracing::subscriber::set_default(subscriber);
    (capture, guard)
}
