//! The CoAP server: ThingsBoard's CoAP device API over any [`DeviceApi`].
//!
//! One tokio task reads the socket. Datagrams that need no service call (malformed ones,
//! pings, responses, bad options) are answered or dropped inline; requests are checked
//! against the duplicate cache and answered by a spawned task, with at most
//! [`ServerConfig::max_in_flight`] such tasks in total and
//! [`ServerConfig::max_in_flight_per_peer`] per source address (excess requests are dropped:
//! a confirmable client retransmits).
//!
//! Block-wise transfer (RFC 7959 Block2) is stateless: the block number and size come from
//! the request, the block is a zero-copy slice of the chunk the service returns, and the
//! response carries `M` and `Size2`. Nothing of a body is kept between requests, unlike
//! `coap-lite`'s `BlockHandler`, which caches whole bodies per exchange (megabytes per
//! device for firmware images).
//!
//! Differences from ThingsBoard (Californium), all deliberate:
//! * Answers to confirmable requests are piggybacked on the ACK instead of an empty ACK
//!   followed by a separate response: one datagram instead of three.
//! * A chunk past the end of the package gets an empty `2.05 Content`. ThingsBoard sends
//!   nothing after the empty ACK and lets the client time out, which costs the device its
//!   retry budget for a question that has a plain answer.
//! * Non-numeric `size`/`chunk` get `4.00` with a diagnostic payload (ThingsBoard throws
//!   in its callback and never answers).
//! * A Block2 request for a block past the end of the body gets `4.02 Bad Option`
//!   (ThingsBoard answers the whole body labelled as that block).

mod dedup;
mod fuzz;
pub mod query;

pub use fuzz::fuzz_check;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use coap_lite::{
    CoapOption, ContentFormat, MessageClass, MessageType, Packet, RequestType, ResponseType,
};
use ota_server::error::AttributeError;
use ota_server::model::{DeviceId, PackageType};
use ota_server::service::{DeviceApi, ServiceError, parse_client_attributes};
use serde_json::{Map, Value};
use tokio::net::UdpSocket;

use crate::block::{Block, BlockError, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE};
use dedup::{Dedup, Seen};
use query::DownloadQuery;

/// Tunables of the server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest block the server sends (16…1024, a power of two): larger client requests
    /// are answered with this size, and bodies above it start a block-wise transfer.
    pub max_block_size: u16,
    /// Exchanges remembered for duplicate detection, in total.
    pub dedup_capacity: usize,
    /// Exchanges remembered per source address.
    pub dedup_per_peer: usize,
    /// How long an exchange is remembered (RFC 7252 EXCHANGE_LIFETIME).
    pub exchange_lifetime: Duration,
    /// Requests being answered at once, in total.
    pub max_in_flight: usize,
    /// Requests being answered at once per source address.
    pub max_in_flight_per_peer: usize,
    /// Attribute observations (RFC 7641) held at once, in total.
    pub max_observers: usize,
    /// Attribute observations held at once per source address.
    pub max_observers_per_peer: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_block_size: MAX_BLOCK_SIZE,
            dedup_capacity: 16_384,
            dedup_per_peer: 32,
            exchange_lifetime: Duration::from_secs(247),
            max_in_flight: 512,
            max_in_flight_per_peer: 8,
            max_observers: 4096,
            max_observers_per_peer: 4,
        }
    }
}

/// A response before encoding.
#[derive(Clone, Debug, PartialEq)]
struct Reply {
    code: ResponseType,
    payload: Bytes,
    block2: Option<Block>,
    size2: Option<u64>,
    format: Option<ContentFormat>,
    /// Observe option value of a notification.
    observe: Option<u32>,
    /// What the serve loop must do about an observation after sending this.
    watch: Watch,
}

/// Observation bookkeeping asked of the serve loop (RFC 7641).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Watch {
    None,
    /// Start notifying this device's attribute changes to the requester.
    Register(DeviceId),
    /// Stop notifying the requester (same token).
    Deregister,
}

