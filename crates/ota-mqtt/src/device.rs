//! The MQTT device client (ThingsBoard dialect): connects with the access token as user name,
//! reads the shared attributes (`v1/devices/me/attributes/request/{id}`), follows attribute
//! pushes (including `{"deleted":[…]}`), drives `ota-core`'s [`Updater`] chunk by chunk over
//! `v2/fw/request/{reqId}/chunk/{n}`, writes the caller's [`Slot`], persists checkpoints to a
//! [`CheckpointStore`] and reports `fw_state`/`fw_error`/`fw_progress` telemetry on
//! `v1/devices/me/telemetry`.
//!
//! A lost connection is a transport error for the machine: the client reconnects (with a
//! fresh request id, as ThingsBoard keeps request ids per connection), re-reads the
//! attributes, and asks for the chunk it was waiting for; chunks already written are never
//! asked for again. A process restart resumes from the stored checkpoint (the machine re-reads
//! and re-checks the written bytes first).
//!
//! The slot, checkpoint store, offer and outcome types are `ota-http`'s, so one slot
//! implementation serves both transports.
//!
//! ```no_run
//! use ota_core::updater::{Config, Kind};
//! use ota_mqtt::device::{MemoryCheckpoints, MemorySlot, MqttDevice, Outcome};
//!
//! # async fn run() -> Result<(), ota_mqtt::device::DeviceError> {
//! let mut device = MqttDevice::new("127.0.0.1", 1883, "TOKEN", Kind::Firmware, Config::new(4096, 1 << 20))
//!     .running("demo", "1.0");
//! let mut slot = MemorySlot::new(1 << 20);
//! let mut checkpoints = MemoryCheckpoints::default();
//! if let Outcome::Installed { title, version } = device.update(&mut slot, &mut checkpoints).await? {
//!     // reboot into the slot; after a confirmed boot:
//!     device.report_boot(&title, &version, true).await?;
//! }
//! device.close().await;
//! # Ok(()) }
//! ```

use std::time::Duration;

use bytes::Bytes;
use ota_core::UpdateError;
use ota_core::frame::thingsboard::JsonError;
use ota_core::reader::ResumableReader;
use ota_core::topic::Topic;
use ota_core::updater::{
    Action, Config, ConfigError, Kind, PlainReader, Progress, Report, State, Updater,
};
pub use ota_http::device::{
    CheckpointStore, MemoryCheckpoints, MemorySlot, Outcome, OwnedOffer, Slot,
};
use ota_http::device::{DownloadClock, load_checkpoint};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Outgoing, Packet, QoS,
};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Topic of attribute pushes and the prefix of attribute responses.
const ATTRIBUTES: &str = "v1/devices/me/attributes";
/// Telemetry topic.
const TELEMETRY: &str = "v1/devices/me/telemetry";

/// Where chunks are asked for and answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// ThingsBoard: `v2/fw/request/{reqId}/chunk/{n}` → `v2/fw/response/{reqId}/chunk/{n}`
    /// (`sw` for software), attributes and telemetry under `v1/devices/me/…`.
    ThingsBoard,
    /// A plain broker relaying per-device topics: requests on `{prefix}/req/{reqId}/chunk/{n}`,
    /// answers on `{prefix}/res/{reqId}/chunk/{n}`; the offer is passed to
    /// [`MqttDevice::download`] and no attributes or telemetry are exchanged.
    Relay {
        /// The device's own topic prefix.
        prefix: String,
    },
}

impl Dialect {
    fn request_topic(&self, kind: Kind, req: u32, index: u32) -> String {
        match self {
            Self::ThingsBoard => format!("v2/{}/request/{req}/chunk/{index}", kind.prefix()),
            Self::Relay { prefix } => format!("{prefix}/req/{req}/chunk/{index}"),
        }
    }

    fn subscriptions(&self, kind: Kind) -> Vec<String> {
        match self {
            Self::ThingsBoard => vec![
                ATTRIBUTES.to_owned(),
                format!("{ATTRIBUTES}/response/+"),
                format!("v2/{}/response/+/chunk/+", kind.prefix()),
                "v2/fw/error".to_owned(),
            ],
            Self::Relay { prefix } => vec![format!("{prefix}/res/+/chunk/+")],
        }
    }

