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
//! user, or one device after a restart, never share a key. Within a process, a [`DeviceSession`] hands out
//! each (epoch, track) encryptor once, so no (key, counter) pair repeats even though every key starts its
//! counter at 0. A sender that exhausts the counter gets an error, never a wrap. Receivers look keys up by
//! (sender, KID): a member cannot replace another member's key by reusing its KID.
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use sframe::CipherSuite;
use sframe::frame::{EncryptedFrameView, MediaFrameView, MonotonicCounter};
use sframe::key::{DecryptionKey, EncryptionKey};

use crate::epoch::RoomSecret;
use crate::error::CryptoError;
use crate::ids::UserId;
use crate::transcript::Transcript;

/// The SFrame cipher suite used for all media.
pub const CIPHER_SUITE: CipherSuite = CipherSuite::AesGcm256Sha512;

/// A sender's device session: 40 random bits drawn once per client instance, and the (epoch, track)
/// pairs it has already handed an encryptor for.
#[derive(Debug)]
pub struct DeviceSession {
    value: u64,
    issued: Mutex<HashSet<(u64, u8)>>,
}

impl DeviceSession {
    /// A new random session.
    pub fn random() -> Self {
        DeviceSession {
            value: rand::random::<u64>() & 0xFF_FFFF_FFFF,
            issued: Mutex::new(HashSet::new()),
        }
    }

    /// The 40-bit value.
    pub fn value(&self) -> u64 {
        self.value
    }

    /// The encryptor for `sender`'s track `track` in `epoch`. Each (epoch, track) is handed out once per
    /// session: a second request is [`CryptoError::KeyReuse`], because a new encryptor would restart the
    /// counter under the same key.
    pub fn encryptor(
        &self,
        secret: &RoomSecret,
        epoch: u64,
        sender: &UserId,
        track: u8,
    ) -> Result<FrameEncryptor, CryptoError> {
        let fresh = self
            .issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((epoch, track));
        if !fresh {
            return Err(CryptoError::KeyReuse { epoch, track });
        }
        FrameEncryptor::new(secret, KeyId::new(epoch, self.value, track).raw(), sender)
    }
}

/// A key id (KID) and the layout of its bits (see the module docs); nothing else decodes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(u64);

impl KeyId {
    /// The KID of an epoch, device session value and track index.
    pub fn new(epoch: u64, session: u64, track: u8) -> KeyId {
        KeyId(
            (u64::from(EpochTag::of(epoch).0) << 48)
                | ((session & 0xFF_FFFF_FFFF) << 8)
                | u64::from(track),
        )
    }

    /// A KID as it travels (in a frame header or a track announcement).
    pub fn from_raw(kid: u64) -> KeyId {
        KeyId(kid)
    }

    /// The value as it travels.
    pub fn raw(self) -> u64 {
        self.0
    }

    /// The epoch it belongs to, as it carries it.
    pub fn epoch_tag(self) -> EpochTag {
        EpochTag((self.0 >> 48) as u16)
    }

    /// The sender's track index.
    pub fn track(self) -> u8 {
        (self.0 & 0xFF) as u8
    }
}

/// An epoch as a key id carries it: its number modulo 2^16 (receivers keep the epochs they know by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EpochTag(u16);

impl EpochTag {
    /// The tag of `epoch`.
    pub fn of(epoch: u64) -> EpochTag {
        EpochTag((epoch & 0xFFFF) as u16)
    }

    /// Its value.
    pub fn value(self) -> u16 {
        self.0
    }
}

/// Reads the (KID, counter) of a protected frame's header. Authenticated only once the frame decrypts.
pub fn frame_header(frame: &[u8]) -> Result<(u64, u64), CryptoError> {
    EncryptedFrameView::try_new(frame)
        .map(|f| (f.header().key_id(), f.header().counter()))
        .map_err(|_| CryptoError::Decrypt("not an SFrame frame"))
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
    fn new(secret: &RoomSecret, kid: u64, sender: &UserId) -> Result<Self, CryptoError> {
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

/// Opens protected frames from any number of senders, looked up by (sender, KID).
#[derive(Default)]
pub struct FrameDecryptor {
    keys: HashMap<(UserId, u64), DecryptionKey>,
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
        self.keys.insert((sender.clone(), kid), key);
        Ok(())
    }

    /// Like [`FrameDecryptor::add_sender`], but derives the key only the first time.
    pub fn add_sender_if_missing(
        &mut self,
        secret: &RoomSecret,
        sender: &UserId,
        kid: u64,
    ) -> Result<(), CryptoError> {
        if self.keys.contains_key(&(sender.clone(), kid)) {
            return Ok(());
        }
        self.add_sender(secret, sender, kid)
    }

    /// Forgets a sender's key.
    pub fn remove(&mut self, sender: &UserId, kid: u64) {
        self.keys.remove(&(sender.clone(), kid));
    }

    /// Decrypts one frame from `sender`. Unknown KIDs, wrong keys and tampering are errors; nothing is
    /// returned then.
    pub fn decrypt(
        &self,
        sender: &UserId,
        frame: &[u8],
        metadata: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let view = EncryptedFrameView::try_with_meta_data(frame, metadata)
            .map_err(|_| CryptoError::Decrypt("not an SFrame frame"))?;
        let key = self
            .keys
            .get(&(sender.clone(), view.header().key_id()))
            .ok_or(CryptoError::Decrypt(
                "unknown SFrame key id for this sender",
            ))?;
        let mut out = Vec::with_capacity(frame.len());
        let plain = view
            .decrypt_into(key, &mut out)
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
        let mut enc = session.encryptor(&secret, 3, alice.user_id(), 1).unwrap();
        assert!(
            matches!(
                session.encryptor(&secret, 3, alice.user_id(), 1),
                Err(CryptoError::KeyReuse { epoch: 3, track: 1 })
            ),
            "a second encryptor would restart the counter under the same key"
        );
        let frame = enc.encrypt(b"opus frame", b"").unwrap();
        assert_eq!(frame_key_id(&frame).unwrap(), enc.key_id());
        let mut dec = FrameDecryptor::new();
        assert!(
            dec.decrypt(alice.user_id(), &frame, b"").is_err(),
            "unknown kid"
        );
        dec.add_sender(&secret, alice.user_id(), enc.key_id())
            .unwrap();
        assert_eq!(
            dec.decrypt(alice.user_id(), &frame, b"").unwrap(),
            b"opus frame"
        );
        let mut bad = frame.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(dec.decrypt(alice.user_id(), &bad, b"").is_err());
        // Another member cannot pass frames off under Alice's KID, nor take over her key slot.
        let mallory = Identity::generate();
        dec.add_sender(&secret, mallory.user_id(), enc.key_id())
            .unwrap();
        assert!(dec.decrypt(mallory.user_id(), &frame, b"").is_err());
        assert_eq!(
            dec.decrypt(alice.user_id(), &frame, b"").unwrap(),
            b"opus frame"
        );
        // Another epoch's secret with the same KID does not open it.
        let mut other = FrameDecryptor::new();
        other
            .add_sender(&RoomSecret::random(), alice.user_id(), enc.key_id())
            .unwrap();
        assert!(other.decrypt(alice.user_id(), &frame, b"").is_err());
    }
}
