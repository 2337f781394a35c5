//! Interop with libsodium through PyNaCl (`scripts/sming_interop.py`), both directions.
//!
//! Requires `python3` with PyNaCl: `pip install pynacl==1.6.2`. The test fails (it does
//! not skip) when either is missing.
#![cfg(feature = "std")]
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // test-data generators

use std::path::{Path, PathBuf};
use std::process::Command;

use ota_crypto::sming::file::{
    Encryption, ReadOptions, Rom, WriteOptions, read_package, write_package,
};
use ota_crypto::sming::{SmingError, SmingKey, Timestamp, Verifier};
use sha2::{Digest, Sha256};

const KEY: &[u8] = include_bytes!("data/sming/ota.key");
const PYNACL: &str = "1.6.2";
const STAMP: u64 = 3_944_678_400_000; // 2025-01-01T00:00:00Z in ms since 1900

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/sming_interop.py")
}

fn key() -> SmingKey {
    SmingKey::from_hex(KEY).unwrap()
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sming-interop-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ota.key"), KEY).unwrap();
        Self(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the script; panics with install instructions if python3 or PyNaCl is missing.
fn python(args: &[&str]) -> std::process::Output {
    let out = Command::new("python3")
        .arg(script())
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run python3 ({e}): install Python 3 and then `pip install pynacl=={PYNACL}`"
            )
        });
    assert_ne!(
        out.status.code(),
        Some(3),
        "PyNaCl is missing: `pip install pynacl=={PYNACL}` ({})",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn roms() -> Vec<(u32, Vec<u8>)> {
    vec![
        (0x2000, (0..5000u32).map(|i| (i * 7 % 256) as u8).collect()),
        (0x10_2000, (0..300u32).map(|i| (i % 13) as u8).collect()),
    ]
}

fn ours(signed: bool, encrypted: bool) -> Vec<u8> {
    let opts = WriteOptions {
        timestamp: Timestamp(STAMP),
        signing_key: signed.then(|| key().signing_key()),
        encryption: encrypted.then(|| Encryption {
            key: *key().stream_key(),
            header: core::array::from_fn(|i| (i as u8).wrapping_mul(37)),
        }),
    };
    let roms = roms();
    let mut list: Vec<Rom<&[u8]>> = roms
        .iter()
        .map(|(a, d)| Rom {
            address: *a,
            size: d.len() as u32,
            data: &d[..],
        })
        .collect();
    let mut out = Vec::new();
    write_package(&mut out, &opts, &mut list).unwrap();
    out
}

fn expected_report(file: &Path, signed: bool, chunks: usize) -> String {
    let roms: Vec<String> = roms()
        .iter()
        .map(|(a, d)| {
            format!(
                "{{\"address\": {a}, \"size\": {}, \"sha256\": \"{}\"}}",
                d.len(),
                hex::encode(Sha256::digest(d))
            )
        })
        .collect();
    format!(
        "{{\"file\": \"{}\", \"ok\": true, \"pynacl\": \"{PYNACL}\", \"signed\": {signed}, \"timestamp\": {STAMP}, \"chunks\": {chunks}, \"roms\": [{}]}}",
        file.display(),
        roms.join(", ")
    )
}

fn mode_name(signed: bool, encrypted: bool) -> String {
    format!(
        "{}-{}",
        if signed { "signed" } else { "md5" },
        if encrypted { "enc" } else { "plain" }
    )
}

fn read_ours(file: &[u8], signed: bool, encrypted: bool) -> Result<Vec<u8>, SmingError> {
    let opts = ReadOptions {
        verifier: Some(if signed {
            Verifier::Ed25519ph(key().verifying_key())
        } else {
            Verifier::Md5
        }),
        public_key: None,
        decrypt_key: encrypted.then(|| *key().stream_key()),
        slot: None,
        minimum_timestamp: Some(Timestamp(STAMP)),
    };
    let mut image = Vec::new();
    match read_package(file, &opts, &mut image, |_| {}) {
        Ok(_) => Ok(image),
        Err(ota_crypto::sming::file::ReadError::Package(e)) => Err(e),
        Err(e) => panic!("I/O error: {e}"),
    }
}

const MODES: [(bool, bool); 4] = [(true, false), (false, false), (true, true), (false, true)];

#[test]
fn pynacl_is_the_pinned_version() {
    let out = python(&["version"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), PYNACL);
}

#[test]
fn libsodium_verifies_and_decrypts_our_packages() {
    let dir = TempDir::new("ours");
    let key = dir.path("ota.key");
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (signed, encrypted) in MODES {
        let name = mode_name(signed, encrypted);
        let file = dir.path(&format!("{name}.ota"));
        let bytes = ours(signed, encrypted);
        std::fs::write(&file, &bytes).unwrap();
        good.push((file, signed, encrypted));
        // A flipped byte of ours must be refused by libsodium too.
        let mut tampered = bytes;
        let mid = tampered.len() / 2;
        tampered[mid] ^= 0x04;
        let file = dir.path(&format!("{name}-bad.ota"));
        std::fs::write(&file, tampered).unwrap();
        bad.push(file);
    }
    let mut args = vec![
        "verify".to_owned(),
        "--key".to_owned(),
        key.display().to_string(),
    ];
    for (file, ..) in &good {
        args.extend(["--in".to_owned(), file.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = python(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), good.len());
    for (line, (file, signed, encrypted)) in lines.iter().zip(&good) {
        // 16 + (8+5000) + (8+300) + trailer: 5396 (signed) / 5348 (MD5) → 3 chunks of ≤2031.
        let chunks = if *encrypted { 3 } else { 0 };
        assert_eq!(*line, expected_report(file, *signed, chunks));
    }

    let mut args = vec![
        "verify".to_owned(),
        "--key".to_owned(),
        key.display().to_string(),
    ];
    for file in &bad {
        args.extend(["--in".to_owned(), file.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = python(&args);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), bad.len());
    for (line, file) in stdout.lines().zip(&bad) {
        assert!(
            line.starts_with(&format!(
                "{{\"file\": \"{}\", \"ok\": false",
                file.display()
            )),
            "libsodium accepted a tampered file: {line}"
        );
    }
}

#[test]
fn we_verify_and_decrypt_libsodium_packages() {
    let dir = TempDir::new("theirs");
    let key = dir.path("ota.key");
    let out_pattern = dir.path("theirs-{mode}.ota");
    let stamp = STAMP.to_string();
    let mut args = vec![
        "make".to_owned(),
        "--key".to_owned(),
        key.display().to_string(),
        "--out".to_owned(),
        out_pattern.display().to_string(),
        "--timestamp".to_owned(),
        stamp,
    ];
    for (i, (addr, data)) in roms().iter().enumerate() {
        let path = dir.path(&format!("rom{i}.bin"));
        std::fs::write(&path, data).unwrap();
        args.extend(["--rom".to_owned(), format!("{}@{addr:#x}", path.display())]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = python(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (signed, encrypted) in MODES {
        let file = dir.path(&format!("theirs-{}.ota", mode_name(signed, encrypted)));
        let theirs = std::fs::read(&file).unwrap();
        assert_eq!(
            read_ours(&theirs, signed, encrypted).unwrap(),
            roms()[0].1,
            "signed={signed} encrypted={encrypted}"
        );
        if encrypted {
            // Random header: same length as ours, different bytes.
            assert_eq!(theirs.len(), ours(signed, true).len());
            let mut bad = theirs.clone();
            let last = bad.len() - 1;
            bad[last] ^= 0x01;
            assert_eq!(
                read_ours(&bad, signed, true),
                Err(SmingError::DecryptionFailed {
                    chunk: 2,
                    len: theirs.len() as u32 - 24 - 2 * 2050 - 2
                })
            );
        } else {
            // Ed25519 is deterministic: libsodium's file equals ours byte for byte.
            assert_eq!(theirs, ours(signed, false));
        }
    }
}
