//! Replays every committed fuzz corpus of `ota-core` (`fuzz/corpus/<target>/`) through the same `fuzz_check`
//! functions the fuzz targets call, on stable Rust, so every seed stays a regression test.

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
fn topic_corpus() {
    replay("topic", ota_core::topic::fuzz_check);
}

#[test]
fn version_corpus() {
    replay("version", ota_core::version::fuzz_check);
}

#[test]
fn sming_frame_corpus() {
    replay("sming_frame", ota_core::frame::sming::fuzz_check);
}

#[test]
fn enigma_lines_corpus() {
    replay("enigma_lines", ota_core::frame::enigma::fuzz_check);
}

#[test]
fn tb_json_corpus() {
    replay("tb_json", ota_core::frame::thingsboard::fuzz_check);
}

#[test]
fn checkpoint_corpus() {
    replay("checkpoint", ota_core::checkpoint::fuzz_check);
}

#[test]
fn boot_state_corpus() {
    replay("boot_state", ota_core::boot::fuzz_check);
}
