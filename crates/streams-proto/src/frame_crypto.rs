//! SFrame (RFC 9605) protection of encoded media frames, cipher suite AES_256_GCM_SHA512_128.
//!
//! Key ids (KIDs) are unique per (epoch, sender device session, track):
//!
//! ```text
//! KID = (epoch mod 2^16) << 48 | session (40 random bits, new per process start) << 8 | track
//! ```
//!
//! and each KID's base key is `HKDF-SHA256(room secret of the epoch, "sframe base key" ‖ sender ‖ KID)`.
//! Because the sender's user id and a fresh random session are both in the derivation, two devices of one
//! user, or one device after a restart, never share a key, so no (key, counter) pair repeats even though
//! every new key starts its counter at 0. A sender that exhausts the counter gets an error, never a wrap.
use std::collections::HashMap;

use sframe::CipherSuite;
use sframe::frame::{EncryptedFrameView, MediaFrameView, MonotonicCounter};
use sframe::key::{DecryptionKey, EncryptionKey};

use crate::epoch::RoomSecret;
use crate::error::CryptoError;
use crate::ids::UserId;
use crate::transcript::Transcript;

/// The SFrame cipher suite used for all media.
pub const CIPHER_SUITE: CipherSuite = CipherSuite::AesGcm256Sha512;

/// A sender's device session: 40 random bits drawn once per process start (per client instance).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceSession(u64);

impl DeviceSession {
    /// A new random session.
    pub fn random() -> Self {
        DeviceSession(rand::random::<u64>() & 0xFF_FFFF_FFFF)
    }

    /// The 40-bit value.
    pub fn value(self) -> u64 {
        self.0
    }
}

/// Builds the KID for an epoch, device session and track index.
pub fn key_id(epoch: u64, session: DeviceSession, track: u8) -> u64 {
    ((epoch & 0xFFFF) << 48) | (session.0 << 8) | u64::from(track)
}

/// Reads the KID from a protected frame's header.
pub fn frame_key_id(frame: &[u8]) -> Result<u64, CryptoError> {
    EncryptedFrameView::try_new(frame)
        .map(|f| f.header().key_id())
        .map_err(|_| CryptoError::Decrypt("not an SFrame frame"))
}

fn base_key(secret: &RoomSecret, sender: &UserId, kid: u64) -> zeroize::Zeroizing<[u8; 32]> {
    let mut info = Transcript::new("bevy_streams sframe base key v1");
    info.text(sender.as_str()).u64(kid);
    secret.derive(info.finish())
}

/// Protects the frames of one track of one sender in one epoch.
pub struct FrameEncryptor {
    key: EncryptionKey,
    counter: MonotonicCounter,
    kid: u64,
}

impl FrameEncryptor {
    /// An encryptor for `sender`'s track `track` in `epoch`, within device session `session`.
    pub fn new(
        secret: &RoomSecret,
        epoch: u64,
        sender: &UserId,
        session: DeviceSession,
        track: u8,
    ) -> Result<Self, CryptoError> {
        let kid = key_id(epoch, session, track);
        let key = EncryptionKey::derive_from(CIPHER_SUITE, kid, &base_key(secret, sender, kid)[..])
            .map_err(|_| CryptoError::Encrypt("SFrame key derivation"))?;
        Ok(FrameEncryptor {
            key,
            counter: MonotonicCounter::default(),
            kid,
        })
    }

    /// This encryptor's KID.
    pub fn key_id(&self) -> u64 {
        self.kid
    }

    /// Encrypts one encoded frame; `metadata` is authenticated but not encrypted (and not included in the
    /// output). Returns the SFrame ciphertext (header, encrypted data, tag).
    pub fn encrypt(&mut self, payload: &[u8], metadata: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let frame = MediaFrameView::try_with_meta_data(&mut self.counter, payload, metadata)
            .map_err(|_| CryptoError::Encrypt("SFrame counter exhausted"))?;
        let mut out = Vec::with_capacity(payload.len() + 32);
        let view = frame
            .encrypt_into(&self.key, &mut out)
            .map_err(|_| CryptoError::Encrypt("SFrame encryption"))?;
        Ok(view.sframe_cipher_text().to_vec())
    }
}

/// Opens protected frames from any number of senders, looked up by KID.
#[derive(Default)]
pub struct FrameDecryptor {
    keys: HashMap<u64, DecryptionKey>,
}

impl FrameDecryptor {
    /// An empty decryptor.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts frames with `kid` from `sender`, keyed from `secret` (the secret of the KID's epoch).
    pub fn add_sender(
        &mut self,
        secret: &RoomSecret,
        sender: &UserId,
        kid: u64,
    ) -> Result<(), CryptoError> {
        let key = DecryptionKey::derive_from(CIPHER_SUITE, kid, &base_key(secret, sender, kid)[..])
            .map_err(|_| CryptoError::Decrypt("SFrame key derivation"))?;
        self.keys.insert(kid, key);
        Ok(())
    }

    /// Forgets a sender's key.
    pub fn remove(&mut self, kid: u64) {
        self.keys.remove(&kid);
    }

    /// Decrypts one frame. Unknown KIDs, wrong keys and tampering are errors; nothing is returned then.
    pub fn decrypt(&self, frame: &[u8], metadata: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let view = EncryptedFrameView::try_with_meta_data(frame, metadata)
            .map_err(|_| CryptoError::Decrypt("not an SFrame frame"))?;
        if !self.keys.contains_key(&view.header().key_id()) {
            return Err(CryptoError::Decrypt("unknown SFrame key id"));
        }
        let mut out = Vec::with_capacity(frame.len());
        let plain = view
            .decrypt_into(&self.keys, &mut out)
            .map_err(|_| CryptoError::Decrypt("SFrame authentication failed"))?;
        Ok(plain.payload().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn frames_round_trip_and_wrong_keys_fail() {
        let secret = RoomSecret::random();
        let alice = Identity::generate();
        let session = DeviceSession::random();
        let mut enc = FrameEncryptor::new(&secret, 3, alice.user_id(), session, 1).unwrap();
        let frame = enc.encrypt(b"opus frame", b"").unwrap();
        assert_eq!(frame_key_id(&frame).unwrap(), enc.key_id());
        let mut dec = FrameDecryptor::new();
        assert!(dec.decrypt(&frame, b"").is_err(), "unknown kid");
        dec.add_sender(&secret, alice.user_id(), enc.key_id())
            .unwrap();
        assert_eq!(dec.decrypt(&frame, b"").unwrap(), b"opus frame");
        let mut bad = frame.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(dec.decrypt(&bad, b"").is_err());
        // Another epoch's secret with the same KID does not open it.
        let mut other = FrameDecryptor::new();
        other
            .add_sender(&RoomSecret::random(), alice.user_id(), enc.key_id())
            .unwrap();
        assert!(other.decrypt(&frame, b"").is_err());
    }
}