impl Reply {
    fn status(code: ResponseType) -> Self {
        Self {
            code,
            payload: Bytes::new(),
            block2: None,
            size2: None,
            format: None,
            observe: None,
            watch: Watch::None,
        }
    }

    /// An error with a diagnostic payload (RFC 7252 §5.5.2).
    fn error(code: ResponseType, why: impl std::fmt::Display) -> Self {
        Self {
            payload: Bytes::from(why.to_string()),
            ..Self::status(code)
        }
    }
}

/// A request that needs the service, parsed and checked.
#[derive(Debug)]
struct Request {
    packet: Packet,
    method: RequestType,
    block2: Option<Block>,
}

/// What to do with a datagram, decided without the service.
#[derive(Debug)]
enum Classified {
    Drop,
    Reply(Vec<u8>),
    Request(Request),
}

const TYPE_CON: u8 = 0;
const TYPE_NON: u8 = 1;

/// Options we act on or may safely ignore; any other critical (odd) option gets 4.02.
const KNOWN_CRITICAL: [u16; 5] = [3, 7, 11, 15, 17];

fn reset(mid: u16) -> Vec<u8> {
    let [hi, lo] = mid.to_be_bytes();
    // Version 1, type RST (3), no token, code 0.00.
    vec![0x70, 0x00, hi, lo]
}

/// Builds the response datagram for `request` (ACK for CON, NON with `next_mid` for NON).
fn encode(request: &Packet, reply: &Reply, next_mid: u16) -> Option<Vec<u8>> {
    let mut p = Packet::new();
    if request.header.get_type() == MessageType::Confirmable {
        p.header.set_type(MessageType::Acknowledgement);
        p.header.message_id = request.header.message_id;
    } else {
        p.header.set_type(MessageType::NonConfirmable);
        p.header.message_id = next_mid;
    }
    p.header.code = MessageClass::Response(reply.code);
    p.set_token(request.get_token().to_vec());
    if let Some(f) = reply.format {
        p.set_content_format(f);
    }
    if let Some(b) = reply.block2 {
        p.add_option(CoapOption::Block2, b.encode());
    }
    if let Some(s) = reply.size2 {
        p.add_option(CoapOption::Size2, uint(s));
    }
    if let Some(o) = reply.observe {
        p.add_option(CoapOption::Observe, uint(u64::from(o)));
    }
    p.payload = reply.payload.to_vec();
    match p.to_bytes() {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            tracing::warn!(error = ?e, "cannot encode a CoAP response");
            None
        }
    }
}

/// A CoAP uint option value: big-endian, no leading zero bytes.
fn uint(v: u64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes.get(skip..).unwrap_or_default().to_vec()
}

/// Decides what a datagram needs, without the service.
fn classify(datagram: &[u8]) -> Classified {
    let (Some(&first), Some(&code), Some(&hi), Some(&lo)) = (
        datagram.first(),
        datagram.get(1),
        datagram.get(2),
        datagram.get(3),
    ) else {
        return Classified::Drop;
    };
    if first >> 6 != 1 {
        // RFC 7252 §3: unknown version numbers are silently ignored.
        return Classified::Drop;
    }
    let kind = (first >> 4) & 0x3;
    let mid = u16::from_be_bytes([hi, lo]);
    // Rejecting a confirmable message is a Reset; anything else is dropped (RFC 7252 §4.2/4.3).
    let reject = || {
        if kind == TYPE_CON {
            Classified::Reply(reset(mid))
        } else {
            Classified::Drop
        }
    };
    if kind != TYPE_CON && kind != TYPE_NON {
        // ACK and RST: we keep no exchange that waits for them.
        return Classified::Drop;
    }
    if code == 0 {
        // An empty CON is a ping, answered with a Reset; an empty NON is a format error.
        return reject();
    }
    if code >> 5 != 0 {
        // Responses and reserved classes are not requests.
        return reject();
    }
    let Ok(packet) = Packet::from_bytes(datagram) else {
        return reject();
    };
    let method = match packet.header.code {
        MessageClass::Request(m) if m != RequestType::UnKnown => m,
        _ => {
            return match encode(&packet, &Reply::status(ResponseType::MethodNotAllowed), 0) {
                Some(b) => Classified::Reply(b),
                None => Classified::Drop,
            };
        }
    };
    match check_options(&packet) {
        Ok(block2) => Classified::Request(Request {
            packet,
            method,
            block2,
        }),
        Err(reply) => match encode(&packet, &reply, 0) {
            Some(b) => Classified::Reply(b),
            None => Classified::Drop,
        },
    }
}

