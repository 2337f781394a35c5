//! Power-safe A/B boot state over `embedded-storage`'s [`NorFlash`].
//!
//! A device has two image slots, [`Slot::A`] and [`Slot::B`]. One is **active** (confirmed);
//! an update is written to the other (the [`inactive_slot`](BootController::inactive_slot)),
//! then [`mark_trial`](BootController::mark_trial) asks for it to be tried at the next start-up.
//! Every start-up calls [`boot`](BootController::boot) once, which decides what to run:
//!
//! * no trial pending → the active slot ([`BootDecision::Normal`]);
//! * a trial pending, or a trial that has booted fewer than
//!   [`BootConfig::max_trial_boots`] times → the trial slot ([`BootDecision::Trial`]);
//! * a trial that booted `max_trial_boots` times without [`confirm`](BootController::confirm)
//!   → back to the active slot ([`BootDecision::RolledBack`]) and a FAILED report is owed.
//!
//! The running trial either calls [`confirm`](BootController::confirm) (the trial slot becomes
//! active, the highest accepted version is raised, an UPDATED report is owed) or
//! [`reject`](BootController::reject) (roll back at the next start-up, a FAILED report is owed).
//! The owed report survives reboots until [`clear_owed_report`](BootController::clear_owed_report)
//! after the server acknowledged it. Anti-rollback: [`mark_trial`](BootController::mark_trial)
//! refuses a version below [`highest_accepted`](BootController::highest_accepted)
//! ([`BootError::Downgrade`]), and that bound survives reboots.
//!
//! ```
//! use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash};
//! use ota_core::boot::{BootController, BootDecision, ReportOutcome, Slot, SlotVersion};
//! # struct Ram([u8; 8192]);
//! # impl ErrorType for Ram { type Error = NorFlashErrorKind; }
//! # impl ReadNorFlash for Ram {
//! #     const READ_SIZE: usize = 1;
//! #     fn read(&mut self, o: u32, b: &mut [u8]) -> Result<(), Self::Error> {
//! #         let o = o as usize; b.copy_from_slice(&self.0[o..o + b.len()]); Ok(())
//! #     }
//! #     fn capacity(&self) -> usize { self.0.len() }
//! # }
//! # impl NorFlash for Ram {
//! #     const WRITE_SIZE: usize = 4;
//! #     const ERASE_SIZE: usize = 4096;
//! #     fn erase(&mut self, f: u32, t: u32) -> Result<(), Self::Error> {
//! #         self.0[f as usize..t as usize].fill(0xFF); Ok(())
//! #     }
//! #     fn write(&mut self, o: u32, b: &[u8]) -> Result<(), Self::Error> {
//! #         let o = o as usize;
//! #         for (d, s) in self.0[o..o + b.len()].iter_mut().zip(b) { *d &= *s; }
//! #         Ok(())
//! #     }
//! # }
//! let mut flash = Ram([0xFF; 8192]); // the boot-state area: two erase sectors
//! let v2 = SlotVersion::new(2, 0, 0);
//!
//! // Start-up 1: a blank area boots slot A. An update was written to slot B.
//! let mut boot = BootController::open(&mut flash)?;
//! assert_eq!(boot.boot()?, BootDecision::Normal { slot: Slot::A });
//! assert_eq!(boot.inactive_slot(), Slot::B);
//! boot.mark_trial(v2)?;
//!
//! // Start-up 2: the trial runs, passes its self-test and confirms.
//! let mut boot = BootController::open(&mut flash)?;
//! assert!(matches!(boot.boot()?, BootDecision::Trial { slot: Slot::B, .. }));
//! boot.confirm()?;
//! assert_eq!(boot.owed_report().map(|r| r.outcome), Some(ReportOutcome::Updated));
//! boot.clear_owed_report()?; // after the server acknowledged "UPDATED"
//! assert_eq!(boot.active_slot(), Slot::B);
//! assert_eq!(boot.highest_accepted(), v2);
//! # Ok::<(), ota_core::boot::BootError<NorFlashErrorKind>>(())
//! ```
//!
//! # On-flash layout
//!
//! The state area is the first **two erase sectors** of the flash given to the controller
//! (sector 0 at offset 0, sector 1 at offset `ERASE_SIZE`; anything after them is unused).
//! Each sector holds at most one record at its start, padded with `0xFF` to a multiple of
//! `max(READ_SIZE, WRITE_SIZE)` (at most 256 bytes). A record is 116 bytes, little-endian:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | magic `"OTAB"` |
//! | 4 | 1 | format, `1` |
//! | 5 | 1 | active slot: `0` = A, `1` = B |
//! | 6 | 1 | trial: `0` none, `1` pending (marked, not booted yet), `2` booted |
//! | 7 | 1 | trial boots so far (`0` unless booted; ≥ 1 when booted) |
//! | 8 | 4 | sequence number `u32` (serial-number arithmetic: newer = `(a − b) as i32 > 0`) |
//! | 12 | 24 | version of the active image: major, minor, patch as `u64` |
//! | 36 | 24 | highest accepted version (anti-rollback floor) |
//! | 60 | 24 | trial version (zero when there is no trial) |
//! | 84 | 1 | owed report: `0` none, `1` UPDATED, `2` FAILED |
//! | 85 | 1 | failure reason: `0` none, `1` trial not confirmed, `2` rejected by the image |
//! | 86 | 1 | boots the unconfirmed trial made (reason `1` only, else `0`) |
//! | 87 | 1 | reserved, `0` |
//! | 88 | 24 | version the owed report is about (zero when none) |
//! | 112 | 4 | CRC-32 (IEEE, as `crc32fast`) of bytes 0..112 |
//!
//! A record is valid only if magic, format, CRC and every field are valid and canonical.
//!
//! # Why a power cut cannot corrupt the state
//!
//! Each change writes a whole new record with the next sequence number into the sector that
//! does **not** hold the current record: erase that sector, program the record, read it back.
//! A cut during the erase or the program leaves that sector garbled or half written (its CRC
//! fails, or, if the cut came late enough, it is the complete new record); the current record in
//! the other sector is never touched. [`open`](BootController::open) therefore sees either the
//! old record alone (old state) or a valid newer record (new state). One erase and one program
//! per change; the two sectors wear evenly.
//!
//! While no valid record exists yet, the first record always goes to sector 0, so sector 1 stays
//! blank until sector 0 holds a valid record. Hence on open:
//!
//! * a valid record in either sector → the newest one wins;
//! * no valid record and the record area of sector 1 blank (`0xFF`) → a fresh device (or a first
//!   write that was cut): the **clean default** state (slot A active, version 0.0.0, no trial,
//!   nothing owed) — see [`BootState::default`];
//! * no valid record and sector 1 not blank → that cannot come from power cuts:
//!   **[`BootError::Corrupt`]**. [`BootController::format`] re-provisions such an area.
//!
//! A garbled sector could in principle decode as a valid record by chance; the CRC-32 plus the
//! canonical-field checks make that about 2⁻³² per torn write.

