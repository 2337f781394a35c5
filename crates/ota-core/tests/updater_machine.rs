//! The updater state machine, event by event.
// Test slots are a few KiB: offsets cannot truncate.
#![allow(clippy::cast_possible_truncation)]

mod scenario_support;

use ota_core::UpdateError;
use ota_core::checkpoint::Checkpoint;
use ota_core::updater::{
    Action, Config, ConfigError, FW_ERROR_CAPACITY, Instant, Kind, Offer, PlainReader, Progress,
    State, Updater, fw_error,
};
use scenario_support::{image, sha256_hex};

const T0: Instant = Instant::from_millis(0);

fn cfg() -> Config {
    let mut c = Config::new(100, 10_000);
    c.checkpoint_interval = 200;
    c.request_timeout_ms = 1_000;
    c.backoff_base_ms = 100;
    c.backoff_max_ms = 400;
    c.max_retries = 3;
    c
}

fn drain(up: &mut Updater<'_, PlainReader>) -> Vec<Action> {
    std::iter::from_fn(|| up.poll_action()).collect()
}

fn start<'b>(buf: &'b mut [u8], offer: &Offer<'_>) -> Updater<'b, PlainReader> {
    let mut up = Updater::new(cfg(), buf, None).unwrap();
    up.handle_offer(offer, PlainReader::for_offer(offer).unwrap(), T0)
        .unwrap();
    up
}

fn report_states(actions: &[Action]) -> Vec<&'static str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Report(r) => Some(r.state_name()),
            _ => None,
        })
        .collect()
}

#[test]
fn updater_fits_in_one_kib() {
    let size = core::mem::size_of::<Updater<'static, PlainReader>>();
    println!("size_of::<Updater<PlainReader>>() = {size} bytes");
    assert!(size <= 1024, "{size} bytes");
}

#[test]
fn config_is_checked() {
    let mut buf = [0u8; 64];
    let mut c = cfg();
    c.chunk_size = 0;
    assert_eq!(
        Updater::<PlainReader>::new(c, &mut buf, None).unwrap_err(),
        ConfigError::ZeroChunkSize
    );
    assert_eq!(
        Updater::<PlainReader>::new(cfg(), &mut buf, None).unwrap_err(),
        ConfigError::BufferTooSmall {
            buffer: 64,
            chunk_size: 100
        }
    );
    let mut buf = [0u8; 100];
    let mut c = cfg();
    c.checkpoint_interval = 150;
    let e = Updater::<PlainReader>::new(c, &mut buf, None).unwrap_err();
    assert_eq!(
        e,
        ConfigError::CheckpointInterval {
            interval: 150,
            chunk_size: 100
        }
    );
    assert_eq!(
        e.to_string(),
        "checkpoint interval 150 is not a multiple of chunk size 100"
    );
}

#[test]
fn offer_fields_are_bounded_never_truncated() {
    let hex = sha256_hex(b"x");
    let t64 = "t".repeat(64);
    let t65 = "t".repeat(65);
    let mut buf = [0u8; 100];
    let ok = Offer::new(Kind::Firmware, &t64, &t64, 1, "SHA256", &hex);
    let up = start(&mut buf, &ok);
    assert_eq!(up.title(), Some(t64.as_str()));
    assert_eq!(up.version(), Some(t64.as_str()));

    for (offer, want) in [
        (
            Offer::new(Kind::Firmware, &t65, "1", 1, "SHA256", &hex),
            UpdateError::TitleTooLong,
        ),
        (
            Offer::new(Kind::Firmware, "a", &t65, 1, "SHA256", &hex),
            UpdateError::VersionTooLong,
        ),
        (
            Offer::new(Kind::Firmware, "a", "1", 1, "SHA1", &hex),
            UpdateError::UnsupportedAlgorithm,
        ),
        (
            Offer::new(Kind::Firmware, "a", "1", 1, "SHA256", "abc"),
            UpdateError::InvalidPackage,
        ),
        (
            Offer::new(Kind::Firmware, "a", "1", 0, "SHA256", &hex),
            UpdateError::InvalidPackage,
        ),
    ] {
        let mut buf = [0u8; 100];
        let mut up: Updater<'_, PlainReader> = Updater::new(cfg(), &mut buf, None).unwrap();
        let reader = PlainReader::new(
            ota_core::checksum::Hasher::digest(ota_core::checksum::ChecksumAlgorithm::Md5, b""),
            1,
        );
        assert_eq!(up.handle_offer(&offer, reader, T0), Err(want));
        assert_eq!(up.state(), State::Failed(want));
        let actions = drain(&mut up);
        assert_eq!(report_states(&actions), ["FAILED"]);
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::RequestChunk { .. }))
        );
    }
}

