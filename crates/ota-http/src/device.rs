//! The blocking HTTP device client: reads the shared attributes, drives `ota-core`'s
//! [`Updater`] chunk by chunk over `GET /api/v1/{token}/firmware?title&version&size&chunk`,
//! writes to the caller's [`Slot`], persists checkpoints to a [`CheckpointStore`] and reports
//! `fw_state`/`fw_error`/`fw_progress` telemetry.
//!
//! A dropped connection or a server error is a transport error for the machine: it backs
//! off and asks for the same chunk again, within its retry budget. A process restart resumes
//! from the last checkpoint (the machine re-reads and re-checks the written bytes first); a
//! slot or checkpoint-store error of kind [`io::ErrorKind::Interrupted`] stands for a power
//! cut and stops the download at once ([`DeviceError::PowerCut`]).
//!
//! [`HttpDevice::update`] and [`HttpDevice::download`] check plain images against the offered
//! checksum; [`HttpDevice::update_with`] and [`HttpDevice::download_with`] take any
//! [`ResumableReader`] (such as `ota-crypto`'s signed-package reader) and the updater's buffer.
//!
//! ```no_run
//! use ota_core::updater::{Config, Kind};
//! use ota_http::device::{HttpDevice, MemoryCheckpoints, MemorySlot, Outcome};
//!
//! let mut device = HttpDevice::new("http://127.0.0.1:8080", "TOKEN", Kind::Firmware, Config::new(4096, 1 << 20))
//!     .running("demo", "1.0");
//! let mut slot = MemorySlot::new(1 << 20);
//! let mut checkpoints = MemoryCheckpoints::default();
//! if let Outcome::Installed { title, version } = device.update(&mut slot, &mut checkpoints)? {
//!     // reboot into the slot; after a confirmed boot:
//!     device.report_boot(&title, &version, true)?;
//! }
//! # Ok::<(), ota_http::device::DeviceError>(())
//! ```

use std::io;
use std::time::Duration;

use ota_core::UpdateError;
use ota_core::checkpoint::{CHECKPOINT_LEN, Checkpoint};
use ota_core::frame::thingsboard::{AttributesResponse, FirmwareInfo, JsonError, JsonStr};
use ota_core::updater::{
    Action, Config, ConfigError, Instant, Kind, Offer, PlainReader, Progress, Report,
    ResumableReader, State, Updater, fw_error,
};
use serde_json::{Map, Value};

/// The inactive slot the image is written to.
pub trait Slot {
    /// Writes `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Reads `buf.len()` bytes at `offset` (used to re-check written bytes on resume).
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Marks the slot for a trial boot; called once every byte is written and verified.
    fn finalize(&mut self) -> io::Result<()>;
}

/// Where the resume checkpoint survives a restart.
pub trait CheckpointStore {
    /// The stored record, if any.
    fn load(&mut self) -> io::Result<Option<Vec<u8>>>;
    /// Replaces the stored record.
    fn save(&mut self, record: &[u8; CHECKPOINT_LEN]) -> io::Result<()>;
    /// Forgets the stored record.
    fn clear(&mut self) -> io::Result<()>;
}

/// A slot in memory (host simulators and tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemorySlot {
    /// The slot's bytes (erased = `0xFF`).
    pub bytes: Vec<u8>,
    /// Whether [`Slot::finalize`] was called.
    pub finalized: bool,
}

impl MemorySlot {
    /// An erased slot of `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self {
            bytes: vec![0xFF; capacity],
            finalized: false,
        }
    }

    fn range(&self, offset: u64, len: usize) -> io::Result<core::ops::Range<usize>> {
        let start =
            usize::try_from(offset).map_err(|_| out_of_slot(offset, len, self.bytes.len()))?;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| out_of_slot(offset, len, self.bytes.len()))?;
        Ok(start..end)
    }
}

fn out_of_slot(offset: u64, len: usize, capacity: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{len} bytes at offset {offset} do not fit a slot of {capacity} bytes"),
    )
}

impl Slot for MemorySlot {
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let r = self.range(offset, data.len())?;
        self.bytes
            .get_mut(r)
            .ok_or_else(|| out_of_slot(offset, data.len(), 0))?
            .copy_from_slice(data);
        Ok(())
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let r = self.range(offset, buf.len())?;
        buf.copy_from_slice(
            self.bytes
                .get(r)
                .ok_or_else(|| out_of_slot(offset, buf.len(), 0))?,
        );
        Ok(())
    }

    fn finalize(&mut self) -> io::Result<()> {
        self.finalized = true;
        Ok(())
    }
}

