//! A hundred MQTT device clients update at once from one endpoint while other clients
//! misbehave (chunk-request floods, malformed and oversized packets, unknown topics,
//! non-numeric chunk sizes, chunk requests without an assignment): every device completes with
//! the right image, each misbehaving session is answered as ThingsBoard does or closed on its
//! own, and the server keeps serving.
#![cfg(feature = "device")]

mod common;
mod support;

use std::time::Duration;

use common::{Server, image};
use ota_core::updater::{Config, Kind};
use ota_mqtt::MqttConfig;
use ota_mqtt::device::{LinkOptions, MemoryCheckpoints, MemorySlot, MqttDevice, Outcome};
use ota_server::model::{Device, DeviceId};
use ota_server::service::now_ms;
use support::{Probe, Seen, raw_connect, remaining_length};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEVICES: usize = 100;
const WAIT: Duration = Duration::from_secs(10);

/// Reads until the server closes the socket; `false` if it stays open for `WAIT`.
async fn closed_by_server(sock: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(until, sock.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

async fn raw_session(s: &Server, token: &str, id: &str) -> TcpStream {
    let mut sock = TcpStream::connect(s.addr).await.expect("connect");
    sock.write_all(&raw_connect(id, token))
        .await
        .expect("CONNECT");
    let mut connack = [0u8; 4];
    sock.read_exact(&mut connack).await.expect("CONNACK");
    assert_eq!(connack, [0x20, 2, 0, 0], "accepted");
    sock
}

/// The misbehaving clients; each asserts what it got.
#[allow(clippy::too_many_lines)] // six clients, each with its assertions
async fn misbehave(s: &Server) {
    // 1. Floods chunk requests (every index, fast, without waiting).
    let flood = async {
        let p = Probe::connect(s.addr, "bad-flood", "bad-flood").await;
        for i in 0..2000u32 {
            p.client
                .try_publish(
                    format!("v2/fw/request/1/chunk/{}", i % 64),
                    rumqttc::QoS::AtMostOnce,
                    false,
                    "512",
                )
                .ok();
            if i % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
        p
    };
    // 2. Non-numeric chunk size: ThingsBoard closes the connection.
    let letters = async {
        let mut p = Probe::connect(s.addr, "bad-size", "bad-size").await;
        p.publish("v2/fw/request/1/chunk/0", b"abc").await;
        assert!(
            p.closed_within(WAIT).await.is_some(),
            "closed after a size of letters"
        );
        let mut p = Probe::connect(s.addr, "bad-size", "bad-size-2").await;
        p.publish("v2/fw/request/1/chunk/0", b"4096\n").await;
        assert!(
            p.closed_within(WAIT).await.is_some(),
            "closed after a size with a newline"
        );
    };
    // 3. Unknown topic at QoS 1: acknowledged, the session stays.
    let unknown = async {
        let mut p = Probe::connect(s.addr, "bad-topic", "bad-topic").await;
        p.publish("no/such/topic", b"x").await;
        p.publish(
            "v1/devices/me/attributes/request/5",
            br#"{"sharedKeys":"fw_version"}"#,
        )
        .await;
        match p.next(WAIT).await {
            Some(Seen::Publish(t, body)) => {
                assert_eq!(t, "v1/devices/me/attributes/response/5");
                assert_eq!(body, br#"{"shared":{"fw_version":"1.1"}}"#);
            }
            other => panic!("unknown topic ended the session: {other:?}"),
        }
    };
    // 4. Chunk request without an assignment: NOT_FOUND on v2/fw/error, then closed.
    let unassigned = async {
        let mut p = Probe::connect(s.addr, "no-assignment", "no-assignment").await;
        p.publish("v2/fw/request/1/chunk/0", b"1024").await;
        match p.next(WAIT).await {
            Some(Seen::Publish(t, body)) => {
                assert_eq!(
                    (t.as_str(), body.as_slice()),
                    ("v2/fw/error", &b"NOT_FOUND"[..])
                );
            }
            other => panic!("expected NOT_FOUND, got {other:?}"),
        }
        assert!(
            p.closed_within(WAIT).await.is_some(),
            "closed after NOT_FOUND"
        );
    };
    // 5. A packet larger than the endpoint's limit: closed before its body is read.
    let oversized = async {
        let mut sock = raw_session(s, "bad-big", "bad-big").await;
        let mut publish = vec![0x30];
        publish.extend(remaining_length(10 << 20));
        publish.extend_from_slice(&[0, 3, b'a', b'/', b'b']);
        sock.write_all(&publish).await.expect("header");
        let _ = sock.write_all(&vec![0u8; 64 * 1024]).await;
        assert!(
            closed_by_server(&mut sock).await,
            "closed on an oversized packet"
        );
    };
    // 6. Garbage after CONNECT, and a PUBLISH instead of CONNECT.
    let malformed = async {
        let mut sock = raw_session(s, "bad-bytes", "bad-bytes").await;
        sock.write_all(&[0xF0, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F])
            .await
            .expect("garbage");
        assert!(
            closed_by_server(&mut sock).await,
            "closed on a malformed packet"
        );
        let mut sock = TcpStream::connect(s.addr).await.expect("connect");
        sock.write_all(&[0x30, 5, 0, 3, b'a', b'/', b'b'])
            .await
            .expect("PUBLISH first");
        // (Closed by the connect timeout at the latest: the endpoint waits for a CONNECT.)
        assert!(
            closed_by_server(&mut sock).await,
            "closed on a PUBLISH before CONNECT"
        );
    };
    let (mut flooder, (), (), (), (), ()) =
        tokio::join!(flood, letters, unknown, unassigned, oversized, malformed);
    // The flooder was answered (or closed alone, if it fell too far behind).
    let seen = flooder.drain(Duration::from_secs(2)).await;
    let answers = seen
        .iter()
        .filter(|s| matches!(s, Seen::Publish(t, _) if t.starts_with("v2/fw/response/1/chunk/")))
        .count();
    let closed = seen.iter().any(|s| matches!(s, Seen::Closed(_)));
    assert!(
        answers > 0 || closed,
        "flood neither answered nor closed: {seen:?}"
    );
}

#[test]
fn hundred_devices_update_while_others_misbehave() {
    let img = image(24 * 1024, 5);
    let s = Server::start_with(
        &img,
        MqttConfig {
            connect_timeout: Duration::from_secs(2),
            ..MqttConfig::default()
        },
    );
    let tokens: Vec<String> = (0..DEVICES).map(|i| format!("crowd-{i}")).collect();
    s.block_on(async {
        for (i, token) in tokens
            .iter()
            .map(String::as_str)
            .chain(["bad-flood", "bad-size", "bad-topic", "bad-big", "bad-bytes"])
            .enumerate()
        {
            let d = Device {
                id: DeviceId::new_random(),
                created_time: now_ms(),
                name: format!("crowd device {i}"),
                profile_id: s.profile.id,
                access_token: token.into(),
                firmware_id: Some(s.package.id),
                software_id: None,
                enigma: None,
            };
            s.ota().create_device(&d).await.expect("device");
        }
    });
    s.unassigned_device("no-assignment");
    s.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for token in &tokens {
            let token = token.clone();
            let port = s.addr.port();
            tasks.spawn(async move {
                let mut config = Config::new(1024, 1 << 16);
                config.backoff_base_ms = 50;
                let mut dev = MqttDevice::new("127.0.0.1", port, &token, Kind::Firmware, config)
                    .running("demo", "1.0")
                    .link_options(LinkOptions {
                        reconnect_delay: Duration::from_millis(50),
                        ..LinkOptions::default()
                    });
                let mut slot = MemorySlot::new(1 << 16);
                let mut checkpoints = MemoryCheckpoints::default();
                let out = dev.update(&mut slot, &mut checkpoints).await;
                dev.close().await;
                (token, out.map_err(|e| e.to_string()), slot)
            });
        }
        misbehave(&s).await;
        let mut done = 0;
        while let Some(joined) = tasks.join_next().await {
            let (token, out, slot) = joined.expect("device task");
            assert_eq!(
                out,
                Ok(Outcome::Installed {
                    title: "demo".into(),
                    version: "1.1".into()
                }),
                "{token}"
            );
            assert_eq!(&slot.bytes[..img.len()], &img[..], "{token}");
            done += 1;
        }
        assert_eq!(done, DEVICES);
        // Still serving afterwards.
        let mut p = Probe::connect(s.addr, "crowd-0", "after").await;
        p.publish("v2/fw/request/9/chunk/0", b"10").await;
        match p.next(WAIT).await {
            Some(Seen::Publish(t, body)) => {
                assert_eq!(t, "v2/fw/response/9/chunk/0");
                assert_eq!(body, &img[..10]);
            }
            other => panic!("server no longer serves: {other:?}"),
        }
    });
}
