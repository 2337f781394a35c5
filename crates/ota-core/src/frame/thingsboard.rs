//! ThingsBoard JSON payloads, parsed with `serde-json-core` into values borrowing the payload
//! and emitted into caller buffers:
//!
//! * shared-attribute pushes on `v1/devices/me/attributes` ([`AttributePush`]): the flat
//!   `{"fw_title":…}` update and the `{"deleted":[…]}` removal;
//! * attribute responses `{"client":{…},"shared":{…}}` ([`AttributesResponse`]);
//! * attribute requests `{"sharedKeys":"fw_title,…"}` ([`AttributesRequest`]);
//! * OTA telemetry (`fw_state`, `fw_error`, `current_fw_title`, `current_fw_version`) in the
//!   three shapes the server accepts: an object, `{"ts":…,"values":{…}}`, or an array of
//!   either ([`parse_telemetry`]).
//!
//! Strings are [`JsonStr`]: the text between the quotes exactly as received, escapes
//! included, so parsing never copies; [`JsonStr::unescape_into`] decodes when needed.
//! Unknown keys are ignored everywhere.
//!
//! ```
//! use ota_core::frame::thingsboard::{AttributesResponse, Kind};
//!
//! let json = br#"{"shared":{"fw_checksum":"1f82","fw_checksum_algorithm":"SHA256","fw_size":10,"fw_title":"demo","fw_version":"1.1"}}"#;
//! let resp = AttributesResponse::parse(json).unwrap();
//! let fw = resp.shared.unwrap().get(Kind::Firmware);
//! assert_eq!(fw.title.unwrap().as_plain(), Some("demo"));
//! assert_eq!(fw.size, Some(10));
//! ```
#![deny(clippy::indexing_slicing)]

use core::fmt;

use serde::Deserialize;
use serde::de::{self, SeqAccess, Visitor};

pub use super::Kind;

/// Longest title, version or tag accepted (ThingsBoard stores them in 255-character columns).
pub const MAX_NAME_LEN: usize = 255;
/// Longest checksum accepted (SHA-512 in hex is 128 characters).
pub const MAX_CHECKSUM_LEN: usize = 128;
/// Longest checksum algorithm name accepted (`MURMUR3_128` is 11).
pub const MAX_ALGORITHM_LEN: usize = 16;
/// Longest package URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// Deepest JSON nesting accepted (checked before parsing, so hostile input cannot exhaust
/// the stack).
pub const MAX_DEPTH: usize = 16;

/// Why a ThingsBoard JSON payload could not be parsed or emitted.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// The JSON is malformed or a known key has the wrong type.
    #[error("malformed JSON: {0}")]
    Syntax(serde_json_core::de::Error),
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("JSON nested deeper than {max} levels", max = MAX_DEPTH)]
    TooDeep,
    /// A known string value is longer than its limit.
    #[error("{key} is {len} bytes, at most {max} accepted")]
    TooLong {
        /// The attribute key (`fw_title`, ...).
        key: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A string passed for emission would need escaping (use [`JsonStr::escape_into`]).
    #[error("string needs JSON escaping")]
    NeedsEscape,
    /// A string holds an invalid escape sequence (found while unescaping).
    #[error("invalid escape sequence at offset {offset}")]
    InvalidEscape {
        /// Offset within the string.
        offset: usize,
    },
    /// The output buffer is too small.
    #[error("output needs more than the {available} bytes available")]
    BufferTooSmall {
        /// Buffer size.
        available: usize,
    },
}

impl From<serde_json_core::de::Error> for JsonError {
    fn from(e: serde_json_core::de::Error) -> Self {
        Self::Syntax(e)
    }
}

/// A JSON string value exactly as written between its quotes (escape sequences kept), borrowed
/// from the payload. Equality is on that text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(transparent)]
pub struct JsonStr<'a>(&'a str);

