//! EnigmaIoT OTA over an external broker: the sender that streams an image to one node
//! through its EnigmaIoT gateway, as `EnigmaIoTUpdate.py` does.
//!
//! Per node `<net>/<node>`:
//! 1. `set/sleeptime` `0`, until `result/sleeptime` reports `{"sleeptime":0}` — the gateway
//!    silently refuses OTA to a node it believes sleepy.
//! 2. `set/ota` message 0: `0,<size>,<chunks>,<md5>`.
//! 3. `set/ota` messages `i,<base64 of 212 bytes>` for i = 1..=chunks, QoS 0, one every
//!    [`Pace`] delay (fast 0.02 s, medium 0.06 s, slow 0.18 s).
//! 4. The node's reports on `result/ota` steer the stream: status 4 (out of sequence,
//!    `last_chunk`) → resend from `last_chunk + 1`; status 5 (10 s without a valid message, the
//!    node reboots) → start again from step 1; status 1 (a chunk before message 0) after the
//!    node had acknowledged message 0 → the node lost its state, start again; status 3 (MD5
//!    check failed) → stop with an error; status 6 → done.
//!
//! Images needing more than 65,535 chunks (the gateway's 16-bit counter) are refused before
//! anything is published ([`EnigmaSendError::Image`] with `EnigmaError::TooManyChunks`).
//! Progress is reported per node through a callback ([`EnigmaProgress`]).
//!
//! Every transfer uses its own connection (client id `<client_id>-<n>`), so several nodes can
//! be served at once from one [`EnigmaSender`].
//!
//! [`deliver_package`] is the server's entry point: it sends a stored package to a device with
//! an EnigmaIoT address and records the progress as the device's update state (DOWNLOADING
//! with the byte count, DOWNLOADED and VERIFIED on the node's MD5 match, UPDATING then UPDATED
//! on status 6 — the node has accepted the image and reboots into it — or FAILED with the
//! error), through the same checked transitions as device telemetry.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use md5::{Digest as _, Md5};
use ota_core::frame::enigma::{
    CHUNK_SIZE, EnigmaChunk, EnigmaError, EnigmaHeader, EnigmaResult, EnigmaStatus, MAX_LINE_LEN,
};
use ota_server::model::{Device, DeviceId, OtaPackage};
use ota_server::service::{DeviceApi as _, Ota, ServiceError};
use rumqttc::QoS;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::broker::{BrokerError, BrokerOptions, Connection, TopicError, check_level};

/// Delay between two chunk messages (`EnigmaIoTUpdate.py -D`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pace {
    /// 0.02 s.
    Fast,
    /// 0.06 s.
    Medium,
    /// 0.18 s.
    Slow,
    /// Any other delay.
    Custom(Duration),
}

impl Pace {
    /// The delay.
    pub const fn delay(self) -> Duration {
        match self {
            Self::Fast => Duration::from_millis(20),
            Self::Medium => Duration::from_millis(60),
            Self::Slow => Duration::from_millis(180),
            Self::Custom(d) => d,
        }
    }
}

/// Tuning of a transfer.
#[derive(Clone, Debug)]
pub struct EnigmaConfig {
    /// Delay before each chunk message.
    pub pace: Pace,
    /// How long to wait for `{"sleeptime":0}` before giving up.
    pub handshake_timeout: Duration,
    /// How often `set/sleeptime 0` is repeated while waiting.
    pub handshake_retry: Duration,
    /// How long to wait for status 6 after the last chunk (the script waits 20 s; the node
    /// reports a timeout after 10 s without a valid message).
    pub finish_timeout: Duration,
    /// Restarts from message 0 (status 5, or status 1 after message 0 was acknowledged)
    /// allowed before the transfer fails.
    pub max_restarts: u32,
    /// Resends after status 4 allowed before the transfer fails.
    pub max_resends: u32,
}

