//! The real `otad` on the scale-out storage — PostgreSQL (a private cluster on a free port,
//! or `OTA_TEST_DATABASE_URL`) and S3 (a moto server) — serving a device over HTTP and MQTT.
#![allow(clippy::missing_panics_doc)]

mod common;
#[path = "../../ota-server/tests/common/mod.rs"]
mod services;

use common::{FREE_PORTS, Otad, Rest, image, tool};
use ota_core::updater::{Config, Kind};
use ota_http::device::{HttpDevice, MemoryCheckpoints, MemorySlot, Outcome};

#[test]
fn otad_on_postgres_and_s3_serves_devices() {
    let db = services::postgres_schema_url();
    let blobs = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(services::s3_blob_url());
    let otad = Otad::start_on(Some((&db, &blobs)), FREE_PORTS);
    let rest = Rest::login(&otad.url());
    let fw = image(20_000, 9);
    let profile = rest.profile_with_firmware("scale-out", "so-fw", "4.0.0", &fw);
    rest.device(&profile, "so-device", "so-token");

    let mut device = HttpDevice::new(
        &otad.url(),
        "so-token",
        Kind::Firmware,
        Config::new(4096, 1 << 15),
    )
    .running("so-fw", "3.0.0");
    let mut slot = MemorySlot::new(1 << 15);
    let outcome = device
        .update(&mut slot, &mut MemoryCheckpoints::default())
        .expect("HTTP update");
    assert!(
        matches!(outcome, Outcome::Installed { .. }),
        "not updated: {outcome:?}"
    );
    assert!(
        slot.bytes[..fw.len()] == fw[..],
        "slot holds the image from S3"
    );

    let mqtt = otad.mqtt.expect("MQTT port on stdout");
    let out = tool("mosquitto_rr", "mosquitto-clients")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &mqtt.port().to_string(),
            "-u",
            "so-token",
        ])
        .args(["-t", "v2/fw/request/1/chunk/4", "-m", "4096"])
        .args(["-e", "v2/fw/response/1/chunk/4", "-N", "-W", "10"])
        .output()
        .expect("run mosquitto_rr");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == fw[4 * 4096..], "last chunk, short, from S3");
}
