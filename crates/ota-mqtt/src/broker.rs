//! A client connection to an external MQTT 3.1.1 broker (Mosquitto, ...), shared by the
//! dialects that publish through one: the Sming retained announce ([`crate::sming`]) and the
//! EnigmaIoT OTA stream ([`crate::enigma`]).
//!
//! The connection is `rumqttc`'s `AsyncClient`; its event loop runs in a task that forwards
//! what the dialects wait for (incoming PUBLISH, SUBACK, the QoS 2 handshake) over a channel.
//! A connection error ends the operation in progress with [`BrokerError::Connection`]; the
//! next poll reconnects.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Outgoing,
    Packet, QoS,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};

/// The largest MQTT remaining length (4 length bytes): 268,435,455 bytes.
pub const MQTT_MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Default payload limit of a connection: 16 MiB (an ESP8266 ROM slot is under 1 MiB; raise
/// [`BrokerOptions::max_payload`] up to [`MQTT_MAX_REMAINING_LENGTH`] for larger images, and
/// the broker's own limit, e.g. Mosquitto's `message_size_limit`, with it).
pub const DEFAULT_MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct BrokerOptions {
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT client id. Must be unique on the broker (a second client with the same id evicts
    /// the first); the EnigmaIoT sender appends a per-transfer suffix.
    pub client_id: String,
    /// User name and password, if the broker wants them.
    pub credentials: Option<(String, String)>,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// Largest payload this side publishes or accepts. `rumqttc` defaults to 10 KiB, too small
    /// for a Sming announce (one PUBLISH carries the whole image).
    pub max_payload: usize,
    /// How long to wait for the CONNACK, a SUBACK or the end of a QoS 2 publish.
    pub ack_timeout: Duration,
}

impl BrokerOptions {
    /// Options with defaults: 30 s keep-alive, [`DEFAULT_MAX_PAYLOAD`], 10 s acknowledgement
    /// timeout, no credentials.
    pub fn new(host: impl Into<String>, port: u16, client_id: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port,
            client_id: client_id.into(),
            credentials: None,
            keep_alive: Duration::from_secs(30),
            max_payload: DEFAULT_MAX_PAYLOAD,
            ack_timeout: Duration::from_secs(10),
        }
    }

    fn mqtt(&self, client_id: String) -> Result<MqttOptions, BrokerError> {
        if client_id.is_empty() {
            return Err(BrokerError::EmptyClientId);
        }
        if self.max_payload > MQTT_MAX_REMAINING_LENGTH {
            return Err(BrokerError::PayloadLimit {
                max_payload: self.max_payload,
            });
        }
        let mut o = MqttOptions::new(client_id, self.host.clone(), self.port);
        o.set_keep_alive(self.keep_alive.max(Duration::from_secs(5)));
        o.set_clean_session(true);
        // Fixed header (1 + 4 length bytes) + topic + packet id around the payload.
        let packet = self.max_payload.saturating_add(5 + 2 + 65_535 + 2);
        o.set_max_packet_size(packet, packet);
        if let Some((user, password)) = &self.credentials {
            o.set_credentials(user.clone(), password.clone());
        }
        Ok(o)
    }
}

/// Why talking to the broker failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The client id is empty (a clean session needs none, but brokers then invent one and
    /// the id is what tells our connections apart in the broker's log).
    #[error("empty MQTT client id")]
    EmptyClientId,
    /// [`BrokerOptions::max_payload`] exceeds what MQTT can carry.
    #[error("payload limit {max_payload} exceeds MQTT's {MQTT_MAX_REMAINING_LENGTH} bytes")]
    PayloadLimit {
        /// The configured limit.
        max_payload: usize,
    },
    /// The broker refused the connection (CONNACK return code).
    #[error("broker refused the connection: {0}")]
    Refused(String),
    /// The connection failed or broke.
    #[error("MQTT connection: {0}")]
    Connection(String),
    /// The broker refused a subscription.
    #[error("broker refused the subscription to {filter}")]
    SubscriptionRefused {
        /// The topic filter.
        filter: String,
    },
    /// An acknowledgement did not come in time.
    #[error("no {what} within {timeout:?}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// How long.
        timeout: Duration,
    },
    /// The payload is over [`BrokerOptions::max_payload`].
    #[error("payload of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Payload size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// A received PUBLISH: topic and payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
}

