//! RFC 9605 Appendix C test vectors for the SFrame implementation and cipher suites we ship
//! (header encoding, and full encryption for AES_128_GCM_SHA256_128 and AES_256_GCM_SHA512_128).
use serde_json::Value;
use sframe::CipherSuite;
use sframe::frame::{EncryptedFrameView, MediaFrameView, MonotonicCounter};
use sframe::header::SframeHeader;
use sframe::key::{DecryptionKey, EncryptionKey};

fn vectors() -> Value {
    serde_json::from_str(include_str!("data/rfc9605_vectors.json")).unwrap()
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn header_encoding_matches_rfc9605() {
    let v = vectors();
    let cases = v["header"].as_array().unwrap();
    assert!(cases.len() > 100);
    for case in cases {
        let kid = case["kid"].as_u64().unwrap();
        let ctr = case["ctr"].as_u64().unwrap();
        let expected = hex(case["encoded"].as_str().unwrap());
        let header = SframeHeader::new(kid, ctr);
        let mut buf = vec![0u8; header.len()];
        header.serialize(&mut buf).unwrap();
        assert_eq!(buf, expected, "kid {kid} ctr {ctr}");
        let parsed = SframeHeader::deserialize(&expected).unwrap();
        assert_eq!((parsed.key_id(), parsed.counter()), (kid, ctr));
    }
}

#[test]
fn aes_gcm_encryption_matches_rfc9605() {
    let v = vectors();
    let cases = v["sframe"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let suite = match case["cipher_suite"].as_u64().unwrap() {
            4 => CipherSuite::AesGcm128Sha256,
            5 => CipherSuite::AesGcm256Sha512,
            other => panic!("unexpected suite {other}"),
        };
        let kid = case["kid"].as_u64().unwrap();
        let ctr = case["ctr"].as_u64().unwrap();
        let base_key = hex(case["base_key"].as_str().unwrap());
        let metadata = hex(case["metadata"].as_str().unwrap());
        let pt = hex(case["pt"].as_str().unwrap());
        let ct = hex(case["ct"].as_str().unwrap());

        let key = EncryptionKey::derive_from(suite, kid, &base_key).unwrap();
        let mut counter = MonotonicCounter::with_start_value(ctr, u64::MAX);
        let frame = MediaFrameView::try_with_meta_data(&mut counter, &pt, &metadata).unwrap();
        let mut out = Vec::new();
        let encrypted = frame.encrypt_into(&key, &mut out).unwrap();
        assert_eq!(
            encrypted.sframe_cipher_text(),
            ct.as_slice(),
            "suite {suite:?}"
        );

        let dkey = DecryptionKey::derive_from(suite, kid, &base_key).unwrap();
        let view = EncryptedFrameView::try_with_meta_data(&ct, &metadata).unwrap();
        let mut plain = Vec::new();
        let decrypted = view.decrypt_into(&dkey, &mut plain).unwrap();
        assert_eq!(decrypted.payload(), pt.as_slice());

        // The same ciphertext with other metadata must not authenticate.
        let view = EncryptedFrameView::try_with_meta_data(&ct, b"other").unwrap();
        let mut plain = Vec::new();
        assert!(view.decrypt_into(&dkey, &mut plain).is_err());
    }
}
