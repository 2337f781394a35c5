//! The real `otad` binary with `[broker]` pointing at a private Mosquitto: the Sming retained
//! announce follows REST assignments (checked by the Sming device emulator, which decodes the
//! patch prefix as Sming does), an EnigmaIoT node emulator gets its assigned firmware and the
//! device's state ends UPDATED, and a broker that cannot be reached or configured is handled.
#![allow(clippy::missing_panics_doc)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::mosquitto::{
    Mosquitto, enigma_node, enigma_node_for, free_port, sha256_hex, sming_device,
};
use common::{FREE_PORTS, Otad, Rest, entity, image};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn with_broker(port: u16, extra: &str) -> String {
    format!(
        "{FREE_PORTS}[broker]\nenabled = true\nurl = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"otad-test-{port}\"\n{extra}"
    )
}

fn assert_installed(report: &Value, image: &[u8], patch: u64) {
    assert_eq!(report["outcome"], "installed", "{report}");
    assert_eq!(report["retain"], true, "{report}");
    assert_eq!(report["patch"], patch, "{report}");
    assert_eq!(report["prefix_len"], 1, "{report}");
    assert_eq!(report["payload_len"], image.len() + 1, "{report}");
    assert_eq!(report["body_len"], image.len(), "{report}");
    assert_eq!(report["body_sha256"], sha256_hex(image), "{report}");
}

#[test]
fn sming_announce_follows_assignments() {
    let broker = Mosquitto::start();
    let mut otad = Otad::start(&with_broker(broker.port, "enigma = false\n"));
    otad.logged(&["Sming announcer connected"], WAIT);
    let rest = Rest::login(&otad.url());
    let profile = rest.profile("sming");
    let older = image(30_000, 21);
    let newer = image(20_001, 22);
    let p7 = rest.package(&profile, "sming-fw", "4.3.7", Some("demo"), &older);
    let p9 = rest.package(&profile, "sming-fw", "4.3.9", Some("demo"), &newer);

    // The profile's firmware is announced even though no device is registered.
    rest.set_profile_firmware(&profile, "sming", Some(&p7));
    otad.wait_log(&["Sming firmware announced", "a/demo/u/4.3", "4.3.7"], WAIT);
    assert_installed(
        &sming_device(broker.port, "demo", "4.3.5", false),
        &older,
        7,
    );

    // A device of the profile gets 4.3.9 of its own: the higher patch wins the topic.
    let device = rest.post(
        "/api/device",
        &json!({"name": "sming-1", "deviceProfileId": entity("DEVICE_PROFILE", &profile),
                "firmwareId": entity("OTA_PACKAGE", &p9)}),
    )["id"]["id"]
        .as_str()
        .expect("device id")
        .to_owned();
    otad.wait_log(&["Sming firmware announced", "4.3.9"], WAIT);
    assert_installed(
        &sming_device(broker.port, "demo", "4.3.5", false),
        &newer,
        9,
    );
    // A device already on patch 9 is offered 9 again (Sming installs equal patches).
    let again = sming_device(broker.port, "demo", "4.3.9", false);
    assert_eq!(again["patch"], 9, "{again}");

    // 4.3.9 unassigned while 4.3.7 still is: the topic is not withdrawn, 4.3.7 replaces it.
    rest.post(
        "/api/device",
        &json!({"id": entity("DEVICE", &device), "name": "sming-1",
                "deviceProfileId": entity("DEVICE_PROFILE", &profile)}),
    );
    let line = otad.wait_log(&["Sming"], WAIT);
    assert!(
        line.contains("Sming firmware announced") && line.contains("4.3.7"),
        "expected 4.3.7 to be announced again, got {line}"
    );
    assert_installed(
        &sming_device(broker.port, "demo", "4.3.0", false),
        &older,
        7,
    );

    // Nothing of the topic assigned any more: the retained message is cleared.
    rest.set_profile_firmware(&profile, "sming", None);
    otad.wait_log(&["Sming announce withdrawn", "a/demo/u/4.3"], WAIT);
    let report = sming_device(broker.port, "demo", "4.3.0", false);
    assert_eq!(report["outcome"], "none", "{report}");
}