/// One connection with its event-loop task.
pub(crate) struct Connection {
    client: AsyncClient,
    events: mpsc::Receiver<Result<Event, ConnectionError>>,
    task: JoinHandle<()>,
    ack_timeout: Duration,
    max_payload: usize,
    sessions: Arc<AtomicU64>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Events kept for the waiting side; while nobody waits (an idle announcer) further events are
/// dropped rather than piling up, and the next QoS 2 exchange discards the stale ones.
const EVENT_BUFFER: usize = 1024;

/// Whether an event is one the dialects wait for (keep-alive traffic is not).
fn wanted(item: &Result<Event, ConnectionError>) -> bool {
    match item {
        Err(_) => true,
        Ok(Event::Incoming(p)) => matches!(
            p,
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::Publish(_) | Packet::PubComp(_)
        ),
        Ok(Event::Outgoing(o)) => matches!(o, Outgoing::Publish(_) | Outgoing::Disconnect),
    }
}

async fn drive(
    mut eventloop: EventLoop,
    tx: mpsc::Sender<Result<Event, ConnectionError>>,
    sessions: Arc<AtomicU64>,
) {
    loop {
        let item = eventloop.poll().await;
        let failed = item.is_err();
        if let Ok(Event::Incoming(Packet::ConnAck(ack))) = &item
            && ack.code == ConnectReturnCode::Success
        {
            sessions.fetch_add(1, Ordering::Relaxed);
        }
        if wanted(&item) {
            match tx.try_send(item) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
        if tx.is_closed() {
            return;
        }
        if failed {
            // rumqttc reconnects on the next poll; do not spin on a dead broker.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Connection {
    /// Connects and waits for the CONNACK.
    pub(crate) async fn open(
        options: &BrokerOptions,
        client_id: String,
    ) -> Result<Self, BrokerError> {
        let mqtt = options.mqtt(client_id)?;
        let (client, eventloop) = AsyncClient::new(mqtt, 64);
        let (tx, events) = mpsc::channel(EVENT_BUFFER);
        let sessions = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(drive(eventloop, tx, sessions.clone()));
        let mut conn = Self {
            client,
            events,
            task,
            ack_timeout: options.ack_timeout,
            max_payload: options.max_payload,
            sessions,
        };
        let deadline = Instant::now() + conn.ack_timeout;
        loop {
            if let Event::Incoming(Packet::ConnAck(ack)) =
                conn.next_event(deadline, "CONNACK").await?
            {
                if ack.code == ConnectReturnCode::Success {
                    return Ok(conn);
                }
                return Err(BrokerError::Refused(format!("{:?}", ack.code)));
            }
        }
    }

    async fn next_event(
        &mut self,
        deadline: Instant,
        what: &'static str,
    ) -> Result<Event, BrokerError> {
        match timeout_at(deadline, self.events.recv()).await {
            Err(_) => Err(BrokerError::Timeout {
                what,
                timeout: self.ack_timeout,
            }),
            Ok(None) => Err(BrokerError::Connection("event loop stopped".into())),
            Ok(Some(Err(ConnectionError::ConnectionRefused(code)))) => {
                Err(BrokerError::Refused(format!("{code:?}")))
            }
            Ok(Some(Err(e))) => Err(BrokerError::Connection(e.to_string())),
            Ok(Some(Ok(ev))) => Ok(ev),
        }
    }

    /// A counter of the accepted connections (CONNACKs) of this connection: 1 once open, one
    /// more after each reconnect. With a clean session the broker may have lost state in
    /// between (e.g. retained messages of a broker without persistence).
    pub(crate) fn sessions(&self) -> Arc<AtomicU64> {
        self.sessions.clone()
    }

    /// Subscribes and waits for the SUBACK.
    pub(crate) async fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<(), BrokerError> {
        self.client
            .subscribe(filter, qos)
            .await
            .map_err(|e| BrokerError::Connection(e.to_string()))?;
        let deadline = Instant::now() + self.ack_timeout;
        loop {
            if let Event::Incoming(Packet::SubAck(ack)) =
                self.next_event(deadline, "SUBACK").await?
            {
                return if ack
                    .return_codes
                    .iter()
                    .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)))
                {
                    Ok(())
                } else {
                    Err(BrokerError::SubscriptionRefused {
                        filter: filter.to_owned(),
                    })
                };
            }
        }
    }

    fn check_size(&self, payload: &Bytes) -> Result<(), BrokerError> {
        if payload.len() > self.max_payload {
            return Err(BrokerError::TooLarge {
                size: payload.len(),
                max: self.max_payload,
            });
        }
        Ok(())
    }

    /// Publishes at QoS 2 and waits until the broker completed the exchange (PUBCOMP).
    /// Incoming messages seen meanwhile are dropped (the announcer subscribes to nothing).
    pub(crate) async fn publish_exactly_once(
        &mut self,
        topic: &str,
        retain: bool,
        payload: Bytes,
    ) -> Result<(), BrokerError> {
        self.check_size(&payload)?;
        // What happened while nobody waited (an old error, a reconnect) is not about this call.
        while self.events.try_recv().is_ok() {}
        self.client
            .publish_bytes(topic, QoS::ExactlyOnce, retain, payload)
            .await
            .map_err(|e| BrokerError::Connection(e.to_string()))?;
        let deadline = Instant::now() + self.ack_timeout;
        let mut pkid = None;
        loop {
            match self.next_event(deadline, "PUBCOMP").await? {
                Event::Outgoing(Outgoing::Publish(id)) if pkid.is_none() => pkid = Some(id),
                Event::Incoming(Packet::PubComp(c)) if Some(c.pkid) == pkid => return Ok(()),
                _ => {}
            }
        }
    }

    /// Publishes at QoS 0 (queued to the event loop; no acknowledgement exists).
    pub(crate) async fn publish_at_most_once(
        &mut self,
        topic: &str,
        payload: Bytes,
    ) -> Result<(), BrokerError> {
        self.check_size(&payload)?;
        self.client
            .publish_bytes(topic, QoS::AtMostOnce, false, payload)
            .await
            .map_err(|e| BrokerError::Connection(e.to_string()))
    }

    /// The next incoming PUBLISH before `deadline`, or `None` when the deadline passes first.
    pub(crate) async fn next_message(
        &mut self,
        deadline: Instant,
    ) -> Result<Option<Message>, BrokerError> {
        loop {
            match self.next_event(deadline, "message").await {
                Err(BrokerError::Timeout { .. }) => return Ok(None),
                Err(e) => return Err(e),
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    return Ok(Some(Message {
                        topic: p.topic,
                        payload: p.payload,
                    }));
                }
                Ok(_) => {}
            }
        }
    }

