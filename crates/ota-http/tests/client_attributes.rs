//! Client attributes over HTTP with `curl`: `POST /api/v1/{token}/attributes` then `GET
//! …/attributes?clientKeys=…`, byte for byte; bad bodies and limits refused with `400`, a
//! bad token with `401`, and nothing of a refused body stored.
#![allow(clippy::missing_panics_doc)]

mod common;

use common::{Curl, DEMO, Server, TOKEN, curl};
use ota_server::service::DeviceApi;
use serde_json::Value;

fn post(s: &Server, token: &str, body: &str) -> Curl {
    curl(
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ],
        &s.url(&format!("/api/v1/{token}/attributes")),
    )
}

fn get(s: &Server, query: &str) -> Curl {
    curl(&[], &s.url(&format!("/api/v1/{TOKEN}/attributes{query}")))
}

fn stored(s: &Server) -> serde_json::Map<String, Value> {
    let device = s.device.clone();
    s.block_on(s.ota().client_attributes(&device, None))
        .expect("read client attributes")
}

#[test]
fn posted_attributes_come_back_by_key() {
    let s = Server::start(&DEMO);
    let r = post(&s, TOKEN, r#"{"a":1,"b":"x","nested":{"k":[1,2]}}"#);
    assert_eq!((r.status, r.body.len()), (200, 0));
    let r = get(&s, "?clientKeys=a,b,missing");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.body, br#"{"client":{"a":1,"b":"x"}}"#);

    // A second post replaces its keys and keeps the others.
    let r = post(&s, TOKEN, r#"{"a":2,"c":true}"#);
    assert_eq!(r.status, 200);
    assert_eq!(
        get(&s, "?clientKeys=a,b,c,nested").body,
        br#"{"client":{"a":2,"b":"x","c":true,"nested":{"k":[1,2]}}}"#
    );
    // Both scopes asked for: both sections.
    assert_eq!(
        get(&s, "?clientKeys=c&sharedKeys=fw_version").body,
        br#"{"client":{"c":true},"shared":{"fw_version":"1.1"}}"#
    );
    // Only shared keys: no client section; only unknown client keys: `{}`.
    assert_eq!(
        get(&s, "?sharedKeys=fw_title").body,
        br#"{"shared":{"fw_title":"demo"}}"#
    );
    assert_eq!(get(&s, "?clientKeys=nope").body, b"{}");
    // No keys at all: every attribute of both scopes.
    let all: Value = serde_json::from_slice(&get(&s, "").body).expect("json");
    assert_eq!(all["client"]["a"], 2);
    assert_eq!(all["shared"]["fw_title"], "demo");
    // An empty object is accepted and changes nothing.
    assert_eq!(post(&s, TOKEN, "{}").status, 200);
    assert_eq!(stored(&s).len(), 4);
}

#[test]
fn bad_bodies_and_tokens_are_refused_and_store_nothing() {
    let s = Server::start(&DEMO);
    assert_eq!(post(&s, TOKEN, r#"{"keep":1}"#).status, 200);
    let huge = format!(r#"{{"big":"{}"}}"#, "x".repeat(5000));
    let many = format!(
        "{{{}}}",
        (0..257)
            .map(|i| format!(r#""k{i}":{i}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    let long_key = format!(r#"{{"{}":1}}"#, "k".repeat(256));
    for (body, why) in [
        ("[1,2]", "must be a JSON object, got array"),
        ("\"text\"", "must be a JSON object, got string"),
        ("{\"a\":", "not JSON"),
        ("", "not JSON"),
        (r#"{"ok":1,"n":null}"#, "is null"),
        (r#"{"":1}"#, "must not be empty"),
        (huge.as_str(), "at most 4096 allowed"),
        (many.as_str(), "at most 256 allowed"),
        (long_key.as_str(), "at most 255 allowed"),
    ] {
        let r = post(&s, TOKEN, body);
        assert_eq!(r.status, 400, "{why}");
        let v: Value = serde_json::from_slice(&r.body).expect("json error body");
        let message = v["message"].as_str().expect("message");
        assert!(message.contains(why), "{message:?} should say {why:?}");
    }
    let r = post(&s, "BAD", r#"{"a":1}"#);
    assert_eq!((r.status, r.body.len()), (401, 0));
    let r = curl(&[], &s.url("/api/v1/BAD/attributes?clientKeys=keep"));
    assert_eq!((r.status, r.body.len()), (401, 0));
    // Only the first, valid post was stored.
    assert_eq!(
        get(&s, "?clientKeys=keep,ok,big,k0").body,
        br#"{"client":{"keep":1}}"#
    );
    assert_eq!(stored(&s).len(), 1);
}

#[test]
fn the_key_limit_counts_stored_keys() {
    let s = Server::start(&DEMO);
    let batch = |from: usize, to: usize| {
        format!(
            "{{{}}}",
            (from..to)
                .map(|i| format!(r#""k{i}":{i}"#))
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    assert_eq!(post(&s, TOKEN, &batch(0, 200)).status, 200);
    // 200 stored + 57 new = 257 > 256: refused as a whole.
    let r = post(&s, TOKEN, &batch(150, 257));
    assert_eq!(r.status, 400);
    assert_eq!(stored(&s).len(), 200);
    // Replacing stored keys and adding up to the limit is fine.
    assert_eq!(post(&s, TOKEN, &batch(100, 256)).status, 200);
    assert_eq!(stored(&s).len(), 256);
}
