//! The device side: a blocking CoAP client over `std::net::UdpSocket` that drives
//! `ota-core`'s [`Updater`] with ThingsBoard's CoAP device API.
//!
//! Every request is confirmable and retransmitted per RFC 7252 §4.2: the first timeout is
//! `ACK_TIMEOUT × [1, ACK_RANDOM_FACTOR)`, doubled for each of at most `MAX_RETRANSMIT`
//! retransmissions. Both piggybacked and separate responses (an empty ACK first, as
//! ThingsBoard's Californium sends) are understood. Chunks larger than one block are
//! fetched with Block2, one block per exchange, and reassembled.
//!
//! [`run_update`] checks plain images against the offered checksum; [`run_update_with`] takes
//! any [`ResumableReader`] (such as `ota-crypto`'s signed-package reader) and the updater's
//! buffer.
//!
//! ```no_run
//! use ota_coap::device::{ClientConfig, CoapClient};
//! # fn main() -> Result<(), ota_coap::device::ClientError> {
//! let socket = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| e.kind())?;
//! let mut client = CoapClient::new(socket, "192.0.2.1:5683".parse().unwrap(), ClientConfig::new("TOKEN"));
//! let attributes = client.attributes()?;
//! # let _ = attributes; Ok(()) }
//! ```

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use ota_core::UpdateError;
use ota_core::checkpoint::Checkpoint;
use ota_core::frame::thingsboard::AttributesResponse;
use ota_core::updater::{self, Action, Kind, Offer, PlainReader, ResumableReader, State, Updater};

use crate::block::{Block, BlockError, MAX_BLOCK_SIZE};

/// Largest body the client reassembles (a chunk, or an attributes document).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Tunables of the client.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The device's access token.
    pub token: String,
    /// Block size asked for with Block2 (16…1024, a power of two).
    pub block_size: u16,
    /// RFC 7252 ACK_TIMEOUT (2 s).
    pub ack_timeout: Duration,
    /// RFC 7252 ACK_RANDOM_FACTOR (1.5).
    pub ack_random_factor: f64,
    /// RFC 7252 MAX_RETRANSMIT (4).
    pub max_retransmit: u8,
    /// Seed of the retransmission jitter, message ids and tokens.
    pub seed: u64,
}

impl ClientConfig {
    /// RFC 7252 defaults and 1024-byte blocks for `token`.
    pub fn new(token: &str) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u64::from(d.subsec_nanos()) | 1);
        Self {
            token: token.to_owned(),
            block_size: MAX_BLOCK_SIZE,
            ack_timeout: Duration::from_secs(2),
            ack_random_factor: 1.5,
            max_retransmit: 4,
            seed,
        }
    }
}

/// A failed exchange.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The socket failed.
    #[error("socket error: {0}")]
    Io(io::ErrorKind),
    /// No answer after the first transmission and every retransmission.
    #[error("no answer after {transmissions} transmissions")]
    Timeout {
        /// Datagrams sent.
        transmissions: u8,
    },
    /// The server rejected the message with a Reset.
    #[error("the server reset the exchange")]
    Reset,
    /// The server answered with an error code (class 4 or 5).
    #[error("the server answered {}.{:02}", .code >> 5, .code & 0x1f)]
    Status {
        /// Raw CoAP code byte (`class << 5 | detail`).
        code: u8,
    },
    /// A Block2 option of a response is invalid.
    #[error("bad Block2 in a response: {0}")]
    Block(BlockError),
    /// A block came back out of order (`got` instead of `expected` byte offset).
    #[error("block at byte {got} answered, byte {expected} asked")]
    BlockOrder {
        /// Offset asked for.
        expected: u64,
        /// Offset answered.
        got: u64,
    },
    /// The body exceeds [`MAX_BODY`].
    #[error("body exceeds {MAX_BODY} bytes")]
    TooLarge,
    /// A request could not be encoded (an option or payload too long).
    #[error("request cannot be encoded")]
    Encode,
}

impl From<io::ErrorKind> for ClientError {
    fn from(e: io::ErrorKind) -> Self {
        Self::Io(e)
    }
}

