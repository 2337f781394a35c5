//! The fuzz oracle of the boot state: a tiny RAM NOR flash with power cuts and a script
//! interpreter that checks "old or new, never garbage" after every step.

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

use super::{BootConfig, BootController, BootError, BootState, SlotVersion};

const SECTOR: usize = 256;
const CAPACITY: usize = 2 * SECTOR;

/// Errors of [`RamFlash`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RamError {
    Bounds,
    NotAligned,
    ProgramOverZero,
    PowerCut,
    PoweredOff,
}

impl NorFlashError for RamError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            Self::Bounds => NorFlashErrorKind::OutOfBounds,
            Self::NotAligned => NorFlashErrorKind::NotAligned,
            _ => NorFlashErrorKind::Other,
        }
    }
}

/// Two 256-byte sectors, 4-byte programs, NOR rules, one scheduled power cut.
#[derive(Clone, Debug)]
struct RamFlash {
    data: [u8; CAPACITY],
    ops: u32,
    cut_at: Option<u32>,
    /// How much of the torn operation happens, 0..=255 of its length.
    tear: u8,
    off: bool,
}

impl RamFlash {
    fn range(offset: u32, len: usize, align: usize) -> Result<(usize, usize), RamError> {
        let start = usize::try_from(offset).map_err(|_| RamError::Bounds)?;
        let end = start.checked_add(len).ok_or(RamError::Bounds)?;
        if end > CAPACITY {
            return Err(RamError::Bounds);
        }
        if !start.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(RamError::NotAligned);
        }
        Ok((start, end))
    }

    /// Counts an operation; `Ok(true)` if it is the one to tear.
    fn begin(&mut self) -> Result<bool, RamError> {
        if self.off {
            return Err(RamError::PoweredOff);
        }
        let torn = self.cut_at == Some(self.ops);
        self.ops = self.ops.wrapping_add(1);
        if torn {
            self.off = true;
        }
        Ok(torn)
    }

    /// Bytes of a `len`-byte operation that happen before the cut, rounded down to `unit`.
    fn torn_len(&self, len: usize, unit: usize) -> usize {
        let part = len * usize::from(self.tear) / 255;
        part - part % unit
    }
}

impl ErrorType for RamFlash {
    type Error = RamError;
}

impl ReadNorFlash for RamFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), RamError> {
        let (start, end) = Self::range(offset, bytes.len(), 1)?;
        if self.begin()? {
            return Err(RamError::PowerCut);
        }
        bytes.copy_from_slice(self.data.get(start..end).ok_or(RamError::Bounds)?);
        Ok(())
    }

    fn capacity(&self) -> usize {
        CAPACITY
    }
}

impl NorFlash for RamFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), RamError> {
        let len = to.checked_sub(from).ok_or(RamError::Bounds)? as usize;
        let (start, end) = Self::range(from, len, SECTOR)?;
        let torn = self.begin()?;
        let done = if torn { self.torn_len(len, 1) } else { len };
        self.data
            .get_mut(start..end)
            .ok_or(RamError::Bounds)?
            .iter_mut()
            .take(done)
            .for_each(|b| *b = 0xFF);
        if torn {
            Err(RamError::PowerCut)
        } else {
            Ok(())
        }
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), RamError> {
        let (start, end) = Self::range(offset, bytes.len(), 4)?;
        let dst = self.data.get(start..end).ok_or(RamError::Bounds)?;
        if dst.iter().zip(bytes).any(|(d, b)| b & !d != 0) {
            return Err(RamError::ProgramOverZero);
        }
        let torn = self.begin()?;
        let done = if torn {
            self.torn_len(bytes.len(), 4)
        } else {
            bytes.len()
        };
        let dst = self.data.get_mut(start..end).ok_or(RamError::Bounds)?;
        for (d, b) in dst.iter_mut().zip(bytes).take(done) {
            *d &= *b;
        }
        if torn {
            Err(RamError::PowerCut)
        } else {
            Ok(())
        }
    }
}

type Ctrl = BootController<RamFlash>;
type Outcome = Result<(), BootError<RamError>>;

