//! Transport scenarios: loss, oversize, stall, cancel — the updater against the testkit's
//! scripted chunk server on a virtual clock.

mod scenario_support;

use ota_core::UpdateError;
use ota_core::updater::{PlainReader, State, Updater};
use ota_testkit::clock::VirtualClock;
use ota_testkit::server::{ChunkServer, Faults};
use scenario_support::{End, RamHost, Script, Trace, config, drive, image, offer, sha256_hex};

const MIB: usize = 1 << 20;

#[test]
fn one_mib_completes_with_five_percent_chunk_loss() {
    let img = image(MIB, 11);
    let hex = sha256_hex(&img);
    let offer = offer("app", "2.0.0", MIB as u64, &hex);
    let mut server = ChunkServer::new(img.clone(), Faults::lossy(0.05), 2024);
    let mut clock = VirtualClock::new();
    let mut host = RamHost::new(MIB + 4096);
    let mut buf = vec![0u8; 4096];
    let mut up = Updater::new(config(4096, (MIB + 4096) as u64, 16), &mut buf, None).unwrap();
    let now = ota_core::updater::Instant::from_millis(0);
    up.handle_offer(&offer, PlainReader::for_offer(&offer).unwrap(), now)
        .unwrap();
    let mut trace = Trace::default();
    let end = drive(
        &mut up,
        &mut server,
        &mut clock,
        &mut host,
        Script::default(),
        &mut trace,
    );

    let stats = server.stats();
    println!(
        "1 MiB, 5% loss: {} requests, {} lost, {} retries, {} ms virtual",
        stats.requests,
        stats.lost,
        up.stats().retries,
        clock.now_ms()
    );
    assert_eq!(end, End::Reboot);
    assert!(stats.lost > 0, "the script must actually lose chunks");
    assert_eq!(u64::from(up.stats().retries), stats.lost);
    assert_eq!(&host.slot[..MIB], &img[..]);
    assert!(host.finalized);
    assert_eq!(
        trace.states(),
        ["DOWNLOADING", "DOWNLOADED", "VERIFIED", "UPDATING"]
    );
    // 256 chunks, a checkpoint every 16 → 15 persists (none after the last chunk).
    assert_eq!(trace.persists, 15);
}

#[test]
fn duplicates_and_reordering_are_harmless() {
    let img = image(100_000, 3);
    let hex = sha256_hex(&img);
    let offer = offer("app", "2.0.0", img.len() as u64, &hex);
    let faults = Faults {
        loss: 0.05,
        duplicate: 0.3,
        reorder: 0.3,
        reorder_delay_ms: 3_000,
        ..Faults::none()
    };
    let mut server = ChunkServer::new(img.clone(), faults, 99);
    let mut clock = VirtualClock::new();
    let mut host = RamHost::new(131_072);
    let mut buf = vec![0u8; 1024];
    let mut up = Updater::new(config(1024, 131_072, 8), &mut buf, None).unwrap();
    up.handle_offer(
        &offer,
        PlainReader::for_offer(&offer).unwrap(),
        ota_core::updater::Instant::from_millis(0),
    )
    .unwrap();
    let mut trace = Trace::default();
    let end = drive(
        &mut up,
        &mut server,
        &mut clock,
        &mut host,
        Script::default(),
        &mut trace,
    );
    assert_eq!(end, End::Reboot);
    assert_eq!(&host.slot[..img.len()], &img[..]);
    assert!(server.stats().duplicated > 0 && server.stats().reordered > 0);
    assert!(
        up.stats().ignored > 0,
        "stale answers must have been ignored"
    );
}

#[test]
fn image_larger_than_slot_fails_before_any_request() {
    let img = image(70_000, 5);
    let hex = sha256_hex(&img);
    let offer = offer("app", "2.0.0", img.len() as u64, &hex);
    let mut server = ChunkServer::new(img, Faults::none(), 1);
    let mut clock = VirtualClock::new();
    let mut host = RamHost::new(65_536);
    let mut buf = vec![0u8; 4096];
    let mut up = Updater::new(config(4096, 65_536, 4), &mut buf, None).unwrap();
    let err = up
        .handle_offer(
            &offer,
            PlainReader::for_offer(&offer).unwrap(),
            ota_core::updater::Instant::from_millis(0),
        )
        .unwrap_err();
    assert_eq!(err, UpdateError::InsufficientStorage);
    let mut trace = Trace::default();
    let end = drive(
        &mut up,
        &mut server,
        &mut clock,
        &mut host,
        Script::default(),
        &mut trace,
    );
    assert_eq!(end, End::Failed(UpdateError::InsufficientStorage));
    assert_eq!(trace.requests, 0);
    assert_eq!(server.stats().requests, 0);
    assert_eq!(trace.states(), ["FAILED"]);
    assert_eq!(
        trace.reports[0].error(),
        Some(UpdateError::InsufficientStorage)
    );
    assert_eq!(
        ota_core::updater::fw_error(UpdateError::InsufficientStorage)
            .split(':')
            .next(),
        Some("INSUFFICIENT_STORAGE")
    );
}

