//! Key sets (codec, root signature, anti-replay, bounds) and text key files.
#![allow(clippy::cast_possible_truncation)]

mod common;

use common::*;
use ota_crypto::CryptoError;
use ota_crypto::keyfile::{self, KeyFileError};
use ota_crypto::keys::{KeyEntry, KeyId, KeySet, MAX_KEYS, MAX_REVOKED, RootKey, SigningSecret};
use proptest::prelude::*;

fn signed(set: &KeySet) -> Vec<u8> {
    set.sign(&root())
}

fn entry(seed: u8) -> KeyEntry {
    KeyEntry::new(SigningSecret::from_seed(&[seed; 32]).public_key(), 0, None)
}

#[test]
fn key_set_round_trips_and_verifies() {
    let set = KeySet::new(
        3,
        &[entry(1), KeyEntry::new(signer().public_key(), 10, Some(20))],
        &[KeyId([9; 8])],
    )
    .unwrap();
    let bytes = signed(&set);
    assert_eq!(bytes.len(), set.encoded_len());
    assert_eq!(KeySet::verify(&bytes, &root().root_key(), 3).unwrap(), set);
    assert_eq!(KeySet::parse_unverified(&bytes).unwrap(), set);
}

#[test]
fn key_set_bounds_and_consistency_each_have_an_error() {
    let many: Vec<KeyEntry> = (0..=MAX_KEYS as u8).map(entry).collect();
    assert_eq!(
        KeySet::new(1, &many, &[]).unwrap_err(),
        CryptoError::KeySetTooManyKeys(9)
    );
    let revoked: Vec<KeyId> = (0..=MAX_REVOKED as u8).map(|i| KeyId([i; 8])).collect();
    assert_eq!(
        KeySet::new(1, &[], &revoked).unwrap_err(),
        CryptoError::KeySetTooManyRevocations(17)
    );
    assert_eq!(
        KeySet::new(1, &[entry(1), entry(1)], &[]).unwrap_err(),
        CryptoError::KeySetDuplicateKey(entry(1).id)
    );
    let mut bad = entry(2);
    bad.id = KeyId([0; 8]);
    assert_eq!(
        KeySet::new(1, &[bad], &[]).unwrap_err(),
        CryptoError::KeySetKeyIdMismatch(KeyId([0; 8]))
    );
    let empty = KeyEntry::new(entry(3).public, 10, Some(10));
    assert_eq!(
        KeySet::new(1, &[empty], &[]).unwrap_err(),
        CryptoError::KeySetEmptyWindow(empty.id)
    );
}

#[test]
fn malformed_key_set_bytes_each_have_an_error() {
    let good = signed(&KeySet::new(1, &[entry(1)], &[]).unwrap());
    let r = root().root_key();
    let mut b = good.clone();
    b[0] = b'X';
    assert_eq!(
        KeySet::verify(&b, &r, 0).unwrap_err(),
        CryptoError::KeySetBadMagic { found: *b"XTAK" }
    );
    let mut b = good.clone();
    b[4] = 9;
    assert_eq!(
        KeySet::verify(&b, &r, 0).unwrap_err(),
        CryptoError::KeySetUnsupportedFormat(9)
    );
    let mut b = good.clone();
    b[6] = 9;
    assert_eq!(
        KeySet::verify(&b, &r, 0).unwrap_err(),
        CryptoError::KeySetTooManyKeys(9)
    );
    let mut b = good.clone();
    b[7] = 17;
    assert_eq!(
        KeySet::verify(&b, &r, 0).unwrap_err(),
        CryptoError::KeySetTooManyRevocations(17)
    );
    assert_eq!(
        KeySet::verify(&good[..good.len() - 1], &r, 0).unwrap_err(),
        CryptoError::KeySetLength {
            expected: good.len(),
            found: good.len() - 1
        }
    );
    assert_eq!(
        KeySet::verify(&good[..3], &r, 0).unwrap_err(),
        CryptoError::KeySetLength {
            expected: 80,
            found: 3
        }
    );
    let mut long = good.clone();
    long.push(0);
    assert_eq!(
        KeySet::verify(&long, &r, 0).unwrap_err(),
        CryptoError::KeySetLength {
            expected: good.len(),
            found: good.len() + 1
        }
    );
    // Any change to the signed body is caught by the root signature before semantics.
    let mut b = good.clone();
    b[16] ^= 1;
    assert_eq!(
        KeySet::verify(&b, &r, 0).unwrap_err(),
        CryptoError::KeySetNotSignedByRoot
    );
    // ...while the unverified parser reports the semantic problem.
    assert_eq!(
        KeySet::parse_unverified(&b).unwrap_err(),
        CryptoError::KeySetKeyIdMismatch(KeyId(b[16..24].try_into().unwrap()))
    );
}

#[test]
fn revocation_wins_over_listing_and_unknown_is_distinct() {
    let set = KeySet::new(1, &[entry(1)], &[entry(1).id]).unwrap();
    assert_eq!(
        set.signing_key(entry(1).id, 0).unwrap_err(),
        CryptoError::RevokedSigningKey(entry(1).id)
    );
    assert_eq!(
        set.signing_key(entry(2).id, 0).unwrap_err(),
        CryptoError::UnknownSigningKey(entry(2).id)
    );
}

