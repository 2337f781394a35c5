//! Shared driver for the scenario tests: runs an [`Updater`] against the testkit's scripted
//! chunk server on a virtual clock, with the slot and checkpoint store behind [`Host`].
#![allow(dead_code)] // each scenario file uses a part

pub mod device;

use ota_core::UpdateError;
use ota_core::checkpoint::Checkpoint;
use ota_core::checksum::{ChecksumAlgorithm, Hasher};
use ota_core::updater::{
    Action, Config, Instant, Kind, Offer, PlainReader, Report, State, Updater,
};
use ota_testkit::clock::VirtualClock;
use ota_testkit::server::ChunkServer;

/// Where the updater's actions land.
pub trait Host {
    /// Write `data` to the update slot at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), ()>;
    /// Read the update slot at `offset`.
    fn read(&mut self, offset: u64, out: &mut [u8]) -> Result<(), ()>;
    /// Store a checkpoint.
    fn persist(&mut self, cp: &Checkpoint) -> Result<(), ()>;
    /// Forget the checkpoint.
    fn clear_checkpoint(&mut self) -> Result<(), ()>;
    /// Mark the slot for a trial boot.
    fn finalize(&mut self) -> Result<(), ()>;
}

/// How a drive ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The machine asked for the reboot into the new slot.
    Reboot,
    /// The machine failed.
    Failed(UpdateError),
    /// The host failed (power cut).
    HostFailed,
    /// Nothing more to do and no timer running.
    Stuck,
}

/// A deterministic test image.
pub fn image(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u32::from(seed) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    Hasher::digest(ChecksumAlgorithm::Sha256, data).to_string()
}

/// An offer for `data` as ThingsBoard would announce it.
pub fn offer<'a>(title: &'a str, version: &'a str, size: u64, hex: &'a str) -> Offer<'a> {
    Offer::new(Kind::Firmware, title, version, size, "SHA256", hex)
}

/// A RAM slot + checkpoint store.
#[derive(Debug, Default)]
pub struct RamHost {
    pub slot: Vec<u8>,
    pub checkpoint: Option<[u8; 256]>,
    pub finalized: bool,
    pub writes: u32,
}

impl RamHost {
    pub fn new(capacity: usize) -> Self {
        Self {
            slot: vec![0xFF; capacity],
            ..Self::default()
        }
    }
}

impl Host for RamHost {
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), ()> {
        let at = usize::try_from(offset).map_err(|_| ())?;
        self.slot
            .get_mut(at..at + data.len())
            .ok_or(())?
            .copy_from_slice(data);
        self.writes += 1;
        Ok(())
    }
    fn read(&mut self, offset: u64, out: &mut [u8]) -> Result<(), ()> {
        let at = usize::try_from(offset).map_err(|_| ())?;
        out.copy_from_slice(self.slot.get(at..at + out.len()).ok_or(())?);
        Ok(())
    }
    fn persist(&mut self, cp: &Checkpoint) -> Result<(), ()> {
        self.checkpoint = Some(cp.to_bytes());
        Ok(())
    }
    fn clear_checkpoint(&mut self) -> Result<(), ()> {
        self.checkpoint = None;
        Ok(())
    }
    fn finalize(&mut self) -> Result<(), ()> {
        self.finalized = true;
        Ok(())
    }
}

/// Options of one drive.
#[derive(Clone, Copy, Debug, Default)]
pub struct Script {
    /// Push a `{"deleted":[…]}` cancel after this many slot writes.
    pub cancel_after_writes: Option<u32>,
}

/// Everything the drive observed.
#[derive(Debug, Default)]
pub struct Trace {
    pub reports: Vec<Report>,
    pub requests: u32,
    pub first_request_at: Option<usize>,
    pub persists: u32,
    pub clears: u32,
    pub actions: usize,
}