mod fuzz;
mod record;

#[doc(hidden)]
pub use fuzz::fuzz_check;

use core::fmt;

use embedded_storage::nor_flash::NorFlash;

use record::RECORD_LEN;

/// Largest padded record the controller handles (`max(READ_SIZE, WRITE_SIZE)` rounding).
pub const MAX_RECORD_AREA: usize = 256;

/// One of the two image slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// The first slot (active on a fresh device).
    #[default]
    A,
    /// The second slot.
    B,
}

impl Slot {
    /// The other slot.
    #[must_use]
    pub const fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }

    /// `0` for A, `1` for B.
    pub const fn index(self) -> u8 {
        match self {
            Self::A => 0,
            Self::B => 1,
        }
    }

    /// The slot with this index, if it is `0` or `1`.
    pub const fn from_index(index: u8) -> Option<Self> {
        match index {
            0 => Some(Self::A),
            1 => Some(Self::B),
            _ => None,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::A => "A",
            Self::B => "B",
        })
    }
}

/// The version of an image in a slot: `major.minor.patch`, compared numerically in that order.
///
/// Pre-release and build metadata are not kept: anti-rollback compares release triples.
/// Convert from the crate's semantic version with `SlotVersion::from(version)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotVersion {
    /// Major version.
    pub major: u64,
    /// Minor version.
    pub minor: u64,
    /// Patch version.
    pub patch: u64,
}

