//! Client attributes in the store and the service, on SQLite and on PostgreSQL: merge
//! (given keys replaced, others kept), selection, limits refused with a typed error and
//! nothing stored, the key limit counted against stored keys, deletion with the device,
//! and survival of a reopened store.
#![allow(clippy::missing_panics_doc)]

mod common;

use std::sync::Arc;

use ota_server::blob::BlobStore;
use ota_server::error::{AttributeError, RuleError};
use ota_server::model::{Device, DeviceId, DeviceProfile, ProfileId};
use ota_server::service::{DeviceApi, Ota, ServiceConfig, ServiceError, now_ms};
use ota_server::store::{SqlStore, StoreError};
use serde_json::{Map, Value, json};

struct Env {
    ota: Ota,
    db_url: String,
    device: Device,
    _dir: tempfile::TempDir,
}

async fn env(db_url: Option<String>) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let db_url =
        db_url.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("ota.db").display()));
    let store = SqlStore::connect(&db_url).await.expect("open store");
    let blobs = BlobStore::from_url(&format!("file://{}", dir.path().join("blobs").display()))
        .expect("blobs");
    let ota = Ota::new(Arc::new(store), blobs, ServiceConfig::default());
    // Unique names: a reopened database already holds the first ones.
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let profile = DeviceProfile {
        id: ProfileId::new_random(),
        created_time: now_ms(),
        name: format!("p-{tag}"),
        firmware_id: None,
        software_id: None,
    };
    ota.store().create_profile(&profile).await.expect("profile");
    let device = Device {
        id: DeviceId::new_random(),
        created_time: now_ms(),
        name: format!("d-{tag}"),
        profile_id: profile.id,
        access_token: format!("token-{tag}"),
        firmware_id: None,
        software_id: None,
        enigma: None,
    };
    ota.create_device(&device).await.expect("device");
    Env {
        ota,
        db_url,
        device,
        _dir: dir,
    }
}

/// What a refused input must fail with.
type Check = fn(&AttributeError) -> bool;

fn obj(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().expect("object")
}

fn keys(n: std::ops::Range<usize>) -> Map<String, Value> {
    n.map(|i| (format!("k{i}"), Value::from(i))).collect()
}

async fn merge_replaces_given_keys_and_keeps_others(e: Env) {
    let (ota, d) = (&e.ota, &e.device);
    assert!(
        ota.client_attributes(d, None)
            .await
            .expect("read")
            .is_empty()
    );
    ota.record_client_attributes(d, &obj(&json!({"a": 1, "b": "x", "n": {"k": [1, 2]}})))
        .await
        .expect("first");
    ota.record_client_attributes(d, &obj(&json!({"a": 2.5, "c": false})))
        .await
        .expect("second");
    assert_eq!(
        Value::Object(ota.client_attributes(d, None).await.expect("all")),
        json!({"a": 2.5, "b": "x", "c": false, "n": {"k": [1, 2]}})
    );
    let wanted = ["a".to_owned(), "n".to_owned(), "missing".to_owned()];
    assert_eq!(
        Value::Object(ota.client_attributes(d, Some(&wanted)).await.expect("some")),
        json!({"a": 2.5, "n": {"k": [1, 2]}})
    );
    assert!(
        ota.client_attributes(d, Some(&[]))
            .await
            .expect("none")
            .is_empty()
    );
    // The empty object is accepted and changes nothing.
    ota.record_client_attributes(d, &Map::new())
        .await
        .expect("empty");
    assert_eq!(ota.client_attributes(d, None).await.expect("all").len(), 4);
}

async fn bad_input_is_a_typed_error_and_stores_nothing(e: Env) {
    let (ota, d) = (&e.ota, &e.device);
    ota.record_client_attributes(d, &obj(&json!({"keep": 1})))
        .await
        .expect("valid");
    let cases: Vec<(Map<String, Value>, Check)> = vec![
        (
            obj(&json!({"ok": 1, "n": null})),
            |e| matches!(e, AttributeError::NullValue { key } if key == "n"),
        ),
        (obj(&json!({"ok": 1, "": 2})), |e| {
            matches!(e, AttributeError::EmptyKey)
        }),
        (obj(&json!({"ok": 1, "big": "x".repeat(5000)})), |e| {
            matches!(
                e,
                AttributeError::ValueTooLarge {
                    len: 5002,
                    max: 4096,
                    ..
                }
            )
        }),
        (obj(&json!({ "k".repeat(256): 1 })), |e| {
            matches!(e, AttributeError::KeyTooLong { len: 256, max: 255 })
        }),
        (keys(0..257), |e| {
            matches!(
                e,
                AttributeError::TooManyKeys {
                    count: 257,
                    max: 256
                }
            )
        }),
    ];
    for (attrs, expected) in cases {
        match ota.record_client_attributes(d, &attrs).await {
            Err(ServiceError::Attributes(err)) => assert!(expected(&err), "{err}"),
            other => panic!("expected an attribute error, got {other:?}"),
        }
    }
    assert_eq!(
        Value::Object(ota.client_attributes(d, None).await.expect("all")),
        json!({"keep": 1})
    );
    // Parsing a body: only a JSON object.
    assert_eq!(
        ota_server::service::parse_client_attributes(b"[1]"),
        Err(AttributeError::NotAnObject { got: "array" })
    );
    assert!(matches!(
        ota_server::service::parse_client_attributes(b"{\"a\":"),
        Err(AttributeError::NotJson(_))
    ));
}

