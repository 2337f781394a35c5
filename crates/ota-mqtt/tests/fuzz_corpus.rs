//! Replays the committed `mqtt_stream` fuzz corpus (`fuzz/corpus/mqtt_stream/`) through
//! the same `fuzz_check` the fuzz target calls, on stable Rust, so every seed stays a
//! regression test.

use std::path::PathBuf;

#[test]
fn mqtt_stream_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/mqtt_stream");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        ota_mqtt::server::fuzz_check(&data);
        seen += 1;
    }
    assert!(seen > 0, "no seeds in {}", dir.display());
}
