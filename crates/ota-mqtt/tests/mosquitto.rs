//! The endpoint against Debian's `mosquitto_sub` / `mosquitto_pub` / `mosquitto_rr` (MQTT
//! 3.1.1 and 5): CONNECT refusals, attribute request/response, chunk requests answered to
//! the asking session only, and ThingsBoard's chunk edge cases (reference §3, §11).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{Server, TOKEN, mosquitto, run};
use ota_mqtt::MqttConfig;
use serde_json::{Value, json};

/// Printable image so the clients' text output can be compared directly.
const IMAGE: &[u8] = b"abcdefghij";

fn base(cmd: &mut Command, s: &Server, version: &str, token: &str) {
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &s.port(),
        "-V",
        version,
        "-u",
        token,
    ]);
}

/// One request/response exchange in its own MQTT 5 session (`mosquitto_rr` subscribes to
/// `response`, publishes `request`, prints the first answer); returns (exit code, stdout).
fn rr(s: &Server, token: &str, request: &str, payload: &str, response: &str) -> (i32, Vec<u8>) {
    rr_format(s, token, request, payload, response, "%t %p")
}

/// `rr` with a `mosquitto_rr -F` output format (`%t` topic, `%l` length, `%p` payload).
fn rr_format(
    s: &Server,
    token: &str,
    request: &str,
    payload: &str,
    response: &str,
    format: &str,
) -> (i32, Vec<u8>) {
    let mut cmd = mosquitto("mosquitto_rr");
    base(&mut cmd, s, "mqttv5", token);
    cmd.args([
        "-t", request, "-m", payload, "-e", response, "-F", format, "-N", "-W", "10",
    ]);
    let out = run(cmd);
    if !out.status.success() {
        eprintln!("mosquitto_rr: {}", String::from_utf8_lossy(&out.stderr));
    }
    (out.status.code().unwrap_or(-1), out.stdout)
}

