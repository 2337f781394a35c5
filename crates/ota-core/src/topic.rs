//! Zero-copy parse and format of every MQTT topic the stack speaks: ThingsBoard's device API
//! (`v1/devices/me/...`, `v2/fw|sw/...`), Sming's retained announce (`a/{app}/u/{maj}.{min}`)
//! and EnigmaIoT's gateway topics (`{net}/{node}/set/ota`, ...).
//!
//! ```
//! use ota_core::topic::{Topic, Kind};
//!
//! let t = Topic::parse("v2/fw/request/007/chunk/01").unwrap();
//! let Topic::ChunkRequest { kind: Kind::Firmware, request_id, chunk } = t else { panic!() };
//! assert_eq!((request_id.as_str(), chunk), ("007", 1));
//! // ThingsBoard echoes the request id literally and the chunk number with `%d`:
//! let reply = Topic::ChunkResponse { kind: Kind::Firmware, request_id, chunk };
//! assert_eq!(reply.to_string(), "v2/fw/response/007/chunk/1");
//! ```
//!
//! Numbers follow ThingsBoard's server: attribute-request and RPC ids and chunk numbers are
//! Java `int`s (0..=2³¹−1 here; signs are not accepted), chunk request ids are kept as the
//! literal digit string because the server keys and echoes them that way.
#![deny(clippy::indexing_slicing)]

use core::fmt;

pub use crate::frame::Kind;

/// The largest id or chunk number ThingsBoard accepts (`Integer.MAX_VALUE`).
pub const MAX_INT32: u32 = i32::MAX as u32;

/// A numeric field of a topic, named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// `{id}` of `v1/devices/me/attributes/request|response/{id}`.
    AttributeRequestId,
    /// `{id}` of `v1/devices/me/rpc/request|response/{id}`.
    RpcRequestId,
    /// `{reqId}` of `v2/fw|sw/request|response/{reqId}/chunk/{n}`.
    ChunkRequestId,
    /// `{n}` of `v2/fw|sw/request|response/{reqId}/chunk/{n}`.
    Chunk,
    /// `{app}` of Sming's `a/{app}/u/{maj}.{min}`.
    SmingApp,
    /// `{maj}` of Sming's topic.
    SmingMajor,
    /// `{min}` of Sming's topic.
    SmingMinor,
    /// `{net}` of an EnigmaIoT topic.
    EnigmaNetwork,
    /// `{node}` of an EnigmaIoT topic.
    EnigmaNode,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AttributeRequestId => "attribute request id",
            Self::RpcRequestId => "RPC request id",
            Self::ChunkRequestId => "chunk request id",
            Self::Chunk => "chunk number",
            Self::SmingApp => "Sming app id",
            Self::SmingMajor => "Sming major version",
            Self::SmingMinor => "Sming minor version",
            Self::EnigmaNetwork => "EnigmaIoT network",
            Self::EnigmaNode => "EnigmaIoT node",
        })
    }
}

/// Why a topic was not understood.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum TopicError {
    /// The topic is empty.
    #[error("empty topic")]
    Empty,
    /// The topic is not UTF-8 (MQTT requires it).
    #[error("topic is not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// The topic matches none of the known shapes.
    #[error("unknown topic ({levels} levels)")]
    Unknown {
        /// How many `/`-separated levels it had.
        levels: usize,
    },
    /// A numeric field contains something other than ASCII digits (or is empty).
    #[error("{field} {found:?} is not a decimal number")]
    NotNumeric {
        /// Which field.
        field: Field,
        /// The first offending character (`'\0'` when the field is empty).
        found: char,
    },
    /// A numeric field exceeds its maximum.
    #[error("{field} has {digits} digits and exceeds {max}")]
    Overflow {
        /// Which field.
        field: Field,
        /// Number of digits (leading zeros included).
        digits: usize,
        /// The maximum allowed value.
        max: u32,
    },
    /// A name level is empty or contains an MQTT wildcard (`+`, `#`) or NUL.
    #[error("{field} is empty or contains a wildcard")]
    InvalidName {
        /// Which field.
        field: Field,
    },
}

