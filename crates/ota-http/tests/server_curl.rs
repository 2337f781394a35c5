//! The device API router on a real socket over the real `Ota` service (SQLite), driven by
//! `curl`: the reference's HTTP section and vectors 14–15, chunked and `Range` downloads,
//! attributes, long poll, telemetry, and hostile requests.
#![allow(clippy::missing_panics_doc)]

mod common;

use common::{Curl, DEMO, Server, TOKEN, curl, curl_to_file, image};
use ota_server::model::{PackageType, UpdateState};
use serde_json::{Value, json};

fn fw(s: &Server, query: &str) -> Curl {
    curl(&[], &s.url(&format!("/api/v1/{TOKEN}/firmware?{query}")))
}

#[test]
fn vector_14_whole_file_with_thingsboard_headers() {
    let s = Server::start(&DEMO);
    let r = fw(&s, "title=demo&version=1.1");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, DEMO);
    assert_eq!(r.header("content-length"), Some("10"));
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment;filename=demo.bin")
    );
    assert_eq!(r.header("x-filename"), Some("demo.bin"));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
}

#[test]
fn vector_15_chunks_end_of_file_and_errors() {
    let s = Server::start(&DEMO);
    assert_eq!(
        fw(&s, "title=demo&version=1.1&size=4&chunk=0").body,
        [0, 1, 2, 3]
    );
    assert_eq!(
        fw(&s, "title=demo&version=1.1&size=4&chunk=1").body,
        [4, 5, 6, 7]
    );
    let last = fw(&s, "title=demo&version=1.1&size=4&chunk=2");
    assert_eq!((last.status, last.body.as_slice()), (200, &[8u8, 9][..]));
    for past in [
        "size=4&chunk=3",
        "size=4&chunk=999",
        "size=2147483647&chunk=2147483647",
    ] {
        let r = fw(&s, &format!("title=demo&version=1.1&{past}"));
        assert_eq!(
            (r.status, r.header("content-length"), r.body.len()),
            (200, Some("0"), 0),
            "{past}"
        );
    }
    // Size 0 or negative: the whole file (ThingsBoard's cache treats size < 1 so).
    assert_eq!(fw(&s, "title=demo&version=1.1&size=0&chunk=5").body, DEMO);
    assert_eq!(fw(&s, "title=demo&version=1.1&size=-4").body, DEMO);

    let mismatch = fw(&s, "title=demo&version=1.0");
    assert_eq!((mismatch.status, mismatch.body.len()), (400, 0));
    let title = fw(&s, "title=Demo&version=1.1");
    assert_eq!(
        (title.status, title.body.len()),
        (400, 0),
        "comparison is case-sensitive"
    );

    let bad = curl(&[], &s.url("/api/v1/BAD/firmware?title=demo&version=1.1"));
    assert_eq!((bad.status, bad.body.len()), (401, 0));

    s.unassigned_device("NOFW");
    let none = curl(&[], &s.url("/api/v1/NOFW/firmware?title=demo&version=1.1"));
    assert_eq!((none.status, none.body.len()), (404, 0));
    let sw = curl(
        &[],
        &s.url(&format!("/api/v1/{TOKEN}/software?title=demo&version=1.1")),
    );
    assert_eq!((sw.status, sw.body.len()), (404, 0), "no software assigned");
}

#[test]
fn bad_queries_are_400_naming_the_parameter_before_the_token_is_checked() {
    let s = Server::start(&DEMO);
    let cases = [
        ("title=demo", "'version'"),
        ("version=1.1", "'title'"),
        ("title=demo&version=1.1&size=abc", "'size' is \"abc\""),
        ("title=demo&version=1.1&chunk=1.5", "'chunk' is \"1.5\""),
        (
            "title=demo&version=1.1&size=99999999999",
            "'size' is \"99999999999\"",
        ),
        ("title=demo&version=1.1&size=4&chunk=-1", "'chunk' is -1"),
    ];
    for (query, needle) in cases {
        for token in [TOKEN, "BAD"] {
            let r = curl(&[], &s.url(&format!("/api/v1/{token}/firmware?{query}")));
            assert_eq!(r.status, 400, "{token} {query}");
            let body: Value = serde_json::from_slice(&r.body).expect("JSON error body");
            let message = body["message"].as_str().expect("message");
            assert!(message.contains(needle), "{query}: {message}");
        }
    }
    let none = curl(&[], &s.url(&format!("/api/v1/{TOKEN}/firmware")));
    assert_eq!(none.status, 400);
}

