//! A simulated device updating its firmware through `ota-core`.
//!
//! One simulated NOR chip holds the A/B boot state, a checkpoint sector and two image slots.
//! Version 1.0.0 runs from slot A. The testkit's scripted server offers 1.1.0 over a link that
//! loses 5 % of the chunk requests; the device downloads it into slot B through the sans-I/O
//! [`Updater`], verifies it, marks it for a trial boot, reboots into it, confirms it and
//! reports `UPDATED`, printing every step and the version it finally runs.

use std::process::ExitCode;
use std::time::Instant as WallClock;

use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
use ota_core::boot::{BootConfig, BootController, BootDecision, Slot, SlotVersion};
use ota_core::checkpoint::{CHECKPOINT_LEN, Checkpoint};
use ota_core::checksum::{ChecksumAlgorithm, Hasher};
use ota_core::updater::{Action, Config, Instant, Kind, Offer, PlainReader, Report, Updater};
use ota_testkit::clock::VirtualClock;
use ota_testkit::flash::SimFlash;
use ota_testkit::server::{ChunkServer, Faults};

const SECTOR: usize = 4096;
const SECTOR_U32: u32 = 4096;
const SLOT_LEN: usize = 256 * 1024;
const BOOT_AT: usize = 0;
const CHECKPOINT_AT: usize = 2 * SECTOR;
const SLOTS_AT: usize = 3 * SECTOR;
const CHUNK: u32 = 4096;

type Error = Box<dyn std::error::Error>;

/// The chip and its partitions.
struct Device {
    flash: SimFlash,
}

impl Device {
    fn part(&self, at: usize, len: usize) -> Result<SimFlash, Error> {
        Ok(self.flash.partition(at, len)?)
    }

    fn boot_area(&self) -> Result<SimFlash, Error> {
        self.part(BOOT_AT, 2 * SECTOR)
    }

    fn slot(&self, slot: Slot) -> Result<SimFlash, Error> {
        self.part(SLOTS_AT + usize::from(slot.index()) * SLOT_LEN, SLOT_LEN)
    }

    /// The image in `slot` carries its version in its first 16 bytes (a real image would have
    /// it in its header).
    fn version_in(&self, slot: Slot) -> Result<String, Error> {
        let mut head = [0u8; 16];
        self.slot(slot)?.read(0, &mut head)?;
        let text = head.split(|&b| b == 0).next().unwrap_or_default();
        Ok(String::from_utf8_lossy(text).into_owned())
    }
}

/// A firmware image whose first 16 bytes name its version.
fn firmware(version: &str, len: usize) -> Vec<u8> {
    let mut image: Vec<u8> = (0..len)
        .map(|i| u8::try_from(i * 31 % 251).unwrap_or(0))
        .collect();
    image[..16].fill(0);
    image[..version.len()].copy_from_slice(version.as_bytes());
    image
}

fn padded(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(data.len().div_ceil(4) * 4, 0xFF);
    v
}

fn print_report(report: &Report, clock: VirtualClock) {
    let p = report.progress;
    match report.error() {
        Some(e) => println!(
            "[{:>7} ms] fw_state = {:<11} fw_error = {}",
            clock.now_ms(),
            report.state_name(),
            ota_core::updater::fw_error(e)
        ),
        None if p.total == 0 => {
            println!(
                "[{:>7} ms] fw_state = {}",
                clock.now_ms(),
                report.state_name()
            );
        }
        None => println!(
            "[{:>7} ms] fw_state = {:<11} ({} / {} bytes, {}%)",
            clock.now_ms(),
            report.state_name(),
            p.done,
            p.total,
            p.percent()
        ),
    }
}

