//! Calls into the no_std crates so the linker must resolve everything they use.
//! A dependency that pulls `std` fails with a duplicate `panic_impl` lang item;
//! one that pulls `alloc` fails with "no global memory allocator found".
#![no_std]
#![deny(unsafe_code)]

use core::panic::PanicInfo;

use ota_core::checkpoint::Checkpoint;
use ota_core::updater::{Action, Config, Instant, Kind, Offer, PlainReader, Updater};

#[panic_handler]
fn panic(_info: &PanicInfo<'_>) -> ! {
    loop {}
}

/// Runs one plain-image update through the updater with opaque inputs (so nothing is
/// constant-folded away); returns how many actions were emitted.
// Exported so the code under test is linked and its size can be measured.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn ota_check_update(seed: u8) -> u32 {
    let image = core::hint::black_box([seed; 64]);
    let checksum =
        core::hint::black_box("0000000000000000000000000000000000000000000000000000000000000000");
    run(&image, checksum)
}

fn run(image: &[u8], checksum_hex: &str) -> u32 {
    let mut buf = [0u8; 512];
    let checkpoint = Checkpoint::from_bytes(image).ok();
    let Ok(mut up) =
        Updater::<PlainReader>::new(Config::new(512, 4096), &mut buf, checkpoint.as_ref())
    else {
        return 0;
    };
    let len = u64::try_from(image.len()).unwrap_or(u64::MAX);
    let offer = Offer::new(Kind::Firmware, "fw", "1.0.1", len, "SHA256", checksum_hex);
    let Ok(reader) = PlainReader::for_offer(&offer) else {
        return 0;
    };
    let now = Instant::from_millis(0);
    if up.handle_offer(&offer, reader, now).is_err() {
        return 0;
    }
    let mut actions = 0;
    while let Some(action) = up.poll_action() {
        actions += 1;
        let step = match action {
            Action::RequestChunk { index, .. } => up.handle_chunk(index, image, now),
            Action::Write { .. } => up.handle_write_done(now),
            Action::Finalize => up.handle_finalize_done(now),
            _ => Ok(()),
        };
        if step.is_err() {
            break;
        }
    }
    actions
}

/// Exercises the error table so the wire names are linked.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn ota_check_error(code: u8) -> usize {
    let all = ota_core::UpdateError::ALL;
    all.get(usize::from(code))
        .map_or(0, |e| e.wire_name().len())
}

/// A RAM-backed NOR flash with 1 KiB sectors, enough for the two-sector boot state.
struct RamFlash {
    bytes: [u8; 2048],
}

/// The only way the RAM flash fails: an access outside it or misaligned.
#[derive(Debug)]
struct RamFlashError;

impl embedded_storage::nor_flash::NorFlashError for RamFlashError {
    fn kind(&self) -> embedded_storage::nor_flash::NorFlashErrorKind {
        embedded_storage::nor_flash::NorFlashErrorKind::OutOfBounds
    }
}

impl embedded_storage::nor_flash::ErrorType for RamFlash {
    type Error = RamFlashError;
}

impl embedded_storage::nor_flash::ReadNorFlash for RamFlash {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), RamFlashError> {
        let start = usize::try_from(offset).map_err(|_| RamFlashError)?;
        let src = self
            .bytes
            .get(start..start + bytes.len())
            .ok_or(RamFlashError)?;
        bytes.copy_from_slice(src);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.bytes.len()
    }
}

impl embedded_storage::nor_flash::NorFlash for RamFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 1024;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), RamFlashError> {
        let (from, to) = (
            usize::try_from(from).map_err(|_| RamFlashError)?,
            usize::try_from(to).map_err(|_| RamFlashError)?,
        );
        self.bytes
            .get_mut(from..to)
            .ok_or(RamFlashError)?
            .fill(0xFF);
        Ok(())
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), RamFlashError> {
        let start = usize::try_from(offset).map_err(|_| RamFlashError)?;
        let dst = self
            .bytes
            .get_mut(start..start + bytes.len())
            .ok_or(RamFlashError)?;
        for (d, s) in dst.iter_mut().zip(bytes) {
            *d &= *s;
        }
        Ok(())
    }
}

/// Runs the boot state through a trial and a confirm on a RAM flash; returns the sequence
/// number reached (links `ota_core::boot`).
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn ota_check_boot(patch: u64) -> u32 {
    use ota_core::boot::{BootController, SlotVersion};
    let flash = RamFlash {
        bytes: core::hint::black_box([0xFF; 2048]),
    };
    let Ok(mut boot) = BootController::open(flash) else {
        return 0;
    };
    if boot.boot().is_err() || boot.mark_trial(SlotVersion::new(1, 0, patch)).is_err() {
        return 0;
    }
    let _ = boot.confirm();
    boot.sequence()
}

/// Runs the signed-package reader (key-set root signature, manifest ed25519 signature,
/// policy, ChaCha20-Poly1305 per chunk, SHA-256) over opaque bytes, as a device would.
/// Returns the plaintext length, or 0 on any error.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn ota_check_signed_package(seed: u8) -> u64 {
    use ota_crypto::{keys, manifest, reader};
    let root = core::hint::black_box([seed; 32]);
    let key_set = core::hint::black_box([seed; 256]);
    let package = core::hint::black_box([seed; 1024]);
    let Ok(root) = keys::RootKey::from_bytes(&root) else {
        return 0;
    };
    let Ok(keys) = keys::KeySet::verify(&key_set, &root, 0) else {
        return 0;
    };
    let payload_key = keys::PayloadKey::from_bytes([seed; 32]);
    let policy = reader::DevicePolicy {
        now: 1_800_000_000,
        target: "board-rev-b",
        kind: manifest::Kind::Firmware,
        highest_accepted: manifest::SemVer::new(1, 0, 0),
        offered_version: None,
    };
    let mut chunk_buf = [0u8; 4096 + manifest::TAG_LEN];
    let mut r = reader::SignedPackageReader::new(&keys, Some(&payload_key), policy, &mut chunk_buf);
    let mut out = [0u8; 256];
    let mut input: &[u8] = &package;
    let mut total = 0u64;
    while !input.is_empty() {
        match r.feed(input, &mut out) {
            Ok(fed) if fed.consumed > 0 || fed.produced > 0 => {
                total += fed.produced as u64;
                input = input.get(fed.consumed..).unwrap_or_default();
            }
            _ => return 0,
        }
    }
    if r.finish().is_ok() { total } else { 0 }
}