impl<'a> JsonStr<'a> {
    /// Wraps a string that needs no escaping (no `"`, `\` or control characters).
    pub fn plain(s: &'a str) -> Result<Self, JsonError> {
        if s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
            Err(JsonError::NeedsEscape)
        } else {
            Ok(Self(s))
        }
    }

    /// Escapes any string into `buf` and wraps the result.
    pub fn escape_into<'b>(s: &str, buf: &'b mut [u8]) -> Result<JsonStr<'b>, JsonError> {
        let mut w = Writer::new(buf);
        w.escaped(s)?;
        let len = w.len;
        let bytes: &'b [u8] = buf;
        let text = core::str::from_utf8(bytes.get(..len).unwrap_or(&[]))
            .map_err(|_| JsonError::NeedsEscape)?;
        Ok(JsonStr(text))
    }

    /// The text as written in the JSON (escapes kept).
    pub const fn raw(&self) -> &'a str {
        self.0
    }

    /// The value, if it contains no escape sequence (then raw text and value coincide).
    pub fn as_plain(&self) -> Option<&'a str> {
        (!self.0.contains('\\')).then_some(self.0)
    }

    /// Decodes escape sequences into `buf`.
    pub fn unescape_into<'b>(&self, buf: &'b mut [u8]) -> Result<&'b str, JsonError> {
        let available = buf.len();
        let mut n = 0;
        let mut push = |bytes: &[u8], n: &mut usize| -> Result<(), JsonError> {
            buf.get_mut(*n..*n + bytes.len())
                .ok_or(JsonError::BufferTooSmall { available })?
                .copy_from_slice(bytes);
            *n += bytes.len();
            Ok(())
        };
        let s = self.0.as_bytes();
        let mut i = 0;
        while let Some(&b) = s.get(i) {
            if b != b'\\' {
                push(&[b], &mut n)?;
                i += 1;
                continue;
            }
            let bad = JsonError::InvalidEscape { offset: i };
            let esc = s.get(i + 1).copied().ok_or(bad)?;
            let simple = match esc {
                b'"' => Some(b'"'),
                b'\\' => Some(b'\\'),
                b'/' => Some(b'/'),
                b'b' => Some(0x08),
                b'f' => Some(0x0c),
                b'n' => Some(b'\n'),
                b'r' => Some(b'\r'),
                b't' => Some(b'\t'),
                b'u' => None,
                _ => return Err(bad),
            };
            if let Some(c) = simple {
                push(&[c], &mut n)?;
                i += 2;
                continue;
            }
            let hi = hex4(s, i + 2).ok_or(bad)?;
            let (code, used) = if (0xd800..0xdc00).contains(&hi) {
                let lo = (s.get(i + 6) == Some(&b'\\') && s.get(i + 7) == Some(&b'u'))
                    .then(|| hex4(s, i + 8))
                    .flatten()
                    .filter(|lo| (0xdc00..0xe000).contains(lo))
                    .ok_or(bad)?;
                (0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00), 12)
            } else {
                (hi, 6)
            };
            let c = char::from_u32(code).ok_or(bad)?;
            push(c.encode_utf8(&mut [0; 4]).as_bytes(), &mut n)?;
            i += used;
        }
        let bytes: &'b [u8] = buf;
        core::str::from_utf8(bytes.get(..n).unwrap_or(&[]))
            .map_err(|_| JsonError::InvalidEscape { offset: 0 })
    }
}

fn hex4(s: &[u8], at: usize) -> Option<u32> {
    let digits = s.get(at..at + 4)?;
    digits
        .iter()
        .try_fold(0u32, |acc, &c| Some(acc * 16 + char::from(c).to_digit(16)?))
}

impl fmt::Display for JsonStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// An OTA attribute of one [`Kind`]; the key is the prefix plus [`Field::suffix`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// `fw_checksum`.
    Checksum,
    /// `fw_checksum_algorithm`.
    ChecksumAlgorithm,
    /// `fw_size`.
    Size,
    /// `fw_state`.
    State,
    /// `fw_tag`.
    Tag,
    /// `fw_title`.
    Title,
    /// `fw_ts`.
    Ts,
    /// `fw_url`.
    Url,
    /// `fw_version`.
    Version,
}

impl Field {
    /// Every field, in key order (alphabetical, as ThingsBoard's SDKs request them).
    pub const ALL: [Self; 9] = [
        Self::Checksum,
        Self::ChecksumAlgorithm,
        Self::Size,
        Self::State,
        Self::Tag,
        Self::Title,
        Self::Ts,
        Self::Url,
        Self::Version,
    ];