impl Default for EnigmaConfig {
    fn default() -> Self {
        Self {
            pace: Pace::Fast,
            handshake_timeout: Duration::from_secs(10),
            handshake_retry: Duration::from_secs(2),
            finish_timeout: Duration::from_secs(20),
            max_restarts: 3,
            max_resends: 1000,
        }
    }
}

/// An EnigmaIoT node address: gateway network name and node MAC or name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EnigmaNode {
    /// The gateway's network name (first topic level).
    pub network: String,
    /// The node's MAC (`aa:bb:cc:dd:ee:ff`) or name (second topic level).
    pub node: String,
}

impl fmt::Display for EnigmaNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.node)
    }
}

impl EnigmaNode {
    /// A node address; both levels are checked (non-empty, no `/`, `+`, `#`, NUL).
    pub fn new(network: impl Into<String>, node: impl Into<String>) -> Result<Self, TopicError> {
        let n = Self {
            network: network.into(),
            node: node.into(),
        };
        check_level("EnigmaIoT network", &n.network, false)?;
        check_level("EnigmaIoT node", &n.node, false)?;
        Ok(n)
    }

    fn topic(&self, suffix: &str) -> String {
        format!("{}/{}/{suffix}", self.network, self.node)
    }
}

/// What happened in a transfer, in order.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnigmaProgress {
    /// The node confirmed sleep time 0 (attempt 0 is the first).
    Awake {
        /// Attempt number.
        attempt: u32,
    },
    /// Message 0 published.
    HeaderSent {
        /// Attempt number.
        attempt: u32,
        /// Chunks announced.
        chunks: u16,
        /// Image size.
        size: u32,
    },
    /// The node acknowledged message 0 (status 0).
    Started,
    /// A chunk message was published.
    ChunkSent {
        /// Its index (1-based).
        index: u16,
        /// Chunks in total.
        chunks: u16,
        /// Image bytes up to and including this chunk.
        bytes: u32,
    },
    /// The node reported a gap (status 4): sending resumes at `from`.
    Resend {
        /// Next chunk to send (`last_chunk + 1`).
        from: u16,
    },
    /// Starting again from message 0.
    Restart {
        /// The coming attempt's number.
        attempt: u32,
        /// The status that caused it.
        status: EnigmaStatus,
    },
    /// The node's MD5 matched (status 2).
    Verified,
    /// The node accepted the image and reboots (status 6).
    Finished,
    /// The transfer failed (the error is also returned).
    Failed {
        /// The error text.
        error: String,
    },
}

/// How a successful transfer went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnigmaOutcome {
    /// Chunks in the image.
    pub chunks: u16,
    /// Chunk messages published, resends included.
    pub chunks_sent: u64,
    /// Status-4 resends.
    pub resends: u32,
    /// Restarts from message 0.
    pub restarts: u32,
}

/// Why a transfer failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum EnigmaSendError {
    /// The image cannot be sent: empty, or more than 65,535 chunks (checked before publishing
    /// anything).
    #[error("image: {0}")]
    Image(EnigmaError),
    /// The image is larger than 4 GiB (the header's size field is 32 bits).
    #[error("image of {size} bytes exceeds the 32-bit size field")]
    ImageTooLarge {
        /// Its size.
        size: usize,
    },
    /// The node address cannot be put into a topic.
    #[error("node address: {0}")]
    Topic(#[from] TopicError),
    /// The broker side failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The node never reported sleep time 0.
    #[error("node {node} did not confirm sleep time 0 within {timeout:?} (last report: {last:?})")]
    NotAwake {
        /// The node.
        node: EnigmaNode,
        /// How long we waited.
        timeout: Duration,
        /// The last sleep time it reported, if any.
        last: Option<u64>,
    },
    /// The node reported a failed MD5 check or a failed image finalisation (status 3).
    #[error("node {node} rejected the image (MD5 check failed)")]
    CheckFailed {
        /// The node.
        node: EnigmaNode,
    },
    /// The node restarted more often than allowed.
    #[error("node {node} restarted {restarts} times")]
    TooManyRestarts {
        /// The node.
        node: EnigmaNode,
        /// Restarts seen.
        restarts: u32,
    },
    /// The node asked for resends more often than allowed.
    #[error("node {node} asked for {resends} resends")]
    TooManyResends {
        /// The node.
        node: EnigmaNode,
        /// Resends asked.
        resends: u32,
    },
    /// A status 4 named a last chunk at or past the end: the node is out of step (its index
    /// survives a new message 0 until it reboots).
    #[error("node {node} reports last chunk {last_chunk} of {chunks}")]
    ResumePastEnd {
        /// The node.
        node: EnigmaNode,
        /// Reported last chunk.
        last_chunk: u16,
        /// Chunks in the image.
        chunks: u16,
    },
    /// No status 6 within the finish timeout after the last chunk.
    #[error("node {node} sent no final report within {timeout:?} after the last chunk")]
    NoFinalReport {
        /// The node.
        node: EnigmaNode,
        /// The timeout.
        timeout: Duration,
    },
}

