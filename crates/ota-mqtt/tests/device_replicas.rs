//! Two `Ota` replicas on one PostgreSQL (assignment fan-out through LISTEN/NOTIFY), each with
//! its own MQTT endpoint: an assignment made through replica A is pushed to a device
//! connected to replica B, which then updates from B.
#![cfg(feature = "device")]

mod common;
// The PostgreSQL helper of ota-server's behaviour suite (a private cluster on a free port,
// or `OTA_TEST_DATABASE_URL`).
#[path = "../../ota-server/tests/common/mod.rs"]
mod pg;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::image;
use ota_core::checksum::ChecksumAlgorithm;
use ota_core::updater::{Config, Kind};
use ota_mqtt::MqttConfig;
use ota_mqtt::device::{LinkOptions, MemoryCheckpoints, MemorySlot, MqttDevice, Outcome};
use ota_server::blob::BlobStore;
use ota_server::model::{
    Device, DeviceId, DeviceProfile, OtaPackage, PackageId, PackageSource, PackageType, ProfileId,
};
use ota_server::service::{DeviceApi, Ota, ServiceConfig, UploadMeta, now_ms};
use ota_server::store::SqlStore;

async fn replica(url: &str, blobs: &std::path::Path, namespace: &str) -> (Arc<Ota>, u16) {
    let store = SqlStore::connect(url).await.expect("store");
    let pool = store.pg_pool().expect("postgres").clone();
    let ota = Arc::new(Ota::new(
        Arc::new(store),
        BlobStore::local(blobs).expect("blobs"),
        ServiceConfig::default(),
    ));
    ota.enable_pg_fanout(pool, namespace)
        .await
        .expect("fan-out");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let api: Arc<dyn DeviceApi> = ota.clone();
    tokio::spawn(ota_mqtt::serve(listener, api, MqttConfig::default()));
    (ota, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignment_through_one_replica_reaches_a_device_on_the_other() {
    let url = pg::postgres_schema_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let namespace = format!("m{}", uuid::Uuid::new_v4().simple());
    let (a, _) = replica(&url, &dir.path().join("blobs"), &namespace).await;
    let (_b, b_port) = replica(&url, &dir.path().join("blobs"), &namespace).await;

    let profile = DeviceProfile {
        id: ProfileId::new_random(),
        created_time: now_ms(),
        name: "default".into(),
        firmware_id: None,
        software_id: None,
    };
    a.store().create_profile(&profile).await.expect("profile");
    let mut dev = Device {
        id: DeviceId::new_random(),
        created_time: now_ms(),
        name: "dev".into(),
        profile_id: profile.id,
        access_token: "REPLICA-TOKEN".into(),
        firmware_id: None,
        software_id: None,
        enigma: None,
    };
    a.create_device(&dev).await.expect("device");
    let img = image(40_000, 21);
    let pkg = OtaPackage {
        id: PackageId::new_random(),
        created_time: now_ms(),
        profile_id: profile.id,
        package_type: PackageType::Firmware,
        title: "demo".into(),
        version: "1.1".into(),
        tag: None,
        source: PackageSource::Pending,
        sming_app_id: None,
        additional_info: None,
    };
    a.store().create_package(&pkg).await.expect("package");
    let meta = UploadMeta {
        algorithm: ChecksumAlgorithm::Sha256,
        declared: None,
        file_name: "demo.bin".into(),
        content_type: "application/octet-stream".into(),
    };
    let body = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(img.clone()))]);
    a.upload(pkg.id, meta, body).await.expect("upload");

    // The device sits on replica B with nothing assigned yet.
    let mut device = MqttDevice::new(
        "127.0.0.1",
        b_port,
        "REPLICA-TOKEN",
        Kind::Firmware,
        Config::new(4096, 1 << 20),
    )
    .running("demo", "1.0")
    .link_options(LinkOptions::default());
    assert_eq!(device.fetch_offer().await.expect("attributes"), None);

    // Assigned through replica A; B hears it and pushes it to the device.
    dev.firmware_id = Some(pkg.id);
    a.update_device(&dev).await.expect("assign on A");
    let offer = device
        .wait_for_push(Duration::from_secs(20))
        .await
        .expect("push")
        .expect("an offer was pushed");
    assert_eq!(
        (offer.title.as_str(), offer.version.as_str()),
        ("demo", "1.1")
    );
    assert_eq!(offer.size, 40_000);

    let mut slot = MemorySlot::new(1 << 20);
    let mut checkpoints = MemoryCheckpoints::default();
    let out = device
        .download(&offer, &mut slot, &mut checkpoints)
        .await
        .expect("download from B");
    assert_eq!(
        out,
        Outcome::Installed {
            title: "demo".into(),
            version: "1.1".into()
        }
    );
    assert_eq!(&slot.bytes[..img.len()], &img[..]);
    device.close().await;
}
