//! The behaviour suite of the service, run on every storage combination:
//! SQLite + local directory, SQLite + S3 (moto), PostgreSQL + local, PostgreSQL + S3.
#![allow(clippy::missing_panics_doc, clippy::too_many_lines)]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use ota_core::checksum::ChecksumAlgorithm;
use ota_server::blob::{BlobError, BlobStore};
use ota_server::error::RuleError;
use ota_server::model::{
    Device, DeviceId, DeviceProfile, OtaPackage, PackageId, PackageSource, PackageType, ProfileId,
    UpdateState,
};
use ota_server::rules::AttributePush;
use ota_server::service::{DeviceApi, Ota, ServiceConfig, ServiceError, UploadMeta, now_ms};
use ota_server::store::{PackageQuery, PackageSort, SqlStore, Store, StoreError};

const DEMO: [u8; 10] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
const DEMO_SHA256: &str = "1f825aa2f0020ef7cf91dfa30da4668d791c5d4824fc8e41354b89ec05795ab3";

struct Env {
    ota: Ota,
    db_url: String,
    _dir: tempfile::TempDir,
}

#[derive(Clone, Copy)]
enum Db {
    Sqlite,
    Postgres,
}

#[derive(Clone, Copy)]
enum Blobs {
    Local,
    S3,
}

async fn env(db: Db, blobs: Blobs, config: ServiceConfig) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let db_url = match db {
        Db::Sqlite => format!("sqlite://{}", dir.path().join("ota.db").display()),
        Db::Postgres => common::postgres_schema_url(),
    };
    let blob_url = match blobs {
        Blobs::Local => format!("file://{}", dir.path().join("blobs").display()),
        Blobs::S3 => common::s3_blob_url().await,
    };
    let store = SqlStore::connect(&db_url).await.expect("open store");
    let blobs = BlobStore::from_url(&blob_url).expect("open blobs");
    Env {
        ota: Ota::new(Arc::new(store), blobs, config),
        db_url,
        _dir: dir,
    }
}

async fn profile(ota: &Ota, name: &str) -> DeviceProfile {
    let p = DeviceProfile {
        id: ProfileId::new_random(),
        created_time: now_ms(),
        name: name.into(),
        firmware_id: None,
        software_id: None,
    };
    ota.store()
        .create_profile(&p)
        .await
        .expect("create profile");
    p
}