impl Trace {
    /// The `fw_state` names reported, in order.
    pub fn states(&self) -> Vec<&'static str> {
        self.reports.iter().map(Report::state_name).collect()
    }
}

/// Drains the machine's actions into `host`/`server`. `Err(end)` when the drive must stop.
fn drain<H: Host>(
    up: &mut Updater<'_, PlainReader>,
    server: &mut ChunkServer,
    host: &mut H,
    now: Instant,
    trace: &mut Trace,
    script: Script,
    writes: &mut u32,
) -> Result<(), End> {
    let mut read_buf = vec![0u8; up.config().chunk_size as usize];
    while let Some(action) = up.poll_action() {
        trace.actions += 1;
        match action {
            Action::RequestChunk { index, size } => {
                trace.requests += 1;
                trace.first_request_at.get_or_insert(trace.reports.len());
                server.request(index, size, now.as_millis());
            }
            Action::Write { offset, len } => {
                assert_eq!(up.chunk_data().len(), len);
                if host.write(offset, up.chunk_data()).is_err() {
                    return Err(End::HostFailed);
                }
                *writes += 1;
                if script.cancel_after_writes == Some(*writes) {
                    up.handle_cancel(now);
                } else {
                    up.handle_write_done(now).map_err(End::Failed)?;
                }
            }
            Action::ReadBack { offset, len } => {
                let buf = &mut read_buf[..len];
                if host.read(offset, buf).is_err() {
                    return Err(End::HostFailed);
                }
                up.handle_read_back(buf, now).map_err(End::Failed)?;
            }
            Action::Persist(cp) => {
                trace.persists += 1;
                if host.persist(&cp).is_err() {
                    return Err(End::HostFailed);
                }
            }
            Action::ClearCheckpoint => {
                trace.clears += 1;
                if host.clear_checkpoint().is_err() {
                    return Err(End::HostFailed);
                }
            }
            Action::Report(r) => trace.reports.push(r),
            Action::Finalize => {
                if host.finalize().is_err() {
                    return Err(End::HostFailed);
                }
                up.handle_finalize_done(now).map_err(End::Failed)?;
            }
            Action::Reboot => return Err(End::Reboot),
        }
    }
    if let State::Failed(e) = up.state() {
        return Err(End::Failed(e));
    }
    Ok(())
}

/// Runs the machine (after `handle_offer`) until it reboots, fails or gets stuck.
pub fn drive<H: Host>(
    up: &mut Updater<'_, PlainReader>,
    server: &mut ChunkServer,
    clock: &mut VirtualClock,
    host: &mut H,
    script: Script,
    trace: &mut Trace,
) -> End {
    let mut writes = 0;
    loop {
        let now = Instant::from_millis(clock.now_ms());
        if let Err(end) = drain(up, server, host, now, trace, script, &mut writes) {
            return end;
        }
        let next = [
            server.next_delivery_ms(),
            up.poll_timeout().map(Instant::as_millis),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(t) = next else { return End::Stuck };
        clock.advance_to(t);
        let now = Instant::from_millis(clock.now_ms());
        if let Some(d) = server.poll_delivery(now.as_millis()) {
            if let Err(e) = up.handle_chunk(d.index, &d.data, now) {
                // The failure report is queued; drain it before stopping.
                let _ = drain(up, server, host, now, trace, script, &mut writes);
                return End::Failed(e);
            }
        } else if up.poll_timeout().is_some_and(|t| t <= now) {
            up.handle_timeout(now);
        }
    }
}

/// A config for tests: `chunk` bytes per chunk, checkpoint every `per_checkpoint` chunks.
pub fn config(chunk: u32, slot: u64, per_checkpoint: u32) -> Config {
    let mut c = Config::new(chunk, slot);
    c.checkpoint_interval = chunk * per_checkpoint;
    c.request_timeout_ms = 2_000;
    c.backoff_base_ms = 100;
    c.backoff_max_ms = 1_600;
    c.max_retries = 5;
    c
}
