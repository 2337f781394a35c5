//! Shared fixtures: fixed-seed keys, a key set, a policy, and a reader driver.
#![allow(dead_code)]

use ota_crypto::CryptoError;
use ota_crypto::keys::{KeyEntry, KeyId, KeySet, PayloadKey, SigningSecret};
use ota_crypto::manifest::{Kind, SemVer};
use ota_crypto::reader::{DevicePolicy, SignedPackageReader};
use ota_crypto::writer::{PackageSpec, PackageWriter, Sealing};

pub const NOW: u64 = 1_800_000_000;
pub const TARGET: &str = "board-rev-b";

pub fn root() -> SigningSecret {
    SigningSecret::from_seed(&[0x11; 32])
}
pub fn signer() -> SigningSecret {
    SigningSecret::from_seed(&[0x22; 32])
}
pub fn other_signer() -> SigningSecret {
    SigningSecret::from_seed(&[0x33; 32])
}
pub fn payload_key() -> PayloadKey {
    PayloadKey::from_bytes([0x44; 32])
}

/// A root-signed key set holding `signer()`, verified as a device would.
pub fn key_set() -> KeySet {
    key_set_with(&[KeyEntry::new(signer().public_key(), 0, None)], &[])
}

pub fn key_set_with(keys: &[KeyEntry], revoked: &[KeyId]) -> KeySet {
    let set = KeySet::new(7, keys, revoked).expect("valid key set");
    KeySet::verify(&set.sign(&root()), &root().root_key(), 0).expect("root-signed")
}

pub fn policy() -> DevicePolicy<'static> {
    DevicePolicy {
        now: NOW,
        target: TARGET,
        kind: Kind::Firmware,
        highest_accepted: SemVer::new(1, 0, 0),
        offered_version: None,
    }
}

pub fn spec(chunk_size: u32) -> PackageSpec {
    let mut s = PackageSpec::new(
        Kind::Firmware,
        "thermostat",
        SemVer::new(1, 2, 3),
        TARGET,
        NOW - 100,
    )
    .expect("spec");
    s.chunk_size = chunk_size;
    s.min_version = SemVer::new(1, 0, 0);
    s.expires_at = Some(NOW + 3600);
    s
}

pub fn pack_with(
    spec: PackageSpec,
    signer: &SigningSecret,
    encrypted: bool,
    payload: &[u8],
) -> Vec<u8> {
    let key = payload_key();
    let sealing = if encrypted {
        Sealing::ChaCha20Poly1305 {
            key: &key,
            nonce_prefix: [0x5a; 8],
        }
    } else {
        Sealing::None
    };
    PackageWriter::new(signer, spec, sealing)
        .pack_bytes(payload)
        .expect("pack")
}

pub fn pack(chunk_size: u32, encrypted: bool, payload: &[u8]) -> Vec<u8> {
    pack_with(spec(chunk_size), &signer(), encrypted, payload)
}

pub fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Feeds `package` in pieces of the sizes yielded by `split` (cycled), with an output buffer
/// of `out_len`; returns the plaintext, or the first error (from feed or finish).
pub fn read_with(
    keys: &KeySet,
    policy: DevicePolicy<'_>,
    package: &[u8],
    splits: &[usize],
    out_len: usize,
) -> Result<Vec<u8>, CryptoError> {
    let key = payload_key();
    let mut chunk_buf = vec![0u8; 64 * 1024 + 16];
    let mut reader = SignedPackageReader::new(keys, Some(&key), policy, &mut chunk_buf);
    let mut out = vec![0u8; out_len];
    let mut plain = Vec::new();
    let mut input = package;
    let mut i = 0;
    while !input.is_empty() {
        let n = splits[i % splits.len()].clamp(1, input.len());
        i += 1;
        let mut piece = &input[..n];
        while !piece.is_empty() {
            let fed = reader.feed(piece, &mut out)?;
            plain.extend_from_slice(&out[..fed.produced]);
            piece = &piece[fed.consumed..];
            assert!(fed.consumed > 0 || fed.produced > 0, "no progress");
        }
        input = &input[n..];
    }
    // Drain what the last piece left pending.
    loop {
        let fed = reader.feed(&[], &mut out)?;
        if fed.produced == 0 {
            break;
        }
        plain.extend_from_slice(&out[..fed.produced]);
    }
    reader.finish()?;
    Ok(plain)
}

pub fn read(package: &[u8]) -> Result<Vec<u8>, CryptoError> {
    read_with(&key_set(), policy(), package, &[4096], 4096)
}