    /// The key without prefix (`"title"`).
    pub const fn suffix(self) -> &'static str {
        match self {
            Self::Checksum => "checksum",
            Self::ChecksumAlgorithm => "checksum_algorithm",
            Self::Size => "size",
            Self::State => "state",
            Self::Tag => "tag",
            Self::Title => "title",
            Self::Ts => "ts",
            Self::Url => "url",
            Self::Version => "version",
        }
    }

    /// The full key (`"fw_title"`, `"sw_title"`).
    pub const fn key(self, kind: Kind) -> &'static str {
        match (kind, self) {
            (Kind::Firmware, Self::Checksum) => "fw_checksum",
            (Kind::Firmware, Self::ChecksumAlgorithm) => "fw_checksum_algorithm",
            (Kind::Firmware, Self::Size) => "fw_size",
            (Kind::Firmware, Self::State) => "fw_state",
            (Kind::Firmware, Self::Tag) => "fw_tag",
            (Kind::Firmware, Self::Title) => "fw_title",
            (Kind::Firmware, Self::Ts) => "fw_ts",
            (Kind::Firmware, Self::Url) => "fw_url",
            (Kind::Firmware, Self::Version) => "fw_version",
            (Kind::Software, Self::Checksum) => "sw_checksum",
            (Kind::Software, Self::ChecksumAlgorithm) => "sw_checksum_algorithm",
            (Kind::Software, Self::Size) => "sw_size",
            (Kind::Software, Self::State) => "sw_state",
            (Kind::Software, Self::Tag) => "sw_tag",
            (Kind::Software, Self::Title) => "sw_title",
            (Kind::Software, Self::Ts) => "sw_ts",
            (Kind::Software, Self::Url) => "sw_url",
            (Kind::Software, Self::Version) => "sw_version",
        }
    }

    /// The field and kind of a full key.
    pub fn from_key(key: &str) -> Option<(Kind, Self)> {
        Kind::ALL
            .into_iter()
            .flat_map(|k| Self::ALL.into_iter().map(move |f| (k, f)))
            .find(|(k, f)| f.key(*k) == key)
    }

    const fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of [`Field`]s (a bit set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FieldSet(u16);

impl FieldSet {
    /// No field.
    pub const EMPTY: Self = Self(0);
    /// The five keys a device needs to decide and verify an update (what the SDKs request).
    pub const OFFER: Self = Self(
        Field::Checksum.bit()
            | Field::ChecksumAlgorithm.bit()
            | Field::Size.bit()
            | Field::Title.bit()
            | Field::Version.bit(),
    );
    /// The nine keys ThingsBoard deletes when a package is unassigned.
    pub const ALL: Self = Self(0x1ff);

    /// This set plus `f`.
    #[must_use]
    pub const fn with(self, f: Field) -> Self {
        Self(self.0 | f.bit())
    }

    /// Whether `f` is in the set.
    pub const fn contains(self, f: Field) -> bool {
        self.0 & f.bit() != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The members, in key order.
    pub fn iter(self) -> impl Iterator<Item = Field> {
        Field::ALL.into_iter().filter(move |f| self.contains(*f))
    }
}

/// The `fw_*` (or `sw_*`) attributes describing a package, every one optional because pushes
/// are partial.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FirmwareInfo<'a> {
    /// `fw_title`.
    pub title: Option<JsonStr<'a>>,
    /// `fw_version` (a free string on ThingsBoard).
    pub version: Option<JsonStr<'a>>,
    /// `fw_tag`.
    pub tag: Option<JsonStr<'a>>,
    /// `fw_size` in bytes.
    pub size: Option<u64>,
    /// `fw_checksum_algorithm` (`MD5`, `SHA256`, `SHA384`, `SHA512`, `CRC32`, `MURMUR3_32`,
    /// `MURMUR3_128`).
    pub checksum_algorithm: Option<JsonStr<'a>>,
    /// `fw_checksum` (hex).
    pub checksum: Option<JsonStr<'a>>,
    /// `fw_url` (URL-based packages).
    pub url: Option<JsonStr<'a>>,
}

impl FirmwareInfo<'_> {
    /// Whether no attribute is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    fn check(&self, kind: Kind) -> Result<(), JsonError> {
        let limits = [
            (self.title, Field::Title, MAX_NAME_LEN),
            (self.version, Field::Version, MAX_NAME_LEN),
            (self.tag, Field::Tag, MAX_NAME_LEN),
            (
                self.checksum_algorithm,
                Field::ChecksumAlgorithm,
                MAX_ALGORITHM_LEN,
            ),
            (self.checksum, Field::Checksum, MAX_CHECKSUM_LEN),
            (self.url, Field::Url, MAX_URL_LEN),
        ];
        for (value, field, max) in limits {
            if let Some(v) = value
                && v.0.len() > max
            {
                return Err(JsonError::TooLong {
                    key: field.key(kind),
                    len: v.0.len(),
                    max,
                });
            }
        }
        Ok(())
    }

    fn emit_members(&self, kind: Kind, w: &mut Writer<'_>) -> Result<(), JsonError> {
        // Never emit what our own parser would refuse.
        self.check(kind)?;
        // Key order: alphabetical, as in ThingsBoard's responses.
        w.opt_str(Field::Checksum.key(kind), self.checksum)?;
        w.opt_str(Field::ChecksumAlgorithm.key(kind), self.checksum_algorithm)?;
        if let Some(size) = self.size {
            w.key(Field::Size.key(kind))?;
            w.num(size)?;
        }
        w.opt_str(Field::Tag.key(kind), self.tag)?;
        w.opt_str(Field::Title.key(kind), self.title)?;
        w.opt_str(Field::Url.key(kind), self.url)?;
        w.opt_str(Field::Version.key(kind), self.version)
    }
}