#[test]
fn weak_root_key_is_refused() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert!(matches!(
        RootKey::from_bytes(&identity),
        Err(CryptoError::MalformedPublicKey(_))
    ));
}

proptest! {
    #[test]
    fn key_set_codec_round_trips(
        version in any::<u64>(),
        seeds in prop::collection::btree_set(any::<u8>(), 0..=MAX_KEYS),
        windows in prop::collection::vec((0u64..1000, prop::option::of(1u64..1000)), MAX_KEYS),
        revoked in prop::collection::btree_set(any::<[u8; 8]>(), 0..=MAX_REVOKED),
    ) {
        let keys: Vec<KeyEntry> = seeds.iter().zip(&windows).map(|(&s, &(from, len))| {
            KeyEntry::new(SigningSecret::from_seed(&[s; 32]).public_key(), from, len.map(|l| from + l))
        }).collect();
        let revoked: Vec<KeyId> = revoked.into_iter().map(KeyId).collect();
        let set = KeySet::new(version, &keys, &revoked).unwrap();
        let bytes = signed(&set);
        prop_assert_eq!(KeySet::verify(&bytes, &root().root_key(), version).unwrap(), set);
        ota_crypto::fuzz::fuzz_keyset(&bytes);
    }

    #[test]
    fn key_set_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..800)) {
        ota_crypto::fuzz::fuzz_keyset(&bytes);
    }

    #[test]
    fn key_set_never_panics_on_mutations(pos in 0usize..200, v in any::<u8>()) {
        let mut b = signed(&KeySet::new(1, &[entry(1), entry(2)], &[KeyId([5; 8])]).unwrap());
        let n = b.len();
        b[pos % n] = v;
        ota_crypto::fuzz::fuzz_keyset(&b);
    }
}

// ---- key files ------------------------------------------------------------------------

#[test]
fn secret_key_files_round_trip_in_hex_and_pem() {
    let s = signer();
    let hex = keyfile::to_hex32(&s.to_seed());
    assert_eq!(
        keyfile::parse_signing_secret(&hex).unwrap().public_key(),
        s.public_key()
    );
    let pem = keyfile::signing_secret_pem(&s).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(
        keyfile::parse_signing_secret(&pem).unwrap().public_key(),
        s.public_key()
    );
}

#[test]
fn public_key_files_round_trip_in_hex_and_pem() {
    let p = root().public_key();
    assert_eq!(
        keyfile::parse_public_key(&keyfile::to_hex32(&p)).unwrap(),
        p
    );
    let pem = keyfile::public_key_pem(&p).unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_eq!(keyfile::parse_root_key(&pem).unwrap(), root().root_key());
    let pk = payload_key();
    assert_eq!(
        keyfile::parse_payload_key(&format!("  {}\n", *keyfile::to_hex32(pk.as_bytes())))
            .unwrap()
            .key_id(),
        pk.key_id()
    );
}

#[test]
fn bad_key_files_each_have_a_clear_error() {
    assert_eq!(
        keyfile::parse_signing_secret(" \n").unwrap_err(),
        KeyFileError::Empty
    );
    assert_eq!(
        keyfile::parse_payload_key("abcd").unwrap_err(),
        KeyFileError::HexLength { found: 4 }
    );
    let mut hex = "ab".repeat(32);
    hex.replace_range(10..11, "g");
    assert_eq!(
        keyfile::parse_payload_key(&hex).unwrap_err(),
        KeyFileError::HexDigit {
            offset: 10,
            found: 'g'
        }
    );
    assert_eq!(
        keyfile::parse_payload_key("ssh-ed25519 AAAAC3Nz").unwrap_err(),
        KeyFileError::UnknownFormat {
            start: "ssh-ed25519 AAAA".into()
        }
    );
    let public_pem = keyfile::public_key_pem(&root().public_key()).unwrap();
    assert_eq!(
        keyfile::parse_signing_secret(&public_pem).unwrap_err(),
        KeyFileError::PemLabel {
            found: "PUBLIC KEY".into(),
            expected: "PRIVATE KEY"
        }
    );
    let broken = public_pem.replace("MC", "XX");
    assert!(
        matches!(
            keyfile::parse_public_key(&broken),
            Err(KeyFileError::Pem(_))
        ),
        "{broken}"
    );
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert_eq!(
        keyfile::parse_public_key(&keyfile::to_hex32(&identity)).unwrap_err(),
        KeyFileError::InvalidPublicKey
    );
    assert_eq!(
        KeyFileError::HexLength { found: 4 }.to_string(),
        "hex key has 4 digits, expected 64"
    );
}

#[test]
fn secrets_are_zeroized_on_drop() {
    fn assert_zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    assert_zeroize_on_drop::<SigningSecret>();
    assert_zeroize_on_drop::<ota_crypto::keys::PayloadKey>();
    assert_zeroize_on_drop::<chacha20poly1305::ChaCha20Poly1305>();
}
