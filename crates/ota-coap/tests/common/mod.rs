//! A real service (SQLite in a temp dir, local blobs) behind a real UDP CoAP server.
#![allow(dead_code, clippy::missing_panics_doc)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use ota_core::checksum::ChecksumAlgorithm;
use ota_server::blob::BlobStore;
use ota_server::model::{
    Device, DeviceId, DeviceProfile, OtaPackage, PackageId, PackageSource, PackageType, ProfileId,
};
use ota_server::service::{DeviceApi, Ota, ServiceConfig, UploadMeta, now_ms};
use ota_server::store::SqlStore;

pub const TOKEN: &str = "TOKEN";
pub const BARE: &str = "BARE";

pub struct Env {
    pub ota: Arc<Ota>,
    pub addr: SocketAddr,
    pub image: Vec<u8>,
    pub package: OtaPackage,
    pub device: Device,
    _dir: tempfile::TempDir,
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s.to_le_bytes()[3]
        })
        .collect()
}

/// A service with device `TOKEN` assigned firmware `demo`/`1.1` = `image`, a device `BARE`
/// with nothing assigned, and the CoAP server on 127.0.0.1:0.
pub async fn env(image: Vec<u8>) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqlStore::connect(&format!("sqlite://{}", dir.path().join("ota.db").display()))
        .await
        .expect("store");
    let blobs = BlobStore::from_url(&format!("file://{}", dir.path().join("blobs").display()))
        .expect("blobs");
    let ota = Arc::new(Ota::new(Arc::new(store), blobs, ServiceConfig::default()));
    let profile = DeviceProfile {
        id: ProfileId::new_random(),
        created_time: now_ms(),
        name: "p".into(),
        firmware_id: None,
        software_id: None,
    };
    ota.store().create_profile(&profile).await.expect("profile");
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
    ota.store().create_package(&pkg).await.expect("package");
    let meta = UploadMeta {
        algorithm: ChecksumAlgorithm::Sha256,
        declared: None,
        file_name: "demo.bin".into(),
        content_type: "application/octet-stream".into(),
    };
    let body =
        futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(image.clone()))]);
    let package = ota.upload(pkg.id, meta, body).await.expect("upload");
    let mk = |name: &str, token: &str, fw: Option<PackageId>| Device {
        id: DeviceId::new_random(),
        created_time: now_ms(),
        name: name.into(),
        profile_id: profile.id,
        access_token: token.into(),
        firmware_id: fw,
        software_id: None,
        enigma: None,
    };
    let device = mk("d1", TOKEN, Some(package.id));
    ota.create_device(&device).await.expect("device");
    ota.create_device(&mk("d2", BARE, None))
        .await
        .expect("bare device");
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    let api: Arc<dyn DeviceApi> = ota.clone();
    tokio::spawn(ota_coap::server::serve(socket, api));
    Env {
        ota,
        addr,
        image,
        package,
        device,
        _dir: dir,
    }
}

/// libcoap's command-line client, or a failure that says how to install it.
pub fn coap_client() -> &'static str {
    for bin in ["coap-client-notls", "coap-client"] {
        if std::process::Command::new(bin).arg("-h").output().is_ok() {
            return bin;
        }
    }
    panic!(
        "libcoap's coap-client is missing: run scripts/setup-test-deps.sh (Debian package libcoap3-bin)"
    );
}
