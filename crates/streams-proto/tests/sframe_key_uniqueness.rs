//! KIDs are unique per (epoch, sender, device session, track), and no (key, counter) pair repeats —
//! across restarts and for one user on two devices.
use std::collections::HashSet;

use streams_proto::RoomSecret;
use streams_proto::frame_crypto::{DeviceSession, EpochTag, FrameDecryptor, KeyId};
use streams_proto::identity::Identity;

/// The SFrame header of a frame: KID and counter (first byte config, then KID and CTR big-endian).
fn header(frame: &[u8]) -> (u64, u64) {
    let config = frame[0];
    let (kid_len, kid_inline) = if config & 0x80 != 0 {
        (((config >> 4) & 0x07) as usize + 1, None)
    } else {
        (0, Some(u64::from((config >> 4) & 0x07)))
    };
    let (ctr_len, ctr_inline) = if config & 0x08 != 0 {
        ((config & 0x07) as usize + 1, None)
    } else {
        (0, Some(u64::from(config & 0x07)))
    };
    // RFC 9605 4.3: config byte X|KKK|Y|CCC; X set: KID takes K+1 bytes, Y set: CTR takes C+1 bytes.
    let be = |b: &[u8]| b.iter().fold(0u64, |a, x| (a << 8) | u64::from(*x));
    let kid = kid_inline.unwrap_or_else(|| be(&frame[1..1 + kid_len]));
    let ctr = ctr_inline.unwrap_or_else(|| be(&frame[1 + kid_len..1 + kid_len + ctr_len]));
    (kid, ctr)
}

#[test]
fn one_user_on_two_devices_and_after_a_restart_never_reuses_a_key() {
    let secret = RoomSecret::random();
    let alice = Identity::generate();
    let laptop = DeviceSession::random();
    let phone = DeviceSession::random();
    let laptop_after_restart = DeviceSession::random();
    assert_ne!(laptop.value(), phone.value());
    assert_ne!(laptop.value(), laptop_after_restart.value());

    let sessions = [&laptop, &phone, &laptop_after_restart];
    let mut kids = HashSet::new();
    let mut frames = Vec::new();
    for session in sessions {
        for track in 0..2u8 {
            let mut enc = session
                .encryptor(&secret, 5, alice.user_id(), track)
                .unwrap();
            assert!(kids.insert(enc.key_id()), "KID reused");
            assert_eq!(enc.key_id(), KeyId::new(5, session.value(), track).raw());
            for _ in 0..3 {
                frames.push((enc.key_id(), enc.encrypt(b"same payload", b"").unwrap()));
            }
        }
    }
    // Every (KID, CTR) pair is distinct, and since the KID selects the key, so is every (key, CTR).
    let pairs: HashSet<(u64, u64)> = frames.iter().map(|(_, f)| header(f)).collect();
    assert_eq!(pairs.len(), frames.len());
    // Same payload and counter on two devices never give the same ciphertext (different keys).
    let firsts: HashSet<&Vec<u8>> = frames.iter().map(|(_, f)| f).collect();
    assert_eq!(firsts.len(), frames.len());

    // A receiver that knows each device's KID opens each frame only with that device's key.
    let mut dec = FrameDecryptor::new();
    for kid in &kids {
        dec.add_sender(&secret, alice.user_id(), *kid).unwrap();
    }
    for (_, frame) in &frames {
        assert_eq!(
            dec.decrypt(alice.user_id(), frame, b"").unwrap(),
            b"same payload"
        );
    }
    // A frame relabelled with another device's KID does not authenticate under that key.
    let (kid_a, frame_a) = &frames[0];
    let (kid_b, _) = frames.iter().find(|(k, _)| k != kid_a).unwrap();
    let mut only_b = FrameDecryptor::new();
    only_b.add_sender(&secret, alice.user_id(), *kid_b).unwrap();
    assert!(only_b.decrypt(alice.user_id(), frame_a, b"").is_err());
}

#[test]
fn epochs_get_distinct_kids() {
    let session = DeviceSession::random().value();
    assert_ne!(KeyId::new(1, session, 0), KeyId::new(2, session, 0));
    let kid = KeyId::new(65_543, session, 3);
    assert_eq!(
        kid.epoch_tag(),
        EpochTag::of(7),
        "epochs are carried modulo 2^16"
    );
    assert_eq!(kid.track(), 3);
    assert_eq!(KeyId::from_raw(kid.raw()), kid);
}
