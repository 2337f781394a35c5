//! The test vectors printed in `docs/format.md`: regenerated here from fixed seeds and
//! compared with the document, so the document stays true.
#![allow(clippy::cast_possible_truncation)]

mod common;

use common::*;
use ota_crypto::manifest::Manifest;

const PAYLOAD: &[u8] = b"ota-crypto test vector: 40 bytes payload";

fn hex_lines(bytes: &[u8]) -> String {
    hex::encode(bytes)
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The hex block that follows `<!-- vector:NAME -->` in the document.
fn doc_vector(doc: &str, name: &str) -> String {
    let marker = format!("<!-- vector:{name} -->");
    let start = doc
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/format.md lacks {marker}"));
    let rest = &doc[start + marker.len()..];
    let body = rest
        .split("```text")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("fenced block");
    body.split_whitespace().collect()
}

fn vectors() -> Vec<(&'static str, Vec<u8>)> {
    assert_eq!(PAYLOAD.len(), 40);
    let set = ota_crypto::keys::KeySet::new(
        7,
        &[ota_crypto::keys::KeyEntry::new(
            signer().public_key(),
            0,
            None,
        )],
        &[],
    )
    .unwrap()
    .sign(&root());
    vec![
        ("root-public-key", root().public_key().to_vec()),
        ("signing-public-key", signer().public_key().to_vec()),
        ("key-set", set),
        ("package-chacha20poly1305", pack(16, true, PAYLOAD)),
        ("package-plain", pack(16, false, PAYLOAD)),
    ]
}

#[test]
fn vectors_in_docs_match_and_read_back() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/format.md"))
        .expect("docs/format.md");
    let mut mismatches = Vec::new();
    for (name, bytes) in vectors() {
        if doc_vector(&doc, name) != hex::encode(&bytes) {
            mismatches.push(format!(
                "<!-- vector:{name} -->\n```text\n{}\n```",
                hex_lines(&bytes)
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "docs/format.md is out of date; expected:\n{}",
        mismatches.join("\n\n")
    );
    for (name, bytes) in vectors()
        .into_iter()
        .filter(|(n, _)| n.starts_with("package"))
    {
        assert_eq!(read(&bytes).unwrap(), PAYLOAD, "{name}");
        let m = Manifest::parse(&bytes[..ota_crypto::manifest::MANIFEST_LEN]).unwrap();
        assert_eq!(m.package_len(), bytes.len() as u64);
    }
}
