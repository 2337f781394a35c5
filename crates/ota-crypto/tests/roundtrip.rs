//! Pack → read round trips, streaming behaviour and the reader's memory bound.
#![allow(clippy::cast_possible_truncation)]

mod common;

use common::*;
use ota_crypto::reader::SignedPackageReader;

#[test]
fn reader_state_is_under_one_kib() {
    let size = size_of::<SignedPackageReader<'static>>();
    println!("size_of::<SignedPackageReader>() = {size} bytes");
    assert!(size <= 1024, "reader is {size} bytes");
}

#[test]
fn encrypted_round_trip_small() {
    let p = payload(5000, 1);
    let pkg = pack(1024, true, &p);
    assert_eq!(read(&pkg).unwrap(), p);
}

#[test]
fn plain_round_trip_small() {
    let p = payload(5000, 2);
    let pkg = pack(1024, false, &p);
    assert_eq!(read(&pkg).unwrap(), p);
}

use proptest::prelude::*;

fn size_strategy() -> impl Strategy<Value = (usize, u32)> {
    prop_oneof![Just(16u32), Just(64), Just(1000), Just(4096)].prop_flat_map(|chunk| {
        let c = chunk as usize;
        (
            prop_oneof![
                Just(0usize),
                Just(1),
                (1usize..6).prop_map(move |k| k * c),
                0usize..20_000
            ],
            Just(chunk),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn pack_then_read_round_trips_with_random_splits(
        (len, chunk) in size_strategy(),
        encrypted in any::<bool>(),
        seed in any::<u8>(),
        splits in prop::collection::vec(1usize..5000, 1..8),
        out_len in 1usize..5000,
    ) {
        let p = payload(len, seed);
        let pkg = pack(chunk, encrypted, &p);
        let got = read_with(&key_set(), policy(), &pkg, &splits, out_len).unwrap();
        prop_assert_eq!(got, p);
    }

    #[test]
    fn one_byte_splits_round_trip_for_small_payloads(
        len in 0usize..300,
        encrypted in any::<bool>(),
        out_len in 1usize..4,
    ) {
        let p = payload(len, 3);
        let pkg = pack(16, encrypted, &p);
        prop_assert_eq!(read_with(&key_set(), policy(), &pkg, &[1], out_len).unwrap(), p);
    }
}

#[test]
fn multi_mib_packages_round_trip() {
    let mut rng = 0x1234_5678u32;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        rng as usize
    };
    // ChaCha20 is monomorphised into ota-crypto, which the workspace builds at opt-level 3 in
    // dev/test profiles, so 5 MiB encrypted stays well under a second.
    for (len, encrypted) in [(5 * 1024 * 1024, false), (5 * 1024 * 1024 + 5, true)] {
        let p = payload(len, 4);
        let pkg = pack(4096, encrypted, &p);
        let splits: Vec<usize> = (0..64).map(|_| next() % 70_000 + 1).collect();
        assert_eq!(
            read_with(&key_set(), policy(), &pkg, &splits, 3000).unwrap(),
            p
        );
    }
}

#[test]
fn writer_is_streaming_and_detects_an_input_that_changes_between_passes() {
    use ota_crypto::writer::{PackageWriter, Sealing, WriteError};
    use std::io::{Cursor, Read, Seek, SeekFrom};
    /// Grows by one byte at the second rewind to the start.
    struct Growing(Cursor<Vec<u8>>, bool);
    impl Read for Growing {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            self.0.read(b)
        }
    }
    impl Seek for Growing {
        fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
            if matches!(pos, SeekFrom::Start(_)) {
                if self.1 {
                    self.0.get_mut().push(0);
                }
                self.1 = true;
            }
            self.0.seek(pos)
        }
    }
    let key = payload_key();
    let signer = signer();
    let w = PackageWriter::new(
        &signer,
        spec(64),
        Sealing::ChaCha20Poly1305 {
            key: &key,
            nonce_prefix: [0; 8],
        },
    );
    let mut src = Growing(Cursor::new(payload(100, 1)), false);
    src.seek(SeekFrom::Start(0)).unwrap();
    let err = w.write(src, Vec::new()).unwrap_err();
    assert!(
        matches!(
            err,
            WriteError::InputChanged {
                first: 100,
                second: 101
            }
        ),
        "{err:?}"
    );
}
