//! Tampering, splicing, truncation, key and policy attacks: each is rejected with its own
//! typed error and never reported verified.
#![allow(clippy::cast_possible_truncation)]

mod common;

use common::*;
use ota_core::UpdateError;
use ota_crypto::keys::{KeyEntry, KeySet};
use ota_crypto::manifest::{Encryption, Kind, MANIFEST_LEN, Manifest, SemVer, TAG_LEN};
use ota_crypto::reader::SignedPackageReader;
use ota_crypto::writer::{PackageWriter, Sealing, WriteError};
use ota_crypto::{CryptoError, HEADER_LEN};

const CHUNK: usize = 1024;

/// The error a single flipped byte at `pos` must produce in a package of `chunk`-byte chunks.
fn check_flip(pkg: &[u8], pos: usize, chunk: usize, encrypted: bool, err: CryptoError) {
    let signer_id = signer().key_id();
    match pos {
        0..4 => assert!(
            matches!(err, CryptoError::BadMagic { .. }),
            "{pos}: {err:?}"
        ),
        4..6 => assert!(
            matches!(err, CryptoError::UnsupportedFormat(_)),
            "{pos}: {err:?}"
        ),
        6 => assert!(matches!(err, CryptoError::UnknownKind(_)), "{pos}: {err:?}"),
        // 0 ↔ 1 turns encryption on/off: still a valid cipher, caught by the signature.
        7 => assert!(
            matches!(
                err,
                CryptoError::UnknownCipher(_) | CryptoError::BadSignature(_)
            ),
            "{pos}: {err:?}"
        ),
        60..68 => assert!(
            matches!(err, CryptoError::UnknownSigningKey(_)),
            "{pos}: {err:?}"
        ),
        p if p < MANIFEST_LEN => assert!(
            matches!(
                err,
                CryptoError::BadSignature(id) if id == signer_id
            ) || matches!(
                err,
                CryptoError::ChunkSizeOutOfRange(_)
                    | CryptoError::TooManyChunks { .. }
                    | CryptoError::ExpiresBeforeCreated { .. }
                    | CryptoError::TextTooLong { .. }
                    | CryptoError::TextNotUtf8 { .. }
                    | CryptoError::TextPadding(_)
                    | CryptoError::StrayEncryptionParameters
            ),
            "{pos}: {err:?}"
        ),
        p if p < HEADER_LEN => assert_eq!(err, CryptoError::BadSignature(signer_id), "{pos}"),
        p if encrypted => {
            let index = ((p - HEADER_LEN) / (chunk + TAG_LEN)) as u32;
            assert_eq!(err, CryptoError::ChunkAuthentication(index), "{pos}");
        }
        _ => assert_eq!(err, CryptoError::DigestMismatch, "{pos}"),
    }
    let _ = pkg;
}

#[test]
fn every_single_byte_flip_of_an_encrypted_4k_package_is_rejected() {
    let p = payload(4096, 7);
    let pkg = pack(CHUNK as u32, true, &p);
    assert_eq!(read(&pkg).unwrap(), p);
    assert_eq!(pkg.len(), HEADER_LEN + 4096 + 4 * TAG_LEN);
    let keys = key_set();
    for pos in 0..pkg.len() {
        let mut bad = pkg.clone();
        bad[pos] ^= 0xff;
        let err = read_with(&keys, policy(), &bad, &[usize::MAX], 4096)
            .expect_err("tampered package verified");
        check_flip(&bad, pos, CHUNK, true, err);
    }
}

#[test]
fn every_single_byte_flip_of_a_plain_4k_package_is_rejected() {
    let p = payload(4096, 8);
    let pkg = pack(CHUNK as u32, false, &p);
    let keys = key_set();
    for pos in 0..pkg.len() {
        let mut bad = pkg.clone();
        bad[pos] ^= 0x01;
        let err = read_with(&keys, policy(), &bad, &[usize::MAX], 4096)
            .expect_err("tampered package verified");
        check_flip(&bad, pos, CHUNK, false, err);
    }
}

