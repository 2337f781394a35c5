//! Power-cut safety of the boot state: every flash operation of every state change is cut,
//! exhaustively along a scripted update history and at random points of random histories.

mod boot_support;

use boot_support::{Device, Error, Expect, Step, apply, model, v};
use ota_core::boot::{BootConfig, BootDecision, BootState, TrialState};
use ota_testkit::flash::{SimFlashError, TearMode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A history that visits every kind of state change from both sectors; the trial of 1.1.0 is
/// started `max_boots + 1` times so that it is rolled back.
fn script(max_boots: u8) -> Vec<Step> {
    let mut s = vec![
        Step::Boot,
        Step::MarkTrial(v(1, 0, 0)), // the very first record
        Step::MarkTrial(v(1, 0, 1)), // replace a pending trial
        Step::Restart,
        Step::Boot, // pending -> booted
        Step::Confirm,
        Step::ClearOwed,
        Step::MarkTrial(v(1, 1, 0)),
    ];
    for _ in 0..=max_boots {
        s.extend([Step::Restart, Step::Boot]); // the last one rolls back, FAILED owed
    }
    s.extend([
        Step::ClearOwed,
        Step::MarkTrial(v(1, 2, 0)),
        Step::Restart,
        Step::Boot,
        Step::Reject, // the trial rejects itself
        Step::Restart,
        Step::Boot,
        Step::MarkTrial(v(1, 3, 0)),
        Step::Reject, // cancel a pending trial
        Step::ClearOwed,
        Step::MarkTrial(v(2, 0, 0)),
        Step::Restart,
        Step::Boot,
        Step::Confirm,
        Step::ClearOwed,
    ]);
    s
}

/// Runs `script[..k]` on a fresh device; returns the device, controller and whether `boot`
/// ran in the current start-up.
fn replay(
    script: &[Step],
    seed: u64,
    mode: TearMode,
    config: BootConfig,
    k: usize,
) -> (Device, boot_support::Ctrl, bool) {
    let dev = Device::new(seed);
    dev.chip.set_tear_mode(mode);
    let mut ctrl = dev.open(config).unwrap();
    let mut booted = false;
    for &step in &script[..k] {
        apply(&dev, &mut ctrl, config, step).unwrap();
        booted = match step {
            Step::Boot => true,
            Step::Restart => false,
            _ => booted,
        };
    }
    (dev, ctrl, booted)
}

/// After a cut: power on, reopen, and check the state is `old` or `new` and still boots.
fn check_recovery(dev: &Device, config: BootConfig, old: &BootState, new: &BootState) -> bool {
    dev.chip.power_on();
    let mut ctrl = dev
        .open(config)
        .unwrap_or_else(|e| panic!("reopen after a cut failed: {e:?}"));
    let got = *ctrl.state();
    assert!(
        got == *old || got == *new,
        "after a cut the state is neither old nor new:\n got {got:?}\n old {old:?}\n new {new:?}"
    );
    let Expect::State(after_boot) = model(got, false, Step::Boot, config.max_trial_boots) else {
        unreachable!("boot never fails in the model")
    };
    let decision = ctrl.boot().expect("a recovered device must boot");
    assert_eq!(*ctrl.state(), after_boot);
    let expected_slot = match got.trial {
        TrialState::Booted { boots, .. } if boots >= config.max_trial_boots => got.active,
        TrialState::None => got.active,
        _ => got.active.other(),
    };
    assert_eq!(decision.slot(), expected_slot, "{decision:?} from {got:?}");
    got == *new && old != new
}

#[test]
fn every_cut_point_of_every_state_change_leaves_old_or_new_state() {
    let mut cut_points = 0usize;
    let mut saw_new = 0usize;
    for config in [BootConfig::new(1), BootConfig::new(2)] {
        for mode in [TearMode::Prefix, TearMode::RandomWords] {
            for seed in 0..3 {
                let script = script(config.max_trial_boots);
                for (k, &step) in script.iter().enumerate() {
                    if step == Step::Restart {
                        continue;
                    }
                    // Dry run: the state change's operations and its result.
                    let (dev, mut ctrl, _) = replay(&script, seed, mode, config, k);
                    let old = *ctrl.state();
                    let before = dev.chip.op_count();
                    apply(&dev, &mut ctrl, config, step).unwrap();
                    let ops = dev.chip.op_count() - before;
                    let new = *ctrl.state();
                    if new == old {
                        assert_eq!(
                            ops, 0,
                            "step {k} {step:?} changed nothing but did flash I/O"
                        );
                    } else {
                        assert_eq!(ops, 3, "step {k} {step:?}: erase + program + read-back");
                    }
                    for cut in 0..ops {
                        let (dev, mut ctrl, _) = replay(&script, seed, mode, config, k);
                        // A distinct tear (prefix length, garbled bits) per cut point.
                        dev.chip.reseed((seed << 32) ^ ((k as u64) << 8) ^ cut);
                        dev.chip.cut_after(cut);
                        let err = apply(&dev, &mut ctrl, config, step).unwrap_err();
                        assert!(
                            matches!(err, Error::Flash(SimFlashError::PowerCut { .. })),
                            "step {k} cut {cut}: {err:?}"
                        );
                        assert_eq!(
                            *ctrl.state(),
                            old,
                            "a failed write keeps the in-memory state"
                        );
                        saw_new += usize::from(check_recovery(&dev, config, &old, &new));
                        cut_points += 1;
                    }
                }
            }
        }
    }
    // (19 + 20) writing steps x 3 ops x 2 modes x 3 seeds.
    assert_eq!(cut_points, 702, "only {cut_points} cut points");
    assert!(
        saw_new > 0 && saw_new < cut_points,
        "{saw_new} of {cut_points} recovered the new state"
    );
    eprintln!("exhaustive: {cut_points} cut points, {saw_new} recovered the new state");
}

fn random_step(rng: &mut StdRng, highest: ota_core::boot::SlotVersion) -> Step {
    match rng.random_range(0..10u8) {
        0 | 1 => Step::Boot,
        2 | 3 => {
            // Mostly upgrades, sometimes a downgrade or the same version.
            let base = highest.minor;
            let minor = if rng.random_bool(0.2) {
                base.saturating_sub(1)
            } else {
                base + rng.random_range(0..3)
            };
            Step::MarkTrial(v(1, minor, rng.random_range(0..3)))
        }
        4 => Step::Confirm,
        5 => Step::Reject,
        6 => Step::ClearOwed,
        _ => Step::Restart,
    }
}

#[test]
fn random_cuts_in_random_histories_leave_old_or_new_state() {
    const TARGET_CUTS: usize = 1_500;
    let mut rng = StdRng::seed_from_u64(0xB007_5AFE);
    let mut cuts = 0usize;
    let mut steps = 0usize;
    let mut rollbacks = 0usize;
    while cuts < TARGET_CUTS {
        let config = BootConfig::new(rng.random_range(1..=3));
        let dev = Device::new(rng.random());
        dev.chip.set_tear_mode(if rng.random_bool(0.5) {
            TearMode::Prefix
        } else {
            TearMode::RandomWords
        });
        let mut ctrl = dev.open(config).unwrap();
        let mut booted = false;
        for _ in 0..200 {
            let step = random_step(&mut rng, ctrl.highest_accepted());
            let old = *ctrl.state();
            let expect = model(old, booted, step, config.max_trial_boots);
            let cut = rng.random_bool(0.4);
            if cut {
                dev.chip.cut_after(rng.random_range(0..4));
            }
            let result = apply(&dev, &mut ctrl, config, step);
            steps += 1;
            if !dev.chip.is_powered() {
                cuts += 1;
                assert!(matches!(
                    result,
                    Err(Error::Flash(SimFlashError::PowerCut { .. }))
                ));
                let Expect::State(new) = expect else {
                    panic!("{step:?} was refused by the model but did flash I/O")
                };
                dev.chip.power_on();
                ctrl = dev.open(config).expect("reopen after a cut");
                assert!(
                    *ctrl.state() == old || *ctrl.state() == new,
                    "{step:?}: {:?}",
                    ctrl.state()
                );
                booted = false;
                continue;
            }
            dev.chip.power_on(); // cancel a cut the step did not reach
            match expect {
                Expect::State(new) => {
                    result.unwrap_or_else(|e| panic!("{step:?} from {old:?}: {e:?}"));
                    assert_eq!(*ctrl.state(), new, "{step:?} from {old:?}");
                }
                Expect::Downgrade => assert!(matches!(result, Err(Error::Downgrade { .. }))),
                Expect::TrialRunning => assert!(matches!(result, Err(Error::TrialRunning { .. }))),
            }
            if let (Step::Boot, Some(BootDecision::RolledBack { .. })) = (step, ctrl.decision()) {
                rollbacks += usize::from(!booted);
            }
            booted = match step {
                Step::Boot => true,
                Step::Restart => false,
                _ => booted,
            };
        }
    }
    assert!(rollbacks > 0, "the random histories never rolled back");
    eprintln!("random: {cuts} cuts in {steps} steps, {rollbacks} rollbacks");
}
