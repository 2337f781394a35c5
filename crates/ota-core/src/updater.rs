//! The device update as a sans-I/O state machine.
//!
//! The machine never reads a clock, never does I/O and never allocates: events go in through
//! `handle_*` methods, work comes out of [`Updater::poll_action`], and the next deadline out of
//! [`Updater::poll_timeout`]. Every transport (ThingsBoard MQTT/HTTP/CoAP, Sming, EnigmaIoT)
//! drives the same machine.
//!
//! # Buffers
//! The chunk buffer is the caller's: [`Updater::new`] borrows one `&mut [u8]` of at least
//! [`Config::chunk_size`] bytes for the machine's lifetime. The package reader writes each
//! chunk's plaintext into it and [`Action::Write`] tells the caller to copy
//! [`Updater::chunk_data`] to the slot. The machine's own state stays under 1 KiB.
//!
//! # One chunk at a time
//! A chunk is requested, received, written, and only after [`Updater::handle_write_done`] is the
//! next one requested. Stale and duplicate answers are ignored; an answer for a chunk not asked
//! for, or of the wrong length, is dropped and the expected chunk is requested again (counted
//! as a retry). Timeouts retry with a deterministic, capped exponential back-off.
//!
//! # Resume
//! Every [`Config::checkpoint_interval`] written bytes the machine emits
//! [`Action::Persist`] with a [`Checkpoint`]. After a power cut, pass the stored checkpoint to
//! [`Updater::new`]. When the same package is offered again, the machine does not trust the
//! slot: it asks for the written bytes back ([`Action::ReadBack`] →
//! [`Updater::handle_read_back`]), re-hashes them into the reader, checks them against the
//! checkpoint's CRC-32, and continues with the next chunk. If they differ it restarts from 0.
//!
//! ```
//! use ota_core::checksum::{ChecksumAlgorithm, Hasher};
//! use ota_core::updater::{Action, Config, Instant, Kind, Offer, PlainReader, Updater};
//!
//! let image = [7u8; 3000];
//! let digest = Hasher::digest(ChecksumAlgorithm::Sha256, &image);
//! let mut hex = [0u8; 128];
//! let offer = Offer::new(Kind::Firmware, "app", "1.1.0", 3000, "SHA256", digest.to_hex(&mut hex));
//! let mut buf = [0u8; 1024];
//! let mut slot = [0xFFu8; 4096];
//! let mut up = Updater::new(Config::new(1024, 4096), &mut buf, None)?;
//! let now = Instant::from_millis(0);
//! up.handle_offer(&offer, PlainReader::for_offer(&offer)?, now)?;
//! while let Some(action) = up.poll_action() {
//!     match action {
//!         Action::RequestChunk { index, size } => {
//!             let start = (index * size) as usize;
//!             let end = (start + size as usize).min(image.len());
//!             up.handle_chunk(index, &image[start..end], now)?;
//!         }
//!         Action::Write { offset, len } => {
//!             slot[offset as usize..][..len].copy_from_slice(up.chunk_data());
//!             up.handle_write_done(now)?;
//!         }
//!         Action::Finalize => up.handle_finalize_done(now)?,
//!         _ => {}
//!     }
//! }
//! assert_eq!(&slot[..3000], &image[..]);
//! assert_eq!(up.state().tb_name(), "UPDATING"); // waiting for the reboot
//! # Ok::<(), ota_core::UpdateError>(())
//! ```

use core::fmt;

use heapless::{Deque, String};

use crate::UpdateError;
use crate::checkpoint::Checkpoint;
use crate::checksum::{ChecksumAlgorithm, Digest};

mod plain;

pub use plain::PlainReader;

/// Longest title (bytes) the updater and its checkpoint hold.
pub const MAX_TITLE_LEN: usize = 64;
/// Longest version text (bytes) the updater and its checkpoint hold.
pub const MAX_VERSION_LEN: usize = 64;
/// Capacity of [`fw_error`]'s text: every message fits.
pub const FW_ERROR_CAPACITY: usize = 128;

/// A point in time in milliseconds on the caller's monotonic clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The instant `ms` milliseconds after the clock's origin.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the clock's origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + ms`, saturating at the end of time.
    #[must_use]
    pub const fn plus_millis(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }
}

/// Firmware or software (ThingsBoard's `fw_` / `sw_` key families); the same type the
/// framing and topic modules use.
pub use crate::frame::Kind;

