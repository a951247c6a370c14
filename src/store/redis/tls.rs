//! TLS for [`RedisStore::connect`](super::RedisStore::connect) (feature `redis-tls`): rustls
//! on ring, verifying the server against the platform's root certificates or against the CA
//! file a URL names, and saying which of them refused the server when a handshake fails.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use fred::error::Error as RedisError;
use fred::rustls::client::WebPkiServerVerifier;
use fred::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use fred::rustls::crypto::{CryptoProvider, ring};
use fred::rustls::pki_types::pem::PemObject as _;
use fred::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use fred::rustls::{
    self, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use fred::types::config::{TlsConfig, TlsConnector, TlsHostMapping};

use super::ConnectError;
use crate::store::StoreError;

/// What a TLS connection trusts to sign the server's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Roots {
    /// The platform's root certificates.
    Platform,
    /// The certificates in this PEM file, and no others.
    CaFile(PathBuf),
}

/// The TLS settings of one client, and what its verifier saw.
pub(super) struct Tls {
    verifier: Arc<Verifier>,
    config: TlsConfig,
}

impl Tls {
    /// TLS that trusts `roots`.
    pub(super) fn new(roots: Roots) -> Result<Self, ConnectError> {
        let store = match &roots {
            Roots::CaFile(path) => ca_roots(path)?,
            Roots::Platform => platform_roots()?,
        };
        let provider = Arc::new(ring::default_provider());
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
            .build()
            .map_err(|error| ConnectError::Tls(Box::new(error)))?;
        let verifier = Arc::new(Verifier {
            inner: webpki,
            trusted: roots,
            rejected: Mutex::new(None),
        });
        let client = client_config(provider, verifier.clone())?;
        Ok(Self {
            verifier,
            config: TlsConfig {
                connector: TlsConnector::from(client),
                hostnames: TlsHostMapping::None,
            },
        })
    }

    /// The settings for fred's [`Config`](fred::types::config::Config).
    pub(super) fn config(&self) -> TlsConfig {
        self.config.clone()
    }

    /// The error of a first connection that failed: the certificate the verifier refused, if
    /// it refused one, else the Redis error as the hooks report it.
    pub(super) fn connect_error(&self, error: RedisError) -> StoreError {
        let rejected = self
            .verifier
            .rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match rejected {
            Some(reason) => StoreError::backend(ConnectError::CertificateRejected {
                ca_file: match &self.verifier.trusted {
                    Roots::CaFile(path) => Some(path.clone()),
                    Roots::Platform => None,
                },
                source: Box::new(reason),
            }),
            None => super::error(error),
        }
    }
}

fn client_config(
    provider: Arc<CryptoProvider>,
    verifier: Arc<Verifier>,
) -> Result<ClientConfig, ConnectError> {
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ConnectError::Tls(Box::new(error)))?
        .dangerous() // the verifier is webpki's own, only watched: see `Verifier`
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The certificates of a PEM file, every one of which must parse.
fn ca_roots(path: &Path) -> Result<RootCertStore, ConnectError> {
    let pem = std::fs::read(path).map_err(|source| ConnectError::CaFile {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |error: Box<dyn std::error::Error + Send + Sync>| ConnectError::CaFileInvalid {
        path: path.to_owned(),
        source: error,
    };
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate = certificate.map_err(|error| invalid(Box::new(error)))?;
        roots
            .add(certificate)
            .map_err(|error| invalid(Box::new(error)))?;
    }
    if roots.is_empty() {
        return Err(ConnectError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

/// The platform's root certificates (`SSL_CERT_FILE` and `SSL_CERT_DIR` override where they
/// are read from). One the platform holds but rustls cannot parse is skipped, as browsers do;
/// none at all is an error, since no server could then be verified.
fn platform_roots() -> Result<RootCertStore, ConnectError> {
    let found = fred::rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (_, skipped) = roots.add_parsable_certificates(found.certs);
    if skipped > 0 || !found.errors.is_empty() {
        tracing::debug!(
            skipped,
            errors = found.errors.len(),
            "some of the platform's root certificates could not be loaded"
        );
    }
    if roots.is_empty() {
        return Err(ConnectError::NoPlatformRoots);
    }
    Ok(roots)
}

/// webpki's verifier, which keeps the reason it last refused a server's certificate: fred
/// reports a failed handshake as a bare I/O error, and `connect` tells the user which
/// certificate was refused, and against what.
#[derive(Debug)]
struct Verifier {
    inner: Arc<WebPkiServerVerifier>,
    /// What it trusts, to say so when it refuses a certificate.
    trusted: Roots,
    /// Why the last certificate verified was refused; `None` once one verifies.
    ///
    /// A sync mutex: it is held only to put in or take out an error, never across an
    /// `.await`, and the handshake that sets it runs in a synchronous callback.
    rejected: Mutex<Option<rustls::Error>>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        *self.rejected.lock().unwrap_or_else(PoisonError::into_inner) =
            verified.as_ref().err().cloned();
        verified
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of the test's own holding `pem`, removed when dropped.
    struct PemFile(PathBuf);

    impl PemFile {
        fn new(pem: &str) -> Self {
            let name = format!(
                "session-engine-ca-{}.pem",
                crate::store::random_id().unwrap()
            );
            let path = std::env::temp_dir().join(name);
            std::fs::write(&path, pem).unwrap();
            Self(path)
        }
    }

    impl Drop for PemFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn refused(ca_file: PathBuf) -> ConnectError {
        match Tls::new(Roots::CaFile(ca_file)) {
            Ok(_) => panic!("a CA file that is not one is refused"),
            Err(error) => error,
        }
    }

    #[test]
    fn a_ca_file_must_be_readable_and_hold_valid_certificates() {
        let missing = std::env::temp_dir().join("session-engine-no-such-ca.pem");
        let error = refused(missing.clone());
        assert!(matches!(&error, ConnectError::CaFile { path, .. } if *path == missing));
        assert!(error.to_string().contains("no-such-ca.pem"), "{error}");

        let empty = PemFile::new("not a certificate\n");
        let error = refused(empty.0.clone());
        assert!(
            matches!(error, ConnectError::NoCertificate { .. }),
            "{error:?}"
        );

        let bad = PemFile::new("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let error = refused(bad.0.clone());
        assert!(
            matches!(error, ConnectError::CaFileInvalid { .. }),
            "{error:?}"
        );
    }
}