/// A checkpoint store in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryCheckpoints {
    /// The stored record.
    pub record: Option<Vec<u8>>,
}

impl CheckpointStore for MemoryCheckpoints {
    fn load(&mut self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.record.clone())
    }

    fn save(&mut self, record: &[u8; CHECKPOINT_LEN]) -> io::Result<()> {
        self.record = Some(record.to_vec());
        Ok(())
    }

    fn clear(&mut self) -> io::Result<()> {
        self.record = None;
        Ok(())
    }
}

/// A client-side failure that stops [`HttpDevice`] (failures of the update itself end in
/// [`Outcome::Failed`] and are reported to the server instead).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The server refused the access token (`401`).
    #[error("the server refused the access token (401) for {url}")]
    Unauthorized {
        /// Request URL (token included).
        url: String,
    },
    /// The request failed on the network.
    #[error("request to {url} failed: {source}")]
    Http {
        /// Request URL.
        url: String,
        /// Cause.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The server answered with an unexpected status.
    #[error("{url} answered {status}")]
    Status {
        /// Request URL.
        url: String,
        /// HTTP status.
        status: u16,
    },
    /// The attribute response is not ThingsBoard JSON.
    #[error("attributes from {url} are not ThingsBoard JSON: {source}")]
    Attributes {
        /// Request URL.
        url: String,
        /// Cause.
        source: JsonError,
    },
    /// The updater configuration was refused.
    #[error("updater configuration: {0}")]
    Config(#[from] ConfigError),
    /// The slot or the checkpoint store failed with [`io::ErrorKind::Interrupted`]: the
    /// device lost power. The download stopped at once, without telling the updater or the
    /// server; the next run resumes from the last stored checkpoint.
    #[error("power cut: {0}")]
    PowerCut(io::Error),
}

/// An update offer read from the shared attributes, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedOffer {
    /// Firmware or software.
    pub kind: Kind,
    /// `fw_title`.
    pub title: String,
    /// `fw_version`.
    pub version: String,
    /// `fw_size`.
    pub size: u64,
    /// `fw_checksum_algorithm`.
    pub checksum_algorithm: String,
    /// `fw_checksum`.
    pub checksum: String,
    /// `fw_tag`.
    pub tag: Option<String>,
    /// `fw_url` (an external package the device must fetch itself).
    pub url: Option<String>,
}

impl OwnedOffer {
    /// The core's borrowed view.
    pub fn as_offer(&self) -> Offer<'_> {
        Offer {
            kind: self.kind,
            title: &self.title,
            version: &self.version,
            size: self.size,
            checksum_algorithm: &self.checksum_algorithm,
            checksum: &self.checksum,
            tag: self.tag.as_deref(),
            url: self.url.as_deref(),
        }
    }

    /// The offer in an attribute response body (`{"shared":{…}}`), if complete: a title, a
    /// version, and either a URL or size, algorithm and checksum.
    pub fn from_attributes(kind: Kind, body: &[u8]) -> Result<Option<Self>, JsonError> {
        let response = AttributesResponse::parse(body)?;
        let Some(shared) = response.shared else {
            return Ok(None);
        };
        let info: FirmwareInfo<'_> = shared.get(kind);
        let text = |s: Option<JsonStr<'_>>| -> Result<Option<String>, JsonError> {
            s.map(|s| {
                let mut buf = vec![0u8; s.raw().len()];
                s.unescape_into(&mut buf).map(str::to_owned)
            })
            .transpose()
        };
        let (Some(title), Some(version)) = (text(info.title)?, text(info.version)?) else {
            return Ok(None);
        };
        let url = text(info.url)?;
        let (size, checksum_algorithm, checksum) = match (
            info.size,
            text(info.checksum_algorithm)?,
            text(info.checksum)?,
        ) {
            (Some(s), Some(a), Some(c)) => (s, a, c),
            (s, a, c) if url.is_some() => {
                (s.unwrap_or(0), a.unwrap_or_default(), c.unwrap_or_default())
            }
            _ => return Ok(None),
        };
        Ok(Some(Self {
            kind,
            title,
            version,
            size,
            checksum_algorithm,
            checksum,
            tag: text(info.tag)?,
            url,
        }))
    }
}