#[test]
fn sampled_byte_flips_of_a_larger_package_are_rejected() {
    let p = payload(96 * 1024 + 123, 9);
    let pkg = pack(4096, true, &p);
    let keys = key_set();
    // Deterministic spread of positions, plus the first and last bytes of the payload.
    let mut positions: Vec<usize> = (0..60).map(|i| (i * 7919 * 13 + 5) % pkg.len()).collect();
    positions.extend([HEADER_LEN, pkg.len() - 1, pkg.len() - TAG_LEN]);
    for pos in positions {
        let mut bad = pkg.clone();
        bad[pos] ^= 0x80;
        let err = read_with(&keys, policy(), &bad, &[1500, 7, 4096], 1000)
            .expect_err("tampered package verified");
        check_flip(&bad, pos, 4096, true, err);
    }
}

#[test]
fn truncation_at_every_chunk_boundary_and_inside_the_header_is_rejected() {
    let p = payload(4096 + 100, 10);
    let pkg = pack(CHUNK as u32, true, &p);
    let mut cuts: Vec<usize> = (0..=5)
        .map(|i| HEADER_LEN + i * (CHUNK + TAG_LEN))
        .filter(|&c| c < pkg.len())
        .collect();
    cuts.extend([
        0,
        1,
        MANIFEST_LEN,
        HEADER_LEN - 1,
        pkg.len() - 1,
        pkg.len() - TAG_LEN,
    ]);
    for cut in cuts {
        let err = read(&pkg[..cut]).expect_err("truncated package verified");
        assert_eq!(
            err,
            CryptoError::Truncated {
                received: cut as u64,
                expected: pkg.len() as u64
            }
            .min_header(cut),
            "cut at {cut}"
        );
        assert_eq!(err.update_error(), UpdateError::InvalidPackage);
    }
}

/// Before the header is complete the expected length is not known yet: the reader reports the
/// header length it needs.
trait MinHeader {
    fn min_header(self, cut: usize) -> Self;
}
impl MinHeader for CryptoError {
    fn min_header(self, cut: usize) -> Self {
        match self {
            CryptoError::Truncated { received, .. } if cut < HEADER_LEN => CryptoError::Truncated {
                received,
                expected: HEADER_LEN as u64,
            },
            e => e,
        }
    }
}

#[test]
fn appended_bytes_are_rejected() {
    for encrypted in [true, false] {
        let pkg = pack(CHUNK as u32, encrypted, &payload(3000, 11));
        for extra in [1usize, 16, 1000] {
            let mut bad = pkg.clone();
            bad.extend(std::iter::repeat_n(0u8, extra));
            let err = read_with(&key_set(), policy(), &bad, &[usize::MAX], 4096).unwrap_err();
            assert_eq!(err, CryptoError::TrailingBytes(extra), "{extra}");
        }
    }
    // Also when the extra bytes arrive in a later call.
    let pkg = pack(CHUNK as u32, true, &payload(10, 1));
    let mut bad = pkg.clone();
    bad.push(0);
    assert_eq!(
        read_with(&key_set(), policy(), &bad, &[1], 1).unwrap_err(),
        CryptoError::TrailingBytes(1)
    );
}

#[test]
fn swapped_chunks_are_rejected() {
    let pkg = pack(CHUNK as u32, true, &payload(4096, 12));
    let sealed = CHUNK + TAG_LEN;
    let (a, b) = (HEADER_LEN + sealed, HEADER_LEN + 2 * sealed);
    let mut bad = pkg.clone();
    let chunk1 = pkg[a..a + sealed].to_vec();
    bad.copy_within(b..b + sealed, a);
    bad[b..b + sealed].copy_from_slice(&chunk1);
    assert_eq!(read(&bad).unwrap_err(), CryptoError::ChunkAuthentication(1));
}