/// Checks the options no handler may ignore; returns the Block2 option, if any.
fn check_options(packet: &Packet) -> Result<Option<Block>, Reply> {
    let mut block2 = None;
    for (&number, values) in packet.options() {
        if number == 23 {
            let mut it = values.iter();
            let (Some(value), None) = (it.next(), it.next()) else {
                return Err(Reply::error(
                    ResponseType::BadOption,
                    "Block2 option is repeated",
                ));
            };
            block2 = Some(Block::decode(value).map_err(|e| match e {
                // RFC 7959 §2.2: SZX 7 in a request gets 4.00; a malformed value makes the
                // critical option unrecognized, 4.02 (RFC 7252 §5.4.1).
                BlockError::ReservedSzx => Reply::error(ResponseType::BadRequest, e),
                _ => Reply::error(ResponseType::BadOption, e),
            })?);
        } else if number % 2 == 1 && number != 23 && !KNOWN_CRITICAL.contains(&number) {
            return Err(Reply::error(
                ResponseType::BadOption,
                format!("critical option {number} is not supported"),
            ));
        }
    }
    Ok(block2)
}

/// The server's answer to one request (before duplicate handling and encoding).
async fn answer<A: DeviceApi + ?Sized>(api: &A, req: &Request, max_block: u16) -> Reply {
    let mut segments = Vec::new();
    if let Some(values) = req.packet.get_option(CoapOption::UriPath) {
        for (i, v) in values.iter().enumerate() {
            let Ok(s) = std::str::from_utf8(v) else {
                return Reply::error(
                    ResponseType::BadRequest,
                    format!("path segment {i} is not UTF-8"),
                );
            };
            // Path traversal: a segment must be a plain name.
            if s.is_empty() || s == "." || s == ".." || s.contains(['/', '\\', '\0']) {
                return Reply::error(
                    ResponseType::NotFound,
                    format!("path segment {s:?} is not allowed"),
                );
            }
            segments.push(s);
        }
    }
    let queries: Vec<&[u8]> = req
        .packet
        .get_option(CoapOption::UriQuery)
        .map(|l| l.iter().map(Vec::as_slice).collect())
        .unwrap_or_default();
    let result = match segments.as_slice() {
        [kind @ ("fw" | "sw"), token] => {
            let t = if *kind == "fw" {
                PackageType::Firmware
            } else {
                PackageType::Software
            };
            download(api, req, t, token, &queries, max_block).await
        }
        // ThingsBoard: the firmware resource takes exactly two segments, else 4.01.
        ["fw" | "sw", ..] => Ok(Reply::error(
            ResponseType::Unauthorized,
            "expected /fw/{token} or /sw/{token}",
        )),
        ["api", "v1", token, "attributes"] => {
            attributes(api, req, token, &queries, max_block).await
        }
        ["api", "v1", token, "telemetry"] => telemetry(api, req, token).await,
        // ThingsBoard has no firmware resource under /api/v1 on CoAP (thingsboard#9262).
        ["api", "v1", _, "firmware" | "software"] => Ok(Reply::error(
            ResponseType::BadRequest,
            "use /fw/{token} or /sw/{token} on CoAP",
        )),
        _ => Ok(Reply::status(ResponseType::NotFound)),
    };
    result.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "CoAP request failed in the service");
        Reply::status(ResponseType::InternalServerError)
    })
}

