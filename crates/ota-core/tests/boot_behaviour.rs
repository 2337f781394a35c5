//! Behaviour of the boot state: trial, confirm, rollback, owed reports, anti-rollback,
//! corrupted areas, geometries, wear, and the controller's size.

mod boot_support;

use boot_support::{Device, Error, STATE_LEN, v};
use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
use ota_core::boot::{
    BootConfig, BootController, BootDecision, BootError, BootState, FailureReason, OwedReport,
    ReportOutcome, Slot, SlotVersion, TrialState,
};
use ota_testkit::flash::{SimFlash, SimFlashError};

fn config() -> BootConfig {
    BootConfig::default()
}

#[test]
fn fresh_area_boots_slot_a_with_defaults() {
    let dev = Device::new(0);
    let mut boot = dev.open(config()).unwrap();
    assert_eq!(*boot.state(), BootState::default());
    assert_eq!(boot.sequence(), 0);
    let ops = dev.chip.op_count();
    assert_eq!(boot.boot().unwrap(), BootDecision::Normal { slot: Slot::A });
    assert_eq!(dev.chip.op_count(), ops, "a normal boot writes nothing");
    assert_eq!(boot.active_slot(), Slot::A);
    assert_eq!(boot.inactive_slot(), Slot::B);
    assert_eq!(boot.highest_accepted(), SlotVersion::ZERO);
    assert_eq!(boot.owed_report(), None);
}

#[test]
fn confirmed_update_switches_slot_raises_floor_and_owes_updated() {
    let dev = Device::new(0);
    let mut boot = dev.open(config()).unwrap();
    boot.boot().unwrap();
    boot.mark_trial(v(1, 4, 0)).unwrap();
    assert_eq!(
        boot.trial(),
        TrialState::Pending {
            version: v(1, 4, 0)
        }
    );

    let mut boot = dev.open(config()).unwrap(); // restart
    assert_eq!(
        boot.boot().unwrap(),
        BootDecision::Trial {
            slot: Slot::B,
            version: v(1, 4, 0),
            boot: 1
        }
    );
    assert_eq!(
        boot.highest_accepted(),
        SlotVersion::ZERO,
        "not raised before confirm"
    );
    boot.confirm().unwrap();
    assert_eq!(boot.active_slot(), Slot::B);
    assert_eq!(boot.active_version(), v(1, 4, 0));
    assert_eq!(boot.highest_accepted(), v(1, 4, 0));

    let mut boot = dev.open(config()).unwrap(); // the report survives a restart
    assert_eq!(
        boot.owed_report(),
        Some(OwedReport {
            outcome: ReportOutcome::Updated,
            version: v(1, 4, 0)
        })
    );
    assert_eq!(boot.boot().unwrap(), BootDecision::Normal { slot: Slot::B });
    boot.clear_owed_report().unwrap();
    let boot = dev.open(config()).unwrap();
    assert_eq!(boot.owed_report(), None);
    assert_eq!(boot.inactive_slot(), Slot::A);
}

#[test]
fn unconfirmed_trial_rolls_back_and_failed_report_survives_reboot() {
    let dev = Device::new(0);
    let mut boot = dev.open(config()).unwrap();
    boot.mark_trial(v(2, 0, 0)).unwrap();
    let mut boot = dev.open(config()).unwrap();
    assert_eq!(boot.boot().unwrap().slot(), Slot::B);
    // The trial crashes before confirming: next start-up.
    let mut boot = dev.open(config()).unwrap();
    assert_eq!(
        boot.boot().unwrap(),
        BootDecision::RolledBack {
            slot: Slot::A,
            failed: v(2, 0, 0)
        }
    );
    let failed = Some(OwedReport {
        outcome: ReportOutcome::Failed(FailureReason::TrialNotConfirmed { boots: 1 }),
        version: v(2, 0, 0),
    });
    assert_eq!(boot.owed_report(), failed);
    // Power cycle before the report reached the server.
    let mut boot = dev.open(config()).unwrap();
    assert_eq!(boot.owed_report(), failed);
    assert_eq!(boot.boot().unwrap(), BootDecision::Normal { slot: Slot::A });
    assert_eq!(
        boot.highest_accepted(),
        SlotVersion::ZERO,
        "a failed trial raises nothing"
    );
    assert_eq!(
        FailureReason::TrialNotConfirmed { boots: 1 }.wire_name(),
        "TRIAL_NOT_CONFIRMED"
    );
    // The same version may be tried again.
    boot.mark_trial(v(2, 0, 0)).unwrap();
}