#[test]
fn a_chunk_spliced_from_another_package_is_rejected_even_with_the_same_key_and_nonce_prefix() {
    let pkg = pack(CHUNK as u32, true, &payload(4096, 13));
    let mut other_spec = spec(CHUNK as u32);
    other_spec.version = SemVer::new(1, 2, 4);
    // Same payload key, same nonce prefix, same payload: only the manifest differs.
    let other = pack_with(other_spec, &signer(), true, &payload(4096, 13));
    let sealed = CHUNK + TAG_LEN;
    let at = HEADER_LEN + 2 * sealed;
    let mut bad = pkg.clone();
    bad[at..at + sealed].copy_from_slice(&other[at..at + sealed]);
    assert_ne!(bad, pkg);
    assert_eq!(read(&bad).unwrap_err(), CryptoError::ChunkAuthentication(2));
}

#[test]
fn the_last_chunk_flag_stops_a_shortened_payload_posing_as_complete() {
    // A package whose manifest says 2 chunks cannot be cut to its first chunk plus a
    // re-signed shorter manifest by anyone without the signing key; and its first chunk was
    // sealed as "not last", so even a forged 1-chunk manifest could not accept it.
    let pkg = pack(CHUNK as u32, true, &payload(2048, 14));
    let first = &pkg[HEADER_LEN..HEADER_LEN + CHUNK + TAG_LEN];
    let m = Manifest::parse(&pkg[..MANIFEST_LEN]).unwrap();
    let mut short = m;
    short.payload_size = CHUNK as u64;
    let enc = short.encode();
    let mut forged = enc.to_vec();
    forged.extend_from_slice(&signer().sign(&enc)); // worst case: the signer is compromised
    forged.extend_from_slice(first);
    assert_eq!(
        read(&forged).unwrap_err(),
        CryptoError::ChunkAuthentication(0)
    );
}

#[test]
fn signature_is_checked_before_any_payload_byte_is_accepted() {
    let mut pkg = pack(CHUNK as u32, true, &payload(4096, 15));
    pkg[HEADER_LEN - 1] ^= 1;
    let keys = key_set();
    let key = payload_key();
    let mut buf = vec![0u8; CHUNK + TAG_LEN];
    let mut reader = SignedPackageReader::new(&keys, Some(&key), policy(), &mut buf);
    let mut out = [0u8; 64];
    let err = reader.feed(&pkg, &mut out).unwrap_err();
    assert_eq!(err, CryptoError::BadSignature(signer().key_id()));
    // Sticky, and no plaintext was ever produced.
    assert_eq!(reader.feed(&pkg[HEADER_LEN..], &mut out).unwrap_err(), err);
    assert_eq!(reader.finish().unwrap_err(), err);
    assert_eq!(reader.received(), HEADER_LEN as u64);
    assert!(reader.manifest().is_none());
}

#[test]
fn unknown_signing_key_is_rejected() {
    let pkg = pack_with(spec(CHUNK as u32), &other_signer(), true, &payload(100, 1));
    assert_eq!(
        read(&pkg).unwrap_err(),
        CryptoError::UnknownSigningKey(other_signer().key_id())
    );
}

#[test]
fn revoked_signing_key_is_rejected() {
    let keys = key_set_with(
        &[
            KeyEntry::new(signer().public_key(), 0, None),
            KeyEntry::new(other_signer().public_key(), 0, None),
        ],
        &[signer().key_id()],
    );
    let pkg = pack(CHUNK as u32, true, &payload(100, 1));
    let err = read_with(&keys, policy(), &pkg, &[4096], 4096).unwrap_err();
    assert_eq!(err, CryptoError::RevokedSigningKey(signer().key_id()));
    // The other key still works.
    let ok = pack_with(spec(CHUNK as u32), &other_signer(), true, &payload(100, 1));
    assert_eq!(
        read_with(&keys, policy(), &ok, &[4096], 4096).unwrap(),
        payload(100, 1)
    );
}

