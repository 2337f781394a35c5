//! Replays the committed `coap_datagram` fuzz corpus (`fuzz/corpus/coap_datagram/`) through
//! the same `fuzz_check` the fuzz target calls, on stable Rust, so every seed stays a
//! regression test.

use std::path::PathBuf;

#[test]
fn coap_datagram_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/coap_datagram");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        ota_coap::server::fuzz_check(&data);
        seen += 1;
    }
    assert!(seen > 0, "no seeds in {}", dir.display());
}
