//! A private Mosquitto broker and the Python emulators (`mosquitto.rs`, shared with `otad`'s
//! tests), and a real `Ota` service to drive the dialects from.
#![allow(dead_code, clippy::missing_panics_doc)]

mod mosquitto;

pub use mosquitto::*;

use std::sync::Arc;

use bytes::Bytes;
use ota_core::checksum::ChecksumAlgorithm;
use ota_server::blob::BlobStore;
use ota_server::model::{
    DeviceProfile, OtaPackage, PackageId, PackageSource, PackageType, ProfileId,
};
use ota_server::service::{Ota, ServiceConfig, UploadMeta, now_ms};
use ota_server::store::SqlStore;

/// A deterministic pseudo-random image.
pub fn image(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// A real `Ota` service on SQLite and a local blob directory under `dir`, with one profile.
pub async fn service(dir: &std::path::Path) -> (Ota, ProfileId) {
    let store = SqlStore::connect(&format!("sqlite://{}", dir.join("ota.db").display()))
        .await
        .expect("store");
    let blobs = BlobStore::local(&dir.join("blobs")).expect("blobs");
    let ota = Ota::new(Arc::new(store), blobs, ServiceConfig::default());
    let profile = DeviceProfile {
        id: ProfileId::new_random(),
        created_time: now_ms(),
        name: "sming".into(),
        firmware_id: None,
        software_id: None,
    };
    ota.store().create_profile(&profile).await.expect("profile");
    (ota, profile.id)
}

/// Creates and uploads a firmware package.
pub async fn package(
    ota: &Ota,
    profile: ProfileId,
    version: &str,
    app: Option<&str>,
    bytes: &[u8],
) -> OtaPackage {
    let p = OtaPackage {
        id: PackageId::new_random(),
        created_time: now_ms(),
        profile_id: profile,
        package_type: PackageType::Firmware,
        title: "sming-fw".into(),
        version: version.into(),
        tag: None,
        source: PackageSource::Pending,
        sming_app_id: app.map(str::to_owned),
        additional_info: None,
    };
    ota.store()
        .create_package(&p)
        .await
        .expect("create package");
    let meta = UploadMeta {
        algorithm: ChecksumAlgorithm::Sha256,
        declared: None,
        file_name: "rom0.bin".into(),
        content_type: "application/octet-stream".into(),
    };
    let body =
        futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::copy_from_slice(bytes))]);
    ota.upload(p.id, meta, body).await.expect("upload")
}