/// The OTA attributes of an attribute object, both kinds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Attributes<'a> {
    /// `fw_*` keys.
    pub fw: FirmwareInfo<'a>,
    /// `sw_*` keys.
    pub sw: FirmwareInfo<'a>,
}

impl<'a> Attributes<'a> {
    /// The info of one kind.
    pub const fn get(&self, kind: Kind) -> FirmwareInfo<'a> {
        match kind {
            Kind::Firmware => self.fw,
            Kind::Software => self.sw,
        }
    }

    /// Parses a flat attribute object (`{"fw_title":"demo",…}`); other keys are ignored.
    pub fn parse(json: &'a [u8]) -> Result<Self, JsonError> {
        check_depth(json)?;
        let (raw, _) = serde_json_core::from_slice::<RawAttrs<'a>>(json)?;
        raw.attributes()
    }

    /// Writes the flat object; returns its length.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, JsonError> {
        let mut w = Writer::new(out);
        w.open()?;
        self.emit_members(&mut w)?;
        w.close()?;
        Ok(w.len)
    }

    fn emit_members(&self, w: &mut Writer<'_>) -> Result<(), JsonError> {
        self.fw.emit_members(Kind::Firmware, w)?;
        self.sw.emit_members(Kind::Software, w)
    }
}

macro_rules! raw_attrs {
    ($($field:ident),* ; $($size:ident),*) => {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct RawAttrs<'a> {
            $( #[serde(borrow)] $field: Option<JsonStr<'a>>, )*
            $( $size: Option<u64>, )*
            deleted: Option<Deleted>,
        }
    };
}

raw_attrs!(
    fw_title, fw_version, fw_tag, fw_checksum_algorithm, fw_checksum, fw_url,
    sw_title, sw_version, sw_tag, sw_checksum_algorithm, sw_checksum, sw_url;
    fw_size, sw_size
);

impl<'a> RawAttrs<'a> {
    fn attributes(&self) -> Result<Attributes<'a>, JsonError> {
        let a = Attributes {
            fw: FirmwareInfo {
                title: self.fw_title,
                version: self.fw_version,
                tag: self.fw_tag,
                size: self.fw_size,
                checksum_algorithm: self.fw_checksum_algorithm,
                checksum: self.fw_checksum,
                url: self.fw_url,
            },
            sw: FirmwareInfo {
                title: self.sw_title,
                version: self.sw_version,
                tag: self.sw_tag,
                size: self.sw_size,
                checksum_algorithm: self.sw_checksum_algorithm,
                checksum: self.sw_checksum,
                url: self.sw_url,
            },
        };
        a.fw.check(Kind::Firmware)?;
        a.sw.check(Kind::Software)?;
        Ok(a)
    }
}

/// The OTA keys named in a `{"deleted":[…]}` push, per kind (other keys are ignored).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Deleted {
    /// Deleted `fw_*` keys.
    pub fw: FieldSet,
    /// Deleted `sw_*` keys.
    pub sw: FieldSet,
}

impl Deleted {
    /// The deleted fields of one kind.
    pub const fn get(&self, kind: Kind) -> FieldSet {
        match kind {
            Kind::Firmware => self.fw,
            Kind::Software => self.sw,
        }
    }

