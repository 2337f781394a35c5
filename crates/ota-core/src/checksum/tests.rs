//! Unit tests: ThingsBoard's vectors (reference §6.2 and §11 row 18), names, hex, errors.
#![allow(clippy::indexing_slicing)]

extern crate std;

use std::format;
use std::string::{String, ToString};

use super::*;
use crate::UpdateError;

use ChecksumAlgorithm::{Crc32, Md5, Murmur3_32, Murmur3_128, Sha256, Sha384, Sha512};

const DIGITS: &[u8] = b"123456789";
const ZERO_TO_NINE: &[u8] = &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9];

fn hex_of(alg: ChecksumAlgorithm, data: &[u8]) -> String {
    let mut buf = [0u8; MAX_HEX_LEN];
    Hasher::digest(alg, data).to_hex(&mut buf).to_string()
}

fn check(alg: ChecksumAlgorithm, data: &[u8], expected: &str) {
    assert_eq!(hex_of(alg, data), expected, "{alg} of {data:02x?}");
    // The parsed form of the server's string matches the computed digest too.
    let parsed = Digest::from_hex(alg, expected).unwrap();
    assert!(Hasher::digest(alg, data).matches(&parsed));
}

// --- §11 row 18: `01` (1 byte) ---

#[test]
fn tb_vector_01_sha256() {
    check(
        Sha256,
        &[0x01],
        "4bf5122f344554c53bde2ebb8cd2b7e3d1600ad631c385a5d7cce23c7785459a",
    );
}

#[test]
fn tb_vector_01_crc32() {
    check(Crc32, &[0x01], "1bdf05a5");
}

// --- §11 row 18 / §6.2: ASCII `123456789` ---

#[test]
fn tb_vector_digits_md5() {
    check(Md5, DIGITS, "25f9e794323b453885f5181f1b624d0b");
}

#[test]
fn tb_vector_digits_sha256() {
    check(
        Sha256,
        DIGITS,
        "15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225",
    );
}

#[test]
fn tb_vector_digits_crc32_is_little_endian() {
    // CRC-32 value 0xCBF43926, printed as its little-endian bytes (§6.2).
    check(Crc32, DIGITS, "2639f4cb");
}

#[test]
fn tb_vector_digits_murmur3_32() {
    check(Murmur3_32, DIGITS, "82f3feb4");
}

#[test]
fn tb_vector_digits_murmur3_128() {
    check(Murmur3_128, DIGITS, "a4cc66db5e64843c05a11e3ac7faf899");
}

// --- §11 row 18: bytes `00..09` (the fixture package) ---

#[test]
fn tb_vector_fixture_md5() {
    check(Md5, ZERO_TO_NINE, "c56bd5480f6e5413cb62a0ad9666613a");
}

#[test]
fn tb_vector_fixture_sha256() {
    check(
        Sha256,
        ZERO_TO_NINE,
        "1f825aa2f0020ef7cf91dfa30da4668d791c5d4824fc8e41354b89ec05795ab3",
    );
}

#[test]
fn tb_vector_fixture_crc32() {
    check(Crc32, ZERO_TO_NINE, "46d76c45");
}

#[test]
fn tb_vector_fixture_murmur3_32() {
    check(Murmur3_32, ZERO_TO_NINE, "fb5ebad5");
}

#[test]
fn tb_vector_fixture_murmur3_128() {
    check(
        Murmur3_128,
        ZERO_TO_NINE,
        "63e4589ee825cacf7620ad72c4134325",
    );
}

// --- §11 row 18: ASCII `62`: always 8 characters (the Python SDK drops the zero byte) ---

#[test]
fn tb_vector_62_crc32_keeps_leading_zero_bytes() {
    check(Crc32, b"62", "0ad21200");
    assert_eq!(
        Digest::from_hex(Crc32, "0ad212"),
        Err(ChecksumError::HexLength {
            algorithm: Crc32,
            expected: 8,
            got: 6
        })
    );
}

// --- SHA-384/512: FIPS 180-2 appendix vectors, and the fixture (Python hashlib) ---

#[test]
fn fips_abc_sha384() {
    check(
        Sha384,
        b"abc",
        "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7",
    );
}

#[test]
fn fips_abc_sha512() {
    check(
        Sha512,
        b"abc",
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
    );
}