#[test]
fn software_offers_report_as_software() {
    let img = image(150, 1);
    let hex = sha256_hex(&img);
    let offer = Offer::new(Kind::Software, "tool", "3", 150, "SHA256", &hex);
    let mut buf = [0u8; 100];
    let mut up = start(&mut buf, &offer);
    let Some(Action::Report(r)) = up.poll_action() else {
        panic!("expected a report first")
    };
    assert_eq!(
        (r.kind, r.kind.prefix(), r.state),
        (Kind::Software, "sw", State::Downloading)
    );
}

#[test]
#[allow(clippy::too_many_lines)] // one story, event by event
fn full_sequence_with_stale_duplicate_and_bad_answers() {
    let img = image(250, 2);
    let hex = sha256_hex(&img);
    let offer = Offer::new(Kind::Firmware, "app", "2", 250, "SHA256", &hex);
    let mut buf = [0u8; 100];
    let mut up = start(&mut buf, &offer);
    assert_eq!(
        drain(&mut up),
        [
            Action::Report(ota_core::updater::Report {
                kind: Kind::Firmware,
                state: State::Downloading,
                progress: Progress {
                    done: 0,
                    total: 250
                }
            }),
            Action::RequestChunk {
                index: 0,
                size: 100
            }
        ]
    );
    assert_eq!(up.poll_timeout(), Some(Instant::from_millis(1_000)));

    up.handle_chunk(0, &img[..100], T0).unwrap();
    // While the write is pending, a duplicate is ignored.
    up.handle_chunk(0, &img[..100], T0).unwrap();
    assert_eq!(
        drain(&mut up),
        [Action::Write {
            offset: 0,
            len: 100
        }]
    );
    assert_eq!(up.chunk_data(), &img[..100]);
    up.handle_write_done(T0).unwrap();
    assert_eq!(
        drain(&mut up),
        [Action::RequestChunk {
            index: 1,
            size: 100
        }]
    );

    // A stale duplicate of chunk 0 is ignored without any action.
    up.handle_chunk(0, &img[..100], T0).unwrap();
    assert_eq!(drain(&mut up), []);
    assert_eq!(up.stats().ignored, 2);
    assert_eq!(up.stats().retries, 0);

    // An answer for a chunk never asked for: dropped, the expected one re-requested after
    // the back-off (one retry).
    up.handle_chunk(2, &img[200..], Instant::from_millis(10))
        .unwrap();
    assert_eq!(up.poll_timeout(), Some(Instant::from_millis(110)));
    up.handle_timeout(Instant::from_millis(50)); // early: nothing
    assert_eq!(drain(&mut up), []);
    up.handle_timeout(Instant::from_millis(110));
    assert_eq!(
        drain(&mut up),
        [Action::RequestChunk {
            index: 1,
            size: 100
        }]
    );

    // A short chunk: dropped and retried.
    up.handle_chunk(1, &img[100..150], Instant::from_millis(120))
        .unwrap();
    assert_eq!(up.stats().retries, 2);
    up.handle_timeout(Instant::from_millis(320));
    assert_eq!(
        drain(&mut up),
        [Action::RequestChunk {
            index: 1,
            size: 100
        }]
    );

    up.handle_chunk(1, &img[100..200], Instant::from_millis(330))
        .unwrap();
    assert_eq!(
        drain(&mut up),
        [Action::Write {
            offset: 100,
            len: 100
        }]
    );
    assert_eq!(up.handle_chunk(1, &img[100..200], T0), Ok(()));
    up.handle_write_done(T0).unwrap();
    let actions = drain(&mut up);
    assert!(matches!(actions[0], Action::Persist(ref c) if c.written == 200 && c.next_chunk == 2));
    assert_eq!(
        actions[1],
        Action::RequestChunk {
            index: 2,
            size: 100
        }
    );

    up.handle_chunk(2, &img[200..], T0).unwrap();
    assert_eq!(
        drain(&mut up),
        [Action::Write {
            offset: 200,
            len: 50
        }]
    );
    up.handle_write_done(T0).unwrap();
    let actions = drain(&mut up);
    assert_eq!(
        report_states(&actions),
        ["DOWNLOADED", "VERIFIED", "UPDATING"]
    );
    assert_eq!(actions.last(), Some(&Action::Finalize));
    assert_eq!(up.state(), State::Updating);
    assert_eq!(up.poll_timeout(), None);
    // Too late to cancel.
    up.handle_cancel(T0);
    assert_eq!(up.state(), State::Updating);
    up.handle_finalize_done(T0).unwrap();
    assert_eq!(drain(&mut up), [Action::ClearCheckpoint, Action::Reboot]);
    assert_eq!(up.handle_finalize_done(T0), Err(UpdateError::InvalidState));
}

