//! `RedisStore` over TLS, against a Redis server that speaks nothing else and whose
//! certificate a CA of its own signed: the tests of a single server, each under a key prefix
//! of its own, and a CA that did not sign the server failing at `connect`, clearly.
//!
//! `REDIS_TLS_URL` names a running server, with its CA (`rediss://…?tls_ca_file=…`;
//! `scripts/test` starts one). Without it, the first test that needs the server starts one
//! with `scripts/redis-tls.sh` on port 7325, stopped once this test binary has exited (see
//! [`super::scripts`]).

use std::error::Error as _;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use session_engine::StoreError;
use session_engine::store::redis::{ConnectError, RedisStore};

use super::TempDir;
use super::redis::{Deployment, On};
use super::scripts::Script;

/// The server's URL: `REDIS_TLS_URL`, or a server started for this binary.
pub(crate) fn url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| Script("redis-tls").url_or_start("REDIS_TLS_URL", 7325))
}

/// `url` trusting `ca` instead of the CA it names (`None`: the platform's roots).
fn trusting(url: &str, ca: Option<&str>) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with("tls_ca_file="))
        .map(str::to_owned)
        .collect();
    pairs.extend(ca.map(|ca| format!("tls_ca_file={ca}")));
    if pairs.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", pairs.join("&"))
    }
}

/// The server over TLS, for [`On`].
pub(crate) struct Tls;

impl Deployment for Tls {
    fn url() -> &'static str {
        url()
    }
}

store_tests!(On<Tls>, spoilable);

/// `connect` to `url`, which must fail, and soon; its error, and the [`ConnectError`] in it.
async fn refused(url: &str) -> (StoreError, String) {
    let connecting = tokio::time::timeout(Duration::from_secs(10), RedisStore::connect(url));
    let error = connecting
        .await
        .expect("connect gives up within 10 s")
        .expect_err("connect fails");
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    (error, message)
}

/// A CA that did not sign the server's certificate: `connect` fails, at once, with a
/// [`ConnectError::CertificateRejected`] that names the CA file and says why.
#[tokio::test]
async fn a_wrong_ca_fails_at_connect_and_says_so() {
    let dir = TempDir::new();
    let ca = format!("{}/other-ca.pem", dir.path());
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=another CA", "-keyout"])
        .arg(format!("{}/other-ca.key", dir.path()))
        .args(["-out", &ca])
        .output()
        .expect("openssl runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    let (error, message) = refused(&trusting(url(), Some(&ca))).await;
    assert!(matches!(error, StoreError::Backend(_)), "{error:?}");
    let cause = error.source().expect("a source");
    let Some(ConnectError::CertificateRejected { ca_file, .. }) = cause.downcast_ref() else {
        panic!("not a rejected certificate: {message}");
    };
    assert_eq!(ca_file.as_deref(), Some(ca.as_ref()));
    assert!(
        message.contains("TLS handshake failed")
            && message.contains("certificate verification failed")
            && message.contains(&ca)
            && message.contains("UnknownIssuer"),
        "{message}"
    );
}

/// Without `tls_ca_file`, the platform's roots are trusted, and a private CA is not among
/// them (or the platform has none, which is said as clearly).
#[tokio::test]
async fn the_platform_roots_do_not_trust_a_private_ca() {
    let (error, message) = refused(&trusting(url(), None)).await;
    assert!(matches!(error, StoreError::Backend(_)), "{error:?}");
    let cause = error.source().expect("a source");
    assert!(
        matches!(
            cause.downcast_ref(),
            Some(
                ConnectError::CertificateRejected { ca_file: None, .. }
                    | ConnectError::NoPlatformRoots
            )
        ),
        "{message}"
    );
}

/// A plain-text client finds no server: the server speaks only TLS.
#[tokio::test]
async fn the_server_speaks_only_tls() {
    let plain = trusting(url(), None).replacen("rediss://", "redis://", 1);
    refused(&plain).await;
}
