//! A real `Ota` service on SQLite + a local blob directory in a temp dir, served by the MQTT
//! endpoint on 127.0.0.1:0 from its own runtime; and the real clients that talk to it
//! (Debian `mosquitto-clients`, the ThingsBoard Python SDK).
#![allow(dead_code, clippy::missing_panics_doc)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use ota_core::checksum::ChecksumAlgorithm;
use ota_mqtt::MqttConfig;
use ota_server::blob::BlobStore;
use ota_server::events::AssignmentEvent;
use ota_server::model::{
    Device, DeviceId, DeviceProfile, OtaPackage, PackageId, PackageSource, PackageType, ProfileId,
};
use ota_server::service::{DeviceApi, Ota, ServiceConfig, ServiceError, UploadMeta, now_ms};
use ota_server::store::SqlStore;
use serde_json::{Map, Value};
use tokio::sync::broadcast;

pub const TOKEN: &str = "TOKEN";
pub const DEMO: [u8; 10] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];

/// The real service, recording every chunk read `(index, size)` it serves.
pub struct Observed {
    pub ota: Ota,
    pub chunk_reads: Mutex<Vec<(u64, u64)>>,
}

#[async_trait]
impl DeviceApi for Observed {
    async fn authenticate(&self, token: &str) -> Result<Option<Device>, ServiceError> {
        self.ota.authenticate(token).await
    }
    async fn assigned_package(
        &self,
        device: &Device,
        t: PackageType,
    ) -> Result<Option<OtaPackage>, ServiceError> {
        self.ota.assigned_package(device, t).await
    }
    async fn shared_attributes(&self, device: &Device) -> Result<Map<String, Value>, ServiceError> {
        self.ota.shared_attributes(device).await
    }
    async fn read_chunk(
        &self,
        package: &OtaPackage,
        index: u64,
        size: u64,
    ) -> Result<Bytes, ServiceError> {
        self.chunk_reads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((index, size));
        self.ota.read_chunk(package, index, size).await
    }
    async fn record_telemetry(
        &self,
        device: &Device,
        values: &Map<String, Value>,
    ) -> Result<(), ServiceError> {
        self.ota.record_telemetry(device, values).await
    }
    fn subscribe(&self, device: DeviceId) -> broadcast::Receiver<AssignmentEvent> {
        self.ota.subscribe(device)
    }
}

pub struct Server {
    pub addr: SocketAddr,
    pub api: Arc<Observed>,
    pub profile: DeviceProfile,
    /// `TOKEN`, assigned firmware `demo`/`1.1`.
    pub device: Device,
    pub package: OtaPackage,
    rt: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn create_package(
    ota: &Ota,
    profile: ProfileId,
    title: &str,
    version: &str,
    image: &[u8],
) -> OtaPackage {
    let p = OtaPackage {
        id: PackageId::new_random(),
        created_time: now_ms(),
        profile_id: profile,
        package_type: PackageType::Firmware,
        title: title.into(),
        version: version.into(),
        tag: None,
        source: PackageSource::Pending,
        sming_app_id: None,
        additional_info: None,
    };
    ota.store()
        .create_package(&p)
        .await
        .expect("create package");
    let meta = UploadMeta {
        algorithm: ChecksumAlgorithm::Sha256,
        declared: None,
        file_name: "demo.bin".into(),
        content_type: "application/octet-stream".into(),
    };
    let body =
        futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::copy_from_slice(image))]);
    ota.upload(p.id, meta, body).await.expect("upload")
}

impl Server {
    /// The reference fixture (§11): device `TOKEN`, firmware `demo`/`1.1` = `image`.
    pub fn start(image: &[u8]) -> Self {
        Self::start_with(image, MqttConfig::default())
    }

