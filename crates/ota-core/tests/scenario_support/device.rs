//! A simulated A/B device on one `SimFlash`: boot-state area, checkpoint sector, two slots.
//! Every flash error is a power cut: the device "restarts" and runs its start-up again.
// Offsets and sizes here are a few hundred KiB: the casts cannot truncate.
#![allow(clippy::cast_possible_truncation)]

use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
use ota_core::boot::{BootConfig, BootController, BootDecision, ReportOutcome, Slot, SlotVersion};
use ota_core::checkpoint::{CHECKPOINT_LEN, Checkpoint};
use ota_core::updater::{Instant, Kind, Offer, PlainReader, Report, State, Updater};
use ota_testkit::clock::VirtualClock;
use ota_testkit::flash::SimFlash;
use ota_testkit::server::ChunkServer;

use super::{End, Host, Script, Trace, config, drive};

/// Erase sector size of the simulated chip.
pub const SECTOR: usize = 4096;
const BOOT_AT: usize = 0;
const CKPT_AT: usize = 2 * SECTOR;
const SLOTS_AT: usize = 3 * SECTOR;

/// The chip and its partitions.
#[derive(Debug)]
pub struct Device {
    pub flash: SimFlash,
    pub slot_len: usize,
    pub chunk: u32,
    pub per_checkpoint: u32,
    /// Start-ups that resumed a download from a checkpoint (re-reading the slot).
    pub resumes: u32,
}

/// What one start-up ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Life {
    /// The new image runs confirmed and its report went out.
    Completed,
    /// The trial was rolled back, the FAILED report went out, the old image runs.
    RolledBack,
    /// The update failed before finalizing; the old image runs.
    UpdateFailed(ota_core::UpdateError),
    /// The device rebooted on purpose (into the trial).
    Rebooted,
    /// Power was cut (a flash operation failed).
    PowerLost,
    /// The boot state could not be opened or the chosen slot holds no valid image.
    Unbootable,
}

/// The images the device knows about.
pub struct Images<'a> {
    pub old: &'a [u8],
    pub old_version: SlotVersion,
    pub new: &'a [u8],
    pub new_version: SlotVersion,
    pub offer: Offer<'a>,
}

/// Knobs for one start-up.
#[derive(Clone, Copy, Debug, Default)]
pub struct StartUp {
    /// The trial image crashes before confirming (never calls `confirm`).
    pub trial_crashes: bool,
}

impl Device {
    /// A fresh chip with `old` in slot A, formatted with `old_version`.
    pub fn new(slot_len: usize, chunk: u32, per_checkpoint: u32, images: &Images<'_>) -> Self {
        let flash = SimFlash::with_seed(SLOTS_AT + 2 * slot_len, 5);
        let dev = Self {
            flash,
            slot_len,
            chunk,
            per_checkpoint,
            resumes: 0,
        };
        let mut a = dev.slot(Slot::A);
        a.write(0, &pad(images.old)).unwrap();
        BootController::format(
            dev.part(BOOT_AT, 2 * SECTOR),
            images.old_version,
            BootConfig::default(),
        )
        .unwrap();
        dev
    }

    /// An independent copy of the chip (power and cut schedule included).
    pub fn fork(&self) -> Self {
        Self {
            flash: self.flash.fork(),
            slot_len: self.slot_len,
            chunk: self.chunk,
            per_checkpoint: self.per_checkpoint,
            resumes: 0,
        }
    }

    fn part(&self, at: usize, len: usize) -> SimFlash {
        self.flash.partition(at, len).unwrap()
    }

    /// The flash handle of `slot`.
    pub fn slot(&self, slot: Slot) -> SimFlash {
        self.part(
            SLOTS_AT + usize::from(slot.index()) * self.slot_len,
            self.slot_len,
        )
    }

    /// Whether `slot` starts with exactly `image` (a boot loader would check its digest).
    pub fn slot_holds(&self, slot: Slot, image: &[u8]) -> bool {
        self.slot(slot).contents().get(..image.len()) == Some(image)
    }