/// A successful response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Raw CoAP code byte (`0x45` = 2.05).
    pub code: u8,
    /// The body (reassembled when block-wise).
    pub body: Vec<u8>,
}

/// A blocking CoAP client bound to one server.
#[derive(Debug)]
pub struct CoapClient {
    socket: UdpSocket,
    server: SocketAddr,
    config: ClientConfig,
    rng: u64,
    mid: u16,
    transmissions: u64,
}

impl CoapClient {
    /// A client sending from `socket` to `server`.
    pub fn new(socket: UdpSocket, server: SocketAddr, config: ClientConfig) -> Self {
        let mut rng = config.seed | 1;
        let mid = u16::try_from(xorshift(&mut rng) & 0xffff).unwrap_or(0);
        Self {
            socket,
            server,
            config,
            rng,
            mid,
            transmissions: 0,
        }
    }

    /// Datagrams sent so far (first transmissions and retransmissions).
    pub const fn transmissions(&self) -> u64 {
        self.transmissions
    }

    /// `GET /api/v1/{token}/attributes` (all shared attributes) → the JSON document.
    pub fn attributes(&mut self) -> Result<Vec<u8>, ClientError> {
        let token = self.config.token.clone();
        Ok(self.get(&["api", "v1", &token, "attributes"], &[])?.body)
    }

    /// `POST /api/v1/{token}/telemetry` with a JSON object.
    pub fn telemetry(&mut self, json: &[u8]) -> Result<(), ClientError> {
        let token = self.config.token.clone();
        self.exchange(
            RequestType::Post,
            &["api", "v1", &token, "telemetry"],
            &[],
            json,
            None,
        )
        .map(|_| ())
    }

    /// Chunk `index` of `size` bytes of the assigned package (`GET /fw/{token}?…`).
    pub fn chunk(
        &mut self,
        kind: Kind,
        title: &str,
        version: &str,
        index: u32,
        size: u32,
    ) -> Result<Vec<u8>, ClientError> {
        let token = self.config.token.clone();
        let q = [
            format!("title={title}"),
            format!("version={version}"),
            format!("size={size}"),
            format!("chunk={index}"),
        ];
        let q: Vec<&str> = q.iter().map(String::as_str).collect();
        Ok(self.get(&[kind.prefix(), &token], &q)?.body)
    }

    /// A block-wise GET: blocks of [`ClientConfig::block_size`] until `M` is clear.
    pub fn get(&mut self, path: &[&str], query: &[&str]) -> Result<Response, ClientError> {
        let size = self.config.block_size;
        let mut block = Block::new(0, false, size).map_err(ClientError::Block)?;
        let mut body = Vec::new();
        loop {
            let (code, payload, answered) =
                self.exchange(RequestType::Get, path, query, &[], Some(block))?;
            let Some(answered) = answered else {
                // The server sent the whole body.
                return Ok(Response {
                    code,
                    body: payload,
                });
            };
            if answered.offset() != body.len() as u64 {
                return Err(ClientError::BlockOrder {
                    expected: body.len() as u64,
                    got: answered.offset(),
                });
            }
            if body.len() + payload.len() > MAX_BODY {
                return Err(ClientError::TooLarge);
            }
            body.extend_from_slice(&payload);
            if !answered.more() {
                return Ok(Response { code, body });
            }
            // The server may answer with smaller blocks than asked: continue in its size.
            let next = u32::try_from(body.len() as u64 / u64::from(answered.size()))
                .map_err(|_| ClientError::TooLarge)?;
            block = Block::new(next, false, answered.size()).map_err(ClientError::Block)?;
        }
    }

