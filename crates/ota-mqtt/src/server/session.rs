//! One device connection: CONNECT and authentication, then the packet loop, all in the
//! connection's one task (see [`super::link`] for the I/O around the protocol core).

use std::net::SocketAddr;
use std::sync::Arc;

use mqtt_protocol_core::mqtt::{
    Version,
    packet::{MaximumQos, Packet, Property, Qos, v3_1_1, v5_0},
    result_code::{
        ConnectReasonCode, ConnectReturnCode, DisconnectReasonCode, PubackReasonCode,
        SubackReasonCode, SubackReturnCode, UnsubackReasonCode,
    },
};
use ota_core::frame::thingsboard::AttributesRequest;
use ota_core::topic::{Field, Kind, RequestId, Topic, TopicError};
use ota_server::error::AttributeError;
use ota_server::model::{Device, DeviceId, OtaPackage, PackageType};
use ota_server::rules::AttributePush;
use ota_server::service::{DeviceApi, ServiceError, parse_client_attributes};
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use super::MqttConfig;
use super::link::{Closed, Link, Wire, Woke};
use crate::chunk::{RequestTable, parse_size};
use crate::filter::Filter;

/// Where shared-attribute pushes go.
const ATTRIBUTES: &str = "v1/devices/me/attributes";

/// Why a session ends early (the peer's close is just `Ok`).
#[derive(Debug)]
enum End {
    /// Close the connection; MQTT 5 sessions get a DISCONNECT with this reason first.
    Close(DisconnectReasonCode),
    /// The connection is over (or broken): write what is queued, if anything can be, and
    /// close.
    Gone,
}

impl From<Closed> for End {
    fn from(_: Closed) -> Self {
        Self::Gone
    }
}

/// ThingsBoard's OTA error texts, published on `v2/fw/error` before a disconnect.
#[derive(Clone, Copy, Debug)]
enum OtaError {
    NotFound,
    Failure,
    Unknown,
    PayloadTooLarge,
}

impl OtaError {
    const fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "NOT_FOUND",
            Self::Failure => "FAILURE",
            Self::Unknown => "UNKNOWN",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
        }
    }
}

const fn package_type(kind: Kind) -> PackageType {
    match kind {
        Kind::Firmware => PackageType::Firmware,
        Kind::Software => PackageType::Software,
    }
}

/// Runs one connection (plain TCP or an accepted TLS stream) to its end. `certificate` is
/// the SHA-256 fingerprint of the verified client certificate, if the client presented one.
///
/// Every idle connection keeps this future's state for as long as it stays connected, so it
/// is kept small: the protocol state lives in an allocation of its own, and the handshake,
/// the packet handling and the close run in boxed futures that exist only while they run
/// (an async function's arguments stay in its state for its whole life, so the handshake's
/// are handed to a boxed future here rather than to [`serve`]).
pub(super) fn run(
    wire: Wire,
    peer: SocketAddr,
    certificate: Option<String>,
    api: Arc<dyn DeviceApi>,
    config: Arc<MqttConfig>,
) -> impl Future<Output = ()> + Send {
    let link = Box::new(Link::new(wire, config.max_packet_size, config.max_inflight));
    let hello = Box::pin(greet(link, peer, certificate, api.clone(), config.clone()));
    serve(hello, api, config)
}

/// The handshake over an owned link, which it hands back.
async fn greet(
    mut link: Box<Link>,
    peer: SocketAddr,
    certificate: Option<String>,
    api: Arc<dyn DeviceApi>,
    config: Arc<MqttConfig>,
) -> (Box<Link>, Result<(String, DeviceId, bool), End>) {
    let r = handshake(&mut link, peer, certificate, api.as_ref(), &config).await;
    (link, r)
}

/// The session after `hello`, then the close.
async fn serve(
    hello: impl Future<Output = (Box<Link>, Result<(String, DeviceId, bool), End>)>,
    api: Arc<dyn DeviceApi>,
    config: Arc<MqttConfig>,
) {
    let (mut link, hello) = hello.await;
    let end = match hello {
        Ok((token, device, v5)) => {
            let mut s = Session {
                events: api.subscribe(device),
                link: &mut link,
                api,
                requests: RequestTable::new(config.max_request_ids),
                config,
                token,
                device,
                v5,
                subs: Vec::new(),
                inflight: 0,
                resync: false,
            };
            s.run().await
        }
        Err(end) => Err(end),
    };
    if let Err(End::Close(reason)) = end
        && link.version() == Version::V5_0
        && let Ok(d) = v5_0::Disconnect::builder().reason_code(reason).build()
    {
        let _ = link.send(d);
    }
    Box::pin(link.close()).await;
}