async fn key_limit_counts_stored_keys(e: Env) {
    let (ota, d) = (&e.ota, &e.device);
    ota.record_client_attributes(d, &keys(0..200))
        .await
        .expect("200 keys");
    // 200 stored + 57 new.
    let err = ota
        .record_client_attributes(d, &keys(150..257))
        .await
        .expect_err("257 keys");
    assert!(
        matches!(
            err,
            ServiceError::Attributes(AttributeError::TooManyKeys {
                count: 257,
                max: 256
            })
        ),
        "{err}"
    );
    assert_eq!(
        ota.client_attributes(d, None).await.expect("all").len(),
        200
    );
    // The store refuses the same on its own, with a rule error.
    let err = ota
        .store()
        .merge_client_attributes(d.id, &keys(199..202), 201, now_ms())
        .await
        .expect_err("202 > 201");
    assert!(
        matches!(
            err,
            StoreError::Rule(RuleError::TooManyAttributes {
                count: 202,
                max: 201
            })
        ),
        "{err}"
    );
    ota.record_client_attributes(d, &keys(100..256))
        .await
        .expect("up to the limit");
    assert_eq!(
        ota.client_attributes(d, None).await.expect("all").len(),
        256
    );
    // No device: not found, nothing written.
    let err = ota
        .store()
        .merge_client_attributes(DeviceId::new_random(), &keys(0..1), 10, now_ms())
        .await
        .expect_err("no device");
    assert!(
        matches!(err, StoreError::NotFound { what: "device", .. }),
        "{err}"
    );
}

async fn concurrent_merges_never_pass_the_limit(e: Env) {
    let (ota, d) = (&e.ota, &e.device);
    ota.record_client_attributes(d, &keys(0..200))
        .await
        .expect("200 keys");
    // Each alone fits (250 keys); both together would make 300.
    let (a, b) = (keys(200..250), keys(250..300));
    let (ra, rb) = tokio::join!(
        ota.record_client_attributes(d, &a),
        ota.record_client_attributes(d, &b)
    );
    let refused = [&ra, &rb]
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(ServiceError::Attributes(AttributeError::TooManyKeys {
                    count: 300,
                    max: 256
                }))
            )
        })
        .count();
    assert_eq!(
        (usize::from(ra.is_ok()) + usize::from(rb.is_ok()), refused),
        (1, 1),
        "{ra:?} {rb:?}"
    );
    assert_eq!(
        ota.client_attributes(d, None).await.expect("all").len(),
        250
    );
}

async fn deleting_the_device_deletes_its_attributes(e: Env) {
    let (ota, d) = (&e.ota, &e.device);
    ota.record_client_attributes(d, &obj(&json!({"a": 1})))
        .await
        .expect("store");
    ota.store().delete_device(d.id).await.expect("delete");
    assert!(
        ota.store()
            .client_attributes(d.id, None)
            .await
            .expect("read")
            .is_empty()
    );
    // A new device with the same id starts without attributes.
    ota.create_device(d).await.expect("re-create");
    assert!(
        ota.client_attributes(d, None)
            .await
            .expect("read")
            .is_empty()
    );
}

async fn attributes_survive_reopening(e: Env) {
    let (ota, d) = (&e.ota, &e.device);
    ota.record_client_attributes(d, &obj(&json!({"a": 1, "s": "text"})))
        .await
        .expect("store");
    let again = env(Some(e.db_url.clone())).await;
    // `env` created a second device in the same database; ours is still there.
    let read = again
        .ota
        .store()
        .client_attributes(d.id, None)
        .await
        .expect("read after reopening");
    assert_eq!(Value::Object(read), json!({"a": 1, "s": "text"}));
    assert!(
        again
            .ota
            .client_attributes(&again.device, None)
            .await
            .expect("other device")
            .is_empty()
    );
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test] async fn $name() { super::$name(super::env(None).await).await } )* }
        mod postgres { $( #[tokio::test] async fn $name() { super::$name(super::env(Some(super::common::postgres_schema_url())).await).await } )* }
    };
}

suite! {
    merge_replaces_given_keys_and_keeps_others,
    bad_input_is_a_typed_error_and_stores_nothing,
    key_limit_counts_stored_keys,
    concurrent_merges_never_pass_the_limit,
    deleting_the_device_deletes_its_attributes,
    attributes_survive_reopening,
}