    /// One confirmable exchange; returns the code, payload and the response's Block2.
    fn exchange(
        &mut self,
        method: RequestType,
        path: &[&str],
        query: &[&str],
        payload: &[u8],
        block2: Option<Block>,
    ) -> Result<(u8, Vec<u8>, Option<Block>), ClientError> {
        self.mid = self.mid.wrapping_add(1);
        let mid = self.mid;
        let token = xorshift(&mut self.rng).to_be_bytes()[..4].to_vec();
        let request = encode_request(method, mid, &token, path, query, payload, block2)?;
        let jitter = 1.0 + (self.config.ack_random_factor - 1.0).max(0.0) * unit(&mut self.rng);
        let mut timeout = self.config.ack_timeout.mul_f64(jitter);
        let mut acked = false;
        let mut transmissions = 0u8;
        let mut buf = vec![0u8; Packet::MAX_SIZE + 1];
        loop {
            if !acked {
                if transmissions > self.config.max_retransmit {
                    return Err(ClientError::Timeout { transmissions });
                }
                self.socket
                    .send_to(&request, self.server)
                    .map_err(|e| e.kind())?;
                self.transmissions += 1;
                transmissions += 1;
            }
            let deadline = Instant::now() + timeout;
            // After an empty ACK the separate response may take as long as the exchange
            // would have with every retransmission; wait that long once.
            let mut answered = None;
            while let Some(left) = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
            {
                self.socket
                    .set_read_timeout(Some(left))
                    .map_err(|e| e.kind())?;
                let (n, from) = match self.socket.recv_from(&mut buf) {
                    Ok(x) => x,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                    Err(e) => return Err(e.kind().into()),
                };
                if from != self.server {
                    continue;
                }
                let Ok(resp) = Packet::from_bytes(buf.get(..n).unwrap_or_default()) else {
                    continue;
                };
                let kind = resp.header.get_type();
                let code: u8 = resp.header.code.into();
                match kind {
                    MessageType::Reset if resp.header.message_id == mid => {
                        return Err(ClientError::Reset);
                    }
                    MessageType::Acknowledgement if resp.header.message_id == mid => {
                        if code == 0 {
                            acked = true;
                            continue;
                        }
                        if resp.get_token() == token.as_slice() {
                            answered = Some(resp);
                            break;
                        }
                    }
                    MessageType::Confirmable | MessageType::NonConfirmable
                        if resp.get_token() == token.as_slice() =>
                    {
                        if kind == MessageType::Confirmable {
                            let [hi, lo] = resp.header.message_id.to_be_bytes();
                            let ack = [0x60, 0x00, hi, lo];
                            let _ = self.socket.send_to(&ack, self.server);
                        }
                        answered = Some(resp);
                        break;
                    }
                    _ => {}
                }
            }
            if let Some(resp) = answered {
                let code: u8 = resp.header.code.into();
                if code >> 5 != 2 {
                    return Err(ClientError::Status { code });
                }
                let block = match resp.get_first_option(CoapOption::Block2) {
                    Some(v) => Some(Block::decode(v).map_err(ClientError::Block)?),
                    None => None,
                };
                return Ok((code, resp.payload, block));
            }
            if acked {
                return Err(ClientError::Timeout { transmissions });
            }
            timeout = timeout.saturating_mul(2);
        }
    }
}

/// A confirmable request datagram.
fn encode_request(
    method: RequestType,
    mid: u16,
    token: &[u8],
    path: &[&str],
    query: &[&str],
    payload: &[u8],
    block2: Option<Block>,
) -> Result<Vec<u8>, ClientError> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(method);
    p.header.message_id = mid;
    p.set_token(token.to_vec());
    for s in path {
        p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
    }
    for q in query {
        p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
    }
    if let Some(b) = block2 {
        p.add_option(CoapOption::Block2, b.encode());
    }
    p.payload = payload.to_vec();
    p.to_bytes().map_err(|_| ClientError::Encode)
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// A uniform value in `[0, 1)`.
fn unit(s: &mut u64) -> f64 {
    let v = u32::try_from(xorshift(s) >> 32).unwrap_or(0);
    f64::from(v) / 4_294_967_296.0
}

/// Where the update goes: the inactive slot and the checkpoint store of the device.
///
/// A method returning an error of kind [`io::ErrorKind::Interrupted`] stands for a power cut:
/// [`run_update`] stops at once without telling the updater, so the last persisted checkpoint
/// is what the next run resumes from. Any other error fails the update
/// (`INSTALLATION_FAILED`).
pub trait UpdateTarget {
    /// Writes `data` to the slot at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Reads `buf.len()` slot bytes at `offset`.
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Marks the slot for a trial boot.
    fn finalize(&mut self) -> io::Result<()>;
    /// Stores a checkpoint (survives power loss).
    fn save_checkpoint(&mut self, checkpoint: &Checkpoint) -> io::Result<()>;
    /// Forgets the stored checkpoint.
    fn clear_checkpoint(&mut self) -> io::Result<()>;
}