/// The tunables of the machine. Build with [`Config::new`] and adjust fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Bytes per requested chunk (ThingsBoard allows up to 65 536).
    pub chunk_size: u32,
    /// Capacity of the inactive slot in bytes; a larger image is refused before any request.
    pub slot_capacity: u64,
    /// Retries of one chunk before giving up (`TIMEOUT`, or `NETWORK_ERROR` for transport errors).
    pub max_retries: u8,
    /// How long to wait for a requested chunk, in ms.
    pub request_timeout_ms: u32,
    /// First back-off before a retry, in ms; doubles per retry of the same chunk.
    pub backoff_base_ms: u32,
    /// Upper bound of the back-off, in ms.
    pub backoff_max_ms: u32,
    /// Persist a checkpoint each time this many bytes have been written (a multiple of
    /// `chunk_size`; use a multiple of the slot's erase size so that a resumed download
    /// starts on an erase boundary). 0 disables checkpoints.
    pub checkpoint_interval: u32,
}

impl Config {
    /// Defaults for a chunk size and a slot: 12 retries (as the Arduino SDK), 5 s timeout,
    /// 250 ms back-off doubling up to 8 s, a checkpoint every 16 chunks.
    pub const fn new(chunk_size: u32, slot_capacity: u64) -> Self {
        Self {
            chunk_size,
            slot_capacity,
            max_retries: 12,
            request_timeout_ms: 5_000,
            backoff_base_ms: 250,
            backoff_max_ms: 8_000,
            checkpoint_interval: chunk_size.saturating_mul(16),
        }
    }

    /// The back-off before retry number `attempt` (1-based): `base · 2^(attempt-1)`, capped.
    pub fn backoff_ms(&self, attempt: u8) -> u32 {
        let shift = u32::from(attempt.saturating_sub(1)).min(31);
        self.backoff_base_ms
            .saturating_mul(1u32 << shift)
            .min(self.backoff_max_ms)
    }
}

/// Why a [`Config`] / buffer pair was refused by [`Updater::new`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `chunk_size` is 0.
    #[error("chunk size is 0")]
    ZeroChunkSize,
    /// The caller's buffer cannot hold one chunk.
    #[error("chunk buffer has {buffer} bytes, chunk size is {chunk_size}")]
    BufferTooSmall {
        /// Buffer length.
        buffer: usize,
        /// Configured chunk size.
        chunk_size: u32,
    },
    /// `checkpoint_interval` is not a multiple of `chunk_size`.
    #[error("checkpoint interval {interval} is not a multiple of chunk size {chunk_size}")]
    CheckpointInterval {
        /// Configured interval.
        interval: u32,
        /// Configured chunk size.
        chunk_size: u32,
    },
}

impl From<ConfigError> for UpdateError {
    fn from(_: ConfigError) -> Self {
        UpdateError::InvalidState
    }
}

/// An update offered by the server, borrowed from the transport's message (ThingsBoard shared
/// attributes, a Sming header, an EnigmaIoT header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer<'a> {
    /// Firmware or software.
    pub kind: Kind,
    /// Package title (`fw_title`).
    pub title: &'a str,
    /// Package version (`fw_version`).
    pub version: &'a str,
    /// Package size in bytes (`fw_size`).
    pub size: u64,
    /// ThingsBoard algorithm name (`fw_checksum_algorithm`), e.g. `"SHA256"`.
    pub checksum_algorithm: &'a str,
    /// Lower-case hex checksum (`fw_checksum`).
    pub checksum: &'a str,
    /// Optional tag (`fw_tag`).
    pub tag: Option<&'a str>,
    /// Optional external URL (`fw_url`); the device then downloads it itself.
    pub url: Option<&'a str>,
}

impl<'a> Offer<'a> {
    /// An offer without tag or URL.
    pub const fn new(
        kind: Kind,
        title: &'a str,
        version: &'a str,
        size: u64,
        checksum_algorithm: &'a str,
        checksum: &'a str,
    ) -> Self {
        Self {
            kind,
            title,
            version,
            size,
            checksum_algorithm,
            checksum,
            tag: None,
            url: None,
        }
    }
}

