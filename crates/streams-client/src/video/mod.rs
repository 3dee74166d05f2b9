//! Video and screen sharing, network-free: sources ([`pattern`], [`screen`], [`camera`]), the H.264
//! codec ([`codec`]), the ciphertext-safe carriage of protected frames in RTP ([`carriage`]), the
//! capture-and-encode thread of a local track ([`sender`]) and the decode thread and latest-frame slot
//! of a remote one ([`receiver`]), and the local preview of a track being sent ([`preview`]).
pub mod camera;
pub mod carriage;
pub mod check;
pub mod codec;
pub mod frame;
pub mod pattern;
pub mod preview;
pub mod receiver;
pub mod screen;
pub mod sender;
pub mod source;

pub use frame::I420Frame;
pub use source::VideoSource;

/// Video failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VideoError {
    /// Bad settings or arguments.
    #[error("invalid video settings: {0}")]
    Invalid(String),
    /// No such device, or no device at all.
    #[error("no video device: {0}")]
    NoDevice(String),
    /// A device or display failed while capturing.
    #[error("capture failed: {0}")]
    Capture(String),
    /// The encoder or decoder failed.
    #[error("codec: {0}")]
    Codec(String),
    /// A frame did not authenticate or is malformed.
    #[error("bad frame: {0}")]
    Frame(String),
}
