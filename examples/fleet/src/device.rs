//! One simulated device: an in-memory A/B flash with `ota_core::boot`'s power-safe state,
//! power-cycled until it runs what the server assigns (or has rolled back from it).
//!
//! Each power-on lets [`BootController::boot`] pick the slot; the running version is read
//! from the image header in that slot. A trial image runs the self-test its header carries,
//! then confirms (or rejects, and the next power-on rolls back), and the report the boot
//! state owes (`UPDATED` or `FAILED`) is sent to the server.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ota_core::boot::{
    BootConfig, BootController, BootDecision, BootError, ReportOutcome, Slot, SlotVersion,
};
use ota_core::version::Version;
use ota_testkit::flash::{SimFlash, SimFlashError};

use crate::firmware::{self, BuildError};
use crate::flash::{Chip, SlotWriter, UpdateTarget};
use crate::transport::{DeviceLink, LinkError, TransportKind};

/// Title of the fleet's firmware.
pub const TITLE: &str = "ota-fleet";
/// The version every device leaves the factory with.
pub const FACTORY_VERSION: &str = "1.0.0";
/// Power cycles before giving up (download, trial, roll-back each take one).
const MAX_POWER_CYCLES: u32 = 4;

/// Why a device stopped short of a stable state.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The transport failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The boot state failed.
    #[error("boot state: {0}")]
    Boot(#[from] BootError<SimFlashError>),
    /// The flash failed or a slot holds no image.
    #[error("flash: {0}")]
    Flash(#[from] std::io::Error),
    /// The factory image could not be built.
    #[error("factory image: {0}")]
    Image(#[from] BuildError),
    /// The offered version is not a semantic version.
    #[error("offered version {0:?} is not a semantic version")]
    Version(String),
    /// Still changing after the last power cycle.
    #[error("no stable state after {MAX_POWER_CYCLES} power cycles")]
    NoStableState,
}

/// What the progress view reads from a running device.
#[derive(Debug)]
pub struct DeviceProgress {
    /// Bytes written to the update slot so far.
    pub written: AtomicU64,
    /// The device has stopped (stable, or failed).
    pub done: AtomicBool,
    started: Instant,
    ended: OnceLock<Instant>,
}

impl DeviceProgress {
    /// Progress of a device of a fleet that started at `started`.
    pub fn new(started: Instant) -> Self {
        Self {
            written: AtomicU64::new(0),
            done: AtomicBool::new(false),
            started,
            ended: OnceLock::new(),
        }
    }

    /// From the fleet's start to this device's end (to now while it runs).
    pub fn elapsed_at_end(&self) -> Duration {
        self.ended.get().map_or_else(
            || self.started.elapsed(),
            |e| e.duration_since(self.started),
        )
    }
}

/// How a device ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceEnd {
    /// Runs the assigned version (or nothing newer is assigned).
    Current {
        /// Version read from the booted slot.
        version: String,
        /// The booted slot.
        slot: Slot,
    },
    /// The assigned version failed its self-test and was rolled back.
    RolledBack {
        /// The version that was rolled back.
        failed: String,
        /// Version read from the booted slot (the old one).
        version: String,
        /// The booted slot.
        slot: Slot,
    },
}

impl DeviceEnd {
    /// The version the device runs, read from its booted slot.
    pub fn version(&self) -> &str {
        match self {
            Self::Current { version, .. } | Self::RolledBack { version, .. } => version,
        }
    }
}

/// One simulated device.
pub struct Device {
    chip: Chip,
    link: Box<dyn DeviceLink>,
}

/// What one power-on left running.
struct PowerOn {
    boot: BootController<SimFlash>,
    slot: Slot,
    running: firmware::Header,
}

impl Device {
    /// A device straight from the factory: [`FACTORY_VERSION`] in slot A, the boot state
    /// formatted, slots sized for images of `image_len` bytes, talking through `link`.
    pub fn provision(image_len: usize, link: Box<dyn DeviceLink>) -> Result<Self, DeviceError> {
        let chip = Chip::new(image_len);
        chip.program(
            Slot::A,
            &firmware::build(FACTORY_VERSION, true, image_len.min(chip.slot_len()))?,
        )?;
        let factory = Version::parse(FACTORY_VERSION)
            .map_err(|_| DeviceError::Version(FACTORY_VERSION.into()))?;
        BootController::format(chip.boot_area()?, factory.into(), BootConfig::default())?;
        Ok(Self { chip, link })
    }

    /// The device's transport.
    pub fn transport(&self) -> TransportKind {
        self.link.kind()
    }

    /// Bytes per slot.
    pub fn slot_len(&self) -> u64 {
        self.chip.slot_len() as u64
    }

    /// Powers on: re-opens the boot state, lets it pick the slot, reads the version from that
    /// slot and, for a trial, runs the image's self-test and confirms or rejects it (`None`:
    /// rejected, power-cycle again).
    fn power_on(&self) -> Result<Option<PowerOn>, DeviceError> {
        let mut boot = BootController::open(self.chip.boot_area()?)?;
        let decision = boot.boot()?;
        let running = self.chip.header(decision.slot())?;
        if matches!(decision, BootDecision::Trial { .. }) {
            if running.self_test_passes {
                boot.confirm()?;
            } else {
                boot.reject()?;
                return Ok(None);
            }
        }
        Ok(Some(PowerOn {
            boot,
            slot: decision.slot(),
            running,
        }))
    }

    /// Sends the report the boot state owes the server, then forgets it; returns the version
    /// that was rolled back, if that is what it reported.
    fn report_owed(
        &mut self,
        boot: &mut BootController<SimFlash>,
        title: &str,
        running: &str,
    ) -> Result<Option<String>, DeviceError> {
        let Some(owed) = boot.owed_report() else {
            return Ok(None);
        };
        let failed = match owed.outcome {
            ReportOutcome::Updated => {
                self.link.report_boot(title, running, true)?;
                None
            }
            ReportOutcome::Failed(_) => {
                let version = owed.version.to_string();
                self.link.report_boot(title, &version, false)?;
                Some(version)
            }
        };
        boot.clear_owed_report()?;
        Ok(failed)
    }

    /// Power-cycles until the device runs what the server assigns or has rolled back from
    /// it; `progress` counts the bytes written on the way.
    pub fn run(&mut self, progress: &DeviceProgress) -> Result<DeviceEnd, DeviceError> {
        let mut rolled_back: Option<String> = None;
        for cycle in 1..=MAX_POWER_CYCLES {
            let Some(PowerOn {
                mut boot,
                slot,
                running,
            }) = self.power_on()?
            else {
                continue;
            };
            if cycle == 1 {
                self.link.report_running(TITLE, &running.version)?;
            }
            let offer = self.link.offer()?;
            let title = offer
                .as_ref()
                .map_or(TITLE, |o| o.title.as_str())
                .to_owned();
            if let Some(failed) = self.report_owed(&mut boot, &title, &running.version)? {
                rolled_back = Some(failed);
            }
            let Some(offer) = offer.filter(|o| o.version != running.version) else {
                return Ok(DeviceEnd::Current {
                    version: running.version,
                    slot,
                });
            };
            if rolled_back.as_deref() == Some(offer.version.as_str()) {
                return Ok(DeviceEnd::RolledBack {
                    failed: offer.version,
                    version: running.version,
                    slot,
                });
            }
            let version = SlotVersion::from(
                Version::parse(&offer.version)
                    .map_err(|_| DeviceError::Version(offer.version.clone()))?,
            );
            let target = UpdateTarget {
                slot: SlotWriter::new(&self.chip, &mut boot, version, &progress.written)?,
                checkpoints: self.chip.checkpoint_area()?,
            };
            self.link.download(&offer, target)?;
        }
        Err(DeviceError::NoStableState)
    }
}

/// Marks `progress` done when dropped, however the device thread ends.
pub(crate) struct DoneOnDrop<'a>(pub &'a DeviceProgress);

impl Drop for DoneOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.ended.set(Instant::now());
        self.0.done.store(true, Ordering::Release);
    }
}
