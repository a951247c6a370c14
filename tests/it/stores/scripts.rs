//! The Redis deployments that `scripts/redis-*.sh` start on loopback (a Cluster, a TLS
//! server, a primary behind a Sentinel), for the tests that need them.
//!
//! `scripts/test` starts each once and names it in an environment variable. Without it, the
//! first test that needs a deployment starts one for this test binary, and a watcher process
//! stops it once the binary has exited. The tests share it through a `OnceLock`, so they may
//! run in parallel threads; a runner that gives each test a process of its own (as nextest
//! does) must set the variables instead.

use std::process::Command;

/// Puts in the background a watcher that waits for this process (`$1`) to exit, then stops
/// the deployment, unless another run has replaced it meanwhile (its first server's pidfile
/// `$2` no longer holds `$3`).
const WATCH: &str = r#"(
while kill -0 "$1" 2>/dev/null; do sleep 0.2; done
[ "$(cat "$2" 2>/dev/null)" = "$3" ] && exec "$4" stop "$5"
) </dev/null >/dev/null 2>&1 &"#;

/// One of the scripts, by name: `scripts/NAME.sh`, which keeps its servers' pidfiles in
/// `$TMPDIR/session-engine-NAME-FIRST_PORT/PORT.pid`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Script(pub(crate) &'static str);

impl Script {
    fn path(self) -> String {
        format!("{}/scripts/{}.sh", env!("CARGO_MANIFEST_DIR"), self.0)
    }

    /// The URL in the environment variable `var`, or else that of a deployment started on
    /// `first_port` for this test binary and stopped after it.
    pub(crate) fn url_or_start(self, var: &str, first_port: u16) -> String {
        std::env::var(var).unwrap_or_else(|_| {
            let url = self.start(first_port);
            self.stop_after_this_process(first_port);
            url
        })
    }

    /// Starts the deployment on `first_port` and returns its URL (the script's last line).
    pub(crate) fn start(self, first_port: u16) -> String {
        let output = Command::new(self.path())
            .args(["start", &first_port.to_string()])
            .output()
            .unwrap_or_else(|e| panic!("{} runs: {e}", self.0));
        assert!(
            output.status.success(),
            "{} did not start: {}",
            self.0,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .expect("the script prints the URL")
            .to_owned()
    }

    /// Stops the deployment on `first_port`.
    pub(crate) fn stop(self, first_port: u16) {
        let _ = Command::new(self.path())
            .args(["stop", &first_port.to_string()])
            .output();
    }

    fn stop_after_this_process(self, first_port: u16) {
        let tmp = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".to_owned());
        let port = first_port.to_string();
        let pidfile = format!("{tmp}/session-engine-{}-{port}/{port}.pid", self.0);
        let server = std::fs::read_to_string(&pidfile).expect("the first server's pidfile");
        let this = std::process::id().to_string();
        let script = self.path();
        let watching = Command::new("sh")
            .args([
                "-c",
                WATCH,
                "watch",
                &this,
                &pidfile,
                server.trim(),
                &script,
                &port,
            ])
            .status()
            .expect("the watcher starts");
        assert!(watching.success(), "the watcher starts: {watching}");
    }
}

/// A deployment a test started for itself, stopped when dropped (a failing test included).
#[derive(Debug)]
pub(crate) struct Own {
    script: Script,
    first_port: u16,
    /// Its URL.
    pub(crate) url: String,
}

impl Own {
    pub(crate) fn start(script: Script, first_port: u16) -> Self {
        let url = script.start(first_port);
        Self {
            script,
            first_port,
            url,
        }
    }
}

impl Drop for Own {
    fn drop(&mut self) {
        self.script.stop(self.first_port);
    }
}
