//! Epoch records: the signed, chained statement of who is in a room, what they may do, and the room
//! secret of that epoch wrapped for each member.
//!
//! - The genesis record (epoch 0) is signed by the room's creator, who must be one of its managers.
//! - Every later record names the hash of its predecessor and is signed by a manager *of the
//!   predecessor*. Every membership or policy change, and every forced rotation, starts a new epoch with a
//!   fresh random secret, so a removed member cannot read anything sent after the removal.
//! - Secrets are wrapped with HPKE (RFC 9180, base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//!   AES-256-GCM) to the X25519 key derived from each member's user id. The bridge stores and relays
//!   records; it cannot forge one, add a member, or substitute a key without failing [`verify_chain`].
use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::bytes::Bytes;
use crate::error::CryptoError;
use crate::identity::{self, Identity};
use crate::ids::{ContextId, RoomId, UserId};
use crate::policy::{Policy, Role};
use crate::transcript::Transcript;

type KemPrivate = <X25519HkdfSha256 as hpke::Kem>::PrivateKey;
type KemPublic = <X25519HkdfSha256 as hpke::Kem>::PublicKey;
type KemEncapped = <X25519HkdfSha256 as hpke::Kem>::EncappedKey;

/// A room secret of one epoch: 32 random bytes, zeroed on drop.
#[derive(Clone)]
pub struct RoomSecret(Zeroizing<[u8; 32]>);

impl RoomSecret {
    /// A fresh random secret.
    pub fn random() -> Self {
        RoomSecret(Zeroizing::new(rand::random()))
    }

    /// The secret bytes (for key derivation only).
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// Derives a 32-byte key for one purpose with HKDF-SHA256.
    pub fn derive(&self, info: &[u8]) -> Zeroizing<[u8; 32]> {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(b"bevy_streams room secret v1"), &self.0[..]);
        let mut out = Zeroizing::new([0u8; 32]);
        hk.expand(info, &mut out[..])
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        out
    }
}

impl std::fmt::Debug for RoomSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoomSecret(..)")
    }
}

/// The room secret wrapped for one member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedSecret {
    /// The recipient.
    pub user: UserId,
    /// HPKE encapsulated key.
    pub enc: Bytes,
    /// HPKE ciphertext of the secret.
    pub ciphertext: Bytes,
}

/// One epoch of a room: members, policy and wrapped secret, signed by a manager.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The room.
    pub room_id: RoomId,
    /// Its context.
    pub context_id: ContextId,
    /// 0 for the genesis record, then +1 per record.
    pub epoch: u64,
    /// SHA-256 of the previous record (32 zero bytes for genesis).
    pub prev_hash: Bytes,
    /// Genesis only: 16 random bytes that, with the author, derive the room id ([`RoomId::derive`]).
    /// Empty in later records.
    #[serde(default)]
    pub nonce: Bytes,
    /// Users, sorted and unique.
    pub users: Vec<UserId>,
    /// Managers, sorted and unique.
    pub managers: Vec<UserId>,
    /// Who may do what.
    pub policy: Policy,
    /// The epoch secret wrapped for every user and manager.
    pub wrapped: Vec<WrappedSecret>,
    /// The manager who made this record.
    pub author: UserId,
    /// When the author made it, milliseconds since the Unix epoch (author's clock).
    pub created_at: i64,
    /// The author's signature over everything above.
    pub signature: Bytes,
}

/// The users and managers of a new epoch and its policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// Users.
    pub users: Vec<UserId>,
    /// Managers.
    pub managers: Vec<UserId>,
    /// Policy.
    pub policy: Policy,
}