/// How a call to [`HttpDevice::update`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No complete offer in the shared attributes.
    NoOffer,
    /// The offered title and version are what runs already.
    UpToDate,
    /// The offer is an external URL package; this client downloads stored packages only.
    ExternalUrl(String),
    /// The image is written, verified and the slot finalized: reboot into it, then call
    /// [`HttpDevice::report_boot`].
    Installed {
        /// Installed title.
        title: String,
        /// Installed version.
        version: String,
    },
    /// The update failed (already reported as `FAILED` with `fw_error`); call again to retry.
    Failed(UpdateError),
}

/// Counters of one [`HttpDevice`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Chunk requests sent.
    pub chunk_requests: u32,
    /// Chunk requests that failed on the network or with a server error.
    pub transport_errors: u32,
    /// Telemetry posts that failed (telemetry is best effort).
    pub telemetry_failures: u32,
    /// Bytes re-read from the slot to resume.
    pub read_back: u64,
}

/// A device speaking ThingsBoard's HTTP device API.
#[derive(Debug)]
pub struct HttpDevice {
    base: String,
    token: String,
    kind: Kind,
    config: Config,
    agent: ureq::Agent,
    current: Option<(String, String)>,
    stats: DeviceStats,
}

/// The attribute keys an offer is made of, for one kind.
fn offer_keys(kind: Kind) -> String {
    let p = kind.prefix();
    [
        "title",
        "version",
        "size",
        "checksum",
        "checksum_algorithm",
        "tag",
        "url",
    ]
    .iter()
    .map(|k| format!("{p}_{k}"))
    .collect::<Vec<_>>()
    .join(",")
}

enum ChunkAnswer {
    Bytes(Vec<u8>),
    /// `400`/`404`: the assignment changed or was withdrawn.
    Withdrawn(u16),
    Unauthorized,
    /// Network failure, cut body, or a server error.
    Transport,
}

