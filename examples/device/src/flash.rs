//! The device's flash: one file-backed [`SimFlash`] chip split into the boot-state area, a
//! checkpoint area and the two image slots, and the adapters the transports' device
//! clients write through.
//!
//! ```text
//! 0x00000  boot state (2 sectors, ota_core::boot)
//! 0x02000  download checkpoint and the signed reader's resume point (2 sectors)
//! 0x04000  slot A (256 KiB)
//! 0x44000  slot B (256 KiB)
//! ```
//!
//! The checkpoint area holds the updater's checkpoint record, then (for a signed download)
//! the reader's resume point with its SHA-256, so a torn write of either is detected:
//!
//! ```text
//! 0      checkpoint record (ota_core::checkpoint, 256 bytes, with its own CRC)
//! 256    resume point length n, u32 LE (0xFFFFFFFF: none)
//! 260    SHA-256 of the resume point
//! 292    resume point: package bytes received u64 LE, plaintext released u64 LE,
//!        header (manifest ‖ signature), bytes of the sealed chunk being collected
//! ```

use std::io;
use std::path::Path;

use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
use ota_core::boot::{BootController, Slot, SlotVersion};
use ota_core::checkpoint::{CHECKPOINT_LEN, Checkpoint};
use ota_testkit::flash::SimFlash;
use sha2::{Digest, Sha256};

use crate::image::{HEADER_LEN, Header};
use crate::log::Log;
use crate::trust::{ResumeTap, Snapshot};

/// Erase sector size.
pub const SECTOR: usize = 4096;
/// Bytes per slot.
pub const SLOT_LEN: usize = 256 * 1024;
/// Bytes per download chunk (one sector, so each chunk erases exactly what it writes).
pub const CHUNK: u32 = 4096;
const BOOT_AT: usize = 0;
const CHECKPOINT_AT: usize = 2 * SECTOR;
const CHECKPOINT_SECTORS: usize = 2;
const SLOTS_AT: usize = CHECKPOINT_AT + CHECKPOINT_SECTORS * SECTOR;
/// Where the resume point's length, digest and bytes start in the checkpoint area.
const RESUME_AT: usize = CHECKPOINT_LEN;
const RESUME_DATA_AT: usize = RESUME_AT + 4 + 32;
/// Size of the whole chip (and of its file).
pub const CAPACITY: usize = SLOTS_AT + 2 * SLOT_LEN;

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// A flash failure as an I/O error: of kind [`io::ErrorKind::Interrupted`] when the chip has
/// lost power (a power cut, which the transports' device clients stop on without reporting
/// anything), else `Other`.
fn flash_err(flash: &SimFlash, e: impl std::fmt::Display) -> io::Error {
    if flash.is_powered() {
        io_err(e)
    } else {
        io::Error::new(io::ErrorKind::Interrupted, format!("power cut: {e}"))
    }
}

/// The chip, persisted in a file so a new power cycle (or process) sees what the last wrote.
#[derive(Debug)]
pub struct Chip {
    flash: SimFlash,
}

