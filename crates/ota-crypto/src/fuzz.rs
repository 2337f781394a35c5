//! Entry points for the fuzz targets in `fuzz/` (one-line calls). No heap; they panic only
//! when an invariant of this crate is broken.

#![deny(clippy::indexing_slicing)]

use crate::keys::{KeyEntry, KeySet, MAX_KEY_SET_LEN, PayloadKey, SIGNATURE_LEN, SigningSecret};
use crate::manifest::{MANIFEST_LEN, Manifest, SemVer, TAG_LEN};
use crate::reader::{DevicePolicy, SignedPackageReader};
use crate::sming::{Slot, SmingConfig, SmingKey, SmingReader, Timestamp, Verifier};

const ROOT_SEED: [u8; 32] = [0x11; 32];
const SIGNER_SEED: [u8; 32] = [0x22; 32];
const PAYLOAD_KEY: [u8; 32] = [0x44; 32];

/// Manifest parsing: never panics, and whatever parses re-encodes to the same bytes.
pub fn fuzz_manifest(data: &[u8]) {
    if let Ok(m) = Manifest::parse(data) {
        let enc = m.encode();
        assert_eq!(&enc[..], data, "manifest encoding is not canonical");
        assert_eq!(Manifest::parse(&enc), Ok(m));
        let _ = m.package_len();
    }
}

/// Key set parsing and verification: never panics; a parsed set re-encodes to the same body.
pub fn fuzz_keyset(data: &[u8]) {
    let root = SigningSecret::from_seed(&ROOT_SEED);
    let _ = KeySet::verify(data, &root.root_key(), 0);
    if let Ok(set) = KeySet::parse_unverified(data) {
        let mut buf = [0u8; MAX_KEY_SET_LEN];
        let len = set.sign_into(&root, &mut buf).unwrap_or(0);
        assert_eq!(len, data.len(), "key set length changed on re-encoding");
        let body = len.saturating_sub(SIGNATURE_LEN);
        assert_eq!(
            buf.get(..body),
            data.get(..body),
            "key set encoding is not canonical"
        );
        let _ = set.signing_key(set.keys().first().map(|k| k.id).unwrap_or_default(), 0);
    }
}

/// Sming advanced `.ota` reader on arbitrary bytes.
///
/// `data[0]` is the feed split, `data[1..]` the file. A signed, an MD5 and an encrypted device
/// configuration must never panic, always make progress, and never accept a file they have
/// not seen whole.
pub fn fuzz_sming_ota(data: &[u8]) {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let split = usize::from(split);
    let key = SmingKey::from_bytes(&core::array::from_fn(|i| {
        u8::try_from(i).unwrap_or_default()
    }));
    let signed = SmingConfig {
        verifier: Verifier::Ed25519ph(key.verifying_key()),
        decrypt_key: None,
        slot: Slot {
            address: 0x2000,
            size: 0x10_0000,
        },
        minimum_timestamp: Some(Timestamp(1)),
    };
    run_sming(&signed, data, split);
    let md5 = SmingConfig {
        verifier: Verifier::Md5,
        ..signed
    };
    run_sming(&md5, data, split);
    let encrypted = SmingConfig {
        decrypt_key: Some(*key.stream_key()),
        ..signed
    };
    run_sming(&encrypted, data, split);
}

