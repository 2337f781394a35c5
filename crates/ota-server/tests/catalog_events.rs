//! The catalogue event stream (`Ota::catalog_events`): every successful management write
//! through the service emits its event once, in order; a refused write emits nothing.
#![allow(clippy::missing_panics_doc)]

use std::sync::Arc;

use ota_server::blob::BlobStore;
use ota_server::events::CatalogEvent;
use ota_server::model::{
    Device, DeviceId, DeviceProfile, OtaPackage, PackageId, PackageSource, PackageType, ProfileId,
};
use ota_server::service::{Ota, ServiceConfig, UploadMeta, now_ms};
use ota_server::store::{AssignmentChange, SqlStore};
use tokio::sync::broadcast::error::TryRecvError;

async fn service(dir: &std::path::Path) -> Ota {
    let store = SqlStore::connect(&format!("sqlite://{}", dir.join("ota.db").display()))
        .await
        .expect("store");
    let blobs =
        BlobStore::from_url(&format!("file://{}", dir.join("blobs").display())).expect("blobs");
    Ota::new(Arc::new(store), blobs, ServiceConfig::default())
}

#[tokio::test]
async fn management_writes_emit_catalogue_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ota = service(dir.path()).await;
    let mut events = ota.catalog_events();
    let mut prof = DeviceProfile {
        id: ProfileId::new_random(),
        created_time: now_ms(),
        name: "p".into(),
        firmware_id: None,
        software_id: None,
    };
    ota.store().create_profile(&prof).await.expect("profile");
    let pkg = OtaPackage {
        id: PackageId::new_random(),
        created_time: now_ms(),
        profile_id: prof.id,
        package_type: PackageType::Firmware,
        title: "demo".into(),
        version: "1.2.3".into(),
        tag: None,
        source: PackageSource::Pending,
        sming_app_id: Some("demo".into()),
        additional_info: None,
    };
    ota.store().create_package(&pkg).await.expect("package");
    let body =
        futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"image"))]);
    let meta = UploadMeta {
        algorithm: ota_core::checksum::ChecksumAlgorithm::Sha256,
        declared: None,
        file_name: "fw.bin".into(),
        content_type: "application/octet-stream".into(),
    };
    ota.upload(pkg.id, meta, body).await.expect("upload");
    assert_eq!(
        events.try_recv().ok(),
        Some(CatalogEvent::PackageUploaded { package: pkg.id })
    );

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
    assert_eq!(
        events.try_recv().ok(),
        Some(CatalogEvent::DeviceSaved { device: dev.id })
    );

    prof.firmware_id = Some(pkg.id);
    ota.set_profile_packages(&prof).await.expect("assign");
    let change = AssignmentChange {
        device_id: dev.id,
        package_type: PackageType::Firmware,
        old: None,
        new: Some(pkg.id),
    };
    assert_eq!(
        events.try_recv().ok(),
        Some(CatalogEvent::Assignment(change))
    );
    assert_eq!(
        events.try_recv().ok(),
        Some(CatalogEvent::ProfilePackages { profile: prof.id })
    );

    // Refused: the package is in use. Nothing is emitted.
    assert!(ota.delete_package(pkg.id).await.is_err());
    assert_eq!(events.try_recv().err(), Some(TryRecvError::Empty));

    ota.delete_device(dev.id).await.expect("delete device");
    assert_eq!(
        events.try_recv().ok(),
        Some(CatalogEvent::DeviceDeleted { device: dev.id })
    );
    prof.firmware_id = None;
    ota.set_profile_packages(&prof).await.expect("unassign");
    assert_eq!(
        events.try_recv().ok(),
        Some(CatalogEvent::ProfilePackages { profile: prof.id })
    );
    ota.delete_package(pkg.id).await.expect("delete package");
    assert_eq!(
        events.try_recv().ok(),
        Some(CatalogEvent::PackageDeleted { package: pkg.id })
    );
    assert_eq!(events.try_recv().err(), Some(TryRecvError::Empty));
}