fn apply(ctrl: &mut Ctrl, op: u8, arg: u8) -> Outcome {
    match op % 5 {
        0 => ctrl.boot().map(drop),
        1 => ctrl.mark_trial(SlotVersion::new(
            0,
            u64::from(arg >> 4),
            u64::from(arg & 0xF),
        )),
        2 => ctrl.confirm(),
        3 => ctrl.reject(),
        _ => ctrl.clear_owed_report(),
    }
}

fn reopen(flash: RamFlash, config: BootConfig) -> Ctrl {
    match BootController::open_with(flash, config) {
        Ok(ctrl) => ctrl,
        Err(e) => panic!("reopening after a completed or torn operation failed: {e:?}"),
    }
}

/// Runs the boot-state API over a state area whose contents are `data` and checks its
/// invariants; for the `boot_state` fuzz target and tests.
///
/// The first 512 bytes are the area (two 256-byte sectors, missing bytes erased). The next byte
/// picks [`BootConfig::max_trial_boots`]; then every three bytes `op, arg, tear` are one step:
/// `op % 5` is boot / mark_trial(`0.{arg>>4}.{arg&15}`) / confirm / reject /
/// clear_owed_report; if `op & 0x80` the power is cut at flash operation `(op >> 4) & 7` of
/// the step, which then completes `tear/255` of its bytes; if `op & 0x08` the device restarts
/// after the step.
///
/// # Panics
/// Only if an invariant breaks (that is the fuzzing finding): a step without a cut must give the
/// same result as on an identical copy; after a cut, reopening must succeed and yield exactly
/// the old or the new state; reopening after any successful step must yield the same state.
pub fn fuzz_check(data: &[u8]) {
    let (image, script) = data.split_at(data.len().min(CAPACITY));
    let mut flash = RamFlash {
        data: [0xFF; CAPACITY],
        ops: 0,
        cut_at: None,
        tear: 0,
        off: false,
    };
    for (d, s) in flash.data.iter_mut().zip(image) {
        *d = *s;
    }
    let mut script = script.iter().copied();
    let config = BootConfig::new(script.next().unwrap_or(1) % 4);
    let mut ctrl = match BootController::open_with(flash.clone(), config) {
        Ok(ctrl) => ctrl,
        Err(BootError::Corrupt) => match BootController::format(flash, SlotVersion::ZERO, config) {
            Ok(ctrl) => ctrl,
            Err(e) => panic!("formatting a corrupt area failed: {e:?}"),
        },
        Err(e) => panic!("open failed with an unexpected error: {e:?}"),
    };
    while let Some(op) = script.next() {
        let arg = script.next().unwrap_or(0);
        let tear = script.next().unwrap_or(0);
        let before: BootState = *ctrl.state();
        let mut twin = ctrl.clone();
        let expected = apply(&mut twin, op, arg);
        if op & 0x80 != 0 {
            let flash = &mut ctrl.flash;
            flash.cut_at = Some(flash.ops.wrapping_add(u32::from((op >> 4) & 7)));
            flash.tear = tear;
        }
        let got = apply(&mut ctrl, op, arg);
        ctrl.flash.cut_at = None;
        if ctrl.flash.off {
            assert_eq!(got, Err(BootError::Flash(RamError::PowerCut)));
            let mut flash = ctrl.into_inner();
            flash.off = false;
            ctrl = reopen(flash, config);
            let after = *ctrl.state();
            assert!(
                after == before || (expected.is_ok() && after == *twin.state()),
                "torn step {op}/{arg}: {after:?} is neither {before:?} nor {:?}",
                twin.state()
            );
            continue;
        }
        assert_eq!(got, expected, "step {op}/{arg} differs from its twin");
        assert_eq!(ctrl.state(), twin.state());
        let check = reopen(ctrl.clone().into_inner(), config);
        assert_eq!(
            check.state(),
            ctrl.state(),
            "state after step {op}/{arg} not persisted"
        );
        if op & 0x08 != 0 {
            ctrl = check;
        }
    }
}