impl EpochRecord {
    /// Makes the genesis record of a new room, signed by `author`, who becomes a manager if not listed.
    /// The room id is derived from the author and a fresh nonce.
    pub fn genesis(
        author: &Identity,
        context_id: ContextId,
        mut membership: Membership,
        now_ms: i64,
    ) -> Result<(EpochRecord, RoomSecret), CryptoError> {
        if !membership.managers.contains(author.user_id()) {
            membership.managers.push(author.user_id().clone());
        }
        let nonce: [u8; 16] = rand::random();
        Self::build(
            author,
            RoomId::derive(author.user_id(), &nonce),
            context_id,
            0,
            (Bytes(vec![0; 32]), Bytes(nonce.to_vec())),
            membership,
            now_ms,
        )
    }

    /// Makes the record that follows `self`, signed by `author` (who must be a manager of `self`).
    pub fn next(
        &self,
        author: &Identity,
        membership: Membership,
        now_ms: i64,
    ) -> Result<(EpochRecord, RoomSecret), CryptoError> {
        if !self.managers.contains(author.user_id()) {
            return Err(CryptoError::NotAManager {
                room: self.room_id.clone(),
                epoch: self.epoch + 1,
                author: author.user_id().clone(),
            });
        }
        Self::build(
            author,
            self.room_id.clone(),
            self.context_id.clone(),
            self.epoch + 1,
            (Bytes(self.hash().to_vec()), Bytes::default()),
            membership,
            now_ms,
        )
    }

    fn build(
        author: &Identity,
        room_id: RoomId,
        context_id: ContextId,
        epoch: u64,
        (prev_hash, nonce): (Bytes, Bytes),
        membership: Membership,
        now_ms: i64,
    ) -> Result<(EpochRecord, RoomSecret), CryptoError> {
        let secret = RoomSecret::random();
        let users = sorted_unique(membership.users);
        let managers = sorted_unique(membership.managers);
        let mut record = EpochRecord {
            room_id,
            context_id,
            epoch,
            prev_hash,
            nonce,
            users,
            managers,
            policy: membership.policy,
            wrapped: Vec::new(),
            author: author.user_id().clone(),
            created_at: now_ms,
            signature: Bytes::default(),
        };
        for user in record.members() {
            record.wrapped.push(wrap_secret(&record, &user, &secret)?);
        }
        record.signature = author.sign(record.transcript().finish());
        Ok((record, secret))
    }

    /// Users and managers together, sorted and unique.
    pub fn members(&self) -> Vec<UserId> {
        sorted_unique(self.users.iter().chain(&self.managers).cloned().collect())
    }

    /// How `user` relates to this epoch.
    pub fn role_of(&self, user: &UserId) -> Role {
        if self.managers.contains(user) {
            Role::Manager
        } else if self.users.contains(user) {
            Role::User
        } else {
            Role::Outsider
        }
    }

    /// The users, managers and policy of this epoch.
    pub fn membership(&self) -> Membership {
        Membership {
            users: self.users.clone(),
            managers: self.managers.clone(),
            policy: self.policy,
        }
    }

    fn transcript(&self) -> Transcript {
        let mut t = Transcript::new("bevy_streams epoch record v1");
        t.text(self.room_id.as_str())
            .text(self.context_id.as_str())
            .u64(self.epoch)
            .bytes(self.prev_hash.as_slice())
            .bytes(self.nonce.as_slice());
        t.u64(self.users.len() as u64);
        for u in &self.users {
            t.text(u.as_str());
        }
        t.u64(self.managers.len() as u64);
        for m in &self.managers {
            t.text(m.as_str());
        }
        for level in self.policy.levels() {
            t.text(level.as_str());
        }
        t.u64(self.wrapped.len() as u64);
        for w in &self.wrapped {
            t.text(w.user.as_str())
                .bytes(w.enc.as_slice())
                .bytes(w.ciphertext.as_slice());
        }
        t.text(self.author.as_str()).u64(self.created_at as u64);
        t
    }

