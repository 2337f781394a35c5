//! The lookup cache in front of the store: writes through a service are seen at once, a
//! change made by another replica (no notification) is seen within the cache's life, and
//! unknown tokens are never remembered.
#![allow(clippy::missing_panics_doc)]

use std::sync::Arc;
use std::time::Duration;

use ota_server::blob::BlobStore;
use ota_server::model::{
    Device, DeviceId, DeviceProfile, OtaPackage, PackageId, PackageSource, PackageType, ProfileId,
};
use ota_server::service::{DeviceApi, Ota, ServiceConfig, UploadMeta, now_ms};
use ota_server::store::SqlStore;

const TTL: Duration = Duration::from_millis(300);

async fn replica(dir: &std::path::Path) -> Ota {
    let store = SqlStore::connect(&format!("sqlite://{}", dir.join("ota.db").display()))
        .await
        .expect("store");
    let blobs =
        BlobStore::from_url(&format!("file://{}", dir.join("blobs").display())).expect("blobs");
    Ota::new(
        Arc::new(store),
        blobs,
        ServiceConfig {
            lookup_cache_ttl: TTL,
            ..ServiceConfig::default()
        },
    )
}

async fn setup(ota: &Ota) -> (DeviceProfile, Device) {
    let prof = DeviceProfile {
        id: ProfileId::new_random(),
        created_time: now_ms(),
        name: "p".into(),
        firmware_id: None,
        software_id: None,
    };
    ota.store().create_profile(&prof).await.expect("profile");
    let dev = Device {
        id: DeviceId::new_random(),
        created_time: now_ms(),
        name: "d".into(),
        profile_id: prof.id,
        access_token: "token-a".into(),
        firmware_id: None,
        software_id: None,
        enigma: None,
    };
    ota.create_device(&dev).await.expect("device");
    (prof, dev)
}

async fn uploaded(ota: &Ota, prof: &DeviceProfile, version: &str) -> OtaPackage {
    let p = OtaPackage {
        id: PackageId::new_random(),
        created_time: now_ms(),
        profile_id: prof.id,
        package_type: PackageType::Firmware,
        title: "demo".into(),
        version: version.into(),
        tag: None,
        source: PackageSource::Pending,
        sming_app_id: None,
        additional_info: None,
    };
    ota.store().create_package(&p).await.expect("package");
    let body =
        futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"image"))]);
    ota.upload(
        p.id,
        UploadMeta {
            algorithm: ota_core::checksum::ChecksumAlgorithm::Sha256,
            declared: None,
            file_name: "fw.bin".into(),
            content_type: "application/octet-stream".into(),
        },
        body,
    )
    .await
    .expect("upload")
}

#[tokio::test]
async fn writes_through_the_service_are_seen_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ota = replica(dir.path()).await;
    let (mut prof, dev) = setup(&ota).await;
    let d = ota
        .authenticate("token-a")
        .await
        .expect("auth")
        .expect("known");
    assert!(
        ota.assigned_package(&d, PackageType::Firmware)
            .await
            .expect("lookup")
            .is_none()
    );

    // A new profile default is seen by the next lookup, not after the cache's life.
    let pkg = uploaded(&ota, &prof, "1.1").await;
    prof.firmware_id = Some(pkg.id);
    ota.set_profile_packages(&prof).await.expect("assign");
    let got = ota
        .assigned_package(&d, PackageType::Firmware)
        .await
        .expect("lookup")
        .expect("assigned");
    assert_eq!(got.id, pkg.id);
    assert!(got.data().is_some(), "the uploaded data is visible");

    // A new token replaces the old one at once.
    ota.store()
        .set_device_token(dev.id, "token-b")
        .await
        .expect("new token");
    assert!(ota.authenticate("token-a").await.expect("auth").is_none());
    assert!(ota.authenticate("token-b").await.expect("auth").is_some());

    // A deleted device is refused at once.
    ota.store().delete_device(dev.id).await.expect("delete");
    assert!(ota.authenticate("token-b").await.expect("auth").is_none());
}

#[tokio::test]
async fn another_replicas_change_is_seen_within_the_cache_life() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = replica(dir.path()).await;
    let b = replica(dir.path()).await;
    let (_prof, dev) = setup(&a).await;
    assert!(b.authenticate("token-a").await.expect("auth").is_some());

    a.store()
        .set_device_token(dev.id, "token-b")
        .await
        .expect("new token on A");
    // B sees the new token at once (misses are never cached) …
    assert!(b.authenticate("token-b").await.expect("auth").is_some());
    // … and stops accepting the old one once its cached row expires.
    tokio::time::sleep(TTL + Duration::from_millis(50)).await;
    assert!(b.authenticate("token-a").await.expect("auth").is_none());

    // Explicit invalidation forgets at once: B caches token-b afresh, A replaces it, B
    // still holds the row until told to forget.
    assert!(b.authenticate("token-b").await.expect("auth").is_some());
    a.store()
        .set_device_token(dev.id, "token-c")
        .await
        .expect("token on A");
    assert!(b.authenticate("token-b").await.expect("auth").is_some());
    b.invalidate_cache();
    assert!(b.authenticate("token-b").await.expect("auth").is_none());
}

#[tokio::test]
async fn a_zero_life_disables_the_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = replica(dir.path()).await;
    let store = SqlStore::connect(&format!("sqlite://{}", dir.path().join("ota.db").display()))
        .await
        .expect("store");
    let b = Ota::new(
        Arc::new(store),
        BlobStore::from_url(&format!("file://{}", dir.path().join("blobs").display()))
            .expect("blobs"),
        ServiceConfig {
            lookup_cache_ttl: Duration::ZERO,
            ..ServiceConfig::default()
        },
    );
    let (_prof, dev) = setup(&a).await;
    assert!(b.authenticate("token-a").await.expect("auth").is_some());
    a.store()
        .set_device_token(dev.id, "token-b")
        .await
        .expect("new token on A");
    assert!(b.authenticate("token-a").await.expect("auth").is_none());
}
