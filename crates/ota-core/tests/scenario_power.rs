//! Power-cut scenarios on the simulated A/B device: a cut at any flash operation of the whole
//! update (download, slot writes, checkpoints, finalize, trial boot, confirm, report) ends with
//! the exact new image confirmed or a clean rollback — never an unbootable device.

mod scenario_support;

use ota_core::UpdateError;
use ota_core::boot::{BootController, Slot, SlotVersion};
use ota_core::updater::State;
use ota_testkit::clock::VirtualClock;
use ota_testkit::server::{ChunkServer, Faults};
use rand::{Rng, SeedableRng, rngs::StdRng};
use scenario_support::device::{Device, Images, Life, StartUp, last_state};
use scenario_support::{image, offer, sha256_hex};

const SLOT: usize = 64 * 1024;
const IMAGE: usize = 40_000;
const CHUNK: u32 = 256;
const PER_CHECKPOINT: u32 = 16;

fn setup<'a>(old: &'a [u8], new: &'a [u8], hex: &'a str) -> Images<'a> {
    Images {
        old,
        old_version: SlotVersion::new(1, 0, 0),
        new,
        new_version: SlotVersion::new(2, 0, 0),
        offer: offer("app", "2.0.0", new.len() as u64, hex),
    }
}

#[test]
fn power_cut_at_1000_random_points_never_leaves_the_device_unbootable() {
    let old = image(IMAGE - 1_000, 1);
    let new = image(IMAGE, 2);
    let hex = sha256_hex(&new);
    let images = setup(&old, &new, &hex);

    // A clean run counts the flash operations of the whole update.
    let pristine = Device::new(SLOT, CHUNK, PER_CHECKPOINT, &images);
    let base = pristine.flash.op_count();
    let mut reference = pristine.fork();
    let mut server = ChunkServer::new(new.clone(), Faults::lossy(0.02), 7);
    let mut clock = VirtualClock::new();
    let mut reports = Vec::new();
    assert_eq!(
        reference.run(&images, &mut server, &mut clock, &mut reports, 10),
        Life::Completed
    );
    let total_ops = reference.flash.op_count() - base;
    assert!(
        total_ops > 100,
        "the update must take many flash operations"
    );

    let mut rng = StdRng::seed_from_u64(0x0DA_2026);
    let (mut completed, mut rolled_back, mut failed, mut unbootable) = (0u32, 0u32, 0u32, 0u32);
    let mut resumed = 0;
    let mut fired = 0u32;
    for i in 0..1000u64 {
        let cut = rng.random_range(0..total_ops);
        let mut dev = pristine.fork();
        dev.flash.reseed(i);
        dev.flash.cut_after(cut);
        let mut server = ChunkServer::new(new.clone(), Faults::lossy(0.02), i);
        let mut clock = VirtualClock::new();
        let mut reports = Vec::new();
        let life = dev.run(&images, &mut server, &mut clock, &mut reports, 20);
        resumed += u32::from(dev.resumes > 0);
        fired += u32::from(!dev.flash.cut_pending());
        // Whatever happened, the device must come up on a valid image afterwards.
        let mut boot = BootController::open(dev.flash.partition(0, 8192).unwrap()).unwrap();
        let decision = boot.boot().unwrap();
        let running = if boot.active_version() == images.new_version {
            &new[..]
        } else {
            &old[..]
        };
        let bootable = dev.slot_holds(decision.slot(), running);
        match life {
            Life::Completed if bootable && running == &new[..] => {
                assert_eq!(last_state(&reports), Some(State::Updated), "cut {cut}");
                completed += 1;
            }
            Life::RolledBack if bootable && running == &old[..] => {
                assert_eq!(
                    last_state(&reports),
                    Some(State::Failed(UpdateError::InstallationFailed)),
                    "cut {cut}"
                );
                rolled_back += 1;
            }
            Life::UpdateFailed(_) if bootable => failed += 1,
            other => {
                eprintln!("cut at op {cut}: {other:?}, bootable {bootable}");
                unbootable += 1;
            }
        }
    }
    println!(
        "1000 cuts over {total_ops} flash ops: {completed} completed, {rolled_back} rolled back, \
         {failed} failed cleanly, {unbootable} unbootable; {fired} cuts fired, {resumed} resumed \
         from a checkpoint"
    );
    assert!(
        fired >= 990,
        "almost every scheduled cut must land inside the update"
    );
    assert!(
        resumed > 0,
        "cuts during the download must resume, not restart"
    );
    assert_eq!(unbootable, 0);
    assert_eq!(failed, 0, "a power cut must never fail the update");
    assert_eq!(completed + rolled_back, 1000);
    assert!(completed > 0 && rolled_back > 0);
}

