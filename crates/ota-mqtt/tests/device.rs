//! The MQTT device client against the real endpoint (`ota_mqtt::serve` over an `Ota` on
//! SQLite): a full update, resume after a cut connection and after a restart, refused
//! tokens, isolation between sessions.
#![cfg(feature = "device")]

mod common;
mod support;

use std::time::Duration;

use common::{Server, TOKEN, image};
use ota_core::updater::{Config, Kind};
use ota_mqtt::device::{
    DeviceError, LinkOptions, MemoryCheckpoints, MemorySlot, MqttDevice, Outcome,
};
use ota_server::model::UpdateState;
use support::{CutProxy, Probe, Seen, reads_per_index, wait_state};

const CHUNK: u32 = 2048;

fn device(port: u16, token: &str) -> MqttDevice {
    let mut config = Config::new(CHUNK, 1 << 20);
    config.checkpoint_interval = CHUNK * 4;
    config.backoff_base_ms = 20;
    MqttDevice::new("127.0.0.1", port, token, Kind::Firmware, config)
        .running("demo", "1.0")
        .link_options(LinkOptions {
            reconnect_delay: Duration::from_millis(50),
            ..LinkOptions::default()
        })
}

fn installed() -> Outcome {
    Outcome::Installed {
        title: "demo".into(),
        version: "1.1".into(),
    }
}

#[test]
fn device_updates_end_to_end() {
    let img = image(50_000, 7);
    let s = Server::start(&img);
    s.block_on(async {
        let mut dev = device(s.addr.port(), TOKEN);
        let mut slot = MemorySlot::new(1 << 20);
        let mut checkpoints = MemoryCheckpoints::default();
        let out = dev
            .update(&mut slot, &mut checkpoints)
            .await
            .expect("update");
        assert_eq!(out, installed());
        assert_eq!(&slot.bytes[..img.len()], &img[..]);
        assert!(slot.finalized);
        assert_eq!(checkpoints.record, None, "checkpoint cleared at the end");
        dev.report_boot("demo", "1.1", true).await.expect("report");
        // Now it runs 1.1: the same assignment is up to date.
        assert_eq!(
            dev.update(&mut slot, &mut checkpoints)
                .await
                .expect("check"),
            Outcome::UpToDate
        );
        dev.close().await;
        wait_state(s.ota(), s.device.id, UpdateState::Updated).await;
        let state = s
            .ota()
            .store()
            .update_state(s.device.id, ota_server::model::PackageType::Firmware)
            .await
            .expect("state");
        assert_eq!(state.current_version.as_deref(), Some("1.1"));
        let stats = dev.stats();
        assert_eq!(stats.chunk_requests, 25);
        assert_eq!(stats.connections, 1);
    });
    // Every chunk read exactly once, at the device's chunk size.
    let reads = s.chunk_reads();
    assert_eq!(reads_per_index(&reads, 25), vec![1; 25]);
    assert!(reads.iter().all(|&(_, size)| size == u64::from(CHUNK)));
}

#[test]
fn refused_token_and_missing_offer_are_reported() {
    let s = Server::start(&image(5000, 1));
    s.unassigned_device("IDLE");
    s.block_on(async {
        let mut slot = MemorySlot::new(1 << 16);
        let mut checkpoints = MemoryCheckpoints::default();
        let err = device(s.addr.port(), "WRONG")
            .update(&mut slot, &mut checkpoints)
            .await
            .expect_err("refused");
        assert!(
            matches!(err, DeviceError::Refused { .. }),
            "unexpected {err:?}"
        );
        let mut idle = device(s.addr.port(), "IDLE");
        assert_eq!(
            idle.update(&mut slot, &mut checkpoints)
                .await
                .expect("no offer"),
            Outcome::NoOffer
        );
        // Asking for chunks without an assignment: NOT_FOUND, the download is cancelled.
        let offer = ota_mqtt::device::OwnedOffer {
            kind: Kind::Firmware,
            title: "demo".into(),
            version: "1.1".into(),
            size: 5000,
            checksum_algorithm: "SHA256".into(),
            checksum: "00".repeat(32),
            tag: None,
            url: None,
        };
        let out = idle
            .download(&offer, &mut slot, &mut checkpoints)
            .await
            .expect("download ends");
        assert_eq!(out, Outcome::Failed(ota_core::UpdateError::Cancelled));
        idle.close().await;
        // A chunk size over ThingsBoard's limit: PAYLOAD_TOO_LARGE, a typed error.
        let mut greedy = MqttDevice::new(
            "127.0.0.1",
            s.addr.port(),
            TOKEN,
            Kind::Firmware,
            Config::new(70_000, 1 << 20),
        );
        let mut big_slot = MemorySlot::new(1 << 20);
        let err = greedy
            .update(&mut big_slot, &mut checkpoints)
            .await
            .expect_err("refused chunk size");
        assert!(
            matches!(err, DeviceError::ChunkTooLarge(70_000)),
            "unexpected {err:?}"
        );
        greedy.close().await;
        // Nothing listens on a closed port: the client gives up after its reconnects.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let mut nobody = device(port, TOKEN).link_options(LinkOptions {
            reconnect_delay: Duration::from_millis(10),
            max_reconnects: 2,
            ..LinkOptions::default()
        });
        let err = nobody
            .update(&mut slot, &mut checkpoints)
            .await
            .expect_err("unreachable");
        assert!(
            matches!(err, DeviceError::Unreachable { attempts: 3, .. }),
            "unexpected {err:?}"
        );
    });
}