impl SlotVersion {
    /// `0.0.0`, the version a fresh device assumes.
    pub const ZERO: Self = Self::new(0, 0, 0);

    /// `major.minor.patch`.
    pub const fn new(major: u64, minor: u64, patch: u64) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }
}

impl From<(u64, u64, u64)> for SlotVersion {
    fn from((major, minor, patch): (u64, u64, u64)) -> Self {
        Self::new(major, minor, patch)
    }
}

impl From<SlotVersion> for (u64, u64, u64) {
    fn from(v: SlotVersion) -> Self {
        (v.major, v.minor, v.patch)
    }
}

/// Keeps `major.minor.patch`; pre-release and build metadata are dropped.
impl From<crate::version::Version<'_>> for SlotVersion {
    fn from(v: crate::version::Version<'_>) -> Self {
        Self::new(u64::from(v.major), u64::from(v.minor), u64::from(v.patch))
    }
}

impl fmt::Display for SlotVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Why a trial image was rolled back.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The trial booted `boots` times without confirming (crash, hang, watchdog, power loss).
    TrialNotConfirmed {
        /// How many times the trial image was started.
        boots: u8,
    },
    /// The running trial image rejected itself ([`BootController::reject`]).
    Rejected,
}

impl FailureReason {
    /// The stable wire name of the failure (ThingsBoard `fw_error` style); both map to the
    /// update error `INSTALLATION_FAILED`, with this finer name for diagnostics.
    pub const fn wire_name(self) -> &'static str {
        match self {
            Self::TrialNotConfirmed { .. } => "TRIAL_NOT_CONFIRMED",
            Self::Rejected => "TRIAL_REJECTED",
        }
    }
}

/// The outcome an owed report announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReportOutcome {
    /// The new image was confirmed (ThingsBoard `UPDATED`).
    Updated,
    /// The new image was rolled back (ThingsBoard `FAILED`).
    Failed(FailureReason),
}

/// A report the device still owes the server, kept across reboots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OwedReport {
    /// What happened.
    pub outcome: ReportOutcome,
    /// The version it happened to (the trial's version).
    pub version: SlotVersion,
}

/// Where the trial of a new image stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TrialState {
    /// No trial: the active slot runs.
    #[default]
    None,
    /// The inactive slot holds `version`, to be tried at the next start-up.
    Pending {
        /// Version of the image in the inactive slot.
        version: SlotVersion,
    },
    /// The inactive slot's image was started `boots` times and not confirmed yet.
    Booted {
        /// Version of the image being tried.
        version: SlotVersion,
        /// Start-ups of the trial image so far (≥ 1).
        boots: u8,
    },
}

/// The persistent boot state: what one valid record holds.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BootState {
    /// The confirmed slot.
    pub active: Slot,
    /// The version of the image in the active slot (`0.0.0` until something is confirmed or the
    /// area is [formatted](BootController::format)).
    pub active_version: SlotVersion,
    /// The anti-rollback floor: the highest version ever confirmed (or formatted).
    pub highest_accepted: SlotVersion,
    /// The trial in progress, if any.
    pub trial: TrialState,
    /// The report still owed to the server, if any (only the latest outcome is kept).
    pub owed: Option<OwedReport>,
}

/// What [`BootController::boot`] decided to run.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BootDecision {
    /// Run the active slot; no trial is in progress.
    Normal {
        /// The active slot.
        slot: Slot,
    },
    /// Run the trial image; it must [`confirm`](BootController::confirm) to stay.
    Trial {
        /// The slot holding the trial image.
        slot: Slot,
        /// Its version.
        version: SlotVersion,
        /// Which start-up of the trial this is (1 = first).
        boot: u8,
    },
    /// The trial was never confirmed: run the active slot again; a FAILED report is owed.
    RolledBack {
        /// The active slot (the one that ran before the trial).
        slot: Slot,
        /// The version that failed.
        failed: SlotVersion,
    },
}

