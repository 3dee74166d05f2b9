//! [`Identity`]: a user's private key, its signatures, and the owner-only key file it lives in.
//!
//! One Ed25519 key pair per user. The user id is the public key ([`UserId`]). The X25519 key pair
//! used for HPKE key wrapping is the birational image of the same key (as libsodium's
//! `crypto_sign_ed25519_pk_to_curve25519`), so anyone holding a user id can wrap a room secret for
//! that user without asking the bridge for anything.
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey};
use zeroize::Zeroizing;

use crate::bytes::Bytes;
use crate::error::CryptoError;
use crate::ids::UserId;

const KEY_FILE_HEADER: &str = "bevy_streams user key v1";

/// A user's private key. Never leaves the client.
#[derive(Clone)]
pub struct Identity {
    signing: SigningKey,
    user_id: UserId,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({:?})", self.user_id)
    }
}

impl Identity {
    /// A new random identity.
    pub fn generate() -> Self {
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(rand::random());
        Self::from_seed(&seed)
    }

    /// The identity for a 32-byte seed (deterministic; for tests and key files).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(seed);
        let user_id = UserId::from_public_key(signing.verifying_key().as_bytes());
        Identity { signing, user_id }
    }

    /// This user's id (the public key).
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// Signs a message.
    pub fn sign(&self, message: &[u8]) -> Bytes {
        Bytes(self.signing.sign(message).to_bytes().to_vec())
    }

    /// The X25519 private key bytes (clamped scalar of the Ed25519 key) used to unwrap room secrets.
    pub(crate) fn x25519_secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_scalar_bytes())
    }

    /// Reads a key file, refusing one that group or others can read.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        check_owner_only(path)?;
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
                    path: path.to_path_buf(),
                    source,
                })?,
            );
        let mut lines = text.lines();
        if lines.next() != Some(KEY_FILE_HEADER) {
            return Err(KeyFileError::Format(path.to_path_buf()));
        }
        let encoded = lines
            .next()
            .ok_or_else(|| KeyFileError::Format(path.to_path_buf()))?;
        let raw = Zeroizing::new(
            bs58::decode(encoded.trim())
                .into_vec()
                .map_err(|_| KeyFileError::Format(path.to_path_buf()))?,
        );
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            raw.as_slice()
                .try_into()
                .map_err(|_| KeyFileError::Format(path.to_path_buf()))?,
        );
        Ok(Self::from_seed(&seed))
    }

    /// Writes a new key file readable by its owner only (mode 0600). Never overwrites a file.
    pub fn save(&self, path: &Path) -> Result<(), KeyFileError> {
        let io = |source| KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        let secret = Zeroizing::new(bs58::encode(self.signing.to_bytes()).into_string());
        let text = Zeroizing::new(format!(
            "{KEY_FILE_HEADER}\n{}\n# user id: {}\n",
            secret.as_str(),
            self.user_id
        ));
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }
}

/// Verifies an Ed25519 signature by `author` over `message` (strict verification).
pub fn verify(
    author: &UserId,
    message: &[u8],
    signature: &Bytes,
    what: &'static str,
) -> Result<(), CryptoError> {
    let bad = || CryptoError::BadSignature {
        what,
        author: author.clone(),
    };
    let key = author.verifying_key()?;
    let raw: [u8; 64] = signature.0.as_slice().try_into().map_err(|_| bad())?;
    let sig = ed25519_dalek::Signature::from_bytes(&raw);
    key.verify_strict(message, &sig).map_err(|_| bad())
}

/// The X25519 public key that wraps secrets for `user`, derived from the id alone.
pub(crate) fn x25519_public(user: &UserId) -> Result<[u8; 32], CryptoError> {
    Ok(user.verifying_key()?.to_montgomery().to_bytes())
}

#[cfg(unix)]
fn check_owner_only(path: &Path) -> Result<(), KeyFileError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owner_only(_path: &Path) -> Result<(), KeyFileError> {
    Ok(())
}

/// A key file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file is readable or writable by group or others.
    #[error(
        "key file {path} has mode {mode:o}: it must be readable by its owner only; run `chmod 600 {path}`"
    )]
    TooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Reading or writing failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file is not a bevy_streams key file.
    #[error("{0} is not a bevy_streams key file")]
    Format(PathBuf),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trips_and_is_owner_only() {
        let dir = tempfile_dir();
        let path = dir.join("alice.key");
        let alice = Identity::generate();
        alice.save(&path).unwrap();
        let loaded = Identity::load(&path).unwrap();
        assert_eq!(loaded.user_id(), alice.user_id());
        // Saving again must not overwrite the key.
        assert!(matches!(alice.save(&path), Err(KeyFileError::Io { .. })));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = Identity::load(&path).unwrap_err();
            assert!(matches!(err, KeyFileError::TooOpen { mode: 0o644, .. }));
            assert!(err.to_string().contains("chmod 600"));
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn signatures_verify_only_for_their_author_and_message() {
        let alice = Identity::generate();
        let mallory = Identity::generate();
        let sig = alice.sign(b"hello");
        assert!(verify(alice.user_id(), b"hello", &sig, "test").is_ok());
        assert!(verify(alice.user_id(), b"hellO", &sig, "test").is_err());
        assert!(verify(mallory.user_id(), b"hello", &sig, "test").is_err());
        assert!(verify(alice.user_id(), b"hello", &Bytes(vec![0; 3]), "test").is_err());
    }

    #[test]
    fn user_id_parses_and_rejects_garbage() {
        let alice = Identity::generate();
        let parsed = UserId::parse(alice.user_id().as_str()).unwrap();
        assert_eq!(&parsed, alice.user_id());
        assert!(UserId::parse("not-a-key").is_err());
        assert!(UserId::parse("").is_err());
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("streams-proto-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