fn run_sming(config: &SmingConfig, data: &[u8], split: usize) {
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
                    rest = rest.get(fed.consumed..).unwrap_or_default();
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

/// Tiny deterministic generator for feed splits.
struct XorShift(u32);

impl XorShift {
    fn next(&mut self, max: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        (self.0 as usize % max) + 1
    }
}

/// The streaming reader on arbitrary bytes.
///
/// `data[0]` chooses the feed-split seed and the fix-ups; `data[1..]` is the package. When
/// the fix-up bits are set, the manifest's key ids are pointed at the fuzz keys and the
/// manifest is signed (so the fuzzer reaches the payload paths), and the device policy is
/// derived from the manifest (so it passes).
pub fn fuzz_package_reader(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let root = SigningSecret::from_seed(&ROOT_SEED);
    let signer = SigningSecret::from_seed(&SIGNER_SEED);
    let payload_key = PayloadKey::from_bytes(PAYLOAD_KEY);
    let entry = KeyEntry::new(signer.public_key(), 0, None);
    let Ok(set) = KeySet::new(1, &[entry], &[]) else {
        return;
    };
    let mut set_bytes = [0u8; MAX_KEY_SET_LEN];
    let Ok(n) = set.sign_into(&root, &mut set_bytes) else {
        return;
    };
    let Ok(keys) = KeySet::verify(set_bytes.get(..n).unwrap_or_default(), &root.root_key(), 0)
    else {
        return;
    };

    let mut header = [0u8; MANIFEST_LEN + SIGNATURE_LEN];
    let (mbytes, sig) = header.split_at_mut(MANIFEST_LEN);
    let Some((given, payload)) = rest.split_first_chunk::<MANIFEST_LEN>() else {
        // Shorter than a manifest: feed as is.
        run(&keys, &payload_key, None, control, &[rest]);
        return;
    };
    mbytes.copy_from_slice(given);
    if control & 0x80 != 0 {
        let ids = signer.key_id().0.into_iter().chain(payload_key.key_id().0);
        for (b, id) in mbytes.iter_mut().skip(60).take(16).zip(ids) {
            *b = id;
        }
    }
    if control & 0x40 != 0 {
        sig.copy_from_slice(&signer.sign(mbytes));
    } else {
        sig.copy_from_slice(payload.get(..SIGNATURE_LEN).unwrap_or(&[0; SIGNATURE_LEN]));
    }
    let payload = if control & 0x40 != 0 {
        payload
    } else {
        payload.get(SIGNATURE_LEN..).unwrap_or_default()
    };
    let manifest = Manifest::parse(mbytes).ok();
    run(
        &keys,
        &payload_key,
        manifest.filter(|_| control & 0x20 != 0),
        control,
        &[&header, payload],
    );
}

fn run(
    keys: &KeySet,
    payload_key: &PayloadKey,
    derive: Option<Manifest>,
    control: u8,
    parts: &[&[u8]],
) {
    let mut policy = DevicePolicy {
        now: 1_000,
        target: "fuzz",
        kind: crate::manifest::Kind::Firmware,
        highest_accepted: SemVer::default(),
        offered_version: None,
    };
    if let Some(m) = &derive {
        policy.now = m.created_at;
        policy.target = m.target.as_str();
        policy.kind = m.kind;
    }
    let mut chunk_buf = [0u8; 4096 + TAG_LEN];
    let mut reader = SignedPackageReader::new(keys, Some(payload_key), policy, &mut chunk_buf);
    let mut rng = XorShift(u32::from(control) | 0x9e37_0000);
    let mut out = [0u8; 97];
    let mut produced = 0u64;
    for part in parts {
        let mut input = *part;
        while !input.is_empty() {
            let piece = input
                .get(..rng.next(300).min(input.len()))
                .unwrap_or_default();
            let out_len = rng.next(out.len());
            match reader.feed(piece, out.get_mut(..out_len).unwrap_or_default()) {
                Ok(fed) => {
                    assert!(fed.consumed <= piece.len() && fed.produced <= out_len);
                    assert!(
                        fed.consumed > 0 || fed.produced > 0,
                        "reader made no progress"
                    );
                    produced += fed.produced as u64;
                    input = input.get(fed.consumed..).unwrap_or_default();
                }
                Err(_) => return,
            }
        }
    }
    loop {
        match reader.feed(&[], &mut out) {
            Ok(fed) if fed.produced > 0 => produced += fed.produced as u64,
            _ => break,
        }
    }
    if reader.finish().is_ok() {
        let m = reader.manifest().copied();
        assert_eq!(
            m.map(|m| m.payload_size),
            Some(produced),
            "verified with a wrong length"
        );
    }
}