impl Chip {
    /// Opens (or creates erased) the chip file.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            flash: SimFlash::open_file(path, CAPACITY)?,
        })
    }

    /// An erased chip in memory whose torn operations draw from `seed` (simulations).
    pub fn in_memory(seed: u64) -> Self {
        Self {
            flash: SimFlash::with_seed(CAPACITY, seed),
        }
    }

    /// Schedules a power cut at the `n`th flash operation from now (`n ≥ 1`; reads, programs
    /// and erases all count): that operation is torn as `ota-testkit`'s flash tears it, and
    /// every later one fails until [`Chip::power_on`].
    pub fn cut_at(&self, n: u64) {
        self.flash.cut_after(n.saturating_sub(1));
    }

    /// `false` once a scheduled power cut has happened.
    pub fn is_powered(&self) -> bool {
        self.flash.is_powered()
    }

    /// Restores power after a cut; the contents stay as the cut left them.
    pub fn power_on(&self) {
        self.flash.power_on();
    }

    /// Flash operations since the chip was opened.
    pub fn op_count(&self) -> u64 {
        self.flash.op_count()
    }

    /// A copy of the first `len` bytes of `slot` (at most the slot), taken without a flash
    /// operation: what an observer (a test) sees, not what the device does.
    pub fn peek_slot(&self, slot: Slot, len: usize) -> Vec<u8> {
        let start = SLOTS_AT + usize::from(slot.index()) * SLOT_LEN;
        let mut bytes = self.flash.contents();
        bytes.truncate(start + len.min(SLOT_LEN));
        bytes.split_off(start.min(bytes.len()))
    }

    fn part(&self, at: usize, len: usize) -> io::Result<SimFlash> {
        self.flash.partition(at, len).map_err(io_err)
    }

    /// The boot-state area.
    pub fn boot_area(&self) -> io::Result<SimFlash> {
        self.part(BOOT_AT, 2 * SECTOR)
    }

    /// The checkpoint area.
    pub fn checkpoint_area(&self) -> io::Result<CheckpointArea> {
        Ok(CheckpointArea {
            flash: self.part(CHECKPOINT_AT, CHECKPOINT_SECTORS * SECTOR)?,
            tap: None,
        })
    }

    /// One image slot.
    pub fn slot(&self, slot: Slot) -> io::Result<SimFlash> {
        self.part(SLOTS_AT + usize::from(slot.index()) * SLOT_LEN, SLOT_LEN)
    }

    /// Writes a whole image into `slot` (factory programming).
    pub fn program(&self, slot: Slot, image: &[u8]) -> io::Result<()> {
        let mut flash = self.slot(slot)?;
        let len = u32::try_from(SLOT_LEN).map_err(io_err)?;
        flash.erase(0, len).map_err(io_err)?;
        flash.write(0, &padded(image)).map_err(io_err)
    }

    /// The header of the image in `slot`: what that slot runs.
    pub fn header(&self, slot: Slot) -> io::Result<Header> {
        let mut head = [0u8; HEADER_LEN];
        let mut flash = self.slot(slot)?;
        flash
            .read(0, &mut head)
            .map_err(|e| flash_err(&self.flash, e))?;
        Header::parse(&head).map_err(|e| io_err(format!("slot {slot}: {e}")))
    }
}

/// `data` padded with erased bytes to the 4-byte write granularity.
fn padded(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(data.len().div_ceil(4) * 4, 0xFF);
    v
}

/// The checkpoint area: one record (and the signed reader's resume point), erased when
/// there is none.
#[derive(Debug)]
pub struct CheckpointArea {
    flash: SimFlash,
    tap: Option<ResumeTap>,
}

impl CheckpointArea {
    fn area_len() -> u32 {
        u32::try_from(CHECKPOINT_SECTORS * SECTOR).unwrap_or(u32::MAX)
    }

    /// Saves, with each record, the resume point `tap` holds then.
    #[must_use]
    pub fn with_tap(mut self, tap: ResumeTap) -> Self {
        self.tap = Some(tap);
        self
    }

    fn read(&mut self, at: usize, buf: &mut [u8]) -> io::Result<()> {
        let at = u32::try_from(at).map_err(io_err)?;
        let result = self.flash.read(at, buf);
        result.map_err(|e| flash_err(&self.flash, e))
    }

    /// The stored record, `None` when the area is erased.
    pub fn load(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut record = vec![0u8; CHECKPOINT_LEN];
        self.read(0, &mut record)?;
        Ok((!record.iter().all(|&b| b == 0xFF)).then_some(record))
    }

    /// The stored checkpoint, if one is stored and valid.
    pub fn checkpoint(&mut self) -> io::Result<Option<Checkpoint>> {
        Ok(self
            .load()?
            .and_then(|bytes| Checkpoint::from_bytes(&bytes).ok()))
    }

