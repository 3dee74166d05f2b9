//! [`CertFingerprint`]: the SHA-256 of a bridge's TLS certificate (its DER bytes), which a client
//! can pin instead of trusting certificate authorities. Printed the way `openssl x509 -fingerprint
//! -sha256` and browsers print it (`AB:CD:…`, 32 pairs); parsed with or without the colons, in
//! either case.
use sha2::{Digest, Sha256};

/// The SHA-256 of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertFingerprint([u8; 32]);

/// A fingerprint that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a SHA-256 certificate fingerprint (64 hex digits, colons allowed): {0:?}")]
pub struct InvalidFingerprint(pub String);

impl CertFingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        CertFingerprint(Sha256::digest(der).into())
    }

    /// Parses `AB:CD:…` or `abcd…` (64 hex digits).
    pub fn parse(text: &str) -> Result<Self, InvalidFingerprint> {
        let invalid = || InvalidFingerprint(text.to_owned());
        let digits: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
        if digits.len() != 64 {
            return Err(invalid());
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| invalid())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| invalid())?;
        }
        Ok(CertFingerprint(bytes))
    }

    /// The digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CertFingerprint({self})")
    }
}

impl std::str::FromStr for CertFingerprint {
    type Err = InvalidFingerprint;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_like_openssl_and_parses_back_in_either_form() {
        // SHA-256 of the empty string, a known value.
        let empty = CertFingerprint::of_der(b"");
        let printed = empty.to_string();
        assert_eq!(
            printed,
            "E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55"
        );
        assert_eq!(CertFingerprint::parse(&printed), Ok(empty));
        let bare = printed.replace(':', "").to_lowercase();
        assert_eq!(bare.parse::<CertFingerprint>(), Ok(empty));
    }

    #[test]
    fn refuses_what_is_not_64_hex_digits() {
        for bad in [
            "",
            "AB:CD",
            &"G".repeat(64),
            &"A".repeat(66),
            "é".repeat(32).as_str(),
        ] {
            assert!(CertFingerprint::parse(bad).is_err(), "{bad:?}");
        }
    }
}
