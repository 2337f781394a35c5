//! One connection's state and misbehaviour, over real sockets: the chunk size remembered
//! per request id, `PAYLOAD_TOO_LARGE` then DISCONNECT 0x83 without PUBACK, malformed and
//! oversized packets, a silent socket, a client that never acknowledges, a packet before
//! CONNECT, a device whose keep-alive runs out — each closes that connection only, while a
//! well-behaved device on the same server keeps being served.

mod common;

use std::time::Duration;

use common::{Server, TOKEN};
use mqtt_endpoint_tokio::mqtt_ep::{
    self, ConnectionOption, Mode, Version,
    packet::{Packet, Qos, v5_0},
    result_code::DisconnectReasonCode,
    role,
};
use ota_mqtt::MqttConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IMAGE: &[u8] = b"abcdefghij";
const DEADLINE: Duration = Duration::from_secs(10);

type Client = mqtt_ep::Endpoint<role::Client>;

/// An MQTT 5 device session (empty client id) made with the endpoint crate's client mode.
async fn device(s_port: u16, auto_ack: bool) -> Client {
    let ep = Client::new(Version::V5_0);
    let sock = TcpStream::connect(("127.0.0.1", s_port))
        .await
        .expect("connect");
    let option = ConnectionOption::builder()
        .auto_pub_response(auto_ack)
        .build()
        .expect("option");
    ep.attach_with_options(
        mqtt_ep::transport::TcpTransport::from_stream(sock),
        Mode::Client,
        option,
    )
    .await
    .expect("attach");
    let connect = v5_0::Connect::builder()
        .client_id("")
        .expect("client id")
        .user_name(TOKEN)
        .expect("user name")
        .clean_start(true)
        .build()
        .expect("connect");
    ep.send(connect).await.expect("send CONNECT");
    match recv(&ep).await {
        Packet::V5_0Connack(c) => assert_eq!(c.reason_code() as u8, 0),
        p => panic!("expected CONNACK, got {p:?}"),
    }
    ep
}

async fn recv(ep: &Client) -> Packet {
    tokio::time::timeout(DEADLINE, ep.recv())
        .await
        .expect("a packet within the deadline")
        .expect("connection alive")
}

/// Publishes a chunk request at QoS 1 and returns what the server sent back, in order,
/// until (and including) the chunk response or a DISCONNECT.
async fn request(ep: &Client, topic: &str, size: &str) -> Vec<Packet> {
    let id = ep.acquire_packet_id().await.expect("packet id");
    let p = v5_0::Publish::builder()
        .topic_name(topic)
        .expect("topic")
        .qos(Qos::AtLeastOnce)
        .packet_id(id)
        .payload(size.as_bytes())
        .build()
        .expect("publish");
    ep.send(p).await.expect("send");
    let mut got = Vec::new();
    loop {
        let p = recv(ep).await;
        let last = matches!(p, Packet::V5_0Publish(_) | Packet::V5_0Disconnect(_));
        got.push(p);
        if last {
            return got;
        }
    }
}

fn publish_of(packets: &[Packet]) -> (String, Vec<u8>) {
    match packets.last() {
        Some(Packet::V5_0Publish(p)) => {
            (p.topic_name().to_owned(), p.payload().as_slice().to_vec())
        }
        other => panic!("expected a PUBLISH last, got {other:?}"),
    }
}

/// Whether the server closed the raw socket (EOF or reset) within the deadline.
async fn closed(sock: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(DEADLINE, sock.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// A raw TCP connection to the server, nothing sent yet.
async fn raw_socket(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect")
}

/// A raw QoS 0 PUBLISH (short topic and payload).
fn raw_publish(topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut p = vec![
        0x30,
        u8::try_from(2 + topic.len() + payload.len()).expect("short"),
    ];
    p.extend_from_slice(&u16::try_from(topic.len()).expect("short").to_be_bytes());
    p.extend_from_slice(topic);
    p.extend_from_slice(payload);
    p
}

/// A raw MQTT 3.1.1 CONNECT with `TOKEN` as user name and an empty client id.
fn raw_connect() -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0b1000_0010, 0, 60, 0, 0];
    body.extend_from_slice(&u16::try_from(TOKEN.len()).expect("short").to_be_bytes());
    body.extend_from_slice(TOKEN.as_bytes());
    let mut p = vec![0x10, u8::try_from(body.len()).expect("short")];
    p.extend(body);
    p
}