    /// The resume point stored with the record, if one is stored and intact.
    pub fn resume_point(&mut self) -> io::Result<Option<Snapshot>> {
        let mut head = [0u8; RESUME_DATA_AT - RESUME_AT];
        self.read(RESUME_AT, &mut head)?;
        let (len, digest) = head.split_at(4);
        let len = u32::from_le_bytes(len.try_into().map_err(io_err)?) as usize;
        if len < 16 + crate::trust::HEADER_LEN || RESUME_DATA_AT + len > CHECKPOINT_SECTORS * SECTOR
        {
            return Ok(None);
        }
        let mut data = vec![0u8; len];
        self.read(RESUME_DATA_AT, &mut data)?;
        if Sha256::digest(&data).as_slice() != digest {
            return Ok(None);
        }
        Ok(Snapshot::decode(&data))
    }

    /// Replaces the record (and the resume point, when a tap is attached).
    pub fn save(&mut self, record: &[u8; CHECKPOINT_LEN]) -> io::Result<()> {
        let mut bytes = record.to_vec();
        if let Some(snapshot) = self.tap.as_ref().and_then(|t| t.borrow().clone()) {
            let data = snapshot.encode();
            if RESUME_DATA_AT + data.len() <= CHECKPOINT_SECTORS * SECTOR {
                let len = u32::try_from(data.len()).map_err(io_err)?;
                bytes.extend_from_slice(&len.to_le_bytes());
                bytes.extend_from_slice(&Sha256::digest(&data));
                bytes.extend_from_slice(&data);
            }
        }
        let result = self.flash.erase(0, Self::area_len());
        result.map_err(|e| flash_err(&self.flash, e))?;
        let result = self.flash.write(0, &padded(&bytes));
        result.map_err(|e| flash_err(&self.flash, e))
    }

    /// Erases the record.
    pub fn clear(&mut self) -> io::Result<()> {
        let result = self.flash.erase(0, Self::area_len());
        result.map_err(|e| flash_err(&self.flash, e))
    }
}

impl ota_http::device::CheckpointStore for CheckpointArea {
    fn load(&mut self) -> io::Result<Option<Vec<u8>>> {
        CheckpointArea::load(self)
    }
    fn save(&mut self, record: &[u8; CHECKPOINT_LEN]) -> io::Result<()> {
        CheckpointArea::save(self, record)
    }
    fn clear(&mut self) -> io::Result<()> {
        CheckpointArea::clear(self)
    }
}

/// The inactive slot being written; finalizing marks it for a trial boot of `version`.
#[derive(Debug)]
pub struct UpdateSlot<'a> {
    flash: SimFlash,
    boot: &'a mut BootController<SimFlash>,
    version: SlotVersion,
    total: u64,
    next_mark: u64,
    log: &'a Log,
}

impl<'a> UpdateSlot<'a> {
    /// The inactive slot of `boot` on `chip`, for an image of `total` bytes of `version`.
    pub fn new(
        chip: &Chip,
        boot: &'a mut BootController<SimFlash>,
        version: SlotVersion,
        total: u64,
        log: &'a Log,
    ) -> io::Result<Self> {
        let flash = chip.slot(boot.inactive_slot())?;
        Ok(Self {
            flash,
            boot,
            version,
            total: total.max(1),
            next_mark: 0,
            log,
        })
    }

    fn progress(&mut self, written_to: u64) {
        let percent = written_to.saturating_mul(100) / self.total;
        if percent >= self.next_mark {
            self.log.step(
                "DOWNLOADING",
                format!("{written_to} / {} bytes ({percent}%)", self.total),
            );
            self.next_mark = (percent / 25 + 1) * 25;
        }
    }
}

impl ota_http::device::Slot for UpdateSlot<'_> {
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let at = u32::try_from(offset).map_err(io_err)?;
        let len = u32::try_from(data.len()).map_err(io_err)?;
        let sector = u32::try_from(SECTOR).map_err(io_err)?;
        // Erase every sector that starts inside this write (chunks are sector-aligned).
        let first = at.div_ceil(sector) * sector;
        let end = at.saturating_add(len).div_ceil(sector) * sector;
        if first < end {
            let result = self.flash.erase(first, end);
            result.map_err(|e| flash_err(&self.flash, e))?;
        }
        let result = self.flash.write(at, &padded(data));
        result.map_err(|e| flash_err(&self.flash, e))?;
        self.progress(offset + u64::from(len));
        Ok(())
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let at = u32::try_from(offset).map_err(io_err)?;
        let result = self.flash.read(at, buf);
        result.map_err(|e| flash_err(&self.flash, e))
    }

    fn finalize(&mut self) -> io::Result<()> {
        self.log.step(
            "VERIFIED",
            format!(
                "{} package bytes: every check of the reader passed",
                self.total
            ),
        );
        let result = self.boot.mark_trial(self.version);
        result.map_err(|e| flash_err(&self.flash, e))?;
        self.log.step(
            "MARKED",
            format!(
                "slot {} marked for a trial boot of {}",
                self.boot.inactive_slot(),
                self.version
            ),
        );
        Ok(())
    }
}