    /// Whether the package of `kind` was withdrawn (its title or version deleted).
    pub const fn withdraws(&self, kind: Kind) -> bool {
        let set = self.get(kind);
        set.contains(Field::Title) || set.contains(Field::Version)
    }
}

impl<'de> Deserialize<'de> for Deleted {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Deleted;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of attribute keys")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Deleted, A::Error> {
                let mut out = Deleted::default();
                while let Some(key) = seq.next_element::<&'de str>()? {
                    match Field::from_key(key) {
                        Some((Kind::Firmware, f)) => out.fw = out.fw.with(f),
                        Some((Kind::Software, f)) => out.sw = out.sw.with(f),
                        None => {}
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

/// What ThingsBoard pushes on `v1/devices/me/attributes` to a subscribed device.
// Stack-allocated on purpose (no heap): the size gap between variants is accepted.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttributePush<'a> {
    /// `{"fw_title":…,…}`: new or changed shared attributes.
    Updated(Attributes<'a>),
    /// `{"deleted":[…]}`: removed shared attributes.
    Deleted(Deleted),
}

impl<'a> AttributePush<'a> {
    /// Parses a push.
    pub fn parse(json: &'a [u8]) -> Result<Self, JsonError> {
        check_depth(json)?;
        let (raw, _) = serde_json_core::from_slice::<RawAttrs<'a>>(json)?;
        match raw.deleted {
            Some(d) => Ok(Self::Deleted(d)),
            None => raw.attributes().map(Self::Updated),
        }
    }

    /// Writes the push; returns its length.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, JsonError> {
        match self {
            Self::Updated(a) => a.emit(out),
            Self::Deleted(d) => {
                let mut w = Writer::new(out);
                w.put(b"{\"deleted\":[")?;
                let mut first = true;
                for kind in Kind::ALL {
                    for f in d.get(kind).iter() {
                        if !first {
                            w.put(b",")?;
                        }
                        first = false;
                        w.put(b"\"")?;
                        w.put(f.key(kind).as_bytes())?;
                        w.put(b"\"")?;
                    }
                }
                w.put(b"]}")?;
                Ok(w.len)
            }
        }
    }
}

/// The answer on `v1/devices/me/attributes/response/{id}`: `{"client":{…},"shared":{…}}`,
/// absent sections omitted (nothing found → `{}`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AttributesResponse<'a> {
    /// The `client` section.
    pub client: Option<Attributes<'a>>,
    /// The `shared` section (where the OTA keys live).
    pub shared: Option<Attributes<'a>>,
}

#[derive(Deserialize)]
struct RawResponse<'a> {
    #[serde(borrow, default)]
    client: Option<RawAttrs<'a>>,
    #[serde(borrow, default)]
    shared: Option<RawAttrs<'a>>,
}

impl<'a> AttributesResponse<'a> {
    /// Parses a response.
    pub fn parse(json: &'a [u8]) -> Result<Self, JsonError> {
        check_depth(json)?;
        let (raw, _) = serde_json_core::from_slice::<RawResponse<'a>>(json)?;
        Ok(Self {
            client: raw.client.map(|r| r.attributes()).transpose()?,
            shared: raw.shared.map(|r| r.attributes()).transpose()?,
        })
    }

    /// Writes the response; returns its length.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, JsonError> {
        let mut w = Writer::new(out);
        w.open()?;
        for (name, section) in [("client", self.client), ("shared", self.shared)] {
            if let Some(a) = section {
                w.key(name)?;
                w.open()?;
                a.emit_members(&mut w)?;
                w.close()?;
            }
        }
        w.close()?;
        Ok(w.len)
    }
}

/// A device's attribute request on `v1/devices/me/attributes/request/{id}`.
///
/// Both fields must be JSON strings (ThingsBoard also takes a one-element array; every SDK
/// sends a string, and this parser answers a `Syntax` error for an array).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
pub struct AttributesRequest<'a> {
    /// `sharedKeys`: comma-separated key names.
    #[serde(borrow, default, rename = "sharedKeys")]
    pub shared_keys: Option<JsonStr<'a>>,
    /// `clientKeys`: comma-separated key names.
    #[serde(borrow, default, rename = "clientKeys")]
    pub client_keys: Option<JsonStr<'a>>,
}