impl HttpDevice {
    /// A client of the server at `base_url` (`http://host:port`) for the device with
    /// `token`, updating `kind` with the updater `config` (`request_timeout_ms` also bounds
    /// each HTTP request).
    pub fn new(base_url: &str, token: &str, kind: Kind, config: Config) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_millis(u64::from(
                config.request_timeout_ms.max(1),
            ))))
            .build()
            .new_agent();
        Self {
            base: base_url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            kind,
            config,
            agent,
            current: None,
            stats: DeviceStats::default(),
        }
    }

    /// Declares the title and version running now (an offer of the same is up to date).
    #[must_use]
    pub fn running(mut self, title: &str, version: &str) -> Self {
        self.current = Some((title.to_owned(), version.to_owned()));
        self
    }

    /// `firmware` or `software`: the download path of this client's kind.
    const fn kind_path(&self) -> &'static str {
        match self.kind {
            Kind::Firmware => "firmware",
            Kind::Software => "software",
        }
    }

    /// Counters so far.
    pub const fn stats(&self) -> DeviceStats {
        self.stats
    }

    fn url(&self, path: &str) -> String {
        // The token is a path segment: keep it one.
        let token: String = form_urlencoded::byte_serialize(self.token.as_bytes()).collect();
        format!("{}/api/v1/{}/{path}", self.base, token.replace('+', "%20"))
    }

    /// Reads the shared attributes and returns the offer of this client's kind, if complete.
    pub fn fetch_offer(&self) -> Result<Option<OwnedOffer>, DeviceError> {
        let url = self.url("attributes");
        let mut response = self
            .agent
            .get(&url)
            .query("sharedKeys", offer_keys(self.kind))
            .call()
            .map_err(|e| DeviceError::Http {
                url: url.clone(),
                source: Box::new(e),
            })?;
        match response.status().as_u16() {
            200 => {}
            401 => return Err(DeviceError::Unauthorized { url }),
            status => return Err(DeviceError::Status { url, status }),
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_vec()
            .map_err(|e| DeviceError::Http {
                url: url.clone(),
                source: Box::new(e),
            })?;
        OwnedOffer::from_attributes(self.kind, &body)
            .map_err(|source| DeviceError::Attributes { url, source })
    }

    /// Posts one telemetry object.
    pub fn post_telemetry(&self, values: &Map<String, Value>) -> Result<(), DeviceError> {
        let url = self.url("telemetry");
        let body = Value::Object(values.clone()).to_string();
        let response = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(body.as_str())
            .map_err(|e| DeviceError::Http {
                url: url.clone(),
                source: Box::new(e),
            })?;
        match response.status().as_u16() {
            200 => Ok(()),
            401 => Err(DeviceError::Unauthorized { url }),
            status => Err(DeviceError::Status { url, status }),
        }
    }

    /// The telemetry of a machine report: `fw_state`, `fw_error` when failed, `fw_progress`.
    pub fn report_values(report: &Report) -> Map<String, Value> {
        let p = report.kind.prefix();
        let mut m = Map::new();
        m.insert(format!("{p}_state"), Value::from(report.state_name()));
        if let Some(e) = report.error() {
            m.insert(format!("{p}_error"), Value::from(fw_error(e).as_str()));
        }
        m.insert(format!("{p}_progress"), Value::from(report.progress.done));
        m
    }

    /// The telemetry after the reboot into the installed slot: `UPDATED` with
    /// `current_*_title`/`current_*_version` when the boot was confirmed, else `FAILED` with
    /// `INSTALLATION_FAILED` (the boot loader rolled back).
    pub fn boot_values(
        kind: Kind,
        title: &str,
        version: &str,
        confirmed: bool,
    ) -> Map<String, Value> {
        let p = kind.prefix();
        let mut m = Map::new();
        if confirmed {
            m.insert(format!("{p}_state"), Value::from(State::Updated.tb_name()));
            m.insert(format!("current_{p}_title"), Value::from(title));
            m.insert(format!("current_{p}_version"), Value::from(version));
        } else {
            let e = UpdateError::InstallationFailed;
            m.insert(
                format!("{p}_state"),
                Value::from(State::Failed(e).tb_name()),
            );
            m.insert(format!("{p}_error"), Value::from(fw_error(e).as_str()));
        }
        m
    }

    fn report(&mut self, values: &Map<String, Value>) {
        if let Err(e) = self.post_telemetry(values) {
            self.stats.telemetry_failures += 1;
            tracing::warn!(error = %e, "telemetry not delivered");
        }
    }

    /// After the reboot into the installed slot: reports `UPDATED` with
    /// `current_fw_title`/`current_fw_version` (confirmed boot), or `FAILED` with
    /// `INSTALLATION_FAILED` (the boot loader rolled back).
    pub fn report_boot(
        &mut self,
        title: &str,
        version: &str,
        confirmed: bool,
    ) -> Result<(), DeviceError> {
        let m = Self::boot_values(self.kind, title, version, confirmed);
        if confirmed {
            self.current = Some((title.to_owned(), version.to_owned()));
        }
        self.post_telemetry(&m)
    }

    fn fetch_chunk(&mut self, offer: &OwnedOffer, index: u32, size: u32) -> ChunkAnswer {
        self.stats.chunk_requests += 1;
        let url = self.url(self.kind_path());
        let result = self
            .agent
            .get(&url)
            .query("title", &offer.title)
            .query("version", &offer.version)
            .query("size", size.to_string())
            .query("chunk", index.to_string())
            .call();
        let mut response = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, index, "chunk request failed");
                return ChunkAnswer::Transport;
            }
        };
        match response.status().as_u16() {
            200 => {}
            401 => return ChunkAnswer::Unauthorized,
            s @ (400 | 404) => return ChunkAnswer::Withdrawn(s),
            s => {
                tracing::debug!(status = s, index, "chunk request refused");
                return ChunkAnswer::Transport;
            }
        }
        // One byte over the chunk size lets the machine see (and re-request) an oversized answer.
        match response
            .body_mut()
            .with_config()
            .limit(u64::from(size) + 1)
            .read_to_vec()
        {
            Ok(b) => ChunkAnswer::Bytes(b),
            Err(e) => {
                tracing::debug!(error = %e, index, "chunk body cut");
                ChunkAnswer::Transport
            }
        }
    }

    /// Checks for an offer and, if there is a new one, downloads, verifies and finalizes it.
    ///
    /// Resumes from the checkpoint in `checkpoints` when it belongs to the same package.
    /// Returns once the slot is finalized ([`Outcome::Installed`]), the update failed, or
    /// there is nothing to do. Blocks for back-offs between retries.
    pub fn update<S: Slot, C: CheckpointStore>(
        &mut self,
        slot: &mut S,
        checkpoints: &mut C,
    ) -> Result<Outcome, DeviceError> {
        let mut buf = vec![0u8; self.chunk_len()];
        self.update_with(slot, checkpoints, &mut buf, |offer| {
            PlainReader::for_offer(&offer.as_offer())
        })
    }

    /// Bytes per chunk request.
    fn chunk_len(&self) -> usize {
        usize::try_from(self.config.chunk_size).unwrap_or(usize::MAX)
    }

    /// Like [`HttpDevice::update`], with the package reader `make_reader` builds for the
    /// offer (a signed-package reader, for example) instead of the plain one, and `buf` as
    /// the updater's plaintext buffer (see [`HttpDevice::download_with`]). A reader that
    /// cannot be built fails the update with its error, reported as `FAILED`.
    pub fn update_with<R, S, C, F>(
        &mut self,
        slot: &mut S,
        checkpoints: &mut C,
        buf: &mut [u8],
        make_reader: F,
    ) -> Result<Outcome, DeviceError>
    where
        R: ResumableReader,
        S: Slot,
        C: CheckpointStore,
        F: FnOnce(&OwnedOffer) -> Result<R, UpdateError>,
    {
        let Some(offer) = self.fetch_offer()? else {
            return Ok(Outcome::NoOffer);
        };
        if let Some(url) = &offer.url {
            return Ok(Outcome::ExternalUrl(url.clone()));
        }
        if self
            .current
            .as_ref()
            .is_some_and(|(t, v)| *t == offer.title && *v == offer.version)
        {
            return Ok(Outcome::UpToDate);
        }
        match make_reader(&offer) {
            Ok(reader) => self.download_with(&offer, reader, buf, slot, checkpoints),
            Err(e) => Ok(self.refuse(e)),
        }
    }

    /// Reports `FAILED` with `e` for an offer that cannot be downloaded.
    fn refuse(&mut self, e: UpdateError) -> Outcome {
        let report = Report {
            kind: self.kind,
            state: State::Failed(e),
            progress: Progress::default(),
        };
        self.report(&Self::report_values(&report));
        Outcome::Failed(e)
    }

    /// Downloads `offer` (see [`HttpDevice::update`]), checked against its SHA/CRC checksum
    /// by `ota-core`'s plain reader. A slot or checkpoint-store error of kind
    /// [`io::ErrorKind::Interrupted`] is a power cut ([`DeviceError::PowerCut`], see
    /// [`HttpDevice::download_with`]).
    pub fn download<S: Slot, C: CheckpointStore>(
        &mut self,
        offer: &OwnedOffer,
        slot: &mut S,
        checkpoints: &mut C,
    ) -> Result<Outcome, DeviceError> {
        match PlainReader::for_offer(&offer.as_offer()) {
            Ok(reader) => {
                let mut buf = vec![0u8; self.chunk_len()];
                self.download_with(offer, reader, &mut buf, slot, checkpoints)
            }
            Err(e) => Ok(self.refuse(e)),
        }
    }

    /// Downloads `offer` through `reader` (see [`HttpDevice::update`]): any
    /// [`ResumableReader`], such as `ota-crypto`'s signed-package reader, which verifies (and
    /// decrypts) what is written to the slot. A reader error fails the update (reported as
    /// `FAILED` with its `fw_error`) and nothing is finalized.
    ///
    /// `buf` is the updater's plaintext buffer: at least the chunk size, and large enough for
    /// the plaintext one chunk can release (for a signed and encrypted package: the chunk size
    /// plus one sealed chunk, as the reader opens a whole sealed chunk at once). A buffer
    /// shorter than the chunk size is refused with [`DeviceError::Config`].
    ///
    /// A slot or checkpoint-store error of kind [`io::ErrorKind::Interrupted`] stands for a
    /// power cut: the call returns [`DeviceError::PowerCut`] at once, sending nothing more.
    pub fn download_with<R, S, C>(
        &mut self,
        offer: &OwnedOffer,
        reader: R,
        buf: &mut [u8],
        slot: &mut S,
        checkpoints: &mut C,
    ) -> Result<Outcome, DeviceError>
    where
        R: ResumableReader,
        S: Slot,
        C: CheckpointStore,
    {
        let clock = DownloadClock::start();
        let stored = load_checkpoint(checkpoints).map_err(DeviceError::PowerCut)?;
        let mut back = vec![0u8; self.chunk_len()];
        let mut up = Updater::new(self.config, buf, stored.as_ref())?;
        // A refused offer queues its FAILED report; the loop below sends it.
        let _ = up.handle_offer(&offer.as_offer(), reader, clock.now());
        loop {
            while let Some(action) = up.poll_action() {
                let mut io = Io {
                    slot: &mut *slot,
                    checkpoints: &mut *checkpoints,
                    back: &mut back,
                    clock,
                };
                if let Some(done) = self.act(action, &mut up, offer, &mut io)? {
                    return Ok(done);
                }
            }
            if let State::Failed(e) = up.state() {
                return Ok(Outcome::Failed(e));
            }
            let Some(deadline) = up.poll_timeout() else {
                // Nothing queued and no timer: the machine cannot move on by itself.
                return Ok(Outcome::Failed(UpdateError::InvalidState));
            };
            let wait = deadline.as_millis().saturating_sub(clock.now().as_millis());
            if wait > 0 {
                // The back-off between retries: the device's own pacing.
                std::thread::sleep(Duration::from_millis(wait));
            }
            up.handle_timeout(clock.now());
        }
    }

    /// Performs one action of the machine; `Some` ends the download.
    fn act<R: ResumableReader, S: Slot, C: CheckpointStore>(
        &mut self,
        action: Action,
        up: &mut Updater<'_, R>,
        offer: &OwnedOffer,
        io: &mut Io<'_, S, C>,
    ) -> Result<Option<Outcome>, DeviceError> {
        let now = io.clock.now();
        // `handle_*` errors are ignored on purpose: they leave the machine FAILED, and its
        // queued FAILED report and the state check after the actions take it from there.
        match action {
            Action::RequestChunk { index, size } => match self.fetch_chunk(offer, index, size) {
                ChunkAnswer::Bytes(b) => {
                    let _ = up.handle_chunk(index, &b, now);
                }
                ChunkAnswer::Withdrawn(status) => {
                    tracing::info!(status, "package no longer assigned; stopping");
                    up.handle_cancel(now);
                }
                ChunkAnswer::Unauthorized => {
                    return Err(DeviceError::Unauthorized {
                        url: self.url(self.kind_path()),
                    });
                }
                ChunkAnswer::Transport => {
                    self.stats.transport_errors += 1;
                    up.handle_transport_error(now);
                }
            },
            Action::Write { offset, .. } => match io.slot.write(offset, up.chunk_data()) {
                Ok(()) => {
                    let _ = up.handle_write_done(now);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    return Err(DeviceError::PowerCut(e));
                }
                Err(e) => {
                    tracing::warn!(error = %e, offset, "slot write failed");
                    up.handle_error(UpdateError::InstallationFailed, now);
                }
            },
            Action::ReadBack { offset, len } => {
                let Some(part) = io.back.get_mut(..len) else {
                    up.handle_error(UpdateError::InvalidState, now);
                    return Ok(None);
                };
                match io.slot.read(offset, part) {
                    Ok(()) => {
                        self.stats.read_back += len as u64;
                        let _ = up.handle_read_back(part, now);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                        return Err(DeviceError::PowerCut(e));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, offset, "slot read failed");
                        up.handle_error(UpdateError::InstallationFailed, now);
                    }
                }
            }
            Action::Persist(c) => {
                if let Err(e) = io.checkpoints.save(&c.to_bytes()) {
                    if e.kind() == io::ErrorKind::Interrupted {
                        return Err(DeviceError::PowerCut(e));
                    }
                    tracing::warn!(error = %e, "checkpoint not saved");
                }
                let mut m = Map::new();
                m.insert(
                    format!("{}_progress", self.kind.prefix()),
                    Value::from(c.package_offset),
                );
                self.report(&m);
            }
            Action::ClearCheckpoint => {
                if let Err(e) = io.checkpoints.clear() {
                    if e.kind() == io::ErrorKind::Interrupted {
                        return Err(DeviceError::PowerCut(e));
                    }
                    tracing::warn!(error = %e, "checkpoint not cleared");
                }
            }
            Action::Report(r) => self.report(&Self::report_values(&r)),
            Action::Finalize => match io.slot.finalize() {
                Ok(()) => {
                    let _ = up.handle_finalize_done(now);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    return Err(DeviceError::PowerCut(e));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "slot finalize failed");
                    up.handle_error(UpdateError::InstallationFailed, now);
                }
            },
            Action::Reboot => {
                return Ok(Some(Outcome::Installed {
                    title: offer.title.clone(),
                    version: offer.version.clone(),
                }));
            }
        }
        Ok(None)
    }
}