impl BootDecision {
    /// The slot to start.
    pub const fn slot(self) -> Slot {
        match self {
            Self::Normal { slot } | Self::Trial { slot, .. } | Self::RolledBack { slot, .. } => {
                slot
            }
        }
    }
}

/// Tuning of the controller (not stored on flash).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BootConfig {
    /// How many start-ups a trial gets without confirming before it is rolled back (≥ 1;
    /// `0` is treated as 1). Default 1: a trial that restarts unconfirmed is rolled back.
    pub max_trial_boots: u8,
}

impl BootConfig {
    /// A configuration allowing `max_trial_boots` unconfirmed start-ups of a trial.
    pub const fn new(max_trial_boots: u8) -> Self {
        Self { max_trial_boots }
    }
}

impl Default for BootConfig {
    fn default() -> Self {
        Self::new(1)
    }
}

/// Why a boot-state operation failed. `E` is the flash driver's error.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum BootError<E> {
    /// The flash driver failed (including power loss mid-operation); the on-flash state is the
    /// old or the new one, and the in-memory state still the old one.
    #[error("boot-state flash operation failed: {0:?}")]
    Flash(E),
    /// The flash cannot hold the two-sector state area.
    #[error(
        "boot-state area of {capacity} bytes (erase {erase_size}, write {write_size}, read \
         {read_size}) cannot hold two sectors of a {record_area}-byte record (max 256)"
    )]
    Geometry {
        /// Flash capacity in bytes.
        capacity: usize,
        /// `ERASE_SIZE`.
        erase_size: usize,
        /// `WRITE_SIZE`.
        write_size: usize,
        /// `READ_SIZE`.
        read_size: usize,
        /// Padded record size the geometry requires.
        record_area: usize,
    },
    /// Neither sector holds a valid record and sector 1 is not blank: the area was overwritten
    /// by something else. Use [`BootController::format`] to re-provision it.
    #[error(
        "boot-state area is corrupt: no valid record in either sector and sector 1 is not blank"
    )]
    Corrupt,
    /// `mark_trial` of a version below the anti-rollback floor.
    #[error("version {offered} is below the highest accepted version {highest}")]
    Downgrade {
        /// The version offered.
        offered: SlotVersion,
        /// The highest accepted version.
        highest: SlotVersion,
    },
    /// `mark_trial` while a trial image is running unconfirmed (it occupies the update slot).
    #[error("trial of version {version} is running unconfirmed; confirm or reject it first")]
    TrialRunning {
        /// Version of the running trial.
        version: SlotVersion,
    },
    /// A record read back differently from what was programmed.
    #[error("boot-state record in sector {sector} read back differently from what was written")]
    Verify {
        /// The sector written (0 or 1).
        sector: u8,
    },
}

/// The boot-state controller: owns the state-area flash (or a `&mut` to it).
///
/// Size: 176 bytes with a `&mut` flash handle on a 64-bit host (the state itself is 120), see
/// the `controller_size` test; no buffers are kept, the padded record buffers (2 × 256 bytes)
/// live on the stack during a write.
#[derive(Clone, Debug)]
pub struct BootController<F> {
    flash: F,
    config: BootConfig,
    state: BootState,
    /// Sequence number of the newest valid record (0 when there is none).
    seq: u32,
    /// Sector holding the newest valid record.
    current: Option<u8>,
    /// The decision of this start-up, once [`boot`](Self::boot) ran.
    decision: Option<BootDecision>,
    /// Padded record length for this flash's geometry.
    area: usize,
}

/// `true` if sequence number `a` is newer than `b` (serial-number arithmetic).
const fn newer(a: u32, b: u32) -> bool {
    a.wrapping_sub(b).cast_signed() > 0
}