impl<'a> AttributesRequest<'a> {
    /// Parses a request.
    pub fn parse(json: &'a [u8]) -> Result<Self, JsonError> {
        check_depth(json)?;
        Ok(serde_json_core::from_slice::<Self>(json)?.0)
    }

    /// The shared keys asked for, split on `,` with no trimming and empty keys skipped
    /// (ThingsBoard's server rules).
    pub fn shared(&self) -> impl Iterator<Item = &'a str> {
        split_keys(self.shared_keys)
    }

    /// The client keys asked for.
    pub fn client(&self) -> impl Iterator<Item = &'a str> {
        split_keys(self.client_keys)
    }

    /// The OTA fields of `kind` among the shared keys.
    pub fn shared_fields(&self, kind: Kind) -> FieldSet {
        self.shared()
            .filter_map(Field::from_key)
            .filter(|(k, _)| *k == kind)
            .fold(FieldSet::EMPTY, |set, (_, f)| set.with(f))
    }

    /// Writes `{"sharedKeys":"fw_checksum,…"}` asking for `fields` of `kind` (key order as
    /// the SDKs send it); returns the length.
    pub fn emit_for(kind: Kind, fields: FieldSet, out: &mut [u8]) -> Result<usize, JsonError> {
        let mut w = Writer::new(out);
        w.put(b"{\"sharedKeys\":\"")?;
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                w.put(b",")?;
            }
            w.put(f.key(kind).as_bytes())?;
        }
        w.put(b"\"}")?;
        Ok(w.len)
    }

    /// Writes this request; returns the length.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, JsonError> {
        let mut w = Writer::new(out);
        w.open()?;
        w.opt_str("sharedKeys", self.shared_keys)?;
        w.opt_str("clientKeys", self.client_keys)?;
        w.close()?;
        Ok(w.len)
    }
}

fn split_keys(keys: Option<JsonStr<'_>>) -> impl Iterator<Item = &str> {
    keys.map_or("", |k| k.0)
        .split(',')
        .filter(|k| !k.is_empty())
}

/// ThingsBoard's OTA states as reported in `fw_state` (plus `IDLE`, which the Python SDK
/// reports before anything happens).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FwState {
    /// `IDLE` (SDK only).
    Idle,
    /// `QUEUED` (server side).
    Queued,
    /// `INITIATED` (server side, attributes pushed).
    Initiated,
    /// `DOWNLOADING`.
    Downloading,
    /// `DOWNLOADED`.
    Downloaded,
    /// `VERIFIED`.
    Verified,
    /// `UPDATING`.
    Updating,
    /// `UPDATED`.
    Updated,
    /// `FAILED` (with `fw_error`).
    Failed,
}

impl FwState {
    /// Every state.
    pub const ALL: [Self; 9] = [
        Self::Idle,
        Self::Queued,
        Self::Initiated,
        Self::Downloading,
        Self::Downloaded,
        Self::Verified,
        Self::Updating,
        Self::Updated,
        Self::Failed,
    ];

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "IDLE",
            Self::Queued => "QUEUED",
            Self::Initiated => "INITIATED",
            Self::Downloading => "DOWNLOADING",
            Self::Downloaded => "DOWNLOADED",
            Self::Verified => "VERIFIED",
            Self::Updating => "UPDATING",
            Self::Updated => "UPDATED",
            Self::Failed => "FAILED",
        }
    }

    /// The wire name as a [`JsonStr`].
    pub const fn json(self) -> JsonStr<'static> {
        JsonStr(self.as_str())
    }

    /// The state named by a wire name.
    pub fn from_wire(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// The OTA keys of a telemetry record for one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OtaTelemetry<'a> {
    /// `fw_state` (see [`FwState::from_wire`]).
    pub state: Option<JsonStr<'a>>,
    /// `fw_error`.
    pub error: Option<JsonStr<'a>>,
    /// `current_fw_title`.
    pub current_title: Option<JsonStr<'a>>,
    /// `current_fw_version`.
    pub current_version: Option<JsonStr<'a>>,
}

impl OtaTelemetry<'_> {
    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One telemetry record: optional timestamp (ms) and the OTA keys of both kinds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TelemetryRecord<'a> {
    /// `ts` of the `{"ts":…,"values":{…}}` shape; `None` for a plain object (server time).
    pub ts: Option<u64>,
    /// `fw_state`, `fw_error`, `current_fw_title`, `current_fw_version`.
    pub fw: OtaTelemetry<'a>,
    /// The `sw_` / `current_sw_` equivalents.
    pub sw: OtaTelemetry<'a>,
}