/// Milliseconds since a download started: the clock an [`Updater`] runs on (the device
/// clients of every transport use it).
#[derive(Clone, Copy, Debug)]
pub struct DownloadClock(std::time::Instant);

impl DownloadClock {
    /// A clock starting now.
    #[must_use]
    pub fn start() -> Self {
        Self(std::time::Instant::now())
    }

    /// The time since the start.
    #[must_use]
    pub fn now(self) -> Instant {
        Instant::from_millis(u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX))
    }
}

/// The checkpoint kept in `checkpoints`, if one is stored and readable. A store that cannot
/// be read, or a checkpoint that does not decode, is logged and means starting over.
///
/// # Errors
///
/// An interrupted read (`io::ErrorKind::Interrupted`: power was cut while reading) is
/// returned, so the caller can stop as the power cut would.
pub fn load_checkpoint<C: CheckpointStore>(checkpoints: &mut C) -> io::Result<Option<Checkpoint>> {
    match checkpoints.load() {
        Ok(Some(bytes)) => match Checkpoint::from_bytes(&bytes) {
            Ok(c) => Ok(Some(c)),
            Err(e) => {
                tracing::warn!(error = ?e, "stored checkpoint unreadable; starting over");
                Ok(None)
            }
        },
        Ok(None) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "checkpoint store unreadable; starting over");
            Ok(None)
        }
    }
}

