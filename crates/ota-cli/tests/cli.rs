//! The built `ota` binary end to end: keygen → pack → verify → inspect, and exit codes.

use std::path::Path;
use std::process::{Command, Output};

fn ota(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ota"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run ota")
}

fn ok(dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ota(dir, &all);
    assert!(
        out.status.success(),
        "ota {args:?} failed with {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn code(dir: &Path, args: &[&str]) -> Option<i32> {
    ota(dir, args).status.code()
}

fn firmware(dir: &Path, len: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..len)
        .map(|i| u8::try_from(i * 31 % 251).unwrap())
        .collect();
    std::fs::write(dir.join("fw.bin"), &data).unwrap();
    data
}

fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn sming_round_trip_signed_and_encrypted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fw = firmware(dir, 10_000);
    let keys = ok(dir, &["keygen", "--sming"]);
    assert_eq!(keys["files"].as_array().unwrap().len(), 3);
    assert_eq!(std::fs::read(dir.join("ota.key")).unwrap().len(), 128);

    let packed = ok(
        dir,
        &[
            "pack",
            "--format",
            "sming",
            "-k",
            "ota.key",
            "fw.bin",
            "-o",
            "fw.ota",
            "--timestamp",
            "4000000000000",
        ],
    );
    assert_eq!(packed["bytes"], 16 + 8 + 10_000 + 64);
    let verified = ok(
        dir,
        &["verify", "fw.ota", "-k", "ota.key", "--extract", "out.bin"],
    );
    assert_eq!(verified["signature_checked"], true);
    assert_eq!(std::fs::read(dir.join("out.bin")).unwrap(), fw);
    let inspected = ok(dir, &["inspect", "fw.ota"]);
    assert_eq!(inspected["format"], "sming");
    assert_eq!(inspected["timestamp_ms_since_1900"], 4_000_000_000_000u64);
    assert_eq!(inspected["roms"][0]["address"], "0x2000");
    assert_eq!(inspected["signature_checked"], false);
    // Public key only (what a device holds).
    ok(dir, &["verify", "fw.ota", "--public-key", "verify.key.bin"]);

    ok(
        dir,
        &[
            "pack",
            "--format",
            "sming",
            "-k",
            "ota.key",
            "--encrypt",
            "fw.bin",
            "-o",
            "enc.ota",
            "--rom",
            "fw.bin@0x102000",
        ],
    );
    let inspected = ok(dir, &["inspect", "enc.ota", "-k", "ota.key"]);
    assert_eq!(inspected["encrypted"], true);
    assert_eq!(inspected["rom_count"], 2);
    assert_eq!(inspected["signature_checked"], true);
    let verified = ok(
        dir,
        &["verify", "enc.ota", "-k", "ota.key", "--slot", "0x102000"],
    );
    assert_eq!(
        verified["selected_rom"], 0,
        "first ROM matching modulo 1 MiB"
    );

    // Unsigned (MD5) needs no key.
    ok(
        dir,
        &[
            "pack",
            "--format",
            "sming",
            "--unsigned",
            "fw.bin",
            "-o",
            "md5.ota",
        ],
    );
    assert_eq!(ok(dir, &["verify", "md5.ota"])["integrity"], "md5");
}