async fn device<A: DeviceApi + ?Sized>(
    api: &A,
    token: &str,
) -> Result<Result<ota_server::model::Device, Reply>, ServiceError> {
    Ok(api
        .authenticate(token)
        .await?
        .ok_or_else(|| Reply::status(ResponseType::Unauthorized)))
}

async fn download<A: DeviceApi + ?Sized>(
    api: &A,
    req: &Request,
    t: PackageType,
    token: &str,
    queries: &[&[u8]],
    max_block: u16,
) -> Result<Reply, ServiceError> {
    if req.method != RequestType::Get {
        return Ok(Reply::status(ResponseType::MethodNotAllowed));
    }
    let q = match DownloadQuery::parse(queries.iter().copied()) {
        Ok(q) => q,
        Err(e) => return Ok(Reply::error(ResponseType::BadRequest, e)),
    };
    let device = match device(api, token).await? {
        Ok(d) => d,
        Err(reply) => return Ok(reply),
    };
    let Some(pkg) = api.assigned_package(&device, t).await? else {
        return Ok(Reply::status(ResponseType::NotFound));
    };
    if !pkg.has_data() {
        // URL packages are fetched from their URL, not from us.
        return Ok(Reply::status(ResponseType::NotFound));
    }
    if q.title.as_ref().is_some_and(|x| *x != pkg.title)
        || q.version.as_ref().is_some_and(|x| *x != pkg.version)
    {
        return Ok(Reply::error(
            ResponseType::BadRequest,
            format!("assigned package is {:?} {:?}", pkg.title, pkg.version),
        ));
    }
    let body = match api.read_chunk(&pkg, q.chunk, q.size).await {
        Ok(b) => b,
        Err(ServiceError::NoStoredData { .. }) => return Ok(Reply::status(ResponseType::NotFound)),
        Err(e) => return Err(e),
    };
    // A chunk past the end is an empty body: answered with an empty 2.05 (see module docs).
    Ok(blockwise(
        body,
        req.block2,
        max_block,
        ContentFormat::ApplicationOctetStream,
    ))
}

/// Answers `body` whole or as the requested (or first) Block2 block.
fn blockwise(
    body: Bytes,
    requested: Option<Block>,
    max_block: u16,
    format: ContentFormat,
) -> Reply {
    let len = body.len() as u64;
    let ok = |payload: Bytes| Reply {
        code: ResponseType::Content,
        payload,
        block2: None,
        size2: None,
        format: Some(format),
        observe: None,
        watch: Watch::None,
    };
    let max_szx = u8::try_from(
        max_block
            .clamp(MIN_BLOCK_SIZE, MAX_BLOCK_SIZE)
            .trailing_zeros()
            .saturating_sub(4),
    )
    .unwrap_or(6);
    let block = match requested {
        None if len <= u64::from(max_block) => return ok(body),
        None => Block::from_parts(0, false, max_szx),
        Some(b) => b.capped(max_szx),
    };
    let offset = block.offset();
    if offset >= len && block.num() > 0 {
        return Reply::error(
            ResponseType::BadOption,
            format!(
                "block {} of {} bytes starts at byte {offset}, past the end of the {len}-byte body",
                block.num(),
                block.size()
            ),
        );
    }
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(body.len());
    let end = start
        .saturating_add(usize::from(block.size()))
        .min(body.len());
    let more = end < body.len();
    Reply {
        block2: Some(block.with_more(more)),
        size2: Some(len),
        ..ok(body.slice(start..end))
    }
}