/// The machine's state, with ThingsBoard's `fw_state` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Nothing in progress.
    Idle,
    /// Receiving chunks (also while re-checking the slot on resume).
    Downloading,
    /// Every byte received and written.
    Downloaded,
    /// The image's digest (and signature, for signed packages) checked out.
    Verified,
    /// The slot is being activated / the device is about to reboot into it.
    Updating,
    /// The new image booted and was confirmed.
    Updated,
    /// The update failed for the given reason.
    Failed(UpdateError),
}

impl State {
    /// ThingsBoard's `fw_state` value (`IDLE` for [`State::Idle`], as the Python SDK sends).
    pub const fn tb_name(self) -> &'static str {
        match self {
            Self::Idle => "IDLE",
            Self::Downloading => "DOWNLOADING",
            Self::Downloaded => "DOWNLOADED",
            Self::Verified => "VERIFIED",
            Self::Updating => "UPDATING",
            Self::Updated => "UPDATED",
            Self::Failed(_) => "FAILED",
        }
    }

    /// The failure reason, in [`State::Failed`].
    pub const fn error(self) -> Option<UpdateError> {
        match self {
            Self::Failed(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tb_name())
    }
}

/// Bytes done out of the total, for progress telemetry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Package bytes received and verified so far.
    pub done: u64,
    /// Package size.
    pub total: u64,
}

impl Progress {
    /// Whole percent done (0 for an empty total).
    pub fn percent(self) -> u8 {
        if self.total == 0 {
            return 0;
        }
        let pct = u128::from(self.done.min(self.total)) * 100 / u128::from(self.total);
        u8::try_from(pct).unwrap_or(100)
    }
}

/// A telemetry report: `fw_state` (or `sw_state`), `fw_error` when failed, and progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    /// Firmware or software (selects the `fw_`/`sw_` keys).
    pub kind: Kind,
    /// The state entered.
    pub state: State,
    /// Progress at that moment.
    pub progress: Progress,
}

impl Report {
    /// ThingsBoard's state name for the `fw_state` key.
    pub const fn state_name(&self) -> &'static str {
        self.state.tb_name()
    }

    /// The failure, if the report is `FAILED`.
    pub const fn error(&self) -> Option<UpdateError> {
        self.state.error()
    }
}

/// The `fw_error` telemetry text for `error`: it starts with the stable wire name, then a
/// colon and a sentence, e.g. `"CHECKSUM_MISMATCH: the image digest does not match …"`.
pub fn fw_error(error: UpdateError) -> String<FW_ERROR_CAPACITY> {
    let mut text = String::new();
    // Every message is shorter than the capacity (asserted by a test); a future longer one
    // would be cut, never panic.
    let _ = fmt::write(&mut text, format_args!("{error}"));
    text
}

/// Work the caller must do, pulled out with [`Updater::poll_action`].
// `Persist` carries the 256-byte record by value: there is no heap to box it in, and an
// action is consumed right after it is polled.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Ask the transport for chunk `index` of `size` bytes (bytes `[index·size, …)`).
    RequestChunk {
        /// Chunk index.
        index: u32,
        /// Chunk size (the same for every request of one download).
        size: u32,
    },
    /// Write [`Updater::chunk_data`] (`len` bytes) to the slot at `offset`, then call
    /// [`Updater::handle_write_done`].
    Write {
        /// Slot offset.
        offset: u64,
        /// Bytes to write.
        len: usize,
    },
    /// Read `len` slot bytes at `offset` and pass them to [`Updater::handle_read_back`]
    /// (resume only).
    ReadBack {
        /// Slot offset.
        offset: u64,
        /// Bytes to read.
        len: usize,
    },
    /// Store this checkpoint (its [`Checkpoint::to_bytes`]) where [`Updater::new`] can get it
    /// after a power cut.
    Persist(Checkpoint),
    /// Forget the stored checkpoint (the download ended, failed or changed).
    ClearCheckpoint,
    /// Send this telemetry report.
    Report(Report),
    /// Every byte is written and verified: mark the slot for a trial boot, then call
    /// [`Updater::handle_finalize_done`] (or [`Updater::handle_error`] on failure).
    Finalize,
    /// Reboot into the new slot.
    Reboot,
}

/// Package identity of the download in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Identity {
    kind: Kind,
    title: String<MAX_TITLE_LEN>,
    version: String<MAX_VERSION_LEN>,
    digest: Digest,
    size: u64,
}

