//! A simulated NOR flash with injectable power cuts.
//!
//! [`SimFlash`] implements `embedded-storage`'s [`ReadNorFlash`] and [`NorFlash`] with the rules
//! of real NOR parts:
//!
//! * reads, programs and erases must be aligned to `READ`, `WRITE` and `ERASE` bytes and stay
//!   inside the device;
//! * erased bytes read `0xFF`; programming may only clear bits (`1 → 0`): asking for a `0 → 1`
//!   transition without an erase is an error ([`SimFlashError::ProgramOverZero`]);
//! * a **power cut** can be scheduled with [`SimFlash::cut_after`]: the chosen operation is torn
//!   (a program writes only part of its data, an erase leaves the sector half erased and
//!   garbled, see [`TearMode`]) and every later operation fails with
//!   [`SimFlashError::PoweredOff`] until [`SimFlash::power_on`].
//!
//! Every accepted operation (read, program, erase) increments a device-wide counter
//! ([`SimFlash::op_count`]), so a test can run a state change once, count its operations and
//! then replay it with a cut at every index. Randomness (which words a torn program keeps,
//! which bits a torn erase sets) comes from a seeded RNG: runs are deterministic.
//!
//! One device can be split into partitions ([`SimFlash::partition`]): the handles share one
//! backing store, one operation counter and one power state, like a boot-state area and two
//! image slots on one chip. A device can be backed by a file ([`SimFlash::open_file`]) so that a
//! restarted process sees the same contents.
//!
//! ```
//! use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
//! use ota_testkit::flash::{SimFlash, SimFlashError};
//!
//! let flash: SimFlash = SimFlash::new(3 * 4096);
//! let mut state = flash.partition(0, 4096).unwrap();
//! let mut slot_a = flash.partition(4096, 4096).unwrap();
//! slot_a.write(0, &[0x12, 0x34, 0x56, 0x78]).unwrap();
//!
//! flash.cut_after(0); // the very next operation is torn
//! assert!(matches!(state.erase(0, 4096), Err(SimFlashError::PowerCut { .. })));
//! assert_eq!(state.write(0, &[0; 4]), Err(SimFlashError::PoweredOff));
//! flash.power_on();
//! let mut word = [0u8; 4];
//! slot_a.read(0, &mut word).unwrap();
//! assert_eq!(word, [0x12, 0x34, 0x56, 0x78]);
//! ```

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The value of an erased byte.
pub const ERASED: u8 = 0xFF;

/// Why a [`SimFlash`] operation failed.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SimFlashError {
    /// The offset or length is not a multiple of the required alignment.
    NotAligned {
        /// Offset asked for (relative to the partition).
        offset: u32,
        /// Length asked for.
        len: usize,
        /// Required alignment in bytes.
        align: usize,
    },
    /// The range does not fit inside the device or partition.
    OutOfBounds {
        /// Offset asked for (relative to the partition).
        offset: u32,
        /// Length asked for.
        len: usize,
        /// Capacity of the device or partition.
        capacity: usize,
    },
    /// A program asked for a `0 → 1` bit transition, which needs an erase first.
    ProgramOverZero {
        /// Offset (relative to the partition) of the first offending byte.
        offset: u32,
    },
    /// This operation was torn by a scheduled power cut.
    PowerCut {
        /// Device-wide index of the torn operation.
        op: u64,
    },
    /// The device lost power earlier and [`SimFlash::power_on`] was not called yet.
    PoweredOff,
    /// The backing file could not be written.
    Io(std::io::ErrorKind),
}

impl fmt::Display for SimFlashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotAligned { offset, len, align } => write!(
                f,
                "offset {offset} / length {len} is not aligned to {align} bytes"
            ),
            Self::OutOfBounds {
                offset,
                len,
                capacity,
            } => write!(
                f,
                "range {offset}+{len} exceeds the capacity of {capacity} bytes"
            ),
            Self::ProgramOverZero { offset } => write!(
                f,
                "programming byte {offset} needs a 0 -> 1 bit transition (erase first)"
            ),
            Self::PowerCut { op } => write!(f, "power cut during flash operation #{op}"),
            Self::PoweredOff => write!(f, "the flash is powered off"),
            Self::Io(kind) => write!(f, "backing file error: {kind}"),
        }
    }
}

impl std::error::Error for SimFlashError {}

