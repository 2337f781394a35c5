//! Device-side Sming `.ota` reader: reference vectors A–C, tamper, truncation, policy.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // test-data generators

use ota_core::UpdateError;
use ota_core::reader::PackageReader;
use ota_crypto::sming::{
    Integrity, KeyFileError, MAGIC_MD5, MAGIC_SIGNED, Slot, SmingCode, SmingConfig, SmingError,
    SmingKey, SmingReader, Stage, Timestamp, Verifier,
};
use proptest::prelude::*;

const KEY: &[u8] = include_bytes!("data/sming/ota.key");
const A: &[u8] = include_bytes!("data/sming/vector_a.ota");
const B: &[u8] = include_bytes!("data/sming/vector_b.ota");
const C: &[u8] = include_bytes!("data/sming/vector_c.ota");
const IMAGE: [u8; 4] = [0xe9, 0x01, 0x02, 0x03];
const STAMP: Timestamp = Timestamp(0x0000_01A2_B3C4_D5E6);

fn key() -> SmingKey {
    SmingKey::from_hex(KEY).expect("reference key parses")
}

fn signed() -> SmingConfig {
    SmingConfig {
        verifier: Verifier::Ed25519ph(key().verifying_key()),
        decrypt_key: None,
        slot: Slot {
            address: 0x2000,
            size: 0x10_0000,
        },
        minimum_timestamp: None,
    }
}

fn md5() -> SmingConfig {
    SmingConfig {
        verifier: Verifier::Md5,
        ..signed()
    }
}

fn encrypted() -> SmingConfig {
    SmingConfig {
        decrypt_key: Some(*key().stream_key()),
        ..signed()
    }
}

/// Feeds `input` in pieces of `split` bytes through an `out` of `out_len` bytes.
fn run_with<const N: usize>(
    config: &SmingConfig,
    input: &[u8],
    split: usize,
    out_len: usize,
) -> Result<(Vec<u8>, ota_crypto::sming::Summary), SmingError> {
    let mut reader: SmingReader<N> = SmingReader::new(config);
    let mut image = Vec::new();
    let mut out = vec![0u8; out_len];
    for piece in input.chunks(split.max(1)) {
        let mut rest = piece;
        while !rest.is_empty() {
            let fed = reader.write(rest, &mut out)?;
            image.extend_from_slice(&out[..fed.produced]);
            assert!(fed.consumed > 0 || fed.produced > 0, "no progress");
            rest = &rest[fed.consumed..];
        }
    }
    let summary = reader.verify_end()?;
    Ok((image, summary))
}

fn run(config: &SmingConfig, input: &[u8]) -> Result<Vec<u8>, SmingError> {
    run_with::<2048>(config, input, input.len(), 4096).map(|(image, _)| image)
}