    /// Sends DISCONNECT and gives the event loop a moment to flush queued packets.
    pub(crate) async fn close(mut self) {
        if self.client.disconnect().await.is_ok() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while let Ok(ev) = self.next_event(deadline, "DISCONNECT").await {
                if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                    break;
                }
            }
        }
    }
}

/// Why a topic level is not usable.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The level is empty.
    #[error("{what} is empty")]
    Empty {
        /// Which level.
        what: &'static str,
    },
    /// The level contains a character that is not allowed there.
    #[error("{what} {value:?} contains {found:?}, not allowed in a topic level")]
    BadChar {
        /// Which level.
        what: &'static str,
        /// The value.
        value: String,
        /// The character.
        found: char,
    },
}

/// Checks a value that is put into a topic: non-empty, no wildcards (`+`, `#`), no NUL, and
/// no `/` unless `allow_slash`.
pub(crate) fn check_level(
    what: &'static str,
    value: &str,
    allow_slash: bool,
) -> Result<(), TopicError> {
    if value.is_empty() {
        return Err(TopicError::Empty { what });
    }
    if let Some(found) = value
        .chars()
        .find(|&c| c == '+' || c == '#' || c == '\0' || (c == '/' && !allow_slash))
    {
        return Err(TopicError::BadChar {
            what,
            value: value.to_owned(),
            found,
        });
    }
    Ok(())
}
