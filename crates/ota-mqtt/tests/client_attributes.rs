//! Client attributes over MQTT with Debian's `mosquitto_pub` / `mosquitto_rr`: a PUBLISH on
//! `v1/devices/me/attributes` is stored, and the attribute request answers `client` and
//! `shared` sections; refused payloads (not an object, over a limit) get MQTT 5 PUBACK
//! `0x99` / `0x97` and store nothing.

mod common;

use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use common::{Server, TOKEN, mosquitto};
use ota_mqtt::MqttConfig;
use ota_server::events::AssignmentEvent;
use ota_server::model::{Device, DeviceId, OtaPackage, PackageType};
use ota_server::service::{DeviceApi, ServiceError};
use serde_json::{Map, Value};
use tokio::sync::broadcast;

/// Printable image (the fixture assigns it as firmware `demo`/`1.1`).
const IMAGE: &[u8] = b"abcdefghij";

/// The fixture's real service, with every call (client attributes included) passed on.
struct Full(Arc<common::Observed>);

#[async_trait]
impl DeviceApi for Full {
    async fn authenticate(&self, token: &str) -> Result<Option<Device>, ServiceError> {
        self.0.ota.authenticate(token).await
    }
    async fn assigned_package(
        &self,
        device: &Device,
        t: PackageType,
    ) -> Result<Option<OtaPackage>, ServiceError> {
        self.0.ota.assigned_package(device, t).await
    }
    async fn shared_attributes(&self, device: &Device) -> Result<Map<String, Value>, ServiceError> {
        self.0.ota.shared_attributes(device).await
    }
    async fn read_chunk(
        &self,
        package: &OtaPackage,
        index: u64,
        size: u64,
    ) -> Result<Bytes, ServiceError> {
        self.0.ota.read_chunk(package, index, size).await
    }
    async fn record_telemetry(
        &self,
        device: &Device,
        values: &Map<String, Value>,
    ) -> Result<(), ServiceError> {
        self.0.ota.record_telemetry(device, values).await
    }
    fn subscribe(&self, device: DeviceId) -> broadcast::Receiver<AssignmentEvent> {
        self.0.ota.subscribe(device)
    }
    async fn record_client_attributes(
        &self,
        device: &Device,
        attributes: &Map<String, Value>,
    ) -> Result<(), ServiceError> {
        self.0
            .ota
            .record_client_attributes(device, attributes)
            .await
    }
    async fn client_attributes(
        &self,
        device: &Device,
        keys: Option<&[String]>,
    ) -> Result<Map<String, Value>, ServiceError> {
        self.0.ota.client_attributes(device, keys).await
    }
}

/// The fixture, plus an endpoint serving [`Full`] on its own port.
fn start() -> (Server, String) {
    let s = Server::start(IMAGE);
    let api: Arc<dyn DeviceApi> = Arc::new(Full(s.api.clone()));
    let port = s.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(ota_mqtt::serve(listener, api, MqttConfig::default()));
        port
    });
    (s, port.to_string())
}

/// Runs a client to its end, killing it after 20 s.
fn bounded(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run client");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("client output")
}

fn publish(port: &str, version: &str, payload: &str) -> Output {
    let mut cmd = mosquitto("mosquitto_pub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        port,
        "-V",
        version,
        "-u",
        TOKEN,
        "-t",
        "v1/devices/me/attributes",
        "-q",
        "1",
        "-m",
        payload,
    ]);
    bounded(cmd)
}

/// One attribute request in an MQTT 5 session; returns the response payload.
fn request(port: &str, id: u32, payload: &str) -> String {
    let mut cmd = mosquitto("mosquitto_rr");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        port,
        "-V",
        "mqttv5",
        "-u",
        TOKEN,
        "-t",
        &format!("v1/devices/me/attributes/request/{id}"),
        "-e",
        &format!("v1/devices/me/attributes/response/{id}"),
        "-m",
        payload,
        "-F",
        "%p",
        "-N",
        "-W",
        "10",
    ]);
    let out = bounded(cmd);
    assert!(
        out.status.success(),
        "mosquitto_rr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn stored(s: &Server) -> Map<String, Value> {
    let device = s.device.clone();
    s.block_on(s.ota().client_attributes(&device, None))
        .expect("read client attributes")
}

#[test]
fn published_attributes_come_back_with_shared_ones() {
    let (s, port) = start();
    for (version, payload) in [
        ("mqttv311", r#"{"a":1,"b":"x"}"#),
        ("mqttv5", r#"{"a":2,"c":{"deep":[true]}}"#),
    ] {
        let out = publish(&port, version, payload);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // QoS 1 is acknowledged after the merge: `a` replaced, `b` kept, `c` added.
    assert_eq!(
        request(
            &port,
            1,
            r#"{"clientKeys":"a,b,c,nope","sharedKeys":"fw_title,fw_version"}"#
        ),
        r#"{"client":{"a":2,"b":"x","c":{"deep":[true]}},"shared":{"fw_title":"demo","fw_version":"1.1"}}"#
    );
    // One scope only: the other section is left out; nothing found is `{}`.
    assert_eq!(
        request(&port, 2, r#"{"clientKeys":"b"}"#),
        r#"{"client":{"b":"x"}}"#
    );
    assert_eq!(
        request(&port, 3, r#"{"sharedKeys":"fw_title"}"#),
        r#"{"shared":{"fw_title":"demo"}}"#
    );
    assert_eq!(request(&port, 4, r#"{"clientKeys":"nope"}"#), "{}");
    // Neither: everything of both scopes.
    let all: Value = serde_json::from_str(&request(&port, 5, "{}")).expect("json");
    assert_eq!(all["client"]["a"], 2);
    assert_eq!(all["shared"]["fw_size"], 10);
    assert_eq!(stored(&s).len(), 3);
}

#[test]
fn refused_payloads_store_nothing() {
    let (s, port) = start();
    let out = publish(&port, "mqttv5", r#"{"keep":1}"#);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let huge = format!(r#"{{"big":"{}"}}"#, "x".repeat(5000));
    let many = format!(
        "{{{}}}",
        (0..257)
            .map(|i| format!(r#""k{i}":{i}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    for (payload, reason) in [
        ("[1,2]", "Payload format invalid"),
        ("{\"a\":", "Payload format invalid"),
        (r#"{"n":null}"#, "Payload format invalid"),
        (huge.as_str(), "Payload format invalid"),
        (many.as_str(), "Quota exceeded"),
    ] {
        let out = publish(&port, "mqttv5", payload);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(reason), "{payload:.40}: {err}");
    }
    // MQTT 3.1.1 has no PUBACK reason: a refused payload closes the connection, so the
    // client never sees its publish acknowledged.
    for payload in ["[1,2]", r#"{"n":null}"#] {
        let out = publish(&port, "mqttv311", payload);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("connection was lost"),
            "{payload}: {:?} {err}",
            out.status
        );
    }
    assert_eq!(
        stored(&s),
        serde_json::json!({"keep": 1})
            .as_object()
            .cloned()
            .expect("map")
    );
}