/// Waits for CONNECT, authenticates and answers CONNACK; returns the credentials that
/// matched, the device's id and whether the session speaks MQTT 5.
async fn handshake(
    link: &mut Link,
    peer: SocketAddr,
    certificate: Option<String>,
    api: &dyn DeviceApi,
    config: &MqttConfig,
) -> Result<(String, DeviceId, bool), End> {
    let first = tokio::time::timeout(config.connect_timeout, async {
        loop {
            if let Some(p) = link.next_pending()? {
                return Ok::<_, Closed>(p);
            }
            link.flush().await?;
            if let Woke::Link(r) = link.fill_or(std::future::pending::<()>()).await {
                r?;
            }
        }
    })
    .await
    .map_err(|_| End::Gone)??;
    let (v5, user) = match first {
        Packet::V3_1_1Connect(c) => (false, c.user_name().map(str::to_owned)),
        Packet::V5_0Connect(c) => (true, c.user_name().map(str::to_owned)),
        _ => return Err(End::Gone),
    };
    let user = user.filter(|u| !u.is_empty());
    let outcome = authenticate(api, peer, certificate, user).await;
    let (reason, code) = match &outcome {
        Ok(_) => (ConnectReasonCode::Success, ConnectReturnCode::Accepted),
        Err(codes) => *codes,
    };
    if v5 {
        let mut b = v5_0::Connack::builder()
            .session_present(false)
            .reason_code(reason);
        if outcome.is_ok()
            && let Ok(q) = MaximumQos::new(1)
        {
            b = b.props(vec![Property::MaximumQos(q)]);
        }
        link.send(b.build().map_err(|_| End::Gone)?)?;
    } else {
        let c = v3_1_1::Connack::builder()
            .session_present(false)
            .return_code(code)
            .build()
            .map_err(|_| End::Gone)?;
        link.send(c)?;
    }
    let Ok((token, device)) = outcome else {
        tracing::debug!(%peer, "MQTT connection refused: bad credentials");
        return Err(End::Gone);
    };
    tracing::debug!(%peer, device = %device.id, v5, "MQTT device connected");
    Ok((token, device.id, v5))
}

type Refusal = (ConnectReasonCode, ConnectReturnCode);

/// Finds the device of a connection: the verified client certificate's fingerprint when it
/// is a device's credentials (ThingsBoard's X.509 mode), else the user name as access token.
/// Returns the credentials that matched and the device.
async fn authenticate(
    api: &dyn DeviceApi,
    peer: SocketAddr,
    certificate: Option<String>,
    user: Option<String>,
) -> Result<(String, Device), Refusal> {
    let unavailable = |e: ServiceError| {
        tracing::warn!(%peer, error = %e, "MQTT authentication failed");
        (
            ConnectReasonCode::ServerUnavailable,
            ConnectReturnCode::ServerUnavailable,
        )
    };
    if let Some(fingerprint) = certificate
        && let Some(device) = api.authenticate(&fingerprint).await.map_err(unavailable)?
    {
        return Ok((fingerprint, device));
    }
    // ThingsBoard falls back to MQTT-basic credentials keyed by client id, which this server
    // does not have: the same refusal it gives when those are missing.
    let Some(token) = user else {
        return Err((
            ConnectReasonCode::ClientIdentifierNotValid,
            ConnectReturnCode::IdentifierRejected,
        ));
    };
    match api.authenticate(&token).await.map_err(unavailable)? {
        Some(device) => Ok((token, device)),
        None => Err((
            ConnectReasonCode::BadUserNameOrPassword,
            ConnectReturnCode::NotAuthorized,
        )),
    }
}

