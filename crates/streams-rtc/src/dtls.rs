//! What every media connection's DTLS shares, made once per process: the certificate and the DTLS
//! configuration. Both would otherwise cost CPU for every connection: on a client's engine thread
//! the moment a game joins, on the bridge's SFU thread for every session.
//!
//! - **The certificate.** Generating one is a few milliseconds of key generation. Its fingerprint
//!   travels in the authenticated signaling, as a browser's reused `RTCCertificate` does (and as
//!   an SFU such as mediasoup keeps one per worker); the other end learns nothing it does not
//!   already know.
//! - **The configuration.** str0m's own DTLS provider builds a new DTLS configuration (dimpl's
//!   `Config`) for every connection, and building one validates the crypto backend with a key
//!   exchange and a signature check: about 1 ms of CPU per join, measured. [`crypto`] is str0m's
//!   provider with that one step changed: the configuration is built once and shared, and each
//!   connection still gets its own DTLS state, keys and handshake from dimpl, as before.
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use str0m::config::{CryptoProvider, DtlsCert};
use str0m::crypto::CryptoError;
use str0m::crypto::dtls::{
    DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
};

/// The crypto backend cannot make a DTLS certificate.
#[derive(Debug, thiserror::Error)]
#[error("the crypto provider cannot make a DTLS certificate")]
pub struct NoCertificate;

/// The certificate (made on first use, by the caller's thread).
pub fn certificate() -> Result<DtlsCert, NoCertificate> {
    static CERTIFICATE: OnceLock<Option<DtlsCert>> = OnceLock::new();
    CERTIFICATE
        .get_or_init(|| {
            str0m::crypto::from_feature_flags()
                .dtls_provider
                .generate_certificate()
        })
        .clone()
        .ok_or(NoCertificate)
}

/// str0m's crypto provider with a DTLS configuration shared by every connection.
pub fn crypto() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    static DTLS: SharedConfigDtls = SharedConfigDtls;
    Arc::clone(PROVIDER.get_or_init(|| {
        let mut provider = str0m::crypto::from_feature_flags();
        provider.dtls_provider = &DTLS;
        Arc::new(provider)
    }))
}

/// Makes the certificate and the DTLS configuration now (e.g. on a background thread at
/// start-up), so that no join spends time on them.
pub fn prepare() {
    let _ = certificate();
    let _ = SharedConfigDtls::config(Some(str0m::DATAGRAM_MTU_TARGET));
}

/// The shared DTLS configuration, or why it could not be built.
static SHARED_CONFIG: OnceLock<Result<Arc<dimpl::Config>, String>> = OnceLock::new();

/// str0m's dimpl-based DTLS provider, with the configuration built once.
#[derive(Debug)]
struct SharedConfigDtls;

impl SharedConfigDtls {
    /// The shared configuration for str0m's default MTU (what [`crate::profile`] connections
    /// use); one of its own for another MTU.
    fn config(mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
        let mtu = mtu.unwrap_or(str0m::DATAGRAM_MTU_TARGET);
        let build = || {
            dimpl::Config::builder()
                // ICE has checked return routability before DTLS starts: server cookies would
                // only add a round trip.
                .use_server_cookie(false)
                .mtu(mtu)
                .build()
                .map(Arc::new)
                .map_err(|e| format!("DTLS configuration: {e}"))
        };
        let built = if mtu == str0m::DATAGRAM_MTU_TARGET {
            SHARED_CONFIG.get_or_init(build).clone()
        } else {
            build()
        };
        built.map_err(CryptoError::Other)
    }
}

impl DtlsProvider for SharedConfigDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
    }

    fn new_dtls(
        &self,
        certificate: &DtlsCert,
        now: Instant,
        version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let config = Self::config(mtu)?;
        let certificate = certificate.clone();
        let dtls = match version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, certificate, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, certificate, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, certificate, now),
            other => {
                return Err(CryptoError::Other(format!(
                    "unsupported DTLS version {other}"
                )));
            }
        };
        Ok(Box::new(Connection(dtls)))
    }
}

/// One connection's DTLS (dimpl's), as str0m drives it.
#[derive(Debug)]
struct Connection(dimpl::Dtls);

impl DtlsInstance for Connection {
    fn set_active(&mut self, active: bool) {
        self.0.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.0.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        self.0.poll_output(buf)
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.0.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<(), DtlsImplError> {
        self.0.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.0.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.0.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.0.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.0.close()
    }
}
