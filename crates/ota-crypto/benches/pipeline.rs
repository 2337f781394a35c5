//! Device pipeline (signature check + per-chunk ChaCha20-Poly1305 + SHA-256 through
//! `SignedPackageReader`) against the bare primitives on the same bytes, 1 MiB payload in
//! 4 KiB chunks. Prints the throughput ratio (goal ≥ 0.9×).

#![allow(
    missing_docs,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_lossless
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use criterion::{Criterion, Throughput};
use ota_crypto::HEADER_LEN;
use ota_crypto::keys::{KeyEntry, KeySet, PayloadKey, SigningSecret};
use ota_crypto::manifest::{Kind, Manifest, SemVer, TAG_LEN};
use ota_crypto::reader::{DevicePolicy, SignedPackageReader};
use ota_crypto::writer::{PackageSpec, PackageWriter, Sealing};
use sha2::{Digest, Sha256};

const PAYLOAD: usize = 1 << 20;
const CHUNK: usize = 4096;

struct Fixture {
    keys: KeySet,
    payload_key: PayloadKey,
    package: Vec<u8>,
}

fn fixture() -> Fixture {
    let root = SigningSecret::from_seed(&[1; 32]);
    let signer = SigningSecret::from_seed(&[2; 32]);
    let payload_key = PayloadKey::from_bytes([3; 32]);
    let set = KeySet::new(1, &[KeyEntry::new(signer.public_key(), 0, None)], &[]).unwrap();
    let keys = KeySet::verify(&set.sign(&root), &root.root_key(), 0).unwrap();
    let mut spec =
        PackageSpec::new(Kind::Firmware, "bench", SemVer::new(1, 0, 0), "board", 10).unwrap();
    spec.chunk_size = CHUNK as u32;
    let payload: Vec<u8> = (0..PAYLOAD).map(|i| (i * 7 + 3) as u8).collect();
    let package = PackageWriter::new(
        &signer,
        spec,
        Sealing::ChaCha20Poly1305 {
            key: &payload_key,
            nonce_prefix: [4; 8],
        },
    )
    .pack_bytes(&payload)
    .unwrap();
    Fixture {
        keys,
        payload_key,
        package,
    }
}

/// The full device path: bytes arrive in 4 KiB transport pieces, plaintext leaves in 4 KiB.
fn pipeline(f: &Fixture, chunk_buf: &mut [u8], out: &mut [u8]) -> u64 {
    let policy = DevicePolicy {
        now: 20,
        target: "board",
        kind: Kind::Firmware,
        highest_accepted: SemVer::new(1, 0, 0),
        offered_version: None,
    };
    let mut reader = SignedPackageReader::new(&f.keys, Some(&f.payload_key), policy, chunk_buf);
    let mut produced = 0u64;
    for piece in f.package.chunks(CHUNK) {
        let mut input = piece;
        while !input.is_empty() {
            let fed = reader.feed(input, out).unwrap();
            produced += fed.produced as u64;
            black_box(&out[..fed.produced]);
            input = &input[fed.consumed..];
        }
    }
    reader.finish().unwrap();
    produced
}

/// The same work with bare primitives: copy each sealed chunk, open it, hash the plaintext.
fn raw(f: &Fixture, buf: &mut [u8]) -> [u8; 32] {
    let m = Manifest::parse(&f.package[..ota_crypto::manifest::MANIFEST_LEN]).unwrap();
    let digest = Manifest::digest_of(
        &f.package[..ota_crypto::manifest::MANIFEST_LEN]
            .try_into()
            .unwrap(),
    );
    let cipher = ChaCha20Poly1305::new(f.payload_key.as_bytes().into());
    let mut hasher = Sha256::new();
    let chunks = f.package[HEADER_LEN..].chunks(CHUNK + TAG_LEN);
    let n = chunks.len();
    for (i, sealed) in chunks.enumerate() {
        let len = sealed.len() - TAG_LEN;
        buf[..sealed.len()].copy_from_slice(sealed);
        let (text, tag) = buf[..sealed.len()].split_at_mut(len);
        let tag = Tag::try_from(&*tag).unwrap();
        let mut nonce = [4u8; 12];
        nonce[8..].copy_from_slice(&(i as u32).to_le_bytes());
        let mut aad = [0u8; 37];
        aad[..32].copy_from_slice(&digest);
        aad[32..36].copy_from_slice(&(i as u32).to_le_bytes());
        aad[36] = u8::from(i + 1 == n);
        cipher
            .decrypt_inout_detached(&Nonce::from(nonce), &aad, text.into(), &tag)
            .unwrap();
        hasher.update(&*text);
    }
    let out: [u8; 32] = hasher.finalize().into();
    assert_eq!(out, m.digest);
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let f = fixture();
    let mut chunk_buf = vec![0u8; CHUNK + TAG_LEN];
    let mut out = vec![0u8; CHUNK];
    assert_eq!(pipeline(&f, &mut chunk_buf, &mut out), PAYLOAD as u64);

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    {
        let mut g = c.benchmark_group("verify+decrypt+hash 1 MiB, 4 KiB chunks");
        g.throughput(Throughput::Bytes(PAYLOAD as u64));
        g.bench_function("device pipeline (SignedPackageReader)", |b| {
            b.iter(|| pipeline(&f, &mut chunk_buf, &mut out));
        });
        g.bench_function("raw primitives (chacha20poly1305 + sha256)", |b| {
            b.iter(|| raw(&f, &mut chunk_buf));
        });
        g.finish();
    }
    c.final_summary();

    // Interleaved runs in the same process for the printed ratio.
    let (mut tp, mut tr) = (Vec::new(), Vec::new());
    for _ in 0..40 {
        let t = Instant::now();
        black_box(pipeline(&f, &mut chunk_buf, &mut out));
        tp.push(t.elapsed());
        let t = Instant::now();
        black_box(raw(&f, &mut chunk_buf));
        tr.push(t.elapsed());
    }
    let (p, r) = (median(tp), median(tr));
    let mib = |d: Duration| PAYLOAD as f64 / (1 << 20) as f64 / d.as_secs_f64();
    println!(
        "pipeline {:.1} MiB/s ({p:?}), raw {:.1} MiB/s ({r:?}): pipeline/raw throughput ratio = {:.3}x (goal >= 0.9x)",
        mib(p),
        mib(r),
        r.as_secs_f64() / p.as_secs_f64()
    );
}