struct Session<'a> {
    link: &'a mut Link,
    api: Arc<dyn DeviceApi>,
    config: Arc<MqttConfig>,
    token: String,
    /// The device; its row is read again (through the service's lookup cache) when a
    /// request needs it, so an idle session holds no copy.
    device: DeviceId,
    v5: bool,
    /// Subscriptions in registration order, with the granted QoS (at most
    /// `max_subscriptions`).
    subs: Vec<(Filter, Qos)>,
    requests: RequestTable,
    /// Our QoS 1 publishes not yet acknowledged.
    inflight: u16,
    /// Assignment events were missed: push the current attributes.
    resync: bool,
    /// The device's assignment events.
    events: broadcast::Receiver<ota_server::events::AssignmentEvent>,
}

/// What a received PUBLISH carries.
struct Incoming<'a> {
    topic: &'a str,
    payload: &'a [u8],
    qos: Qos,
    packet_id: Option<u16>,
}

impl Session<'_> {
    async fn run(&mut self) -> Result<(), End> {
        loop {
            // Boxed: handling packets awaits the service and the socket, and those futures
            // would otherwise sit inline in every idle session's state.
            if !Box::pin(self.drain()).await? {
                return Ok(());
            }
            let woke = {
                let event = std::pin::pin!(self.events.recv());
                self.link.fill_or(event).await
            };
            match woke {
                Woke::Link(r) => r?,
                Woke::Other(Ok(e)) => self.push(&e.pushes)?,
                Woke::Other(Err(broadcast::error::RecvError::Lagged(_))) => {
                    // The current attributes replace every missed and queued event.
                    self.events = self.events.resubscribe();
                    self.resync = true;
                }
                Woke::Other(Err(broadcast::error::RecvError::Closed)) => {
                    self.events = self.api.subscribe(self.device);
                }
            }
        }
    }

    /// Handles what arrived since the last wait (packets, or missed assignment events) and
    /// writes the answers; `Ok(false)` when the device disconnected.
    async fn drain(&mut self) -> Result<bool, End> {
        if std::mem::take(&mut self.resync) {
            self.push_current().await?;
        }
        while let Some(p) = self.link.next_pending()? {
            if !self.packet(p).await? {
                return Ok(false);
            }
            if self.link.should_flush() {
                self.link.flush().await?;
            }
        }
        self.link.flush().await?;
        Ok(true)
    }

    /// Handles one packet; `Ok(false)` when the device disconnected.
    async fn packet(&mut self, p: Packet) -> Result<bool, End> {
        match p {
            Packet::V3_1_1Publish(p) => {
                let packet_id = p.packet_id();
                self.publish_in(Incoming {
                    topic: p.topic_name(),
                    payload: p.payload().as_slice(),
                    qos: p.qos(),
                    packet_id,
                })
                .await?;
            }
            Packet::V5_0Publish(p) => {
                let packet_id = p.packet_id();
                self.publish_in(Incoming {
                    topic: p.topic_name(),
                    payload: p.payload().as_slice(),
                    qos: p.qos(),
                    packet_id,
                })
                .await?;
            }
            Packet::V3_1_1Puback(_) | Packet::V5_0Puback(_) => {
                self.inflight = self.inflight.saturating_sub(1);
            }
            Packet::V3_1_1Subscribe(s) => self.subscribe_v3(&s).await?,
            Packet::V5_0Subscribe(s) => self.subscribe_v5(&s).await?,
            Packet::V3_1_1Unsubscribe(u) => {
                for f in u.entries() {
                    self.unsubscribe(f.as_str());
                }
                let ack = v3_1_1::Unsuback::builder()
                    .packet_id(u.packet_id())
                    .build()
                    .map_err(|_| End::Close(DisconnectReasonCode::ProtocolError))?;
                self.link.send(ack)?;
            }
            Packet::V5_0Unsubscribe(u) => {
                let codes = u
                    .entries()
                    .iter()
                    .map(|f| {
                        if self.unsubscribe(f.as_str()) {
                            UnsubackReasonCode::Success
                        } else {
                            UnsubackReasonCode::NoSubscriptionExisted
                        }
                    })
                    .collect();
                let ack = v5_0::Unsuback::builder()
                    .packet_id(u.packet_id())
                    .reason_codes(codes)
                    .build()
                    .map_err(|_| End::Close(DisconnectReasonCode::ProtocolError))?;
                self.link.send(ack)?;
            }
            Packet::V3_1_1Disconnect(_) | Packet::V5_0Disconnect(_) => return Ok(false),
            // Keep-alive is answered by the endpoint.
            Packet::V3_1_1Pingreq(_) | Packet::V5_0Pingreq(_) => {}
            // A second CONNECT, QoS 2 flows (the CONNACK grants QoS ≤ 1), AUTH, or a packet
            // only a server sends.
            _ => return Err(End::Close(DisconnectReasonCode::ProtocolError)),
        }
        Ok(true)
    }

    async fn subscribe_v3(&mut self, s: &v3_1_1::Subscribe) -> Result<(), End> {
        let requested: Vec<_> = s
            .entries()
            .iter()
            .map(|e| (e.topic_filter().to_owned(), e.sub_opts().qos()))
            .collect();
        let granted = self.subscribe(&requested);
        let codes = granted
            .iter()
            .map(|g| match g {
                Some(Qos::AtMostOnce) => SubackReturnCode::SuccessMaximumQos0,
                Some(_) => SubackReturnCode::SuccessMaximumQos1,
                None => SubackReturnCode::Failure,
            })
            .collect();
        let ack = v3_1_1::Suback::builder()
            .packet_id(s.packet_id())
            .return_codes(codes)
            .build()
            .map_err(|_| End::Close(DisconnectReasonCode::ProtocolError))?;
        self.link.send(ack)?;
        self.after_subscribe(&granted, &requested).await
    }

    async fn subscribe_v5(&mut self, s: &v5_0::Subscribe) -> Result<(), End> {
        let requested: Vec<_> = s
            .entries()
            .iter()
            .map(|e| (e.topic_filter().to_owned(), e.sub_opts().qos()))
            .collect();
        let granted = self.subscribe(&requested);
        let codes = granted
            .iter()
            .map(|g| match g {
                Some(Qos::AtMostOnce) => SubackReasonCode::GrantedQos0,
                Some(_) => SubackReasonCode::GrantedQos1,
                None => SubackReasonCode::TopicFilterInvalid,
            })
            .collect();
        let ack = v5_0::Suback::builder()
            .packet_id(s.packet_id())
            .reason_codes(codes)
            .build()
            .map_err(|_| End::Close(DisconnectReasonCode::ProtocolError))?;
        self.link.send(ack)?;
        self.after_subscribe(&granted, &requested).await
    }

    /// Registers the filters (up to `max_subscriptions` per session); returns the granted
    /// QoS per requested filter (`None` = refused).
    fn subscribe(&mut self, requested: &[(String, Qos)]) -> Vec<Option<Qos>> {
        let granted = requested
            .iter()
            .map(|(text, qos)| {
                let filter = Filter::parse(text).ok()?;
                let granted = if *qos == Qos::AtMostOnce {
                    Qos::AtMostOnce
                } else {
                    Qos::AtLeastOnce
                };
                let full = self.subs.len() >= self.config.max_subscriptions;
                match self.subs.iter_mut().find(|(f, _)| *f == filter) {
                    Some(entry) => entry.1 = granted,
                    None if full => return None,
                    None => self.subs.push((filter, granted)),
                }
                Some(granted)
            })
            .collect();
        // Held for the whole connection: no spare capacity.
        self.subs.shrink_to_fit();
        granted
    }

    fn unsubscribe(&mut self, text: &str) -> bool {
        let before = self.subs.len();
        self.subs.retain(|(f, _)| f.as_str() != text);
        self.subs.shrink_to_fit();
        self.subs.len() != before
    }

    async fn after_subscribe(
        &mut self,
        granted: &[Option<Qos>],
        requested: &[(String, Qos)],
    ) -> Result<(), End> {
        let attributes = granted.iter().zip(requested).any(|(g, (text, _))| {
            g.is_some() && Filter::parse(text).is_ok_and(|f| f.matches(ATTRIBUTES))
        });
        if attributes && self.config.push_on_subscribe {
            self.push_current().await?;
        }
        Ok(())
    }

    /// QoS of a server publish: that of the first subscription matching the topic, else 1
    /// (so chunk responses reach sessions that never subscribed to them).
    fn qos_for(&self, topic: &str) -> Qos {
        self.subs
            .iter()
            .find(|(f, _)| f.matches(topic))
            .map_or(Qos::AtLeastOnce, |(_, q)| *q)
    }

    /// Whether the session asked for attribute pushes.
    fn wants_pushes(&self) -> bool {
        self.subs.iter().any(|(f, _)| f.matches(ATTRIBUTES))
    }

    /// Publishes `payload` on `topic` to this session only.
    fn send(&mut self, topic: &Topic<'_>, payload: Vec<u8>) -> Result<(), End> {
        let name = topic.to_string();
        let qos = self.qos_for(&name);
        let packet_id = if qos == Qos::AtMostOnce {
            None
        } else {
            if self.inflight >= self.config.max_inflight || self.link.send_vacancy() == Some(0) {
                tracing::debug!(device = %self.device, "MQTT device does not acknowledge; closing");
                return Err(End::Close(DisconnectReasonCode::ReceiveMaximumExceeded));
            }
            self.inflight += 1;
            Some(self.link.acquire_packet_id()?)
        };
        let bad = |_| End::Close(DisconnectReasonCode::ImplementationSpecificError);
        if self.v5 {
            let b = v5_0::Publish::builder()
                .topic_name(name)
                .map_err(bad)?
                .qos(qos)
                .payload(payload);
            let b = match packet_id {
                Some(id) => b.packet_id(id),
                None => b,
            };
            self.link.send(b.build().map_err(bad)?)?;
        } else {
            let b = v3_1_1::Publish::builder()
                .topic_name(name)
                .map_err(bad)?
                .qos(qos)
                .payload(payload);
            let b = match packet_id {
                Some(id) => b.packet_id(id),
                None => b,
            };
            self.link.send(b.build().map_err(bad)?)?;
        }
        Ok(())
    }

    /// Acknowledges a QoS 1 PUBLISH (MQTT 3.1.1 has no reason code).
    fn puback(&mut self, packet_id: Option<u16>, reason: PubackReasonCode) -> Result<(), End> {
        let Some(id) = packet_id else {
            return Ok(());
        };
        if self.v5 {
            let mut b = v5_0::Puback::builder().packet_id(id);
            if reason != PubackReasonCode::Success {
                b = b.reason_code(reason);
            }
            self.link.send(b.build().map_err(|_| End::Gone)?)?;
        } else {
            let ack = v3_1_1::Puback::builder()
                .packet_id(id)
                .build()
                .map_err(|_| End::Gone)?;
            self.link.send(ack)?;
        }
        Ok(())
    }

    /// A payload ThingsBoard could not parse: MQTT 5 gets PUBACK 0x99, MQTT 3.1.1 is
    /// disconnected.
    fn bad_payload(&mut self, m: &Incoming<'_>, what: &str) -> Result<(), End> {
        tracing::debug!(device = %self.device, topic = m.topic, "malformed {what}");
        if self.v5 {
            self.puback(m.packet_id, PubackReasonCode::PayloadFormatInvalid)
        } else {
            Err(End::Close(DisconnectReasonCode::PayloadFormatInvalid))
        }
    }

    /// Publishes an OTA error (always on `v2/fw/error`, as ThingsBoard does) and closes.
    fn ota_error(&mut self, e: OtaError, close: DisconnectReasonCode) -> End {
        let topic = Topic::OtaError {
            kind: Kind::Firmware,
        };
        match self.send(&topic, e.as_str().as_bytes().to_vec()) {
            Ok(()) => End::Close(close),
            Err(end) => end,
        }
    }

    /// The device as stored now (its own package may have changed since CONNECT).
    async fn fresh_device(&self) -> Result<Option<Device>, ServiceError> {
        self.api.authenticate(&self.token).await
    }

    /// The device as stored now, or the end of a session whose device is gone.
    async fn current_device(&self) -> Result<Device, End> {
        match self.fresh_device().await {
            Ok(Some(d)) => Ok(d),
            Ok(None) => Err(End::Close(DisconnectReasonCode::NotAuthorized)),
            Err(e) => {
                tracing::warn!(device = %self.device, error = %e, "reading the device failed");
                Err(End::Close(
                    DisconnectReasonCode::ImplementationSpecificError,
                ))
            }
        }
    }

    async fn publish_in(&mut self, m: Incoming<'_>) -> Result<(), End> {
        if m.qos == Qos::ExactlyOnce {
            return Err(End::Close(DisconnectReasonCode::QosNotSupported));
        }
        match Topic::parse(m.topic) {
            Ok(Topic::Telemetry) => self.telemetry(&m).await,
            Ok(Topic::Attributes) => self.client_attributes(&m).await,
            Ok(Topic::AttributesRequest { id }) => self.attributes_request(&m, id).await,
            Ok(Topic::RpcRequest { id }) => self.rpc(&m, id),
            Ok(Topic::ChunkRequest {
                kind,
                request_id,
                chunk,
            }) => self.chunk(&m, kind, request_id, chunk).await,
            // ThingsBoard's handler throws on an int32 overflow in a topic number and the
            // connection closes.
            Err(TopicError::Overflow {
                field: Field::Chunk | Field::AttributeRequestId | Field::RpcRequestId,
                ..
            }) => Err(End::Close(DisconnectReasonCode::ServerShuttingDown)),
            _ => {
                tracing::debug!(device = %self.device, topic = m.topic, "publish to an unknown topic");
                self.puback(m.packet_id, PubackReasonCode::TopicNameInvalid)
            }
        }
    }

    async fn telemetry(&mut self, m: &Incoming<'_>) -> Result<(), End> {
        // The whole flat object goes to the service (it also reads keys such as
        // `fw_progress` that the device-side record type does not carry).
        let Ok(body) = serde_json::from_slice::<Value>(m.payload) else {
            return self.bad_payload(m, "telemetry");
        };
        let Some(records) = telemetry_records(&body) else {
            return self.bad_payload(m, "telemetry");
        };
        let device = self.current_device().await?;
        for values in records {
            if let Err(e) = self.api.record_telemetry(&device, values).await {
                tracing::warn!(device = %self.device, error = %e, "recording telemetry failed");
            }
        }
        self.puback(m.packet_id, PubackReasonCode::Success)
    }

    /// `v1/devices/me/attributes`: client attributes, one JSON object merged into the
    /// stored ones. A payload that is not a JSON object is malformed (MQTT 5 PUBACK `0x99`,
    /// MQTT 3.1.1 disconnect, as ThingsBoard does); over a limit is the same, except too many
    /// keys, which MQTT 5 answers with `0x97` (quota exceeded). Nothing of a refused payload
    /// is stored.
    async fn client_attributes(&mut self, m: &Incoming<'_>) -> Result<(), End> {
        let Ok(attributes) = parse_client_attributes(m.payload) else {
            return self.bad_payload(m, "client attributes");
        };
        let device = self.current_device().await?;
        match self
            .api
            .record_client_attributes(&device, &attributes)
            .await
        {
            Ok(()) => self.puback(m.packet_id, PubackReasonCode::Success),
            // A device API without attribute storage: accepted and not stored.
            Err(ServiceError::Attributes(AttributeError::Unsupported)) => {
                self.puback(m.packet_id, PubackReasonCode::Success)
            }
            Err(ServiceError::Attributes(e @ AttributeError::TooManyKeys { .. })) if self.v5 => {
                tracing::debug!(device = %self.device, error = %e, "client attributes refused");
                self.puback(m.packet_id, PubackReasonCode::QuotaExceeded)
            }
            Err(ServiceError::Attributes(e)) => {
                tracing::debug!(device = %self.device, error = %e, "client attributes refused");
                self.bad_payload(m, "client attributes")
            }
            Err(e) => {
                tracing::warn!(device = %self.device, error = %e, "recording client attributes failed");
                let reason = if self.v5 {
                    PubackReasonCode::ImplementationSpecificError
                } else {
                    PubackReasonCode::Success
                };
                self.puback(m.packet_id, reason)
            }
        }
    }

    /// `v1/devices/me/attributes/request/{id}` → `v1/devices/me/attributes/response/{id}`
    /// with `{"client":{…},"shared":{…}}`, an empty section left out (`{}` when nothing is
    /// found). As ThingsBoard's `DeviceActorMessageProcessor.handleGetAttributesRequest`:
    /// neither `clientKeys` nor `sharedKeys` selects every attribute of both scopes; keys
    /// of one scope only select none of the other.
    async fn attributes_request(&mut self, m: &Incoming<'_>, id: u32) -> Result<(), End> {
        let Ok(req) = AttributesRequest::parse(m.payload) else {
            return self.bad_payload(m, "attribute request");
        };
        let device = match self.fresh_device().await {
            Ok(Some(d)) => d,
            Ok(None) => return Err(End::Close(DisconnectReasonCode::NotAuthorized)),
            Err(e) => {
                tracing::warn!(device = %self.device, error = %e, "reading attributes failed");
                return Err(End::Close(
                    DisconnectReasonCode::ImplementationSpecificError,
                ));
            }
        };
        let client_keys: Option<Vec<String>> = req
            .client_keys
            .is_some()
            .then(|| req.client().map(str::to_owned).collect());
        let read = async {
            let all = self.api.shared_attributes(&device).await?;
            let client = match (&client_keys, req.shared_keys) {
                (Some(wanted), _) => self.api.client_attributes(&device, Some(wanted)).await?,
                (None, Some(_)) => Map::new(),
                (None, None) => self.api.client_attributes(&device, None).await?,
            };
            Ok::<_, ServiceError>((all, client))
        };
        let (all, client) = match read.await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(device = %self.device, error = %e, "reading attributes failed");
                return Err(End::Close(
                    DisconnectReasonCode::ImplementationSpecificError,
                ));
            }
        };
        let shared: Map<String, Value> = match (req.shared_keys, req.client_keys) {
            (Some(_), _) => {
                let wanted: Vec<&str> = req.shared().collect();
                all.into_iter()
                    .filter(|(k, _)| wanted.contains(&k.as_str()))
                    .collect()
            }
            (None, Some(_)) => Map::new(),
            (None, None) => all,
        };
        let mut body = Map::new();
        if !client.is_empty() {
            body.insert("client".into(), Value::Object(client));
        }
        if !shared.is_empty() {
            body.insert("shared".into(), Value::Object(shared));
        }
        self.puback(m.packet_id, PubackReasonCode::Success)?;
        let payload = Value::Object(body).to_string().into_bytes();
        self.send(&Topic::AttributesResponse { id }, payload)
    }

    fn rpc(&mut self, m: &Incoming<'_>, id: u32) -> Result<(), End> {
        let Ok(call) = serde_json::from_slice::<Value>(m.payload) else {
            return self.bad_payload(m, "RPC request");
        };
        self.puback(m.packet_id, PubackReasonCode::Success)?;
        if call.get("method").and_then(Value::as_str) != Some("getSessionLimits") {
            // ThingsBoard hands other device RPCs to its rule engine; nothing answers here.
            return Ok(());
        }
        let limits = &self.config.rate_limits;
        let answer = serde_json::json!({
            "maxPayloadSize": self.config.max_packet_size,
            "maxInflightMessages": self.config.max_inflight,
            "rateLimits": {
                "messages": limits.messages,
                "telemetryMessages": limits.telemetry_messages,
                "telemetryDataPoints": limits.telemetry_data_points,
            }
        });
        self.send(&Topic::RpcResponse { id }, answer.to_string().into_bytes())
    }

    /// `v2/fw|sw/request/{reqId}/chunk/{n}` with ThingsBoard's exact rules (reference §3).
    async fn chunk(
        &mut self,
        m: &Incoming<'_>,
        kind: Kind,
        request_id: RequestId<'_>,
        chunk: u32,
    ) -> Result<(), End> {
        let requested = match parse_size(m.payload) {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(device = %self.device, error = %e, "bad chunk size");
                return Err(End::Close(DisconnectReasonCode::ServerShuttingDown));
            }
        };
        let size = self.requests.effective_size(request_id.as_str(), requested);
        if size > self.config.max_chunk_size {
            return Err(self.ota_error(
                OtaError::PayloadTooLarge,
                DisconnectReasonCode::ImplementationSpecificError,
            ));
        }
        let cached = self.requests.entry(request_id.as_str()).package.clone();
        let package = if let Some(p) = cached {
            p
        } else {
            let package = self.resolve(kind).await?;
            self.requests.entry(request_id.as_str()).package = Some(package.clone());
            package
        };
        self.puback(m.packet_id, PubackReasonCode::Success)?;
        let bytes = match self.api.read_chunk(&package, u64::from(chunk), size).await {
            Ok(b) => b,
            Err(ServiceError::NoStoredData { .. }) => {
                return Err(self.ota_error(
                    OtaError::Failure,
                    DisconnectReasonCode::ImplementationSpecificError,
                ));
            }
            Err(e) => {
                tracing::warn!(device = %self.device, error = %e, "reading a chunk failed");
                return Err(End::Close(
                    DisconnectReasonCode::ImplementationSpecificError,
                ));
            }
        };
        let topic = Topic::ChunkResponse {
            kind,
            request_id,
            chunk,
        };
        self.send(&topic, bytes.to_vec())
    }

    /// The package a new request id serves: the one assigned now.
    async fn resolve(&mut self, kind: Kind) -> Result<Arc<OtaPackage>, End> {
        let shutdown = DisconnectReasonCode::ImplementationSpecificError;
        let device = match self.fresh_device().await {
            Ok(Some(d)) => d,
            Ok(None) => return Err(self.ota_error(OtaError::Unknown, shutdown)),
            Err(e) => {
                tracing::warn!(device = %self.device, error = %e, "reading the device failed");
                return Err(End::Close(shutdown));
            }
        };
        match self.api.assigned_package(&device, package_type(kind)).await {
            Ok(Some(p)) if p.has_data() => Ok(Arc::new(p)),
            Ok(Some(_)) => Err(self.ota_error(OtaError::Failure, shutdown)),
            Ok(None) => Err(self.ota_error(OtaError::NotFound, shutdown)),
            Err(e) => {
                tracing::warn!(device = %self.device, error = %e, "resolving the package failed");
                Err(End::Close(shutdown))
            }
        }
    }

    /// Pushes one assignment change (ThingsBoard order: deletions first), if the session
    /// subscribed to `v1/devices/me/attributes`.
    fn push(&mut self, pushes: &[AttributePush]) -> Result<(), End> {
        if !self.wants_pushes() {
            return Ok(());
        }
        for p in pushes {
            if matches!(p, AttributePush::Deleted(keys) if keys.is_empty()) {
                continue;
            }
            self.send(&Topic::Attributes, p.to_json().to_string().into_bytes())?;
        }
        Ok(())
    }

    /// Pushes the current attributes (after missed events, or on subscribe when enabled).
    async fn push_current(&mut self) -> Result<(), End> {
        if !self.wants_pushes() {
            return Ok(());
        }
        let all = match self.fresh_device().await {
            Ok(Some(d)) => self.api.shared_attributes(&d).await,
            Ok(None) => return Err(End::Close(DisconnectReasonCode::NotAuthorized)),
            Err(e) => Err(e),
        };
        match all {
            Ok(all) if all.is_empty() => Ok(()),
            Ok(all) => self.send(
                &Topic::Attributes,
                Value::Object(all).to_string().into_bytes(),
            ),
            Err(e) => {
                tracing::warn!(device = %self.device, error = %e, "reading attributes failed");
                Ok(())
            }
        }
    }
}

