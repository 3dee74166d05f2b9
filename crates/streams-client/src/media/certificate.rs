//! The DTLS certificate of this process's media connections, made once: generating one takes a few
//! milliseconds of key generation that would otherwise be spent on every join. Its fingerprint
//! travels in the authenticated signaling, as a browser's reused `RTCCertificate` does; the bridge
//! learns nothing it does not already know (it authenticates the member of every session).
use std::sync::OnceLock;

use str0m::config::DtlsCert;

use crate::media::rtc::MediaError;

/// The certificate (made on first use, by the caller's thread).
pub fn shared() -> Result<DtlsCert, MediaError> {
    static CERTIFICATE: OnceLock<Option<DtlsCert>> = OnceLock::new();
    CERTIFICATE
        .get_or_init(|| {
            str0m::crypto::from_feature_flags()
                .dtls_provider
                .generate_certificate()
        })
        .clone()
        .ok_or(MediaError::State(
            "the crypto provider cannot make a DTLS certificate",
        ))
}

/// Makes the certificate now (e.g. on a background thread at start-up), so that no join waits for it.
pub fn prepare() {
    let _ = shared();
}