/// The caller's storage and scratch space during one download.
struct Io<'a, S, C> {
    slot: &'a mut S,
    checkpoints: &'a mut C,
    back: &'a mut [u8],
    clock: DownloadClock,
}

#[cfg(test)]
mod tests {
    use super::{HttpDevice, MemorySlot, OwnedOffer, Slot, offer_keys};
    use ota_core::UpdateError;
    use ota_core::updater::{Kind, Progress, Report, State};

    #[test]
    fn offers_come_from_the_shared_section() {
        let body = br#"{"shared":{"fw_title":"de\"mo","fw_version":"1.1","fw_size":10,"fw_checksum_algorithm":"SHA256","fw_checksum":"ab","sw_title":"x"}}"#;
        let offer = OwnedOffer::from_attributes(Kind::Firmware, body)
            .expect("parses")
            .expect("complete");
        assert_eq!(
            (offer.title.as_str(), offer.version.as_str(), offer.size),
            ("de\"mo", "1.1", 10)
        );
        assert_eq!(
            OwnedOffer::from_attributes(Kind::Software, body).expect("parses"),
            None
        );
        assert_eq!(
            OwnedOffer::from_attributes(Kind::Firmware, b"{}").expect("parses"),
            None
        );
        let url = br#"{"shared":{"fw_title":"t","fw_version":"2","fw_url":"http://x/y"}}"#;
        let offer = OwnedOffer::from_attributes(Kind::Firmware, url)
            .expect("parses")
            .expect("url offer");
        assert_eq!(offer.url.as_deref(), Some("http://x/y"));
        assert!(OwnedOffer::from_attributes(Kind::Firmware, b"{\"shared\":").is_err());
    }

