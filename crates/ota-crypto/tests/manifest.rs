//! Manifest codec: round trip, never panics, and one exact error per malformed field.
#![allow(clippy::cast_possible_truncation)]

mod common;

use ota_crypto::CryptoError;
use ota_crypto::error::TextField;
use ota_crypto::keys::KeyId;
use ota_crypto::manifest::{Encryption, Kind, MANIFEST_LEN, Manifest, SemVer, Text};
use proptest::prelude::*;

fn sample() -> Manifest {
    Manifest {
        kind: Kind::Firmware,
        version: SemVer::new(1, 2, 3),
        min_version: SemVer::new(1, 0, 0),
        payload_size: 5000,
        chunk_size: 1024,
        created_at: 1000,
        expires_at: Some(2000),
        signing_key: KeyId([1; 8]),
        encryption: Encryption::ChaCha20Poly1305 {
            key_id: KeyId([2; 8]),
            nonce_prefix: [3; 8],
        },
        digest: [4; 32],
        title: Text::new(TextField::Title, "app").unwrap(),
        target: Text::new(TextField::Target, "board").unwrap(),
    }
}

fn with(f: impl FnOnce(&mut [u8; MANIFEST_LEN])) -> Result<Manifest, CryptoError> {
    let mut b = sample().encode();
    f(&mut b);
    Manifest::parse(&b)
}

#[test]
fn sample_round_trips() {
    assert_eq!(Manifest::parse(&sample().encode()), Ok(sample()));
}

#[test]
fn truncated_and_oversized() {
    let b = sample().encode();
    assert_eq!(
        Manifest::parse(&b[..100]),
        Err(CryptoError::Truncated {
            received: 100,
            expected: 182
        })
    );
    assert_eq!(
        Manifest::parse(&[]),
        Err(CryptoError::Truncated {
            received: 0,
            expected: 182
        })
    );
    let mut long = b.to_vec();
    long.push(0);
    assert_eq!(Manifest::parse(&long), Err(CryptoError::TrailingBytes(1)));
}

