//! Client attributes over CoAP: libcoap's `coap-client` posts `{"a":1}` to
//! `/api/v1/{token}/attributes` and reads it back with `?clientKeys=a`; raw datagrams check
//! the exact codes (`2.01`, `4.00`, `4.01`, `4.04`) and that refused bodies store nothing.
//! (A value over the size limit cannot reach the server in one CoAP datagram; the HTTP and
//! service tests cover it.)
#![allow(clippy::missing_panics_doc)]

mod common;

use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use common::{TOKEN, coap_client, env};
use ota_server::service::DeviceApi;
use tokio::net::UdpSocket;

/// Runs `coap-client` to its end; returns (exit status success, stdout + stderr).
async fn client(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let o = std::process::Command::new(coap_client())
            .args(&args)
            .output()
            .expect("run coap-client");
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    })
    .await
    .expect("client thread")
}

/// One confirmable request on a raw socket; the first datagram back.
async fn ask(
    addr: std::net::SocketAddr,
    method: RequestType,
    token: &str,
    query: &[&str],
    payload: &[u8],
) -> Packet {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(method);
    p.header.message_id = 0x4242;
    p.set_token(vec![9, 8, 7]);
    for s in ["api", "v1", token, "attributes"] {
        p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
    }
    for q in query {
        p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
    }
    p.payload = payload.to_vec();
    sock.send_to(&p.to_bytes().expect("encode"), addr)
        .await
        .expect("send");
    let mut buf = [0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("answer")
        .expect("recv");
    Packet::from_bytes(&buf[..n]).expect("decode answer")
}

fn code(p: &Packet) -> String {
    p.header.code.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coap_client_posts_and_reads_back_client_attributes() {
    let e = env((0u8..10).collect()).await;
    let url = format!(
        "coap://127.0.0.1:{}/api/v1/{TOKEN}/attributes",
        e.addr.port()
    );
    let (ok, out) = client(vec![
        "-m".into(),
        "post".into(),
        "-e".into(),
        r#"{"a":1,"b":"two"}"#.into(),
        url.clone(),
    ])
    .await;
    assert!(ok, "coap-client post failed: {out}");
    let (ok, out) = client(vec![
        "-m".into(),
        "get".into(),
        format!("{url}?clientKeys=a"),
    ])
    .await;
    assert!(ok, "coap-client get failed: {out}");
    assert_eq!(out.trim_end(), r#"{"client":{"a":1}}"#);
    let (ok, out) = client(vec![
        "-m".into(),
        "get".into(),
        format!("{url}?clientKeys=a,b&sharedKeys=fw_title"),
    ])
    .await;
    assert!(ok, "coap-client get failed: {out}");
    assert_eq!(
        out.trim_end(),
        r#"{"client":{"a":1,"b":"two"},"shared":{"fw_title":"demo"}}"#
    );

    // The exact codes, on raw datagrams: 2.01 Created as ThingsBoard answers, and the
    // second post replaces `a` and keeps `b`.
    let r = ask(e.addr, RequestType::Post, TOKEN, &[], br#"{"a":[1,2]}"#).await;
    assert_eq!((code(&r), r.payload.len()), ("2.01".into(), 0));
    let r = ask(e.addr, RequestType::Get, TOKEN, &["clientKeys=a,b"], b"").await;
    assert_eq!(code(&r), "2.05");
    assert_eq!(r.payload, br#"{"client":{"a":[1,2],"b":"two"}}"#);
    // Nothing found: 4.04 (ThingsBoard's CoAP; MQTT answers `{}`).
    let r = ask(e.addr, RequestType::Get, TOKEN, &["clientKeys=nope"], b"").await;
    assert_eq!(code(&r), "4.04");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_posts_are_refused_and_store_nothing() {
    let e = env((0u8..10).collect()).await;
    // A request is one datagram (no Block1), so the limits are reached with what fits:
    // 250 keys stored first, then 7 more asked for; a 256-character key.
    let first: serde_json::Map<String, serde_json::Value> =
        (0..250).map(|i| (format!("k{i}"), i.into())).collect();
    e.ota
        .record_client_attributes(&e.device, &first)
        .await
        .expect("250 keys");
    let many = format!(
        "{{{}}}",
        (240..257)
            .map(|i| format!(r#""k{i}":{i}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    let long_key = format!(r#"{{"{}":1}}"#, "k".repeat(256));
    for (body, why) in [
        (&b"[1]"[..], "got array"),
        (b"{\"a\":", "not JSON"),
        (b"", "not JSON"),
        (br#"{"n":null}"#, "is null"),
        (br#"{"k0":0,"":1}"#, "must not be empty"),
        (long_key.as_bytes(), "at most 255 allowed"),
        (many.as_bytes(), "at most 256 allowed"),
    ] {
        let r = ask(e.addr, RequestType::Post, TOKEN, &[], body).await;
        assert_eq!(code(&r), "4.00", "{why}");
        let diagnostic = String::from_utf8_lossy(&r.payload);
        assert!(
            diagnostic.contains(why),
            "{diagnostic:?} should say {why:?}"
        );
    }
    let r = ask(e.addr, RequestType::Post, "BAD", &[], br#"{"a":1}"#).await;
    assert_eq!(code(&r), "4.01");
    let r = ask(e.addr, RequestType::Get, "BAD", &["clientKeys=a"], b"").await;
    assert_eq!(code(&r), "4.01");
    let stored = e
        .ota
        .client_attributes(&e.device, None)
        .await
        .expect("read");
    assert_eq!(stored, first, "only the 250 keys stored directly");
}
