//! Shared pieces of the `boot_*` tests: a device with a boot-state partition and two slots, the
//! state changes as values, and a reference model of the boot state machine.
#![allow(dead_code)]

use ota_core::boot::{
    BootConfig, BootController, BootError, BootState, FailureReason, OwedReport, ReportOutcome,
    SlotVersion, TrialState,
};
use ota_testkit::flash::{SimFlash, SimFlashError};

/// 4 KiB sectors, 4-byte programs: common MCU internal flash.
pub type Flash = SimFlash<1, 4, 4096>;
pub type Ctrl = BootController<Flash>;
pub type Error = BootError<SimFlashError>;

/// Bytes of the boot-state partition (two sectors) and of each image slot.
pub const STATE_LEN: usize = 2 * 4096;
pub const SLOT_LEN: usize = 4 * 4096;

/// One device: boot-state area at 0, slot A, slot B.
pub struct Device {
    pub chip: Flash,
    pub state: Flash,
    pub slot_a: Flash,
    pub slot_b: Flash,
}

impl Device {
    pub fn new(seed: u64) -> Self {
        let chip = Flash::with_seed(STATE_LEN + 2 * SLOT_LEN, seed);
        Self {
            state: chip.partition(0, STATE_LEN).unwrap(),
            slot_a: chip.partition(STATE_LEN, SLOT_LEN).unwrap(),
            slot_b: chip.partition(STATE_LEN + SLOT_LEN, SLOT_LEN).unwrap(),
            chip,
        }
    }

    pub fn open(&self, config: BootConfig) -> Result<Ctrl, Error> {
        BootController::open_with(self.state.clone(), config)
    }
}

pub const fn v(major: u64, minor: u64, patch: u64) -> SlotVersion {
    SlotVersion::new(major, minor, patch)
}

/// A state change (or a restart) applied to a controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Boot,
    MarkTrial(SlotVersion),
    Confirm,
    Reject,
    ClearOwed,
    /// Power-cycle the device: reopen, forget this start-up's decision.
    Restart,
}

/// Applies `step`; `Restart` replaces `ctrl` with a freshly opened one.
pub fn apply(dev: &Device, ctrl: &mut Ctrl, config: BootConfig, step: Step) -> Result<(), Error> {
    match step {
        Step::Boot => ctrl.boot().map(drop),
        Step::MarkTrial(version) => ctrl.mark_trial(version),
        Step::Confirm => ctrl.confirm(),
        Step::Reject => ctrl.reject(),
        Step::ClearOwed => ctrl.clear_owed_report(),
        Step::Restart => {
            *ctrl = dev.open(config)?;
            Ok(())
        }
    }
}

/// What the model expects a step to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The state becomes this one (possibly unchanged).
    State(BootState),
    Downgrade,
    TrialRunning,
}

/// Reference model of one step, written from the module documentation. `booted` says whether
/// `boot()` already ran in this start-up.
pub fn model(s: BootState, booted: bool, step: Step, max_boots: u8) -> Expect {
    let mut n = s;
    match step {
        Step::Restart => {}
        Step::Boot if booted => {}
        Step::Boot => match s.trial {
            TrialState::None => {}
            TrialState::Pending { version } => n.trial = TrialState::Booted { version, boots: 1 },
            TrialState::Booted { version, boots } if boots < max_boots.max(1) => {
                n.trial = TrialState::Booted {
                    version,
                    boots: boots + 1,
                };
            }
            TrialState::Booted { version, boots } => {
                n.trial = TrialState::None;
                n.owed = Some(OwedReport {
                    outcome: ReportOutcome::Failed(FailureReason::TrialNotConfirmed { boots }),
                    version,
                });
            }
        },
        Step::MarkTrial(version) => {
            if matches!(s.trial, TrialState::Booted { .. }) {
                return Expect::TrialRunning;
            }
            if version < s.highest_accepted {
                return Expect::Downgrade;
            }
            n.trial = TrialState::Pending { version };
        }
        Step::Confirm => {
            if let TrialState::Booted { version, .. } = s.trial {
                n.active = s.active.other();
                n.active_version = version;
                n.highest_accepted = s.highest_accepted.max(version);
                n.trial = TrialState::None;
                n.owed = Some(OwedReport {
                    outcome: ReportOutcome::Updated,
                    version,
                });
            }
        }
        Step::Reject => match s.trial {
            TrialState::None => {}
            TrialState::Pending { .. } => n.trial = TrialState::None,
            TrialState::Booted { version, .. } => {
                n.trial = TrialState::None;
                n.owed = Some(OwedReport {
                    outcome: ReportOutcome::Failed(FailureReason::Rejected),
                    version,
                });
            }
        },
        Step::ClearOwed => n.owed = None,
    }
    Expect::State(n)
}