const FW_KEYS: [&str; 4] = [
    "current_fw_title",
    "current_fw_version",
    "fw_state",
    "fw_error",
];
const SW_KEYS: [&str; 4] = [
    "current_sw_title",
    "current_sw_version",
    "sw_state",
    "sw_error",
];

impl TelemetryRecord<'_> {
    /// Writes the record as one JSON object (with `ts`/`values` when `ts` is set); returns
    /// the length.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, JsonError> {
        let mut w = Writer::new(out);
        if let Some(ts) = self.ts {
            w.put(b"{\"ts\":")?;
            w.num(ts)?;
            w.put(b",\"values\":")?;
        }
        w.open()?;
        for (keys, t) in [(FW_KEYS, &self.fw), (SW_KEYS, &self.sw)] {
            let [title, version, state, error] = keys;
            w.opt_str(title, t.current_title)?;
            w.opt_str(version, t.current_version)?;
            w.opt_str(state, t.state)?;
            w.opt_str(error, t.error)?;
        }
        w.close()?;
        if self.ts.is_some() {
            w.close()?;
        }
        Ok(w.len)
    }
}

macro_rules! raw_values {
    ($name:ident { $($extra:tt)* }) => {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct $name<'a> {
            #[serde(borrow)] fw_state: Option<JsonStr<'a>>,
            #[serde(borrow)] fw_error: Option<JsonStr<'a>>,
            #[serde(borrow)] current_fw_title: Option<JsonStr<'a>>,
            #[serde(borrow)] current_fw_version: Option<JsonStr<'a>>,
            #[serde(borrow)] sw_state: Option<JsonStr<'a>>,
            #[serde(borrow)] sw_error: Option<JsonStr<'a>>,
            #[serde(borrow)] current_sw_title: Option<JsonStr<'a>>,
            #[serde(borrow)] current_sw_version: Option<JsonStr<'a>>,
            $($extra)*
        }

        impl<'a> $name<'a> {
            fn ota(&self) -> (OtaTelemetry<'a>, OtaTelemetry<'a>) {
                (
                    OtaTelemetry {
                        state: self.fw_state,
                        error: self.fw_error,
                        current_title: self.current_fw_title,
                        current_version: self.current_fw_version,
                    },
                    OtaTelemetry {
                        state: self.sw_state,
                        error: self.sw_error,
                        current_title: self.current_sw_title,
                        current_version: self.current_sw_version,
                    },
                )
            }
        }
    };
}

raw_values!(RawValues {});
raw_values!(RawTelemetry {
    ts: Option<u64>,
    #[serde(borrow)]
    values: Option<RawValues<'a>>,
});

impl<'a> RawTelemetry<'a> {
    fn record(&self) -> TelemetryRecord<'a> {
        // ThingsBoard takes the `ts`/`values` shape only when both keys are present.
        let ((fw, sw), ts) = match (&self.values, self.ts) {
            (Some(values), Some(ts)) => (values.ota(), Some(ts)),
            _ => (self.ota(), None),
        };
        TelemetryRecord { ts, fw, sw }
    }
}

/// Calls the closure for each element of a telemetry array.
struct Records<F>(F);
impl<'de, F: FnMut(TelemetryRecord<'de>)> Visitor<'de> for Records<F> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of telemetry objects")
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while let Some(raw) = seq.next_element::<RawTelemetry<'de>>()? {
            (self.0)(raw.record());
            n += 1;
        }
        Ok(n)
    }
}

/// Parses a telemetry payload in any of the three shapes ThingsBoard accepts — an object,
/// `{"ts":…,"values":{…}}`, or an array of either — calling `each` once per record; returns
/// the number of records. Other keys (any type) are ignored; the OTA keys must be strings.
pub fn parse_telemetry<'a>(
    json: &'a [u8],
    mut each: impl FnMut(TelemetryRecord<'a>),
) -> Result<usize, JsonError> {
    check_depth(json)?;
    let first = json
        .iter()
        .copied()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(b'[') {
        let (raw, _) = serde_json_core::from_slice::<RawTelemetry<'a>>(json)?;
        each(raw.record());
        return Ok(1);
    }
    let mut de = serde_json_core::de::Deserializer::new(json, None);
    let n = de::Deserializer::deserialize_seq(&mut de, Records(&mut each))?;
    de.end()?;
    Ok(n)
}