impl NorFlashError for SimFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            Self::NotAligned { .. } => NorFlashErrorKind::NotAligned,
            Self::OutOfBounds { .. } => NorFlashErrorKind::OutOfBounds,
            _ => NorFlashErrorKind::Other,
        }
    }
}

/// How a power cut tears the interrupted operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TearMode {
    /// A program writes a random prefix of its `WRITE`-sized words, the next word with a random
    /// subset of its bits cleared, and nothing after; an erase sets a random prefix of the
    /// sector to `0xFF`, garbles the next byte and leaves the rest untouched.
    #[default]
    Prefix,
    /// A program writes each word fully, partially or not at all, chosen at random per word;
    /// an erase sets a random subset of the bits of every byte of the sector.
    RandomWords,
}

/// What happens to the next operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Power {
    On,
    /// On, but the operation with this device-wide index will be torn.
    CutAt(u64),
    Off,
}

struct Store {
    data: Vec<u8>,
    erase_size: usize,
    erase_counts: Vec<u32>,
    ops: u64,
    power: Power,
    tear: TearMode,
    rng: StdRng,
    file: Option<File>,
}

impl Store {
    fn new(data: Vec<u8>, erase_size: usize, seed: u64, file: Option<File>) -> Self {
        let sectors = data.len() / erase_size;
        Self {
            data,
            erase_size,
            erase_counts: vec![0; sectors],
            ops: 0,
            power: Power::On,
            tear: TearMode::default(),
            rng: StdRng::seed_from_u64(seed),
            file,
        }
    }

    /// Counts one operation and says whether it runs normally (`Ok(false)`), is torn
    /// (`Ok(true)`) or cannot run at all.
    fn begin(&mut self) -> Result<bool, SimFlashError> {
        match self.power {
            Power::Off => Err(SimFlashError::PoweredOff),
            Power::On => {
                self.ops += 1;
                Ok(false)
            }
            Power::CutAt(at) => {
                let op = self.ops;
                self.ops += 1;
                if op == at {
                    self.power = Power::Off;
                    Ok(true)
                } else {
                    Ok(false)
                }
            }
        }
    }

    fn persist(&mut self, start: usize, end: usize) -> Result<(), SimFlashError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let io = |e: std::io::Error| SimFlashError::Io(e.kind());
        file.seek(SeekFrom::Start(start as u64)).map_err(io)?;
        file.write_all(&self.data[start..end]).map_err(io)?;
        file.flush().map_err(io)
    }

    fn program(&mut self, start: usize, bytes: &[u8], word: usize, torn: bool) {
        let dst = &mut self.data[start..start + bytes.len()];
        if !torn {
            for (d, s) in dst.iter_mut().zip(bytes) {
                *d &= *s;
            }
            return;
        }
        let words = bytes.len().div_ceil(word.max(1));
        match self.tear {
            TearMode::Prefix => {
                let done = self.rng.random_range(0..=words);
                for (i, (dchunk, schunk)) in
                    dst.chunks_mut(word).zip(bytes.chunks(word)).enumerate()
                {
                    if i < done {
                        program_all(dchunk, schunk);
                    } else if i == done {
                        program_some(dchunk, schunk, &mut self.rng);
                    }
                }
            }
            TearMode::RandomWords => {
                for (dchunk, schunk) in dst.chunks_mut(word).zip(bytes.chunks(word)) {
                    match self.rng.random_range(0..3u8) {
                        0 => {}
                        1 => program_all(dchunk, schunk),
                        _ => program_some(dchunk, schunk, &mut self.rng),
                    }
                }
            }
        }
    }

    fn erase(&mut self, start: usize, end: usize, torn: bool) {
        for sector in start / self.erase_size..end / self.erase_size {
            if let Some(count) = self.erase_counts.get_mut(sector) {
                *count = count.saturating_add(1);
            }
        }
        let dst = &mut self.data[start..end];
        if !torn {
            dst.fill(ERASED);
            return;
        }
        match self.tear {
            TearMode::Prefix => {
                let done = self.rng.random_range(0..=dst.len());
                let (erased, rest) = dst.split_at_mut(done);
                erased.fill(ERASED);
                if let Some(first) = rest.first_mut() {
                    *first |= self.rng.random::<u8>();
                }
            }
            TearMode::RandomWords => {
                for byte in dst {
                    *byte |= self.rng.random::<u8>();
                }
            }
        }
    }
}

fn program_all(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d &= *s;
    }
}