/// A ThingsBoard chunk request id: a non-empty string of ASCII digits, kept verbatim
/// (`"007"` stays `"007"`) because the server keys and echoes it literally.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestId<'a>(&'a str);

impl<'a> RequestId<'a> {
    /// Validates a request id.
    pub fn new(s: &'a str) -> Result<Self, TopicError> {
        match s.chars().find(|c| !c.is_ascii_digit()) {
            Some(c) => Err(TopicError::NotNumeric {
                field: Field::ChunkRequestId,
                found: c,
            }),
            None if s.is_empty() => Err(TopicError::NotNumeric {
                field: Field::ChunkRequestId,
                found: '\0',
            }),
            None => Ok(Self(s)),
        }
    }

    /// The digits as received.
    pub const fn as_str(&self) -> &'a str {
        self.0
    }
}

impl fmt::Display for RequestId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// One topic level used as a name (Sming app id, EnigmaIoT network or node): non-empty,
/// no `/`, `+`, `#` or NUL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Name<'a>(&'a str);

impl<'a> Name<'a> {
    /// Validates a name level; `field` says which one for the error.
    pub fn new(s: &'a str, field: Field) -> Result<Self, TopicError> {
        if s.is_empty() || s.contains(['/', '+', '#', '\0']) {
            Err(TopicError::InvalidName { field })
        } else {
            Ok(Self(s))
        }
    }

    /// The text.
    pub const fn as_str(&self) -> &'a str {
        self.0
    }

    /// Whether this looks like a MAC address `aa:bb:cc:dd:ee:ff` (EnigmaIoT nodes are
    /// addressed by MAC or by name; anything else is a name).
    pub fn is_mac(&self) -> bool {
        let b = self.0.as_bytes();
        b.len() == 17
            && b.iter().enumerate().all(|(i, c)| {
                if i % 3 == 2 {
                    *c == b':'
                } else {
                    c.is_ascii_hexdigit()
                }
            })
    }
}

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Every topic of the three dialects, borrowing names from the parsed text.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic<'a> {
    /// `v1/devices/me/attributes` — client attributes up, shared-attribute pushes down.
    Attributes,
    /// `v1/devices/me/attributes/request/{id}` — attribute request (device → server).
    AttributesRequest {
        /// Request id (int32).
        id: u32,
    },
    /// `v1/devices/me/attributes/response/{id}` — attribute response (server → device).
    AttributesResponse {
        /// Request id echoed.
        id: u32,
    },
    /// `v1/devices/me/telemetry`.
    Telemetry,
    /// `v1/devices/me/rpc/request/{id}`.
    RpcRequest {
        /// RPC id (int32).
        id: u32,
    },
    /// `v1/devices/me/rpc/response/{id}`.
    RpcResponse {
        /// RPC id (int32).
        id: u32,
    },
    /// `v2/fw|sw/request/{reqId}/chunk/{n}` — chunk request (device → server).
    ChunkRequest {
        /// Firmware or software.
        kind: Kind,
        /// Request id, verbatim.
        request_id: RequestId<'a>,
        /// Chunk number (int32).
        chunk: u32,
    },
    /// `v2/fw|sw/response/{reqId}/chunk/{n}` — chunk bytes (server → device).
    ChunkResponse {
        /// Firmware or software.
        kind: Kind,
        /// Request id, verbatim.
        request_id: RequestId<'a>,
        /// Chunk number (int32).
        chunk: u32,
    },
    /// `v2/fw/error` or `v2/sw/error` — OTA error text (server → device). ThingsBoard
    /// publishes software errors on `v2/fw/error` too.
    OtaError {
        /// Which prefix the topic has.
        kind: Kind,
    },
    /// Sming's retained announce `a/{app}/u/{major}.{minor}`.
    SmingUpdate {
        /// Application id.
        app: Name<'a>,
        /// Major version of the line.
        major: u32,
        /// Minor version of the line.
        minor: u32,
    },
    /// EnigmaIoT `{net}/{node}/set/ota` — OTA lines (tool → gateway).
    EnigmaOta {
        /// Gateway network name.
        net: Name<'a>,
        /// Node MAC or name.
        node: Name<'a>,
    },
    /// EnigmaIoT `{net}/{node}/result/ota` — OTA results (gateway → tool).
    EnigmaOtaResult {
        /// Gateway network name.
        net: Name<'a>,
        /// Node MAC or name.
        node: Name<'a>,
    },
    /// EnigmaIoT `{net}/{node}/set/sleeptime` (payload ASCII decimal seconds).
    EnigmaSleepTime {
        /// Gateway network name.
        net: Name<'a>,
        /// Node MAC or name.
        node: Name<'a>,
    },
    /// EnigmaIoT `{net}/{node}/result/sleeptime` (payload `{"sleeptime":N}`).
    EnigmaSleepTimeResult {
        /// Gateway network name.
        net: Name<'a>,
        /// Node MAC or name.
        node: Name<'a>,
    },
}