    #[test]
    fn reports_carry_state_error_and_progress() {
        let r = Report {
            kind: Kind::Firmware,
            state: State::Failed(UpdateError::ChecksumMismatch),
            progress: Progress { done: 7, total: 10 },
        };
        let v = HttpDevice::report_values(&r);
        assert_eq!(v["fw_state"], "FAILED");
        assert!(
            v["fw_error"]
                .as_str()
                .is_some_and(|e| e.starts_with("CHECKSUM_MISMATCH"))
        );
        assert_eq!(v["fw_progress"], 7);
        assert_eq!(
            offer_keys(Kind::Software),
            "sw_title,sw_version,sw_size,sw_checksum,sw_checksum_algorithm,sw_tag,sw_url"
        );
    }

    #[test]
    fn memory_slot_refuses_out_of_range_access() {
        let mut s = MemorySlot::new(4);
        s.write(2, &[1, 2]).expect("fits");
        let err = s.write(3, &[1, 2]).expect_err("past the end");
        assert_eq!(
            err.to_string(),
            "2 bytes at offset 3 do not fit a slot of 4 bytes"
        );
        assert!(s.read(u64::MAX, &mut [0u8; 1]).is_err());
        let mut b = [0u8; 2];
        s.read(2, &mut b).expect("in range");
        assert_eq!(b, [1, 2]);
    }
}