    /// `(reqId, n)` of a chunk answer topic.
    fn chunk_answer(&self, kind: Kind, topic: &str) -> Option<(u32, u32)> {
        match self {
            Self::ThingsBoard => match Topic::parse(topic) {
                Ok(Topic::ChunkResponse {
                    kind: k,
                    request_id,
                    chunk,
                }) if k == kind => Some((request_id.as_str().parse().ok()?, chunk)),
                _ => None,
            },
            Self::Relay { prefix } => {
                let rest = topic.strip_prefix(prefix.as_str())?.strip_prefix("/res/")?;
                let (req, index) = rest.split_once("/chunk/")?;
                Some((req.parse().ok()?, index.parse().ok()?))
            }
        }
    }

    const fn is_thingsboard(&self) -> bool {
        matches!(self, Self::ThingsBoard)
    }
}

/// A client-side failure that stops [`MqttDevice`] (failures of the update itself end in
/// [`Outcome::Failed`] and are reported to the server instead).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The server refused the connection (bad access token and the like).
    #[error("the server refused the connection: {code:?}")]
    Refused {
        /// CONNACK return code.
        code: ConnectReturnCode,
    },
    /// The server could not be reached (or the connection kept dropping) `attempts` times in a row.
    #[error("no connection after {attempts} attempts: {last}")]
    Unreachable {
        /// Consecutive failed attempts.
        attempts: u32,
        /// The last connection error.
        last: String,
    },
    /// No attribute response arrived in time.
    #[error("no attribute response within {0:?}")]
    AttributeTimeout(Duration),
    /// The attribute response is not ThingsBoard JSON.
    #[error("attributes are not ThingsBoard JSON: {0}")]
    Attributes(JsonError),
    /// The attribute response is not a JSON object.
    #[error("the attribute response is not a JSON object: {0}")]
    AttributesNotObject(String),
    /// The server refused the chunk size (`PAYLOAD_TOO_LARGE` on `v2/fw/error`).
    #[error("the server refused chunk size {0} (PAYLOAD_TOO_LARGE)")]
    ChunkTooLarge(u32),
    /// The updater configuration was refused.
    #[error("updater configuration: {0}")]
    Config(#[from] ConfigError),
}

/// Counters of one [`MqttDevice`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Chunk requests published.
    pub chunk_requests: u32,
    /// Chunk answers received for the current request id.
    pub chunks_received: u32,
    /// Connections established (the first one included).
    pub connections: u32,
    /// Connections lost.
    pub disconnects: u32,
    /// Publishes that could not be queued (telemetry is best effort).
    pub publish_failures: u32,
    /// Messages ignored (stale request ids, unknown topics, unreadable pushes).
    pub ignored: u32,
    /// Bytes re-read from the slot to resume.
    pub read_back: u64,
}

/// What the connection task hands to the device.
#[derive(Debug)]
enum LinkEvent {
    Connected,
    Refused(ConnectReturnCode),
    Message { topic: String, payload: Bytes },
    Lost(String),
}

/// One MQTT connection (reconnecting) and its event-loop task.
#[derive(Debug)]
struct Link {
    client: AsyncClient,
    events: mpsc::Receiver<LinkEvent>,
    task: JoinHandle<()>,
    connected: bool,
    /// Consecutive losses without a successful connection.
    failures: u32,
}

/// Tunables of the connection (the update itself is tuned by [`Config`]).
#[derive(Clone, Debug)]
pub struct LinkOptions {
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// Pause before a reconnection attempt.
    pub reconnect_delay: Duration,
    /// Consecutive failed connections (or losses) before giving up with [`DeviceError::Unreachable`].
    pub max_reconnects: u32,
    /// How long to wait for the attribute response.
    pub attribute_timeout: Duration,
    /// After the attributes showed nothing new: how long to wait for a pushed offer before
    /// returning [`Outcome::NoOffer`]/[`Outcome::UpToDate`] (zero: return at once).
    pub wait_for_offer: Duration,
}

impl Default for LinkOptions {
    fn default() -> Self {
        Self {
            keep_alive: Duration::from_secs(30),
            reconnect_delay: Duration::from_millis(200),
            max_reconnects: 20,
            attribute_timeout: Duration::from_secs(10),
            wait_for_offer: Duration::ZERO,
        }
    }
}

/// A device speaking ThingsBoard's MQTT device API (MQTT 3.1.1, QoS 1).
#[derive(Debug)]
pub struct MqttDevice {
    host: String,
    port: u16,
    token: String,
    client_id: String,
    kind: Kind,
    config: Config,
    buffer_len: usize,
    dialect: Dialect,
    link_options: LinkOptions,
    current: Option<(String, String)>,
    link: Option<Link>,
    /// Shared attributes of this kind as last heard.
    shared: Map<String, Value>,
    attr_request: u32,
    attr_answered: bool,
    /// Chunk request id of this connection and download.
    chunk_request: u32,
    /// The chunk asked for and not answered yet (re-asked after a reconnect).
    outstanding: Option<(u32, u32)>,
    stats: DeviceStats,
}