#[test]
fn reference_key_derives_sming_public_key() {
    assert_eq!(
        hex::encode(key().verifying_key().as_bytes()),
        "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
    );
    assert_eq!(
        hex::encode(key().stream_key()),
        "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    );
}

#[test]
fn key_file_errors_name_the_offending_value() {
    let good = hex::encode((0u8..64).collect::<Vec<u8>>());
    assert!(SmingKey::from_hex(format!("{good}\n").as_bytes()).is_ok());
    assert_eq!(
        SmingKey::from_hex(format!("{}zz", &good[..126]).as_bytes()).unwrap_err(),
        KeyFileError::NotHex {
            offset: 126,
            byte: b'z'
        }
    );
    assert_eq!(
        SmingKey::from_hex(&good.as_bytes()[..127]).unwrap_err(),
        KeyFileError::OddLength { digits: 127 }
    );
    assert_eq!(
        SmingKey::from_hex(&good.as_bytes()[..126]).unwrap_err(),
        KeyFileError::TooShort { bytes: 63 }
    );
    assert_eq!(
        SmingKey::from_hex("é".as_bytes()).unwrap_err(),
        KeyFileError::NotHex {
            offset: 0,
            byte: 0xc3
        }
    );
    let longer = format!("{good}ffff");
    assert_eq!(
        SmingKey::from_hex(longer.as_bytes()).unwrap().to_bytes(),
        key().to_bytes()
    );
    assert_eq!(&key().to_hex()[..], good.as_bytes());
}

#[test]
fn vector_a_signed_plain_any_split() {
    for split in [1, 2, 3, 7, 16, 17, 28, 29, 91, 92] {
        for out_len in [1, 3, 4, 64] {
            let (image, summary) = run_with::<2048>(&signed(), A, split, out_len).unwrap();
            assert_eq!(image, IMAGE, "split {split} out {out_len}");
            assert_eq!(summary.header.timestamp, STAMP);
            assert_eq!(summary.plain_len, 92);
            assert_eq!(summary.integrity, Integrity::Ed25519ph);
            assert_eq!(summary.chunks, 0);
        }
    }
}

#[test]
fn vector_b_md5_plain() {
    assert_eq!(run(&md5(), B).unwrap(), IMAGE);
}

#[test]
fn vector_c_encrypted_any_split() {
    for split in [1, 2, 23, 24, 25, 26, 27, 134, 135] {
        for out_len in [1, 4] {
            let (image, summary) = run_with::<2048>(&encrypted(), C, split, out_len).unwrap();
            assert_eq!(image, IMAGE, "split {split}");
            assert_eq!(summary.chunks, 1);
        }
    }
}

#[test]
fn slot_matches_modulo_one_mebibyte() {
    let config = SmingConfig {
        slot: Slot {
            address: 0x10_2000,
            size: 4,
        },
        ..signed()
    };
    assert_eq!(run(&config, A).unwrap(), IMAGE);
    let config = SmingConfig {
        slot: Slot {
            address: 0x3000,
            size: 4,
        },
        ..signed()
    };
    assert_eq!(
        run(&config, A),
        Err(SmingError::NoRomFound {
            slot_address: 0x3000
        })
    );
}

#[test]
fn rom_larger_than_slot_is_rejected() {
    let config = SmingConfig {
        slot: Slot {
            address: 0x2000,
            size: 3,
        },
        ..signed()
    };
    assert_eq!(
        run(&config, A),
        Err(SmingError::RomTooLarge {
            rom: 0,
            size: 4,
            slot_size: 3
        })
    );
}

#[test]
fn signed_device_rejects_md5_file_and_reverse() {
    assert_eq!(
        run(&signed(), B),
        Err(SmingError::WrongMagic {
            found: MAGIC_MD5,
            expected: MAGIC_SIGNED
        })
    );
    assert_eq!(
        run(&md5(), A),
        Err(SmingError::WrongMagic {
            found: MAGIC_SIGNED,
            expected: MAGIC_MD5
        })
    );
}

#[test]
fn older_timestamp_is_a_downgrade_equal_is_accepted() {
    let newer = Timestamp(STAMP.0 + 1);
    let config = SmingConfig {
        minimum_timestamp: Some(newer),
        ..signed()
    };
    assert_eq!(
        run(&config, A),
        Err(SmingError::DowngradeNotAllowed {
            found: STAMP,
            minimum: newer
        })
    );
    let config = SmingConfig {
        minimum_timestamp: Some(STAMP),
        ..signed()
    };
    assert_eq!(run(&config, A).unwrap(), IMAGE);
}

#[test]
fn appended_bytes_are_rejected() {
    let mut plain = A.to_vec();
    plain.push(0);
    assert_eq!(
        run(&signed(), &plain),
        Err(SmingError::DataAfterTrailer { offset: 92 })
    );
    let mut enc = C.to_vec();
    enc.push(0);
    assert_eq!(
        run(&encrypted(), &enc),
        Err(SmingError::DataAfterFinal { chunk: 0 })
    );
}

#[test]
fn chunk_larger_than_buffer_is_out_of_memory() {
    let err = run_with::<64>(&encrypted(), C, C.len(), 64).unwrap_err();
    assert_eq!(
        err,
        SmingError::ChunkTooLarge {
            chunk: 0,
            len: 109,
            capacity: 64
        }
    );
    assert_eq!(err.sming_code(), SmingCode::OutOfMemory);
}

/// The error a one-bit flip at `pos` of vector A must produce (slot 0x2000, 1 MiB).
fn expected_plain_flip(pos: usize) -> SmingError {
    let flipped = |i: usize| A[i] ^ 0x01;
    match pos {
        0..4 => {
            let mut magic = A[..4].to_vec();
            magic[pos] = flipped(pos);
            SmingError::WrongMagic {
                found: u32::from_le_bytes(magic.try_into().unwrap()),
                expected: MAGIC_SIGNED,
            }
        }
        // ROM size 4 → 5: the ROM swallows one trailer byte, the trailer is one short.
        20 => SmingError::Truncated {
            stage: Stage::Trailer,
            offset: 92,
        },
        // ROM size 0x104 or 0x10004: longer than the file.
        21 | 22 => SmingError::Truncated {
            stage: Stage::RomImage,
            offset: 92,
        },
        // ROM size 0x0100_0004 > slot.
        23 => SmingError::RomTooLarge {
            rom: 0,
            size: 0x0100_0004,
            slot_size: 0x10_0000,
        },
        // Timestamp, count (→ 0: the trailer is read from offset 16), reserved, address
        // (→ not matching, but verification comes first), image, signature.
        _ => SmingError::VerificationFailed {
            integrity: Integrity::Ed25519ph,
        },
    }
}

#[test]
fn every_flipped_byte_of_signed_file_is_rejected_precisely() {
    for pos in 0..A.len() {
        let mut file = A.to_vec();
        file[pos] ^= 0x01;
        assert_eq!(
            run(&signed(), &file),
            Err(expected_plain_flip(pos)),
            "byte {pos}"
        );
    }
}

#[test]
fn every_flipped_byte_of_md5_file_is_rejected() {
    for pos in 4..B.len() {
        let mut file = B.to_vec();
        file[pos] ^= 0x80;
        let err = run(&md5(), &file).unwrap_err();
        let want = match pos {
            // Count 1 → 0x81: the trailer is read as a second ROM record and runs past the
            // end; sizes 0x84 and 0x8004: longer than the file.
            12 | 20 | 21 => SmingError::Truncated {
                stage: Stage::RomImage,
                offset: 44,
            },
            22 => SmingError::RomTooLarge {
                rom: 0,
                size: 0x0080_0004,
                slot_size: 0x10_0000,
            },
            23 => SmingError::RomTooLarge {
                rom: 0,
                size: 0x8000_0004,
                slot_size: 0x10_0000,
            },
            _ => SmingError::VerificationFailed {
                integrity: Integrity::Md5,
            },
        };
        assert_eq!(err, want, "byte {pos}");
        assert_eq!(
            UpdateError::from(err).wire_name(),
            match want {
                SmingError::VerificationFailed { .. } => "CHECKSUM_MISMATCH",
                SmingError::RomTooLarge { .. } => "INSUFFICIENT_STORAGE",
                _ => "INVALID_PACKAGE",
            }
        );
    }
}

#[test]
fn every_flipped_byte_of_encrypted_file_is_rejected_precisely() {
    for pos in 0..C.len() {
        let mut file = C.to_vec();
        file[pos] ^= 0x01;
        let want = match pos {
            // Length prefix 0x6c → 0x6d or 0x016c: the chunk runs past the end.
            24 | 25 => SmingError::Truncated {
                stage: Stage::Chunk,
                offset: 135,
            },
            _ => SmingError::DecryptionFailed { chunk: 0, len: 109 },
        };
        assert_eq!(run(&encrypted(), &file), Err(want), "byte {pos}");
    }
}

#[test]
fn every_truncation_is_rejected_with_its_stage() {
    for len in 0..A.len() {
        let stage = match len {
            0..16 => Stage::FileHeader,
            16..24 => Stage::RomHeader,
            24..28 => Stage::RomImage,
            _ => Stage::Trailer,
        };
        assert_eq!(
            run(&signed(), &A[..len]),
            Err(SmingError::Truncated {
                stage,
                offset: len as u64
            }),
            "length {len}"
        );
    }
    for len in 0..C.len() {
        let stage = if len < 24 {
            Stage::StreamHeader
        } else {
            Stage::Chunk
        };
        assert_eq!(
            run(&encrypted(), &C[..len]),
            Err(SmingError::Truncated {
                stage,
                offset: len as u64
            }),
            "length {len}"
        );
    }
}

#[test]
fn errors_are_sticky_and_map_to_update_errors() {
    let mut reader: SmingReader = SmingReader::new(&md5());
    let mut out = [0u8; 8];
    let err = reader.feed(A, &mut out).unwrap_err();
    assert_eq!(err, UpdateError::InvalidPackage);
    assert_eq!(reader.feed(B, &mut out), Err(UpdateError::InvalidPackage));
    assert_eq!(reader.finish(), Err(UpdateError::InvalidPackage));

    let mut reader: SmingReader = SmingReader::new(&signed());
    let mut image = [0u8; 8];
    let fed = reader.feed(A, &mut image).unwrap();
    assert_eq!(fed.consumed, 92);
    assert_eq!(reader.package_len(), Some(92));
    assert_eq!(reader.plaintext_len(), Some(4));
    assert_eq!(reader.finish(), Ok(()));
}

#[test]
fn nothing_is_accepted_before_the_trailer() {
    let mut reader: SmingReader = SmingReader::new(&signed());
    let mut out = [0u8; 8];
    reader.write(&A[..91], &mut out).unwrap();
    assert_eq!(
        reader.finish(),
        Err(UpdateError::InvalidPackage),
        "a file missing its last signature byte must not be accepted"
    );
}

#[test]
fn sming_codes_follow_the_device_enum() {
    let cases = [
        (
            SmingError::WrongMagic {
                found: 0,
                expected: MAGIC_SIGNED,
            },
            1,
        ),
        (SmingError::DataAfterTrailer { offset: 0 }, 2),
        (SmingError::DecryptionFailed { chunk: 0, len: 0 }, 3),
        (SmingError::NoRomFound { slot_address: 0 }, 4),
        (
            SmingError::RomTooLarge {
                rom: 0,
                size: 0,
                slot_size: 0,
            },
            5,
        ),
        (
            SmingError::DowngradeNotAllowed {
                found: STAMP,
                minimum: STAMP,
            },
            6,
        ),
        (
            SmingError::VerificationFailed {
                integrity: Integrity::Md5,
            },
            7,
        ),
        (
            SmingError::ChunkTooLarge {
                chunk: 0,
                len: 0,
                capacity: 0,
            },
            10,
        ),
    ];
    for (err, code) in cases {
        assert_eq!(err.sming_code() as u8, code, "{err}");
    }
    assert_eq!(
        SmingError::RomTooLarge {
            rom: 1,
            size: 5000,
            slot_size: 4096
        }
        .to_string(),
        "ROM 1 is 5000 bytes, the slot holds 4096"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn never_panics_on_arbitrary_plain_bytes(data in proptest::collection::vec(any::<u8>(), 0..300), split in 1usize..40) {
        let _ = run_with::<256>(&signed(), &data, split, 7);
        let _ = run_with::<256>(&md5(), &data, split, 7);
    }

    #[test]
    fn never_panics_on_arbitrary_encrypted_bytes(data in proptest::collection::vec(any::<u8>(), 0..400), split in 1usize..40) {
        let _ = run_with::<256>(&encrypted(), &data, split, 7);
    }

    #[test]
    fn never_panics_on_mutated_vectors(pos in 0usize..135, byte in any::<u8>(), cut in 0usize..136) {
        let mut c = C.to_vec();
        c[pos] = byte;
        c.truncate(cut);
        let _ = run(&encrypted(), &c);
        let mut a = A.to_vec();
        a[pos % A.len()] = byte;
        a.truncate(cut);
        let _ = run(&signed(), &a);
    }
}

#[test]
fn timestamp_epoch_conversion_matches_reference() {
    // 2025-01-01T00:00:00Z = Unix ms 1735689600000 → 3944678400000 since 1900.
    let t = Timestamp::from_unix_millis(1_735_689_600_000).unwrap();
    assert_eq!(t, Timestamp(3_944_678_400_000));
    assert_eq!(
        t.0.to_le_bytes(),
        [0x00, 0xa0, 0x27, 0x71, 0x96, 0x03, 0x00, 0x00]
    );
    assert_eq!(t.to_unix_millis(), Some(1_735_689_600_000));
    assert_eq!(STAMP.to_unix_millis(), None, "vector A is dated 1956");
    assert_eq!(Timestamp::from_unix_millis(u64::MAX), None);
}

#[test]
fn reader_state_is_bounded() {
    // One 2048-byte chunk buffer plus the parser and stream state.
    let size = core::mem::size_of::<SmingReader>();
    assert!(size <= 2048 + 1024, "SmingReader is {size} bytes");
    let plain_only = core::mem::size_of::<SmingReader<0>>();
    assert!(plain_only <= 1024, "SmingReader<0> is {plain_only} bytes");
}
