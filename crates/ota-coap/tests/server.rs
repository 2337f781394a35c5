//! The CoAP server over real UDP sockets, with libcoap's `coap-client` as the third-party peer
//! and raw datagrams for exact codes.
#![allow(clippy::missing_panics_doc, clippy::many_single_char_names)]

mod common;

use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use common::{BARE, TOKEN, bytes, coap_client, env};
use tokio::net::UdpSocket;

/// Sends one request (CON unless `non`) and returns the first datagram back.
async fn ask(addr: std::net::SocketAddr, build: impl FnOnce(&mut Packet)) -> Packet {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Get);
    p.header.message_id = 0x1234;
    p.set_token(vec![1, 2, 3, 4]);
    build(&mut p);
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

fn get(p: &mut Packet, path: &[&str], query: &[&str]) {
    for s in path {
        p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
    }
    for q in query {
        p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
    }
}

fn code(p: &Packet) -> String {
    p.header.code.to_string()
}

fn fetch(bin: &str, args: &[&str], url: &str) -> (std::process::ExitStatus, Vec<u8>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.bin");
    let o = std::process::Command::new(bin)
        .args(args)
        .args(["-B", "10", "-o"])
        .arg(&out)
        .arg(url)
        .output()
        .expect("run coap-client");
    let body = std::fs::read(&out).unwrap_or_default();
    (
        o.status,
        body,
        String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coap_client_downloads_the_firmware_blockwise() {
    let bin = coap_client();
    let e = env(bytes(40_000, 1)).await;
    let url = format!("coap://{}/fw/{TOKEN}?title=demo&version=1.1", e.addr);
    for block in ["1024", "256", "16"] {
        let (u, b) = (url.clone(), block.to_owned());
        let (status, body, log) =
            tokio::task::spawn_blocking(move || fetch(bin, &["-m", "get", "-b", &b], &u))
                .await
                .expect("join");
        assert!(status.success(), "block {block}: {status} {log}");
        assert_eq!(body.len(), e.image.len(), "block {block}: {log}");
        assert!(body == e.image, "block {block}: bytes differ");
    }
    // Title and version are optional on CoAP; chunks are slices of the package.
    let url = format!("coap://{}/fw/{TOKEN}?size=4096&chunk=3", e.addr);
    let (status, body, log) =
        tokio::task::spawn_blocking(move || fetch(bin, &["-m", "get", "-b", "512"], &url))
            .await
            .expect("join");
    assert!(status.success(), "{log}");
    assert!(
        body == e.image[3 * 4096..4 * 4096],
        "chunk 3 differs ({} bytes)",
        body.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_vectors_and_errors() {
    let image: Vec<u8> = (0u8..10).collect();
    let e = env(image).await;
    let a = e.addr;
    // Vector 16: chunk 1 of 4 bytes.
    let r = ask(a, |p| {
        get(
            p,
            &["fw", TOKEN],
            &["title=demo", "version=1.1", "size=4", "chunk=1"],
        );
    })
    .await;
    assert_eq!(
        (code(&r), r.header.get_type(), r.header.message_id),
        ("2.05".into(), MessageType::Acknowledgement, 0x1234)
    );
    assert_eq!(
        (r.get_token(), &r.payload[..]),
        (&[1u8, 2, 3, 4][..], &[4u8, 5, 6, 7][..])
    );
    // Past the end: an empty 2.05 (our deliberate difference from ThingsBoard's silence).
    let r = ask(a, |p| {
        get(
            p,
            &["fw", TOKEN],
            &["title=demo", "version=1.1", "size=4", "chunk=3"],
        );
    })
    .await;
    assert_eq!((code(&r), r.payload.len()), ("2.05".into(), 0));
    let r = ask(a, |p| {
        get(p, &["fw", TOKEN], &["size=4", "chunk=18446744073709551615"]);
    })
    .await;
    assert_eq!((code(&r), r.payload.len()), ("2.05".into(), 0));
    // Mismatched title or version → 4.00; bad token → 4.01; no assignment → 4.04.
    let r = ask(a, |p| get(p, &["fw", TOKEN], &["title=x"])).await;
    assert_eq!(code(&r), "4.00");
    let r = ask(a, |p| {
        get(p, &["fw", TOKEN], &["title=demo", "version=1.0"]);
    })
    .await;
    assert_eq!(code(&r), "4.00");
    let r = ask(a, |p| get(p, &["fw", "BAD"], &[])).await;
    assert_eq!(code(&r), "4.01");
    let r = ask(a, |p| get(p, &["fw", BARE], &[])).await;
    assert_eq!(code(&r), "4.04");
    let r = ask(a, |p| get(p, &["sw", TOKEN], &[])).await;
    assert_eq!(code(&r), "4.04");
    let r = ask(a, |p| get(p, &["fw", TOKEN, "extra"], &[])).await;
    assert_eq!(code(&r), "4.01");
    // Non-numeric and duplicate parameters → 4.00 naming the value.
    let r = ask(a, |p| get(p, &["fw", TOKEN], &["chunk=abc"])).await;
    assert_eq!(
        (code(&r), String::from_utf8_lossy(&r.payload).into_owned()),
        (
            "4.00".into(),
            "query parameter chunk is not a number: \"abc\"".into()
        )
    );
    let r = ask(a, |p| get(p, &["fw", TOKEN], &["size=1", "size=2"])).await;
    assert_eq!(code(&r), "4.00");
    // Path traversal → 4.04.
    for path in [
        &["fw", ".."][..],
        &["..", "fw", TOKEN],
        &["fw", "a/b"],
        &["api", "v1", TOKEN, "."],
    ] {
        let r = ask(a, |p| get(p, path, &[])).await;
        assert_eq!(code(&r), "4.04", "{path:?}");
    }
    // POST on the firmware resource → 4.05; /api/v1/{token}/firmware does not exist on CoAP → 4.00.
    let r = ask(a, |p| {
        p.header.code = MessageClass::Request(RequestType::Post);
        get(p, &["fw", TOKEN], &[]);
    })
    .await;
    assert_eq!(code(&r), "4.05");
    let r = ask(a, |p| get(p, &["api", "v1", TOKEN, "firmware"], &[])).await;
    assert_eq!(code(&r), "4.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block2_edges() {
    let e = env(bytes(3000, 2)).await;
    let a = e.addr;
    let with_block = |value: Vec<u8>| {
        move |p: &mut Packet| {
            get(p, &["fw", TOKEN], &[]);
            p.add_option(CoapOption::Block2, value);
        }
    };
    // Block 2 of 1024 bytes: the last 952 bytes, M clear, Size2 = 3000.
    let r = ask(a, with_block(vec![0x26])).await;
    assert_eq!(code(&r), "2.05");
    assert_eq!(&r.payload[..], &e.image[2048..]);
    assert_eq!(r.get_first_option(CoapOption::Block2), Some(&vec![0x26]));
    assert_eq!(
        r.get_first_option(CoapOption::Size2),
        Some(&vec![0x0b, 0xb8])
    );
    // Block 5 of 64 bytes: M set.
    let r = ask(a, with_block(vec![0x5a])).await;
    assert_eq!(
        (&r.payload[..], r.get_first_option(CoapOption::Block2)),
        (&e.image[320..384], Some(&vec![0x5a]))
    );
    // No Block2 and a body above 1024 bytes: block 0 of 1024, M set.
    let r = ask(a, |p| get(p, &["fw", TOKEN], &[])).await;
    assert_eq!(
        (r.payload.len(), r.get_first_option(CoapOption::Block2)),
        (1024, Some(&vec![0x0e]))
    );
    // Past the end → 4.02; SZX 7 → 4.00; a 4-byte value → 4.02; absurd number → 4.02.
    let r = ask(a, with_block(vec![0x36])).await;
    assert_eq!(code(&r), "4.02");
    let r = ask(a, with_block(vec![0x07])).await;
    assert_eq!(code(&r), "4.00");
    let r = ask(a, with_block(vec![0, 0, 0, 6])).await;
    assert_eq!(code(&r), "4.02");
    let r = ask(a, with_block(vec![0xff, 0xff, 0xf6])).await;
    assert_eq!(code(&r), "4.02");
    // An unknown critical option → 4.02; an unknown elective one is ignored.
    let r = ask(a, |p| {
        get(p, &["fw", TOKEN], &["size=10"]);
        p.add_option(CoapOption::Unknown(2049), vec![1]);
    })
    .await;
    assert_eq!(code(&r), "4.02");
    let r = ask(a, |p| {
        get(p, &["fw", TOKEN], &["size=10"]);
        p.add_option(CoapOption::Unknown(2050), vec![1]);
    })
    .await;
    assert_eq!((code(&r), &r.payload[..]), ("2.05".into(), &e.image[..10]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_duplicates_pings_and_attributes() {
    let e = env((0u8..10).collect()).await;
    let a = e.addr;
    // NON is answered NON with its own message id and the request's token.
    let r = ask(a, |p| {
        p.header.set_type(MessageType::NonConfirmable);
        get(p, &["fw", TOKEN], &["size=4"]);
    })
    .await;
    assert_eq!(
        (r.header.get_type(), code(&r), r.get_token()),
        (
            MessageType::NonConfirmable,
            "2.05".into(),
            &[1u8, 2, 3, 4][..]
        )
    );
    // A duplicate CON gets the same response again, byte for byte.
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut p = Packet::new();
    p.header.message_id = 77;
    get(&mut p, &["fw", TOKEN], &["size=2", "chunk=1"]);
    let req = p.to_bytes().expect("encode");
    let mut answers = Vec::new();
    for _ in 0..2 {
        sock.send_to(&req, a).await.expect("send");
        let mut buf = [0u8; 256];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
            .await
            .expect("answer")
            .expect("recv");
        answers.push(buf[..n].to_vec());
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(
        Packet::from_bytes(&answers[0]).expect("decode").payload,
        vec![2, 3]
    );
    // An empty CON (ping) gets a Reset.
    sock.send_to(&[0x40, 0, 0, 9], a).await.expect("send");
    let mut buf = [0u8; 64];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("answer")
        .expect("recv");
    assert_eq!(&buf[..n], &[0x70, 0, 0, 9]);
    // Attributes.
    let r = ask(a, |p| {
        get(
            p,
            &["api", "v1", TOKEN, "attributes"],
            &["sharedKeys=fw_title,fw_size"],
        );
    })
    .await;
    let v: serde_json::Value = serde_json::from_slice(&r.payload).expect("json");
    assert_eq!(
        v,
        serde_json::json!({"shared": {"fw_title": "demo", "fw_size": 10}})
    );
    let r = ask(a, |p| {
        get(p, &["api", "v1", TOKEN, "attributes"], &["sharedKeys=nope"]);
    })
    .await;
    assert_eq!(code(&r), "4.04");
    let r = ask(a, |p| get(p, &["api", "v1", "BAD", "attributes"], &[])).await;
    assert_eq!(code(&r), "4.01");
    // Telemetry.
    let post = |body: &'static [u8]| {
        move |p: &mut Packet| {
            p.header.code = MessageClass::Request(RequestType::Post);
            get(p, &["api", "v1", TOKEN, "telemetry"], &[]);
            p.payload = body.to_vec();
        }
    };
    let r = ask(a, post(br#"{"fw_state":"DOWNLOADING"}"#)).await;
    assert_eq!(code(&r), "2.01");
    let s = e
        .ota
        .store()
        .update_state(e.device.id, ota_server::model::PackageType::Firmware)
        .await
        .expect("state");
    assert_eq!(s.state.map(|s| s.to_string()), Some("DOWNLOADING".into()));
    let r = ask(a, post(b"{not json")).await;
    assert_eq!(code(&r), "4.00");
    let r = ask(a, post(b"[1]")).await;
    assert_eq!(
        (code(&r), String::from_utf8_lossy(&r.payload).into_owned()),
        (
            "4.00".into(),
            "telemetry must be a JSON object, got a number".into()
        )
    );
    let r = ask(a, |p| get(p, &["api", "v1", TOKEN, "telemetry"], &[])).await;
    assert_eq!(code(&r), "4.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_flood_does_not_hurt_a_good_client() {
    let bin = coap_client();
    let e = env(bytes(64 * 1024, 3)).await;
    let a = e.addr;
    let started = std::time::Instant::now();
    let flood = tokio::spawn(async move {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let mut sent = 0u32;
        for i in 0..10_000u32 {
            let mut d = bytes(1 + (i as usize * 7) % 90, u64::from(i) + 10);
            // Half of them look like CoAP version 1 (CON/NON) so they get past the first check.
            if i % 2 == 0 {
                d[0] = 0x40 | (d[0] & 0x1f);
            }
            if sock.send_to(&d, a).await.is_ok() {
                sent += 1;
            }
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        sent
    });
    let url = format!("coap://{a}/fw/{TOKEN}?title=demo&version=1.1");
    let (status, body, log) =
        tokio::task::spawn_blocking(move || fetch(bin, &["-m", "get", "-b", "1024"], &url))
            .await
            .expect("join");
    let sent = flood.await.expect("flood");
    eprintln!(
        "flood: {sent} garbage datagrams and one 64 KiB download in {:?}",
        started.elapsed()
    );
    assert_eq!(sent, 10_000);
    assert!(status.success(), "{log}");
    assert!(
        body == e.image,
        "download during the flood differs ({} bytes)",
        body.len()
    );
    // Still answering after the flood.
    let r = ask(a, |p| get(p, &["fw", TOKEN], &["size=4"])).await;
    assert_eq!((code(&r), &r.payload[..]), ("2.05".into(), &e.image[..4]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_can_be_observed() {
    let e = env((0u8..10).collect()).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut p = Packet::new();
    p.header.message_id = 500;
    p.set_token(vec![9, 9]);
    p.add_option(CoapOption::Observe, vec![]);
    get(&mut p, &["api", "v1", TOKEN, "attributes"], &[]);
    sock.send_to(&p.to_bytes().expect("encode"), e.addr)
        .await
        .expect("send");
    let mut buf = [0u8; 2048];
    let mut next = async || {
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
            .await
            .expect("datagram")
            .expect("recv");
        Packet::from_bytes(&buf[..n]).expect("decode")
    };
    // Registration: 2.05 with Observe and every shared attribute as a flat object.
    let r = next().await;
    assert_eq!(
        (code(&r), r.get_observe_value()),
        ("2.05".into(), Some(Ok(0)))
    );
    let v: serde_json::Value = serde_json::from_slice(&r.payload).expect("json");
    assert_eq!(
        (v["fw_title"].as_str(), v["fw_size"].as_u64()),
        (Some("demo"), Some(10))
    );
    // Unassigning the firmware is pushed as ThingsBoard's deletion notification.
    let mut d = e.device.clone();
    d.firmware_id = None;
    e.ota.update_device(&d).await.expect("unassign");
    let n = next().await;
    assert_eq!(
        (
            n.header.get_type(),
            code(&n),
            n.get_token(),
            n.get_observe_value()
        ),
        (
            MessageType::NonConfirmable,
            "2.05".into(),
            &[9u8, 9][..],
            Some(Ok(1))
        )
    );
    let v: serde_json::Value = serde_json::from_slice(&n.payload).expect("json");
    let deleted: Vec<&str> = v["deleted"]
        .as_array()
        .expect("deleted")
        .iter()
        .filter_map(|k| k.as_str())
        .collect();
    assert!(
        deleted.contains(&"fw_title") && deleted.contains(&"fw_version"),
        "{v}"
    );
}

/// aiocoap (PyPI), a second independent CoAP implementation, fetches the firmware with its own
/// Block2 handling at two block sizes, and sees the reference's error codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiocoap_downloads_the_firmware_blockwise() {
    fn aiocoap(url: &str, szx: Option<u8>) -> (String, Vec<u8>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out.bin");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/aiocoap_fetch.py");
        let mut cmd = std::process::Command::new("python3");
        cmd.arg(script).arg(url).arg(&out);
        if let Some(s) = szx {
            cmd.arg(s.to_string());
        }
        let o = cmd.output().expect("run python3");
        assert!(
            o.status.success(),
            "aiocoap failed (installed by scripts/setup-test-deps.sh): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        (
            String::from_utf8_lossy(&o.stdout).trim().to_owned(),
            std::fs::read(&out).unwrap_or_default(),
        )
    }
    let e = env(bytes(20_000, 7)).await;
    let base = format!("coap://{}", e.addr);
    for szx in [None, Some(2u8)] {
        let url = format!("{base}/fw/{TOKEN}?title=demo&version=1.1");
        let (code, body) = tokio::task::spawn_blocking(move || aiocoap(&url, szx))
            .await
            .expect("join");
        assert!(code.starts_with("2.05"), "szx {szx:?}: {code}");
        assert!(body == e.image, "szx {szx:?}: {} bytes differ", body.len());
    }
    let cases = [
        (format!("{base}/fw/wrong-token"), "4.01"),
        (format!("{base}/fw/{BARE}"), "4.04"),
        (format!("{base}/fw/{TOKEN}?title=other&version=1.1"), "4.00"),
        (format!("{base}/fw/{TOKEN}?size=4096&chunk=1"), "2.05"),
    ];
    for (url, want) in cases {
        let u = url.clone();
        let (code, body) = tokio::task::spawn_blocking(move || aiocoap(&u, None))
            .await
            .expect("join");
        assert!(code.starts_with(want), "{url}: {code}");
        if want == "2.05" {
            assert!(body == e.image[4096..8192], "{url}: chunk differs");
        }
    }
}