#[test]
fn trial_gets_max_trial_boots_start_ups() {
    let dev = Device::new(0);
    let cfg = BootConfig::new(3);
    let mut boot = dev.open(cfg).unwrap();
    boot.mark_trial(v(1, 0, 0)).unwrap();
    for n in 1..=3 {
        let mut boot = dev.open(cfg).unwrap();
        assert_eq!(
            boot.boot().unwrap(),
            BootDecision::Trial {
                slot: Slot::B,
                version: v(1, 0, 0),
                boot: n
            }
        );
    }
    let mut boot = dev.open(cfg).unwrap();
    assert_eq!(
        boot.boot().unwrap(),
        BootDecision::RolledBack {
            slot: Slot::A,
            failed: v(1, 0, 0)
        }
    );
    assert_eq!(
        boot.owed_report().unwrap().outcome,
        ReportOutcome::Failed(FailureReason::TrialNotConfirmed { boots: 3 })
    );
}

#[test]
fn zero_max_trial_boots_behaves_as_one() {
    let dev = Device::new(0);
    let cfg = BootConfig::new(0);
    let mut boot = dev.open(cfg).unwrap();
    boot.mark_trial(v(1, 0, 0)).unwrap();
    let mut boot = dev.open(cfg).unwrap();
    assert!(matches!(
        boot.boot().unwrap(),
        BootDecision::Trial { boot: 1, .. }
    ));
    let mut boot = dev.open(cfg).unwrap();
    assert!(matches!(
        boot.boot().unwrap(),
        BootDecision::RolledBack { .. }
    ));
}

#[test]
fn rejected_trial_rolls_back_with_rejected_report() {
    let dev = Device::new(0);
    let mut boot = dev.open(config()).unwrap();
    boot.mark_trial(v(1, 0, 0)).unwrap();
    let mut boot = dev.open(config()).unwrap();
    boot.boot().unwrap();
    boot.reject().unwrap();
    assert_eq!(
        boot.owed_report(),
        Some(OwedReport {
            outcome: ReportOutcome::Failed(FailureReason::Rejected),
            version: v(1, 0, 0)
        })
    );
    let mut boot = dev.open(config()).unwrap();
    assert_eq!(boot.boot().unwrap(), BootDecision::Normal { slot: Slot::A });
}

#[test]
fn reject_cancels_a_pending_trial_without_report() {
    let dev = Device::new(0);
    let mut boot = dev.open(config()).unwrap();
    boot.mark_trial(v(1, 0, 0)).unwrap();
    boot.reject().unwrap();
    assert_eq!(boot.trial(), TrialState::None);
    assert_eq!(boot.owed_report(), None);
}

#[test]
fn downgrade_below_highest_accepted_is_a_typed_error_across_reboots() {
    let dev = Device::new(0);
    let mut boot = dev.open(config()).unwrap();
    boot.mark_trial(v(3, 1, 4)).unwrap();
    let mut boot = dev.open(config()).unwrap();
    boot.boot().unwrap();
    boot.confirm().unwrap();
    let mut boot = dev.open(config()).unwrap();
    let seq = boot.sequence();
    let err = boot.mark_trial(v(3, 1, 3)).unwrap_err();
    assert_eq!(
        err,
        BootError::Downgrade {
            offered: v(3, 1, 3),
            highest: v(3, 1, 4)
        }
    );
    assert_eq!(
        err.to_string(),
        "version 3.1.3 is below the highest accepted version 3.1.4"
    );
    assert_eq!(boot.sequence(), seq, "a refused trial writes nothing");
    assert_eq!(boot.trial(), TrialState::None);
    // Equal and higher versions are accepted; major beats minor beats patch.
    boot.mark_trial(v(3, 1, 4)).unwrap();
    boot.mark_trial(v(4, 0, 0)).unwrap();
    assert!(matches!(
        boot.mark_trial(v(2, 99, 99)),
        Err(BootError::Downgrade { .. })
    ));
}

#[test]
fn mark_trial_while_trial_runs_is_refused() {
    let dev = Device::new(0);
    let mut boot = dev.open(config()).unwrap();
    boot.mark_trial(v(1, 0, 0)).unwrap();
    let mut boot = dev.open(config()).unwrap();
    boot.boot().unwrap();
    assert_eq!(
        boot.mark_trial(v(1, 0, 1)),
        Err(BootError::TrialRunning {
            version: v(1, 0, 0)
        })
    );
}

#[test]
fn confirm_reject_clear_without_anything_to_do_write_nothing() {
    let dev = Device::new(0);
    let mut boot = dev.open(config()).unwrap();
    boot.boot().unwrap();
    let ops = dev.chip.op_count();
    boot.confirm().unwrap();
    boot.reject().unwrap();
    boot.clear_owed_report().unwrap();
    assert_eq!(dev.chip.op_count(), ops);
}