#[test]
fn curl_downloads_chunk_by_chunk_byte_identical() {
    let img = image(100_003, 7);
    let s = Server::start(&img);
    let mut got = Vec::new();
    for chunk in 0.. {
        let r = fw(
            &s,
            &format!("title=demo&version=1.1&size=4096&chunk={chunk}"),
        );
        assert_eq!(r.status, 200);
        if r.body.is_empty() {
            break;
        }
        got.extend_from_slice(&r.body);
    }
    assert_eq!(got.len(), img.len());
    assert!(got == img, "chunked download differs from the package");
}

#[test]
fn range_downloads_and_resume_with_curl() {
    let img = image(65_537, 3);
    let s = Server::start(&img);
    let url = s.url(&format!("/api/v1/{TOKEN}/firmware/download"));

    let full = curl(&[], &url);
    assert_eq!(full.status, 200);
    assert!(full.body == img);
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    let etag = full.header("etag").expect("etag").to_owned();
    assert_eq!(
        etag,
        format!(
            "\"{}-{}\"",
            s.package.id,
            s.package.data().expect("data").checksum
        )
    );

    let part = curl(&["-r", "1000-4999"], &url);
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), Some("bytes 1000-4999/65537"));
    assert!(part.body == img[1000..5000]);
    let tail = curl(&["-r", "-10"], &url);
    assert_eq!((tail.status, tail.body.as_slice()), (206, &img[65_527..]));

    let past = curl(&["-r", "65537-"], &url);
    assert_eq!(
        (past.status, past.header("content-range")),
        (416, Some("bytes */65537"))
    );
    let multi = curl(&["-r", "0-1,5-6"], &url);
    assert_eq!(multi.status, 200, "several ranges: the whole file");
    assert!(multi.body == img);

    let cached = curl(&["-H", &format!("If-None-Match: {etag}")], &url);
    assert_eq!((cached.status, cached.body.len()), (304, 0));
    let stale = curl(&["-r", "0-9", "-H", "If-Range: \"other\""], &url);
    assert_eq!(
        stale.status, 200,
        "If-Range with another tag: the whole file"
    );
    assert!(stale.body == img);
    let fresh = curl(&["-r", "0-9", "-H", &format!("If-Range: {etag}")], &url);
    assert_eq!((fresh.status, fresh.body.as_slice()), (206, &img[..10]));
    let head = curl(&["-I"], &url);
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, Some("65537"))
    );

    // A standard downloader resumes: first 30 000 bytes, then `curl -C -` fetches the rest.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("fw.bin");
    assert_eq!(curl_to_file(&["-r", "0-29999"], &url, &file), 206);
    assert_eq!(std::fs::metadata(&file).expect("file").len(), 30_000);
    assert_eq!(curl_to_file(&["-C", "-"], &url, &file), 206);
    assert!(
        std::fs::read(&file).expect("read") == img,
        "resumed file differs from the package"
    );

    let bad = curl(&[], &s.url("/api/v1/BAD/firmware/download"));
    assert_eq!((bad.status, bad.body.len()), (401, 0));
    s.unassigned_device("NOFW");
    let none = curl(&[], &s.url("/api/v1/NOFW/firmware/download"));
    assert_eq!(none.status, 404);
}

#[test]
fn attributes_by_key_like_thingsboard() {
    let s = Server::start(&DEMO);
    let get = |q: &str| curl(&[], &s.url(&format!("/api/v1/{TOKEN}/attributes{q}")));
    let r = get("?sharedKeys=fw_title,fw_size&sharedKeys=fw_checksum");
    assert_eq!(r.status, 200);
    let v: Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(
        v,
        json!({"shared": {"fw_title": "demo", "fw_size": 10,
            "fw_checksum": "1f825aa2f0020ef7cf91dfa30da4668d791c5d4824fc8e41354b89ec05795ab3"}})
    );
    let all: Value = serde_json::from_slice(&get("").body).expect("json");
    assert_eq!(all["shared"]["fw_version"], "1.1");
    assert_eq!(all["shared"]["fw_checksum_algorithm"], "SHA256");
    assert_eq!(get("?sharedKeys=nope").body, b"{}");
    assert_eq!(get("?clientKeys=a").body, b"{}");
    let bad = curl(&[], &s.url("/api/v1/BAD/attributes"));
    assert_eq!((bad.status, bad.body.len()), (401, 0));
}

