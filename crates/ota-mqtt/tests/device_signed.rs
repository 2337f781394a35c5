//! The MQTT device client with `ota-crypto`'s signed-package reader: a signed, encrypted
//! package served as ordinary ThingsBoard firmware is verified, decrypted and written; one
//! signed by an unknown key fails the update and leaves the slot unfinalized.
#![cfg(feature = "device")]

mod common;

use common::{Server, TOKEN};
use ota_core::updater::{Config, Kind};
use ota_crypto::keys::{KeyEntry, KeySet, PayloadKey, SigningSecret};
use ota_crypto::manifest::{Kind as PackageKind, SemVer};
use ota_crypto::reader::{DevicePolicy, SignedPackageReader};
use ota_crypto::writer::{PackageSpec, PackageWriter, Sealing};
use ota_mqtt::device::{MemoryCheckpoints, MemorySlot, MqttDevice, Outcome};

const NOW: u64 = 1_800_000_000;
const TARGET: &str = "board-rev-b";
const CHUNK: u32 = 1024;
const SEALED: u32 = 4096;

fn root() -> SigningSecret {
    SigningSecret::from_seed(&[0x11; 32])
}
fn signer() -> SigningSecret {
    SigningSecret::from_seed(&[0x22; 32])
}
fn payload_key() -> PayloadKey {
    PayloadKey::from_bytes([0x44; 32])
}

fn key_set() -> KeySet {
    let set = KeySet::new(7, &[KeyEntry::new(signer().public_key(), 0, None)], &[])
        .expect("valid key set");
    KeySet::verify(&set.sign(&root()), &root().root_key(), 0).expect("root-signed")
}

fn package(by: &SigningSecret, payload: &[u8]) -> Vec<u8> {
    let mut spec = PackageSpec::new(
        PackageKind::Firmware,
        "thermostat",
        SemVer::new(1, 2, 3),
        TARGET,
        NOW - 100,
    )
    .expect("spec");
    spec.chunk_size = SEALED;
    spec.min_version = SemVer::new(1, 0, 0);
    let key = payload_key();
    PackageWriter::new(
        by,
        spec,
        Sealing::ChaCha20Poly1305 {
            key: &key,
            nonce_prefix: [0x5a; 8],
        },
    )
    .pack_bytes(payload)
    .expect("pack")
}

/// Updates from a server holding `package`; the outcome and the slot.
fn update(package: &[u8]) -> (Outcome, MemorySlot) {
    let s = Server::start(package);
    s.block_on(async {
        let keys = key_set();
        let key = payload_key();
        let policy = DevicePolicy {
            now: NOW,
            target: TARGET,
            kind: PackageKind::Firmware,
            highest_accepted: SemVer::new(1, 0, 0),
            offered_version: None,
        };
        let mut sealed = vec![0u8; SEALED as usize + 16];
        let reader = SignedPackageReader::new(&keys, Some(&key), policy, &mut sealed);
        let mut dev = MqttDevice::new(
            "127.0.0.1",
            s.addr.port(),
            TOKEN,
            Kind::Firmware,
            Config::new(CHUNK, 1 << 20),
        )
        .running("demo", "1.0")
        .buffer_len((CHUNK + SEALED) as usize);
        let offer = dev
            .fetch_offer()
            .await
            .expect("attributes")
            .expect("an offer");
        let mut slot = MemorySlot::new(1 << 20);
        let mut checkpoints = MemoryCheckpoints::default();
        let out = dev
            .download_reader(&offer, reader, &mut slot, &mut checkpoints)
            .await
            .expect("download");
        dev.close().await;
        (out, slot)
    })
}

#[test]
fn signed_encrypted_package_is_verified_and_decrypted_on_the_way() {
    let plain: Vec<u8> = (0..40_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let (out, slot) = update(&package(&signer(), &plain));
    assert_eq!(
        out,
        Outcome::Installed {
            title: "demo".into(),
            version: "1.1".into()
        }
    );
    assert!(slot.finalized);
    assert_eq!(&slot.bytes[..plain.len()], &plain[..]);
}

#[test]
fn package_signed_by_an_unknown_key_fails() {
    let plain = vec![7u8; 20_000];
    let stranger = SigningSecret::from_seed(&[0x33; 32]);
    let (out, slot) = update(&package(&stranger, &plain));
    assert_eq!(
        out,
        Outcome::Failed(ota_core::UpdateError::SignatureInvalid),
        "an unknown signer must fail the update"
    );
    assert!(!slot.finalized);
}