#[test]
fn boot_twice_in_one_start_up_returns_the_same_decision_without_io() {
    let dev = Device::new(0);
    let mut boot = dev.open(config()).unwrap();
    boot.mark_trial(v(1, 0, 0)).unwrap();
    let mut boot = dev.open(config()).unwrap();
    let first = boot.boot().unwrap();
    let ops = dev.chip.op_count();
    assert_eq!(boot.boot().unwrap(), first);
    assert_eq!(boot.decision(), Some(first));
    assert_eq!(dev.chip.op_count(), ops);
}

#[test]
fn garbage_in_both_sectors_is_corrupt_and_format_recovers() {
    let dev = Device::new(0);
    dev.state.poke(0, &[0x5A; 200]).unwrap();
    dev.state.poke(4096, &[0xA5; 200]).unwrap();
    assert_eq!(dev.open(config()).unwrap_err(), BootError::Corrupt);
    let boot = BootController::format(dev.state.clone(), v(1, 0, 0), config()).unwrap();
    assert_eq!(boot.active_version(), v(1, 0, 0));
    assert_eq!(boot.highest_accepted(), v(1, 0, 0));
    let boot = dev.open(config()).unwrap();
    assert_eq!(boot.active_slot(), Slot::A);
    assert_eq!(boot.highest_accepted(), v(1, 0, 0));
}

#[test]
fn garbage_in_sector_0_with_blank_sector_1_falls_back_to_defaults() {
    // Indistinguishable from a first record write cut by power loss: clean default state.
    let dev = Device::new(0);
    dev.state.poke(0, &[0x00; 116]).unwrap();
    let boot = dev.open(config()).unwrap();
    assert_eq!(*boot.state(), BootState::default());
}

#[test]
fn one_corrupted_record_falls_back_to_the_other() {
    let dev = Device::new(0);
    let mut boot = dev.open(config()).unwrap();
    boot.mark_trial(v(1, 0, 0)).unwrap(); // sector 0
    boot.mark_trial(v(1, 0, 1)).unwrap(); // sector 1 (newest)
    dev.state.poke(4096, &[0x00]).unwrap(); // its magic
    let boot = dev.open(config()).unwrap();
    assert_eq!(
        boot.trial(),
        TrialState::Pending {
            version: v(1, 0, 0)
        }
    );
}

#[test]
fn geometry_that_cannot_hold_two_records_is_a_typed_error() {
    let one_sector = SimFlash::<1, 4, 4096>::new(4096);
    assert_eq!(
        BootController::open(one_sector).unwrap_err(),
        BootError::Geometry {
            capacity: 4096,
            erase_size: 4096,
            write_size: 4,
            read_size: 1,
            record_area: 116
        }
    );
    let huge_write = SimFlash::<1, 512, 4096>::new(8192);
    assert!(matches!(
        BootController::open(huge_write),
        Err(BootError::Geometry {
            record_area: 512,
            ..
        })
    ));
    let tiny_sector = SimFlash::<1, 4, 64>::new(1024);
    assert!(matches!(
        BootController::open(tiny_sector),
        Err(BootError::Geometry { erase_size: 64, .. })
    ));
}

/// The same update cycle on several flash geometries.
fn cycle<const R: usize, const W: usize, const E: usize>() {
    let flash = SimFlash::<R, W, E>::new(4 * E);
    let mut boot = BootController::open(flash.clone()).unwrap();
    boot.mark_trial(v(1, 0, 0)).unwrap();
    let mut boot = BootController::open(flash.clone()).unwrap();
    assert_eq!(boot.boot().unwrap().slot(), Slot::B);
    boot.confirm().unwrap();
    let boot = BootController::open(flash.clone()).unwrap();
    assert_eq!(boot.active_slot(), Slot::B);
    assert_eq!(boot.highest_accepted(), v(1, 0, 0));
    // Only the first two sectors are used.
    assert!(flash.contents()[2 * E..].iter().all(|&b| b == 0xFF));
}

#[test]
fn works_on_several_geometries() {
    cycle::<1, 1, 256>();
    cycle::<1, 4, 4096>();
    cycle::<4, 8, 2048>();
    cycle::<16, 32, 131_072>();
    cycle::<1, 256, 4096>();
}

#[test]
fn state_changes_alternate_sectors_and_leave_slots_alone() {
    let dev = Device::new(0);
    let mut slot_b = dev.slot_b.clone();
    slot_b.write(0, b"IMG1").unwrap();
    let mut boot = dev.open(config()).unwrap();
    for minor in 0..10 {
        boot.mark_trial(v(1, minor, 0)).unwrap();
    }
    assert_eq!(dev.state.erase_count(0), Some(5));
    assert_eq!(dev.state.erase_count(1), Some(5));
    assert_eq!(dev.slot_b.erase_count(0), Some(0));
    let mut img = [0u8; 4];
    slot_b.read(0, &mut img).unwrap();
    assert_eq!(&img, b"IMG1");
    assert_eq!(boot.sequence(), 10);
}