/// Rejects JSON nested deeper than [`MAX_DEPTH`] (serde-json-core recurses per level).
fn check_depth(json: &[u8]) -> Result<(), JsonError> {
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    for &b in json {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(JsonError::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// A tiny JSON writer into a caller buffer.
struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
    // Whether the current object already has a member (a comma is due).
    comma: bool,
}

impl<'b> Writer<'b> {
    fn new(buf: &'b mut [u8]) -> Self {
        Self {
            buf,
            len: 0,
            comma: false,
        }
    }

    fn put(&mut self, s: &[u8]) -> Result<(), JsonError> {
        let available = self.buf.len();
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(JsonError::BufferTooSmall { available })?
            .copy_from_slice(s);
        self.len = end;
        Ok(())
    }

    fn open(&mut self) -> Result<(), JsonError> {
        self.comma = false;
        self.put(b"{")
    }

    fn close(&mut self) -> Result<(), JsonError> {
        self.comma = true;
        self.put(b"}")
    }

    fn key(&mut self, k: &str) -> Result<(), JsonError> {
        if self.comma {
            self.put(b",")?;
        }
        self.comma = true;
        self.put(b"\"")?;
        self.put(k.as_bytes())?;
        self.put(b"\":")
    }

    fn opt_str(&mut self, k: &str, v: Option<JsonStr<'_>>) -> Result<(), JsonError> {
        if let Some(v) = v {
            self.key(k)?;
            self.put(b"\"")?;
            self.put(v.0.as_bytes())?;
            self.put(b"\"")?;
        }
        Ok(())
    }

    fn num(&mut self, v: u64) -> Result<(), JsonError> {
        let mut digits = [0u8; 20];
        let mut n = v;
        let mut i = digits.len();
        loop {
            i -= 1;
            if let Some(d) = digits.get_mut(i) {
                *d = b'0' + (n % 10) as u8;
            }
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.put(digits.get(i..).unwrap_or(&[]))
    }

    fn escaped(&mut self, s: &str) -> Result<(), JsonError> {
        for c in s.chars() {
            match c {
                '"' => self.put(b"\\\"")?,
                '\\' => self.put(b"\\\\")?,
                '\n' => self.put(b"\\n")?,
                '\r' => self.put(b"\\r")?,
                '\t' => self.put(b"\\t")?,
                c if u32::from(c) < 0x20 => {
                    let hex = b"0123456789abcdef";
                    let n = u32::from(c) as usize;
                    let h = |i: usize| hex.get(i).copied().unwrap_or(b'0');
                    self.put(&[b'\\', b'u', b'0', b'0', h(n >> 4), h(n & 0xf)])?;
                }
                c => self.put(c.encode_utf8(&mut [0; 4]).as_bytes())?,
            }
        }
        Ok(())
    }
}

/// Parses arbitrary bytes as every ThingsBoard payload; each success is re-emitted,
/// re-parsed and compared. Used by the fuzz target and the corpus-replay test.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    let mut out = [0u8; 8192];
    if let Ok(p) = AttributePush::parse(data)
        && let Ok(n) = p.emit(&mut out)
    {
        assert_eq!(AttributePush::parse(out.get(..n).unwrap_or(&[])), Ok(p));
    }
    if let Ok(r) = AttributesResponse::parse(data)
        && let Ok(n) = r.emit(&mut out)
    {
        assert_eq!(
            AttributesResponse::parse(out.get(..n).unwrap_or(&[])),
            Ok(r)
        );
    }
    if let Ok(r) = AttributesRequest::parse(data)
        && let Ok(n) = r.emit(&mut out)
    {
        assert_eq!(AttributesRequest::parse(out.get(..n).unwrap_or(&[])), Ok(r));
    }
    let mut records = heapless::Vec::<TelemetryRecord<'_>, 8>::new();
    let _ = parse_telemetry(data, |r| {
        let _ = records.push(r);
    });
    for r in records {
        let Ok(n) = r.emit(&mut out) else { continue };
        let mut again = None;
        let count = parse_telemetry(out.get(..n).unwrap_or(&[]), |x| again = Some(x));
        assert_eq!(count, Ok(1));
        assert_eq!(again, Some(r));
    }
}