#[test]
fn size_is_remembered_per_request_id_on_one_session() {
    let s = Server::start(IMAGE);
    let port = s.addr.port();
    s.block_on(async {
        let ep = device(port, true).await;
        // Reference §11 vectors 2–5: PUBACK comes before the chunk.
        let got = request(&ep, "v2/fw/request/1/chunk/0", "4").await;
        assert!(
            matches!(got.first(), Some(Packet::V5_0Puback(_))),
            "{got:?}"
        );
        assert_eq!(
            publish_of(&got),
            ("v2/fw/response/1/chunk/0".into(), b"abcd".to_vec())
        );
        let got = request(&ep, "v2/fw/request/1/chunk/1", "").await;
        assert_eq!(publish_of(&got).1, b"efgh");
        let got = request(&ep, "v2/fw/request/1/chunk/2", "0").await;
        assert_eq!(publish_of(&got).1, b"ij");
        let got = request(&ep, "v2/fw/request/1/chunk/3", "").await;
        assert_eq!(publish_of(&got).1, b"");
        // A reassignment is not noticed on a request id in use, only on a new one (vector 11).
        s.reassign_async("1.2", b"NEW").await;
        let got = request(&ep, "v2/fw/request/1/chunk/0", "").await;
        assert_eq!(publish_of(&got).1, b"abcd");
        let got = request(&ep, "v2/fw/request/4/chunk/0", "").await;
        assert_eq!(publish_of(&got).1, b"NEW");
        // Vector 8: too large → error publish, no PUBACK, DISCONNECT 0x83.
        let got = request(&ep, "v2/fw/request/5/chunk/0", "65537").await;
        assert!(
            !got.iter().any(|p| matches!(p, Packet::V5_0Puback(_))),
            "{got:?}"
        );
        let error = got
            .iter()
            .find_map(|p| match p {
                Packet::V5_0Publish(p) => {
                    Some((p.topic_name().to_owned(), p.payload().as_slice().to_vec()))
                }
                _ => None,
            })
            .expect("an error publish");
        assert_eq!(error, ("v2/fw/error".into(), b"PAYLOAD_TOO_LARGE".to_vec()));
        let reason = loop {
            if let Packet::V5_0Disconnect(d) = recv(&ep).await {
                break d.reason_code();
            }
        };
        assert_eq!(
            reason,
            Some(DisconnectReasonCode::ImplementationSpecificError)
        );
    });
}