#[test]
fn long_poll_returns_the_next_assignment_or_408() {
    let s = Server::start(&DEMO);
    let url = s.url(&format!("/api/v1/{TOKEN}/attributes/updates?timeout=10000"));
    let poll = std::thread::spawn(move || curl(&[], &url));
    assert_eq!(s.wait_subscribed(), s.device.id);
    s.reassign("1.2", &[1, 2, 3]);
    let r = poll.join().expect("poll thread");
    assert_eq!(r.status, 200);
    let v: Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(
        (
            v["fw_title"].as_str(),
            v["fw_version"].as_str(),
            v["fw_size"].as_u64()
        ),
        (Some("demo"), Some("1.2"), Some(3))
    );
    assert_eq!(v["deleted"], json!(["fw_tag", "fw_url"]));

    let quiet = curl(
        &[],
        &s.url(&format!("/api/v1/{TOKEN}/attributes/updates?timeout=50")),
    );
    assert_eq!(quiet.status, 408);
    let bad = curl(
        &[],
        &s.url(&format!("/api/v1/{TOKEN}/attributes/updates?timeout=soon")),
    );
    assert_eq!(bad.status, 400);
}

#[test]
fn telemetry_shapes_reach_the_service() {
    let s = Server::start(&DEMO);
    let post = |token: &str, body: &str| {
        curl(
            &[
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ],
            &s.url(&format!("/api/v1/{token}/telemetry")),
        )
    };
    let state = || {
        s.block_on(
            s.ota()
                .store()
                .update_state(s.device.id, PackageType::Firmware),
        )
        .expect("state")
    };

    assert_eq!(post(TOKEN, r#"{"fw_state":"DOWNLOADING"}"#).status, 200);
    assert_eq!(state().state, Some(UpdateState::Downloading));
    assert_eq!(
        post(
            TOKEN,
            r#"{"ts":1700000000000,"values":{"fw_state":"DOWNLOADED"}}"#
        )
        .status,
        200
    );
    assert_eq!(state().state, Some(UpdateState::Downloaded));
    let r = post(
        TOKEN,
        r#"[{"fw_state":"VERIFIED"},{"ts":1,"values":{"fw_state":"UPDATING"}}]"#,
    );
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(state().state, Some(UpdateState::Updating));

    assert_eq!(post(TOKEN, "{not json").status, 400);
    assert_eq!(post(TOKEN, "[1,2]").status, 400);
    assert_eq!(post(TOKEN, "\"text\"").status, 400);
    assert_eq!(post("BAD", r#"{"fw_state":"UPDATED"}"#).status, 401);
    assert_eq!(
        state().state,
        Some(UpdateState::Updating),
        "refused posts change nothing"
    );
}

#[test]
fn hostile_paths_and_values_get_clean_4xx() {
    let s = Server::start(&DEMO);
    let raw = |path: &str| curl(&["--path-as-is"], &s.url(path)).status;
    assert_eq!(raw("/api/v1/../../etc/passwd"), 404);
    assert_eq!(raw("/api/v1/../firmware?title=demo&version=1.1"), 401);
    assert_eq!(
        raw("/api/v1/%2e%2e%2f%2e%2e/firmware?title=demo&version=1.1"),
        401
    );
    assert_eq!(raw("/api/v1/TOKEN%00/firmware?title=demo&version=1.1"), 401);
    assert_eq!(
        raw("/api/v1/%FF/firmware?title=demo&version=1.1"),
        400,
        "non-UTF-8 token"
    );
    let long = "A".repeat(5000);
    assert_eq!(
        raw(&format!("/api/v1/{long}/firmware?title=demo&version=1.1")),
        401
    );
    assert_eq!(
        raw(&format!(
            "/api/v1/{TOKEN}/firmware?title=demo&version=1.1&chunk=%FF"
        )),
        400
    );
    assert_eq!(
        raw(&format!("/api/v1/{TOKEN}/firmware/download/../../x")),
        404
    );
    // After all that, the server still serves.
    assert_eq!(fw(&s, "title=demo&version=1.1").body, DEMO);
}