/// How an attribute message changed the offer.
enum OfferChange {
    Unchanged,
    New(OwnedOffer),
    Withdrawn,
}

impl MqttDevice {
    /// A client of the MQTT endpoint at `host:port` for the device with `token`, updating
    /// `kind` with the updater `config` (its `request_timeout_ms` bounds each chunk).
    pub fn new(host: &str, port: u16, token: &str, kind: Kind, config: Config) -> Self {
        Self {
            host: host.to_owned(),
            port,
            token: token.to_owned(),
            client_id: format!("ota-{token}"),
            kind,
            config,
            buffer_len: 0,
            dialect: Dialect::ThingsBoard,
            link_options: LinkOptions::default(),
            current: None,
            link: None,
            shared: Map::new(),
            attr_request: 0,
            attr_answered: false,
            chunk_request: 0,
            outstanding: None,
            stats: DeviceStats::default(),
        }
    }

    /// Declares the title and version running now (an offer of the same is up to date).
    #[must_use]
    pub fn running(mut self, title: &str, version: &str) -> Self {
        self.current = Some((title.to_owned(), version.to_owned()));
        self
    }

    /// Sets the MQTT client id (default `ota-{token}`).
    #[must_use]
    pub fn client_id(mut self, id: &str) -> Self {
        id.clone_into(&mut self.client_id);
        self
    }

    /// Sizes the updater's chunk buffer (default: the chunk size). A reader that releases
    /// more plaintext than one transport chunk at once (a signed package's sealed chunk)
    /// needs chunk size + sealed chunk size.
    #[must_use]
    pub const fn buffer_len(mut self, len: usize) -> Self {
        self.buffer_len = len;
        self
    }

