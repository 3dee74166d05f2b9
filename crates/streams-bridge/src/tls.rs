//! TLS for signaling (`wss://`): where the bridge's certificate comes from ([`TlsSource`]: PEM files
//! from the operator, or a self-signed development certificate kept in the data directory) and
//! the rustls acceptor made from it ([`TlsServer`]), with the certificate's fingerprint for clients
//! to pin.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use streams_proto::CertFingerprint;
use tokio_rustls::TlsAcceptor;

/// The self-signed certificate's file in its directory.
pub const SELF_SIGNED_CERT: &str = "tls-self-signed.crt";
/// The self-signed certificate's private key (owner-only) in its directory.
pub const SELF_SIGNED_KEY: &str = "tls-self-signed.key";

/// Where the bridge's TLS certificate comes from.
#[derive(Clone, Debug)]
pub enum TlsSource {
    /// PEM files: the certificate chain (the bridge's own certificate first) and its private key.
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// The private key (PKCS #8, PKCS #1 or SEC 1).
        key: PathBuf,
    },
    /// A self-signed certificate for development, made on the first start and kept in `dir`
    /// ([`SELF_SIGNED_CERT`], [`SELF_SIGNED_KEY`]), so a client's pin of its fingerprint survives
    /// restarts. Valid for `names` (host names or IP addresses).
    SelfSigned {
        /// The directory (the bridge's data directory).
        dir: PathBuf,
        /// The names it is made for.
        names: Vec<String>,
    },
}

/// The bridge's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// A file could not be read or holds no usable PEM.
    #[error("cannot read {what} from {}: {why}", path.display())]
    Read {
        /// Certificate or key.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The self-signed certificate could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The self-signed certificate could not be made.
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate and key (they do not belong together, or are unsupported).
    #[error("the certificate and key cannot be used: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A loaded certificate: the acceptor that wraps connections, and the certificate's fingerprint.
#[derive(Clone)]
pub struct TlsServer {
    acceptor: TlsAcceptor,
    fingerprint: CertFingerprint,
}

impl TlsServer {
    /// Loads (or, for [`TlsSource::SelfSigned`], makes on first use) the certificate.
    pub fn load(source: &TlsSource) -> Result<Self, TlsSetupError> {
        let (cert, key) = match source {
            TlsSource::Files { cert, key } => (cert.clone(), key.clone()),
            TlsSource::SelfSigned { dir, names } => ensure_self_signed(dir, names)?,
        };
        let chain = read_chain(&cert)?;
        let key_der = PrivateKeyDer::from_pem_file(&key).map_err(|e| TlsSetupError::Read {
            what: "a private key",
            path: key.clone(),
            why: e.to_string(),
        })?;
        let fingerprint = CertFingerprint::of_der(&chain[0]);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsServer {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            fingerprint,
        })
    }

    /// The SHA-256 fingerprint of the bridge's certificate.
    pub fn fingerprint(&self) -> CertFingerprint {
        self.fingerprint
    }

    /// The acceptor for incoming connections.
    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let failed = |why: String| TlsSetupError::Read {
        what: "a certificate",
        path: path.to_owned(),
        why,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| failed(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(e.to_string()))?;
    if chain.is_empty() {
        return Err(failed("no CERTIFICATE block in it".into()));
    }
    Ok(chain)
}

/// The self-signed certificate's files in `dir`, made now if either is missing.
fn ensure_self_signed(dir: &Path, names: &[String]) -> Result<(PathBuf, PathBuf), TlsSetupError> {
    let cert_path = dir.join(SELF_SIGNED_CERT);
    let key_path = dir.join(SELF_SIGNED_KEY);
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let made = rcgen::generate_simple_self_signed(names.to_vec())?;
    write_file(
        &key_path,
        &pem_block("PRIVATE KEY", &made.signing_key.serialize_der()),
        true,
    )?;
    write_file(
        &cert_path,
        &pem_block("CERTIFICATE", made.cert.der()),
        false,
    )?;
    tracing::info!(cert = %cert_path.display(), "made a self-signed TLS certificate");
    Ok((cert_path, key_path))
}

/// One PEM block (RFC 7468): base64 in lines of 64 between the labels (`CERTIFICATE`,
/// `PRIVATE KEY`), as the certificate files [`TlsSource`] reads hold.
pub fn pem_block(label: &str, der: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        text.push_str(&String::from_utf8_lossy(line));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

fn write_file(path: &Path, text: &str, secret: bool) -> Result<(), TlsSetupError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    options
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|source| TlsSetupError::Write {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_kept_and_its_fingerprint_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let source = TlsSource::SelfSigned {
            dir: dir.path().to_owned(),
            names: vec!["localhost".into(), "127.0.0.1".into()],
        };
        let first = TlsServer::load(&source).unwrap().fingerprint();
        let again = TlsServer::load(&source).unwrap().fingerprint();
        assert_eq!(first, again, "the same certificate after a restart");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SELF_SIGNED_KEY))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the key is the owner's only");
        }
        // The files are plain PEM that the `Files` source reads too.
        let files = TlsSource::Files {
            cert: dir.path().join(SELF_SIGNED_CERT),
            key: dir.path().join(SELF_SIGNED_KEY),
        };
        assert_eq!(TlsServer::load(&files).unwrap().fingerprint(), first);
    }

    #[test]
    fn unusable_files_are_typed_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let missing = dir.path().join("missing.pem");
        for (cert, key) in [(&empty, &empty), (&missing, &empty)] {
            let error = TlsServer::load(&TlsSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            })
            .err()
            .expect("refused");
            assert!(
                matches!(&error, TlsSetupError::Read { path, .. } if path == cert),
                "{error}"
            );
        }
    }
}