async fn attributes<A: DeviceApi + ?Sized>(
    api: &A,
    req: &Request,
    token: &str,
    queries: &[&[u8]],
    max_block: u16,
) -> Result<Reply, ServiceError> {
    match req.method {
        RequestType::Get => {}
        RequestType::Post => return post_attributes(api, req, token).await,
        _ => return Ok(Reply::status(ResponseType::MethodNotAllowed)),
    }
    let keys = match query::shared_keys(queries.iter().copied()) {
        Ok(k) => k,
        Err(e) => return Ok(Reply::error(ResponseType::BadRequest, e)),
    };
    let client_keys = match query::client_keys(queries.iter().copied()) {
        Ok(k) => k,
        Err(e) => return Ok(Reply::error(ResponseType::BadRequest, e)),
    };
    let device = match device(api, token).await? {
        Ok(d) => d,
        Err(reply) => return Ok(reply),
    };
    let all = api.shared_attributes(&device).await?;
    match req.packet.get_observe_value() {
        // Registration: the first notification is every shared attribute as a flat
        // object, as ThingsBoard sends it; later ones are pushes (see `notify`).
        Some(Ok(0)) => {
            let body = Bytes::from(Value::Object(all).to_string());
            return Ok(Reply {
                observe: Some(0),
                watch: Watch::Register(device.id),
                ..blockwise(body, None, max_block, ContentFormat::ApplicationJSON)
            });
        }
        Some(Ok(1)) => {
            let mut reply = Reply::status(ResponseType::Content);
            reply.watch = Watch::Deregister;
            let shared: Map<String, Value> = match &keys {
                Some(keys) => all.into_iter().filter(|(k, _)| keys.contains(k)).collect(),
                None => all,
            };
            reply.payload = Bytes::from(serde_json::json!({ "shared": shared }).to_string());
            reply.format = Some(ContentFormat::ApplicationJSON);
            return Ok(reply);
        }
        _ => {}
    }
    // ThingsBoard (`DeviceActorMessageProcessor.handleGetAttributesRequest`): no keys at all
    // selects every attribute of both scopes; keys of one scope only select none of the
    // other.
    let shared: Map<String, Value> = match (&keys, &client_keys) {
        (Some(keys), _) => all.into_iter().filter(|(k, _)| keys.contains(k)).collect(),
        (None, Some(_)) => Map::new(),
        (None, None) => all,
    };
    let client = match (&client_keys, &keys) {
        (Some(wanted), _) => api.client_attributes(&device, Some(wanted)).await?,
        (None, Some(_)) => Map::new(),
        (None, None) => api.client_attributes(&device, None).await?,
    };
    if shared.is_empty() && client.is_empty() {
        // ThingsBoard's CoAP answers 4.04 when nothing is found (MQTT sends `{}`).
        return Ok(Reply::status(ResponseType::NotFound));
    }
    // `{"client":{…},"shared":{…}}`, an empty section left out.
    let mut body = Map::new();
    if !client.is_empty() {
        body.insert("client".into(), Value::Object(client));
    }
    if !shared.is_empty() {
        body.insert("shared".into(), Value::Object(shared));
    }
    let body = Value::Object(body).to_string();
    Ok(blockwise(
        Bytes::from(body),
        req.block2,
        max_block,
        ContentFormat::ApplicationJSON,
    ))
}

/// `POST /api/v1/{token}/attributes`: client attributes, one JSON object merged into the
/// stored ones. ThingsBoard's `CoapTransportResource` answers `2.01 Created` on success
/// (`new CoapOkCallback(exchange, CREATED, INTERNAL_SERVER_ERROR)`), `4.00` when the body
/// does not parse, `4.01` for an unknown token; over a limit is `4.00` here too, with the
/// reason as diagnostic payload, and nothing is stored.
async fn post_attributes<A: DeviceApi + ?Sized>(
    api: &A,
    req: &Request,
    token: &str,
) -> Result<Reply, ServiceError> {
    let device = match device(api, token).await? {
        Ok(d) => d,
        Err(reply) => return Ok(reply),
    };
    let attributes = match parse_client_attributes(&req.packet.payload) {
        Ok(a) => a,
        Err(e) => return Ok(Reply::error(ResponseType::BadRequest, e)),
    };
    match api.record_client_attributes(&device, &attributes).await {
        Ok(()) => Ok(Reply::status(ResponseType::Created)),
        Err(ServiceError::Attributes(AttributeError::Unsupported)) => {
            Ok(Reply::status(ResponseType::NotImplemented))
        }
        Err(ServiceError::Attributes(e)) => Ok(Reply::error(ResponseType::BadRequest, e)),
        Err(e) => Err(e),
    }
}