#[test]
fn state_survives_a_process_restart_through_a_file() {
    let dir = std::env::temp_dir().join(format!("ota-boot-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.bin");
    {
        let flash = SimFlash::<1, 4, 4096>::open_file(&path, STATE_LEN).unwrap();
        let mut boot = BootController::open(flash).unwrap();
        boot.mark_trial(v(5, 0, 0)).unwrap();
        flash_cut_mid_boot(&boot.into_inner());
    }
    let flash = SimFlash::<1, 4, 4096>::open_file(&path, STATE_LEN).unwrap();
    let mut boot = BootController::open(flash).unwrap();
    assert_eq!(
        boot.trial(),
        TrialState::Pending {
            version: v(5, 0, 0)
        }
    );
    assert_eq!(boot.boot().unwrap().slot(), Slot::B);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Starts a boot whose record write is cut during its erase (then the process "dies").
fn flash_cut_mid_boot(flash: &SimFlash<1, 4, 4096>) {
    let mut boot = BootController::open(flash.clone()).unwrap();
    flash.cut_after(0);
    assert!(matches!(
        boot.boot(),
        Err(Error::Flash(SimFlashError::PowerCut { .. }))
    ));
}

#[test]
fn slot_version_conversions_and_display() {
    let sv = SlotVersion::from((1, 2, 3));
    assert_eq!(sv.to_string(), "1.2.3");
    assert_eq!(<(u64, u64, u64)>::from(sv), (1, 2, 3));
    let parsed = ota_core::version::Version::parse("1.2.3-rc.1").unwrap();
    assert_eq!(SlotVersion::from(parsed), sv, "pre-release is dropped");
    assert_eq!(Slot::A.other(), Slot::B);
    assert_eq!(Slot::from_index(1), Some(Slot::B));
    assert_eq!(Slot::from_index(2), None);
}

#[test]
fn controller_size() {
    let own = core::mem::size_of::<BootController<SimFlash>>();
    let borrowed = core::mem::size_of::<BootController<&mut SimFlash>>();
    let state = core::mem::size_of::<BootState>();
    eprintln!(
        "size_of: BootController<SimFlash> = {own}, <&mut SimFlash> = {borrowed}, BootState = {state}"
    );
    assert!(
        borrowed <= 192,
        "BootController<&mut F> is {borrowed} bytes"
    );
}

/// Builds a record byte by byte from the layout table in the module docs (independently of the
/// encoder) and checks the controller reads it as documented.
#[test]
fn documented_layout_is_what_open_reads() {
    fn ver(out: &mut Vec<u8>, (a, b, c): (u64, u64, u64)) {
        for n in [a, b, c] {
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
    let mut r = Vec::new();
    r.extend_from_slice(b"OTAB");
    r.extend_from_slice(&[1, 1, 2, 1]); // format 1, active B, trial booted, 1 boot
    r.extend_from_slice(&7u32.to_le_bytes()); // sequence
    ver(&mut r, (1, 0, 0)); // active version
    ver(&mut r, (1, 0, 0)); // highest accepted
    ver(&mut r, (1, 1, 0)); // trial version
    r.extend_from_slice(&[2, 1, 3, 0]); // owed FAILED, not confirmed after 3 boots
    ver(&mut r, (0, 9, 0)); // owed report version
    assert_eq!(r.len(), 112);
    let crc = crc32_ieee(&r);
    r.extend_from_slice(&crc.to_le_bytes());

    let flash = SimFlash::<1, 4, 4096>::new(STATE_LEN);
    flash.poke(4096, &r).unwrap(); // sector 1, sector 0 blank
    let boot = BootController::open(flash).unwrap();
    assert_eq!(boot.sequence(), 7);
    assert_eq!(boot.active_slot(), Slot::B);
    assert_eq!(boot.active_version(), v(1, 0, 0));
    assert_eq!(boot.highest_accepted(), v(1, 0, 0));
    assert_eq!(
        boot.trial(),
        TrialState::Booted {
            version: v(1, 1, 0),
            boots: 1
        }
    );
    assert_eq!(
        boot.owed_report(),
        Some(OwedReport {
            outcome: ReportOutcome::Failed(FailureReason::TrialNotConfirmed { boots: 3 }),
            version: v(0, 9, 0)
        })
    );
}

/// Bitwise CRC-32/IEEE (reflected, poly 0xEDB88320), independent of the crate's `crc32fast`.
fn crc32_ieee(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
