//! [`CryptoError`]: every way a signature, key or ciphertext can be rejected.
use crate::ids::{InvalidUserId, RoomId, UserId};

/// A cryptographic check failed. Each variant names what was wrong, never secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// A user id is not a valid public key.
    #[error("invalid user id: {0}")]
    InvalidUserId(String),
    /// A signature does not verify under its claimed author's key.
    #[error("bad signature on {what} by {author}")]
    BadSignature {
        /// What was signed (epoch record, metadata, …).
        what: &'static str,
        /// The claimed author.
        author: UserId,
    },
    /// An epoch record was signed by someone who was not a manager when it was made.
    #[error(
        "epoch {epoch} of room {room} was signed by {author}, who is not a manager of the previous epoch"
    )]
    NotAManager {
        /// The room.
        room: RoomId,
        /// The epoch of the offending record.
        epoch: u64,
        /// Its signer.
        author: UserId,
    },
    /// The chain of epoch records is broken (wrong room, gap, or a record that does not follow its predecessor).
    #[error("epoch chain of room {room} is broken at epoch {epoch}: {why}")]
    BrokenChain {
        /// The room.
        room: RoomId,
        /// Where it broke.
        epoch: u64,
        /// What was wrong.
        why: &'static str,
    },
    /// The chain is shorter than one already seen (a rollback) or forks from it.
    #[error(
        "room {room}: the bridge served a chain that forks from or rolls back the one verified before"
    )]
    ChainRollback {
        /// The room.
        room: RoomId,
    },
    /// This user has no wrapped secret in the epoch record (not a member).
    #[error("no room secret for this user in epoch {epoch}")]
    NotAMember {
        /// The epoch.
        epoch: u64,
    },
    /// The metadata was not signed by a member of its epoch.
    #[error("metadata author {author} is not a member of epoch {epoch}")]
    MetaAuthorNotMember {
        /// The author.
        author: UserId,
        /// The epoch.
        epoch: u64,
    },
    /// The metadata belongs to another room or epoch than the one it was served with.
    #[error("metadata does not match its room or epoch")]
    MetaMismatch,
    /// Decryption failed (wrong key or tampered ciphertext).
    #[error("decryption failed: {0}")]
    Decrypt(&'static str),
    /// An SFrame encryptor for this (epoch, track) was already handed out in this device session.
    #[error("an encryptor for epoch {epoch} track {track} already exists in this session")]
    KeyReuse {
        /// The epoch.
        epoch: u64,
        /// The track.
        track: u8,
    },
    /// Encryption failed (should not happen with valid keys).
    #[error("encryption failed: {0}")]
    Encrypt(&'static str),
    /// Plaintext inside a ciphertext was not the expected structure.
    #[error("malformed plaintext: {0}")]
    Malformed(String),
}

impl From<InvalidUserId> for CryptoError {
    fn from(e: InvalidUserId) -> Self {
        CryptoError::InvalidUserId(e.0)
    }
}