/// Slot and checkpoint sector together: what the CoAP client writes through.
#[derive(Debug)]
pub struct CoapTarget<'a> {
    /// The slot.
    pub slot: UpdateSlot<'a>,
    /// The checkpoint sector.
    pub checkpoints: CheckpointArea,
}

impl ota_coap::device::UpdateTarget for CoapTarget<'_> {
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        ota_http::device::Slot::write(&mut self.slot, offset, data)
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        ota_http::device::Slot::read(&mut self.slot, offset, buf)
    }
    fn finalize(&mut self) -> io::Result<()> {
        ota_http::device::Slot::finalize(&mut self.slot)
    }
    fn save_checkpoint(&mut self, checkpoint: &Checkpoint) -> io::Result<()> {
        self.checkpoints.save(&checkpoint.to_bytes())
    }
    fn clear_checkpoint(&mut self) -> io::Result<()> {
        self.checkpoints.clear()
    }
}

#[cfg(test)]
mod tests {
    use super::{CHECKPOINT_AT, Chip, RESUME_DATA_AT};
    use crate::trust::{HEADER_LEN, ResumeTap, Snapshot};

    fn snapshot() -> Snapshot {
        Snapshot {
            received: 53_248,
            released: 49_152,
            header: [0x5A; HEADER_LEN],
            partial: vec![0xC3; 3_000],
        }
    }

    #[test]
    fn the_resume_point_is_saved_with_the_record_and_read_back() {
        let chip = Chip::in_memory(1);
        let tap = ResumeTap::default();
        let mut area = chip.checkpoint_area().expect("area").with_tap(tap.clone());
        assert_eq!(area.resume_point().expect("read"), None, "erased");
        *tap.borrow_mut() = Some(snapshot());
        area.save(&[0x11; 256]).expect("save");
        assert_eq!(area.load().expect("read"), Some(vec![0x11; 256]));
        assert_eq!(area.resume_point().expect("read"), Some(snapshot()));
        area.clear().expect("clear");
        assert_eq!(area.resume_point().expect("read"), None);
    }

    #[test]
    fn a_damaged_resume_point_is_ignored() {
        let chip = Chip::in_memory(2);
        let tap = ResumeTap::default();
        *tap.borrow_mut() = Some(snapshot());
        let mut area = chip.checkpoint_area().expect("area").with_tap(tap);
        area.save(&[0x22; 256]).expect("save");
        // One bit of the partial chunk flips (a torn write, a bad cell): the digest catches it.
        let at = CHECKPOINT_AT + RESUME_DATA_AT + 16 + HEADER_LEN + 100;
        let chip_flash = chip
            .flash
            .partition(0, super::CAPACITY)
            .expect("whole chip");
        chip_flash.poke(at, &[0xC2]).expect("poke");
        assert_eq!(area.resume_point().expect("read"), None);
        assert_eq!(area.load().expect("read"), Some(vec![0x22; 256]));
        // A length that does not fit the area is no resume point either.
        chip_flash
            .poke(CHECKPOINT_AT + 256, &u32::MAX.to_le_bytes())
            .expect("poke");
        assert_eq!(area.resume_point().expect("read"), None);
    }

    #[test]
    fn without_a_tap_only_the_record_is_saved() {
        let chip = Chip::in_memory(3);
        let mut area = chip.checkpoint_area().expect("area");
        area.save(&[0x33; 256]).expect("save");
        assert_eq!(area.resume_point().expect("read"), None);
        assert_eq!(area.load().expect("read"), Some(vec![0x33; 256]));
    }
}