/// Fine-grained phase; [`State`] is derived from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    /// Re-reading `[0, target)` of the slot; `offset` bytes absorbed so far.
    ReadingBack {
        offset: u64,
        target: u64,
        crc: u32,
    },
    AwaitChunk {
        deadline: Instant,
    },
    Backoff {
        until: Instant,
    },
    AwaitWrite {
        len: usize,
    },
    AwaitFinalize,
    AwaitReboot,
    Updated,
    Failed(UpdateError),
}

/// Queued work; [`Action`]s are built from it when polled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    Request { index: u32 },
    Write { offset: u64, len: usize },
    ReadBack { offset: u64, len: usize },
    Persist,
    ClearCheckpoint,
    Report(State),
    Finalize,
    Reboot,
}

/// Most actions a single `handle_*` call queues.
const QUEUE: usize = 6;

pub use crate::reader::ResumableReader;

/// Counters for tests and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Chunk requests issued (first tries and retries).
    pub requests: u32,
    /// Retries (timeouts, transport errors, bad answers).
    pub retries: u32,
    /// Answers ignored (stale, duplicate, or arriving while busy).
    pub ignored: u32,
    /// Bytes re-read from the slot on resume.
    pub read_back: u64,
}

/// The sans-I/O device updater. `R` turns package bytes into verified plaintext
/// ([`PlainReader`] for plain images; `ota-crypto` provides a signed one).
pub struct Updater<'b, R: ResumableReader> {
    config: Config,
    buf: &'b mut [u8],
    reader: Option<R>,
    id: Option<Identity>,
    phase: Phase,
    queue: Deque<Pending, QUEUE>,
    /// Package bytes fed to the reader.
    package_offset: u64,
    /// Plaintext bytes written to the slot.
    written: u64,
    written_crc: crc32fast::Hasher,
    next_chunk: u32,
    attempt: u8,
    /// A checkpoint loaded at start, not yet matched against an offer.
    resume: Option<ResumePoint>,
    kind: Kind,
    stats: Stats,
}

/// What a stored checkpoint says about the slot.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ResumePoint {
    chunk_size: u32,
    package_offset: u64,
    written: u64,
    written_crc: u32,
    next_chunk: u32,
}