#[test]
fn unconfirmed_trial_rolls_back_and_the_owed_failed_report_survives_a_reboot() {
    let old = image(30_000, 3);
    let new = image(32_000, 4);
    let hex = sha256_hex(&new);
    let images = setup(&old, &new, &hex);
    let mut dev = Device::new(SLOT, CHUNK, PER_CHECKPOINT, &images);
    let mut server = ChunkServer::new(new.clone(), Faults::none(), 1);
    let mut clock = VirtualClock::new();
    let mut reports = Vec::new();

    // Start-up 1: download, verify, finalize, reboot.
    let life = dev.start_up(
        &images,
        &mut server,
        &mut clock,
        StartUp::default(),
        &mut reports,
    );
    assert_eq!(life, Life::Rebooted);
    assert!(dev.slot_holds(Slot::B, &new));
    // Start-up 2: the trial image crashes before confirming.
    let crash = StartUp {
        trial_crashes: true,
    };
    assert_eq!(
        dev.start_up(&images, &mut server, &mut clock, crash, &mut reports),
        Life::PowerLost
    );
    // Start-up 3: the boot loader rolls back; power is cut before the report goes out.
    let mut boot = BootController::open(dev.flash.partition(0, 8192).unwrap()).unwrap();
    let decision = boot.boot().unwrap();
    assert_eq!(decision.slot(), Slot::A);
    let owed = boot.owed_report().expect("a FAILED report is owed");
    assert!(matches!(
        owed.outcome,
        ota_core::boot::ReportOutcome::Failed(_)
    ));
    assert_eq!(owed.version, images.new_version);
    drop(boot);
    // Start-up 4: still owed after the reboot; it is sent as FAILED / INSTALLATION_FAILED.
    let before = reports.len();
    let life = dev.start_up(
        &images,
        &mut server,
        &mut clock,
        StartUp::default(),
        &mut reports,
    );
    assert_eq!(life, Life::RolledBack);
    assert_eq!(reports.len(), before + 1);
    assert_eq!(reports[before].state_name(), "FAILED");
    assert_eq!(
        reports[before].error(),
        Some(UpdateError::InstallationFailed)
    );
    assert!(dev.slot_holds(Slot::A, &old));
    let boot = BootController::open(dev.flash.partition(0, 8192).unwrap()).unwrap();
    assert_eq!(boot.owed_report(), None, "cleared once sent");
    assert_eq!(boot.active_version(), images.old_version);
}

#[test]
fn checksum_mismatch_fails_and_the_old_slot_stays_bootable() {
    let old = image(30_000, 5);
    let new = image(32_000, 6);
    let wrong = sha256_hex(b"not the image");
    let images = setup(&old, &new, &wrong);
    let mut dev = Device::new(SLOT, CHUNK, PER_CHECKPOINT, &images);
    let mut server = ChunkServer::new(new.clone(), Faults::lossy(0.05), 3);
    let mut clock = VirtualClock::new();
    let mut reports = Vec::new();
    let life = dev.start_up(
        &images,
        &mut server,
        &mut clock,
        StartUp::default(),
        &mut reports,
    );
    assert_eq!(life, Life::UpdateFailed(UpdateError::ChecksumMismatch));
    let states: Vec<_> = reports
        .iter()
        .map(ota_core::updater::Report::state_name)
        .collect();
    assert_eq!(states, ["DOWNLOADING", "DOWNLOADED", "FAILED"]);
    assert_eq!(
        reports.last().and_then(ota_core::updater::Report::error),
        Some(UpdateError::ChecksumMismatch)
    );
    // Nothing was finalized: no trial, slot A boots the old image.
    let mut boot = BootController::open(dev.flash.partition(0, 8192).unwrap()).unwrap();
    let decision = boot.boot().unwrap();
    assert_eq!(
        decision,
        ota_core::boot::BootDecision::Normal { slot: Slot::A }
    );
    assert!(dev.slot_holds(Slot::A, &old));
    assert_eq!(boot.trial(), ota_core::boot::TrialState::None);
}