#[test]
fn out_of_order_driver_calls_are_invalid_state() {
    let img = image(100, 3);
    let hex = sha256_hex(&img);
    let offer = Offer::new(Kind::Firmware, "app", "2", 100, "SHA256", &hex);
    let mut buf = [0u8; 100];
    let mut up = start(&mut buf, &offer);
    drain(&mut up);
    assert_eq!(up.handle_write_done(T0), Err(UpdateError::InvalidState));
    assert_eq!(
        up.handle_read_back(&[0; 10], T0),
        Err(UpdateError::InvalidState)
    );
    assert_eq!(up.handle_finalize_done(T0), Err(UpdateError::InvalidState));
    assert_eq!(
        up.state(),
        State::Downloading,
        "a driver bug does not fail the update"
    );
}

#[test]
fn timeouts_back_off_deterministically_then_fail() {
    let img = image(300, 4);
    let hex = sha256_hex(&img);
    let offer = Offer::new(Kind::Firmware, "app", "2", 300, "SHA256", &hex);
    let mut buf = [0u8; 100];
    let mut up = start(&mut buf, &offer);
    drain(&mut up);
    let mut now = 0;
    let mut requests = vec![];
    while let Some(t) = up.poll_timeout() {
        now = t.as_millis();
        up.handle_timeout(t);
        for a in drain(&mut up) {
            if let Action::RequestChunk { index, .. } = a {
                requests.push((now, index));
            }
        }
    }
    // timeout 1000, back-offs 100, 200, 400, 400 (capped); 3 retries then TIMEOUT.
    assert_eq!(requests, [(1_100, 0), (2_300, 0), (3_700, 0)]);
    assert_eq!(now, 4_700);
    assert_eq!(up.state(), State::Failed(UpdateError::Timeout));
    assert_eq!(cfg().backoff_ms(4), 400);
    assert_eq!(cfg().backoff_ms(200), 400);
}

#[test]
fn transport_errors_end_in_network_error() {
    let img = image(300, 4);
    let hex = sha256_hex(&img);
    let offer = Offer::new(Kind::Firmware, "app", "2", 300, "SHA256", &hex);
    let mut buf = [0u8; 100];
    let mut up = start(&mut buf, &offer);
    drain(&mut up);
    for _ in 0..4 {
        up.handle_transport_error(T0);
    }
    assert_eq!(up.state(), State::Failed(UpdateError::Network));
    let actions = drain(&mut up);
    assert_eq!(actions[0], Action::ClearCheckpoint);
    let Action::Report(r) = actions[1] else {
        panic!()
    };
    assert_eq!(r.error(), Some(UpdateError::Network));
    assert_eq!(
        &*fw_error(UpdateError::Network),
        "NETWORK_ERROR: the transport failed after all retries"
    );
}

#[test]
fn same_offer_again_is_ignored_a_new_one_restarts() {
    let img = image(300, 5);
    let hex = sha256_hex(&img);
    let offer = Offer::new(Kind::Firmware, "app", "2", 300, "SHA256", &hex);
    let mut buf = [0u8; 100];
    let mut up = start(&mut buf, &offer);
    drain(&mut up);
    up.handle_offer(&offer, PlainReader::for_offer(&offer).unwrap(), T0)
        .unwrap();
    assert_eq!(drain(&mut up), []);
    let other = Offer::new(Kind::Firmware, "app", "3", 300, "SHA256", &hex);
    up.handle_offer(&other, PlainReader::for_offer(&other).unwrap(), T0)
        .unwrap();
    assert_eq!(up.version(), Some("3"));
    assert_eq!(report_states(&drain(&mut up)), ["DOWNLOADING"]);
}

/// Downloads the first `chunks` chunks into `slot`, returning the last checkpoint.
fn partial(img: &[u8], offer: &Offer<'_>, slot: &mut [u8], chunks: u32) -> Checkpoint {
    let mut buf = [0u8; 100];
    let mut up = start(&mut buf, offer);
    let mut last = None;
    let mut done = 0;
    while let Some(a) = up.poll_action() {
        match a {
            Action::RequestChunk { index, .. } if done < chunks => {
                let s = index as usize * 100;
                up.handle_chunk(index, &img[s..(s + 100).min(img.len())], T0)
                    .unwrap();
            }
            Action::Write { offset, len } => {
                slot[offset as usize..][..len].copy_from_slice(up.chunk_data());
                done += 1;
                up.handle_write_done(T0).unwrap();
            }
            Action::Persist(c) => last = Some(c),
            _ => {}
        }
    }
    last.expect("a checkpoint was persisted")
}