/// Clears a random subset of the bits `src` would clear.
fn program_some(dst: &mut [u8], src: &[u8], rng: &mut StdRng) {
    for (d, s) in dst.iter_mut().zip(src) {
        let keep: u8 = rng.random();
        *d &= *s | keep;
    }
}

/// A simulated NOR flash device or a partition of one.
///
/// `READ`, `WRITE` and `ERASE` are the read, program and erase granularities in bytes (the
/// defaults, 1 / 4 / 4096, match common MCU internal flash). Cloning a `SimFlash` gives another
/// handle on the **same** device; use [`SimFlash::fork`] for an independent copy.
pub struct SimFlash<const READ: usize = 1, const WRITE: usize = 4, const ERASE: usize = 4096> {
    store: Arc<Mutex<Store>>,
    base: usize,
    len: usize,
}

impl<const READ: usize, const WRITE: usize, const ERASE: usize> Clone
    for SimFlash<READ, WRITE, ERASE>
{
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            base: self.base,
            len: self.len,
        }
    }
}

impl<const READ: usize, const WRITE: usize, const ERASE: usize> fmt::Debug
    for SimFlash<READ, WRITE, ERASE>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let store = self.lock();
        f.debug_struct("SimFlash")
            .field("read_size", &READ)
            .field("write_size", &WRITE)
            .field("erase_size", &ERASE)
            .field("base", &self.base)
            .field("len", &self.len)
            .field("ops", &store.ops)
            .field("power", &store.power)
            .finish_non_exhaustive()
    }
}

impl<const READ: usize, const WRITE: usize, const ERASE: usize> SimFlash<READ, WRITE, ERASE> {
    /// An erased device of `capacity` bytes, RNG seed 0.
    ///
    /// # Panics
    /// If `capacity` is zero or not a multiple of `ERASE`, or a granularity is zero.
    pub fn new(capacity: usize) -> Self {
        Self::with_seed(capacity, 0)
    }

    /// An erased device of `capacity` bytes whose torn operations draw from `seed`.
    ///
    /// # Panics
    /// If `capacity` is zero or not a multiple of `ERASE`, or a granularity is zero.
    pub fn with_seed(capacity: usize, seed: u64) -> Self {
        Self::from_vec(vec![ERASED; capacity], seed, None)
    }

    /// A device holding a copy of `contents` (RNG seed 0).
    ///
    /// # Panics
    /// If the length is zero or not a multiple of `ERASE`, or a granularity is zero.
    pub fn from_bytes(contents: &[u8]) -> Self {
        Self::from_vec(contents.to_vec(), 0, None)
    }

