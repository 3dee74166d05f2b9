//! TLS to a `wss://` bridge: which certificates the client accepts ([`TlsTrust`]: the platform's
//! roots, a deployment's own CA, or one pinned certificate), the rustls connector made from that,
//! and [`TlsError`], which names why a handshake failed (unknown issuer, name mismatch,
//! fingerprint mismatch, expiry) instead of passing on rustls' message.
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use streams_proto::CertFingerprint;
use tokio_rustls::TlsConnector;

/// Which TLS certificates a client accepts from a `wss://` bridge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TlsTrust {
    /// A certificate issued for the bridge's host name by an authority the platform trusts (the
    /// system's root store). The default, for bridges with a public certificate.
    #[default]
    PlatformRoots,
    /// A certificate issued for the bridge's host name by one of these authorities (DER): a
    /// deployment's own CA.
    Roots(Vec<Vec<u8>>),
    /// Exactly the certificate with this SHA-256 fingerprint, whoever issued it and whatever names
    /// it carries: a bridge with a self-signed certificate (`streams-bridge --tls-self-signed`
    /// prints it).
    Pinned(CertFingerprint),
}

/// Why a TLS connection to the bridge failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate is not signed by an authority this client trusts (a self-signed bridge
    /// needs its fingerprint pinned).
    #[error(
        "the bridge's certificate is not issued by a trusted authority (unknown issuer); pin its fingerprint or trust its CA"
    )]
    UnknownIssuer,
    /// The certificate is not valid for the host name connected to.
    #[error("the bridge's certificate is not valid for the name {host:?}")]
    NameMismatch {
        /// The name in the URL.
        host: String,
    },
    /// The certificate is not the pinned one.
    #[error("the bridge's certificate has the fingerprint {presented}, not the pinned {expected}")]
    FingerprintMismatch {
        /// The pin.
        expected: CertFingerprint,
        /// What the bridge presented.
        presented: CertFingerprint,
    },
    /// The certificate has expired or is not valid yet.
    #[error("the bridge's certificate has expired or is not valid yet")]
    Expired,
    /// The certificate cannot be checked (malformed, unsupported, revoked, or the trust settings
    /// hold no usable root).
    #[error("the bridge's certificate cannot be verified: {0}")]
    BadCertificate(String),
    /// The host in the URL is not a name TLS can verify.
    #[error("{0:?} is not a host name TLS can check")]
    InvalidName(String),
    /// Anything else in the handshake (protocol versions, ciphers, a reset connection).
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
}

/// The rustls connector for `trust`.
pub(crate) fn connector(trust: &TlsTrust) -> Result<TlsConnector, TlsError> {
    let mut config = client_config(trust)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// What a TURN server's TLS (`turns:`) is checked against: the platform's roots (which
/// `SSL_CERT_FILE` / `SSL_CERT_DIR` replace). Reads certificate files: not for a media thread.
pub fn turn_client_config() -> Result<Arc<ClientConfig>, TlsError> {
    client_config(&TlsTrust::PlatformRoots).map(Arc::new)
}

fn client_config(trust: &TlsTrust) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Handshake(e.to_string()))?;
    let config = match trust {
        TlsTrust::PlatformRoots => {
            let found = rustls_native_certs::load_native_certs();
            if let Some(error) = found.errors.first() {
                tracing::debug!("some platform certificates could not be read: {error}");
            }
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            tracing::debug!("trusting {added} platform root certificates");
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsTrust::Roots(ders) => {
            let mut roots = RootCertStore::empty();
            for der in ders {
                roots
                    .add(CertificateDer::from(der.clone()))
                    .map_err(|e| TlsError::BadCertificate(format!("a trusted root: {e}")))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsTrust::Pinned(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
                pin: *pin,
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// The name TLS checks for `host` (a DNS name or an IP address).
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_owned()).map_err(|_| TlsError::InvalidName(host.to_owned()))
}

/// What a failed handshake to `host` (tokio-rustls' error) means.
pub(crate) fn classify(error: &std::io::Error, host: &str) -> TlsError {
    let Some(rustls_error) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return TlsError::Handshake(error.to_string());
    };
    match rustls_error {
        rustls::Error::InvalidCertificate(certificate) => match certificate {
            CertificateError::UnknownIssuer => TlsError::UnknownIssuer,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsError::NameMismatch {
                    host: host.to_owned(),
                }
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => TlsError::Expired,
            CertificateError::Other(other) => match other.0.downcast_ref::<TlsError>() {
                Some(ours) => ours.clone(),
                None => TlsError::BadCertificate(other.to_string()),
            },
            other => TlsError::BadCertificate(format!("{other:?}")),
        },
        other => TlsError::Handshake(other.to_string()),
    }
}

/// Accepts exactly the pinned certificate; the handshake's signatures are still checked against
/// it, so only the holder of its key can complete the handshake.
#[derive(Debug)]
struct PinnedCertificate {
    pin: CertFingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = CertFingerprint::of_der(end_entity);
        if presented == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        let mismatch = TlsError::FingerprintMismatch {
            expected: self.pin,
            presented,
        };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(mismatch)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