/// How a [`run_update`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// No package of that kind is assigned.
    NoUpdate,
    /// The image is written, verified and marked: reboot into it.
    RebootRequired,
    /// The target reported a power cut; run again with the stored checkpoint.
    Interrupted,
}

/// Timing of [`run_update`]'s updater (see [`updater::Config`]).
#[derive(Clone, Copy, Debug)]
pub struct RunConfig {
    /// Bytes per chunk request.
    pub chunk_size: u32,
    /// Slot capacity.
    pub slot_capacity: u64,
    /// Chunk retries after the CoAP exchange itself gave up.
    pub max_retries: u8,
    /// First back-off before such a retry, ms.
    pub backoff_base_ms: u32,
    /// Checkpoint every this many bytes (a multiple of `chunk_size`).
    pub checkpoint_interval: u32,
}

impl RunConfig {
    /// `ota-core`'s defaults for a chunk size and slot.
    pub const fn new(chunk_size: u32, slot_capacity: u64) -> Self {
        let d = updater::Config::new(chunk_size, slot_capacity);
        Self {
            chunk_size,
            slot_capacity,
            max_retries: d.max_retries,
            backoff_base_ms: d.backoff_base_ms,
            checkpoint_interval: d.checkpoint_interval,
        }
    }
}

/// Asks for the assigned package of `kind` and downloads, verifies and finalizes it,
/// resuming from `checkpoint` when it describes the same package. Reports `fw_state`
/// (or `sw_state`) telemetry on the way. The package is a plain image checked against the
/// offered checksum by `ota-core`'s [`PlainReader`].
pub fn run_update<T: UpdateTarget>(
    client: &mut CoapClient,
    target: &mut T,
    kind: Kind,
    run: RunConfig,
    checkpoint: Option<&Checkpoint>,
) -> Result<UpdateOutcome, UpdateError> {
    let chunk_len = usize::try_from(run.chunk_size).map_err(|_| UpdateError::InvalidState)?;
    let mut buf = vec![0u8; chunk_len];
    run_update_with(
        client,
        target,
        kind,
        run,
        checkpoint,
        &mut buf,
        PlainReader::for_offer,
    )
}

