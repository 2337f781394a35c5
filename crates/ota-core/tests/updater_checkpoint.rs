//! Checkpoint encoding: round trip, every malformed input a typed error, never a panic.

use ota_core::checkpoint::{CHECKPOINT_LEN, Checkpoint, CheckpointError, Field, fuzz_check};
use ota_core::checksum::{ChecksumAlgorithm, Digest};
use ota_core::updater::Kind;
use proptest::prelude::*;

fn sample() -> Checkpoint {
    Checkpoint {
        kind: Kind::Software,
        title: "thermostat".try_into().unwrap(),
        version: "2.4.1-rc.1".try_into().unwrap(),
        digest: Digest::from_hex(ChecksumAlgorithm::Crc32, "2639f4cb").unwrap(),
        package_size: 1_048_576,
        chunk_size: 4096,
        package_offset: 65_536,
        written: 65_536,
        written_crc: 0xDEAD_BEEF,
        next_chunk: 16,
    }
}

/// Re-seals a record after a field was edited, so only the edited field is wrong.
fn reseal(mut b: [u8; CHECKPOINT_LEN]) -> [u8; CHECKPOINT_LEN] {
    let crc = crc32fast::hash(&b[..CHECKPOINT_LEN - 4]);
    b[CHECKPOINT_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
    b
}

#[test]
fn round_trips_and_has_a_fixed_layout() {
    let cp = sample();
    let b = cp.to_bytes();
    assert_eq!(&b[..4], b"OTCK");
    assert_eq!(b[4], 1, "format version");
    assert_eq!(b[5], 1, "software");
    assert_eq!(b[6], 5, "CRC32 code");
    assert_eq!(&b[48..58], b"thermostat");
    assert_eq!(u64::from_le_bytes(b[24..32].try_into().unwrap()), 65_536);
    assert_eq!(Checkpoint::from_bytes(&b), Ok(cp));
}

#[test]
fn truncated_and_oversized() {
    let b = sample().to_bytes();
    assert_eq!(
        Checkpoint::from_bytes(&b[..255]),
        Err(CheckpointError::Truncated { len: 255 })
    );
    assert_eq!(
        Checkpoint::from_bytes(&[]),
        Err(CheckpointError::Truncated { len: 0 })
    );
    let mut long = b.to_vec();
    long.push(0);
    assert_eq!(
        Checkpoint::from_bytes(&long),
        Err(CheckpointError::Oversized { len: 257 })
    );
}

#[test]
fn erased_flash_is_not_a_checkpoint() {
    assert_eq!(
        Checkpoint::from_bytes(&[0xFF; CHECKPOINT_LEN]),
        Err(CheckpointError::Erased)
    );
}

#[test]
fn bad_magic() {
    let mut b = sample().to_bytes();
    b[0] = b'X';
    assert_eq!(
        Checkpoint::from_bytes(&b),
        Err(CheckpointError::BadMagic { found: *b"XTCK" })
    );
}

#[test]
fn unsupported_format() {
    let mut b = sample().to_bytes();
    b[4] = 2;
    assert_eq!(
        Checkpoint::from_bytes(&b),
        Err(CheckpointError::UnsupportedFormat { version: 2 })
    );
}

#[test]
fn bad_crc_on_any_flipped_bit() {
    let good = sample().to_bytes();
    let stored = u32::from_le_bytes(good[252..].try_into().unwrap());
    let mut b = good;
    b[100] ^= 0x10;
    let computed = crc32fast::hash(&b[..252]);
    assert_eq!(
        Checkpoint::from_bytes(&b),
        Err(CheckpointError::BadCrc { stored, computed })
    );
}

#[test]
fn bad_fields_are_named() {
    let good = sample().to_bytes();
    let edit = |at: usize, v: u8| {
        let mut b = good;
        b[at] = v;
        Checkpoint::from_bytes(&reseal(b))
    };
    assert_eq!(edit(5, 7), Err(CheckpointError::UnknownKind { code: 7 }));
    assert_eq!(
        edit(6, 0),
        Err(CheckpointError::UnknownAlgorithm { code: 0 })
    );
    assert_eq!(
        edit(6, 8),
        Err(CheckpointError::UnknownAlgorithm { code: 8 })
    );
    assert_eq!(
        edit(7, 65),
        Err(CheckpointError::FieldLength {
            field: Field::Title,
            len: 65,
            max: 64
        })
    );
    assert_eq!(
        edit(8, 200),
        Err(CheckpointError::FieldLength {
            field: Field::Version,
            len: 200,
            max: 64
        })
    );
    assert_eq!(
        edit(9, 32),
        Err(CheckpointError::DigestLength {
            algorithm: ChecksumAlgorithm::Crc32,
            len: 32
        })
    );
    assert_eq!(
        edit(48, 0xC3),
        Err(CheckpointError::NotUtf8 {
            field: Field::Title
        })
    );
    assert_eq!(
        edit(112, 0xFF),
        Err(CheckpointError::NotUtf8 {
            field: Field::Version
        })
    );
    let mut b = good;
    b[12..16].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(
        Checkpoint::from_bytes(&reseal(b)),
        Err(CheckpointError::ZeroChunkSize)
    );
    let mut b = good;
    b[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(
        Checkpoint::from_bytes(&reseal(b)),
        Err(CheckpointError::OffsetPastEnd {
            offset: u64::MAX,
            size: 1_048_576
        })
    );
}

#[test]
fn error_messages_name_the_value() {
    let e = CheckpointError::FieldLength {
        field: Field::Title,
        len: 65,
        max: 64,
    };
    assert_eq!(e.to_string(), "checkpoint title length 65 exceeds 64");
    let e = CheckpointError::Truncated { len: 12 };
    assert_eq!(e.to_string(), "checkpoint is 12 bytes, expected 256");
}

fn algorithm() -> impl Strategy<Value = ChecksumAlgorithm> {
    prop::sample::select(ChecksumAlgorithm::ALL.to_vec())
}

prop_compose! {
    fn checkpoint()(
        software in any::<bool>(),
        title in "\\PC{0,16}",
        version in "[0-9a-z.+-]{0,64}",
        alg in algorithm(),
        digest in prop::collection::vec(any::<u8>(), 64),
        size in any::<u64>(),
        chunk in 1u32..,
        frac in 0.0f64..=1.0,
        written in any::<u64>(),
        crc in any::<u32>(),
        next in any::<u32>(),
    ) -> Checkpoint {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let offset = (size as f64 * frac) as u64;
        let title: String = title.chars().scan(0, |n, c| { *n += c.len_utf8(); (*n <= 64).then_some(c) }).collect();
        Checkpoint {
            kind: if software { Kind::Software } else { Kind::Firmware },
            title: title.as_str().try_into().unwrap(),
            version: version.as_str().try_into().unwrap(),
            digest: Digest::from_bytes(alg, &digest[..alg.digest_len()]).unwrap(),
            package_size: size,
            chunk_size: chunk,
            package_offset: offset.min(size),
            written,
            written_crc: crc,
            next_chunk: next,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip(cp in checkpoint()) {
        prop_assert_eq!(Checkpoint::from_bytes(&cp.to_bytes()), Ok(cp));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        fuzz_check(&bytes);
    }

    #[test]
    fn never_panics_on_mutated_records(cp in checkpoint(), at in 0usize..252, v in any::<u8>()) {
        let mut b = cp.to_bytes();
        b[at] = v;
        fuzz_check(&reseal(b));
        fuzz_check(&b);
    }
}