/// The header (message 0) for an image; the up-front check of [`EnigmaSender::send`].
pub fn header_for(image: &[u8]) -> Result<EnigmaHeader, EnigmaSendError> {
    let size = u32::try_from(image.len())
        .map_err(|_| EnigmaSendError::ImageTooLarge { size: image.len() })?;
    // Size first: an image over the chunk limit is refused without hashing it.
    EnigmaHeader::for_image(size, [0; 16]).map_err(EnigmaSendError::Image)?;
    let md5: [u8; 16] = Md5::digest(image).into();
    EnigmaHeader::for_image(size, md5).map_err(EnigmaSendError::Image)
}

/// Streams images to EnigmaIoT nodes.
#[derive(Debug)]
pub struct EnigmaSender {
    options: BrokerOptions,
    config: EnigmaConfig,
    transfers: AtomicU64,
}

enum Step {
    Continue,
    Resend(u16),
    Restart(EnigmaStatus),
    Done,
}

struct Transfer<'a, F> {
    node: &'a EnigmaNode,
    image: &'a [u8],
    header: EnigmaHeader,
    config: &'a EnigmaConfig,
    conn: Connection,
    progress: F,
    ota_topic: String,
    outcome: EnigmaOutcome,
}

impl EnigmaSender {
    /// A sender publishing through the broker in `options` (client ids `<client_id>-<n>`).
    pub fn new(options: BrokerOptions, config: EnigmaConfig) -> Self {
        Self {
            options,
            config,
            transfers: AtomicU64::new(0),
        }
    }

    /// Sends `image` to `node`, reporting each step to `progress`; returns when the node
    /// reported success (status 6) or the transfer failed.
    pub async fn send<F>(
        &self,
        node: &EnigmaNode,
        image: &[u8],
        mut progress: F,
    ) -> Result<EnigmaOutcome, EnigmaSendError>
    where
        F: FnMut(&EnigmaProgress) + Send,
    {
        let result = self.send_inner(node, image, &mut progress).await;
        if let Err(e) = &result {
            tracing::warn!(%node, error = %e, "EnigmaIoT OTA failed");
            progress(&EnigmaProgress::Failed {
                error: e.to_string(),
            });
        }
        result
    }

    async fn send_inner<F>(
        &self,
        node: &EnigmaNode,
        image: &[u8],
        progress: &mut F,
    ) -> Result<EnigmaOutcome, EnigmaSendError>
    where
        F: FnMut(&EnigmaProgress) + Send,
    {
        check_level("EnigmaIoT network", &node.network, false)?;
        check_level("EnigmaIoT node", &node.node, false)?;
        let header = header_for(image)?;
        let n = self.transfers.fetch_add(1, Ordering::Relaxed);
        let mut options = self.options.clone();
        // Results and sleep-time reports are small; a chunk line is under 300 bytes.
        options.max_payload = 64 * 1024;
        let mut conn =
            Connection::open(&options, format!("{}-{n}", self.options.client_id)).await?;
        conn.subscribe(&node.topic("result/#"), QoS::AtMostOnce)
            .await?;
        let mut t = Transfer {
            node,
            image,
            header,
            config: &self.config,
            conn,
            progress,
            ota_topic: node.topic("set/ota"),
            outcome: EnigmaOutcome {
                chunks: header.chunks,
                chunks_sent: 0,
                resends: 0,
                restarts: 0,
            },
        };
        let result = t.run().await;
        t.conn.close().await;
        result
    }
}