/// Like [`run_update`], with the package reader `make_reader` builds for the offer: any
/// [`ResumableReader`], such as `ota-crypto`'s signed-package reader, which verifies (and
/// decrypts) what is written to the slot. A reader error fails the update (reported as
/// `FAILED` with its `fw_error`, and returned) and nothing is finalized; a reader that cannot
/// be built returns its error before anything is downloaded.
///
/// `buf` is the updater's plaintext buffer: at least [`RunConfig::chunk_size`] bytes, and
/// large enough for the plaintext one chunk can release (for a signed and encrypted package:
/// the chunk size plus one sealed chunk, as the reader opens a whole sealed chunk at once). A
/// buffer shorter than the chunk size fails with [`UpdateError::InvalidState`].
pub fn run_update_with<T, R, F>(
    client: &mut CoapClient,
    target: &mut T,
    kind: Kind,
    run: RunConfig,
    checkpoint: Option<&Checkpoint>,
    buf: &mut [u8],
    make_reader: F,
) -> Result<UpdateOutcome, UpdateError>
where
    T: UpdateTarget,
    R: ResumableReader,
    F: FnOnce(&Offer<'_>) -> Result<R, UpdateError>,
{
    let doc = match client.attributes() {
        Ok(d) => d,
        // ThingsBoard's CoAP answers 4.04 when no attribute exists.
        Err(ClientError::Status { code: 0x84 }) => return Ok(UpdateOutcome::NoUpdate),
        Err(_) => return Err(UpdateError::Network),
    };
    let parsed = AttributesResponse::parse(&doc).map_err(|_| UpdateError::InvalidPackage)?;
    let info = parsed.shared.map(|s| s.get(kind)).unwrap_or_default();
    let (Some(title), Some(version), Some(size), Some(algorithm), Some(checksum)) = (
        plain(info.title),
        plain(info.version),
        info.size,
        plain(info.checksum_algorithm),
        plain(info.checksum),
    ) else {
        return Ok(UpdateOutcome::NoUpdate);
    };
    let offer = Offer::new(kind, title, version, size, algorithm, checksum);
    let mut config = updater::Config::new(run.chunk_size, run.slot_capacity);
    config.max_retries = run.max_retries;
    config.backoff_base_ms = run.backoff_base_ms;
    config.backoff_max_ms = config.backoff_max_ms.max(run.backoff_base_ms);
    config.checkpoint_interval = run.checkpoint_interval;
    let mut up = Updater::new(config, buf, checkpoint)?;
    let start = Instant::now();
    let now = || {
        updater::Instant::from_millis(
            u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        )
    };
    let reader = make_reader(&offer)?;
    // A refused offer is reported through the queued actions below.
    let _ = up.handle_offer(&offer, reader, now());
    let mut scratch = Vec::new();
    loop {
        while let Some(action) = up.poll_action() {
            let step = match action {
                Action::RequestChunk { index, size } => {
                    if let Ok(bytes) = client.chunk(kind, title, version, index, size) {
                        up.handle_chunk(index, &bytes, now()).map(|()| Ok(()))
                    } else {
                        // The exchange gave up after its retransmissions: the updater
                        // backs off and asks again, within its own retry budget.
                        up.handle_transport_error(now());
                        Ok(Ok(()))
                    }
                }
                Action::Write { offset, len } => {
                    let r = target.write(offset, up.chunk_data().get(..len).unwrap_or_default());
                    match r {
                        Ok(()) => up.handle_write_done(now()).map(|()| Ok(())),
                        Err(e) => Ok(Err(e)),
                    }
                }
                Action::ReadBack { offset, len } => {
                    scratch.resize(len, 0);
                    match target.read(offset, &mut scratch) {
                        Ok(()) => up.handle_read_back(&scratch, now()).map(|()| Ok(())),
                        Err(e) => Ok(Err(e)),
                    }
                }
                Action::Persist(c) => Ok(target.save_checkpoint(&c)),
                Action::ClearCheckpoint => Ok(target.clear_checkpoint()),
                Action::Report(r) => {
                    let _ = client.telemetry(report_json(&r, title, version).as_bytes());
                    Ok(Ok(()))
                }
                Action::Finalize => match target.finalize() {
                    Ok(()) => up.handle_finalize_done(now()).map(|()| Ok(())),
                    Err(e) => Ok(Err(e)),
                },
                Action::Reboot => return Ok(UpdateOutcome::RebootRequired),
            };
            match step {
                // Failures are queued as FAILED reports; keep draining.
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {
                    return Ok(UpdateOutcome::Interrupted);
                }
                Ok(Err(_)) => up.handle_error(UpdateError::InstallationFailed, now()),
            }
        }
        if let State::Failed(e) = up.state() {
            return Err(e);
        }
        let Some(deadline) = up.poll_timeout() else {
            return Err(UpdateError::InvalidState);
        };
        let wait = deadline.as_millis().saturating_sub(now().as_millis());
        std::thread::sleep(Duration::from_millis(wait));
        up.handle_timeout(now());
    }
}

fn plain(s: Option<ota_core::frame::thingsboard::JsonStr<'_>>) -> Option<&str> {
    s.and_then(|j| j.as_plain())
}

/// The telemetry object of a report: `fw_state`, `fw_progress`, `fw_error` when failed, and
/// `current_fw_title`/`current_fw_version` when updated.
fn report_json(r: &updater::Report, title: &str, version: &str) -> String {
    let p = r.kind.prefix();
    let mut m = serde_json::Map::new();
    m.insert(format!("{p}_state"), r.state_name().into());
    m.insert(format!("{p}_progress"), r.progress.done.into());
    if let Some(e) = r.error() {
        m.insert(format!("{p}_error"), updater::fw_error(e).as_str().into());
    }
    if r.state == State::Updated {
        m.insert(format!("current_{p}_title"), title.into());
        m.insert(format!("current_{p}_version"), version.into());
    }
    serde_json::Value::Object(m).to_string()
}