    /// Sets the topic dialect (default [`Dialect::ThingsBoard`]).
    #[must_use]
    pub fn dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = dialect;
        self
    }

    /// Sets the connection tunables.
    #[must_use]
    pub fn link_options(mut self, options: LinkOptions) -> Self {
        self.link_options = options;
        self
    }

    /// Counters so far.
    pub const fn stats(&self) -> DeviceStats {
        self.stats
    }

    /// The telemetry of a machine report: `fw_state`, `fw_error` when failed, `fw_progress`.
    pub fn report_values(report: &Report) -> Map<String, Value> {
        ota_http::device::HttpDevice::report_values(report)
    }

    fn options(&self) -> MqttOptions {
        let mut o = MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
        o.set_credentials(self.token.clone(), String::new());
        o.set_keep_alive(self.link_options.keep_alive);
        o.set_clean_session(true);
        // A chunk answer: the chunk plus its topic and header.
        let incoming = usize::try_from(self.config.chunk_size)
            .unwrap_or(usize::MAX)
            .saturating_add(1024)
            .max(64 * 1024);
        o.set_max_packet_size(incoming, 64 * 1024);
        o
    }

    fn link(&mut self) -> &mut Link {
        if self.link.is_none() {
            let (client, mut eventloop) = AsyncClient::new(self.options(), 64);
            // Chunk requests are small writes right after the PUBACK of the previous answer:
            // without TCP_NODELAY, Nagle holds each one for the server's delayed ACK.
            eventloop.network_options.set_tcp_nodelay(true);
            let (tx, events) = mpsc::channel(64);
            let delay = self.link_options.reconnect_delay;
            let task = tokio::spawn(async move {
                loop {
                    let ev = match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                            if ack.code == ConnectReturnCode::Success {
                                LinkEvent::Connected
                            } else {
                                LinkEvent::Refused(ack.code)
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => LinkEvent::Message {
                            topic: p.topic,
                            payload: p.payload,
                        },
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                        Ok(_) => continue,
                        Err(ConnectionError::ConnectionRefused(code)) => LinkEvent::Refused(code),
                        Err(e) => {
                            // Messages read together with the end of the connection (an
                            // error code before the server closes) still count.
                            while let Some(ev) = eventloop.state.events.pop_front() {
                                if let Event::Incoming(Packet::Publish(p)) = ev {
                                    let m = LinkEvent::Message {
                                        topic: p.topic,
                                        payload: p.payload,
                                    };
                                    if tx.send(m).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            if tx.send(LinkEvent::Lost(e.to_string())).await.is_err() {
                                break;
                            }
                            tokio::time::sleep(delay).await;
                            continue;
                        }
                    };
                    let refused = matches!(ev, LinkEvent::Refused(_));
                    if tx.send(ev).await.is_err() || refused {
                        break;
                    }
                }
            });
            self.link = Some(Link {
                client,
                events,
                task,
                connected: false,
                failures: 0,
            });
        }
        self.link.as_mut().expect("link just set")
    }

    /// Disconnects cleanly (queued publishes are sent first) and ends the connection task.
    pub async fn close(&mut self) {
        if let Some(mut link) = self.link.take() {
            if link.connected && link.client.try_disconnect().is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut link.task).await;
            }
            link.task.abort();
        }
    }

    /// Queues one publish; a full queue counts as a failure (telemetry is best effort, chunk
    /// requests are retried by the machine).
    fn publish(&mut self, topic: String, payload: Vec<u8>) -> bool {
        match self
            .link()
            .client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
        {
            Ok(()) => true,
            Err(e) => {
                self.stats.publish_failures += 1;
                tracing::debug!(error = %e, "publish not queued");
                false
            }
        }
    }

    /// Publishes one telemetry object (ThingsBoard dialect only).
    pub fn send_telemetry(&mut self, values: &Map<String, Value>) {
        if self.dialect.is_thingsboard() {
            let body = Value::Object(values.clone()).to_string().into_bytes();
            self.publish(TELEMETRY.to_owned(), body);
        }
    }

    fn on_connected(&mut self) {
        self.stats.connections += 1;
        let subs = self.dialect.subscriptions(self.kind);
        let link = self.link();
        link.connected = true;
        link.failures = 0;
        let refused = subs
            .into_iter()
            .filter(|s| {
                link.client
                    .try_subscribe(s.as_str(), QoS::AtLeastOnce)
                    .is_err()
            })
            .count();
        self.stats.publish_failures += u32::try_from(refused).unwrap_or(u32::MAX);
        // Request ids are per connection on the server: a fresh one for the new connection.
        self.chunk_request = self.chunk_request.wrapping_add(1);
        if self.dialect.is_thingsboard() {
            self.request_attributes();
        }
    }

    fn request_attributes(&mut self) {
        self.attr_request = self.attr_request.wrapping_add(1);
        self.attr_answered = false;
        let p = self.kind.prefix();
        let keys = [
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
        .join(",");
        let body = serde_json::json!({ "sharedKeys": keys })
            .to_string()
            .into_bytes();
        self.publish(format!("{ATTRIBUTES}/request/{}", self.attr_request), body);
    }

    fn ask_chunk(&mut self, index: u32, size: u32) {
        self.outstanding = Some((index, size));
        if self.link.as_ref().is_some_and(|l| l.connected) {
            self.stats.chunk_requests += 1;
            let topic = self
                .dialect
                .request_topic(self.kind, self.chunk_request, index);
            self.publish(topic, size.to_string().into_bytes());
        }
    }

    /// The offer the current shared attributes make, if complete.
    fn offer(&self) -> Result<Option<OwnedOffer>, JsonError> {
        let body = serde_json::json!({ "shared": self.shared }).to_string();
        OwnedOffer::from_attributes(self.kind, body.as_bytes())
    }

    fn is_own_key(&self, key: &str) -> bool {
        key.strip_prefix(self.kind.prefix())
            .is_some_and(|k| k.starts_with('_'))
    }

    /// Applies an attribute response or push; `Err` only for an unreadable answer to our request.
    fn on_attributes(
        &mut self,
        topic: &str,
        payload: &[u8],
        active: Option<&OwnedOffer>,
    ) -> Result<OfferChange, DeviceError> {
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(payload) else {
            if topic == ATTRIBUTES {
                self.stats.ignored += 1;
                return Ok(OfferChange::Unchanged);
            }
            return Err(DeviceError::AttributesNotObject(
                String::from_utf8_lossy(payload).chars().take(64).collect(),
            ));
        };
        if topic == ATTRIBUTES {
            if let Some(Value::Array(deleted)) = body.get("deleted") {
                for k in deleted.iter().filter_map(Value::as_str) {
                    self.shared.remove(k);
                }
            } else {
                for (k, v) in body {
                    if self.is_own_key(&k) {
                        self.shared.insert(k, v);
                    }
                }
            }
        } else {
            let id = match Topic::parse(topic) {
                Ok(Topic::AttributesResponse { id }) => Some(id),
                _ => None,
            };
            if id != Some(self.attr_request) {
                self.stats.ignored += 1;
                return Ok(OfferChange::Unchanged);
            }
            self.attr_answered = true;
            self.shared = match body.get("shared") {
                Some(Value::Object(m)) => m.clone(),
                _ => Map::new(),
            };
        }
        let offer = match self.offer() {
            Ok(o) => o,
            Err(e) if topic == ATTRIBUTES => {
                tracing::debug!(error = ?e, "unreadable attribute push");
                self.stats.ignored += 1;
                return Ok(OfferChange::Unchanged);
            }
            Err(e) => return Err(DeviceError::Attributes(e)),
        };
        Ok(match (offer, active) {
            (None, Some(_)) => OfferChange::Withdrawn,
            (None, None) => OfferChange::Unchanged,
            (Some(o), Some(a)) if o == *a => OfferChange::Unchanged,
            (Some(o), _) => OfferChange::New(o),
        })
    }

    /// The next event of the connection; `None` when `deadline` passed first.
    async fn next_event(
        &mut self,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Option<LinkEvent>, DeviceError> {
        let max = self.link_options.max_reconnects;
        let link = self.link();
        let ev = match deadline {
            Some(d) => match tokio::time::timeout_at(d, link.events.recv()).await {
                Ok(ev) => ev,
                Err(_) => return Ok(None),
            },
            None => link.events.recv().await,
        };
        match ev {
            Some(LinkEvent::Connected) => {
                self.on_connected();
                Ok(Some(LinkEvent::Connected))
            }
            Some(LinkEvent::Refused(code)) => {
                self.link = None;
                Err(DeviceError::Refused { code })
            }
            Some(LinkEvent::Lost(why)) => {
                let link = self.link();
                let was_connected = link.connected;
                link.connected = false;
                link.failures += 1;
                let failures = link.failures;
                if was_connected {
                    self.stats.disconnects += 1;
                }
                if failures > max {
                    let attempts = failures;
                    self.close().await;
                    return Err(DeviceError::Unreachable {
                        attempts,
                        last: why,
                    });
                }
                Ok(Some(LinkEvent::Lost(why)))
            }
            Some(m @ LinkEvent::Message { .. }) => Ok(Some(m)),
            None => {
                self.link = None;
                Err(DeviceError::Unreachable {
                    attempts: 0,
                    last: "connection task ended".into(),
                })
            }
        }
    }

    /// Reads the shared attributes and returns the offer of this client's kind, if complete.
    /// With [`LinkOptions::wait_for_offer`] set, waits that long for a pushed offer that is
    /// new (not what runs).
    pub async fn fetch_offer(&mut self) -> Result<Option<OwnedOffer>, DeviceError> {
        let timeout = self.link_options.attribute_timeout;
        let answer_by = tokio::time::Instant::now() + timeout;
        // Connected: ask now; otherwise the connection asks once it is up.
        self.attr_answered = false;
        let connected = self.link().connected;
        if connected {
            self.request_attributes();
        }
        while !self.attr_answered {
            let Some(ev) = self.next_event(Some(answer_by)).await? else {
                return Err(DeviceError::AttributeTimeout(timeout));
            };
            if let LinkEvent::Message { topic, payload } = ev {
                self.on_message_idle(&topic, &payload)?;
            }
        }
        let offer = self.offer().map_err(DeviceError::Attributes)?;
        if offer.as_ref().is_some_and(|o| !self.runs(o)) {
            return Ok(offer);
        }
        let wait = self.link_options.wait_for_offer;
        if wait.is_zero() {
            return Ok(offer);
        }
        Ok(self.wait_for_push(wait).await?.or(offer))
    }

    /// Waits up to `wait` for attribute pushes to make a complete offer that is not what
    /// runs, without asking for the attributes (a connected device is told of assignments).
    /// `None` when none came in time.
    pub async fn wait_for_push(
        &mut self,
        wait: Duration,
    ) -> Result<Option<OwnedOffer>, DeviceError> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            match self.next_event(Some(until)).await? {
                None => return Ok(None),
                Some(LinkEvent::Message { topic, payload }) => {
                    self.on_message_idle(&topic, &payload)?;
                    let offer = self.offer().map_err(DeviceError::Attributes)?;
                    if offer.as_ref().is_some_and(|o| !self.runs(o)) {
                        return Ok(offer);
                    }
                }
                Some(_) => {}
            }
        }
    }

    fn on_message_idle(&mut self, topic: &str, payload: &[u8]) -> Result<(), DeviceError> {
        if topic.starts_with(ATTRIBUTES) {
            self.on_attributes(topic, payload, None)?;
        } else {
            self.stats.ignored += 1;
        }
        Ok(())
    }

    fn runs(&self, offer: &OwnedOffer) -> bool {
        self.current
            .as_ref()
            .is_some_and(|(t, v)| *t == offer.title && *v == offer.version)
    }

    /// Checks for an offer and, if there is a new one, downloads, verifies and finalizes it
    /// (plain images, checked against the announced checksum).
    pub async fn update<S: Slot, C: CheckpointStore>(
        &mut self,
        slot: &mut S,
        checkpoints: &mut C,
    ) -> Result<Outcome, DeviceError> {
        self.update_with(slot, checkpoints, |o| PlainReader::for_offer(&o.as_offer()))
            .await
    }

    /// [`MqttDevice::update`] with the package reader `reader_for` makes for an offer (signed
    /// or encrypted packages).
    pub async fn update_with<S, C, R, F>(
        &mut self,
        slot: &mut S,
        checkpoints: &mut C,
        reader_for: F,
    ) -> Result<Outcome, DeviceError>
    where
        S: Slot,
        C: CheckpointStore,
        R: ResumableReader,
        F: FnMut(&OwnedOffer) -> Result<R, UpdateError>,
    {
        let Some(offer) = self.fetch_offer().await? else {
            return Ok(Outcome::NoOffer);
        };
        if let Some(url) = &offer.url {
            return Ok(Outcome::ExternalUrl(url.clone()));
        }
        if self.runs(&offer) {
            return Ok(Outcome::UpToDate);
        }
        self.download_with(&offer, slot, checkpoints, reader_for)
            .await
    }

    /// Downloads `offer` as a plain image (see [`MqttDevice::update`]).
    pub async fn download<S: Slot, C: CheckpointStore>(
        &mut self,
        offer: &OwnedOffer,
        slot: &mut S,
        checkpoints: &mut C,
    ) -> Result<Outcome, DeviceError> {
        self.download_with(offer, slot, checkpoints, |o| {
            PlainReader::for_offer(&o.as_offer())
        })
        .await
    }

    /// Downloads `offer` through `reader` (for readers that borrow keys and buffers). An offer
    /// pushed during the download cancels it (`FAILED`/`CANCELLED`); call again for the new one.
    pub async fn download_reader<S, C, R>(
        &mut self,
        offer: &OwnedOffer,
        reader: R,
        slot: &mut S,
        checkpoints: &mut C,
    ) -> Result<Outcome, DeviceError>
    where
        S: Slot,
        C: CheckpointStore,
        R: ResumableReader,
    {
        let mut reader = Some(reader);
        self.download_with(offer, slot, checkpoints, |_| {
            reader.take().ok_or(UpdateError::Cancelled)
        })
        .await
    }

    /// Downloads `offer` through the reader `reader_for` makes. Resumes from the checkpoint in
    /// `checkpoints` when it belongs to the same package; follows attribute pushes (a new
    /// offer replaces this one, a withdrawn one cancels it).
    pub async fn download_with<S, C, R, F>(
        &mut self,
        offer: &OwnedOffer,
        slot: &mut S,
        checkpoints: &mut C,
        mut reader_for: F,
    ) -> Result<Outcome, DeviceError>
    where
        S: Slot,
        C: CheckpointStore,
        R: ResumableReader,
        F: FnMut(&OwnedOffer) -> Result<R, UpdateError>,
    {
        let clock = DownloadClock::start();
        let mut active = offer.clone();
        let reader = match reader_for(&active) {
            Ok(r) => r,
            Err(e) => return Ok(self.refuse(e)),
        };
        // An interrupted read starts over here, as any other unreadable store does.
        let stored = load_checkpoint(checkpoints).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "checkpoint store unreadable; starting over");
            None
        });
        let chunk = usize::try_from(self.config.chunk_size).unwrap_or(usize::MAX);
        let mut buf = vec![0u8; chunk.max(self.buffer_len)];
        let mut back = vec![0u8; chunk];
        let mut up = Updater::new(self.config, &mut buf, stored.as_ref())?;
        // Make sure a connection is on its way before the first request is queued.
        let _ = self.link();
        // A fresh request id for this download (the server resolves the package once per id).
        self.chunk_request = self.chunk_request.wrapping_add(1);
        self.outstanding = None;
        // A refused offer queues its FAILED report; the loop below sends it.
        let _ = up.handle_offer(&active.as_offer(), reader, clock.now());
        loop {
            while let Some(action) = up.poll_action() {
                let mut io = Io {
                    slot: &mut *slot,
                    checkpoints: &mut *checkpoints,
                    back: &mut back,
                    clock,
                };
                if let Some(done) = self.act(action, &mut up, &active, &mut io) {
                    return Ok(done);
                }
            }
            if let State::Failed(e) = up.state() {
                return Ok(Outcome::Failed(e));
            }
            let Some(deadline) = up.poll_timeout() else {
                return Ok(Outcome::Failed(UpdateError::InvalidState));
            };
            let wait = deadline.as_millis().saturating_sub(clock.now().as_millis());
            let at = tokio::time::Instant::now() + Duration::from_millis(wait);
            match self.next_event(Some(at)).await? {
                None => up.handle_timeout(clock.now()),
                Some(LinkEvent::Connected) => {
                    // Ask again, with the new connection's request id, for what the lost
                    // connection may have swallowed.
                    if let Some((index, size)) = self.outstanding {
                        self.ask_chunk(index, size);
                    }
                }
                Some(LinkEvent::Lost(why)) => {
                    tracing::debug!(reason = %why, "connection lost");
                    up.handle_transport_error(clock.now());
                }
                Some(LinkEvent::Refused(_)) => {}
                Some(LinkEvent::Message { topic, payload }) => {
                    let now = clock.now();
                    if let Some((req, index)) = self.dialect.chunk_answer(self.kind, &topic) {
                        if req == self.chunk_request {
                            self.stats.chunks_received += 1;
                            if self.outstanding.is_some_and(|(i, _)| i == index) {
                                self.outstanding = None;
                            }
                            let _ = up.handle_chunk(index, &payload, now);
                        } else {
                            self.stats.ignored += 1;
                        }
                    } else if topic == "v2/fw/error" {
                        match &payload[..] {
                            b"PAYLOAD_TOO_LARGE" => {
                                return Err(DeviceError::ChunkTooLarge(self.config.chunk_size));
                            }
                            code => {
                                tracing::info!(code = %String::from_utf8_lossy(code), "package no longer served; stopping");
                                up.handle_cancel(now);
                            }
                        }
                    } else if topic.starts_with(ATTRIBUTES) {
                        match self.on_attributes(&topic, &payload, Some(&active))? {
                            OfferChange::Unchanged => {}
                            OfferChange::Withdrawn => up.handle_cancel(now),
                            OfferChange::New(o) if o.url.is_some() || self.runs(&o) => {
                                up.handle_cancel(now);
                            }
                            OfferChange::New(o) => match reader_for(&o) {
                                Ok(r) => {
                                    self.chunk_request = self.chunk_request.wrapping_add(1);
                                    self.outstanding = None;
                                    active = o;
                                    let _ = up.handle_offer(&active.as_offer(), r, now);
                                }
                                Err(e) => {
                                    up.handle_error(e, now);
                                }
                            },
                        }
                    } else {
                        self.stats.ignored += 1;
                    }
                }
            }
        }
    }

    fn refuse(&mut self, e: UpdateError) -> Outcome {
        let report = Report {
            kind: self.kind,
            state: State::Failed(e),
            progress: Progress::default(),
        };
        self.send_telemetry(&Self::report_values(&report));
        Outcome::Failed(e)
    }

    /// Performs one action of the machine; `Some` ends the download.
    fn act<S: Slot, C: CheckpointStore, R: ResumableReader>(
        &mut self,
        action: Action,
        up: &mut Updater<'_, R>,
        offer: &OwnedOffer,
        io: &mut Io<'_, S, C>,
    ) -> Option<Outcome> {
        let now = io.clock.now();
        // `handle_*` errors are ignored on purpose: they leave the machine FAILED, and its
        // queued FAILED report and the state check after the actions take it from there.
        match action {
            Action::RequestChunk { index, size } => self.ask_chunk(index, size),
            Action::Write { offset, .. } => match io.slot.write(offset, up.chunk_data()) {
                Ok(()) => {
                    let _ = up.handle_write_done(now);
                }
                Err(e) => {
                    tracing::warn!(error = %e, offset, "slot write failed");
                    up.handle_error(UpdateError::InstallationFailed, now);
                }
            },
            Action::ReadBack { offset, len } => {
                let Some(part) = io.back.get_mut(..len) else {
                    up.handle_error(UpdateError::InvalidState, now);
                    return None;
                };
                match io.slot.read(offset, part) {
                    Ok(()) => {
                        self.stats.read_back += len as u64;
                        let _ = up.handle_read_back(part, now);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, offset, "slot read failed");
                        up.handle_error(UpdateError::InstallationFailed, now);
                    }
                }
            }
            Action::Persist(c) => {
                if let Err(e) = io.checkpoints.save(&c.to_bytes()) {
                    tracing::warn!(error = %e, "checkpoint not saved");
                }
                let mut m = Map::new();
                m.insert(
                    format!("{}_progress", self.kind.prefix()),
                    Value::from(c.package_offset),
                );
                self.send_telemetry(&m);
            }
            Action::ClearCheckpoint => {
                if let Err(e) = io.checkpoints.clear() {
                    tracing::warn!(error = %e, "checkpoint not cleared");
                }
            }
            Action::Report(r) => self.send_telemetry(&Self::report_values(&r)),
            Action::Finalize => match io.slot.finalize() {
                Ok(()) => {
                    let _ = up.handle_finalize_done(now);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "slot finalize failed");
                    up.handle_error(UpdateError::InstallationFailed, now);
                }
            },
            Action::Reboot => {
                return Some(Outcome::Installed {
                    title: offer.title.clone(),
                    version: offer.version.clone(),
                });
            }
        }
        None
    }

    /// After the reboot into the installed slot: reports `UPDATED` with
    /// `current_fw_title`/`current_fw_version` (confirmed boot), or `FAILED` with
    /// `INSTALLATION_FAILED` (the boot loader rolled back). Delivered by [`MqttDevice::close`]
    /// at the latest.
    pub async fn report_boot(
        &mut self,
        title: &str,
        version: &str,
        confirmed: bool,
    ) -> Result<(), DeviceError> {
        // The report needs a connection: wait for one if this is a fresh process.
        while !self.link().connected {
            let _ = self.next_event(None).await?;
        }
        let m = ota_http::device::HttpDevice::boot_values(self.kind, title, version, confirmed);
        if confirmed {
            self.current = Some((title.to_owned(), version.to_owned()));
        }
        self.send_telemetry(&m);
        Ok(())
    }
}