async fn package(
    ota: &Ota,
    profile: ProfileId,
    t: PackageType,
    title: &str,
    version: &str,
) -> OtaPackage {
    let p = OtaPackage {
        id: PackageId::new_random(),
        created_time: now_ms(),
        profile_id: profile,
        package_type: t,
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
    p
}

fn meta(declared: Option<&str>) -> UploadMeta {
    UploadMeta {
        algorithm: ChecksumAlgorithm::Sha256,
        declared: declared.map(str::to_owned),
        file_name: "demo.bin".into(),
        content_type: "application/octet-stream".into(),
    }
}

fn body(
    parts: &[&'static [u8]],
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Unpin + Send {
    futures_util::stream::iter(
        parts
            .iter()
            .map(|p| Ok(Bytes::from_static(p)))
            .collect::<Vec<_>>(),
    )
}

async fn uploaded(
    ota: &Ota,
    profile: ProfileId,
    t: PackageType,
    title: &str,
    version: &str,
) -> OtaPackage {
    let p = package(ota, profile, t, title, version).await;
    ota.upload(p.id, meta(None), body(&[&DEMO[..4], &DEMO[4..]]))
        .await
        .expect("upload")
}

async fn device(ota: &Ota, profile: ProfileId, name: &str) -> Device {
    let d = Device {
        id: DeviceId::new_random(),
        created_time: now_ms(),
        name: name.into(),
        profile_id: profile,
        access_token: format!("token-{name}"),
        firmware_id: None,
        software_id: None,
        enigma: None,
    };
    ota.create_device(&d).await.expect("create device");
    d
}

// ---------------------------------------------------------------- the suite

async fn upload_checks_checksum_and_stores_nothing_on_failure(e: Env) {
    let ota = &e.ota;
    let prof = profile(ota, "p").await;
    let p = package(ota, prof.id, PackageType::Firmware, "demo", "1.1").await;
    let err = ota
        .upload(
            p.id,
            meta(Some(&format!("0x{DEMO_SHA256}"))),
            body(&[&DEMO]),
        )
        .await
        .expect_err("wrong checksum");
    assert!(
        matches!(err, ServiceError::ChecksumMismatch { ref actual, .. } if actual == DEMO_SHA256),
        "{err}"
    );
    assert_eq!(
        ota.store().package(p.id).await.expect("pkg").source,
        PackageSource::Pending
    );
    assert!(
        ota.blobs()
            .keys(&format!("packages/{}", p.id))
            .await
            .expect("list")
            .is_empty()
    );

    let done = ota
        .upload(p.id, meta(Some(DEMO_SHA256)), body(&[&DEMO]))
        .await
        .expect("right checksum");
    let d = done.data().expect("data");
    assert_eq!(
        (d.size, d.checksum.as_str(), d.file_name.as_str()),
        (10, DEMO_SHA256, "demo.bin")
    );
    assert_eq!(
        ota.blobs().get(&d.blob_key).await.expect("bytes"),
        Bytes::from_static(&DEMO)
    );

    let again = ota
        .upload(p.id, meta(None), body(&[&DEMO]))
        .await
        .expect_err("immutable");
    assert!(
        matches!(
            again,
            ServiceError::Store(StoreError::Rule(RuleError::DataImmutable { .. }))
        ),
        "{again}"
    );
    assert_eq!(
        ota.blobs()
            .keys(&format!("packages/{}", p.id))
            .await
            .expect("list")
            .len(),
        1
    );
}

async fn oversized_upload_is_refused(e: Env) {
    let ota = &e.ota;
    let prof = profile(ota, "p").await;
    let p = package(ota, prof.id, PackageType::Firmware, "big", "1").await;
    let err = ota
        .upload(p.id, meta(None), body(&[&[0u8; 8], &[0u8; 8]]))
        .await
        .expect_err("too large");
    assert!(
        matches!(err, ServiceError::Blob(BlobError::TooLarge { limit: 12 })),
        "{err}"
    );
    assert_eq!(
        ota.store().package(p.id).await.expect("pkg").source,
        PackageSource::Pending
    );
    assert!(
        ota.blobs()
            .keys(&format!("packages/{}", p.id))
            .await
            .expect("list")
            .is_empty()
    );
}

async fn title_and_version_are_unique_per_profile_and_type(e: Env) {
    let ota = &e.ota;
    let prof = profile(ota, "p").await;
    package(ota, prof.id, PackageType::Firmware, "demo", "1.1").await;
    let mut dup = package_value(prof.id, PackageType::Firmware, "demo", "1.1");
    let err = ota
        .store()
        .create_package(&dup)
        .await
        .expect_err("duplicate");
    assert!(
        matches!(err, StoreError::Rule(RuleError::Duplicate { ref title, ref version }) if title == "demo" && version == "1.1")
    );
    dup.package_type = PackageType::Software;
    ota.store()
        .create_package(&dup)
        .await
        .expect("same title as software is fine");
    let unknown = package_value(ProfileId::new_random(), PackageType::Firmware, "x", "1");
    let err = ota
        .store()
        .create_package(&unknown)
        .await
        .expect_err("unknown profile");
    assert!(
        matches!(
            err,
            StoreError::NotFound {
                what: "device profile",
                ..
            }
        ),
        "{err}"
    );
}

fn package_value(profile: ProfileId, t: PackageType, title: &str, version: &str) -> OtaPackage {
    OtaPackage {
        id: PackageId::new_random(),
        created_time: now_ms(),
        profile_id: profile,
        package_type: t,
        title: title.into(),
        version: version.into(),
        tag: None,
        source: PackageSource::Pending,
        sming_app_id: None,
        additional_info: None,
    }
}

async fn profile_assignment_reaches_devices_without_their_own(e: Env) {
    let ota = &e.ota;
    let mut prof = profile(ota, "p").await;
    let a = device(ota, prof.id, "a").await;
    let mut b = device(ota, prof.id, "b").await;
    let v1 = uploaded(ota, prof.id, PackageType::Firmware, "demo", "1.1").await;
    let own = uploaded(ota, prof.id, PackageType::Firmware, "demo", "own").await;
    b.firmware_id = Some(own.id);
    ota.update_device(&b).await.expect("own package");

    let mut rx_a = ota.subscribe(a.id);
    let mut rx_b = ota.subscribe(b.id);
    prof.firmware_id = Some(v1.id);
    let changes = ota.set_profile_packages(&prof).await.expect("assign");
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].device_id, a.id);

    let ev = rx_a.try_recv().expect("event for a");
    assert_eq!(
        ev.pushes[0],
        AttributePush::Deleted(vec!["fw_tag".into(), "fw_url".into()])
    );
    let AttributePush::Set(attrs) = &ev.pushes[1] else {
        panic!("second push must set attributes")
    };
    assert_eq!(attrs["fw_checksum"], DEMO_SHA256);
    assert_eq!(attrs["fw_size"], 10);
    assert!(
        rx_b.try_recv().is_err(),
        "device with its own package is untouched"
    );

    let s = ota
        .store()
        .update_state(a.id, PackageType::Firmware)
        .await
        .expect("state");
    assert_eq!(s.state, Some(UpdateState::Initiated));
    assert_eq!(
        (s.target_title.as_deref(), s.target_version.as_deref()),
        (Some("demo"), Some("1.1"))
    );

    let attrs = ota.shared_attributes(&b).await.expect("attrs");
    assert_eq!(attrs["fw_version"], "own");
    assert_eq!(
        ota.shared_attributes(&a).await.expect("attrs")["fw_version"],
        "1.1"
    );

    // Saving the same assignment again pushes nothing.
    assert!(
        ota.set_profile_packages(&prof)
            .await
            .expect("same")
            .is_empty()
    );
    // Unassigning pushes the full deletion.
    prof.firmware_id = None;
    ota.set_profile_packages(&prof).await.expect("unassign");
    let ev = rx_a.try_recv().expect("deletion");
    assert!(matches!(&ev.pushes[..], [AttributePush::Deleted(keys)] if keys.len() == 9));
}

async fn package_must_belong_to_the_devices_profile(e: Env) {
    let ota = &e.ota;
    let p1 = profile(ota, "p1").await;
    let p2 = profile(ota, "p2").await;
    let foreign = uploaded(ota, p2.id, PackageType::Firmware, "demo", "1").await;
    let pending = package(ota, p1.id, PackageType::Firmware, "pending", "1").await;
    let mut d = device(ota, p1.id, "d").await;
    d.firmware_id = Some(foreign.id);
    let err = ota.update_device(&d).await.expect_err("foreign");
    assert!(
        matches!(
            err,
            ServiceError::Store(StoreError::Rule(RuleError::ProfileMismatch { .. }))
        ),
        "{err}"
    );
    d.firmware_id = Some(pending.id);
    let err = ota.update_device(&d).await.expect_err("no data");
    assert!(
        matches!(
            err,
            ServiceError::Store(StoreError::Rule(RuleError::NoData { .. }))
        ),
        "{err}"
    );
    d.firmware_id = Some(PackageId::new_random());
    let err = ota.update_device(&d).await.expect_err("unknown");
    assert!(
        matches!(
            err,
            ServiceError::Store(StoreError::NotFound {
                what: "package",
                ..
            })
        ),
        "{err}"
    );
    assert_eq!(
        ota.store().device(d.id).await.expect("device").firmware_id,
        None,
        "nothing stored"
    );
    let sw = uploaded(ota, p1.id, PackageType::Software, "app", "1").await;
    d.firmware_id = Some(sw.id);
    let err = ota.update_device(&d).await.expect_err("type");
    assert!(
        matches!(
            err,
            ServiceError::Store(StoreError::Rule(RuleError::TypeMismatch { .. }))
        ),
        "{err}"
    );
}

async fn package_in_use_cannot_be_deleted(e: Env) {
    let ota = &e.ota;
    let mut prof = profile(ota, "p").await;
    let pkg = uploaded(ota, prof.id, PackageType::Firmware, "demo", "1").await;
    prof.firmware_id = Some(pkg.id);
    ota.set_profile_packages(&prof).await.expect("assign");
    let err = ota.delete_package(pkg.id).await.expect_err("in use");
    assert!(
        matches!(
            err,
            ServiceError::Store(StoreError::Rule(RuleError::InUse { .. }))
        ),
        "{err}"
    );
    prof.firmware_id = None;
    ota.set_profile_packages(&prof).await.expect("unassign");
    ota.delete_package(pkg.id).await.expect("delete");
    assert!(matches!(
        ota.store().package(pkg.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(
        ota.blobs()
            .keys(&format!("packages/{}", pkg.id))
            .await
            .expect("list")
            .is_empty()
    );
    let err = ota.delete_package(pkg.id).await.expect_err("gone");
    assert!(
        matches!(err, ServiceError::Store(StoreError::NotFound { .. })),
        "{err}"
    );
}

async fn chunks_come_from_the_cached_package(e: Env) {
    let ota = &e.ota;
    let mut prof = profile(ota, "p").await;
    let d = device(ota, prof.id, "d").await;
    let pkg = uploaded(ota, prof.id, PackageType::Firmware, "demo", "1.1").await;
    prof.firmware_id = Some(pkg.id);
    ota.set_profile_packages(&prof).await.expect("assign");
    let dev = ota
        .authenticate("token-d")
        .await
        .expect("auth")
        .expect("known token");
    assert_eq!(dev.id, d.id);
    assert!(ota.authenticate("BAD").await.expect("auth").is_none());
    let assigned = ota
        .assigned_package(&dev, PackageType::Firmware)
        .await
        .expect("assigned")
        .expect("some");
    assert_eq!(
        &ota.read_chunk(&assigned, 1, 4).await.expect("chunk")[..],
        &[4, 5, 6, 7]
    );
    assert_eq!(
        &ota.read_chunk(&assigned, 2, 4).await.expect("chunk")[..],
        &[8, 9]
    );
    assert!(
        ota.read_chunk(&assigned, 3, 4)
            .await
            .expect("chunk")
            .is_empty()
    );
    assert_eq!(
        ota.read_chunk(&assigned, 0, 0).await.expect("whole").len(),
        10
    );
    assert!(
        ota.assigned_package(&dev, PackageType::Software)
            .await
            .expect("sw")
            .is_none()
    );
}

async fn reported_states_are_checked(e: Env) {
    let ota = &e.ota;
    let mut prof = profile(ota, "p").await;
    let d = device(ota, prof.id, "d").await;
    let tele = |v: serde_json::Value| v.as_object().cloned().expect("object");

    // Never offered: UPDATED is an anomaly, not trusted.
    ota.record_telemetry(&d, &tele(serde_json::json!({"fw_state":"UPDATED","current_fw_title":"demo","current_fw_version":"1.1"})))
        .await
        .expect("record");
    let s = ota
        .store()
        .update_state(d.id, PackageType::Firmware)
        .await
        .expect("state");
    assert_eq!((s.state, s.anomalies), (None, 1));
    assert_eq!(s.current_version.as_deref(), Some("1.1"));

    let pkg = uploaded(ota, prof.id, PackageType::Firmware, "demo", "1.2").await;
    prof.firmware_id = Some(pkg.id);
    ota.set_profile_packages(&prof).await.expect("assign");
    for st in ["DOWNLOADING", "DOWNLOADED", "VERIFIED", "UPDATING"] {
        ota.record_telemetry(
            &d,
            &tele(serde_json::json!({"fw_state": st, "fw_progress": 4})),
        )
        .await
        .expect("record");
    }
    let s = ota
        .store()
        .update_state(d.id, PackageType::Firmware)
        .await
        .expect("state");
    assert_eq!(s.state, Some(UpdateState::Updating));
    assert_eq!(s.progress, 0, "progress is coalesced in memory");
    assert_eq!(ota.flush_progress().await.expect("flush"), 1);
    assert_eq!(
        ota.store()
            .update_state(d.id, PackageType::Firmware)
            .await
            .expect("state")
            .progress,
        4
    );

    ota.record_telemetry(&d, &tele(serde_json::json!({"fw_state":"DOWNLOADED"})))
        .await
        .expect("record");
    let s = ota
        .store()
        .update_state(d.id, PackageType::Firmware)
        .await
        .expect("state");
    assert_eq!(
        (s.state, s.anomalies),
        (Some(UpdateState::Updating), 2),
        "backward jump not trusted"
    );

    ota.record_telemetry(&d, &tele(serde_json::json!({"fw_state":"UPDATED","current_fw_title":"demo","current_fw_version":"1.2"})))
        .await
        .expect("record");
    let s = ota
        .store()
        .update_state(d.id, PackageType::Firmware)
        .await
        .expect("state");
    assert_eq!(s.state, Some(UpdateState::Updated));
}

async fn stuck_updates_time_out(e: Env) {
    let ota = &e.ota;
    let mut prof = profile(ota, "p").await;
    let d = device(ota, prof.id, "d").await;
    let pkg = uploaded(ota, prof.id, PackageType::Firmware, "demo", "1").await;
    prof.firmware_id = Some(pkg.id);
    ota.set_profile_packages(&prof).await.expect("assign");
    assert_eq!(ota.expire_stuck(now_ms()).await.expect("expire"), 0);
    let later = now_ms() + 2 * 3_600_000;
    assert_eq!(ota.expire_stuck(later).await.expect("expire"), 1);
    let s = ota
        .store()
        .update_state(d.id, PackageType::Firmware)
        .await
        .expect("state");
    assert_eq!(
        (s.state, s.error.as_deref()),
        (Some(UpdateState::Failed), Some("TIMEOUT"))
    );
}

async fn package_pages_search_and_sort(e: Env) {
    let ota = &e.ota;
    let prof = profile(ota, "p").await;
    for v in ["1", "2", "3"] {
        package(
            ota,
            prof.id,
            PackageType::Firmware,
            &format!("Alpha_{v}"),
            v,
        )
        .await;
    }
    package(ota, prof.id, PackageType::Software, "beta", "1").await;
    let q = PackageQuery {
        page_size: 2,
        sort: PackageSort::Title,
        descending: true,
        ..PackageQuery::default()
    };
    let page = ota.store().packages(&q).await.expect("page");
    assert_eq!(
        (page.total_elements, page.total_pages, page.has_next),
        (4, 2, true)
    );
    assert_eq!(page.data[0].title, "beta");
    let q = PackageQuery {
        text_search: Some("alpha_".into()),
        page_size: 10,
        ..PackageQuery::default()
    };
    assert_eq!(
        ota.store()
            .packages(&q)
            .await
            .expect("search")
            .total_elements,
        3
    );
    let q = PackageQuery {
        text_search: Some("a%".into()),
        ..PackageQuery::default()
    };
    assert_eq!(
        ota.store()
            .packages(&q)
            .await
            .expect("literal %")
            .total_elements,
        0
    );
    let q = PackageQuery {
        profile_id: Some(prof.id),
        package_type: Some(PackageType::Software),
        with_data_only: true,
        ..PackageQuery::default()
    };
    assert_eq!(
        ota.store()
            .packages(&q)
            .await
            .expect("with data")
            .total_elements,
        0
    );
}

async fn state_survives_reopening(e: Env) {
    let ota = &e.ota;
    let mut prof = profile(ota, "p").await;
    let d = device(ota, prof.id, "d").await;
    let pkg = uploaded(ota, prof.id, PackageType::Firmware, "demo", "1").await;
    prof.firmware_id = Some(pkg.id);
    ota.set_profile_packages(&prof).await.expect("assign");
    let again = SqlStore::connect(&e.db_url)
        .await
        .expect("reopen (migrations run again)");
    assert_eq!(again.device(d.id).await.expect("device").name, "d");
    assert_eq!(
        again
            .package(pkg.id)
            .await
            .expect("package")
            .data()
            .expect("data")
            .checksum,
        DEMO_SHA256
    );
    assert_eq!(
        again
            .update_state(d.id, PackageType::Firmware)
            .await
            .expect("state")
            .state,
        Some(UpdateState::Initiated)
    );
    assert_eq!(
        again.profile(prof.id).await.expect("profile").firmware_id,
        Some(pkg.id)
    );
}

async fn names_and_tokens_are_unique(e: Env) {
    let ota = &e.ota;
    let prof = profile(ota, "p").await;
    let err = ota
        .store()
        .create_profile(&prof)
        .await
        .expect_err("same profile");
    assert!(
        matches!(
            err,
            StoreError::Rule(RuleError::NameTaken { .. }) | StoreError::Database(_)
        ),
        "{err}"
    );
    let d = device(ota, prof.id, "d").await;
    let mut other = d.clone();
    other.id = DeviceId::new_random();
    other.access_token = "other".into();
    let err = ota.create_device(&other).await.expect_err("same name");
    assert!(
        matches!(
            err,
            ServiceError::Store(StoreError::Rule(RuleError::NameTaken {
                what: "device name",
                ..
            }))
        ),
        "{err}"
    );
    other.name = "e".into();
    other.access_token = d.access_token.clone();
    let err = ota.create_device(&other).await.expect_err("same token");
    assert!(
        matches!(
            err,
            ServiceError::Store(StoreError::Rule(RuleError::NameTaken {
                what: "access token",
                ..
            }))
        ),
        "{err}"
    );
}

macro_rules! suite {
    ($($name:ident $(with $cfg:expr)?),* $(,)?) => {
        mod sqlite_local { use super::*; $( #[tokio::test] async fn $name() { super::$name(env(Db::Sqlite, Blobs::Local, suite!(@cfg $($cfg)?)).await).await } )* }
        mod sqlite_s3 { use super::*; $( #[tokio::test] async fn $name() { super::$name(env(Db::Sqlite, Blobs::S3, suite!(@cfg $($cfg)?)).await).await } )* }
        mod postgres_local { use super::*; $( #[tokio::test] async fn $name() { super::$name(env(Db::Postgres, Blobs::Local, suite!(@cfg $($cfg)?)).await).await } )* }
        mod postgres_s3 { use super::*; $( #[tokio::test] async fn $name() { super::$name(env(Db::Postgres, Blobs::S3, suite!(@cfg $($cfg)?)).await).await } )* }
    };
    (@cfg) => { ServiceConfig::default() };
    (@cfg $cfg:expr) => { $cfg };
}

suite! {
    upload_checks_checksum_and_stores_nothing_on_failure,
    oversized_upload_is_refused with ServiceConfig { max_upload_bytes: 12, ..ServiceConfig::default() },
    title_and_version_are_unique_per_profile_and_type,
    profile_assignment_reaches_devices_without_their_own,
    package_must_belong_to_the_devices_profile,
    package_in_use_cannot_be_deleted,
    chunks_come_from_the_cached_package,
    reported_states_are_checked,
    stuck_updates_time_out,
    package_pages_search_and_sort,
    state_survives_reopening,
    names_and_tokens_are_unique,
}

/// Two replicas on one PostgreSQL: an assignment made through A reaches a subscription on B.
#[tokio::test]
async fn postgres_replicas_hear_each_others_assignments() {
    let url = common::postgres_schema_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let blob_url = format!("file://{}", dir.path().join("blobs").display());
    let namespace = format!("t{}", uuid::Uuid::new_v4().simple());
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let store = SqlStore::connect(&url).await.expect("store");
        let pool = store.pg_pool().expect("postgres").clone();
        // A long lookup-cache life: B must see A's assignment because the notification
        // clears its cache, not because a cached row expired.
        let config = ServiceConfig {
            lookup_cache_ttl: std::time::Duration::from_hours(1),
            ..ServiceConfig::default()
        };
        let ota = Arc::new(Ota::new(
            Arc::new(store),
            BlobStore::from_url(&blob_url).expect("blobs"),
            config,
        ));
        ota.enable_pg_fanout(pool, &namespace)
            .await
            .expect("fan-out");
        replicas.push(ota);
    }
    let (a, b) = (&replicas[0], &replicas[1]);
    let mut prof = profile(a, "p").await;
    let dev = device(a, prof.id, "d").await;
    let pkg = uploaded(a, prof.id, PackageType::Firmware, "demo", "1.1").await;
    let mut rx = b.subscribe(dev.id);
    // B looks the device up (and caches the device and its profile) before the assignment.
    let dev_b = b
        .authenticate(&dev.access_token)
        .await
        .expect("auth on B")
        .expect("device on B");
    assert!(
        b.assigned_package(&dev_b, PackageType::Firmware)
            .await
            .expect("lookup on B")
            .is_none()
    );
    prof.firmware_id = Some(pkg.id);
    a.set_profile_packages(&prof).await.expect("assign on A");
    let ev = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .expect("in time")
        .expect("event");
    assert_eq!(ev.device_id, dev.id);
    let AttributePush::Set(attrs) = &ev.pushes[1] else {
        panic!("attributes expected")
    };
    assert_eq!(attrs["fw_version"], "1.1");
    let assigned = b
        .assigned_package(&dev_b, PackageType::Firmware)
        .await
        .expect("lookup on B")
        .expect("B sees the assignment made on A");
    assert_eq!(assigned.id, pkg.id);

    // Another namespace on the same database hears nothing.
    let store = SqlStore::connect(&url).await.expect("store");
    let pool = store.pg_pool().expect("postgres").clone();
    let other = Arc::new(Ota::new(
        Arc::new(store),
        BlobStore::from_url(&blob_url).expect("blobs"),
        ServiceConfig::default(),
    ));
    other
        .enable_pg_fanout(pool, "elsewhere")
        .await
        .expect("fan-out");
    let mut rx_c = other.subscribe(dev.id);
    let mut rx_b = b.subscribe(dev.id);
    prof.firmware_id = None;
    a.set_profile_packages(&prof).await.expect("unassign on A");
    let ev = tokio::time::timeout(std::time::Duration::from_secs(10), rx_b.recv())
        .await
        .expect("in time")
        .expect("event");
    assert!(matches!(&ev.pushes[..], [AttributePush::Deleted(k)] if k.len() == 9));
    assert!(rx_c.try_recv().is_err(), "other namespace must not hear it");
}