    /// SHA-256 over the signed content and the signature: what the next record names as `prev_hash`.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.transcript().finish());
        h.update(self.signature.as_slice());
        h.finalize().into()
    }

    /// Checks the author's signature and the record's internal consistency (not its place in a chain).
    pub fn verify_self(&self) -> Result<(), CryptoError> {
        let broken = |why| CryptoError::BrokenChain {
            room: self.room_id.clone(),
            epoch: self.epoch,
            why,
        };
        if self.users != sorted_unique(self.users.clone())
            || self.managers != sorted_unique(self.managers.clone())
        {
            return Err(broken("member lists are not sorted and unique"));
        }
        let wrapped_for: Vec<UserId> = self.wrapped.iter().map(|w| w.user.clone()).collect();
        if wrapped_for != self.members() {
            return Err(broken("wrapped secrets do not match the members"));
        }
        if self.prev_hash.0.len() != 32 {
            return Err(broken("previous hash is not 32 bytes"));
        }
        identity::verify(
            &self.author,
            self.transcript().finish(),
            &self.signature,
            "epoch record",
        )
    }

    /// Checks that `next` validly follows `self`: same room, next epoch, hash link, signed by a manager of
    /// `self`.
    pub fn verify_successor(&self, next: &EpochRecord) -> Result<(), CryptoError> {
        let broken = |why| CryptoError::BrokenChain {
            room: self.room_id.clone(),
            epoch: next.epoch,
            why,
        };
        if next.room_id != self.room_id || next.context_id != self.context_id {
            return Err(broken("record belongs to another room"));
        }
        if next.epoch != self.epoch + 1 {
            return Err(broken("epochs are not consecutive"));
        }
        if next.prev_hash.as_slice() != self.hash() {
            return Err(broken("previous hash does not match"));
        }
        if !next.nonce.0.is_empty() {
            return Err(broken("only the genesis record carries a nonce"));
        }
        if !self.managers.contains(&next.author) {
            return Err(CryptoError::NotAManager {
                room: self.room_id.clone(),
                epoch: next.epoch,
                author: next.author.clone(),
            });
        }
        next.verify_self()
    }

    /// Checks a genesis record: epoch 0, zero previous hash, signed by one of its own managers.
    pub fn verify_genesis(&self) -> Result<(), CryptoError> {
        if self.epoch != 0 || self.prev_hash.as_slice() != [0u8; 32] {
            return Err(CryptoError::BrokenChain {
                room: self.room_id.clone(),
                epoch: self.epoch,
                why: "chain does not start with a genesis record",
            });
        }
        if !self.managers.contains(&self.author) {
            return Err(CryptoError::NotAManager {
                room: self.room_id.clone(),
                epoch: 0,
                author: self.author.clone(),
            });
        }
        if self.nonce.0.len() != 16
            || RoomId::derive(&self.author, self.nonce.as_slice()) != self.room_id
        {
            return Err(CryptoError::BrokenChain {
                room: self.room_id.clone(),
                epoch: 0,
                why: "the room id is not derived from its creator and nonce",
            });
        }
        self.verify_self()
    }

    /// Unwraps this epoch's secret with `identity`'s key.
    pub fn unwrap_secret(&self, identity: &Identity) -> Result<RoomSecret, CryptoError> {
        let wrapped = self
            .wrapped
            .iter()
            .find(|w| &w.user == identity.user_id())
            .ok_or(CryptoError::NotAMember { epoch: self.epoch })?;
        let sk = KemPrivate::from_bytes(&identity.x25519_secret()[..])
            .map_err(|_| CryptoError::Decrypt("bad private key"))?;
        let enc = KemEncapped::from_bytes(wrapped.enc.as_slice())
            .map_err(|_| CryptoError::Decrypt("bad encapsulated key"))?;
        let plain = Zeroizing::new(
            hpke::single_shot_open::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
                &OpModeR::Base,
                &sk,
                &enc,
                wrap_info(self, identity.user_id()).finish(),
                wrapped.ciphertext.as_slice(),
                b"",
            )
            .map_err(|_| CryptoError::Decrypt("room secret does not unwrap"))?,
        );
        let bytes: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Decrypt("room secret has the wrong length"))?;
        Ok(RoomSecret(Zeroizing::new(bytes)))
    }
}