async fn telemetry<A: DeviceApi + ?Sized>(
    api: &A,
    req: &Request,
    token: &str,
) -> Result<Reply, ServiceError> {
    match req.method {
        RequestType::Post => {}
        // ThingsBoard answers GET on telemetry with 4.00.
        RequestType::Get => {
            return Ok(Reply::error(
                ResponseType::BadRequest,
                "telemetry is posted",
            ));
        }
        _ => return Ok(Reply::status(ResponseType::MethodNotAllowed)),
    }
    let device = match device(api, token).await? {
        Ok(d) => d,
        Err(reply) => return Ok(reply),
    };
    let objects = match telemetry_objects(&req.packet.payload) {
        Ok(o) => o,
        Err(why) => return Ok(Reply::error(ResponseType::BadRequest, why)),
    };
    for values in &objects {
        api.record_telemetry(&device, values).await?;
    }
    Ok(Reply::status(ResponseType::Created))
}

/// ThingsBoard's telemetry shapes: `{k:v}`, `{"ts":…,"values":{k:v}}`, or an array of either.
fn telemetry_objects(payload: &[u8]) -> Result<Vec<Map<String, Value>>, String> {
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| format!("telemetry is not JSON: {e}"))?;
    let one = |v: Value| match v {
        Value::Object(mut m) => match (m.remove("ts"), m.remove("values")) {
            (Some(_), Some(Value::Object(values))) => Ok(values),
            (ts, values) => {
                if let Some(ts) = ts {
                    m.insert("ts".into(), ts);
                }
                if let Some(values) = values {
                    m.insert("values".into(), values);
                }
                Ok(m)
            }
        },
        other => Err(format!(
            "telemetry must be a JSON object, got {}",
            kind_of(&other)
        )),
    };
    match value {
        Value::Array(items) => items.into_iter().map(one).collect(),
        v => Ok(vec![one(v)?]),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Answers one datagram completely (no duplicate handling): the pure request handler, used
/// by the fuzz target and unit tests. `next_mid` is the message id of a NON response.
pub async fn respond<A: DeviceApi + ?Sized>(
    api: &A,
    datagram: &[u8],
    next_mid: u16,
) -> Option<Vec<u8>> {
    match classify(datagram) {
        Classified::Drop => None,
        Classified::Reply(b) => Some(b),
        Classified::Request(req) => {
            let reply = answer(api, &req, MAX_BLOCK_SIZE).await;
            encode(&req.packet, &reply, next_mid)
        }
    }
}

/// Shared state of the serve loop.
struct Shared {
    dedup: Dedup,
    in_flight: usize,
    per_peer: HashMap<SocketAddr, usize>,
    observers: HashMap<(SocketAddr, Vec<u8>), Observer>,
}

/// One attribute observation: the task sending its notifications.
struct Observer {
    device: DeviceId,
    task: tokio::task::AbortHandle,
    /// Message id of the last notification (a Reset with it cancels the observation).
    last_mid: Arc<AtomicU16>,
}

impl Shared {
    fn release(&mut self, peer: SocketAddr) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(n) = self.per_peer.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_peer.remove(&peer);
            }
        }
    }

    fn cancel(&mut self, key: &(SocketAddr, Vec<u8>)) {
        if let Some(o) = self.observers.remove(key) {
            o.task.abort();
        }
    }

    /// Cancels the observation whose last notification had message id `mid`.
    fn reset(&mut self, peer: SocketAddr, mid: u16) {
        let hit: Vec<_> = self
            .observers
            .iter()
            .filter(|((p, _), o)| *p == peer && o.last_mid.load(Ordering::Relaxed) == mid)
            .map(|(k, _)| k.clone())
            .collect();
        for k in hit {
            self.cancel(&k);
        }
    }
}