#[test]
fn fixture_sha384_sha512() {
    check(
        Sha384,
        ZERO_TO_NINE,
        "182e95266adff49059e706c61483478fe0688150c8d08b95fab5cfde961f12d903aaf44104af4ce72ba6a4bf20302b2e",
    );
    check(
        Sha512,
        ZERO_TO_NINE,
        "0f89ee1fcb7b0a4f7809d1267a029719004c5a5e5ec323a7c3523a20974f9a3f202f56fadba4cd9e8d654ab9f2e96dc5c795ea176fa20ede8d854c342f903533",
    );
}

// --- names ---

#[test]
fn tb_names_round_trip_and_lengths() {
    let expected = [
        (Md5, "MD5", 16),
        (Sha256, "SHA256", 32),
        (Sha384, "SHA384", 48),
        (Sha512, "SHA512", 64),
        (Crc32, "CRC32", 4),
        (Murmur3_32, "MURMUR3_32", 4),
        (Murmur3_128, "MURMUR3_128", 16),
    ];
    assert_eq!(expected.len(), ChecksumAlgorithm::ALL.len());
    for (alg, name, len) in expected {
        assert_eq!(alg.tb_name(), name);
        assert_eq!(ChecksumAlgorithm::from_tb_name(name), Ok(alg));
        assert_eq!(name.parse::<ChecksumAlgorithm>(), Ok(alg));
        assert_eq!(alg.digest_len(), len);
        assert_eq!(Hasher::new(alg).algorithm(), alg);
        assert_eq!(Hasher::digest(alg, b"").as_bytes().len(), len);
        assert_eq!(Hasher::digest(alg, b"").algorithm(), alg);
    }
}

#[test]
fn unknown_names_are_rejected_exactly() {
    // ThingsBoard names are exact: no lower case, no dashes, no SHA-1.
    for name in [
        "sha256",
        "SHA-256",
        "SHA1",
        "",
        "MURMUR3_64",
        " MD5",
        "MD5 ",
    ] {
        let err = ChecksumAlgorithm::from_tb_name(name).unwrap_err();
        let ChecksumError::UnknownAlgorithm { name: excerpt } = err else {
            panic!("{name:?} gave {err:?}");
        };
        assert_eq!(excerpt.as_str(), name);
        assert_eq!(excerpt.full_len(), name.len());
        assert!(!excerpt.is_truncated());
    }
}

#[test]
fn unknown_long_name_is_cut_on_a_char_boundary() {
    // 23 ASCII bytes then a 2-byte 'é' straddling the 24-byte capacity.
    let name = "ABCDEFGHIJKLMNOPQRSTUVWéXYZ";
    let Err(ChecksumError::UnknownAlgorithm { name: excerpt }) =
        ChecksumAlgorithm::from_tb_name(name)
    else {
        panic!("accepted {name:?}");
    };
    assert_eq!(excerpt.as_str(), "ABCDEFGHIJKLMNOPQRSTUVW");
    assert_eq!(excerpt.full_len(), name.len());
    assert!(excerpt.is_truncated());
}

#[test]
fn error_messages_name_the_value() {
    let err = ChecksumAlgorithm::from_tb_name("SHA1").unwrap_err();
    assert_eq!(err.to_string(), "unknown checksum algorithm \"SHA1\"");

    let err = ChecksumAlgorithm::from_tb_name(&"X".repeat(30)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "unknown checksum algorithm \"{}\"… (30 bytes)",
            "X".repeat(24)
        )
    );

    let err = Digest::from_hex(Crc32, "2639f4cg").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid hex character 'g' at position 7 of a CRC32 checksum"
    );

    let err = Digest::from_hex(Md5, "25f9").unwrap_err();
    assert_eq!(
        err.to_string(),
        "MD5 checksum has 4 hex characters, expected 32"
    );

    let err = Digest::from_bytes(Sha256, &[0; 31]).unwrap_err();
    assert_eq!(err.to_string(), "SHA256 digest has 31 bytes, expected 32");
}

// --- hex parsing ---

#[test]
fn from_hex_accepts_upper_and_mixed_case() {
    let lower = Digest::from_hex(Md5, "25f9e794323b453885f5181f1b624d0b").unwrap();
    let upper = Digest::from_hex(Md5, "25F9E794323B453885F5181F1B624D0B").unwrap();
    let mixed = Digest::from_hex(Md5, "25f9E794323b453885F5181f1b624D0b").unwrap();
    assert_eq!(lower, upper);
    assert_eq!(lower, mixed);
    assert_eq!(upper.to_string(), "25f9e794323b453885f5181f1b624d0b");
}