impl<F> Transfer<'_, F>
where
    F: FnMut(&EnigmaProgress) + Send,
{
    fn report(&mut self, p: &EnigmaProgress) {
        (self.progress)(p);
    }

    async fn run(&mut self) -> Result<EnigmaOutcome, EnigmaSendError> {
        let mut attempt = 0;
        loop {
            self.handshake(attempt).await?;
            match self.attempt(attempt).await? {
                None => return Ok(self.outcome),
                Some(status) => {
                    attempt += 1;
                    self.outcome.restarts += 1;
                    if self.outcome.restarts > self.config.max_restarts {
                        return Err(EnigmaSendError::TooManyRestarts {
                            node: self.node.clone(),
                            restarts: self.outcome.restarts,
                        });
                    }
                    tracing::info!(node = %self.node, ?status, attempt, "EnigmaIoT OTA restarts from message 0");
                    self.report(&EnigmaProgress::Restart { attempt, status });
                }
            }
        }
    }

    /// `set/sleeptime 0` until the node reports 0.
    async fn handshake(&mut self, attempt: u32) -> Result<(), EnigmaSendError> {
        let set = self.node.topic("set/sleeptime");
        let result = self.node.topic("result/sleeptime");
        let give_up = Instant::now() + self.config.handshake_timeout;
        let mut last = None;
        loop {
            self.conn
                .publish_at_most_once(&set, Bytes::from_static(b"0"))
                .await?;
            let retry = (Instant::now() + self.config.handshake_retry).min(give_up);
            while let Some(m) = self.conn.next_message(retry).await? {
                if m.topic != result {
                    continue;
                }
                let value = serde_json::from_slice::<serde_json::Value>(&m.payload)
                    .ok()
                    .and_then(|v| v.get("sleeptime").and_then(serde_json::Value::as_u64));
                if value == Some(0) {
                    self.report(&EnigmaProgress::Awake { attempt });
                    return Ok(());
                }
                last = value.or(last);
            }
            if Instant::now() >= give_up {
                return Err(EnigmaSendError::NotAwake {
                    node: self.node.clone(),
                    timeout: self.config.handshake_timeout,
                    last,
                });
            }
        }
    }

    /// One pass from message 0; `Ok(None)` on success, `Ok(Some(status))` to restart.
    async fn attempt(&mut self, attempt: u32) -> Result<Option<EnigmaStatus>, EnigmaSendError> {
        let mut line = [0u8; MAX_LINE_LEN];
        let n = self
            .header
            .emit(&mut line)
            .map_err(EnigmaSendError::Image)?;
        self.conn
            .publish_at_most_once(
                &self.ota_topic,
                Bytes::copy_from_slice(line.get(..n).unwrap_or(&[])),
            )
            .await?;
        self.report(&EnigmaProgress::HeaderSent {
            attempt,
            chunks: self.header.chunks,
            size: self.header.size,
        });
        let chunks = self.header.chunks;
        let mut started = false;
        let mut next: u16 = 1;
        let mut finish_by: Option<Instant> = None;
        loop {
            let wait_until = match finish_by {
                Some(t) => t,
                None => Instant::now() + self.config.pace.delay(),
            };
            while let Some(m) = self.conn.next_message(wait_until).await? {
                match self.on_result(&m.topic, &m.payload, &mut started, chunks)? {
                    Step::Continue => {}
                    Step::Done => return Ok(None),
                    Step::Restart(s) => return Ok(Some(s)),
                    Step::Resend(from) => {
                        next = from;
                        finish_by = None;
                        break;
                    }
                }
                if finish_by.is_none() && Instant::now() >= wait_until {
                    break;
                }
            }
            if let Some(t) = finish_by {
                if Instant::now() >= t {
                    return Err(EnigmaSendError::NoFinalReport {
                        node: self.node.clone(),
                        timeout: self.config.finish_timeout,
                    });
                }
                continue;
            }
            if next > chunks {
                finish_by = Some(Instant::now() + self.config.finish_timeout);
                continue;
            }
            self.send_chunk(next, &mut line).await?;
            if next == chunks {
                finish_by = Some(Instant::now() + self.config.finish_timeout);
            }
            next = next.saturating_add(1);
        }
    }

    async fn send_chunk(&mut self, index: u16, line: &mut [u8]) -> Result<(), EnigmaSendError> {
        let (start, end) = self.header.chunk_range(index).unwrap_or((0, 0));
        let (start, end) = (start as usize, end as usize);
        let data = self.image.get(start..end).unwrap_or(&[]);
        debug_assert!(data.len() <= CHUNK_SIZE);
        let n = EnigmaChunk::emit(index, data, line).map_err(EnigmaSendError::Image)?;
        self.conn
            .publish_at_most_once(
                &self.ota_topic,
                Bytes::copy_from_slice(line.get(..n).unwrap_or(&[])),
            )
            .await?;
        self.outcome.chunks_sent += 1;
        self.report(&EnigmaProgress::ChunkSent {
            index,
            chunks: self.header.chunks,
            bytes: u32::try_from(end).unwrap_or(u32::MAX),
        });
        Ok(())
    }

    fn on_result(
        &mut self,
        topic: &str,
        payload: &[u8],
        started: &mut bool,
        chunks: u16,
    ) -> Result<Step, EnigmaSendError> {
        if !topic.ends_with("/result/ota") {
            return Ok(Step::Continue);
        }
        let r = match EnigmaResult::parse(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(node = %self.node, error = %e, "ignoring unreadable EnigmaIoT result");
                return Ok(Step::Continue);
            }
        };
        tracing::debug!(node = %self.node, status = r.status.name(), last_chunk = ?r.last_chunk, "EnigmaIoT result");
        Ok(match r.status {
            EnigmaStatus::Started => {
                *started = true;
                self.report(&EnigmaProgress::Started);
                Step::Continue
            }
            // Before the node acknowledged this message 0, a status 1 answers chunks sent
            // before it (e.g. after a reboot): stale. After, the node lost its state.
            EnigmaStatus::StartError if *started => Step::Restart(EnigmaStatus::StartError),
            EnigmaStatus::CheckOk => {
                self.report(&EnigmaProgress::Verified);
                Step::Continue
            }
            EnigmaStatus::CheckFail => {
                return Err(EnigmaSendError::CheckFailed {
                    node: self.node.clone(),
                });
            }
            EnigmaStatus::OutOfSequence => {
                let last = r.last_chunk.unwrap_or(0);
                if last >= chunks {
                    return Err(EnigmaSendError::ResumePastEnd {
                        node: self.node.clone(),
                        last_chunk: last,
                        chunks,
                    });
                }
                self.outcome.resends += 1;
                if self.outcome.resends > self.config.max_resends {
                    return Err(EnigmaSendError::TooManyResends {
                        node: self.node.clone(),
                        resends: self.outcome.resends,
                    });
                }
                let from = last + 1;
                self.report(&EnigmaProgress::Resend { from });
                Step::Resend(from)
            }
            EnigmaStatus::Timeout => Step::Restart(EnigmaStatus::Timeout),
            EnigmaStatus::Finished => {
                self.report(&EnigmaProgress::Finished);
                Step::Done
            }
            _ => Step::Continue,
        })
    }
}