/// Where a connection is cut, from the clock: a different chunk on every run.
fn random_cut(min: usize, max: usize) -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize);
    min + nanos % (max - min)
}

#[test]
fn lost_connection_resumes_without_asking_again_for_verified_chunks() {
    let img = image(64 * 1024, 11);
    let chunks = 32;
    let s = Server::start(&img);
    let cut = random_cut(4_000, 60_000);
    s.block_on(async {
        let proxy = CutProxy::start(s.addr, cut, false).await;
        let mut dev = device(proxy.addr.port(), TOKEN);
        let mut slot = MemorySlot::new(1 << 20);
        let mut checkpoints = MemoryCheckpoints::default();
        let out = dev
            .update(&mut slot, &mut checkpoints)
            .await
            .expect("update");
        assert_eq!(out, installed(), "cut after {cut} bytes");
        assert_eq!(&slot.bytes[..img.len()], &img[..]);
        let stats = dev.stats();
        assert_eq!(stats.disconnects, 1, "cut after {cut} bytes: {stats:?}");
        assert_eq!(stats.connections, 2);
        assert!(proxy.accepted.load(std::sync::atomic::Ordering::SeqCst) >= 2);
        dev.close().await;
    });
    // Only the chunk in flight at the cut may have been read twice (or thrice, if the
    // retry and the reconnection both asked); every other chunk exactly once.
    let counts = reads_per_index(&s.chunk_reads(), chunks);
    let again: Vec<usize> = (0..counts.len()).filter(|&i| counts[i] > 1).collect();
    assert!(
        counts.iter().all(|&c| (1..=3).contains(&c)),
        "cut after {cut}: {counts:?}"
    );
    assert!(
        again.len() <= 1,
        "cut after {cut}: re-read {again:?} ({counts:?})"
    );
}

#[test]
fn restart_resumes_from_the_checkpoint() {
    let img = image(64 * 1024, 12);
    let chunks = 32;
    let s = Server::start(&img);
    let cut = random_cut(20_000, 50_000);
    let mut slot = MemorySlot::new(1 << 20);
    let mut checkpoints = MemoryCheckpoints::default();
    let reads_before = s.block_on(async {
        // The first run loses its connection and cannot get another: it stops.
        let proxy = CutProxy::start(s.addr, cut, true).await;
        let mut dev = device(proxy.addr.port(), TOKEN).link_options(LinkOptions {
            reconnect_delay: Duration::from_millis(10),
            max_reconnects: 1,
            ..LinkOptions::default()
        });
        let err = dev
            .update(&mut slot, &mut checkpoints)
            .await
            .expect_err("connection lost for good");
        assert!(matches!(err, DeviceError::Unreachable { .. }), "{err:?}");
        s.chunk_reads().len()
    });
    let record = checkpoints.record.clone().expect("a checkpoint was stored");
    let checkpoint =
        ota_core::checkpoint::Checkpoint::from_bytes(&record).expect("readable checkpoint");
    let resume_at = u64::from(checkpoint.next_chunk);
    assert!(resume_at >= 4, "cut after {cut}: checkpoint at {resume_at}");
    s.block_on(async {
        // A new process: same slot and checkpoint store, direct connection.
        let mut dev = device(s.addr.port(), TOKEN);
        let out = dev
            .update(&mut slot, &mut checkpoints)
            .await
            .expect("update");
        assert_eq!(out, installed());
        assert_eq!(dev.stats().read_back, checkpoint.written);
        dev.close().await;
    });
    assert_eq!(&slot.bytes[..img.len()], &img[..]);
    let after = &s.chunk_reads()[reads_before..];
    let first = after.iter().map(|&(i, _)| i).min().expect("reads");
    assert_eq!(
        first, resume_at,
        "the restarted download begins at the checkpoint"
    );
    assert_eq!(
        reads_per_index(after, chunks)[usize::try_from(resume_at).expect("fits")..],
        vec![1; usize::try_from(chunks - resume_at).expect("fits")]
    );
}

