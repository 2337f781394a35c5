//! Properties of the boot state: the record parser never panics on arbitrary bytes and the
//! state round-trips through flash after any history (via the fuzz oracle `fuzz_check`, which
//! also replays every step with a power cut and checks "old or new").

mod boot_support;

use boot_support::{Device, Step, apply, v};
use embedded_storage::nor_flash::NorFlash;
use ota_core::boot::{BootConfig, BootController, fuzz_check};
use ota_testkit::flash::SimFlash;
use proptest::prelude::*;

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        Just(Step::Boot),
        (0u64..4, 0u64..4).prop_map(|(minor, patch)| Step::MarkTrial(v(1, minor, patch))),
        Just(Step::Confirm),
        Just(Step::Reject),
        Just(Step::ClearOwed),
        Just(Step::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_area_and_script_never_panic(data in proptest::collection::vec(any::<u8>(), 0..700)) {
        fuzz_check(&data);
    }

    #[test]
    fn blank_area_with_arbitrary_script_keeps_invariants(script in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut data = vec![0xFF; 512];
        data.extend(script);
        fuzz_check(&data);
    }

    #[test]
    fn state_round_trips_through_flash_after_any_history(
        steps in proptest::collection::vec(step(), 0..40),
        max in 1u8..4,
    ) {
        let dev = Device::new(0);
        let config = BootConfig::new(max);
        let mut ctrl = dev.open(config).unwrap();
        for s in steps {
            let _ = apply(&dev, &mut ctrl, config, s);
            let reopened = dev.open(config).unwrap();
            prop_assert_eq!(reopened.state(), ctrl.state());
            prop_assert_eq!(reopened.sequence(), ctrl.sequence());
        }
    }
}

/// A 512-byte area written by the real controller on a 256-byte-sector flash, as `fuzz_check`
/// expects, so the oracle also starts from valid, non-trivial states.
fn valid_area(steps: &[Step]) -> Vec<u8> {
    let flash = SimFlash::<1, 4, 256>::new(512);
    let mut ctrl = BootController::open(flash.clone()).unwrap();
    for s in steps {
        let _ = match s {
            Step::Boot => ctrl.boot().map(drop),
            Step::MarkTrial(version) => ctrl.mark_trial(*version),
            Step::Confirm => ctrl.confirm(),
            Step::Reject => ctrl.reject(),
            Step::ClearOwed => ctrl.clear_owed_report(),
            Step::Restart => {
                ctrl = BootController::open(flash.clone()).unwrap();
                Ok(())
            }
        };
    }
    assert_eq!(<SimFlash<1, 4, 256> as NorFlash>::ERASE_SIZE, 256);
    flash.contents()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn valid_areas_with_cut_scripts_keep_invariants(
        steps in proptest::collection::vec(step(), 0..12),
        script in proptest::collection::vec(any::<u8>(), 1..120),
    ) {
        let mut data = valid_area(&steps);
        data.extend(script);
        fuzz_check(&data);
    }
}

#[test]
fn fuzz_corpus_seeds_pass_the_oracle() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/boot_state");
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        fuzz_check(&data);
        seeds += 1;
    }
    assert!(seeds >= 5, "only {seeds} seeds in {}", dir.display());
}
