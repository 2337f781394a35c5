#![no_main]
//! Sming advanced `.ota` reader: arbitrary bytes, in arbitrary splits, through a signed,
//! an MD5 and an encrypted device configuration must never panic, and a reader must never
//! accept a file it has not seen whole.

use libfuzzer_sys::fuzz_target;
use ota_crypto::sming::{Slot, SmingConfig, SmingKey, SmingReader, Timestamp, Verifier};

fn run(config: &SmingConfig, data: &[u8], split: usize) {
    let mut reader: SmingReader<512> = SmingReader::new(config);
    let mut out = [0u8; 37];
    for piece in data.chunks(split.max(1)) {
        let mut rest = piece;
        while !rest.is_empty() {
            match reader.write(rest, &mut out) {
                Ok(fed) => {
                    assert!(
                        fed.consumed > 0 || fed.produced > 0,
                        "reader made no progress"
                    );
                    rest = &rest[fed.consumed..];
                }
                Err(_) => return,
            }
        }
    }
    if let Ok(summary) = reader.verify_end() {
        // Only a complete, verified file is accepted (random bytes pass MD5 only by chance).
        assert_eq!(reader.input_offset(), data.len() as u64);
        assert!(summary.plain_len >= 16);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let key = SmingKey::from_bytes(&core::array::from_fn(|i| i as u8));
    let signed = SmingConfig {
        verifier: Verifier::Ed25519ph(key.verifying_key()),
        decrypt_key: None,
        slot: Slot {
            address: 0x2000,
            size: 0x10_0000,
        },
        minimum_timestamp: Some(Timestamp(1)),
    };
    run(&signed, data, usize::from(split));
    run(
        &SmingConfig {
            verifier: Verifier::Md5,
            ..signed
        },
        data,
        usize::from(split),
    );
    run(
        &SmingConfig {
            decrypt_key: Some(*key.stream_key()),
            ..signed
        },
        data,
        usize::from(split),
    );
});