#[test]
fn wrong_token_is_refused_at_connect() {
    let s = Server::start(IMAGE);
    for (version, token, code) in [
        // 3.1.1: CONNACK 0x05 not authorized; MQTT 5: 0x86 bad user name or password.
        ("mqttv311", "wrong", 5),
        ("mqttv5", "wrong", 0x86),
        // No user name (ThingsBoard would look for MQTT-basic credentials by client id).
        ("mqttv311", "", 2),
        ("mqttv5", "", 0x85),
    ] {
        let mut cmd = mosquitto("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &s.port(), "-V", version]);
        if !token.is_empty() {
            cmd.args(["-u", token]);
        }
        cmd.args(["-t", "v1/devices/me/attributes", "-C", "1", "-W", "10"]);
        let out = run(cmd);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{version} token {token:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn attribute_request_is_answered_on_its_response_topic() {
    let s = Server::start(&common::DEMO);
    let (code, out) = rr(
        &s,
        TOKEN,
        "v1/devices/me/attributes/request/1",
        r#"{"sharedKeys":"fw_checksum,fw_checksum_algorithm,fw_size,fw_title,fw_version"}"#,
        "v1/devices/me/attributes/response/1",
    );
    assert_eq!(code, 0);
    let text = String::from_utf8(out).expect("utf-8");
    let (topic, body) = text.split_once(' ').expect("topic and payload");
    assert_eq!(topic, "v1/devices/me/attributes/response/1");
    // Reference §2.3 / §11 vector 1, byte for byte up to key order.
    let expected = json!({"shared": {
        "fw_checksum": "1f825aa2f0020ef7cf91dfa30da4668d791c5d4824fc8e41354b89ec05795ab3",
        "fw_checksum_algorithm": "SHA256",
        "fw_size": 10,
        "fw_title": "demo",
        "fw_version": "1.1"
    }});
    assert_eq!(serde_json::from_str::<Value>(body).expect("json"), expected);

    // Unknown keys are omitted; nothing found is `{}`.
    let (code, out) = rr(
        &s,
        TOKEN,
        "v1/devices/me/attributes/request/2",
        r#"{"sharedKeys":"nope, fw_title"}"#,
        "v1/devices/me/attributes/response/2",
    );
    assert_eq!(code, 0);
    assert_eq!(out, b"v1/devices/me/attributes/response/2 {}");
}

#[test]
fn chunk_reaches_only_the_asking_session() {
    let s = Server::start_with(
        IMAGE,
        MqttConfig {
            push_on_subscribe: true,
            ..MqttConfig::default()
        },
    );
    // Two more sessions of the same device, on the same chunk filter (3.1.1 and 5). Each
    // also subscribes to attributes: the push on subscribe tells us it is listening, and a
    // later assignment push is its next message unless a chunk leaked to it.
    let mut observers: Vec<_> = ["mqttv311", "mqttv5"]
        .into_iter()
        .map(|version| {
            let mut cmd = mosquitto("mosquitto_sub");
            base(&mut cmd, &s, version, TOKEN);
            cmd.args([
                "-t",
                "v2/fw/response/+/chunk/+",
                "-t",
                "v1/devices/me/attributes",
            ]);
            cmd.args(["-v", "-C", "3", "-W", "20"])
                .stdout(Stdio::piped());
            let mut child = cmd.spawn().expect("spawn mosquitto_sub");
            let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
            let first = lines.next().expect("a first message").expect("read");
            assert!(first.starts_with("v1/devices/me/attributes {"), "{first}");
            (child, lines)
        })
        .collect();

    let (code, out) = rr(
        &s,
        TOKEN,
        "v2/fw/request/1/chunk/0",
        "4",
        "v2/fw/response/1/chunk/0",
    );
    assert_eq!(code, 0);
    assert_eq!(out, b"v2/fw/response/1/chunk/0 abcd");

    let new = s.reassign("1.2", b"new");
    for (mut child, mut lines) in observers.drain(..) {
        // ThingsBoard's order: the not-applicable keys deleted first, then the new values.
        let second = lines.next().expect("a second message").expect("read");
        assert_eq!(
            second,
            r#"v1/devices/me/attributes {"deleted":["fw_tag","fw_url"]}"#
        );
        let Some(third) = lines.next() else {
            let out = child.wait_with_output().expect("wait");
            panic!("no third message: {out:?}");
        };
        let third = third.expect("read");
        let (topic, body) = third.split_once(' ').expect("topic and payload");
        assert_eq!(topic, "v1/devices/me/attributes");
        let body: Value = serde_json::from_str(body).expect("json");
        assert_eq!(body["fw_version"], "1.2");
        assert_eq!(body["fw_size"], 3);
        assert_eq!(body["fw_title"], new.title.as_str());
        assert!(child.wait().expect("wait").success());
    }
    assert_eq!(s.chunk_reads(), vec![(0, 4)]);
}

#[test]
fn chunk_edge_cases_follow_thingsboard() {
    let s = Server::start(IMAGE);
    // Past the end: a 0-byte payload, not an error.
    let length = "%t length %l";
    assert_eq!(
        rr_format(
            &s,
            TOKEN,
            "v2/fw/request/1/chunk/3",
            "4",
            "v2/fw/response/1/chunk/3",
            length
        ),
        (0, b"v2/fw/response/1/chunk/3 length 0".to_vec())
    );
    assert_eq!(
        rr_format(
            &s,
            TOKEN,
            "v2/fw/request/1/chunk/999",
            "4",
            "v2/fw/response/1/chunk/999",
            length
        ),
        (0, b"v2/fw/response/1/chunk/999 length 0".to_vec())
    );
    // The last partial chunk.
    assert_eq!(
        rr(
            &s,
            TOKEN,
            "v2/fw/request/1/chunk/2",
            "4",
            "v2/fw/response/1/chunk/2"
        ),
        (0, b"v2/fw/response/1/chunk/2 ij".to_vec())
    );
    // Empty size on a new request id: the whole file.
    assert_eq!(
        rr(
            &s,
            TOKEN,
            "v2/fw/request/2/chunk/0",
            "",
            "v2/fw/response/2/chunk/0"
        ),
        (0, b"v2/fw/response/2/chunk/0 abcdefghij".to_vec())
    );
    // The request id is echoed literally, the chunk number canonically.
    assert_eq!(
        rr(
            &s,
            TOKEN,
            "v2/fw/request/007/chunk/01",
            "4",
            "v2/fw/response/007/chunk/1"
        ),
        (0, b"v2/fw/response/007/chunk/1 efgh".to_vec())
    );
    // Exactly 65,536 is served.
    assert_eq!(
        rr(
            &s,
            TOKEN,
            "v2/fw/request/3/chunk/0",
            "65536",
            "v2/fw/response/3/chunk/0"
        ),
        (0, b"v2/fw/response/3/chunk/0 abcdefghij".to_vec())
    );
    // One more: PAYLOAD_TOO_LARGE on v2/fw/error (a session that never subscribed to it).
    assert_eq!(
        rr(&s, TOKEN, "v2/fw/request/3/chunk/0", "65537", "v2/fw/error"),
        (0, b"v2/fw/error PAYLOAD_TOO_LARGE".to_vec())
    );
    // Software requests share the rules; their errors go to v2/fw/error too.
    s.unassigned_device("LONELY");
    assert_eq!(
        rr(&s, "LONELY", "v2/sw/request/1/chunk/0", "4", "v2/fw/error"),
        (0, b"v2/fw/error NOT_FOUND".to_vec())
    );
    assert_eq!(
        rr(&s, "LONELY", "v2/fw/request/1/chunk/0", "", "v2/fw/error"),
        (0, b"v2/fw/error NOT_FOUND".to_vec())
    );
}

#[test]
fn session_limits_rpc_is_answered() {
    let s = Server::start(IMAGE);
    let (code, out) = rr(
        &s,
        TOKEN,
        "v1/devices/me/rpc/request/1",
        r#"{"method":"getSessionLimits","params":{"timeout":5000}}"#,
        "v1/devices/me/rpc/response/1",
    );
    assert_eq!(code, 0);
    let text = String::from_utf8(out).expect("utf-8");
    let (topic, body) = text.split_once(' ').expect("topic and payload");
    assert_eq!(topic, "v1/devices/me/rpc/response/1");
    assert_eq!(
        serde_json::from_str::<Value>(body).expect("json"),
        json!({"maxPayloadSize": 65536, "maxInflightMessages": 100,
               "rateLimits": {"messages": "", "telemetryMessages": "", "telemetryDataPoints": ""}})
    );
}

#[test]
fn telemetry_from_mosquitto_pub_is_recorded() {
    let s = Server::start(IMAGE);
    for (version, payload) in [
        ("mqttv311", r#"{"fw_state":"DOWNLOADING"}"#),
        ("mqttv5", r#"{"ts":1,"values":{"fw_state":"DOWNLOADED"}}"#),
        (
            "mqttv311",
            r#"[{"current_fw_title":"demo","current_fw_version":"1.1","fw_state":"UPDATED"}]"#,
        ),
    ] {
        let mut cmd = mosquitto("mosquitto_pub");
        base(&mut cmd, &s, version, TOKEN);
        cmd.args(["-t", "v1/devices/me/telemetry", "-m", payload, "-q", "1"]);
        let out = run(cmd);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // QoS 1 publishes are acknowledged after recording, so the state is stored now.
    let state = s
        .block_on(
            s.ota()
                .store()
                .update_state(s.device.id, ota_server::model::PackageType::Firmware),
        )
        .expect("state");
    assert_eq!(state.state, Some(ota_server::model::UpdateState::Updated));
    assert_eq!(state.current_version.as_deref(), Some("1.1"));
}