impl<F: NorFlash> BootController<F> {
    /// Opens the state area with the default [`BootConfig`], recovering from any torn write.
    /// Pass `&mut flash` to keep the flash when opening fails (e.g. to
    /// [`format`](Self::format) it after [`BootError::Corrupt`]).
    ///
    /// # Errors
    /// [`BootError::Geometry`], [`BootError::Corrupt`], or [`BootError::Flash`] if a read fails.
    pub fn open(flash: F) -> Result<Self, BootError<F::Error>> {
        Self::open_with(flash, BootConfig::default())
    }

    /// Opens the state area with `config` (see [`open`](Self::open)).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with(mut flash: F, config: BootConfig) -> Result<Self, BootError<F::Error>> {
        let area = Self::check_geometry(&flash)?;
        let mut buf = [0u8; MAX_RECORD_AREA];
        let mut found: [Option<(u32, BootState)>; 2] = [None, None];
        let mut sector1_blank = false;
        for (sector, slot) in (0u8..).zip(found.iter_mut()) {
            let bytes = Self::read_area(&mut flash, sector, area, &mut buf)?;
            *slot = record::decode(bytes);
            if sector == 1 {
                sector1_blank = bytes.iter().all(|&b| b == 0xFF);
            }
        }
        let (current, seq, state) = match found {
            [Some((s0, st0)), Some((s1, st1))] => {
                if newer(s1, s0) {
                    (Some(1), s1, st1)
                } else {
                    (Some(0), s0, st0)
                }
            }
            [Some((s0, st0)), None] => (Some(0), s0, st0),
            [None, Some((s1, st1))] => (Some(1), s1, st1),
            [None, None] if sector1_blank => (None, 0, BootState::default()),
            [None, None] => return Err(BootError::Corrupt),
        };
        Ok(Self {
            flash,
            config,
            state,
            seq,
            current,
            decision: None,
            area,
        })
    }

    /// Re-provisions the state area: erases both sectors and writes a state with slot A active
    /// holding `factory` (also the anti-rollback floor), no trial and nothing owed. For factory
    /// set-up and recovery from [`BootError::Corrupt`]; not power-safe with respect to the
    /// previous contents (a cut leaves a blank, default or the new state).
    ///
    /// # Errors
    /// [`BootError::Geometry`], [`BootError::Flash`], [`BootError::Verify`].
    pub fn format(
        mut flash: F,
        factory: SlotVersion,
        config: BootConfig,
    ) -> Result<Self, BootError<F::Error>> {
        let area = Self::check_geometry(&flash)?;
        // Sector 1 first: once it is blank, a garbled sector 0 opens as the default state.
        for sector in [1u32, 0] {
            let from = sector * Self::erase_size_u32();
            flash
                .erase(from, from + Self::erase_size_u32())
                .map_err(BootError::Flash)?;
        }
        let mut this = Self {
            flash,
            config,
            state: BootState::default(),
            seq: 0,
            current: None,
            decision: None,
            area,
        };
        this.persist(BootState {
            active_version: factory,
            highest_accepted: factory,
            ..BootState::default()
        })?;
        Ok(this)
    }

    /// `ERASE_SIZE` as `u32`; `check_geometry` guarantees two sectors fit in `u32`.
    fn erase_size_u32() -> u32 {
        u32::try_from(F::ERASE_SIZE).unwrap_or(u32::MAX / 2)
    }

    fn check_geometry(flash: &F) -> Result<usize, BootError<F::Error>> {
        let unit = F::READ_SIZE.max(F::WRITE_SIZE).max(1);
        let area = RECORD_LEN.div_ceil(unit).saturating_mul(unit);
        let two_sectors = F::ERASE_SIZE.checked_mul(2);
        let fits = area <= MAX_RECORD_AREA
            && area <= F::ERASE_SIZE
            && area.is_multiple_of(F::READ_SIZE.max(1))
            && area.is_multiple_of(F::WRITE_SIZE.max(1))
            && two_sectors.is_some_and(|two| two <= flash.capacity() && u32::try_from(two).is_ok());
        if fits {
            Ok(area)
        } else {
            Err(BootError::Geometry {
                capacity: flash.capacity(),
                erase_size: F::ERASE_SIZE,
                write_size: F::WRITE_SIZE,
                read_size: F::READ_SIZE,
                record_area: area,
            })
        }
    }

    fn read_area<'b>(
        flash: &mut F,
        sector: u8,
        area: usize,
        buf: &'b mut [u8; MAX_RECORD_AREA],
    ) -> Result<&'b [u8], BootError<F::Error>> {
        let bytes = buf.get_mut(..area).ok_or(BootError::Verify { sector })?;
        flash
            .read(u32::from(sector) * Self::erase_size_u32(), bytes)
            .map_err(BootError::Flash)?;
        Ok(bytes)
    }

    /// Writes `next` as a new record into the sector not holding the current one.
    fn persist(&mut self, next: BootState) -> Result<(), BootError<F::Error>> {
        let sector = match self.current {
            Some(current) => 1 - current,
            None => 0,
        };
        let seq = self.seq.wrapping_add(1);
        let mut out = [0xFFu8; MAX_RECORD_AREA];
        let padded = out
            .get_mut(..self.area)
            .ok_or(BootError::Verify { sector })?;
        record::encode(&next, seq, padded).ok_or(BootError::Verify { sector })?;
        let from = u32::from(sector) * Self::erase_size_u32();
        self.flash
            .erase(from, from + Self::erase_size_u32())
            .map_err(BootError::Flash)?;
        self.flash.write(from, padded).map_err(BootError::Flash)?;
        let mut back = [0u8; MAX_RECORD_AREA];
        let read = Self::read_area(&mut self.flash, sector, self.area, &mut back)?;
        if read != padded {
            return Err(BootError::Verify { sector });
        }
        self.state = next;
        self.seq = seq;
        self.current = Some(sector);
        Ok(())
    }

    /// Decides which slot this start-up runs; call once per start-up, before
    /// [`confirm`](Self::confirm). Counts a trial boot or rolls an exhausted trial back (one
    /// record write), otherwise touches no flash. Later calls return the same decision.
    ///
    /// # Errors
    /// [`BootError::Flash`] / [`BootError::Verify`] if the state could not be written; the
    /// decision is then not made (run `boot` again after the next start-up).
    pub fn boot(&mut self) -> Result<BootDecision, BootError<F::Error>> {
        if let Some(decision) = self.decision {
            return Ok(decision);
        }
        let max = self.config.max_trial_boots.max(1);
        let active = self.state.active;
        let decision = match self.state.trial {
            TrialState::None => BootDecision::Normal { slot: active },
            TrialState::Pending { version } => {
                self.persist(BootState {
                    trial: TrialState::Booted { version, boots: 1 },
                    ..self.state
                })?;
                BootDecision::Trial {
                    slot: active.other(),
                    version,
                    boot: 1,
                }
            }
            TrialState::Booted { version, boots } if boots < max => {
                let boots = boots + 1;
                self.persist(BootState {
                    trial: TrialState::Booted { version, boots },
                    ..self.state
                })?;
                BootDecision::Trial {
                    slot: active.other(),
                    version,
                    boot: boots,
                }
            }
            TrialState::Booted { version, boots } => {
                self.persist(BootState {
                    trial: TrialState::None,
                    owed: Some(OwedReport {
                        outcome: ReportOutcome::Failed(FailureReason::TrialNotConfirmed { boots }),
                        version,
                    }),
                    ..self.state
                })?;
                BootDecision::RolledBack {
                    slot: active,
                    failed: version,
                }
            }
        };
        self.decision = Some(decision);
        Ok(decision)
    }

    /// Asks for the image of `version` in the [inactive slot](Self::inactive_slot) to be tried
    /// at the next start-up (replacing a pending, not yet booted trial).
    ///
    /// # Errors
    /// [`BootError::Downgrade`] if `version` is below [`highest_accepted`](Self::highest_accepted),
    /// [`BootError::TrialRunning`] while a trial runs unconfirmed, or a flash error.
    pub fn mark_trial(&mut self, version: SlotVersion) -> Result<(), BootError<F::Error>> {
        if let TrialState::Booted { version, .. } = self.state.trial {
            return Err(BootError::TrialRunning { version });
        }
        if version < self.state.highest_accepted {
            return Err(BootError::Downgrade {
                offered: version,
                highest: self.state.highest_accepted,
            });
        }
        self.persist(BootState {
            trial: TrialState::Pending { version },
            ..self.state
        })
    }

    /// Makes the running trial permanent: its slot becomes active, the anti-rollback floor is
    /// raised to its version (never lowered) and an UPDATED report is owed. Without a booted
    /// trial this is a no-op, so an image may call it on every start-up. A booted trial is known
    /// from flash, so a bootloader may call [`boot`](Self::boot) and the application, after its
    /// own [`open`](Self::open), `confirm`.
    ///
    /// # Errors
    /// A flash error; the trial then stays unconfirmed.
    pub fn confirm(&mut self) -> Result<(), BootError<F::Error>> {
        let TrialState::Booted { version, .. } = self.state.trial else {
            return Ok(());
        };
        self.persist(BootState {
            active: self.state.active.other(),
            active_version: version,
            highest_accepted: self.state.highest_accepted.max(version),
            trial: TrialState::None,
            owed: Some(OwedReport {
                outcome: ReportOutcome::Updated,
                version,
            }),
        })
    }

    /// Gives up the trial: a running trial is rolled back at the next start-up with a FAILED
    /// ([`FailureReason::Rejected`]) report owed; a pending one is cancelled without a report.
    /// No-op without a trial.
    ///
    /// # Errors
    /// A flash error; the trial then stays as it was.
    pub fn reject(&mut self) -> Result<(), BootError<F::Error>> {
        let owed = match self.state.trial {
            TrialState::None => return Ok(()),
            TrialState::Pending { .. } => self.state.owed,
            TrialState::Booted { version, .. } => Some(OwedReport {
                outcome: ReportOutcome::Failed(FailureReason::Rejected),
                version,
            }),
        };
        self.persist(BootState {
            trial: TrialState::None,
            owed,
            ..self.state
        })
    }

    /// Forgets the owed report once the server acknowledged it. No-op (no flash write) if
    /// nothing is owed.
    ///
    /// # Errors
    /// A flash error; the report then stays owed.
    pub fn clear_owed_report(&mut self) -> Result<(), BootError<F::Error>> {
        if self.state.owed.is_none() {
            return Ok(());
        }
        self.persist(BootState {
            owed: None,
            ..self.state
        })
    }

    /// The whole persistent state.
    pub fn state(&self) -> &BootState {
        &self.state
    }

    /// The confirmed slot (the fallback if a trial fails).
    pub fn active_slot(&self) -> Slot {
        self.state.active
    }

    /// The slot an update is written to (the other one). While a trial runs unconfirmed this is
    /// the running image's slot: do not write it then ([`mark_trial`](Self::mark_trial) refuses).
    pub fn inactive_slot(&self) -> Slot {
        self.state.active.other()
    }

    /// The anti-rollback floor.
    pub fn highest_accepted(&self) -> SlotVersion {
        self.state.highest_accepted
    }

    /// The version of the image in the active slot.
    pub fn active_version(&self) -> SlotVersion {
        self.state.active_version
    }

    /// The trial in progress.
    pub fn trial(&self) -> TrialState {
        self.state.trial
    }

    /// The report still owed to the server.
    pub fn owed_report(&self) -> Option<OwedReport> {
        self.state.owed
    }

    /// This start-up's decision, once [`boot`](Self::boot) ran.
    pub fn decision(&self) -> Option<BootDecision> {
        self.decision
    }

    /// Sequence number of the newest valid record (`0` on a fresh area).
    pub fn sequence(&self) -> u32 {
        self.seq
    }

    /// Gives the flash back.
    pub fn into_inner(self) -> F {
        self.flash
    }
}