fn wrap_info(record: &EpochRecord, user: &UserId) -> Transcript {
    let mut t = Transcript::new("bevy_streams room secret wrap v1");
    t.text(record.room_id.as_str())
        .u64(record.epoch)
        .text(user.as_str());
    t
}

fn wrap_secret(
    record: &EpochRecord,
    user: &UserId,
    secret: &RoomSecret,
) -> Result<WrappedSecret, CryptoError> {
    let pk = KemPublic::from_bytes(&identity::x25519_public(user)?)
        .map_err(|_| CryptoError::InvalidUserId(user.to_string()))?;
    let (enc, ciphertext) = hpke::single_shot_seal::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
        &OpModeS::Base,
        &pk,
        wrap_info(record, user).finish(),
        secret.expose(),
        b"",
    )
    .map_err(|_| CryptoError::Encrypt("HPKE seal failed"))?;
    Ok(WrappedSecret {
        user: user.clone(),
        enc: Bytes(enc.to_bytes().to_vec()),
        ciphertext: Bytes(ciphertext),
    })
}

fn sorted_unique(mut ids: Vec<UserId>) -> Vec<UserId> {
    ids.sort();
    ids.dedup();
    ids
}

/// What a verified chain establishes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedChain {
    /// The room.
    pub room_id: RoomId,
    /// The latest epoch.
    pub epoch: u64,
    /// Hash of the latest record.
    pub head: [u8; 32],
    /// Hash of the genesis record (identifies the room's history).
    pub genesis: [u8; 32],
}

/// Verifies a whole chain of epoch records for `room_id`, oldest first.
pub fn verify_chain(room_id: &RoomId, chain: &[EpochRecord]) -> Result<VerifiedChain, CryptoError> {
    let genesis = chain.first().ok_or_else(|| CryptoError::BrokenChain {
        room: room_id.clone(),
        epoch: 0,
        why: "no epoch records",
    })?;
    if &genesis.room_id != room_id {
        return Err(CryptoError::BrokenChain {
            room: room_id.clone(),
            epoch: 0,
            why: "record belongs to another room",
        });
    }
    genesis.verify_genesis()?;
    for pair in chain.windows(2) {
        pair[0].verify_successor(&pair[1])?;
    }
    let last = chain.last().unwrap_or(genesis);
    Ok(VerifiedChain {
        room_id: room_id.clone(),
        epoch: last.epoch,
        head: last.hash(),
        genesis: genesis.hash(),
    })
}