/// Sends every later attribute change of a device as a NON notification (RFC 7641), in
/// ThingsBoard's push format (`{"deleted":[…]}` or the changed attributes).
async fn notify(
    socket: Arc<UdpSocket>,
    mut rx: tokio::sync::broadcast::Receiver<ota_server::events::AssignmentEvent>,
    peer: SocketAddr,
    token: Vec<u8>,
    next_mid: Arc<AtomicU16>,
    last_mid: Arc<AtomicU16>,
) {
    let mut seq = 1u32;
    loop {
        let event = match rx.recv().await {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        for push in event.pushes {
            let mut p = Packet::new();
            p.header.set_type(MessageType::NonConfirmable);
            p.header.code = MessageClass::Response(ResponseType::Content);
            let mid = next_mid.fetch_add(1, Ordering::Relaxed);
            p.header.message_id = mid;
            p.set_token(token.clone());
            p.add_option(CoapOption::Observe, uint(u64::from(seq)));
            p.set_content_format(ContentFormat::ApplicationJSON);
            p.payload = push.to_json().to_string().into_bytes();
            // The Observe value is 24 bits and only needs to grow modulo 2^23 (RFC 7641 §4.4).
            seq = (seq + 1) & 0x00ff_ffff;
            last_mid.store(mid, Ordering::Relaxed);
            match p.to_bytes() {
                Ok(bytes) => {
                    let _ = socket.send_to(&bytes, peer).await;
                }
                Err(e) => tracing::warn!(error = ?e, "cannot encode an attribute notification"),
            }
        }
    }
}

/// Serves ThingsBoard's CoAP device API on an already bound socket until the socket fails.
///
/// ```no_run
/// # async fn run(api: std::sync::Arc<dyn ota_server::service::DeviceApi>) -> std::io::Result<()> {
/// let socket = tokio::net::UdpSocket::bind("0.0.0.0:5683").await?;
/// ota_coap::server::serve(socket, api).await
/// # }
/// ```
pub async fn serve(socket: UdpSocket, api: Arc<dyn DeviceApi>) -> io::Result<()> {
    serve_with(socket, api, ServerConfig::default()).await
}

/// [`serve`] with explicit tunables.
pub async fn serve_with(
    socket: UdpSocket,
    api: Arc<dyn DeviceApi>,
    config: ServerConfig,
) -> io::Result<()> {
    let socket = Arc::new(socket);
    let shared = Arc::new(Mutex::new(Shared {
        dedup: Dedup::new(
            config.dedup_capacity,
            config.dedup_per_peer,
            config.exchange_lifetime,
        ),
        in_flight: 0,
        per_peer: HashMap::new(),
        observers: HashMap::new(),
    }));
    let next_mid = Arc::new(AtomicU16::new(seed_mid()));
    // One byte more than the largest datagram we accept, to notice truncation.
    let mut buf = vec![0u8; Packet::MAX_SIZE + 1];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            // ICMP port-unreachable from an earlier send surfaces here on some systems.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => continue,
            Err(e) => return Err(e),
        };
        let Some(datagram) = buf.get(..n) else {
            continue;
        };
        if let (Some(&first), Some(&hi), Some(&lo)) =
            (datagram.first(), datagram.get(2), datagram.get(3))
            && first >> 4 == 0x7
        {
            // A Reset answering a notification cancels its observation (RFC 7641 §3.6).
            let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
            s.reset(peer, u16::from_be_bytes([hi, lo]));
            continue;
        }
        let req = match classify(datagram) {
            Classified::Drop => continue,
            Classified::Reply(bytes) => {
                let _ = socket.send_to(&bytes, peer).await;
                continue;
            }
            Classified::Request(req) => req,
        };
        let mid = req.packet.header.message_id;
        let replay = {
            let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
            match s.dedup.check(peer, mid, Instant::now()) {
                Seen::New => {
                    let mine = s.per_peer.get(&peer).copied().unwrap_or(0);
                    if s.in_flight >= config.max_in_flight || mine >= config.max_in_flight_per_peer
                    {
                        s.dedup.forget(peer, mid);
                        continue;
                    }
                    s.in_flight += 1;
                    *s.per_peer.entry(peer).or_insert(0) += 1;
                    None
                }
                Seen::InFlight | Seen::Answered(None) => continue,
                Seen::Answered(Some(bytes)) => Some(bytes),
            }
        };
        if let Some(bytes) = replay {
            let _ = socket.send_to(&bytes, peer).await;
            continue;
        }
        let task = Exchange {
            api: api.clone(),
            socket: socket.clone(),
            shared: shared.clone(),
            next_mid: next_mid.clone(),
            config: config.clone(),
        };
        tokio::spawn(task.run(req, peer, mid));
    }
}