#[test]
fn misbehaving_connections_are_closed_and_others_served() {
    let s = Server::start_with(
        IMAGE,
        MqttConfig {
            connect_timeout: Duration::from_millis(300),
            max_inflight: 8,
            ..MqttConfig::default()
        },
    );
    let port = s.addr.port();
    s.block_on(async {
        let good = device(port, true).await;

        // Garbage instead of CONNECT.
        let mut bad = raw_socket(port).await;
        bad.write_all(&[0xff; 16]).await.expect("write");
        assert!(closed(&mut bad).await, "garbage");

        // CONNECT, then a PUBLISH announcing 200 MB: refused from its header.
        let mut bad = raw_socket(port).await;
        bad.write_all(&raw_connect()).await.expect("write");
        bad.write_all(&[0x30, 0x80, 0x80, 0x80, 0x60])
            .await
            .expect("write");
        assert!(closed(&mut bad).await, "oversized");

        // CONNECT, then a reserved packet type: mqtt-protocol-core logs and skips it (the
        // connection stays open); it must not disturb anyone else.
        let mut odd = raw_socket(port).await;
        odd.write_all(&raw_connect()).await.expect("write");
        odd.write_all(&[0x00, 0x00]).await.expect("write");

        // A wrong chunk size text (ThingsBoard's parseInt throws and the connection closes).
        let mut bad = raw_socket(port).await;
        bad.write_all(&raw_connect()).await.expect("write");
        let publish = raw_publish(b"v2/fw/request/1/chunk/0", b"\"4\"\n\n");
        bad.write_all(&publish).await.expect("write");
        assert!(closed(&mut bad).await, "non-numeric size");

        // Connected socket that never sends CONNECT.
        let mut silent = raw_socket(port).await;
        assert!(closed(&mut silent).await, "silent");

        // A device that requests chunks and never acknowledges them is cut off at the
        // in-flight limit.
        let greedy = device(port, false).await;
        for n in 0..20 {
            let p = v5_0::Publish::builder()
                .topic_name(format!("v2/fw/request/1/chunk/{n}"))
                .expect("topic")
                .qos(Qos::AtMostOnce)
                .payload(&b"1"[..])
                .build()
                .expect("publish");
            if greedy.send(p).await.is_err() {
                break;
            }
        }
        let reason = loop {
            match tokio::time::timeout(DEADLINE, greedy.recv())
                .await
                .expect("deadline")
            {
                Ok(Packet::V5_0Disconnect(d)) => break d.reason_code(),
                Ok(_) => {}
                Err(e) => panic!("closed without DISCONNECT: {e:?}"),
            }
        };
        assert_eq!(reason, Some(DisconnectReasonCode::ReceiveMaximumExceeded));

        drop(odd);
        // The well-behaved device is still served.
        let got = request(&good, "v2/fw/request/9/chunk/1", "3").await;
        assert_eq!(
            publish_of(&got),
            ("v2/fw/response/9/chunk/1".into(), b"def".to_vec())
        );
    });
}

/// A plain MQTT 3.1.1 device at QoS 0 behaving like the Arduino SDK (reference §9.2):
/// subscribes to the refused-by-ThingsBoard `v2/fw/response/+`, asks for the five keys, then
/// requests `size` on every chunk up to one past the end, which must be empty.
#[test]
fn plain_v311_client_at_qos0_fetches_attributes_and_chunks() {
    use mqtt_endpoint_tokio::mqtt_ep::packet::{SubEntry, SubOpts, v3_1_1};
    let s = Server::start(IMAGE);
    let port = s.addr.port();
    s.block_on(async {
        let ep = Client::new(Version::V3_1_1);
        let sock = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        ep.attach(
            mqtt_ep::transport::TcpTransport::from_stream(sock),
            Mode::Client,
        )
        .await
        .expect("attach");
        let connect = v3_1_1::Connect::builder()
            .client_id("")
            .expect("client id")
            .user_name(TOKEN)
            .expect("user name")
            .clean_session(true)
            .build()
            .expect("connect");
        ep.send(connect).await.expect("CONNECT");
        assert!(matches!(recv(&ep).await, Packet::V3_1_1Connack(_)));
        let id = ep.acquire_packet_id().await.expect("id");
        let sub = v3_1_1::Subscribe::builder()
            .packet_id(id)
            .entries(vec![
                SubEntry::new("v2/fw/response/+", SubOpts::new()).expect("entry"),
            ])
            .build()
            .expect("subscribe");
        ep.send(sub).await.expect("SUBSCRIBE");
        match recv(&ep).await {
            Packet::V3_1_1Suback(a) => assert!(a.return_codes()[0].is_success()),
            p => panic!("expected SUBACK, got {p:?}"),
        }
        let publish = |topic: String, payload: &'static [u8]| {
            v3_1_1::Publish::builder()
                .topic_name(topic)
                .expect("topic")
                .qos(Qos::AtMostOnce)
                .payload(payload)
                .build()
                .expect("publish")
        };
        ep.send(publish(
            "v1/devices/me/attributes/request/1".into(),
            br#"{"sharedKeys":"fw_checksum,fw_checksum_algorithm,fw_size,fw_title,fw_version"}"#,
        ))
        .await
        .expect("attribute request");
        match recv(&ep).await {
            Packet::V3_1_1Publish(p) => {
                assert_eq!(p.topic_name(), "v1/devices/me/attributes/response/1");
                let v: serde_json::Value =
                    serde_json::from_slice(p.payload().as_slice()).expect("json");
                assert_eq!(v["shared"]["fw_size"], 10);
                assert_eq!(v["shared"]["fw_title"], "demo");
            }
            p => panic!("expected the attribute response, got {p:?}"),
        }
        // fw_size / size + 1 requests (10 / 5 + 1 = 3): the last one past the end.
        let mut image = Vec::new();
        for n in 0..3 {
            ep.send(publish(format!("v2/fw/request/1/chunk/{n}"), b"5"))
                .await
                .expect("chunk request");
            match recv(&ep).await {
                Packet::V3_1_1Publish(p) => {
                    assert_eq!(p.topic_name(), format!("v2/fw/response/1/chunk/{n}"));
                    // `v2/fw/response/+` does not match this topic: QoS 1, as from
                    // ThingsBoard (the client acknowledges it).
                    assert_eq!(p.qos(), Qos::AtLeastOnce);
                    image.extend_from_slice(p.payload().as_slice());
                    assert_eq!(p.payload().is_empty(), n == 2);
                }
                p => panic!("expected a chunk, got {p:?}"),
            }
        }
        assert_eq!(image, IMAGE);
    });
}