/// The flat value objects of a telemetry payload: `{k:v}`, `{"ts":…,"values":{…}}`, or an
/// array of either; `None` if any element is not an object.
pub(super) fn telemetry_records(body: &Value) -> Option<Vec<&Map<String, Value>>> {
    fn one(v: &Value) -> Option<&Map<String, Value>> {
        let m = v.as_object()?;
        match (m.get("ts"), m.get("values")) {
            (Some(_), Some(Value::Object(values))) => Some(values),
            _ => Some(m),
        }
    }
    match body {
        Value::Array(items) => items.iter().map(one).collect(),
        v => one(v).map(|m| vec![m]),
    }
}

#[cfg(test)]
mod tests {
    use super::telemetry_records;
    use serde_json::json;

    #[test]
    fn telemetry_shapes() {
        let flat = json!({"fw_state": "DOWNLOADING"});
        assert_eq!(
            telemetry_records(&flat),
            Some(vec![flat.as_object().unwrap()])
        );
        let ts = json!({"ts": 1, "values": {"fw_state": "UPDATED"}});
        let values = json!({"fw_state": "UPDATED"});
        assert_eq!(
            telemetry_records(&ts),
            Some(vec![values.as_object().unwrap()])
        );
        let arr = json!([{"a": 1}, {"ts": 2, "values": {"b": 2}}]);
        assert_eq!(telemetry_records(&arr).map(|r| r.len()), Some(2));
        assert_eq!(telemetry_records(&json!([1])), None);
        assert_eq!(telemetry_records(&json!("x")), None);
    }
}