impl Drop for MqttDevice {
    fn drop(&mut self) {
        if let Some(link) = &self.link {
            link.task.abort();
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
    use proptest::prelude::*;

    use super::{Dialect, Kind};

    proptest! {
        #[test]
        fn chunk_topics_round_trip(req in any::<u32>(), index in 0..=i32::MAX as u32, prefix in "[a-z]{1,8}/[0-9]{1,6}") {
            let tb = Dialect::ThingsBoard;
            for kind in [Kind::Firmware, Kind::Software] {
                let answer = tb.request_topic(kind, req, index).replace("/request/", "/response/");
                prop_assert_eq!(tb.chunk_answer(kind, &answer), Some((req, index)));
            }
            let relay = Dialect::Relay { prefix };
            let answer = relay.request_topic(Kind::Firmware, req, index).replace("/req/", "/res/");
            prop_assert_eq!(relay.chunk_answer(Kind::Firmware, &answer), Some((req, index)));
        }

        #[test]
        fn any_topic_is_parsed_without_panicking(topic in "\\PC{0,64}") {
            let _ = Dialect::ThingsBoard.chunk_answer(Kind::Firmware, &topic);
            let _ = Dialect::Relay { prefix: "r".into() }.chunk_answer(Kind::Firmware, &topic);
        }
    }

    #[test]
    fn chunk_answers_are_parsed_per_dialect() {
        let tb = Dialect::ThingsBoard;
        assert_eq!(
            tb.chunk_answer(Kind::Firmware, "v2/fw/response/7/chunk/3"),
            Some((7, 3))
        );
        assert_eq!(
            tb.chunk_answer(Kind::Software, "v2/fw/response/7/chunk/3"),
            None
        );
        assert_eq!(
            tb.chunk_answer(Kind::Firmware, "v2/fw/response/x/chunk/3"),
            None
        );
        assert_eq!(
            tb.chunk_answer(Kind::Firmware, "v2/fw/response/1/chunk/99999999999"),
            None
        );
        assert_eq!(tb.chunk_answer(Kind::Firmware, "v2/fw/response/1"), None);
        assert_eq!(
            tb.request_topic(Kind::Software, 2, 5),
            "v2/sw/request/2/chunk/5"
        );
        let relay = Dialect::Relay {
            prefix: "r/d1".into(),
        };
        assert_eq!(
            relay.request_topic(Kind::Firmware, 1, 0),
            "r/d1/req/1/chunk/0"
        );
        assert_eq!(
            relay.chunk_answer(Kind::Firmware, "r/d1/res/1/chunk/4"),
            Some((1, 4))
        );
        assert_eq!(
            relay.chunk_answer(Kind::Firmware, "r/d2/res/1/chunk/4"),
            None
        );
        assert_eq!(
            relay.subscriptions(Kind::Firmware),
            vec!["r/d1/res/+/chunk/+".to_owned()]
        );
    }
}
