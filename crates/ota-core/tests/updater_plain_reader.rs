//! The plain-image reader: pass-through, announced length, announced digest.

use ota_core::UpdateError;
use ota_core::checksum::{ChecksumAlgorithm, Hasher};
use ota_core::reader::{Feed, PackageReader};
use ota_core::updater::{Kind, Offer, PlainReader, ResumableReader};
use proptest::prelude::*;

fn reader(data: &[u8], alg: ChecksumAlgorithm) -> PlainReader {
    PlainReader::new(Hasher::digest(alg, data), data.len() as u64)
}

#[test]
fn passes_bytes_through_and_verifies_every_algorithm() {
    let data = b"0123456789abcdef".repeat(10);
    for alg in ChecksumAlgorithm::ALL {
        let mut r = reader(&data, alg);
        let mut out = [0u8; 7];
        let mut got = vec![];
        let mut rest = &data[..];
        while !rest.is_empty() {
            let Feed { consumed, produced } = r.feed(rest, &mut out).unwrap();
            assert_eq!(consumed, produced);
            got.extend_from_slice(&out[..produced]);
            rest = &rest[consumed..];
        }
        assert_eq!(got, data);
        assert_eq!(r.finish(), Ok(()), "{alg}");
    }
}

#[test]
fn wrong_digest_is_checksum_mismatch() {
    let mut r = PlainReader::new(Hasher::digest(ChecksumAlgorithm::Md5, b"other"), 4);
    r.feed(b"data", &mut [0; 4]).unwrap();
    assert_eq!(r.finish(), Err(UpdateError::ChecksumMismatch));
}

#[test]
fn more_or_fewer_bytes_than_announced_is_invalid_package() {
    let mut r = reader(b"abcd", ChecksumAlgorithm::Sha256);
    assert_eq!(
        r.feed(b"abcdef", &mut [0; 8]),
        Ok(Feed {
            consumed: 4,
            produced: 4
        })
    );
    assert_eq!(r.feed(b"ef", &mut [0; 8]), Err(UpdateError::InvalidPackage));
    let mut r = reader(b"abcd", ChecksumAlgorithm::Sha256);
    r.feed(b"abc", &mut [0; 8]).unwrap();
    assert_eq!(r.finish(), Err(UpdateError::InvalidPackage));
    assert_eq!((r.package_len(), r.plaintext_len()), (Some(4), Some(4)));
}

#[test]
fn for_offer_parses_the_announced_checksum() {
    let hex = Hasher::digest(ChecksumAlgorithm::Crc32, b"123456789").to_string();
    assert_eq!(hex, "2639f4cb");
    let offer = Offer::new(Kind::Firmware, "a", "1", 9, "CRC32", &hex);
    let mut r = PlainReader::for_offer(&offer).unwrap();
    r.feed(b"123456789", &mut [0; 9]).unwrap();
    assert_eq!(r.finish(), Ok(()));
    let bad = Offer::new(Kind::Firmware, "a", "1", 9, "CRC-32", &hex);
    assert_eq!(
        PlainReader::for_offer(&bad).unwrap_err(),
        UpdateError::UnsupportedAlgorithm
    );
    let bad = Offer::new(Kind::Firmware, "a", "1", 9, "CRC32", "2639f4cg");
    assert_eq!(
        PlainReader::for_offer(&bad).unwrap_err(),
        UpdateError::InvalidPackage
    );
}

#[test]
fn absorb_and_restart() {
    let data = b"resumable image";
    let mut r = reader(data, ChecksumAlgorithm::Sha512);
    r.absorb_written(&data[..6]).unwrap();
    r.feed(&data[6..], &mut [0; 32]).unwrap();
    assert_eq!(r.finish(), Ok(()));
    let mut r = reader(data, ChecksumAlgorithm::Sha512);
    r.absorb_written(b"garbage").unwrap();
    r.restart();
    assert_eq!(r.seen(), 0);
    r.feed(data, &mut [0; 32]).unwrap();
    assert_eq!(r.finish(), Ok(()));
    assert_eq!(
        r.absorb_written(&[0; 100]),
        Err(UpdateError::InvalidPackage)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_split_gives_the_same_result(
        data in prop::collection::vec(any::<u8>(), 0..2048),
        cuts in prop::collection::vec(1usize..300, 1..20),
        out_len in 1usize..128,
    ) {
        let mut r = reader(&data, ChecksumAlgorithm::Sha256);
        let mut out = vec![0u8; out_len];
        let mut got = vec![];
        let mut rest = &data[..];
        let mut i = 0;
        while !rest.is_empty() {
            let take = cuts[i % cuts.len()].min(rest.len());
            i += 1;
            let f = r.feed(&rest[..take], &mut out).unwrap();
            got.extend_from_slice(&out[..f.produced]);
            rest = &rest[f.consumed..];
        }
        prop_assert_eq!(got, data);
        prop_assert_eq!(r.finish(), Ok(()));
    }
}
