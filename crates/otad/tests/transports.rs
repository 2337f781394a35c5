//! The real `otad` binary as the device endpoint of every transport: one process on free
//! loopback ports reports each bound port on stdout, and a device updates over HTTP (this
//! workspace's HTTP device client), CoAP (libcoap's `coap-client-notls`) and MQTT (Debian's
//! `mosquitto_rr`, the access token as user name) against it.
#![allow(clippy::missing_panics_doc, clippy::too_many_lines)]

mod common;

use std::time::{Duration, Instant};

use common::{FREE_PORTS, Otad, Rest, image, tool};
use ota_core::updater::{Config, Kind};
use ota_http::device::{HttpDevice, MemoryCheckpoints, MemorySlot, Outcome};
use serde_json::Value;

const TITLE: &str = "otad-fw";
const VERSION: &str = "2.0.0";
const LEN: usize = 30_000;

/// `otaState` of a device once its firmware state reads `want` (progress is written within
/// a few seconds).
fn wait_for_state(rest: &Rest, device: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let states = rest.get(&format!("/api/device/{device}/otaState"));
        let fw = states
            .as_array()
            .and_then(|a| a.iter().find(|s| s["type"] == "FIRMWARE"))
            .cloned()
            .expect("firmware state");
        if fw["state"] == want {
            return fw;
        }
        assert!(
            Instant::now() < deadline,
            "state never reached {want}: {fw}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn otad_reports_its_ports_and_updates_devices_over_every_transport() {
    let otad = Otad::start(FREE_PORTS);
    let coap = otad.coap.expect("CoAP port on stdout");
    let mqtt = otad.mqtt.expect("MQTT port on stdout");
    assert!(
        coap.port() != 0 && mqtt.port() != 0 && otad.rest.port() != 0,
        "bound ports, not the configured 0: {:?}",
        otad.log
    );
    assert_eq!(otad.http, None, "HTTP device API shares the REST server");
    assert_eq!(otad.mqtt_tls, None, "TLS is off unless configured");

    let rest = Rest::login(&otad.url());
    let fw = image(LEN, 6);
    let profile = rest.profile_with_firmware("transports", TITLE, VERSION, &fw);
    let http_dev = rest.device(&profile, "by-http", "http-token");
    rest.device(&profile, "by-coap", "coap-token");
    rest.device(&profile, "by-mqtt", "mqtt-token");

    // HTTP: the workspace's device client, through ota-core's updater, to a confirmed boot.
    let mut device = HttpDevice::new(
        &otad.url(),
        "http-token",
        Kind::Firmware,
        Config::new(4096, 1 << 16),
    )
    .running(TITLE, "1.0.0");
    let mut slot = MemorySlot::new(1 << 16);
    let mut checkpoints = MemoryCheckpoints::default();
    let outcome = device
        .update(&mut slot, &mut checkpoints)
        .expect("HTTP update");
    let Outcome::Installed { title, version } = outcome else {
        panic!("HTTP device was not updated: {outcome:?}");
    };
    assert_eq!((title.as_str(), version.as_str()), (TITLE, VERSION));
    assert!(
        slot.finalized && slot.bytes[..LEN] == fw[..],
        "slot holds the image"
    );
    device
        .report_boot(&title, &version, true)
        .expect("report boot");
    let state = wait_for_state(&rest, &http_dev, "UPDATED");
    assert_eq!(state["currentVersion"], VERSION, "{state}");

    // CoAP: libcoap's client reads the attributes, then the image block-wise.
    let dir = tempfile::tempdir().expect("tempdir");
    let fetch = |url: &str| {
        let out = dir.path().join("coap.out");
        let _ = std::fs::remove_file(&out);
        let o = tool("coap-client-notls", "libcoap3-bin")
            .args(["-m", "get", "-b", "1024", "-B", "10", "-o"])
            .arg(&out)
            .arg(url)
            .output()
            .expect("run coap-client-notls");
        assert!(
            o.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::read(&out).expect("coap-client output")
    };
    let attrs: Value = serde_json::from_slice(&fetch(&format!(
        "coap://{coap}/api/v1/coap-token/attributes?sharedKeys=fw_title,fw_version,fw_size"
    )))
    .expect("attributes JSON");
    assert_eq!(attrs["shared"]["fw_version"], VERSION, "{attrs}");
    assert_eq!(attrs["shared"]["fw_size"], LEN, "{attrs}");
    let got = fetch(&format!(
        "coap://{coap}/fw/coap-token?title={TITLE}&version={VERSION}"
    ));
    assert_eq!(got.len(), LEN);
    assert!(got == fw, "CoAP image bytes differ");

    // MQTT: attributes and a chunk, each answered on the asking session.
    let rr = |request: &str, payload: &str, response: &str| {
        let o = tool("mosquitto_rr", "mosquitto-clients")
            .args(["-h", "127.0.0.1", "-p", &mqtt.port().to_string()])
            .args(["-u", "mqtt-token", "-V", "mqttv5", "-W", "10", "-N"])
            .args(["-t", request, "-m", payload, "-e", response, "-F", "%x"])
            .output()
            .expect("run mosquitto_rr");
        assert!(
            o.status.success(),
            "{request}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let hex = String::from_utf8(o.stdout).expect("hex output");
        (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
            .collect::<Vec<u8>>()
    };
    let attrs: Value = serde_json::from_slice(&rr(
        "v1/devices/me/attributes/request/1",
        r#"{"sharedKeys":"fw_title,fw_version,fw_size"}"#,
        "v1/devices/me/attributes/response/1",
    ))
    .expect("attributes JSON");
    assert_eq!(attrs["shared"]["fw_title"], TITLE, "{attrs}");
    assert_eq!(attrs["shared"]["fw_size"], LEN, "{attrs}");
    let chunk = rr(
        "v2/fw/request/7/chunk/2",
        "4096",
        "v2/fw/response/7/chunk/2",
    );
    assert_eq!(chunk.len(), 4096);
    assert!(
        chunk[..] == fw[2 * 4096..3 * 4096],
        "MQTT chunk bytes differ"
    );
}

#[test]
fn transports_can_be_moved_or_turned_off() {
    let otad = Otad::start(
        "[http]\nlisten = \"127.0.0.1:0\"\n[coap]\nenabled = false\n[mqtt]\nenabled = false\n",
    );
    let http = otad.http.expect("HTTP device API port on stdout");
    assert_ne!(http, otad.rest);
    assert_eq!((otad.coap, otad.mqtt), (None, None), "{:?}", otad.log);
    let client = reqwest::blocking::Client::new();
    // The device API is on its own port, not on the REST server.
    let on_own = client
        .get(format!("http://{http}/api/v1/nobody/attributes"))
        .send()
        .expect("device API");
    assert_eq!(on_own.status(), reqwest::StatusCode::UNAUTHORIZED);
    let on_rest = client
        .get(format!("{}/api/v1/nobody/attributes", otad.url()))
        .send()
        .expect("REST server");
    assert_eq!(on_rest.status(), reqwest::StatusCode::NOT_FOUND);
}
