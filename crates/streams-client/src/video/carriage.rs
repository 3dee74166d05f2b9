//! How a protected (SFrame) video frame travels in RTP.
//!
//! The SDP says H.264 (RFC 6184, packetization-mode 1), so the bridge and str0m packetize, NACK and
//! repair it as H.264. But an H.264 packetizer splits its input at Annex B start codes (`00 00 01`),
//! and ciphertext contains such bytes by chance (about once per 5 MB): a frame would be cut in two,
//! rarely and silently. So the whole protected frame travels as **one opaque NAL unit** whose body is
//! escaped with H.264's own emulation-prevention rule (a `03` after every `00 00` that is followed
//! by `00`–`03`) and closed by a stop byte `80` (as H.264's RBSP trailing bits), so it never ends in
//! `00`. No start code can then occur inside it; RFC 6184 fragments it into FU-A packets and the
//! receiver gets it back byte for byte.
//!
//! The NAL header is the only clear byte: type 5 (IDR) for a keyframe and type 1 otherwise, so the
//! bridge can tell keyframes from other frames without any key. It is a hint, not a promise: the
//! receiver judges keyframes from the decrypted bitstream, so a bridge that flips it gains nothing.
use crate::video::VideoError;

const START_CODE: [u8; 4] = [0, 0, 0, 1];
/// nal_ref_idc 3, type 5 (IDR slice).
const KEYFRAME_HEADER: u8 = 0x65;
/// nal_ref_idc 3, type 1 (non-IDR slice).
const DELTA_HEADER: u8 = 0x61;
/// Closes every unit (a one bit and zero bits, like H.264's rbsp_trailing_bits).
const STOP: u8 = 0x80;

/// Wraps a protected frame as one Annex B NAL unit.
pub fn wrap(protected: &[u8], keyframe: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(protected.len() + protected.len() / 1024 + 8);
    out.extend_from_slice(&START_CODE);
    out.push(if keyframe {
        KEYFRAME_HEADER
    } else {
        DELTA_HEADER
    });
    let mut zeros = 0;
    for &b in protected {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out.push(STOP);
    out
}

/// The keyframe hint and the protected frame of a received (depacketized) frame.
pub fn unwrap(received: &[u8]) -> Result<(bool, Vec<u8>), VideoError> {
    let body = received
        .strip_prefix(&START_CODE[..])
        .or_else(|| received.strip_prefix(&START_CODE[1..]))
        .unwrap_or(received);
    let (&header, rest) = body
        .split_first()
        .ok_or_else(|| VideoError::Frame("empty video frame".into()))?;
    let escaped = rest.strip_suffix(&[STOP]).ok_or_else(|| {
        VideoError::Frame("a video frame without its stop byte (cut short?)".into())
    })?;
    let keyframe = match header {
        KEYFRAME_HEADER => true,
        DELTA_HEADER => false,
        other => {
            return Err(VideoError::Frame(format!(
                "unexpected NAL header {other:#04x}"
            )));
        }
    };
    let mut out = Vec::with_capacity(escaped.len());
    let mut zeros = 0;
    for &b in escaped {
        if zeros >= 2 {
            match b {
                3 => {
                    zeros = 0;
                    continue;
                }
                0..=2 => {
                    return Err(VideoError::Frame(
                        "a start code inside a video frame (two frames run together?)".into(),
                    ));
                }
                _ => {}
            }
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    Ok((keyframe, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_start_code(bytes: &[u8]) -> bool {
        bytes.windows(3).any(|w| w == [0, 0, 1])
    }

    #[test]
    fn ciphertext_full_of_start_codes_survives_the_round_trip() {
        let nasty = [0u8, 0, 1, 0, 0, 0, 1, 0, 0, 2, 0, 0, 3, 0, 0, 0, 0, 7, 0, 0];
        let wrapped = wrap(&nasty, true);
        assert!(!has_start_code(&wrapped[4..]), "{wrapped:?}");
        assert_eq!(wrapped[4], KEYFRAME_HEADER);
        assert_eq!(unwrap(&wrapped).unwrap(), (true, nasty.to_vec()));
        // Also as str0m's depacketizer hands it over with a 3-byte start code.
        assert_eq!(unwrap(&wrapped[1..]).unwrap(), (true, nasty.to_vec()));
        // Every ending a frame can have, escape bytes and stop byte look-alikes included.
        for tail in [
            &[0u8][..],
            &[0, 0],
            &[0, 3],
            &[0, 0, 3],
            &[0, 0, 0],
            &[0x80],
            &[0, 0x80],
            &[3],
        ] {
            let frame = [&[7u8, 9][..], tail].concat();
            assert_eq!(
                unwrap(&wrap(&frame, false)).unwrap(),
                (false, frame.clone())
            );
        }
    }

    #[test]
    fn random_frames_round_trip_through_the_h264_packetizer() {
        use rand::{RngCore, SeedableRng};
        use str0m::format::CodecExtra;
        use str0m::unversioned::{Depacketizer, H264Depacketizer, H264Packetizer, Packetizer};
        // Seeded: the same frames every run, so a failure is reproduced, never a matter of chance.
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_ca11);
        // Small frames of few distinct bytes hit every escape and ending; big ones span many packets.
        let sizes = (0..400).map(|i| 1 + i % 40).chain([1500, 40_000]);
        for size in sizes {
            let mut frame = vec![0u8; size];
            rng.fill_bytes(&mut frame);
            if size <= 40 {
                frame.iter_mut().for_each(|b| *b %= 4);
            }
            // Plant start codes and zero runs, as ciphertext may have by chance.
            for i in (0..size.saturating_sub(4)).step_by(97) {
                frame[i..i + 3].copy_from_slice(&[0, 0, 1]);
            }
            let wrapped = wrap(&frame, false);
            let packets = H264Packetizer::default().packetize(1100, &wrapped).unwrap();
            let mut depacketizer = H264Depacketizer::default();
            let mut rebuilt = Vec::new();
            for packet in &packets {
                depacketizer
                    .depacketize(packet, &mut rebuilt, &mut CodecExtra::None)
                    .unwrap();
            }
            assert_eq!(unwrap(&rebuilt).unwrap(), (false, frame), "size {size}");
        }
    }

    #[test]
    fn garbage_is_a_typed_error() {
        assert!(unwrap(&[]).is_err());
        assert!(unwrap(&[0, 0, 0, 1, 0x67, 1, 2]).is_err());
        assert!(unwrap(&[0, 0, 0, 1, 0x61, 9, 0, 0, 1, 0x61, 0x80]).is_err());
        // A unit cut short (its stop byte missing) is refused, not passed on.
        let whole = wrap(&[1, 2, 3, 4], false);
        assert!(unwrap(&whole[..whole.len() - 1]).is_err());
    }
}