#[test]
fn announces_are_republished_after_the_broker_restarts() {
    let mut broker = Mosquitto::start();
    let mut otad = Otad::start(&with_broker(broker.port, "enigma = false\n"));
    let rest = Rest::login(&otad.url());
    let profile = rest.profile("sming-restart");
    let fw = image(10_000, 27);
    let p = rest.package(&profile, "sming-fw", "2.0.3", Some("app/one"), &fw);
    rest.set_profile_firmware(&profile, "sming-restart", Some(&p));
    otad.wait_log(&["Sming firmware announced", "a/app/one/u/2.0"], WAIT);

    // A broker without persistence forgets retained messages when it restarts.
    broker.restart();
    otad.wait_log(&["Sming announcer reconnected"], WAIT);
    otad.wait_log(&["Sming firmware announced", "a/app/one/u/2.0"], WAIT);
    assert_installed(
        &sming_device(broker.port, "app/one", "2.0.0", false),
        &fw,
        3,
    );
}

#[test]
fn enigma_node_gets_the_assigned_firmware() {
    const NET: &str = "enigmaiot";
    const NODE: &str = "aa:bb:cc:00:00:07";
    let broker = Mosquitto::start();
    let node = enigma_node(broker.port, NET, NODE);
    let otad = Otad::start(&with_broker(broker.port, "sming = false\n"));
    let rest = Rest::login(&otad.url());
    // 24 chunks of 212 bytes, the last one partial.
    let fw = image(5_000, 23);
    let profile = rest.profile_with_firmware("enigma", "enigma-fw", "1.4.0", &fw);
    let device = rest.post(
        "/api/device",
        &json!({"name": "node-7", "deviceProfileId": entity("DEVICE_PROFILE", &profile),
                "enigmaIot": {"network": NET, "node": NODE}}),
    )["id"]["id"]
        .as_str()
        .expect("device id")
        .to_owned();

    let report = node.report(Duration::from_secs(45));
    assert_eq!(report["outcome"], "installed", "{report}");
    assert_eq!(report["installed_len"], fw.len(), "{report}");
    assert_eq!(report["installed_sha256"], sha256_hex(&fw), "{report}");
    assert_eq!(report["statuses"], json!([0, 2, 6]), "{report}");
    assert_eq!(report["violations"], json!([]), "{report}");

    let state = rest.wait_for_state(&device, "UPDATED", WAIT);
    assert_eq!(state["currentVersion"], "1.4.0", "{state}");
    assert_eq!(state["targetVersion"], "1.4.0", "{state}");
}

#[test]
fn a_newer_assignment_restarts_the_enigma_transfer() {
    const NET: &str = "enigmaiot";
    const NODE: &str = "aa:bb:cc:00:00:08";
    let broker = Mosquitto::start();
    let node = enigma_node(broker.port, NET, NODE);
    let mut otad = Otad::start(&with_broker(broker.port, "sming = false\n"));
    let rest = Rest::login(&otad.url());
    // 300 chunks at 20 ms: still streaming when the newer package arrives.
    let first = image(63_600, 25);
    let second = image(3_000, 26);
    let profile = rest.profile_with_firmware("enigma-restart", "enigma-fw", "1.0.0", &first);
    let newer = rest.package(&profile, "enigma-fw", "1.1.0", None, &second);
    let device = rest.post(
        "/api/device",
        &json!({"name": "node-8", "deviceProfileId": entity("DEVICE_PROFILE", &profile),
                "enigmaIot": {"network": NET, "node": NODE}}),
    )["id"]["id"]
        .as_str()
        .expect("device id")
        .to_owned();
    otad.wait_log(&["EnigmaIoT OTA starting", "1.0.0"], WAIT);
    rest.wait_for_state(&device, "DOWNLOADING", WAIT);
    rest.post(
        "/api/device",
        &json!({"id": entity("DEVICE", &device), "name": "node-8",
                "deviceProfileId": entity("DEVICE_PROFILE", &profile),
                "firmwareId": entity("OTA_PACKAGE", &newer),
                "enigmaIot": {"network": NET, "node": NODE}}),
    );
    otad.wait_log(&["EnigmaIoT OTA cancelled"], WAIT);
    otad.wait_log(&["EnigmaIoT OTA starting", "1.1.0"], WAIT);

    // The node timed out on the first image (status 5, reboot), then took the second.
    let report = node.report(Duration::from_secs(45));
    assert_eq!(report["outcome"], "installed", "{report}");
    assert_eq!(report["installed_sha256"], sha256_hex(&second), "{report}");
    assert_eq!(report["statuses"], json!([0, 5, 0, 2, 6]), "{report}");
    assert_eq!(report["violations"], json!([]), "{report}");
    let state = rest.wait_for_state(&device, "UPDATED", WAIT);
    assert_eq!(state["currentVersion"], "1.1.0", "{state}");
}