#[test]
fn each_bad_field_has_its_error() {
    assert_eq!(
        with(|b| b[0] = b'X'),
        Err(CryptoError::BadMagic { found: *b"XTAM" })
    );
    assert_eq!(with(|b| b[4] = 2), Err(CryptoError::UnsupportedFormat(2)));
    assert_eq!(with(|b| b[6] = 0), Err(CryptoError::UnknownKind(0)));
    assert_eq!(with(|b| b[6] = 3), Err(CryptoError::UnknownKind(3)));
    assert_eq!(with(|b| b[7] = 2), Err(CryptoError::UnknownCipher(2)));
    assert_eq!(
        with(|b| b[7] = 0),
        Err(CryptoError::StrayEncryptionParameters)
    );
    assert_eq!(
        with(|b| b[40..44].copy_from_slice(&15u32.to_le_bytes())),
        Err(CryptoError::ChunkSizeOutOfRange(15))
    );
    assert_eq!(
        with(|b| b[40..44].copy_from_slice(&0u32.to_le_bytes())),
        Err(CryptoError::ChunkSizeOutOfRange(0))
    );
    let big = (1u32 << 20) + 1;
    assert_eq!(
        with(|b| b[40..44].copy_from_slice(&big.to_le_bytes())),
        Err(CryptoError::ChunkSizeOutOfRange(big))
    );
    assert_eq!(
        with(|b| {
            b[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
            b[40..44].copy_from_slice(&16u32.to_le_bytes());
        }),
        Err(CryptoError::TooManyChunks {
            size: u64::MAX,
            chunk_size: 16
        })
    );
    assert_eq!(
        with(|b| b[52..60].copy_from_slice(&1000u64.to_le_bytes())),
        Err(CryptoError::ExpiresBeforeCreated {
            created_at: 1000,
            expires_at: 1000
        })
    );
    assert_eq!(
        with(|b| b[116] = 33),
        Err(CryptoError::TextTooLong {
            field: TextField::Title,
            len: 33
        })
    );
    assert_eq!(
        with(|b| b[116] = 0),
        Err(CryptoError::TextEmpty(TextField::Title))
    );
    assert_eq!(
        with(|b| b[118] = 0xff),
        Err(CryptoError::TextNotUtf8 {
            field: TextField::Title,
            offset: 1
        })
    );
    assert_eq!(
        with(|b| b[125] = b'x'),
        Err(CryptoError::TextPadding(TextField::Title))
    );
    assert_eq!(
        with(|b| b[149] = 200),
        Err(CryptoError::TextTooLong {
            field: TextField::Target,
            len: 200
        })
    );
    assert_eq!(
        with(|b| b[149] = 0),
        Err(CryptoError::TextEmpty(TextField::Target))
    );
    assert_eq!(
        with(|b| b[150] = 0xc3),
        Err(CryptoError::TextNotUtf8 {
            field: TextField::Target,
            offset: 0
        })
    );
    assert_eq!(
        with(|b| b[181] = 1),
        Err(CryptoError::TextPadding(TextField::Target))
    );
}

#[test]
fn plain_manifest_with_encryption_parameters_is_rejected() {
    let mut m = sample();
    m.encryption = Encryption::None;
    let mut b = m.encode();
    assert!(Manifest::parse(&b).is_ok());
    b[70] = 1;
    assert_eq!(
        Manifest::parse(&b),
        Err(CryptoError::StrayEncryptionParameters)
    );
}

#[test]
fn text_constructor_bounds() {
    assert_eq!(
        Text::new(TextField::Title, ""),
        Err(CryptoError::TextEmpty(TextField::Title))
    );
    let long = "x".repeat(33);
    assert_eq!(
        Text::new(TextField::Target, &long),
        Err(CryptoError::TextTooLong {
            field: TextField::Target,
            len: 33
        })
    );
    assert_eq!(
        Text::new(TextField::Title, &"é".repeat(16))
            .unwrap()
            .as_str(),
        "é".repeat(16)
    );
}

#[test]
fn error_messages_name_the_value() {
    let e = with(|b| b[40..44].copy_from_slice(&15u32.to_le_bytes())).unwrap_err();
    assert_eq!(e.to_string(), "chunk size 15 is outside 16..=1048576");
    let e = with(|b| b[116] = 33).unwrap_err();
    assert_eq!(e.to_string(), "title length 33 exceeds 32 bytes");
}

fn semver() -> impl Strategy<Value = SemVer> {
    (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(a, b, c)| SemVer::new(a, b, c))
}

fn text(field: TextField) -> impl Strategy<Value = Text> {
    "[a-zA-Z0-9._é-]{1,10}".prop_map(move |s| Text::new(field, &s).unwrap())
}

prop_compose! {
    fn manifest()(
        kind in prop_oneof![Just(Kind::Firmware), Just(Kind::Software)],
        version in semver(), min_version in semver(),
        chunk_size in 16u32..=(1 << 20),
        payload_size in 0u64..(1 << 35),
        created_at in 0u64..u64::MAX / 2,
        expiry in prop::option::of(1u64..1000),
        signing_key in any::<[u8; 8]>(),
        enc in prop::option::of((any::<[u8; 8]>(), any::<[u8; 8]>())),
        digest in any::<[u8; 32]>(),
        title in text(TextField::Title), target in text(TextField::Target),
    ) -> Manifest {
        Manifest {
            kind, version, min_version, payload_size, chunk_size, created_at,
            expires_at: expiry.map(|e| created_at + e),
            signing_key: KeyId(signing_key),
            encryption: enc.map_or(Encryption::None, |(k, n)| Encryption::ChaCha20Poly1305 { key_id: KeyId(k), nonce_prefix: n }),
            digest, title, target,
        }
    }
}

proptest! {
    #[test]
    fn encode_parse_round_trips(m in manifest()) {
        prop_assert_eq!(Manifest::parse(&m.encode()), Ok(m));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        ota_crypto::fuzz::fuzz_manifest(&bytes);
    }

    #[test]
    fn never_panics_on_mutated_manifests(pos in 0usize..MANIFEST_LEN, v in any::<u8>()) {
        let mut b = sample().encode();
        b[pos] = v;
        ota_crypto::fuzz::fuzz_manifest(&b);
    }

    #[test]
    fn reader_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1200)) {
        ota_crypto::fuzz::fuzz_package_reader(&bytes);
    }
}