#[test]
fn from_hex_rejects_wrong_length_per_algorithm() {
    for alg in ChecksumAlgorithm::ALL {
        let expected = 2 * alg.digest_len();
        for got in [0, 1, expected - 1, expected + 1, expected + 2] {
            let text = "0".repeat(got);
            assert_eq!(
                Digest::from_hex(alg, &text),
                Err(ChecksumError::HexLength {
                    algorithm: alg,
                    expected,
                    got
                }),
                "{alg} with {got} chars"
            );
        }
    }
}

#[test]
fn from_hex_rejects_0x_prefix_as_thingsboard_does() {
    assert_eq!(
        Digest::from_hex(Crc32, "0xd87f7e0c"),
        Err(ChecksumError::HexLength {
            algorithm: Crc32,
            expected: 8,
            got: 10
        })
    );
    assert_eq!(
        Digest::from_hex(Crc32, "0xd87f7e"),
        Err(ChecksumError::InvalidHexChar {
            algorithm: Crc32,
            position: 1,
            found: 'x'
        })
    );
}

#[test]
fn from_hex_reports_first_bad_char_position() {
    assert_eq!(
        Digest::from_hex(Crc32, "2639 4cb"),
        Err(ChecksumError::InvalidHexChar {
            algorithm: Crc32,
            position: 4,
            found: ' '
        })
    );
    assert_eq!(
        Digest::from_hex(Crc32, "g639f4cX"),
        Err(ChecksumError::InvalidHexChar {
            algorithm: Crc32,
            position: 0,
            found: 'g'
        })
    );
}

#[test]
fn from_hex_reports_non_ascii_char() {
    // 'é' is 2 bytes: 6 ASCII + 2 = 8 bytes, the length of a CRC32 checksum.
    assert_eq!(
        Digest::from_hex(Crc32, "2639féb"),
        Err(ChecksumError::InvalidHexChar {
            algorithm: Crc32,
            position: 5,
            found: 'é'
        })
    );
}

#[test]
fn from_bytes_checks_length_and_round_trips() {
    let d = Hasher::digest(Sha512, b"abc");
    assert_eq!(Digest::from_bytes(Sha512, d.as_bytes()), Ok(d));
    assert_eq!(
        Digest::from_bytes(Crc32, d.as_bytes()),
        Err(ChecksumError::DigestLength {
            algorithm: Crc32,
            expected: 4,
            got: 64
        })
    );
}

// --- matching ---

#[test]
fn matches_requires_same_algorithm_and_bytes() {
    let crc = Hasher::digest(Crc32, DIGITS);
    let murmur = Hasher::digest(Murmur3_32, DIGITS);
    assert!(crc.matches(&crc));
    assert!(!crc.matches(&murmur));
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(crc.as_bytes());
    bytes[3] ^= 1;
    assert!(!crc.matches(&Digest::from_bytes(Crc32, &bytes).unwrap()));
    // Same bytes under another algorithm of the same length never match.
    let relabelled = Digest::from_bytes(Murmur3_32, crc.as_bytes()).unwrap();
    assert!(!crc.matches(&relabelled));
}

// --- errors into the update error ---

#[test]
fn checksum_errors_map_to_update_errors() {
    let unknown = ChecksumAlgorithm::from_tb_name("SHA1").unwrap_err();
    assert_eq!(
        UpdateError::from(unknown),
        UpdateError::UnsupportedAlgorithm
    );
    let bad_char = Digest::from_hex(Crc32, "zzzzzzzz").unwrap_err();
    assert_eq!(UpdateError::from(bad_char), UpdateError::InvalidPackage);
    let bad_len = Digest::from_hex(Crc32, "00").unwrap_err();
    assert_eq!(UpdateError::from(bad_len), UpdateError::InvalidPackage);
    let bad_bytes = Digest::from_bytes(Crc32, &[0]).unwrap_err();
    assert_eq!(UpdateError::from(bad_bytes), UpdateError::InvalidPackage);
}

// --- sizes stay small enough for the updater's 1 KiB budget ---

#[test]
fn hasher_and_digest_are_small() {
    let hasher = core::mem::size_of::<Hasher>();
    let digest = core::mem::size_of::<Digest>();
    assert!(hasher <= 256, "Hasher is {hasher} bytes");
    assert!(digest <= 72, "Digest is {digest} bytes");
}

#[test]
fn debug_shows_algorithm_and_hex() {
    assert_eq!(
        format!("{:?}", Hasher::digest(Crc32, DIGITS)),
        "Digest(CRC32:2639f4cb)"
    );
    assert_eq!(
        format!("{:?}", Hasher::new(Sha256)),
        "Hasher { algorithm: Sha256, .. }"
    );
}
