//! A real `Ota` service on SQLite + a local blob directory in a temp dir, served by the
//! device API router on 127.0.0.1:0 from its own runtime; and `curl` as a client.
#![allow(dead_code, clippy::missing_panics_doc)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use bytes::Bytes;
use ota_core::checksum::ChecksumAlgorithm;
use ota_server::blob::BlobStore;
use ota_server::events::AssignmentEvent;
use ota_server::model::{
    Device, DeviceId, DeviceProfile, OtaPackage, PackageId, PackageSource, PackageType, PackageUrl,
    ProfileId,
};
use ota_server::service::{DeviceApi, Ota, ServiceConfig, ServiceError, UploadMeta, now_ms};
use ota_server::store::SqlStore;
use serde_json::{Map, Value};
use tokio::sync::broadcast;

pub const TOKEN: &str = "TOKEN";
pub const DEMO: [u8; 10] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];

/// The real service with one observation point: a message each time a device subscribes
/// (so a test can wait for a long poll to be listening instead of sleeping).
pub struct Observed {
    pub ota: Ota,
    subscribed: std::sync::Mutex<mpsc::Sender<DeviceId>>,
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
        let rx = self.ota.subscribe(device);
        let _ = self.subscribed.lock().map(|tx| tx.send(device));
        rx
    }
    async fn record_client_attributes(
        &self,
        device: &Device,
        attributes: &Map<String, Value>,
    ) -> Result<(), ServiceError> {
        self.ota.record_client_attributes(device, attributes).await
    }
    async fn client_attributes(
        &self,
        device: &Device,
        keys: Option<&[String]>,
    ) -> Result<Map<String, Value>, ServiceError> {
        self.ota.client_attributes(device, keys).await
    }
}

pub struct Server {
    pub addr: SocketAddr,
    pub api: Arc<Observed>,
    pub profile: DeviceProfile,
    /// `TOKEN`, assigned firmware `demo`/`1.1`.
    pub device: Device,
    pub package: OtaPackage,
    pub subscribed: mpsc::Receiver<DeviceId>,
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
        Self::start_with(image, |r| r)
    }

    /// Same, with the router wrapped by `wrap` (e.g. a fault-injecting layer).
    pub fn start_with(image: &[u8], wrap: impl FnOnce(Router) -> Router) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, subscribed) = mpsc::channel();
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
                subscribed: std::sync::Mutex::new(tx),
            });
            (api, profile, device, package)
        });
        let app = wrap(ota_http::router(api.clone()));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        rt.spawn(async move { axum::serve(listener, app).await });
        Self {
            addr,
            api,
            profile,
            device,
            package,
            subscribed,
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

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
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

    /// A device (token `token`) assigned an external-URL firmware `ext`/`2.0`.
    pub fn url_package_device(&self, token: &str) -> Device {
        self.block_on(async {
            let p = OtaPackage {
                id: PackageId::new_random(),
                created_time: now_ms(),
                profile_id: self.profile.id,
                package_type: PackageType::Firmware,
                title: "ext".into(),
                version: "2.0".into(),
                tag: None,
                source: PackageSource::Url(PackageUrl {
                    url: "https://example.com/fw.bin".into(),
                    checksum_algorithm: None,
                    checksum: None,
                }),
                sming_app_id: None,
                additional_info: None,
            };
            self.api
                .ota
                .store()
                .create_package(&p)
                .await
                .expect("create URL package");
            let d = Device {
                id: DeviceId::new_random(),
                created_time: now_ms(),
                name: token.into(),
                profile_id: self.profile.id,
                access_token: token.into(),
                firmware_id: Some(p.id),
                software_id: None,
                enigma: None,
            };
            self.api.ota.create_device(&d).await.expect("device");
            d
        })
    }

    /// Uploads another firmware and assigns it to the fixture device.
    pub fn reassign(&self, version: &str, image: &[u8]) -> OtaPackage {
        self.block_on(async {
            let p = create_package(&self.api.ota, self.profile.id, "demo", version, image).await;
            let mut d = self.device.clone();
            d.firmware_id = Some(p.id);
            self.api.ota.update_device(&d).await.expect("assign");
            p
        })
    }

    /// Waits (bounded) until some request subscribed to assignment events.
    pub fn wait_subscribed(&self) -> DeviceId {
        self.subscribed
            .recv_timeout(Duration::from_secs(10))
            .expect("a subscription within 10 s")
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

/// One `curl` exchange: status, headers (lower-case names), body.
#[derive(Debug)]
pub struct Curl {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Curl {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn curl_bin() -> PathBuf {
    let found = Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "curl not found: install it with `apt-get install -y curl`"
    );
    PathBuf::from("curl")
}

/// Runs `curl -sS -i <args> <url>` and splits the last response.
pub fn curl(args: &[&str], url: &str) -> Curl {
    let out = Command::new(curl_bin())
        .args(["-sS", "-i", "--max-time", "20"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?} {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_response(&out.stdout)
}

/// Runs curl writing the body to `file` (for `-C -` resume); returns the status line's code.
pub fn curl_to_file(args: &[&str], url: &str, file: &std::path::Path) -> u16 {
    let out = Command::new(curl_bin())
        .args(["-sS", "--max-time", "20", "-w", "%{http_code}", "-o"])
        .arg(file)
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?} {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("status code")
}

fn parse_response(raw: &[u8]) -> Curl {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Curl {
        status,
        headers,
        body,
    }
}
