//! Ids: [`UserId`] (the printable public key), [`RoomId`], [`ContextId`].
use serde::{Deserialize, Serialize};

/// A user id that is not a valid Ed25519 public key (it becomes
/// [`crate::CryptoError::InvalidUserId`] where a cryptographic check needed it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid user id: {0}")]
pub struct InvalidUserId(pub String);

/// A room or context id that is not 1 to 64 characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {text:?}")]
pub struct InvalidId {
    /// Which id it was to be.
    pub kind: &'static str,
    /// What was given.
    pub text: String,
}

/// A user id: the user's Ed25519 public key in base58. The X25519 key used to wrap secrets for this user
/// is derived from it (see [`crate::identity`]), so nothing the bridge supplies can redirect a wrap.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    /// Builds an id from the 32 public key bytes.
    pub fn from_public_key(key: &[u8; 32]) -> Self {
        UserId(bs58::encode(key).into_string())
    }

    /// Parses a printable id, checking that it is a valid Ed25519 public key.
    pub fn parse(text: &str) -> Result<Self, InvalidUserId> {
        let id = UserId(text.trim().to_string());
        id.verifying_key()?;
        Ok(id)
    }

    /// The public key bytes.
    pub fn public_key_bytes(&self) -> Result<[u8; 32], InvalidUserId> {
        let raw = bs58::decode(&self.0)
            .into_vec()
            .map_err(|_| InvalidUserId(self.0.clone()))?;
        raw.try_into().map_err(|_| InvalidUserId(self.0.clone()))
    }

    /// The Ed25519 verifying key.
    pub fn verifying_key(&self) -> Result<ed25519_dalek::VerifyingKey, InvalidUserId> {
        let bytes = self.public_key_bytes()?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| InvalidUserId(self.0.clone()))?;
        if key.is_weak() {
            return Err(InvalidUserId(self.0.clone()));
        }
        Ok(key)
    }

    /// The printable form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserId {
    type Error = InvalidUserId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        UserId::parse(&s)
    }
}

impl From<UserId> for String {
    fn from(id: UserId) -> String {
        id.0
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Ids are public keys: short form keeps logs readable.
        write!(f, "UserId({}…)", &self.0[..self.0.len().min(8)])
    }
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses an id: 1 to
            #[doc = stringify!($max)]
            /// characters of `[A-Za-z0-9_-]`.
            pub fn parse(text: &str) -> Result<Self, InvalidId> {
                let ok = !text.is_empty()
                    && text.len() <= $max
                    && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if ok {
                    Ok($name(text.to_string()))
                } else {
                    Err(InvalidId {
                        kind: stringify!($name),
                        text: text.to_string(),
                    })
                }
            }

            /// The printable form.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                $name::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_id!(
    /// A room id, chosen at random by the creating client (base58 of 16 random bytes).
    RoomId,
    64
);
text_id!(
    /// A context: a group of users and rooms, as in PrivMX. One default context exists.
    ContextId,
    64
);

impl RoomId {
    /// A random id that no room has (for tests and probes; real rooms use [`RoomId::derive`]).
    pub fn random() -> Self {
        let raw: [u8; 16] = rand::random();
        RoomId(bs58::encode(raw).into_string())
    }

    /// The id of a room created by `creator` with `nonce`: the first 16 bytes of a labelled SHA-256,
    /// base58. The genesis epoch record carries the nonce and is signed by the creator, so a bridge can
    /// neither serve a look-alike room under this id nor let someone else claim it.
    pub fn derive(creator: &UserId, nonce: &[u8]) -> Self {
        use sha2::{Digest, Sha256};
        let mut t = crate::transcript::Transcript::new("bevy_streams room id v1");
        t.text(creator.as_str()).bytes(nonce);
        let digest = Sha256::digest(t.finish());
        RoomId(bs58::encode(&digest[..16]).into_string())
    }
}

impl ContextId {
    /// The context every registered user belongs to.
    pub fn default_context() -> Self {
        ContextId("default".to_string())
    }
}

impl Default for ContextId {
    fn default() -> Self {
        Self::default_context()
    }
}