/// Start-up 1: running 1.0.0 from slot A, download 1.1.0 into slot B and finalize it.
fn download(
    dev: &Device,
    offer: &Offer<'_>,
    server: &mut ChunkServer,
    clock: &mut VirtualClock,
) -> Result<(), Error> {
    let mut boot = BootController::open(dev.boot_area()?)?;
    let decision = boot.boot()?;
    println!(
        "boot: {:?}, running {} from slot {}",
        decision,
        dev.version_in(decision.slot())?,
        decision.slot()
    );
    let target = boot.inactive_slot();
    let mut slot = dev.slot(target)?;
    let mut ckpt_area = dev.part(CHECKPOINT_AT, SECTOR)?;
    let mut stored = [0u8; CHECKPOINT_LEN];
    ckpt_area.read(0, &mut stored)?;
    let checkpoint = Checkpoint::from_bytes(&stored).ok();

    let mut config = Config::new(CHUNK, SLOT_LEN as u64);
    config.request_timeout_ms = 1_000;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut up = Updater::new(config, &mut buf, checkpoint.as_ref())?;
    println!(
        "offer: {} {} ({} bytes, {} {}), downloading into slot {target}",
        offer.title, offer.version, offer.size, offer.checksum_algorithm, offer.checksum
    );
    up.handle_offer(
        offer,
        PlainReader::for_offer(offer)?,
        Instant::from_millis(clock.now_ms()),
    )?;
    let mut readback = vec![0u8; CHUNK as usize];
    loop {
        let now = Instant::from_millis(clock.now_ms());
        while let Some(action) = up.poll_action() {
            match action {
                Action::RequestChunk { index, size } => {
                    server.request(index, size, now.as_millis());
                }
                Action::Write { offset, len } => {
                    let at = u32::try_from(offset)?;
                    if at.is_multiple_of(SECTOR_U32) {
                        slot.erase(at, at + SECTOR_U32)?;
                    }
                    debug_assert_eq!(len, up.chunk_data().len());
                    slot.write(at, &padded(up.chunk_data()))?;
                    up.handle_write_done(now)?;
                }
                Action::ReadBack { offset, len } => {
                    slot.read(u32::try_from(offset)?, &mut readback[..len])?;
                    up.handle_read_back(&readback[..len], now)?;
                }
                Action::Persist(cp) => {
                    ckpt_area.erase(0, SECTOR_U32)?;
                    ckpt_area.write(0, &cp.to_bytes())?;
                }
                Action::ClearCheckpoint => ckpt_area.erase(0, SECTOR_U32)?,
                Action::Report(report) => print_report(&report, *clock),
                Action::Finalize => {
                    boot.mark_trial(SlotVersion::new(1, 1, 0))?;
                    println!("finalize: slot {target} marked for a trial boot of 1.1.0");
                    up.handle_finalize_done(now)?;
                }
                Action::Reboot => {
                    let s = server.stats();
                    println!(
                        "reboot: {} chunk requests, {} lost by the link, {} retried",
                        s.requests,
                        s.lost,
                        up.stats().retries
                    );
                    return Ok(());
                }
            }
        }
        if let Some(e) = up.state().error() {
            return Err(format!("update failed: {}", ota_core::updater::fw_error(e)).into());
        }
        let next = [
            server.next_delivery_ms(),
            up.poll_timeout().map(Instant::as_millis),
        ]
        .into_iter()
        .flatten()
        .min()
        .ok_or("the update stalled with no timer running")?;
        clock.advance_to(next);
        let now = Instant::from_millis(clock.now_ms());
        if let Some(d) = server.poll_delivery(now.as_millis()) {
            up.handle_chunk(d.index, &d.data, now)?;
        } else {
            up.handle_timeout(now);
        }
    }
}

/// Start-up 2: the boot decision picks the trial, the new image confirms itself and reports.
fn trial_boot(dev: &Device, clock: VirtualClock) -> Result<String, Error> {
    let mut boot = BootController::open(dev.boot_area()?)?;
    let decision = boot.boot()?;
    let BootDecision::Trial {
        slot,
        version,
        boot: n,
    } = decision
    else {
        return Err(format!("expected a trial boot, got {decision:?}").into());
    };
    println!("boot: trial #{n} of {version} from slot {slot}");
    boot.confirm()?;
    println!("confirm: slot {} is now active", boot.active_slot());
    let mut buf = vec![0u8; CHUNK as usize];
    let mut up: Updater<'_, PlainReader> =
        Updater::new(Config::new(CHUNK, SLOT_LEN as u64), &mut buf, None)?;
    if boot.owed_report().is_some() {
        up.handle_boot_outcome(Kind::Firmware, true, Instant::from_millis(clock.now_ms()));
        while let Some(Action::Report(r)) = up.poll_action() {
            print_report(&r, clock);
        }
        boot.clear_owed_report()?;
    }
    // What runs now, read from the slot the boot loader starts.
    let mut boot = BootController::open(dev.boot_area()?)?;
    let running = boot.boot()?.slot();
    dev.version_in(running)
}

fn run() -> Result<(), Error> {
    let started = WallClock::now();
    let old = firmware("1.0.0", 180_000);
    let new = firmware("1.1.0", 200_000);
    let dev = Device {
        flash: SimFlash::with_seed(SLOTS_AT + 2 * SLOT_LEN, 1),
    };
    dev.slot(Slot::A)?.write(0, &padded(&old))?;
    BootController::format(
        dev.boot_area()?,
        SlotVersion::new(1, 0, 0),
        BootConfig::default(),
    )?;

    let checksum = Hasher::digest(ChecksumAlgorithm::Sha256, &new).to_string();
    let offer = Offer::new(
        Kind::Firmware,
        "sim-app",
        "1.1.0",
        new.len() as u64,
        "SHA256",
        &checksum,
    );
    let mut server = ChunkServer::new(new.clone(), Faults::lossy(0.05), 42);
    let mut clock = VirtualClock::new();

    download(&dev, &offer, &mut server, &mut clock)?;
    let running = trial_boot(&dev, clock)?;
    if running != "1.1.0" {
        return Err(format!("expected to run 1.1.0, running {running}").into());
    }
    println!(
        "done: running {running} (read from the booted slot), {} ms of simulated link time, {:.1} ms wall time",
        clock.now_ms(),
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
