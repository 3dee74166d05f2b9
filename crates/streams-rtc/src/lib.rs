//! What both ends of a media connection share: the client's peer connection
//! (`streams_client::media::rtc`) and the bridge's SFU configure str0m from here, so the codecs and
//! header extensions they negotiate cannot drift apart, and both reuse one DTLS certificate and
//! one DTLS configuration per process ([`dtls`]) instead of making them for every connection.
//! Both wait on the same [`socket::MediaSocket`], convert media ids with [`mid`] and monotonic
//! time to wall-clock time with [`clock`].
pub mod clock;
pub mod dtls;
pub mod mid;
pub mod socket;

use str0m::RtcConfig;
use str0m::rtp::Extension;

/// The media profile: Opus (without RED) and H.264; the transport-wide sequence number
/// (bandwidth estimation) and the mid extension, and no audio-level extension (it would tell the
/// bridge who speaks); the shared DTLS certificate and configuration. Each side adds its role
/// (ICE lite on the bridge, bandwidth estimation on the client).
///
/// Audio frames are handed out as they arrive, without str0m's reordering hold: the client's
/// jitter buffer orders them, recovers a lost frame from its successor's FEC and conceals the
/// rest, and str0m holding every frame after a lost one until 15 more had come (300 ms) made each
/// loss a 300 ms stall whose frames then arrived too late to play. (The bridge forwards RTP
/// packets and never depacketizes, so this only changes the client.)
pub fn profile() -> Result<RtcConfig, dtls::NoCertificate> {
    Ok(RtcConfig::new()
        .set_reordering_size_audio(0)
        .set_crypto_provider(dtls::crypto())
        .set_dtls_cert(dtls::certificate()?)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_h264(true)
        .clear_extension_map()
        .set_extension(3, Extension::TransportSequenceNumber)
        .set_extension(4, Extension::RtpMid))
}