impl VerifiedChain {
    /// Whether `newer` is this chain or an extension of it (same genesis, and the record at our epoch is
    /// the one we verified). Protects against a bridge that rolls a room back or forks it.
    pub fn is_extended_by(&self, chain: &[EpochRecord]) -> bool {
        chain.first().map(EpochRecord::hash) == Some(self.genesis)
            && chain.get(self.epoch as usize).map(EpochRecord::hash) == Some(self.head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn membership(users: &[&Identity], managers: &[&Identity]) -> Membership {
        Membership {
            users: users.iter().map(|i| i.user_id().clone()).collect(),
            managers: managers.iter().map(|i| i.user_id().clone()).collect(),
            policy: Policy::default(),
        }
    }

    #[test]
    fn members_unwrap_the_secret_and_outsiders_cannot() {
        let (alice, bob, eve) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let (rec, secret) = EpochRecord::genesis(
            &alice,
            ContextId::default(),
            membership(&[&alice, &bob], &[&alice]),
            1,
        )
        .unwrap();
        verify_chain(&rec.room_id, std::slice::from_ref(&rec)).unwrap();
        assert_eq!(rec.unwrap_secret(&bob).unwrap().expose(), secret.expose());
        assert_eq!(rec.unwrap_secret(&alice).unwrap().expose(), secret.expose());
        assert!(matches!(
            rec.unwrap_secret(&eve),
            Err(CryptoError::NotAMember { .. })
        ));
        // Eve relabels Bob's wrap as hers: it still does not open for her.
        let mut stolen = rec.clone();
        stolen.wrapped[0].user = eve.user_id().clone();
        assert!(stolen.unwrap_secret(&eve).is_err());
    }

    #[test]
    fn removed_member_cannot_unwrap_the_new_epoch() {
        let (alice, bob, carol) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let (e0, s0) = EpochRecord::genesis(
            &alice,
            ContextId::default(),
            membership(&[&alice, &bob, &carol], &[&alice]),
            1,
        )
        .unwrap();
        let (e1, s1) = e0
            .next(&alice, membership(&[&alice, &bob], &[&alice]), 2)
            .unwrap();
        verify_chain(&e0.room_id, &[e0.clone(), e1.clone()]).unwrap();
        assert_ne!(s0.expose(), s1.expose());
        assert_eq!(e1.unwrap_secret(&bob).unwrap().expose(), s1.expose());
        assert!(e1.unwrap_secret(&carol).is_err());
        assert_eq!(e0.unwrap_secret(&carol).unwrap().expose(), s0.expose());
    }

    #[test]
    fn forged_records_are_rejected() {
        let (alice, bob, mallory) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let (e0, _) = EpochRecord::genesis(
            &alice,
            ContextId::default(),
            membership(&[&alice, &bob], &[&alice]),
            1,
        )
        .unwrap();
        // A non-manager (the bridge, or a plain user) tries to add itself.
        let mut forged_membership = e0.membership();
        forged_membership.users.push(mallory.user_id().clone());
        assert!(e0.next(&mallory, forged_membership.clone(), 2).is_err());
        let forged = EpochRecord::build(
            &mallory,
            e0.room_id.clone(),
            e0.context_id.clone(),
            1,
            (Bytes(e0.hash().to_vec()), Bytes::default()),
            forged_membership,
            2,
        )
        .unwrap()
        .0;
        assert!(matches!(
            verify_chain(&e0.room_id, &[e0.clone(), forged.clone()]),
            Err(CryptoError::NotAManager { .. })
        ));
        // Tampering with a signed record: an extra member slipped into a valid record.
        let mut tampered = e0.clone();
        tampered.users.push(mallory.user_id().clone());
        tampered.users.sort();
        assert!(verify_chain(&e0.room_id, &[tampered]).is_err());
        // A replaced wrapped key (the bridge's own) breaks the signature.
        let mut swapped = e0.clone();
        swapped.wrapped[0].ciphertext.0[0] ^= 1;
        assert!(matches!(
            verify_chain(&e0.room_id, &[swapped]),
            Err(CryptoError::BadSignature { .. })
        ));
        // A whole fake room under Alice's room id, properly signed by Mallory: the id is not derived
        // from Mallory and her nonce, so even a first-time viewer rejects it.
        let (fake, _) = EpochRecord::build(
            &mallory,
            e0.room_id.clone(),
            ContextId::default(),
            0,
            (Bytes(vec![0; 32]), e0.nonce.clone()),
            membership(&[&alice, &bob], &[&mallory]),
            1,
        )
        .unwrap();
        assert!(matches!(
            verify_chain(&e0.room_id, std::slice::from_ref(&fake)),
            Err(CryptoError::BrokenChain { .. })
        ));
        // And a chain the client verified before is recognised when extended, not when replaced.
        let seen = verify_chain(&e0.room_id, std::slice::from_ref(&e0)).unwrap();
        assert!(!seen.is_extended_by(&[fake]));
        assert!(seen.is_extended_by(std::slice::from_ref(&e0)));
    }
}