/// What a spawned request task needs.
struct Exchange {
    api: Arc<dyn DeviceApi>,
    socket: Arc<UdpSocket>,
    shared: Arc<Mutex<Shared>>,
    next_mid: Arc<AtomicU16>,
    config: ServerConfig,
}

impl Exchange {
    /// Answers one request, records the answer for duplicates, and starts or stops an
    /// observation when asked.
    async fn run(self, req: Request, peer: SocketAddr, mid: u16) {
        let Self {
            api,
            socket,
            shared,
            next_mid,
            config,
        } = self;
        let (max_observers, max_observers_per_peer, max_block) = (
            config.max_observers,
            config.max_observers_per_peer,
            config.max_block_size,
        );
        let reply = answer(api.as_ref(), &req, max_block).await;
        // Subscribe before the first notification leaves, so no change falls between.
        let rx = match reply.watch {
            Watch::Register(device) => Some((device, api.subscribe(device))),
            _ => None,
        };
        let bytes = encode(
            &req.packet,
            &reply,
            next_mid.fetch_add(1, Ordering::Relaxed),
        )
        .map(Arc::<[u8]>::from);
        if let Some(b) = &bytes {
            let _ = socket.send_to(b, peer).await;
        }
        let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
        s.dedup.answer(peer, mid, bytes);
        s.release(peer);
        let key = (peer, req.packet.get_token().to_vec());
        if reply.watch == Watch::Deregister {
            s.cancel(&key);
        }
        if let Some((device, rx)) = rx {
            // A new observation of the same device from the same peer replaces the
            // old one (as ThingsBoard does); the per-peer and total caps bound memory.
            let stale: Vec<_> = s
                .observers
                .iter()
                .filter(|((p, _), o)| *p == peer && o.device == device)
                .map(|(k, _)| k.clone())
                .collect();
            for k in &stale {
                s.cancel(k);
            }
            s.cancel(&key);
            let mine = s.observers.keys().filter(|(p, _)| *p == peer).count();
            if mine < max_observers_per_peer && s.observers.len() < max_observers {
                let last_mid = Arc::new(AtomicU16::new(0));
                let task = tokio::spawn(notify(
                    socket.clone(),
                    rx,
                    peer,
                    key.1.clone(),
                    next_mid.clone(),
                    last_mid.clone(),
                ))
                .abort_handle();
                s.observers.insert(
                    key,
                    Observer {
                        device,
                        task,
                        last_mid,
                    },
                );
            }
        }
    }
}

/// A message id start that differs between runs (RFC 7252 §4.4 asks for a random one).
fn seed_mid() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    u16::try_from(t % 65_536).unwrap_or(0)
}
