//! The plaintext inside each SFrame-protected media frame: the capture time of the frame's first sample
//! (microseconds since the Unix epoch, sender clock) followed by the encoded frame. Both are encrypted,
//! so the bridge sees neither the codec payload nor capture timing; the SFrame counter in the
//! authenticated header numbers the frames for the receiver's jitter buffer.
use streams_proto::CryptoError;
use streams_proto::UserId;
use streams_proto::frame_crypto::{FrameDecryptor, FrameEncryptor, frame_header};

/// Bytes of capture time before the encoded frame.
const HEADER: usize = 8;

/// Protects one encoded frame captured at `capture_us`.
pub fn seal(
    encryptor: &mut FrameEncryptor,
    capture_us: u64,
    encoded: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut plain = Vec::with_capacity(HEADER + encoded.len());
    plain.extend_from_slice(&capture_us.to_be_bytes());
    plain.extend_from_slice(encoded);
    encryptor.encrypt(&plain, b"")
}

/// An opened media frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedFrame {
    /// The SFrame counter: consecutive per sender track.
    pub counter: u64,
    /// The SFrame key id.
    pub key_id: u64,
    /// Capture time of the first sample (µs since the Unix epoch, sender clock).
    pub capture_us: u64,
    /// The encoded frame.
    pub encoded: Vec<u8>,
}

/// Opens a frame from `sender`; fails (and nothing reaches a decoder) if it does not authenticate.
pub fn open(
    decryptor: &FrameDecryptor,
    sender: &UserId,
    protected: &[u8],
) -> Result<OpenedFrame, CryptoError> {
    let (key_id, counter) = frame_header(protected)?;
    let plain = decryptor.decrypt(sender, protected, b"")?;
    if plain.len() < HEADER {
        return Err(CryptoError::Malformed("media frame too short".into()));
    }
    let (time, encoded) = plain.split_at(HEADER);
    Ok(OpenedFrame {
        counter,
        key_id,
        capture_us: u64::from_be_bytes(time.try_into().expect("8 bytes")),
        encoded: encoded.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use streams_proto::frame_crypto::DeviceSession;
    use streams_proto::{Identity, RoomSecret};

    #[test]
    fn frames_carry_capture_time_and_counter_inside_the_encryption() {
        let secret = RoomSecret::random();
        let alice = Identity::generate();
        let session = DeviceSession::random();
        let mut enc = session.encryptor(&secret, 0, alice.user_id(), 0).unwrap();
        let mut dec = FrameDecryptor::new();
        dec.add_sender(&secret, alice.user_id(), enc.key_id())
            .unwrap();
        let first = seal(&mut enc, 1_700_000_000_000_000, b"opus-a").unwrap();
        let second = seal(&mut enc, 1_700_000_000_020_000, b"opus-b").unwrap();
        let a = open(&dec, alice.user_id(), &first).unwrap();
        let b = open(&dec, alice.user_id(), &second).unwrap();
        assert_eq!(
            (a.counter + 1, a.encoded.as_slice()),
            (b.counter, &b"opus-a"[..])
        );
        assert_eq!(b.capture_us - a.capture_us, 20_000);
        // Neither the payload nor the time is visible in the protected frame.
        let time = 1_700_000_000_000_000u64.to_be_bytes();
        assert!(!first.windows(6).any(|w| w == b"opus-a"));
        assert!(!first.windows(8).any(|w| w == time));
        let mut tampered = first.clone();
        tampered[3] ^= 0x40;
        assert!(open(&dec, alice.user_id(), &tampered).is_err());
    }
}