fn finish(up: &mut Updater<'_, PlainReader>, img: &[u8], slot: &mut [u8]) -> Vec<Action> {
    let mut seen = vec![];
    while let Some(a) = up.poll_action() {
        seen.push(a.clone());
        match a {
            Action::RequestChunk { index, .. } => {
                let s = index as usize * 100;
                up.handle_chunk(index, &img[s..(s + 100).min(img.len())], T0)
                    .unwrap();
            }
            Action::ReadBack { offset, len } => {
                let bytes = slot[offset as usize..][..len].to_vec();
                up.handle_read_back(&bytes, T0).unwrap();
            }
            Action::Write { offset, len } => {
                slot[offset as usize..][..len].copy_from_slice(up.chunk_data());
                up.handle_write_done(T0).unwrap();
            }
            _ => {}
        }
    }
    seen
}

#[test]
fn resume_rehashes_the_slot_and_continues() {
    let img = image(950, 6);
    let hex = sha256_hex(&img);
    let offer = Offer::new(Kind::Firmware, "app", "2", 950, "SHA256", &hex);
    let mut slot = vec![0xFF; 1024];
    let cp = partial(&img, &offer, &mut slot, 5);
    assert_eq!((cp.written, cp.next_chunk), (400, 4));
    let cp = Checkpoint::from_bytes(&cp.to_bytes()).unwrap();

    let mut buf = [0u8; 100];
    let mut up = Updater::new(cfg(), &mut buf, Some(&cp)).unwrap();
    up.handle_offer(&offer, PlainReader::for_offer(&offer).unwrap(), T0)
        .unwrap();
    let seen = finish(&mut up, &img, &mut slot);
    let read_backs: Vec<_> = seen
        .iter()
        .filter_map(|a| match a {
            Action::ReadBack { offset, len } => Some((*offset, *len)),
            _ => None,
        })
        .collect();
    assert_eq!(read_backs, [(0, 100), (100, 100), (200, 100), (300, 100)]);
    let first_request = seen.iter().find_map(|a| match a {
        Action::RequestChunk { index, .. } => Some(*index),
        _ => None,
    });
    assert_eq!(first_request, Some(4));
    assert_eq!(
        report_states(&seen),
        ["DOWNLOADING", "DOWNLOADED", "VERIFIED", "UPDATING"]
    );
    assert_eq!(&slot[..950], &img[..]);
    assert_eq!(up.stats().read_back, 400);
}

#[test]
fn resume_over_a_corrupted_slot_restarts_from_zero() {
    let img = image(950, 7);
    let hex = sha256_hex(&img);
    let offer = Offer::new(Kind::Firmware, "app", "2", 950, "SHA256", &hex);
    let mut slot = vec![0xFF; 1024];
    let cp = partial(&img, &offer, &mut slot, 5);
    slot[123] ^= 1;
    let mut buf = [0u8; 100];
    let mut up = Updater::new(cfg(), &mut buf, Some(&cp)).unwrap();
    up.handle_offer(&offer, PlainReader::for_offer(&offer).unwrap(), T0)
        .unwrap();
    let seen = finish(&mut up, &img, &mut slot);
    let pos_clear = seen.iter().position(|a| *a == Action::ClearCheckpoint);
    let pos_req0 = seen.iter().position(|a| {
        *a == Action::RequestChunk {
            index: 0,
            size: 100,
        }
    });
    assert!(pos_clear.is_some() && pos_clear < pos_req0);
    assert_eq!(up.state(), State::Updating);
    assert_eq!(&slot[..950], &img[..], "the corrupted byte was rewritten");
}

#[test]
fn a_checkpoint_of_another_package_is_dropped() {
    let img = image(950, 8);
    let hex = sha256_hex(&img);
    let offer = Offer::new(Kind::Firmware, "app", "2", 950, "SHA256", &hex);
    let mut slot = vec![0xFF; 1024];
    let cp = partial(&img, &offer, &mut slot, 3);
    let newer = Offer::new(Kind::Firmware, "app", "3", 950, "SHA256", &hex);
    let mut buf = [0u8; 100];
    let mut up = Updater::new(cfg(), &mut buf, Some(&cp)).unwrap();
    up.handle_offer(&newer, PlainReader::for_offer(&newer).unwrap(), T0)
        .unwrap();
    let actions = drain(&mut up);
    assert_eq!(
        actions[1..],
        [
            Action::ClearCheckpoint,
            Action::RequestChunk {
                index: 0,
                size: 100
            }
        ]
    );
}