    /// One start-up: boot decision, then confirm a trial or run the update.
    pub fn start_up(
        &mut self,
        images: &Images<'_>,
        server: &mut ChunkServer,
        clock: &mut VirtualClock,
        knobs: StartUp,
        reports: &mut Vec<Report>,
    ) -> Life {
        let mut boot = match BootController::open(self.part(BOOT_AT, 2 * SECTOR)) {
            Ok(b) => b,
            Err(ota_core::boot::BootError::Flash(_)) => return Life::PowerLost,
            Err(_) => return Life::Unbootable,
        };
        let decision = match boot.boot() {
            Ok(d) => d,
            Err(ota_core::boot::BootError::Flash(_)) => return Life::PowerLost,
            Err(_) => return Life::Unbootable,
        };
        // The boot loader checks what it is about to start.
        let expected = match decision {
            BootDecision::Trial { version, .. } if version == images.new_version => images.new,
            BootDecision::Trial { .. } => return Life::Unbootable,
            _ if boot.active_version() == images.new_version => images.new,
            _ if boot.active_version() == images.old_version => images.old,
            _ => return Life::Unbootable,
        };
        if !self.slot_holds(decision.slot(), expected) {
            return Life::Unbootable;
        }
        let now = Instant::from_millis(clock.now_ms());
        let mut buf = vec![0u8; self.chunk as usize];
        let cfg = config(self.chunk, self.slot_len as u64, self.per_checkpoint);
        if let BootDecision::Trial { .. } = decision {
            if knobs.trial_crashes {
                return Life::PowerLost;
            }
            // The new image runs its self-test (it booted, so it passes) and confirms.
            if boot.confirm().is_err() {
                return Life::PowerLost;
            }
            // A stale checkpoint of the finished download must not survive.
            if self.part(CKPT_AT, SECTOR).erase(0, SECTOR as u32).is_err() {
                return Life::PowerLost;
            }
        }
        if let Some(owed) = boot.owed_report() {
            let mut up: Updater<'_, PlainReader> = Updater::new(cfg, &mut buf, None).unwrap();
            let confirmed = owed.outcome == ReportOutcome::Updated;
            up.handle_boot_outcome(Kind::Firmware, confirmed, now);
            while let Some(a) = up.poll_action() {
                if let ota_core::updater::Action::Report(r) = a {
                    reports.push(r);
                }
            }
            if boot.clear_owed_report().is_err() {
                return Life::PowerLost;
            }
            return if confirmed {
                Life::Completed
            } else {
                Life::RolledBack
            };
        }
        if boot.active_version() == images.new_version {
            return Life::Completed;
        }
        // Running the old image: (re)start or resume the offered update.
        let mut ckpt = [0u8; CHECKPOINT_LEN];
        if self.part(CKPT_AT, SECTOR).read(0, &mut ckpt).is_err() {
            return Life::PowerLost;
        }
        let stored = Checkpoint::from_bytes(&ckpt).ok();
        let mut up = Updater::new(cfg, &mut buf, stored.as_ref()).unwrap();
        let offer = images.offer;
        let reader = PlainReader::for_offer(&offer).unwrap();
        if let Err(e) = up.handle_offer(&offer, reader, now) {
            return Life::UpdateFailed(e);
        }
        let mut host = FlashHost {
            slot: self.slot(boot.inactive_slot()),
            ckpt: self.part(CKPT_AT, SECTOR),
            boot: &mut boot,
            version: images.new_version,
        };
        let mut trace = Trace::default();
        let end = drive(
            &mut up,
            server,
            clock,
            &mut host,
            Script::default(),
            &mut trace,
        );
        reports.extend(trace.reports);
        if up.stats().read_back > 0 {
            self.resumes += 1;
        }
        match end {
            End::Reboot => Life::Rebooted,
            End::HostFailed => Life::PowerLost,
            End::Failed(e) => Life::UpdateFailed(e),
            End::Stuck => Life::UpdateFailed(ota_core::UpdateError::InvalidState),
        }
    }

    /// Runs start-ups (restoring power after each cut) until the update completes, rolls
    /// back, fails or the device is unbootable; at most `max` start-ups.
    pub fn run(
        &mut self,
        images: &Images<'_>,
        server: &mut ChunkServer,
        clock: &mut VirtualClock,
        reports: &mut Vec<Report>,
        max: usize,
    ) -> Life {
        for _ in 0..max {
            match self.start_up(images, server, clock, StartUp::default(), reports) {
                Life::PowerLost => {
                    self.flash.power_on();
                    server.drop_in_flight();
                    clock.advance(1_000);
                }
                Life::Rebooted => {}
                end => return end,
            }
        }
        Life::Unbootable
    }
}

/// Pads to the 4-byte program granularity with erased bytes.
pub fn pad(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    while !v.len().is_multiple_of(4) {
        v.push(0xFF);
    }
    v
}

/// The updater's actions on the chip.
struct FlashHost<'a> {
    slot: SimFlash,
    ckpt: SimFlash,
    boot: &'a mut BootController<SimFlash>,
    version: SlotVersion,
}

impl Host for FlashHost<'_> {
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), ()> {
        let start = offset as usize;
        let end = start + data.len();
        // Erase every sector this write enters from its start (a resumed download always
        // begins on a sector boundary, so a half-written sector is never appended to).
        let first = start.div_ceil(SECTOR) * SECTOR;
        let mut s = first;
        while s < end {
            self.slot
                .erase(s as u32, (s + SECTOR) as u32)
                .map_err(|_| ())?;
            s += SECTOR;
        }
        self.slot.write(offset as u32, &pad(data)).map_err(|_| ())
    }
    fn read(&mut self, offset: u64, out: &mut [u8]) -> Result<(), ()> {
        self.slot.read(offset as u32, out).map_err(|_| ())
    }
    fn persist(&mut self, cp: &Checkpoint) -> Result<(), ()> {
        self.ckpt.erase(0, SECTOR as u32).map_err(|_| ())?;
        self.ckpt.write(0, &cp.to_bytes()).map_err(|_| ())
    }
    fn clear_checkpoint(&mut self) -> Result<(), ()> {
        self.ckpt.erase(0, SECTOR as u32).map_err(|_| ())
    }
    fn finalize(&mut self) -> Result<(), ()> {
        self.boot.mark_trial(self.version).map_err(|_| ())
    }
}

/// Whether the last report is the expected final one.
pub fn last_state(reports: &[Report]) -> Option<State> {
    reports.last().map(|r| r.state)
}