fn parse_int(s: &str, field: Field, max: u32) -> Result<u32, TopicError> {
    let mut value: u64 = 0;
    if s.is_empty() {
        return Err(TopicError::NotNumeric { field, found: '\0' });
    }
    for c in s.chars() {
        let Some(d) = c.to_digit(10) else {
            return Err(TopicError::NotNumeric { field, found: c });
        };
        value = value * 10 + u64::from(d);
        if value > u64::from(max) {
            return Err(TopicError::Overflow {
                field,
                digits: s.len(),
                max,
            });
        }
    }
    u32::try_from(value).map_err(|_| TopicError::Overflow {
        field,
        digits: s.len(),
        max,
    })
}

fn kind_of(level: &str) -> Option<Kind> {
    match level {
        "fw" => Some(Kind::Firmware),
        "sw" => Some(Kind::Software),
        _ => None,
    }
}

impl<'a> Topic<'a> {
    /// Parses a topic name (not a filter: wildcards are rejected as names).
    pub fn parse(s: &'a str) -> Result<Self, TopicError> {
        if s.is_empty() {
            return Err(TopicError::Empty);
        }
        let mut levels = [""; 7];
        let mut n = 0;
        for level in s.split('/') {
            match levels.get_mut(n) {
                Some(slot) => *slot = level,
                None => {
                    return Err(TopicError::Unknown {
                        levels: s.split('/').count(),
                    });
                }
            }
            n += 1;
        }
        let unknown = TopicError::Unknown { levels: n };
        let levels = levels.get(..n).unwrap_or(&[]);
        Ok(match *levels {
            ["v1", "devices", "me", "attributes"] => Self::Attributes,
            ["v1", "devices", "me", "telemetry"] => Self::Telemetry,
            [
                "v1",
                "devices",
                "me",
                "attributes",
                dir @ ("request" | "response"),
                id,
            ] => {
                let id = parse_int(id, Field::AttributeRequestId, MAX_INT32)?;
                if dir == "request" {
                    Self::AttributesRequest { id }
                } else {
                    Self::AttributesResponse { id }
                }
            }
            [
                "v1",
                "devices",
                "me",
                "rpc",
                dir @ ("request" | "response"),
                id,
            ] => {
                let id = parse_int(id, Field::RpcRequestId, MAX_INT32)?;
                if dir == "request" {
                    Self::RpcRequest { id }
                } else {
                    Self::RpcResponse { id }
                }
            }
            ["v2", k, dir @ ("request" | "response"), req, "chunk", n] => {
                let kind = kind_of(k).ok_or(unknown)?;
                let request_id = RequestId::new(req)?;
                let chunk = parse_int(n, Field::Chunk, MAX_INT32)?;
                if dir == "request" {
                    Self::ChunkRequest {
                        kind,
                        request_id,
                        chunk,
                    }
                } else {
                    Self::ChunkResponse {
                        kind,
                        request_id,
                        chunk,
                    }
                }
            }
            ["v2", k, "error"] => Self::OtaError {
                kind: kind_of(k).ok_or(unknown)?,
            },
            ["a", app, "u", line] => {
                let app = Name::new(app, Field::SmingApp)?;
                let (maj, min) = line.split_once('.').ok_or(TopicError::NotNumeric {
                    field: Field::SmingMinor,
                    found: '\0',
                })?;
                let major = parse_int(maj, Field::SmingMajor, u32::MAX)?;
                let minor = parse_int(min, Field::SmingMinor, u32::MAX)?;
                Self::SmingUpdate { app, major, minor }
            }
            [
                net,
                node,
                dir @ ("set" | "result"),
                what @ ("ota" | "sleeptime"),
            ] => {
                let net = Name::new(net, Field::EnigmaNetwork)?;
                let node = Name::new(node, Field::EnigmaNode)?;
                match (dir, what) {
                    ("set", "ota") => Self::EnigmaOta { net, node },
                    ("result", "ota") => Self::EnigmaOtaResult { net, node },
                    ("set", _) => Self::EnigmaSleepTime { net, node },
                    _ => Self::EnigmaSleepTimeResult { net, node },
                }
            }
            _ => return Err(unknown),
        })
    }