    /// A device persisted in the file at `path`: created erased when missing, loaded when it
    /// exists. Every program and erase (torn ones included) is written through, so a new process
    /// that opens the same file sees the same contents.
    ///
    /// # Errors
    /// The I/O error of opening or reading the file; `InvalidData` if an existing file's size is
    /// not `capacity`.
    ///
    /// # Panics
    /// If `capacity` is zero or not a multiple of `ERASE`, or a granularity is zero.
    pub fn open_file(path: impl AsRef<Path>, capacity: usize) -> std::io::Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path.as_ref())?;
        let len = file.metadata()?.len();
        let data = if len == 0 {
            let data = vec![ERASED; capacity];
            file.write_all(&data)?;
            file.flush()?;
            data
        } else if usize::try_from(len).ok() == Some(capacity) {
            let mut data = Vec::with_capacity(capacity);
            file.read_to_end(&mut data)?;
            data
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "flash file {} holds {len} bytes, expected {capacity}",
                    path.as_ref().display()
                ),
            ));
        };
        Ok(Self::from_vec(data, 0, Some(file)))
    }

    fn from_vec(data: Vec<u8>, seed: u64, file: Option<File>) -> Self {
        assert!(
            READ > 0 && WRITE > 0 && ERASE > 0,
            "flash granularities must be non-zero"
        );
        assert!(
            !data.is_empty() && data.len().is_multiple_of(ERASE),
            "flash capacity {} must be a non-zero multiple of the erase size {ERASE}",
            data.len()
        );
        let len = data.len();
        Self {
            store: Arc::new(Mutex::new(Store::new(data, ERASE, seed, file))),
            base: 0,
            len,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A handle on `len` bytes of this device (or partition) starting at `offset`. Offsets of
    /// the handle are relative to `offset`; the counter and power state are shared.
    ///
    /// # Errors
    /// [`SimFlashError::NotAligned`] unless both are multiples of `ERASE`,
    /// [`SimFlashError::OutOfBounds`] if the range leaves this handle's window.
    pub fn partition(&self, offset: usize, len: usize) -> Result<Self, SimFlashError> {
        let off32 = u32::try_from(offset).unwrap_or(u32::MAX);
        if len == 0 || !offset.is_multiple_of(ERASE) || !len.is_multiple_of(ERASE) {
            return Err(SimFlashError::NotAligned {
                offset: off32,
                len,
                align: ERASE,
            });
        }
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(SimFlashError::OutOfBounds {
                offset: off32,
                len,
                capacity: self.len,
            });
        }
        Ok(Self {
            store: Arc::clone(&self.store),
            base: self.base + offset,
            len,
        })
    }

    /// An independent deep copy of the whole device (contents, counter, power state, RNG
    /// state), seen through the same window as `self`. Not file-backed.
    #[must_use]
    pub fn fork(&self) -> Self {
        let store = self.lock();
        let copy = Store {
            data: store.data.clone(),
            erase_size: store.erase_size,
            erase_counts: store.erase_counts.clone(),
            ops: store.ops,
            power: store.power,
            tear: store.tear,
            rng: store.rng.clone(),
            file: None,
        };
        Self {
            store: Arc::new(Mutex::new(copy)),
            base: self.base,
            len: self.len,
        }
    }

    /// Schedules a power cut: the next `n` operations complete, the one after them (device-wide
    /// index [`op_count`](Self::op_count)` + n`) is torn, and every operation after it fails
    /// with [`SimFlashError::PoweredOff`] until [`power_on`](Self::power_on).
    /// `cut_after(0)` tears the very next operation. Replaces an earlier schedule.
    pub fn cut_after(&self, n: u64) {
        let mut store = self.lock();
        if store.power != Power::Off {
            store.power = Power::CutAt(store.ops + n);
        }
    }

    /// Cuts the power now: every operation fails until [`power_on`](Self::power_on).
    pub fn power_off(&self) {
        self.lock().power = Power::Off;
    }

    /// Restores power and cancels any scheduled cut. Contents stay as the cut left them.
    pub fn power_on(&self) {
        self.lock().power = Power::On;
    }

    /// `false` after a cut until [`power_on`](Self::power_on).
    pub fn is_powered(&self) -> bool {
        self.lock().power != Power::Off
    }

    /// `true` while a scheduled cut has not happened yet.
    pub fn cut_pending(&self) -> bool {
        matches!(self.lock().power, Power::CutAt(_))
    }

    /// Operations (reads, programs, erases) the device has accepted so far, torn ones included.
    pub fn op_count(&self) -> u64 {
        self.lock().ops
    }

    /// Chooses how later power cuts tear operations.
    pub fn set_tear_mode(&self, mode: TearMode) {
        self.lock().tear = mode;
    }

    /// Reseeds the RNG that decides how operations are torn.
    pub fn reseed(&self, seed: u64) {
        self.lock().rng = StdRng::seed_from_u64(seed);
    }

    /// A copy of this handle's bytes (not counted as an operation, works while powered off).
    pub fn contents(&self) -> Vec<u8> {
        self.lock().data[self.base..self.base + self.len].to_vec()
    }

    /// Overwrites this handle's bytes directly, e.g. to inject corruption (not counted, no
    /// NOR rules applied, written through to the backing file).
    ///
    /// # Errors
    /// [`SimFlashError::OutOfBounds`] if `bytes` does not fit at `offset`; [`SimFlashError::Io`]
    /// if the backing file cannot be written.
    pub fn poke(&self, offset: usize, bytes: &[u8]) -> Result<(), SimFlashError> {
        if offset
            .checked_add(bytes.len())
            .is_none_or(|end| end > self.len)
        {
            return Err(SimFlashError::OutOfBounds {
                offset: u32::try_from(offset).unwrap_or(u32::MAX),
                len: bytes.len(),
                capacity: self.len,
            });
        }
        let start = self.base + offset;
        let mut store = self.lock();
        store.data[start..start + bytes.len()].copy_from_slice(bytes);
        store.persist(start, start + bytes.len())
    }

    /// How many times the `index`-th erase sector of this handle was erased (torn erases
    /// included); `None` past the end.
    pub fn erase_count(&self, index: usize) -> Option<u32> {
        if index >= self.len / ERASE {
            return None;
        }
        self.lock()
            .erase_counts
            .get(self.base / ERASE + index)
            .copied()
    }

    fn check(&self, offset: u32, len: usize, align: usize) -> Result<usize, SimFlashError> {
        let start = offset as usize;
        if start.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(SimFlashError::OutOfBounds {
                offset,
                len,
                capacity: self.len,
            });
        }
        if !start.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(SimFlashError::NotAligned { offset, len, align });
        }
        Ok(self.base + start)
    }
}