#[test]
fn cancel_while_idle_drops_a_stored_checkpoint() {
    let img = image(950, 9);
    let hex = sha256_hex(&img);
    let offer = Offer::new(Kind::Firmware, "app", "2", 950, "SHA256", &hex);
    let mut slot = vec![0xFF; 1024];
    let cp = partial(&img, &offer, &mut slot, 3);
    let mut buf = [0u8; 100];
    let mut up: Updater<'_, PlainReader> = Updater::new(cfg(), &mut buf, Some(&cp)).unwrap();
    up.handle_cancel(T0);
    assert_eq!(drain(&mut up), [Action::ClearCheckpoint]);
    up.handle_cancel(T0);
    assert_eq!(drain(&mut up), []);
    assert_eq!(up.state(), State::Idle);
}

#[test]
fn checksum_mismatch_never_finalizes() {
    let img = image(250, 10);
    let hex = sha256_hex(b"something else");
    let offer = Offer::new(Kind::Firmware, "app", "2", 250, "SHA256", &hex);
    let mut buf = [0u8; 100];
    let mut up = start(&mut buf, &offer);
    let mut slot = vec![0xFF; 256];
    let seen = finish(&mut up, &img, &mut slot);
    assert!(!seen.contains(&Action::Finalize));
    assert_eq!(
        report_states(&seen),
        ["DOWNLOADING", "DOWNLOADED", "FAILED"]
    );
    assert_eq!(up.state(), State::Failed(UpdateError::ChecksumMismatch));
}

#[test]
fn boot_outcomes_report_updated_or_failed() {
    let mut buf = [0u8; 100];
    let mut up: Updater<'_, PlainReader> = Updater::new(cfg(), &mut buf, None).unwrap();
    up.handle_boot_outcome(Kind::Software, true, T0);
    let Some(Action::Report(r)) = up.poll_action() else {
        panic!()
    };
    assert_eq!((r.kind, r.state_name()), (Kind::Software, "UPDATED"));
    up.handle_boot_outcome(Kind::Firmware, false, T0);
    let Some(Action::Report(r)) = up.poll_action() else {
        panic!()
    };
    assert_eq!(r.error(), Some(UpdateError::InstallationFailed));
}

#[test]
fn fw_error_starts_with_the_wire_name_and_is_never_cut() {
    for e in UpdateError::ALL {
        let text = fw_error(e);
        assert!(text.starts_with(&format!("{}: ", e.wire_name())), "{text}");
        assert_eq!(text.as_str(), e.to_string());
        assert!(text.len() < FW_ERROR_CAPACITY);
        assert_eq!(UpdateError::from_wire_name(&text), Some(e));
    }
}

#[test]
fn progress_percent() {
    assert_eq!(Progress { done: 0, total: 0 }.percent(), 0);
    assert_eq!(Progress { done: 1, total: 3 }.percent(), 33);
    assert_eq!(Progress { done: 5, total: 3 }.percent(), 100);
    assert_eq!(
        Progress {
            done: u64::MAX,
            total: u64::MAX
        }
        .percent(),
        100
    );
}

#[test]
fn a_failed_slot_write_fails_the_update_as_installation_failed() {
    let img = image(250, 11);
    let hex = sha256_hex(&img);
    let offer = Offer::new(Kind::Firmware, "app", "2", 250, "SHA256", &hex);
    let mut buf = [0u8; 100];
    let mut up = start(&mut buf, &offer);
    drain(&mut up);
    up.handle_chunk(0, &img[..100], T0).unwrap();
    assert_eq!(
        drain(&mut up),
        [Action::Write {
            offset: 0,
            len: 100
        }]
    );
    up.handle_error(UpdateError::InstallationFailed, T0);
    assert_eq!(up.state(), State::Failed(UpdateError::InstallationFailed));
    let actions = drain(&mut up);
    assert_eq!(actions[0], Action::ClearCheckpoint);
    assert_eq!(report_states(&actions), ["FAILED"]);
    // The late completion of that write is harmless, and an idle machine ignores errors.
    assert_eq!(up.handle_write_done(T0), Ok(()));
    up.handle_error(UpdateError::Network, T0);
    assert_eq!(up.state(), State::Failed(UpdateError::InstallationFailed));
    assert_eq!(drain(&mut up), []);
}