    /// Same, with an endpoint configuration.
    pub fn start_with(image: &[u8], config: MqttConfig) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let (api, profile, device, package) = rt.block_on(async {
            let store =
                SqlStore::connect(&format!("sqlite://{}", dir.path().join("ota.db").display()))
                    .await
                    .expect("open store");
            let blobs = BlobStore::local(&dir.path().join("blobs")).expect("blobs");
            let ota = Ota::new(Arc::new(store), blobs, ServiceConfig::default());
            let profile = DeviceProfile {
                id: ProfileId::new_random(),
                created_time: now_ms(),
                name: "default".into(),
                firmware_id: None,
                software_id: None,
            };
            ota.store().create_profile(&profile).await.expect("profile");
            let package = create_package(&ota, profile.id, "demo", "1.1", image).await;
            let device = Device {
                id: DeviceId::new_random(),
                created_time: now_ms(),
                name: "dev".into(),
                profile_id: profile.id,
                access_token: TOKEN.into(),
                firmware_id: Some(package.id),
                software_id: None,
                enigma: None,
            };
            ota.create_device(&device).await.expect("device");
            let api = Arc::new(Observed {
                ota,
                chunk_reads: Mutex::new(Vec::new()),
            });
            (api, profile, device, package)
        });
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let dyn_api: Arc<dyn DeviceApi> = api.clone();
        rt.spawn(ota_mqtt::serve(listener, dyn_api, config));
        Self {
            addr,
            api,
            profile,
            device,
            package,
            rt: Some(rt),
            _dir: dir,
        }
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.as_ref().expect("runtime").block_on(f)
    }

    pub fn ota(&self) -> &Ota {
        &self.api.ota
    }

    pub fn port(&self) -> String {
        self.addr.port().to_string()
    }

    /// Chunk reads served so far.
    pub fn chunk_reads(&self) -> Vec<(u64, u64)> {
        self.api
            .chunk_reads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Uploads another firmware and assigns it to the fixture device.
    pub fn reassign(&self, version: &str, image: &[u8]) -> OtaPackage {
        self.block_on(self.reassign_async(version, image))
    }

    /// [`Self::reassign`] from inside the server's runtime.
    pub async fn reassign_async(&self, version: &str, image: &[u8]) -> OtaPackage {
        let p = create_package(&self.api.ota, self.profile.id, "demo", version, image).await;
        let mut d = self.device.clone();
        d.firmware_id = Some(p.id);
        self.api.ota.update_device(&d).await.expect("assign");
        p
    }

    /// A second device (token `token`) without any assignment.
    pub fn unassigned_device(&self, token: &str) -> Device {
        let d = Device {
            id: DeviceId::new_random(),
            created_time: now_ms(),
            name: token.into(),
            profile_id: self.profile.id,
            access_token: token.into(),
            firmware_id: None,
            software_id: None,
            enigma: None,
        };
        self.block_on(self.api.ota.create_device(&d))
            .expect("device");
        d
    }
}

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

const MOSQUITTO_HINT: &str =
    "install the Debian package `mosquitto-clients` (apt-get install -y mosquitto-clients)";

/// A `mosquitto_*` client command, failing with an install hint if it is missing.
pub fn mosquitto(tool: &str) -> Command {
    let found = Command::new(tool)
        .arg("--help")
        .output()
        .is_ok_and(|o| !o.stdout.is_empty() || !o.stderr.is_empty());
    assert!(found, "{tool} not found: {MOSQUITTO_HINT}");
    Command::new(tool)
}

/// Runs a command to its end and returns its output.
pub fn run(mut cmd: Command) -> Output {
    cmd.output().expect("run client")
}

/// The Python interpreter with the ThingsBoard SDK (`tb-mqtt-client`) importable.
pub fn python_with_sdk() -> Command {
    let check = Command::new("python3")
        .args([
            "-c",
            "import tb_device_mqtt, importlib.metadata as m; print(m.version('tb-mqtt-client'))",
        ])
        .output();
    match check {
        Ok(o) if o.status.success() => {}
        _ => panic!(
            "the ThingsBoard Python SDK is missing: pip install tb-mqtt-client (python3 with the `tb_device_mqtt` module)"
        ),
    }
    Command::new("python3")
}

/// A file of this crate's `tests/` directory.
pub fn test_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}