impl<R: ResumableReader> fmt::Debug for Updater<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Updater")
            .field("state", &self.state())
            .field("progress", &self.progress())
            .field("next_chunk", &self.next_chunk)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<'b, R: ResumableReader> Updater<'b, R> {
    /// A machine with `config`, borrowing `buf` (≥ `config.chunk_size` bytes) as its chunk
    /// buffer, and the checkpoint read from storage after a reboot, if any.
    pub fn new(
        config: Config,
        buf: &'b mut [u8],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<Self, ConfigError> {
        if config.chunk_size == 0 {
            return Err(ConfigError::ZeroChunkSize);
        }
        if (buf.len() as u64) < u64::from(config.chunk_size) {
            return Err(ConfigError::BufferTooSmall {
                buffer: buf.len(),
                chunk_size: config.chunk_size,
            });
        }
        if !config.checkpoint_interval.is_multiple_of(config.chunk_size) {
            return Err(ConfigError::CheckpointInterval {
                interval: config.checkpoint_interval,
                chunk_size: config.chunk_size,
            });
        }
        // While idle, `id` holds the checkpoint's package until an offer is matched against it.
        let id = checkpoint.map(|c| Identity {
            kind: c.kind,
            title: c.title.clone(),
            version: c.version.clone(),
            digest: c.digest,
            size: c.package_size,
        });
        let resume = checkpoint.map(|c| ResumePoint {
            chunk_size: c.chunk_size,
            package_offset: c.package_offset,
            written: c.written,
            written_crc: c.written_crc,
            next_chunk: c.next_chunk,
        });
        Ok(Self {
            config,
            buf,
            reader: None,
            id,
            phase: Phase::Idle,
            queue: Deque::new(),
            package_offset: 0,
            written: 0,
            written_crc: crc32fast::Hasher::new(),
            next_chunk: 0,
            attempt: 0,
            resume,
            kind: Kind::Firmware,
            stats: Stats::default(),
        })
    }

    /// The configuration.
    pub const fn config(&self) -> &Config {
        &self.config
    }

    /// The current state.
    pub const fn state(&self) -> State {
        match self.phase {
            Phase::Idle => State::Idle,
            Phase::ReadingBack { .. }
            | Phase::AwaitChunk { .. }
            | Phase::Backoff { .. }
            | Phase::AwaitWrite { .. } => State::Downloading,
            Phase::AwaitFinalize | Phase::AwaitReboot => State::Updating,
            Phase::Updated => State::Updated,
            Phase::Failed(e) => State::Failed(e),
        }
    }

    /// Package bytes received and verified out of the offered size.
    pub fn progress(&self) -> Progress {
        Progress {
            done: self.package_offset,
            total: self.id.as_ref().map_or(0, |id| id.size),
        }
    }

    /// Counters for diagnostics.
    pub const fn stats(&self) -> Stats {
        self.stats
    }

    /// Title of the package being downloaded, if any.
    pub fn title(&self) -> Option<&str> {
        self.id.as_ref().map(|id| id.title.as_str())
    }

    /// Version of the package being downloaded, if any.
    pub fn version(&self) -> Option<&str> {
        self.id.as_ref().map(|id| id.version.as_str())
    }

    /// The plaintext of the pending [`Action::Write`] (empty otherwise).
    pub fn chunk_data(&self) -> &[u8] {
        match self.phase {
            Phase::AwaitWrite { len } => self.buf.get(..len).unwrap_or_default(),
            _ => &[],
        }
    }

    /// The next action to perform, if any. Drain it after every `handle_*` call.
    pub fn poll_action(&mut self) -> Option<Action> {
        let pending = self.queue.pop_front()?;
        Some(match pending {
            Pending::Request { index } => Action::RequestChunk {
                index,
                size: self.config.chunk_size,
            },
            Pending::Write { offset, len } => Action::Write { offset, len },
            Pending::ReadBack { offset, len } => Action::ReadBack { offset, len },
            Pending::Persist => match self.checkpoint() {
                Some(c) => Action::Persist(c),
                None => Action::ClearCheckpoint,
            },
            Pending::ClearCheckpoint => Action::ClearCheckpoint,
            Pending::Report(state) => Action::Report(Report {
                kind: self.kind,
                state,
                progress: self.progress(),
            }),
            Pending::Finalize => Action::Finalize,
            Pending::Reboot => Action::Reboot,
        })
    }

    /// When [`Updater::handle_timeout`] must be called next, if a timer runs.
    pub const fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::AwaitChunk { deadline } => Some(deadline),
            Phase::Backoff { until } => Some(until),
            _ => None,
        }
    }

    /// The checkpoint describing the download right now (what [`Action::Persist`] carries).
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        let id = self.id.as_ref()?;
        Some(Checkpoint {
            kind: id.kind,
            title: id.title.clone(),
            version: id.version.clone(),
            digest: id.digest,
            package_size: id.size,
            chunk_size: self.config.chunk_size,
            package_offset: self.package_offset,
            written: self.written,
            written_crc: self.written_crc.clone().finalize(),
            next_chunk: self.next_chunk,
        })
    }

    fn push(&mut self, p: Pending) {
        // Each handler queues at most `QUEUE` actions after clearing or draining; a full
        // queue would mean the caller skipped `poll_action`, so the oldest work is kept.
        let _ = self.queue.push_back(p);
    }

    fn is_busy(&self) -> bool {
        matches!(
            self.phase,
            Phase::ReadingBack { .. }
                | Phase::AwaitChunk { .. }
                | Phase::Backoff { .. }
                | Phase::AwaitWrite { .. }
                | Phase::AwaitFinalize
                | Phase::AwaitReboot
        )
    }

    fn fail(&mut self, error: UpdateError) -> UpdateError {
        self.queue.clear();
        self.resume = None;
        self.phase = Phase::Failed(error);
        self.reader = None;
        self.push(Pending::ClearCheckpoint);
        self.push(Pending::Report(State::Failed(error)));
        error
    }

    /// Starts (or resumes) the download of `offer`, read through `reader`.
    ///
    /// Checks, before any chunk is requested: title and version fit
    /// ([`MAX_TITLE_LEN`]/[`MAX_VERSION_LEN`], never truncated), the checksum algorithm and
    /// value parse, the size is non-zero and fits [`Config::slot_capacity`]. A failed check
    /// moves to [`State::Failed`] with a `FAILED` report and returns the error.
    ///
    /// The same offer while it is already in progress is ignored (ThingsBoard re-sends its
    /// attributes on every request). A different offer replaces the one in progress, except
    /// once the slot is being finalized.
    /// Whether the offer is an update at all (version policy) is the caller's decision.
    pub fn handle_offer(
        &mut self,
        offer: &Offer<'_>,
        reader: R,
        now: Instant,
    ) -> Result<(), UpdateError> {
        let id = match Self::identity(offer) {
            Ok(id) => id,
            Err(e) => {
                if matches!(self.phase, Phase::AwaitFinalize | Phase::AwaitReboot) {
                    return Err(e);
                }
                self.id = None;
                return Err(self.fail(e));
            }
        };
        if self.is_busy()
            && (self.id.as_ref() == Some(&id)
                || matches!(self.phase, Phase::AwaitFinalize | Phase::AwaitReboot))
        {
            return Ok(());
        }
        self.queue.clear();
        let resume = self.resume.take();
        let same_package = self.id.as_ref() == Some(&id);
        self.kind = id.kind;
        self.id = Some(id.clone());
        self.package_offset = 0;
        self.written = 0;
        self.written_crc = crc32fast::Hasher::new();
        self.next_chunk = 0;
        self.attempt = 0;
        self.reader = None;
        if id.size == 0 || reader.package_len().is_some_and(|n| n != id.size) {
            return Err(self.fail(UpdateError::InvalidPackage));
        }
        if id.size > self.config.slot_capacity
            || reader
                .plaintext_len()
                .is_some_and(|n| n > self.config.slot_capacity)
        {
            return Err(self.fail(UpdateError::InsufficientStorage));
        }
        self.reader = Some(reader);
        self.push(Pending::Report(State::Downloading));
        match resume {
            Some(r)
                if same_package
                    && r.chunk_size == self.config.chunk_size
                    && r.written <= self.config.slot_capacity
                    && r.package_offset
                        == u64::from(r.next_chunk) * u64::from(self.config.chunk_size)
                    && r.package_offset <= id.size =>
            {
                if r.written == 0 {
                    // Nothing in the slot to re-check: start over.
                    self.request(0, now);
                } else {
                    self.package_offset = r.package_offset;
                    self.next_chunk = r.next_chunk;
                    self.phase = Phase::ReadingBack {
                        offset: 0,
                        target: r.written,
                        crc: r.written_crc,
                    };
                    self.push_read_back(0, r.written);
                }
            }
            Some(_) => {
                self.push(Pending::ClearCheckpoint);
                self.request(0, now);
            }
            None => self.request(0, now),
        }
        Ok(())
    }

    fn identity(offer: &Offer<'_>) -> Result<Identity, UpdateError> {
        let title = String::try_from(offer.title).map_err(|_| UpdateError::TitleTooLong)?;
        let version = String::try_from(offer.version).map_err(|_| UpdateError::VersionTooLong)?;
        let algorithm = ChecksumAlgorithm::from_tb_name(offer.checksum_algorithm)?;
        let digest = Digest::from_hex(algorithm, offer.checksum)?;
        Ok(Identity {
            kind: offer.kind,
            title,
            version,
            digest,
            size: offer.size,
        })
    }

    fn push_read_back(&mut self, offset: u64, target: u64) {
        let len = target
            .saturating_sub(offset)
            .min(self.buf.len() as u64)
            .min(u64::from(self.config.chunk_size));
        #[allow(clippy::cast_possible_truncation)] // ≤ chunk_size: u32
        self.push(Pending::ReadBack {
            offset,
            len: len as usize,
        });
    }

    fn request(&mut self, index: u32, now: Instant) {
        self.next_chunk = index;
        self.stats.requests += 1;
        self.push(Pending::Request { index });
        self.phase = Phase::AwaitChunk {
            deadline: now.plus_millis(u64::from(self.config.request_timeout_ms)),
        };
    }

    /// Restarts the download from byte 0 (slot content not trusted).
    fn restart(&mut self, now: Instant) {
        if let Some(r) = self.reader.as_mut() {
            r.restart();
        }
        self.package_offset = 0;
        self.written = 0;
        self.written_crc = crc32fast::Hasher::new();
        self.push(Pending::ClearCheckpoint);
        self.request(0, now);
    }

    /// Slot bytes read back for the last [`Action::ReadBack`] (resume). They are re-hashed;
    /// if all of them match the checkpoint's CRC-32 the download continues, else it restarts
    /// from byte 0.
    pub fn handle_read_back(&mut self, bytes: &[u8], now: Instant) -> Result<(), UpdateError> {
        let Phase::ReadingBack {
            offset,
            target,
            crc,
        } = self.phase
        else {
            return Err(UpdateError::InvalidState);
        };
        let expected = target
            .saturating_sub(offset)
            .min(u64::from(self.config.chunk_size));
        if bytes.len() as u64 != expected {
            return Err(UpdateError::InvalidState);
        }
        self.stats.read_back += bytes.len() as u64;
        let absorbed = match self.reader.as_mut() {
            Some(r) => r.absorb_written(bytes).is_ok(),
            None => false,
        };
        if !absorbed {
            self.restart(now);
            return Ok(());
        }
        self.written_crc.update(bytes);
        let offset = offset + bytes.len() as u64;
        if offset < target {
            self.phase = Phase::ReadingBack {
                offset,
                target,
                crc,
            };
            self.push_read_back(offset, target);
            return Ok(());
        }
        if self.written_crc.clone().finalize() == crc {
            self.written = target;
            let next = self.next_chunk;
            if self.package_offset >= self.progress().total {
                self.finish_download();
            } else {
                self.request(next, now);
            }
        } else {
            self.restart(now);
        }
        Ok(())
    }

    /// A chunk arrived from the transport. Stale, duplicate and unexpected answers are
    /// ignored (`Ok`); a chunk of the wrong length is dropped and re-requested; a reader
    /// error (e.g. authentication failure) fails the update.
    pub fn handle_chunk(
        &mut self,
        index: u32,
        bytes: &[u8],
        now: Instant,
    ) -> Result<(), UpdateError> {
        if !matches!(self.phase, Phase::AwaitChunk { .. } | Phase::Backoff { .. }) {
            self.stats.ignored += 1;
            return Ok(());
        }
        if index < self.next_chunk {
            self.stats.ignored += 1;
            return Ok(());
        }
        let total = self.progress().total;
        let expected = total
            .saturating_sub(self.package_offset)
            .min(u64::from(self.config.chunk_size));
        if index > self.next_chunk || bytes.len() as u64 != expected {
            self.stats.ignored += 1;
            return self.retry(now, UpdateError::Network);
        }
        let Some(reader) = self.reader.as_mut() else {
            return Err(UpdateError::InvalidState);
        };
        let mut consumed = 0;
        let mut produced = 0;
        while consumed < bytes.len() {
            let (Some(input), Some(out)) = (bytes.get(consumed..), self.buf.get_mut(produced..))
            else {
                return Err(self.fail(UpdateError::InvalidState));
            };
            let feed = match reader.feed(input, out) {
                Ok(f) => f,
                Err(e) => return Err(self.fail(e)),
            };
            if feed.consumed == 0 && feed.produced == 0 {
                // The buffer cannot take this chunk's plaintext: a configuration error.
                return Err(self.fail(UpdateError::InvalidState));
            }
            consumed += feed.consumed;
            produced += feed.produced;
        }
        self.package_offset += bytes.len() as u64;
        self.next_chunk = self.next_chunk.saturating_add(1);
        self.attempt = 0;
        if self.written + produced as u64 > self.config.slot_capacity {
            return Err(self.fail(UpdateError::InsufficientStorage));
        }
        if produced > 0 {
            self.phase = Phase::AwaitWrite { len: produced };
            self.push(Pending::Write {
                offset: self.written,
                len: produced,
            });
            Ok(())
        } else {
            self.after_write(now);
            Ok(())
        }
    }

    /// The slot write of the last [`Action::Write`] completed.
    pub fn handle_write_done(&mut self, now: Instant) -> Result<(), UpdateError> {
        match self.phase {
            Phase::AwaitWrite { len } => {
                let data = self.buf.get(..len).unwrap_or_default();
                self.written_crc.update(data);
                self.written += len as u64;
                self.after_write(now);
                Ok(())
            }
            // A write that completes after a cancel or failure is harmless.
            Phase::Idle | Phase::Failed(_) => Ok(()),
            _ => Err(UpdateError::InvalidState),
        }
    }

    fn after_write(&mut self, now: Instant) {
        let interval = u64::from(self.config.checkpoint_interval);
        if self.package_offset >= self.progress().total {
            self.finish_download();
            return;
        }
        if interval > 0 && self.written > 0 && self.written.is_multiple_of(interval) {
            self.push(Pending::Persist);
        }
        self.request(self.next_chunk, now);
    }

    fn finish_download(&mut self) {
        self.push(Pending::Report(State::Downloaded));
        let result = match self.reader.as_mut() {
            Some(r) => r.finish(),
            None => Err(UpdateError::InvalidState),
        };
        match result {
            Ok(()) => {
                self.push(Pending::Report(State::Verified));
                self.push(Pending::Report(State::Updating));
                self.push(Pending::Finalize);
                self.phase = Phase::AwaitFinalize;
            }
            Err(e) => {
                // Keep the DOWNLOADED report before FAILED: the sequence tells what happened.
                self.phase = Phase::Failed(e);
                self.reader = None;
                self.push(Pending::ClearCheckpoint);
                self.push(Pending::Report(State::Failed(e)));
            }
        }
    }

    /// The slot was marked for a trial boot: the machine asks for the reboot.
    pub fn handle_finalize_done(&mut self, _now: Instant) -> Result<(), UpdateError> {
        if self.phase != Phase::AwaitFinalize {
            return Err(UpdateError::InvalidState);
        }
        self.phase = Phase::AwaitReboot;
        self.push(Pending::ClearCheckpoint);
        self.push(Pending::Reboot);
        Ok(())
    }

    /// The caller's side failed (slot write, finalize, ...): the update fails with `error`
    /// (usually [`UpdateError::InstallationFailed`]).
    pub fn handle_error(&mut self, error: UpdateError, _now: Instant) {
        if self.is_busy() {
            self.fail(error);
        }
    }

    /// A requested chunk did not arrive in time, or a back-off elapsed. Call when
    /// `now >= poll_timeout()`; earlier calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::AwaitChunk { deadline } if now >= deadline => {
                let _ = self.retry(now, UpdateError::Timeout);
            }
            Phase::Backoff { until } if now >= until => self.request(self.next_chunk, now),
            _ => {}
        }
    }

    /// The transport lost its connection or refused the request: retry like a timeout,
    /// failing with `NETWORK_ERROR` when retries run out.
    pub fn handle_transport_error(&mut self, now: Instant) {
        if matches!(self.phase, Phase::AwaitChunk { .. } | Phase::Backoff { .. }) {
            let _ = self.retry(now, UpdateError::Network);
        }
    }

    /// Counts one retry of the expected chunk; fails with `exhausted` past `max_retries`.
    fn retry(&mut self, now: Instant, exhausted: UpdateError) -> Result<(), UpdateError> {
        self.attempt = self.attempt.saturating_add(1);
        self.stats.retries += 1;
        if self.attempt > self.config.max_retries {
            return Err(self.fail(exhausted));
        }
        let wait = self.config.backoff_ms(self.attempt);
        if wait == 0 {
            self.request(self.next_chunk, now);
        } else {
            self.phase = Phase::Backoff {
                until: now.plus_millis(u64::from(wait)),
            };
        }
        Ok(())
    }

    /// The server withdrew the update (ThingsBoard `{"deleted":["fw_title",…]}`). A download
    /// in progress stops with `FAILED`/`CANCELLED` and its checkpoint is dropped; once the
    /// slot is being finalized it is too late and the push is ignored.
    pub fn handle_cancel(&mut self, _now: Instant) {
        match self.phase {
            Phase::ReadingBack { .. }
            | Phase::AwaitChunk { .. }
            | Phase::Backoff { .. }
            | Phase::AwaitWrite { .. } => {
                self.fail(UpdateError::Cancelled);
            }
            Phase::Idle if self.resume.is_some() => {
                self.resume = None;
                self.id = None;
                self.push(Pending::ClearCheckpoint);
            }
            _ => {}
        }
    }

    /// After the reboot: the new image booted and was confirmed (`confirmed`), or the boot
    /// loader rolled back. Reports `UPDATED`, or `FAILED` with `INSTALLATION_FAILED`.
    pub fn handle_boot_outcome(&mut self, kind: Kind, confirmed: bool, _now: Instant) {
        self.queue.clear();
        let state = if confirmed {
            self.phase = Phase::Updated;
            State::Updated
        } else {
            self.phase = Phase::Failed(UpdateError::InstallationFailed);
            State::Failed(UpdateError::InstallationFailed)
        };
        self.kind = kind;
        self.push(Pending::Report(state));
    }
}