impl<const READ: usize, const WRITE: usize, const ERASE: usize> ErrorType
    for SimFlash<READ, WRITE, ERASE>
{
    type Error = SimFlashError;
}

impl<const READ: usize, const WRITE: usize, const ERASE: usize> ReadNorFlash
    for SimFlash<READ, WRITE, ERASE>
{
    const READ_SIZE: usize = READ;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let start = self.check(offset, bytes.len(), READ)?;
        let mut store = self.lock();
        let op = store.ops;
        if store.begin()? {
            return Err(SimFlashError::PowerCut { op });
        }
        bytes.copy_from_slice(&store.data[start..start + bytes.len()]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.len
    }
}

impl<const READ: usize, const WRITE: usize, const ERASE: usize> NorFlash
    for SimFlash<READ, WRITE, ERASE>
{
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = ERASE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let len = (to as usize)
            .checked_sub(from as usize)
            .ok_or(SimFlashError::OutOfBounds {
                offset: from,
                len: 0,
                capacity: self.len,
            })?;
        let start = self.check(from, len, ERASE)?;
        let mut store = self.lock();
        let op = store.ops;
        let torn = store.begin()?;
        store.erase(start, start + len, torn);
        store.persist(start, start + len)?;
        if torn {
            Err(SimFlashError::PowerCut { op })
        } else {
            Ok(())
        }
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let start = self.check(offset, bytes.len(), WRITE)?;
        let mut store = self.lock();
        let current = &store.data[start..start + bytes.len()];
        if let Some(pos) = current.iter().zip(bytes).position(|(c, b)| b & !c != 0) {
            return Err(SimFlashError::ProgramOverZero {
                offset: offset + u32::try_from(pos).unwrap_or(u32::MAX),
            });
        }
        let op = store.ops;
        let torn = store.begin()?;
        store.program(start, bytes, WRITE, torn);
        store.persist(start, start + bytes.len())?;
        if torn {
            Err(SimFlashError::PowerCut { op })
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Small = SimFlash<1, 4, 64>;

    #[test]
    fn erased_reads_ff_and_program_clears_bits() {
        let mut f = Small::new(128);
        let mut buf = [0u8; 8];
        f.read(0, &mut buf).unwrap();
        assert_eq!(buf, [ERASED; 8]);
        f.write(4, &[0x0F, 0xF0, 0x00, 0xAA]).unwrap();
        f.read(0, &mut buf).unwrap();
        assert_eq!(buf, [0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0xF0, 0x00, 0xAA]);
        assert_eq!(f.op_count(), 3);
    }

    #[test]
    fn zero_to_one_needs_erase() {
        let mut f = Small::new(128);
        f.write(0, &[0x00, 0xFF, 0xFF, 0xFF]).unwrap();
        assert_eq!(
            f.write(0, &[0x01, 0xFF, 0xFF, 0xFF]),
            Err(SimFlashError::ProgramOverZero { offset: 0 })
        );
        // Same or fewer bits is allowed (only clears).
        f.write(0, &[0x00, 0x7F, 0xFF, 0xFF]).unwrap();
        f.erase(0, 64).unwrap();
        f.write(0, &[0x01, 0xFF, 0xFF, 0xFF]).unwrap();
        assert_eq!(f.erase_count(0), Some(1));
    }

    #[test]
    fn alignment_and_bounds() {
        let mut f = Small::new(128);
        assert_eq!(
            f.write(2, &[0; 4]),
            Err(SimFlashError::NotAligned {
                offset: 2,
                len: 4,
                align: 4
            })
        );
        assert_eq!(
            f.write(124, &[0; 8]),
            Err(SimFlashError::OutOfBounds {
                offset: 124,
                len: 8,
                capacity: 128
            })
        );
        assert_eq!(
            f.erase(0, 32),
            Err(SimFlashError::NotAligned {
                offset: 0,
                len: 32,
                align: 64
            })
        );
        assert!(matches!(
            f.erase(64, 0),
            Err(SimFlashError::OutOfBounds { offset: 64, .. })
        ));
        assert_eq!(f.op_count(), 0, "rejected operations are not counted");
    }

    #[test]
    fn cut_tears_then_powers_off_until_power_on() {
        let mut f = Small::new(128);
        f.cut_after(1);
        f.write(0, &[0; 4]).unwrap();
        assert_eq!(f.write(4, &[0; 8]), Err(SimFlashError::PowerCut { op: 1 }));
        assert!(!f.is_powered());
        let mut buf = [0u8; 4];
        assert_eq!(f.read(0, &mut buf), Err(SimFlashError::PoweredOff));
        f.power_on();
        f.read(0, &mut buf).unwrap();
        assert_eq!(buf, [0; 4]);
    }

    #[test]
    fn torn_program_only_clears_bits_it_was_asked_to() {
        for mode in [TearMode::Prefix, TearMode::RandomWords] {
            for seed in 0..50 {
                let mut f = Small::with_seed(128, seed);
                f.set_tear_mode(mode);
                let data: Vec<u8> = (0u8..64).map(|i| i.wrapping_mul(37)).collect();
                f.cut_after(0);
                assert!(f.write(0, &data).is_err());
                f.power_on();
                let got = f.contents();
                for (g, d) in got.iter().zip(&data) {
                    assert_eq!(g & d, *d, "a torn program never clears bits it should keep");
                }
                // Re-programming the same data after a tear is legal and completes it.
                f.write(0, &data).unwrap();
                assert_eq!(&f.contents()[..64], &data[..]);
            }
        }
    }

    #[test]
    fn torn_prefix_program_is_sometimes_partial() {
        let mut partial = 0;
        for seed in 0..20 {
            let mut f = Small::with_seed(64, seed);
            f.cut_after(0);
            assert!(f.write(0, &[0u8; 64]).is_err());
            f.power_on();
            if f.contents().iter().any(|&b| b != 0) {
                partial += 1;
            }
        }
        assert!(partial > 0, "some seeds must leave the program incomplete");
    }

    #[test]
    fn torn_erase_only_sets_bits() {
        let mut f = Small::with_seed(64, 7);
        f.set_tear_mode(TearMode::RandomWords);
        f.write(0, &[0x00; 64]).unwrap();
        f.cut_after(0);
        assert_eq!(f.erase(0, 64), Err(SimFlashError::PowerCut { op: 1 }));
        let got = f.contents();
        assert!(got.iter().any(|&b| b != 0x00 && b != 0xFF), "garbled");
    }

    #[test]
    fn partitions_share_store_and_power() {
        let dev = Small::new(256);
        let mut a = dev.partition(64, 64).unwrap();
        let mut b = dev.partition(128, 128).unwrap();
        a.write(0, &[1, 2, 3, 4]).unwrap();
        assert_eq!(&dev.contents()[64..68], &[1, 2, 3, 4]);
        assert_eq!(a.capacity(), 64);
        assert!(matches!(
            a.write(64, &[0; 4]),
            Err(SimFlashError::OutOfBounds { .. })
        ));
        dev.cut_after(0);
        assert!(b.erase(0, 64).is_err());
        assert_eq!(a.write(4, &[0; 4]), Err(SimFlashError::PoweredOff));
        assert_eq!(
            dev.partition(32, 64).unwrap_err(),
            SimFlashError::NotAligned {
                offset: 32,
                len: 64,
                align: 64
            }
        );
        assert_eq!(
            a.partition(0, 128).unwrap_err(),
            SimFlashError::OutOfBounds {
                offset: 0,
                len: 128,
                capacity: 64
            }
        );
    }

    #[test]
    fn fork_is_independent() {
        let mut a = Small::new(64);
        let mut b = a.fork();
        a.write(0, &[0; 4]).unwrap();
        assert_eq!(b.contents()[0], ERASED);
        b.write(0, &[0x0F; 4]).unwrap();
        assert_eq!(a.contents()[0], 0);
    }

    #[test]
    fn file_backing_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("ota-simflash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flash.bin");
        let _ = std::fs::remove_file(&path);
        {
            let mut f = Small::open_file(&path, 128).unwrap();
            f.write(64, &[9, 8, 7, 6]).unwrap();
        }
        let mut f = Small::open_file(&path, 128).unwrap();
        let mut buf = [0u8; 4];
        f.read(64, &mut buf).unwrap();
        assert_eq!(buf, [9, 8, 7, 6]);
        let err = Small::open_file(&path, 256).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