#[test]
fn sming_failures_have_documented_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    firmware(dir, 3000);
    ok(dir, &["keygen", "--sming"]);
    ok(
        dir,
        &[
            "pack",
            "--format",
            "sming",
            "-k",
            "ota.key",
            "fw.bin",
            "-o",
            "fw.ota",
            "--timestamp",
            "4000000000000",
        ],
    );
    ok(
        dir,
        &[
            "pack",
            "--format",
            "sming",
            "-k",
            "ota.key",
            "--encrypt",
            "fw.bin",
            "-o",
            "enc.ota",
        ],
    );
    std::fs::copy(dir.join("fw.ota"), dir.join("bad.ota")).unwrap();
    flip(&dir.join("bad.ota"), 100);
    assert_eq!(
        code(dir, &["verify", "bad.ota", "-k", "ota.key"]),
        Some(6),
        "signature"
    );
    std::fs::copy(dir.join("enc.ota"), dir.join("bad.ota")).unwrap();
    flip(&dir.join("bad.ota"), 100);
    assert_eq!(
        code(dir, &["verify", "bad.ota", "-k", "ota.key"]),
        Some(7),
        "decryption"
    );
    let mut truncated = std::fs::read(dir.join("fw.ota")).unwrap();
    truncated.truncate(200);
    std::fs::write(dir.join("short.ota"), truncated).unwrap();
    assert_eq!(
        code(dir, &["verify", "short.ota", "-k", "ota.key"]),
        Some(5),
        "truncated"
    );
    assert_eq!(
        code(
            dir,
            &[
                "verify",
                "fw.ota",
                "-k",
                "ota.key",
                "--min-timestamp",
                "4000000000001"
            ]
        ),
        Some(8),
        "downgrade"
    );
    assert_eq!(
        code(
            dir,
            &["verify", "fw.ota", "-k", "ota.key", "--slot", "0x3000"]
        ),
        Some(8),
        "no ROM for slot"
    );
    std::fs::write(dir.join("bad.key"), "zz").unwrap();
    assert_eq!(
        code(dir, &["verify", "fw.ota", "-k", "bad.key"]),
        Some(4),
        "bad key"
    );
    assert_eq!(
        code(dir, &["verify", "missing.ota", "-k", "ota.key"]),
        Some(3),
        "missing file"
    );
    assert_eq!(code(dir, &["verify"]), Some(2), "usage");
    // A failed verify never leaves an extracted image behind.
    assert_eq!(
        code(
            dir,
            &["verify", "short.ota", "-k", "ota.key", "--extract", "x.bin"]
        ),
        Some(5)
    );
    assert!(!dir.join("x.bin").exists());
}

#[test]
fn keygen_creates_a_missing_output_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let keys = ok(dir, &["keygen", "-o", "new/keys"]);
    assert_eq!(keys["files"].as_array().unwrap().len(), 6);
    assert!(dir.join("new/keys/signing.key").is_file());
    let sming = ok(dir, &["keygen", "--sming", "-o", "sming/keys"]);
    assert_eq!(sming["files"].as_array().unwrap().len(), 3);
    assert!(dir.join("sming/keys/ota.key").is_file());
}

#[test]
fn native_round_trip_and_tamper() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fw = firmware(dir, 20_000);
    let keys = ok(dir, &["keygen"]);
    assert_eq!(keys["files"].as_array().unwrap().len(), 6);
    let common = ["--title", "app", "--version", "1.2.3", "--target", "esp32"];
    let mut args = vec!["pack", "fw.bin", "-o", "fw.pkg", "-k", "signing.key"];
    args.extend(common);
    ok(dir, &args);
    args[3] = "enc.pkg";
    args.extend(["--encrypt", "--payload-key", "payload.key"]);
    ok(dir, &args);

    let verify = [
        "-k",
        "root.pub",
        "--keyset",
        "keyset.bin",
        "--payload-key",
        "payload.key",
    ];
    for file in ["fw.pkg", "enc.pkg"] {
        let mut v = vec!["verify", file, "--extract", "out.bin", "--force"];
        v.extend(verify);
        assert_eq!(ok(dir, &v)["verified"], true);
        assert_eq!(std::fs::read(dir.join("out.bin")).unwrap(), fw);
        let inspected = ok(dir, &["inspect", file]);
        assert_eq!(inspected["format"], "ota");
        assert_eq!(inspected["manifest"]["version"], "1.2.3");
        assert_eq!(inspected["manifest"]["payload_size"], 20_000);
    }
    // Tampered manifest (signed) → 6; tampered ciphertext → 7; rollback → 8.
    std::fs::copy(dir.join("fw.pkg"), dir.join("bad.pkg")).unwrap();
    flip(&dir.join("bad.pkg"), 60);
    let mut v = vec!["verify", "bad.pkg"];
    v.extend(verify);
    assert_eq!(code(dir, &v), Some(6));
    std::fs::copy(dir.join("enc.pkg"), dir.join("bad.pkg")).unwrap();
    flip(&dir.join("bad.pkg"), 1000);
    assert_eq!(code(dir, &v), Some(7));
    let mut v = vec!["verify", "fw.pkg", "--highest-accepted", "2.0.0"];
    v.extend(verify);
    assert_eq!(code(dir, &v), Some(8));
    assert_eq!(
        code(dir, &["verify", "fw.pkg"]),
        Some(4),
        "native verify needs keys"
    );
}

#[test]
fn help_documents_exit_codes() {
    let out = ota(Path::new("."), &["verify", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for line in [
        "3  I/O error",
        "6  verification failed",
        "7  decryption failed",
        "8  refused by policy",
    ] {
        assert!(help.contains(line), "help lacks `{line}`:\n{help}");
    }
}