#[test]
fn a_withdrawn_assignment_cancels_the_enigma_transfer() {
    const NET: &str = "enigmaiot";
    const NODE: &str = "aa:bb:cc:00:00:09";
    let broker = Mosquitto::start();
    // Long enough for the node's 10 s OTA timeout after the transfer stops.
    let node = enigma_node_for(broker.port, NET, NODE, 16);
    let mut otad = Otad::start(&with_broker(broker.port, "sming = false\n"));
    let rest = Rest::login(&otad.url());
    let fw = image(63_600, 28);
    let profile = rest.profile_with_firmware("enigma-withdraw", "enigma-fw", "3.0.0", &fw);
    let device = rest.post(
        "/api/device",
        &json!({"name": "node-9", "deviceProfileId": entity("DEVICE_PROFILE", &profile),
                "enigmaIot": {"network": NET, "node": NODE}}),
    )["id"]["id"]
        .as_str()
        .expect("device id")
        .to_owned();
    rest.wait_for_state(&device, "DOWNLOADING", WAIT);
    rest.set_profile_firmware(&profile, "enigma-withdraw", None);
    let line = otad.wait_log(&["EnigmaIoT OTA cancelled"], WAIT);
    assert!(line.contains("withdrawn"), "{line}");

    // Nothing more is sent: the node times out (status 5) and installs nothing.
    let report = node.report(Duration::from_secs(30));
    assert_eq!(report["outcome"], "not-installed", "{report}");
    assert_eq!(report["statuses"], json!([0, 5]), "{report}");
    assert_eq!(report["headers"], 1, "{report}");
    assert_eq!(report["violations"], json!([]), "{report}");
}

#[test]
fn unreachable_broker_is_logged_and_retried_while_otad_serves() {
    let port = free_port();
    let mut otad = Otad::start(&with_broker(port, ""));
    let broker = format!("127.0.0.1:{port}");
    let first = otad.logged(&["cannot connect to the MQTT broker"], WAIT);
    assert!(
        first.contains(&broker) && first.contains("ERROR"),
        "{first}"
    );
    // Retried (back-off starts at 1 s).
    otad.wait_log(&["cannot connect to the MQTT broker", &broker], WAIT);

    // The REST API and the device API keep working.
    let rest = Rest::login(&otad.url());
    let fw = image(1_000, 24);
    let profile = rest.profile_with_firmware("no-broker", "fw", "2.0.0", &fw);
    rest.device(&profile, "plain", "plain-token");
    let attrs: Value = reqwest::blocking::get(format!(
        "{}/api/v1/plain-token/attributes?sharedKeys=fw_version",
        otad.url()
    ))
    .expect("device API")
    .json()
    .expect("json");
    assert_eq!(attrs["shared"]["fw_version"], "2.0.0", "{attrs}");
}

#[test]
fn unusable_broker_settings_stop_otad_with_a_config_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_otad"))
            .args(args)
            .current_dir(dir.path())
            .env("OTAD_ADMIN_PASSWORD", "pw")
            .env("OTAD_LISTEN", "127.0.0.1:0")
            .envs(env.iter().copied())
            .output()
            .expect("run otad");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--broker-url", "mqtts://127.0.0.1:8883"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("broker.url") && err.contains("mqtts"), "{err}");
    let (code, err) = run(&[], &[("OTAD_BROKER_URL", "mqtt://127.0.0.1:1883/a/b")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("broker.url"), "{err}");
    let (code, err) = run(
        &[
            "--broker-url",
            "mqtt://127.0.0.1:1",
            "--broker-client-id",
            "",
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("broker.client_id"), "{err}");
}
