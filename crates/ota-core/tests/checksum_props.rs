//! Properties of the streaming checksum: any split of the input gives the one-shot digest,
//! hex encoding round-trips, and parsers never panic on arbitrary input.

use md5::Digest as _;
use ota_core::UpdateError;
use ota_core::checksum::{ChecksumAlgorithm, ChecksumError, Digest, Hasher, MAX_HEX_LEN};
use proptest::prelude::*;

fn algorithm() -> impl Strategy<Value = ChecksumAlgorithm> {
    prop::sample::select(ChecksumAlgorithm::ALL.to_vec())
}

/// Splits `data` at the given cut points (taken modulo its length, sorted).
fn split_at_cuts<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| {
            if data.is_empty() {
                0
            } else {
                c % (data.len() + 1)
            }
        })
        .collect();
    points.push(0);
    points.push(data.len());
    points.sort_unstable();
    points.windows(2).map(|w| &data[w[0]..w[1]]).collect()
}

/// The same digest from the underlying libraries, in ThingsBoard's byte order.
fn reference_bytes(alg: ChecksumAlgorithm, data: &[u8]) -> Option<Vec<u8>> {
    Some(match alg {
        ChecksumAlgorithm::Md5 => md5::Md5::digest(data).to_vec(),
        ChecksumAlgorithm::Sha256 => sha2::Sha256::digest(data).to_vec(),
        ChecksumAlgorithm::Sha384 => sha2::Sha384::digest(data).to_vec(),
        ChecksumAlgorithm::Sha512 => sha2::Sha512::digest(data).to_vec(),
        ChecksumAlgorithm::Crc32 => crc32fast::hash(data).to_le_bytes().to_vec(),
        _ => return None,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn streaming_in_random_splits_equals_one_shot(
        alg in algorithm(),
        data in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let one_shot = Hasher::digest(alg, &data);
        let mut hasher = Hasher::new(alg);
        for piece in split_at_cuts(&data, &cuts) {
            hasher.update(piece);
        }
        let streamed = hasher.finalize();
        prop_assert_eq!(streamed, one_shot);
        prop_assert!(streamed.matches(&one_shot));
        prop_assert_eq!(streamed.as_bytes().len(), alg.digest_len());
        if let Some(expected) = reference_bytes(alg, &data) {
            prop_assert_eq!(streamed.as_bytes(), &expected[..]);
        }
    }

    #[test]
    fn streaming_byte_by_byte_equals_one_shot(
        alg in algorithm(),
        data in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        let mut hasher = Hasher::new(alg);
        for b in &data {
            hasher.update(core::slice::from_ref(b));
        }
        prop_assert_eq!(hasher.finalize(), Hasher::digest(alg, &data));
    }

    #[test]
    fn hex_round_trips_in_both_cases(
        alg in algorithm(),
        data in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let digest = Hasher::digest(alg, &data);
        let mut buf = [0u8; MAX_HEX_LEN];
        let text = digest.to_hex(&mut buf).to_owned();
        prop_assert_eq!(text.len(), 2 * alg.digest_len());
        prop_assert_eq!(&text, &hex::encode(digest.as_bytes()));
        prop_assert_eq!(&text, &digest.to_string());
        prop_assert_eq!(Digest::from_hex(alg, &text), Ok(digest));
        prop_assert_eq!(Digest::from_hex(alg, &text.to_uppercase()), Ok(digest));
        prop_assert_eq!(Digest::from_bytes(alg, digest.as_bytes()), Ok(digest));
    }

    #[test]
    fn from_hex_never_panics_and_errors_are_exact(alg in algorithm(), text in ".{0,140}") {
        match Digest::from_hex(alg, &text) {
            Ok(d) => {
                prop_assert_eq!(d.algorithm(), alg);
                prop_assert_eq!(hex::encode(d.as_bytes()), text.to_ascii_lowercase());
            }
            Err(ChecksumError::HexLength { algorithm, expected, got }) => {
                prop_assert_eq!(algorithm, alg);
                prop_assert_eq!(expected, 2 * alg.digest_len());
                prop_assert_eq!(got, text.len());
                prop_assert_ne!(got, expected);
            }
            Err(ChecksumError::InvalidHexChar { algorithm, position, found }) => {
                prop_assert_eq!(algorithm, alg);
                prop_assert_eq!(text[position..].chars().next(), Some(found));
                prop_assert!(!found.is_ascii_hexdigit());
                prop_assert!(text[..position].bytes().all(|b| b.is_ascii_hexdigit()));
            }
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    #[test]
    fn from_hex_on_hex_alphabet_only_fails_on_length(alg in algorithm(), text in "[0-9a-fA-F]{0,130}") {
        let result = Digest::from_hex(alg, &text);
        prop_assert_eq!(result.is_ok(), text.len() == 2 * alg.digest_len());
    }

    #[test]
    fn from_bytes_never_panics(alg in algorithm(), bytes in prop::collection::vec(any::<u8>(), 0..80)) {
        match Digest::from_bytes(alg, &bytes) {
            Ok(d) => prop_assert_eq!(d.as_bytes(), &bytes[..]),
            Err(e) => prop_assert_eq!(e, ChecksumError::DigestLength {
                algorithm: alg,
                expected: alg.digest_len(),
                got: bytes.len(),
            }),
        }
    }

    #[test]
    fn algorithm_names_never_panic(name in "\\PC{0,40}") {
        match ChecksumAlgorithm::from_tb_name(&name) {
            Ok(alg) => prop_assert_eq!(alg.tb_name(), name.as_str()),
            Err(e) => {
                let ChecksumError::UnknownAlgorithm { name: excerpt } = e else {
                    return Err(TestCaseError::fail(format!("unexpected error {e:?}")));
                };
                prop_assert!(name.starts_with(excerpt.as_str()));
                prop_assert_eq!(excerpt.full_len(), name.len());
                prop_assert_eq!(UpdateError::from(e), UpdateError::UnsupportedAlgorithm);
            }
        }
    }

    #[test]
    fn matches_agrees_with_equality(
        a_alg in algorithm(), b_alg in algorithm(),
        a in prop::collection::vec(any::<u8>(), 0..4), b in prop::collection::vec(any::<u8>(), 0..4),
    ) {
        let x = Hasher::digest(a_alg, &a);
        let y = Hasher::digest(b_alg, &b);
        prop_assert_eq!(x.matches(&y), x == y);
    }
}