#[test]
fn sessions_never_see_each_others_answers() {
    let img = image(20_000, 3);
    let s = Server::start(&img);
    s.unassigned_device("OTHER");
    s.block_on(async {
        // Another device, and a second session of the same device, subscribed to every
        // filter the endpoint accepts (and refused the wildcard).
        let mut spies = Vec::new();
        for (token, id) in [("OTHER", "spy-other"), (TOKEN, "spy-same-token")] {
            let p = Probe::connect(s.addr, token, id).await;
            for f in [
                "v1/devices/me/attributes",
                "v1/devices/me/attributes/response/+",
                "v2/fw/response/+/chunk/+",
                "v2/fw/error",
                "#",
            ] {
                p.client
                    .subscribe(f, rumqttc::QoS::AtLeastOnce)
                    .await
                    .expect("subscribe");
            }
            spies.push(p);
        }
        // The same-token session asks with the request id the device will use too.
        spies[1]
            .publish(
                "v1/devices/me/attributes/request/1",
                br#"{"sharedKeys":"fw_title"}"#,
            )
            .await;
        let mut dev = device(s.addr.port(), TOKEN);
        let mut slot = MemorySlot::new(1 << 20);
        let mut checkpoints = MemoryCheckpoints::default();
        let out = dev
            .update(&mut slot, &mut checkpoints)
            .await
            .expect("update");
        assert_eq!(out, installed());
        assert_eq!(&slot.bytes[..img.len()], &img[..]);
        dev.close().await;
        let other = spies[0].drain(Duration::from_millis(500)).await;
        assert!(other.is_empty(), "other device saw {other:?}");
        let same = spies[1].drain(Duration::from_millis(100)).await;
        let publishes: Vec<_> = same
            .iter()
            .filter_map(|s| match s {
                Seen::Publish(t, p) => Some((t.as_str(), p.as_slice())),
                _ => None,
            })
            .collect();
        assert_eq!(
            publishes,
            vec![(
                "v1/devices/me/attributes/response/1",
                &br#"{"shared":{"fw_title":"demo"}}"#[..]
            )],
            "only its own answer"
        );
    });
}

/// Waits (inside the server's runtime) until the server served `n` chunk reads.
async fn after_reads(s: &Server, n: usize) {
    while s.chunk_reads().len() < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[test]
fn a_pushed_reassignment_replaces_the_download_in_progress() {
    let img = image(1 << 20, 31);
    let next = image(30_000, 32);
    let s = Server::start(&img);
    s.block_on(async {
        let mut dev = device(s.addr.port(), TOKEN);
        let mut slot = MemorySlot::new(1 << 20);
        let mut checkpoints = MemoryCheckpoints::default();
        let (out, _) = tokio::join!(dev.update(&mut slot, &mut checkpoints), async {
            after_reads(&s, 8).await;
            s.reassign_async("1.2", &next).await
        });
        assert_eq!(
            out.expect("update"),
            Outcome::Installed {
                title: "demo".into(),
                version: "1.2".into()
            }
        );
        assert_eq!(&slot.bytes[..next.len()], &next[..]);
        dev.close().await;
    });
    // The old package was left part-way.
    let old_reads = s.chunk_reads().iter().filter(|&&(i, _)| i >= 15).count();
    assert!(old_reads < 512 - 15, "the first download was not stopped");
}

#[test]
fn a_pushed_unassignment_cancels_the_download() {
    let img = image(1 << 20, 33);
    let s = Server::start(&img);
    s.block_on(async {
        let mut dev = device(s.addr.port(), TOKEN);
        let mut slot = MemorySlot::new(1 << 20);
        let mut checkpoints = MemoryCheckpoints::default();
        let (out, ()) = tokio::join!(dev.update(&mut slot, &mut checkpoints), async {
            after_reads(&s, 8).await;
            let mut d = s.device.clone();
            d.firmware_id = None;
            s.ota().update_device(&d).await.expect("unassign");
        });
        assert_eq!(
            out.expect("update"),
            Outcome::Failed(ota_core::UpdateError::Cancelled)
        );
        assert_eq!(checkpoints.record, None, "checkpoint dropped");
        assert!(!slot.finalized);
        dev.close().await;
    });
    // It stopped asking: far fewer chunks read than the image has.
    assert!(s.chunk_reads().len() < 512, "the download was not stopped");
}