/// Keep-alive over a raw socket: PINGREQ is answered with PINGRESP, and a device that falls
/// silent is disconnected once 1.5 × its keep-alive has passed without a packet (MQTT
/// 3.1.1 §3.1.2.10), not left to hold its session forever.
#[test]
fn keep_alive_is_answered_and_enforced() {
    let s = Server::start(IMAGE);
    let port = s.addr.port();
    s.block_on(async {
        let mut sock = raw_socket(port).await;
        let mut connect = raw_connect();
        // Keep-alive 1 s (bytes 9–10 of the CONNECT: after the fixed header, the protocol
        // name, level and flags).
        connect[10] = 0;
        connect[11] = 1;
        sock.write_all(&connect).await.expect("write");
        let mut connack = [0u8; 4];
        sock.read_exact(&mut connack).await.expect("CONNACK");
        assert_eq!(connack, [0x20, 0x02, 0x00, 0x00], "accepted");

        sock.write_all(&[0xc0, 0x00]).await.expect("PINGREQ");
        let mut pingresp = [0u8; 2];
        tokio::time::timeout(DEADLINE, sock.read_exact(&mut pingresp))
            .await
            .expect("PINGRESP within the deadline")
            .expect("read");
        assert_eq!(pingresp, [0xd0, 0x00], "PINGRESP");

        let silent_since = std::time::Instant::now();
        assert!(closed(&mut sock).await, "a silent device is disconnected");
        let waited = silent_since.elapsed();
        assert!(
            waited >= Duration::from_millis(1400) && waited < Duration::from_secs(5),
            "closed after {waited:?}, expected about 1.5 s"
        );
    });
}

/// A packet other than CONNECT first is a protocol error: the connection closes at once, not
/// after the connect timeout (10 s by default).
#[test]
fn publish_before_connect_closes_at_once() {
    let s = Server::start(IMAGE);
    let port = s.addr.port();
    s.block_on(async {
        let mut sock = raw_socket(port).await;
        let publish = raw_publish(b"v1/devices/me/telemetry", b"{}");
        let sent = std::time::Instant::now();
        sock.write_all(&publish).await.expect("write");
        assert!(closed(&mut sock).await, "closed");
        let waited = sent.elapsed();
        assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
    });
}

