//! The fleet's server, in process: the OTA service on its embedded default (SQLite file and
//! local blob directory in a temporary directory) behind ThingsBoard's HTTP, CoAP and MQTT
//! device APIs on loopback, provisioned with the fleet's devices and firmware.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use ota_core::checksum::ChecksumAlgorithm;
use ota_server::blob::{BlobError, BlobStore};
use ota_server::model::{
    Device, DeviceId, DeviceProfile, OtaPackage, PackageId, PackageSource, PackageType, ProfileId,
};
use ota_server::service::{DeviceApi, Ota, ServiceConfig, ServiceError, UploadMeta, now_ms};
use ota_server::store::{SqlStore, StoreError};
use tokio::task::JoinHandle;

use crate::device::TITLE;
use crate::firmware::{self, BuildError};
use crate::transport::{Endpoints, TransportKind};

/// Name of the fleet's device profile.
pub const PROFILE: &str = "fleet";
/// The version every healthy device is offered (its self-test passes).
pub const GOOD_VERSION: &str = "1.1.0";
/// The version the failing devices are offered (its self-test fails).
pub const BAD_VERSION: &str = "1.2.0";

/// Why the server could not start.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The temporary data directory or a socket failed.
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The blob store failed.
    #[error("blob store: {0}")]
    Blob(#[from] BlobError),
    /// Provisioning failed.
    #[error("service: {0}")]
    Service(#[from] ServiceError),
    /// A firmware image could not be built.
    #[error("firmware: {0}")]
    Image(#[from] BuildError),
}

/// One provisioned device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Position in the fleet.
    pub index: usize,
    /// Access token.
    pub token: String,
    /// Server-side id.
    pub id: DeviceId,
    /// Transport the device speaks.
    pub transport: TransportKind,
    /// Whether the device is assigned the image whose self-test fails.
    pub failing: bool,
}

/// Who is in the fleet: device `i` speaks `TransportKind::ALL[i % n]`, and the last
/// `failing` devices (so every transport gets some when there are enough) are assigned
/// the failing image.
pub fn members(devices: usize, failing: usize) -> Vec<Member> {
    (0..devices)
        .map(|index| {
            let transport = TransportKind::ALL[index % TransportKind::ALL.len()];
            let failing = index + failing >= devices;
            Member {
                index,
                token: format!(
                    "fleet-{}-{index:03}{}",
                    transport.slug(),
                    if failing { "-bad" } else { "" }
                ),
                id: DeviceId::new_random(),
                transport,
                failing,
            }
        })
        .collect()
}

/// The running server; its listeners stop when it is dropped.
pub struct FleetServer {
    /// The service (the store holds the recorded update states).
    pub ota: Arc<Ota>,
    /// Where it listens.
    pub endpoints: Endpoints,
    tasks: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for FleetServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn create_package(
    ota: &Ota,
    profile: ProfileId,
    version: &str,
    self_test_passes: bool,
    image_len: usize,
) -> Result<OtaPackage, ServerError> {
    let p = OtaPackage {
        id: PackageId::new_random(),
        created_time: now_ms(),
        profile_id: profile,
        package_type: PackageType::Firmware,
        title: TITLE.into(),
        version: version.into(),
        tag: None,
        source: PackageSource::Pending,
        sming_app_id: None,
        additional_info: None,
    };
    ota.store().create_package(&p).await?;
    let meta = UploadMeta {
        algorithm: ChecksumAlgorithm::Sha256,
        declared: None,
        file_name: format!("{TITLE}-{version}.bin"),
        content_type: "application/octet-stream".into(),
    };
    let bytes = Bytes::from(firmware::build(version, self_test_passes, image_len)?);
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes)]);
    Ok(ota.upload(p.id, meta, body).await?)
}

/// Starts the service in a new temporary directory, provisions `fleet` (profile default
/// [`GOOD_VERSION`], failing members assigned [`BAD_VERSION`], images of `image_len` bytes)
/// and serves HTTP, CoAP and MQTT on `127.0.0.1`, ephemeral ports.
pub async fn start(fleet: &[Member], image_len: usize) -> Result<FleetServer, ServerError> {
    let dir = tempfile::Builder::new().prefix("ota-fleet-").tempdir()?;
    let blobs = dir.path().join("blobs");
    std::fs::create_dir_all(&blobs)?;
    let store =
        SqlStore::connect(&format!("sqlite://{}", dir.path().join("ota.db").display())).await?;
    let blobs = BlobStore::from_url(&format!("file://{}", blobs.display()))?;
    let ota = Arc::new(Ota::new(Arc::new(store), blobs, ServiceConfig::default()));
    let mut profile = DeviceProfile {
        id: ProfileId::new_random(),
        created_time: now_ms(),
        name: PROFILE.into(),
        firmware_id: None,
        software_id: None,
    };
    ota.store().create_profile(&profile).await?;
    let good = create_package(&ota, profile.id, GOOD_VERSION, true, image_len).await?;
    let bad = create_package(&ota, profile.id, BAD_VERSION, false, image_len).await?;
    profile.firmware_id = Some(good.id);
    ota.set_profile_packages(&profile).await?;
    for m in fleet {
        let device = Device {
            id: m.id,
            created_time: now_ms(),
            name: m.token.clone(),
            profile_id: profile.id,
            access_token: m.token.clone(),
            firmware_id: m.failing.then_some(bad.id),
            software_id: None,
            enigma: None,
        };
        ota.create_device(&device).await?;
    }
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let tcp = tokio::net::TcpListener::bind(loopback).await?;
    let udp = tokio::net::UdpSocket::bind(loopback).await?;
    let mqtt_listener = tokio::net::TcpListener::bind(loopback).await?;
    let endpoints = Endpoints {
        http: tcp.local_addr()?,
        coap: udp.local_addr()?,
        mqtt: mqtt_listener.local_addr()?,
    };
    let app = ota_http::router(ota.clone());
    let http = tokio::spawn(async move {
        if let Err(e) = axum::serve(tcp, app).await {
            eprintln!("HTTP server stopped: {e}");
        }
    });
    let coap = tokio::spawn({
        let ota = ota.clone();
        async move {
            if let Err(e) = ota_coap::server::serve(udp, ota).await {
                eprintln!("CoAP server stopped: {e}");
            }
        }
    });
    let api: Arc<dyn DeviceApi> = ota.clone();
    let mqtt = tokio::spawn(ota_mqtt::serve(
        mqtt_listener,
        api,
        ota_mqtt::MqttConfig::default(),
    ));
    Ok(FleetServer {
        ota,
        endpoints,
        tasks: vec![http, coap, mqtt],
        _dir: dir,
    })
}

#[cfg(test)]
mod tests {
    use super::members;
    use crate::transport::TransportKind;

    #[test]
    fn failing_members_are_spread_over_transports() {
        let fleet = members(50, 5);
        assert_eq!(fleet.len(), 50);
        assert_eq!(fleet.iter().filter(|m| m.failing).count(), 5);
        // 50 over HTTP, CoAP, MQTT round-robin: 17, 17, 16.
        for (t, n) in TransportKind::ALL.into_iter().zip([17, 17, 16]) {
            assert_eq!(fleet.iter().filter(|m| m.transport == t).count(), n, "{t}");
            assert!(fleet.iter().any(|m| m.failing && m.transport == t), "{t}");
        }
        let mut tokens: Vec<_> = fleet.iter().map(|m| m.token.as_str()).collect();
        tokens.sort_unstable();
        tokens.dedup();
        assert_eq!(tokens.len(), 50);
    }
}