#[test]
fn signing_key_validity_window_is_enforced() {
    let pkg = pack(CHUNK as u32, true, &payload(100, 1));
    let id = signer().key_id();
    let later = key_set_with(&[KeyEntry::new(signer().public_key(), NOW + 1, None)], &[]);
    assert_eq!(
        read_with(&later, policy(), &pkg, &[4096], 4096).unwrap_err(),
        CryptoError::SigningKeyNotYetValid {
            id,
            valid_from: NOW + 1,
            now: NOW
        }
    );
    let ended = key_set_with(&[KeyEntry::new(signer().public_key(), 0, Some(NOW))], &[]);
    assert_eq!(
        read_with(&ended, policy(), &pkg, &[4096], 4096).unwrap_err(),
        CryptoError::SigningKeyExpired {
            id,
            valid_until: NOW,
            now: NOW
        }
    );
}

#[test]
fn key_set_not_signed_by_root_is_rejected() {
    let set = KeySet::new(
        8,
        &[KeyEntry::new(other_signer().public_key(), 0, None)],
        &[],
    )
    .unwrap();
    // A stolen signing key tries to rotate itself to the attacker's key.
    let forged = set.sign(&signer());
    assert_eq!(
        KeySet::verify(&forged, &root().root_key(), 7).unwrap_err(),
        CryptoError::KeySetNotSignedByRoot
    );
    let mut tampered = set.sign(&root());
    tampered[20] ^= 1;
    assert_eq!(
        KeySet::verify(&tampered, &root().root_key(), 7).unwrap_err(),
        CryptoError::KeySetNotSignedByRoot
    );
}

#[test]
fn an_old_key_set_cannot_be_replayed() {
    let old = KeySet::new(6, &[KeyEntry::new(signer().public_key(), 0, None)], &[])
        .unwrap()
        .sign(&root());
    assert_eq!(
        KeySet::verify(&old, &root().root_key(), 7).unwrap_err(),
        CryptoError::KeySetRollback {
            found: 6,
            accepted: 7
        }
    );
    assert!(KeySet::verify(&old, &root().root_key(), 6).is_ok());
}

#[test]
fn version_below_its_own_min_version_is_rejected() {
    let mut s = spec(CHUNK as u32);
    s.min_version = SemVer::new(2, 0, 0);
    // The packer refuses to make such a package...
    let key = payload_key();
    let e = PackageWriter::new(
        &signer(),
        s,
        Sealing::ChaCha20Poly1305 {
            key: &key,
            nonce_prefix: [1; 8],
        },
    )
    .pack_bytes(b"x")
    .unwrap_err();
    assert!(
        matches!(e, WriteError::Manifest(CryptoError::BelowMinVersion { .. })),
        "{e:?}"
    );
    // ...and the device refuses one made by hand.
    let body = b"payload";
    let m = Manifest {
        kind: Kind::Firmware,
        version: SemVer::new(1, 2, 3),
        min_version: SemVer::new(2, 0, 0),
        payload_size: body.len() as u64,
        chunk_size: 1024,
        created_at: NOW - 1,
        expires_at: None,
        signing_key: signer().key_id(),
        encryption: Encryption::None,
        digest: sha256(body),
        title: spec(1024).title,
        target: spec(1024).target,
    };
    let enc = m.encode();
    let mut pkg = enc.to_vec();
    pkg.extend_from_slice(&signer().sign(&enc));
    pkg.extend_from_slice(body);
    let err = read(&pkg).unwrap_err();
    assert_eq!(
        err,
        CryptoError::BelowMinVersion {
            version: SemVer::new(1, 2, 3),
            min_version: SemVer::new(2, 0, 0)
        }
    );
    assert_eq!(err.update_error(), UpdateError::DowngradeRejected);
}

