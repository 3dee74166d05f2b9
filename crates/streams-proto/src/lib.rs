//! Wire messages, ids, errors and all crypto of bevy_streams. No IO.
//!
//! - [`identity`]: a user's key pair; the user id *is* the Ed25519 public key, and the X25519 key that
//!   wraps room secrets for a user is derived from that id alone.
//! - [`epoch`]: signed epoch records — who is in a room, what they may do, and the room secret of that
//!   epoch wrapped for each member with HPKE (RFC 9180). A chain of them is verified by every client.
//! - [`meta`]: signed public metadata and encrypted, signed private metadata.
//! - [`frame_crypto`]: SFrame (RFC 9605) media frame protection with per-sender keys.
//! - [`fingerprint`]: the SHA-256 of a bridge's TLS certificate, which clients can pin.
//! - [`track`]: typed media ids (stream, m-line, track), checked when parsed.
//! - [`turn`]: TURN server URLs, as the bridge hands them out.
//! - [`wire`]: the signaling messages (JSON over WebSocket) shared by the bridge and the client.
#![warn(missing_docs)]

pub mod bytes;
pub mod epoch;
pub mod error;
pub mod fingerprint;
pub mod frame_crypto;
pub mod identity;
pub mod ids;
pub mod meta;
pub mod policy;
pub mod recording;
pub mod room;
pub mod track;
pub mod transcript;
pub mod turn;
pub mod wire;

pub use bytes::Bytes;
pub use epoch::{EpochRecord, RoomSecret, VerifiedChain, verify_chain};
pub use error::CryptoError;
pub use fingerprint::{CertFingerprint, InvalidFingerprint};
pub use identity::{Identity, KeyFileError};
pub use ids::{ContextId, InvalidId, InvalidUserId, RoomId, UserId};
pub use meta::{PrivateMeta, SignedMeta};
pub use policy::{Access, Policy, Right};
pub use room::RoomRecord;
pub use track::{InvalidMediaId, MediaId, StreamId, TrackId};
pub use turn::{InvalidTurnUrl, TurnTransport, TurnUrl};
