//! Database writes per complete device update: state transitions only, no write per chunk,
//! progress coalesced in memory (goal ≤ 10 writes per update).
#![allow(clippy::missing_panics_doc, clippy::too_many_lines)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use ota_core::checksum::ChecksumAlgorithm;
use ota_server::blob::BlobStore;
use ota_server::model::{
    Device, DeviceId, DeviceProfile, DeviceUpdateState, Millis, OtaPackage, PackageData, PackageId,
    PackageSource, PackageType, ProfileId, UpdateState,
};
use ota_server::service::{DeviceApi, Ota, ServiceConfig, UploadMeta, now_ms};
use ota_server::store::{AssignmentChange, PackageQuery, Page, SqlStore, Store, StoreError};

/// Counts the write calls reaching the real store.
struct Counting {
    inner: SqlStore,
    writes: AtomicUsize,
}

impl Counting {
    fn hit(&self) {
        self.writes.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Store for Counting {
    async fn create_profile(&self, p: &DeviceProfile) -> Result<(), StoreError> {
        self.hit();
        self.inner.create_profile(p).await
    }
    async fn profile(&self, id: ProfileId) -> Result<DeviceProfile, StoreError> {
        self.inner.profile(id).await
    }
    async fn profiles(&self) -> Result<Vec<DeviceProfile>, StoreError> {
        self.inner.profiles().await
    }
    async fn set_profile_packages(
        &self,
        id: ProfileId,
        fw: Option<PackageId>,
        sw: Option<PackageId>,
        now: Millis,
    ) -> Result<Vec<AssignmentChange>, StoreError> {
        self.hit();
        self.inner.set_profile_packages(id, fw, sw, now).await
    }
    async fn create_device(
        &self,
        d: &Device,
        now: Millis,
    ) -> Result<Vec<AssignmentChange>, StoreError> {
        self.hit();
        self.inner.create_device(d, now).await
    }
    async fn update_device(
        &self,
        d: &Device,
        now: Millis,
    ) -> Result<Vec<AssignmentChange>, StoreError> {
        self.hit();
        self.inner.update_device(d, now).await
    }
    async fn set_device_token(&self, id: DeviceId, token: &str) -> Result<(), StoreError> {
        self.hit();
        self.inner.set_device_token(id, token).await
    }
    async fn device(&self, id: DeviceId) -> Result<Device, StoreError> {
        self.inner.device(id).await
    }
    async fn device_by_token(&self, token: &str) -> Result<Option<Device>, StoreError> {
        self.inner.device_by_token(token).await
    }
    async fn devices(&self) -> Result<Vec<Device>, StoreError> {
        self.inner.devices().await
    }
    async fn delete_device(&self, id: DeviceId) -> Result<(), StoreError> {
        self.hit();
        self.inner.delete_device(id).await
    }
    async fn create_package(&self, p: &OtaPackage) -> Result<(), StoreError> {
        self.hit();
        self.inner.create_package(p).await
    }
    async fn package(&self, id: PackageId) -> Result<OtaPackage, StoreError> {
        self.inner.package(id).await
    }
    async fn packages(&self, q: &PackageQuery) -> Result<Page<OtaPackage>, StoreError> {
        self.inner.packages(q).await
    }
    async fn set_package_data(&self, id: PackageId, d: &PackageData) -> Result<(), StoreError> {
        self.hit();
        self.inner.set_package_data(id, d).await
    }
    async fn delete_package(&self, id: PackageId) -> Result<Option<String>, StoreError> {
        self.hit();
        self.inner.delete_package(id).await
    }
    async fn blob_keys(&self) -> Result<Vec<String>, StoreError> {
        self.inner.blob_keys().await
    }
    async fn update_state(
        &self,
        d: DeviceId,
        t: PackageType,
    ) -> Result<DeviceUpdateState, StoreError> {
        self.inner.update_state(d, t).await
    }
    async fn put_update_state(&self, s: &DeviceUpdateState) -> Result<(), StoreError> {
        self.hit();
        self.inner.put_update_state(s).await
    }
    async fn put_update_state_if(
        &self,
        s: &DeviceUpdateState,
        expected: Millis,
    ) -> Result<bool, StoreError> {
        self.hit();
        self.inner.put_update_state_if(s, expected).await
    }
    async fn set_progress(
        &self,
        device: DeviceId,
        t: PackageType,
        progress: u64,
    ) -> Result<(), StoreError> {
        self.hit();
        self.inner.set_progress(device, t, progress).await
    }
    async fn update_states(&self) -> Result<Vec<DeviceUpdateState>, StoreError> {
        self.inner.update_states().await
    }
    async fn merge_client_attributes(
        &self,
        device: DeviceId,
        attributes: &serde_json::Map<String, serde_json::Value>,
        max_keys: usize,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.hit();
        self.inner
            .merge_client_attributes(device, attributes, max_keys, now)
            .await
    }
    async fn client_attributes(
        &self,
        device: DeviceId,
        keys: Option<&[String]>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
        self.inner.client_attributes(device, keys).await
    }
}

#[tokio::test]
async fn a_complete_update_costs_at_most_ten_writes_and_none_per_chunk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inner = SqlStore::connect(&format!("sqlite://{}", dir.path().join("ota.db").display()))
        .await
        .expect("store");
    let store = Arc::new(Counting {
        inner,
        writes: AtomicUsize::new(0),
    });
    let blobs = BlobStore::from_url(&format!("file://{}", dir.path().join("blobs").display()))
        .expect("blobs");
    let ota = Ota::new(store.clone(), blobs, ServiceConfig::default());

    let mut prof = DeviceProfile {
        id: ProfileId::new_random(),
        created_time: 0,
        name: "p".into(),
        firmware_id: None,
        software_id: None,
    };
    ota.store().create_profile(&prof).await.expect("profile");
    let pkg = OtaPackage {
        id: PackageId::new_random(),
        created_time: 0,
        profile_id: prof.id,
        package_type: PackageType::Firmware,
        title: "demo".into(),
        version: "2".into(),
        tag: None,
        source: PackageSource::Pending,
        sming_app_id: None,
        additional_info: None,
    };
    ota.store().create_package(&pkg).await.expect("package");
    let image = Bytes::from(
        (0..100 * 1024u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let meta = UploadMeta {
        algorithm: ChecksumAlgorithm::Sha256,
        declared: None,
        file_name: "fw.bin".into(),
        content_type: "application/octet-stream".into(),
    };
    ota.upload(
        pkg.id,
        meta,
        futures_util::stream::iter([Ok::<_, std::io::Error>(image.clone())]),
    )
    .await
    .expect("upload");
    let device = Device {
        id: DeviceId::new_random(),
        created_time: now_ms(),
        name: "d".into(),
        profile_id: prof.id,
        access_token: "T".into(),
        firmware_id: None,
        software_id: None,
        enigma: None,
    };
    ota.create_device(&device).await.expect("device");

    let before = store.writes.load(Ordering::SeqCst);
    prof.firmware_id = Some(pkg.id);
    ota.set_profile_packages(&prof).await.expect("assign");
    let dev = ota.authenticate("T").await.expect("auth").expect("device");
    let tele = |v: serde_json::Value| v.as_object().cloned().expect("object");
    ota.record_telemetry(&dev, &tele(serde_json::json!({"fw_state":"DOWNLOADING"})))
        .await
        .expect("tele");
    let assigned = ota
        .assigned_package(&dev, PackageType::Firmware)
        .await
        .expect("assigned")
        .expect("some");
    let mut received = Vec::new();
    for n in 0..=100u64 {
        let chunk = ota.read_chunk(&assigned, n, 1024).await.expect("chunk");
        received.extend_from_slice(&chunk);
        ota.record_telemetry(
            &dev,
            &tele(serde_json::json!({"fw_progress": received.len()})),
        )
        .await
        .expect("progress");
    }
    assert_eq!(received, image);
    for st in ["DOWNLOADED", "VERIFIED", "UPDATING"] {
        ota.record_telemetry(&dev, &tele(serde_json::json!({"fw_state": st})))
            .await
            .expect("tele");
    }
    ota.flush_progress().await.expect("flush");
    ota.record_telemetry(&dev, &tele(serde_json::json!({"fw_state":"UPDATED","current_fw_title":"demo","current_fw_version":"2"})))
        .await
        .expect("tele");
    let writes = store.writes.load(Ordering::SeqCst) - before;
    let s = ota
        .store()
        .update_state(dev.id, PackageType::Firmware)
        .await
        .expect("state");
    assert_eq!(s.state, Some(UpdateState::Updated));
    assert_eq!(s.progress, 100 * 1024);
    println!(
        "writes per complete update (assign + 101 chunks + 101 progress reports + 5 states): {writes}"
    );
    assert!(writes <= 10, "{writes} writes");
}
