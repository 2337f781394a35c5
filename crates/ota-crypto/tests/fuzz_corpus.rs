//! Replays every committed fuzz corpus of `ota-crypto` (`fuzz/corpus/<target>/`) through the
//! same functions the fuzz targets call, on stable Rust, so every seed stays a regression test.

use std::path::PathBuf;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        check(&data);
        seen += 1;
    }
    assert!(seen > 0, "no seeds in {}", dir.display());
}

#[test]
fn manifest_corpus() {
    replay("manifest", ota_crypto::fuzz::fuzz_manifest);
}

#[test]
fn package_reader_corpus() {
    replay("package_reader", ota_crypto::fuzz::fuzz_package_reader);
}

#[test]
fn keyset_corpus() {
    replay("keyset", ota_crypto::fuzz::fuzz_keyset);
}

#[test]
fn sming_ota_corpus() {
    replay("sming_ota", ota_crypto::fuzz::fuzz_sming_ota);
}
