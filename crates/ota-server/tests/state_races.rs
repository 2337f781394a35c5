//! Progress flushes and stuck-update expiry run beside device reports: neither may undo a
//! state a device reported in between their read and their write.
#![allow(clippy::missing_panics_doc, clippy::too_many_lines)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use ota_core::checksum::ChecksumAlgorithm;
use ota_server::blob::BlobStore;
use ota_server::model::{
    Device, DeviceId, DeviceProfile, OtaPackage, PackageId, PackageSource, PackageType, ProfileId,
    UpdateState,
};
use ota_server::service::{DeviceApi, Ota, ServiceConfig, UploadMeta, now_ms};
use ota_server::store::SqlStore;
use serde_json::{Map, Value, json};

const DEVICES: usize = 24;

fn tele(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().expect("object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flushes_never_undo_reported_states() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqlStore::connect(&format!("sqlite://{}", dir.path().join("ota.db").display()))
        .await
        .expect("store");
    let blobs = BlobStore::from_url(&format!("file://{}", dir.path().join("blobs").display()))
        .expect("blobs");
    let ota = Arc::new(Ota::new(Arc::new(store), blobs, ServiceConfig::default()));
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
        version: "2".into(),
        tag: None,
        source: PackageSource::Pending,
        sming_app_id: None,
        additional_info: None,
    };
    ota.store().create_package(&pkg).await.expect("package");
    let meta = UploadMeta {
        algorithm: ChecksumAlgorithm::Sha256,
        declared: None,
        file_name: "fw.bin".into(),
        content_type: "application/octet-stream".into(),
    };
    let image = Bytes::from(vec![7u8; 8192]);
    ota.upload(
        pkg.id,
        meta,
        futures_util::stream::iter([Ok::<_, std::io::Error>(image)]),
    )
    .await
    .expect("upload");
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        let d = Device {
            id: DeviceId::new_random(),
            created_time: now_ms(),
            name: format!("d{i}"),
            profile_id: prof.id,
            access_token: format!("T{i}"),
            firmware_id: None,
            software_id: None,
            enigma: None,
        };
        ota.create_device(&d).await.expect("device");
        devices.push(d);
    }
    prof.firmware_id = Some(pkg.id);
    ota.set_profile_packages(&prof).await.expect("assign");

    // A flusher and an expirer (with a timeout no update reaches) run flat out meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let background = {
        let (ota, stop) = (ota.clone(), stop.clone());
        tokio::spawn(async move {
            let mut rounds = 0u32;
            while !stop.load(Ordering::SeqCst) {
                ota.flush_progress().await.expect("flush");
                assert_eq!(ota.expire_stuck(now_ms()).await.expect("expire"), 0);
                rounds += 1;
                tokio::task::yield_now().await;
            }
            rounds
        })
    };
    let mut runs = Vec::new();
    for d in &devices {
        let ota = ota.clone();
        let token = d.access_token.clone();
        runs.push(tokio::spawn(async move {
            let dev = ota.authenticate(&token).await.expect("auth").expect("dev");
            ota.record_telemetry(&dev, &tele(&json!({"fw_state": "DOWNLOADING"})))
                .await
                .expect("report");
            for p in (1024..=8192).step_by(1024) {
                ota.record_telemetry(&dev, &tele(&json!({ "fw_progress": p })))
                    .await
                    .expect("progress");
                tokio::task::yield_now().await;
            }
            for st in ["DOWNLOADED", "VERIFIED", "UPDATING"] {
                ota.record_telemetry(&dev, &tele(&json!({ "fw_state": st })))
                    .await
                    .expect("report");
                ota.record_telemetry(&dev, &tele(&json!({ "fw_progress": 8192 })))
                    .await
                    .expect("progress");
            }
            ota.record_telemetry(
                &dev,
                &tele(&json!({"fw_state": "UPDATED", "current_fw_title": "demo", "current_fw_version": "2"})),
            )
            .await
            .expect("report");
        }));
    }
    for r in runs {
        r.await.expect("device run");
    }
    stop.store(true, Ordering::SeqCst);
    let rounds = background.await.expect("background");
    ota.flush_progress().await.expect("final flush");
    for d in &devices {
        let s = ota
            .store()
            .update_state(d.id, PackageType::Firmware)
            .await
            .expect("state");
        assert_eq!(
            s.state,
            Some(UpdateState::Updated),
            "{}: {s:?} ({rounds} flush rounds)",
            d.name
        );
        assert_eq!(s.current_version.as_deref(), Some("2"));
        assert_eq!(s.progress, 8192);
    }
    assert!(rounds > 0);
}
