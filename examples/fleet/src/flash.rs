//! A device's flash: one in-memory [`SimFlash`] chip split into the boot-state area, a
//! checkpoint sector and the two image slots, and the adapters the transports' device
//! clients write through.
//!
//! ```text
//! 0            boot state (2 sectors, ota_core::boot)
//! 2 sectors    download checkpoint (1 sector)
//! 3 sectors    slot A (slot_len)
//! + slot_len   slot B (slot_len)
//! ```

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
use ota_core::boot::{BootController, Slot, SlotVersion};
use ota_core::checkpoint::{CHECKPOINT_LEN, Checkpoint};
use ota_testkit::flash::SimFlash;

use crate::firmware::{HEADER_LEN, Header};

/// Erase sector size.
pub const SECTOR: usize = 4096;
/// Bytes per download chunk (one sector: each chunk erases exactly what it writes).
pub const CHUNK: u32 = 4096;
const BOOT_AT: usize = 0;
const CHECKPOINT_AT: usize = 2 * SECTOR;
const SLOTS_AT: usize = 3 * SECTOR;

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The chip of one simulated device. Handles share the same memory: a "power cycle" is
/// re-opening the boot state from the chip.
#[derive(Debug)]
pub struct Chip {
    flash: SimFlash,
    slot_len: usize,
}

impl Chip {
    /// An erased chip whose slots hold `image_len` bytes (rounded up to whole sectors).
    pub fn new(image_len: usize) -> Self {
        let slot_len = image_len.max(1).div_ceil(SECTOR) * SECTOR;
        Self {
            flash: SimFlash::new(SLOTS_AT + 2 * slot_len),
            slot_len,
        }
    }

    /// Bytes per slot.
    pub const fn slot_len(&self) -> usize {
        self.slot_len
    }

    fn part(&self, at: usize, len: usize) -> io::Result<SimFlash> {
        self.flash.partition(at, len).map_err(io_err)
    }

    /// The boot-state area.
    pub fn boot_area(&self) -> io::Result<SimFlash> {
        self.part(BOOT_AT, 2 * SECTOR)
    }

    /// The checkpoint sector.
    pub fn checkpoint_area(&self) -> io::Result<CheckpointArea> {
        Ok(CheckpointArea {
            flash: self.part(CHECKPOINT_AT, SECTOR)?,
        })
    }

    /// One image slot.
    pub fn slot(&self, slot: Slot) -> io::Result<SimFlash> {
        self.part(
            SLOTS_AT + usize::from(slot.index()) * self.slot_len,
            self.slot_len,
        )
    }

    /// Writes a whole image into `slot` (factory programming).
    pub fn program(&self, slot: Slot, image: &[u8]) -> io::Result<()> {
        let mut flash = self.slot(slot)?;
        let len = u32::try_from(self.slot_len).map_err(io_err)?;
        flash.erase(0, len).map_err(io_err)?;
        flash.write(0, &padded(image)).map_err(io_err)
    }

    /// The header of the image in `slot`: what that slot runs.
    pub fn header(&self, slot: Slot) -> io::Result<Header> {
        let mut head = [0u8; HEADER_LEN];
        self.slot(slot)?.read(0, &mut head).map_err(io_err)?;
        Header::parse(&head).map_err(|e| io_err(format!("slot {slot}: {e}")))
    }
}

/// `data` padded with erased bytes to the 4-byte write granularity.
fn padded(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(data.len().div_ceil(4) * 4, 0xFF);
    v
}

/// The checkpoint sector: one record, erased when there is none.
#[derive(Debug)]
pub struct CheckpointArea {
    flash: SimFlash,
}

impl CheckpointArea {
    fn sector() -> u32 {
        u32::try_from(SECTOR).unwrap_or(u32::MAX)
    }

    /// The stored record, `None` when the sector is erased.
    pub fn load(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut record = vec![0u8; CHECKPOINT_LEN];
        self.flash.read(0, &mut record).map_err(io_err)?;
        Ok((!record.iter().all(|&b| b == 0xFF)).then_some(record))
    }

    /// The stored checkpoint, if one is stored and valid.
    pub fn checkpoint(&mut self) -> io::Result<Option<Checkpoint>> {
        Ok(self
            .load()?
            .and_then(|bytes| Checkpoint::from_bytes(&bytes).ok()))
    }

    /// Replaces the record.
    pub fn save(&mut self, record: &[u8; CHECKPOINT_LEN]) -> io::Result<()> {
        self.flash.erase(0, Self::sector()).map_err(io_err)?;
        self.flash.write(0, record).map_err(io_err)
    }

    /// Erases the record.
    pub fn clear(&mut self) -> io::Result<()> {
        self.flash.erase(0, Self::sector()).map_err(io_err)
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
/// Counts the bytes written into a shared counter. What the HTTP client writes through.
#[derive(Debug)]
pub struct SlotWriter<'a> {
    flash: SimFlash,
    boot: &'a mut BootController<SimFlash>,
    version: SlotVersion,
    written: &'a AtomicU64,
}

impl<'a> SlotWriter<'a> {
    /// The inactive slot of `boot` on `chip`, for an image of `version`; every byte written
    /// is added to `written`.
    pub fn new(
        chip: &Chip,
        boot: &'a mut BootController<SimFlash>,
        version: SlotVersion,
        written: &'a AtomicU64,
    ) -> io::Result<Self> {
        Ok(Self {
            flash: chip.slot(boot.inactive_slot())?,
            boot,
            version,
            written,
        })
    }
}

impl ota_http::device::Slot for SlotWriter<'_> {
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let at = u32::try_from(offset).map_err(io_err)?;
        let len = u32::try_from(data.len()).map_err(io_err)?;
        let sector = u32::try_from(SECTOR).map_err(io_err)?;
        // Erase every sector that starts inside this write (chunks are sector-aligned).
        let first = at.div_ceil(sector) * sector;
        let end = at.saturating_add(len).div_ceil(sector) * sector;
        if first < end {
            self.flash.erase(first, end).map_err(io_err)?;
        }
        self.flash.write(at, &padded(data)).map_err(io_err)?;
        self.written.fetch_add(u64::from(len), Ordering::Relaxed);
        Ok(())
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let at = u32::try_from(offset).map_err(io_err)?;
        self.flash.read(at, buf).map_err(io_err)
    }

    fn finalize(&mut self) -> io::Result<()> {
        self.boot.mark_trial(self.version).map_err(io_err)
    }
}

/// Slot and checkpoint sector together: what the CoAP client writes through.
#[derive(Debug)]
pub struct UpdateTarget<'a> {
    /// The slot.
    pub slot: SlotWriter<'a>,
    /// The checkpoint sector.
    pub checkpoints: CheckpointArea,
}

impl ota_coap::device::UpdateTarget for UpdateTarget<'_> {
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