/// Why a stored package could not be delivered to a device over EnigmaIoT.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum EnigmaDeliverError {
    /// The device has no EnigmaIoT address.
    #[error("device {device} has no EnigmaIoT address")]
    NoAddress {
        /// The device.
        device: DeviceId,
    },
    /// The package's bytes could not be read.
    #[error("package bytes: {0}")]
    Package(ServiceError),
    /// The transfer failed (recorded as FAILED).
    #[error(transparent)]
    Send(#[from] EnigmaSendError),
    /// The transfer succeeded but its state could not be recorded.
    #[error("recording the update state: {0}")]
    Record(ServiceError),
}

/// The telemetry objects (ThingsBoard keys) that record one progress event.
fn telemetry(prefix: &str, package: &OtaPackage, p: &EnigmaProgress) -> Vec<Map<String, Value>> {
    let obj = |v: Value| match v {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let state = |s: &str| obj(json!({ format!("{prefix}_state"): s }));
    match p {
        EnigmaProgress::HeaderSent { .. } => vec![obj(json!({
            format!("{prefix}_state"): "DOWNLOADING",
            format!("{prefix}_progress"): 0,
        }))],
        EnigmaProgress::ChunkSent { bytes, .. } => {
            vec![obj(json!({ format!("{prefix}_progress"): bytes }))]
        }
        EnigmaProgress::Verified => vec![state("DOWNLOADED"), state("VERIFIED")],
        EnigmaProgress::Finished => vec![
            state("UPDATING"),
            obj(json!({
                format!("current_{prefix}_title"): package.title,
                format!("current_{prefix}_version"): package.version,
                format!("{prefix}_state"): "UPDATED",
            })),
        ],
        EnigmaProgress::Failed { error } => vec![obj(json!({
            format!("{prefix}_state"): "FAILED",
            format!("{prefix}_error"): error,
        }))],
        _ => Vec::new(),
    }
}

/// Sends a stored package to `device` through its EnigmaIoT gateway and records the progress
/// and final state as the device's update state (see the module docs). The package should be
/// the device's assigned one: state changes are only recorded for an offered package.
pub async fn deliver_package(
    sender: &EnigmaSender,
    ota: &Ota,
    device: &Device,
    package: &OtaPackage,
) -> Result<EnigmaOutcome, EnigmaDeliverError> {
    let address = device
        .enigma
        .as_ref()
        .ok_or(EnigmaDeliverError::NoAddress { device: device.id })?;
    let node = EnigmaNode {
        network: address.network.clone(),
        node: address.node.clone(),
    };
    let bytes = ota
        .package_bytes(package)
        .await
        .map_err(EnigmaDeliverError::Package)?;
    let prefix = package.package_type.prefix();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let send = sender.send(&node, &bytes, move |p| {
        // The receiver lives until the transfer ends.
        let _ = tx.send(p.clone());
    });
    let record = async {
        let mut first_error = None;
        while let Some(p) = rx.recv().await {
            for values in telemetry(prefix, package, &p) {
                if let Err(e) = ota.record_telemetry(device, &values).await {
                    tracing::warn!(device = %device.id, error = %e, "cannot record EnigmaIoT progress");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error
    };
    let (result, record_error) = tokio::join!(send, record);
    let outcome = result?;
    match record_error {
        Some(e) => Err(EnigmaDeliverError::Record(e)),
        None => Ok(outcome),
    }
}

#[cfg(test)]
mod tests {
    use super::{EnigmaSendError, header_for};
    use ota_core::frame::enigma::EnigmaError;

    #[test]
    fn header_matches_the_reference_vector() {
        // Reference §8.4: 500 bytes, byte i = i mod 256.
        let image: Vec<u8> = (0..500usize).map(|i| i.to_le_bytes()[0]).collect();
        let h = header_for(&image).expect("header");
        let mut line = [0u8; 64];
        let n = h.emit(&mut line).expect("emit");
        assert_eq!(&line[..n], b"0,500,3,dec0592345ac3dfa172c9ec476a24c75");
    }

    #[test]
    fn empty_image_is_refused() {
        assert!(matches!(
            header_for(&[]),
            Err(EnigmaSendError::Image(EnigmaError::EmptyImage))
        ));
    }
}