#[test]
fn stalled_transport_ends_in_timeout_after_the_configured_retries() {
    let img = image(40_960, 9);
    let hex = sha256_hex(&img);
    let offer = offer("app", "2.0.0", img.len() as u64, &hex);
    let faults = Faults {
        stall_after: Some(4),
        ..Faults::none()
    };
    let mut server = ChunkServer::new(img, faults, 1);
    let mut clock = VirtualClock::new();
    let mut host = RamHost::new(65_536);
    let mut buf = vec![0u8; 4096];
    let cfg = config(4096, 65_536, 4);
    let mut up = Updater::new(cfg, &mut buf, None).unwrap();
    up.handle_offer(
        &offer,
        PlainReader::for_offer(&offer).unwrap(),
        ota_core::updater::Instant::from_millis(0),
    )
    .unwrap();
    let mut trace = Trace::default();
    let end = drive(
        &mut up,
        &mut server,
        &mut clock,
        &mut host,
        Script::default(),
        &mut trace,
    );
    assert_eq!(end, End::Failed(UpdateError::Timeout));
    assert_eq!(up.state(), State::Failed(UpdateError::Timeout));
    // Chunk 4 was asked for once and retried max_retries times, then the machine gave up.
    assert_eq!(server.stats().stalled, 1 + u64::from(cfg.max_retries));
    assert_eq!(up.stats().retries, u32::from(cfg.max_retries) + 1);
    // Time spent: one timeout per try plus the capped back-offs in between.
    let backoffs: u64 = (1..=cfg.max_retries)
        .map(|a| u64::from(cfg.backoff_ms(a)))
        .sum();
    let tries = u64::from(cfg.max_retries) + 1;
    let first_stall_at = 4 * 10; // four answered chunks, 10 ms latency each
    assert_eq!(
        clock.now_ms(),
        first_stall_at + tries * u64::from(cfg.request_timeout_ms) + backoffs
    );
    assert_eq!(trace.states(), ["DOWNLOADING", "FAILED"]);
    assert_eq!(trace.reports[1].error(), Some(UpdateError::Timeout));
    assert!(!host.finalized);
    assert_eq!(
        host.checkpoint, None,
        "a failed download leaves no checkpoint"
    );
}

#[test]
fn deleted_push_mid_download_cancels_cleanly() {
    let img = image(65_536, 21);
    let hex = sha256_hex(&img);
    let offer = offer("app", "2.0.0", img.len() as u64, &hex);
    let mut server = ChunkServer::new(img, Faults::none(), 1);
    let mut clock = VirtualClock::new();
    let mut host = RamHost::new(65_536);
    let mut buf = vec![0u8; 4096];
    let mut up = Updater::new(config(4096, 65_536, 2), &mut buf, None).unwrap();
    up.handle_offer(
        &offer,
        PlainReader::for_offer(&offer).unwrap(),
        ota_core::updater::Instant::from_millis(0),
    )
    .unwrap();
    let mut trace = Trace::default();
    let script = Script {
        cancel_after_writes: Some(5),
    };
    let end = drive(
        &mut up,
        &mut server,
        &mut clock,
        &mut host,
        script,
        &mut trace,
    );
    assert_eq!(end, End::Failed(UpdateError::Cancelled));
    assert_eq!(trace.states(), ["DOWNLOADING", "FAILED"]);
    assert_eq!(trace.reports[1].error(), Some(UpdateError::Cancelled));
    assert_eq!(server.stats().requests, 5, "no request after the cancel");
    assert!(!host.finalized);
    assert_eq!(
        host.checkpoint, None,
        "the checkpoint of chunk 4 was cleared"
    );
    assert_eq!(up.poll_timeout(), None);
    assert_eq!(up.poll_action(), None);
}