/// A 3.1.1 device pipelining 150 QoS 1 publishes in one write: more than the receive maximum
/// (100) arrive before any PUBACK could have left, yet each is acknowledged in order, since
/// the endpoint answers the packets of one read in batches before parsing the next ones.
#[test]
fn pipelined_qos1_publishes_beyond_the_receive_maximum_are_all_acknowledged() {
    let s = Server::start(IMAGE);
    let port = s.addr.port();
    s.block_on(async {
        let mut sock = raw_socket(port).await;
        let mut stream = raw_connect();
        let topic = b"v1/devices/me/telemetry";
        for id in 1..=150u16 {
            let payload = br#"{"n":1}"#;
            let mut p = vec![
                0x32,
                u8::try_from(2 + topic.len() + 2 + payload.len()).expect("short"),
            ];
            p.extend_from_slice(&u16::try_from(topic.len()).expect("short").to_be_bytes());
            p.extend_from_slice(topic);
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(payload);
            stream.extend(p);
        }
        sock.write_all(&stream).await.expect("write");
        let mut connack = [0u8; 4];
        tokio::time::timeout(DEADLINE, sock.read_exact(&mut connack))
            .await
            .expect("CONNACK within the deadline")
            .expect("read");
        assert_eq!(connack, [0x20, 0x02, 0x00, 0x00], "accepted");
        for id in 1..=150u16 {
            let mut puback = [0u8; 4];
            tokio::time::timeout(DEADLINE, sock.read_exact(&mut puback))
                .await
                .expect("PUBACK within the deadline")
                .unwrap_or_else(|e| panic!("PUBACK {id}: {e}"));
            let [hi, lo] = id.to_be_bytes();
            assert_eq!(puback, [0x40, 0x02, hi, lo], "PUBACK {id}");
        }
    });
}

/// An MQTT 5 device that sends a QoS 1 telemetry publish and, in the same write, the header
/// of a packet over the maximum size gets the core's DISCONNECT 0x95 (packet too large)
/// before the close, even though the session had not answered the publish yet.
#[test]
fn oversized_packet_after_another_in_one_write_gets_disconnect_0x95() {
    let s = Server::start(IMAGE);
    let port = s.addr.port();
    s.block_on(async {
        let mut sock = raw_socket(port).await;
        // MQTT 5 CONNECT: protocol level 5, user name flag, keep-alive 60, no properties.
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0b1000_0010, 0, 60, 0, 0, 0];
        body.extend_from_slice(&u16::try_from(TOKEN.len()).expect("short").to_be_bytes());
        body.extend_from_slice(TOKEN.as_bytes());
        let mut connect = vec![0x10, u8::try_from(body.len()).expect("short")];
        connect.extend(body);
        sock.write_all(&connect).await.expect("write");
        let mut head = [0u8; 2];
        sock.read_exact(&mut head).await.expect("CONNACK");
        assert_eq!(head[0], 0x20, "CONNACK");
        let mut rest = vec![0u8; usize::from(head[1])];
        sock.read_exact(&mut rest).await.expect("CONNACK body");
        assert_eq!(rest.get(1), Some(&0), "accepted");

        // QoS 1 PUBLISH (packet id 1, no properties), then a 200 MB remaining length.
        let topic = b"v1/devices/me/telemetry";
        let payload = b"{}";
        let mut publish = vec![
            0x32,
            u8::try_from(2 + topic.len() + 2 + 1 + payload.len()).expect("short"),
        ];
        publish.extend_from_slice(&u16::try_from(topic.len()).expect("short").to_be_bytes());
        publish.extend_from_slice(topic);
        publish.extend_from_slice(&[0, 1, 0]);
        publish.extend_from_slice(payload);
        publish.extend_from_slice(&[0x30, 0x80, 0x80, 0x80, 0x60]);
        sock.write_all(&publish).await.expect("write");

        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(DEADLINE, sock.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Err(elapsed) => {
                    panic!("not closed within the deadline ({elapsed}); got {got:02x?}")
                }
            }
        }
        // The last packet before the close is DISCONNECT with reason 0x95.
        let disconnect = got
            .windows(3)
            .rposition(|w| w[0] == 0xe0 && w[2] == 0x95)
            .unwrap_or_else(|| panic!("no DISCONNECT 0x95 in {got:02x?}"));
        assert_eq!(got.get(disconnect + 1), Some(&1), "{got:02x?}");
    });
}
