//! Room metadata: `public_meta` (plain, signed) and `private_meta` (AES-256-GCM under a key derived from
//! the epoch's room secret, signed by its author).
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::{Deserialize, Serialize};

use crate::bytes::Bytes;
use crate::epoch::{EpochRecord, RoomSecret};
use crate::error::CryptoError;
use crate::identity::{self, Identity};
use crate::ids::{RoomId, UserId};
use crate::policy::Role;
use crate::transcript::Transcript;

const NONCE_LEN: usize = 12;

/// What members see once private metadata is decrypted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivateMeta {
    /// The room's display name (private: the bridge never sees it).
    pub name: String,
    /// Application data, opaque to bevy_streams.
    pub data: Bytes,
}

/// Metadata of one epoch as stored by the bridge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedMeta {
    /// The room.
    pub room_id: RoomId,
    /// The epoch whose secret encrypts `private_meta`.
    pub epoch: u64,
    /// The room version this metadata was written as (1 at creation, +1 per update). Signed, so a
    /// bridge cannot serve older metadata as current to a client that has seen newer.
    pub version: u64,
    /// Public metadata, readable by the bridge.
    pub public_meta: Bytes,
    /// Nonce followed by AES-256-GCM ciphertext of a JSON [`PrivateMeta`].
    pub private_meta: Bytes,
    /// Who wrote it.
    pub author: UserId,
    /// The author's signature.
    pub signature: Bytes,
}

impl SignedMeta {
    /// Encrypts and signs metadata for `record`'s epoch, as room version `version`.
    pub fn seal(
        author: &Identity,
        record: &EpochRecord,
        secret: &RoomSecret,
        version: u64,
        public_meta: Vec<u8>,
        private: &PrivateMeta,
    ) -> Result<SignedMeta, CryptoError> {
        let mut meta = SignedMeta {
            room_id: record.room_id.clone(),
            epoch: record.epoch,
            version,
            public_meta: Bytes(public_meta),
            private_meta: Bytes::default(),
            author: author.user_id().clone(),
            signature: Bytes::default(),
        };
        let plaintext = zeroize::Zeroizing::new(
            serde_json::to_vec(private).map_err(|e| CryptoError::Malformed(e.to_string()))?,
        );
        let nonce: [u8; NONCE_LEN] = rand::random();
        let cipher = cipher(secret, &meta.room_id, meta.epoch);
        let aad = meta.aad();
        let ciphertext = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &plaintext,
                    aad: aad.finish(),
                },
            )
            .map_err(|_| CryptoError::Encrypt("private meta"))?;
        meta.private_meta = Bytes([nonce.as_slice(), &ciphertext].concat());
        meta.signature = author.sign(meta.transcript().finish());
        Ok(meta)
    }

    /// Checks that this metadata belongs to `record` and was signed by one of its members (or its author).
    pub fn verify(&self, record: &EpochRecord) -> Result<(), CryptoError> {
        if self.room_id != record.room_id || self.epoch != record.epoch {
            return Err(CryptoError::MetaMismatch);
        }
        if record.role_of(&self.author) == Role::Outsider && self.author != record.author {
            return Err(CryptoError::MetaAuthorNotMember {
                author: self.author.clone(),
                epoch: self.epoch,
            });
        }
        identity::verify(
            &self.author,
            self.transcript().finish(),
            &self.signature,
            "room metadata",
        )
    }

    /// Decrypts the private metadata with the epoch's secret.
    pub fn open(&self, secret: &RoomSecret) -> Result<PrivateMeta, CryptoError> {
        let raw = self.private_meta.as_slice();
        if raw.len() < NONCE_LEN {
            return Err(CryptoError::Decrypt("private meta too short"));
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
        let aad = self.aad();
        let plaintext = zeroize::Zeroizing::new(
            cipher(secret, &self.room_id, self.epoch)
                .decrypt(
                    &Nonce::from(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: aad.finish(),
                    },
                )
                .map_err(|_| CryptoError::Decrypt("private meta does not decrypt"))?,
        );
        serde_json::from_slice(&plaintext).map_err(|e| CryptoError::Malformed(e.to_string()))
    }

    fn aad(&self) -> Transcript {
        let mut t = Transcript::new("bevy_streams private meta aad v1");
        t.text(self.room_id.as_str())
            .u64(self.epoch)
            .text(self.author.as_str());
        t
    }

    fn transcript(&self) -> Transcript {
        let mut t = Transcript::new("bevy_streams room meta v1");
        t.text(self.room_id.as_str())
            .u64(self.epoch)
            .u64(self.version)
            .bytes(self.public_meta.as_slice())
            .bytes(self.private_meta.as_slice())
            .text(self.author.as_str());
        t
    }
}

fn cipher(secret: &RoomSecret, room: &RoomId, epoch: u64) -> Aes256Gcm {
    let mut info = Transcript::new("bevy_streams private meta key v1");
    info.text(room.as_str()).u64(epoch);
    let key = secret.derive(info.finish());
    Aes256Gcm::new_from_slice(&key[..]).expect("32-byte key")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::epoch::Membership;
    use crate::ids::ContextId;
    use crate::policy::Policy;

    fn room() -> (Identity, Identity, EpochRecord, RoomSecret) {
        let alice = Identity::generate();
        let bob = Identity::generate();
        let (rec, secret) = EpochRecord::genesis(
            &alice,
            ContextId::default(),
            Membership {
                users: vec![bob.user_id().clone()],
                managers: vec![],
                policy: Policy::default(),
            },
            0,
        )
        .unwrap();
        (alice, bob, rec, secret)
    }

    #[test]
    fn members_read_private_meta_and_tampering_is_caught() {
        let (alice, bob, rec, secret) = room();
        let private = PrivateMeta {
            name: "war room".into(),
            data: Bytes(b"agenda: ship it".to_vec()),
        };
        let meta =
            SignedMeta::seal(&alice, &rec, &secret, 1, b"public".to_vec(), &private).unwrap();
        meta.verify(&rec).unwrap();
        let bobs_secret = rec.unwrap_secret(&bob).unwrap();
        assert_eq!(meta.open(&bobs_secret).unwrap(), private);
        // The ciphertext does not contain the plaintext.
        let needle = b"agenda";
        assert!(
            !meta
                .private_meta
                .0
                .windows(needle.len())
                .any(|w| w == needle)
        );

        let mut flipped = meta.clone();
        let last = flipped.private_meta.0.len() - 1;
        flipped.private_meta.0[last] ^= 1;
        assert!(flipped.verify(&rec).is_err());
        assert!(flipped.open(&secret).is_err());

        let mut replayed = meta.clone();
        replayed.version = 2;
        assert!(replayed.verify(&rec).is_err(), "the version is signed");

        let mut public_changed = meta.clone();
        public_changed.public_meta = Bytes(b"PUBLIC".to_vec());
        assert!(matches!(
            public_changed.verify(&rec),
            Err(CryptoError::BadSignature { .. })
        ));

        assert!(meta.open(&RoomSecret::random()).is_err());
    }

    #[test]
    fn outsiders_cannot_author_meta() {
        let (_alice, _bob, rec, secret) = room();
        let eve = Identity::generate();
        let meta =
            SignedMeta::seal(&eve, &rec, &secret, 1, vec![], &PrivateMeta::default()).unwrap();
        assert!(matches!(
            meta.verify(&rec),
            Err(CryptoError::MetaAuthorNotMember { .. })
        ));
    }
}