fn sha256(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

#[test]
fn version_below_the_highest_accepted_is_rejected() {
    let pkg = pack(CHUNK as u32, true, &payload(100, 1));
    let mut p = policy();
    p.highest_accepted = SemVer::new(1, 2, 4);
    let err = read_with(&key_set(), p, &pkg, &[4096], 4096).unwrap_err();
    assert_eq!(
        err,
        CryptoError::BelowAcceptedVersion {
            version: SemVer::new(1, 2, 3),
            accepted: SemVer::new(1, 2, 4)
        }
    );
    assert_eq!(err.update_error(), UpdateError::DowngradeRejected);
    // Re-installing the same version is allowed.
    p.highest_accepted = SemVer::new(1, 2, 3);
    assert!(read_with(&key_set(), p, &pkg, &[4096], 4096).is_ok());
}

#[test]
fn a_package_signed_for_another_version_than_offered_is_rejected() {
    // The package is signed as 1.2.3; the (unsigned) offer claims 1.4.0.
    let pkg = pack(CHUNK as u32, true, &payload(100, 1));
    let mut p = policy();
    p.offered_version = Some(SemVer::new(1, 4, 0));
    let err = read_with(&key_set(), p, &pkg, &[4096], 4096).unwrap_err();
    assert_eq!(
        err,
        CryptoError::NotTheOfferedVersion {
            offered: SemVer::new(1, 4, 0),
            signed: SemVer::new(1, 2, 3)
        }
    );
    assert_eq!(err.update_error(), UpdateError::InvalidPackage);
    // Nothing of the payload was released: the manifest is checked first.
    let key = payload_key();
    let keys = key_set();
    let mut chunk_buf = vec![0u8; 64 * 1024 + 16];
    let mut reader = SignedPackageReader::new(&keys, Some(&key), p, &mut chunk_buf);
    let mut out = vec![0u8; 4096];
    let mut produced = 0;
    let mut input = &pkg[..];
    let result = loop {
        match reader.feed(input, &mut out) {
            Ok(fed) if fed.consumed == 0 && fed.produced == 0 => break Ok(()),
            Ok(fed) => {
                produced += fed.produced;
                input = &input[fed.consumed..];
            }
            Err(e) => break Err(e),
        }
    };
    assert!(matches!(
        result,
        Err(CryptoError::NotTheOfferedVersion { .. })
    ));
    assert_eq!(produced, 0);
    // The offered version itself is accepted.
    p.offered_version = Some(SemVer::new(1, 2, 3));
    assert!(read_with(&key_set(), p, &pkg, &[4096], 4096).is_ok());
}

#[test]
fn expired_manifest_is_rejected() {
    let pkg = pack(CHUNK as u32, true, &payload(100, 1));
    let mut p = policy();
    p.now = NOW + 3600;
    let err = read_with(&key_set(), p, &pkg, &[4096], 4096).unwrap_err();
    assert_eq!(
        err,
        CryptoError::Expired {
            expires_at: NOW + 3600,
            now: NOW + 3600
        }
    );
    assert_eq!(err.update_error(), UpdateError::Expired);
    p.now = NOW + 3599;
    assert!(read_with(&key_set(), p, &pkg, &[4096], 4096).is_ok());
}

#[test]
fn wrong_target_and_wrong_kind_are_rejected() {
    let pkg = pack(CHUNK as u32, true, &payload(100, 1));
    let mut p = policy();
    p.target = "board-rev-c";
    let err = read_with(&key_set(), p, &pkg, &[4096], 4096).unwrap_err();
    assert_eq!(err, CryptoError::WrongTarget);
    assert_eq!(err.update_error(), UpdateError::WrongTarget);
    let mut p = policy();
    p.kind = Kind::Software;
    assert_eq!(
        read_with(&key_set(), p, &pkg, &[4096], 4096).unwrap_err(),
        CryptoError::WrongKind
    );
}

#[test]
fn missing_or_wrong_payload_key_is_rejected() {
    let pkg = pack(CHUNK as u32, true, &payload(100, 1));
    let keys = key_set();
    let wrong = ota_crypto::keys::PayloadKey::from_bytes([0x45; 32]);
    let mut buf = vec![0u8; CHUNK + TAG_LEN];
    let mut out = [0u8; 128];
    let id = payload_key().key_id();
    for key in [None, Some(&wrong)] {
        let mut r = SignedPackageReader::new(&keys, key, policy(), &mut buf);
        let err = r.feed(&pkg, &mut out).unwrap_err();
        assert_eq!(err, CryptoError::UnknownPayloadKey(id));
        assert_eq!(err.update_error(), UpdateError::DecryptionFailed);
    }
}

#[test]
fn chunk_buffer_too_small_is_reported_before_any_payload() {
    let pkg = pack(CHUNK as u32, true, &payload(100, 1));
    let keys = key_set();
    let key = payload_key();
    let mut buf = vec![0u8; CHUNK];
    let mut r = SignedPackageReader::new(&keys, Some(&key), policy(), &mut buf);
    let err = r.feed(&pkg, &mut [0u8; 16]).unwrap_err();
    assert_eq!(
        err,
        CryptoError::ChunkBufferTooSmall {
            needed: CHUNK + TAG_LEN,
            available: CHUNK
        }
    );
}

#[test]
fn finish_with_undrained_plaintext_is_refused() {
    let pkg = pack(CHUNK as u32, true, &payload(100, 1));
    let keys = key_set();
    let key = payload_key();
    let mut buf = vec![0u8; CHUNK + TAG_LEN];
    let mut r = SignedPackageReader::new(&keys, Some(&key), policy(), &mut buf);
    let fed = r.feed(&pkg, &mut [0u8; 40]).unwrap();
    assert_eq!((fed.consumed, fed.produced), (pkg.len(), 40));
    assert_eq!(
        r.finish().unwrap_err(),
        CryptoError::PlaintextNotDrained(60)
    );
}

#[test]
fn every_crypto_error_maps_to_its_wire_error() {
    use CryptoError as C;
    use UpdateError as U;
    let id = signer().key_id();
    let table = [
        (C::BadSignature(id), U::SignatureInvalid),
        (C::UnknownSigningKey(id), U::SignatureInvalid),
        (C::RevokedSigningKey(id), U::SignatureInvalid),
        (C::KeySetNotSignedByRoot, U::SignatureInvalid),
        (
            C::KeySetRollback {
                found: 1,
                accepted: 2,
            },
            U::SignatureInvalid,
        ),
        (C::ChunkAuthentication(3), U::DecryptionFailed),
        (C::DigestMismatch, U::ChecksumMismatch),
        (C::WrongTarget, U::WrongTarget),
        (
            C::Expired {
                expires_at: 1,
                now: 2,
            },
            U::Expired,
        ),
        (C::TrailingBytes(1), U::InvalidPackage),
        (
            C::Truncated {
                received: 1,
                expected: 2,
            },
            U::InvalidPackage,
        ),
        (
            C::BadMagic {
                found: *b"PK\x03\x04",
            },
            U::InvalidPackage,
        ), // a zip file, not a package
    ];
    for (c, u) in table {
        assert_eq!(UpdateError::from(c), u, "{c}");
    }
}

#[test]
fn trait_object_reports_wire_errors() {
    use ota_core::reader::PackageReader;
    let mut pkg = pack(CHUNK as u32, true, &payload(100, 1));
    let keys = key_set();
    let key = payload_key();
    let mut buf = vec![0u8; CHUNK + TAG_LEN];
    let mut r = SignedPackageReader::new(&keys, Some(&key), policy(), &mut buf);
    let dynr: &mut dyn PackageReader = &mut r;
    assert_eq!(dynr.package_len(), None);
    let mut out = [0u8; 200];
    let fed = dynr.feed(&pkg[..HEADER_LEN], &mut out).unwrap();
    assert_eq!(fed.consumed, HEADER_LEN);
    assert_eq!(dynr.package_len(), Some(pkg.len() as u64));
    assert_eq!(dynr.plaintext_len(), Some(100));
    let last = pkg.len() - 1;
    pkg[last] ^= 1;
    assert_eq!(
        dynr.feed(&pkg[HEADER_LEN..], &mut out).unwrap_err(),
        UpdateError::DecryptionFailed
    );
    assert_eq!(dynr.finish().unwrap_err(), UpdateError::DecryptionFailed);
}