    /// Parses topic bytes (as they arrive in a PUBLISH), rejecting non-UTF-8.
    pub fn parse_bytes(b: &'a [u8]) -> Result<Self, TopicError> {
        let s = core::str::from_utf8(b).map_err(|e| TopicError::NotUtf8 {
            offset: e.valid_up_to(),
        })?;
        Self::parse(s)
    }

    /// Writes the topic text to any [`fmt::Write`] (a `heapless::String`, a formatter, ...).
    pub fn write_to<W: fmt::Write>(&self, w: &mut W) -> fmt::Result {
        match self {
            Self::Attributes => w.write_str("v1/devices/me/attributes"),
            Self::Telemetry => w.write_str("v1/devices/me/telemetry"),
            Self::AttributesRequest { id } => write!(w, "v1/devices/me/attributes/request/{id}"),
            Self::AttributesResponse { id } => write!(w, "v1/devices/me/attributes/response/{id}"),
            Self::RpcRequest { id } => write!(w, "v1/devices/me/rpc/request/{id}"),
            Self::RpcResponse { id } => write!(w, "v1/devices/me/rpc/response/{id}"),
            Self::ChunkRequest {
                kind,
                request_id,
                chunk,
            } => {
                write!(w, "v2/{}/request/{request_id}/chunk/{chunk}", kind.prefix())
            }
            Self::ChunkResponse {
                kind,
                request_id,
                chunk,
            } => {
                write!(
                    w,
                    "v2/{}/response/{request_id}/chunk/{chunk}",
                    kind.prefix()
                )
            }
            Self::OtaError { kind } => write!(w, "v2/{}/error", kind.prefix()),
            Self::SmingUpdate { app, major, minor } => write!(w, "a/{app}/u/{major}.{minor}"),
            Self::EnigmaOta { net, node } => write!(w, "{net}/{node}/set/ota"),
            Self::EnigmaOtaResult { net, node } => write!(w, "{net}/{node}/result/ota"),
            Self::EnigmaSleepTime { net, node } => write!(w, "{net}/{node}/set/sleeptime"),
            Self::EnigmaSleepTimeResult { net, node } => write!(w, "{net}/{node}/result/sleeptime"),
        }
    }

    /// The chunk response topic answering a chunk request (ThingsBoard echoes the request
    /// id verbatim and the chunk number canonically); `None` for any other topic.
    pub const fn chunk_response(&self) -> Option<Self> {
        match *self {
            Self::ChunkRequest {
                kind,
                request_id,
                chunk,
            } => Some(Self::ChunkResponse {
                kind,
                request_id,
                chunk,
            }),
            _ => None,
        }
    }
}

impl fmt::Display for Topic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

/// Parses arbitrary bytes as a topic; on success formats it, re-parses the text and asserts
/// the two values are equal. Used by the fuzz target and the corpus-replay test.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    let Ok(t) = Topic::parse_bytes(data) else {
        return;
    };
    let mut buf = heapless::String::<1024>::new();
    if t.write_to(&mut buf).is_err() {
        return;
    }
    assert_eq!(
        Topic::parse(buf.as_str()),
        Ok(t),
        "topic {t} did not round-trip"
    );
}
