//! EnigmaIoT OTA over MQTT: the text lines published on `{net}/{node}/set/ota` and the JSON
//! results coming back on `{net}/{node}/result/ota`.
//!
//! * Message 0 (header): `0,<size>,<chunks>,<md5>` — decimal size, decimal chunk count
//!   (⌈size/212⌉, carried as 16 bits by the gateway), 32 lower-case hex MD5 digits.
//! * Message i ≥ 1: `<i>,<base64 of image[212·(i−1) .. 212·i]>`, standard alphabet with `=`.
//!
//! ```
//! use ota_core::frame::enigma::{EnigmaHeader, EnigmaLine};
//!
//! let md5 = [0xde, 0xc0, 0x59, 0x23, 0x45, 0xac, 0x3d, 0xfa, 0x17, 0x2c, 0x9e, 0xc4, 0x76, 0xa2, 0x4c, 0x75];
//! let header = EnigmaHeader::for_image(500, md5).unwrap();
//! let mut line = [0u8; 64];
//! let n = header.emit(&mut line).unwrap();
//! assert_eq!(&line[..n], b"0,500,3,dec0592345ac3dfa172c9ec476a24c75");
//! assert_eq!(EnigmaLine::parse(&line[..n]), Ok(EnigmaLine::Header(header)));
//! ```
#![deny(clippy::indexing_slicing)]

use core::fmt;

use base64::engine::{Engine as _, general_purpose::STANDARD};
use base64::{DecodeError, DecodeSliceError};
use serde::Deserialize;

use super::thingsboard::JsonError;

/// Raw bytes per chunk line: 3 + 212 + 35 = 250 bytes, the ESP-NOW frame limit.
pub const CHUNK_SIZE: usize = 212;
const CHUNK_U32: u32 = 212;
/// Base64 characters of a full chunk.
pub const CHUNK_B64_LEN: usize = 284;
/// Longest chunk line: 5 index digits + comma + 284 base64 characters.
pub const MAX_LINE_LEN: usize = 5 + 1 + CHUNK_B64_LEN;
/// The largest image the 16-bit chunk counter can carry (65 535 chunks of 212 bytes).
pub const MAX_IMAGE_SIZE: u32 = 65_535 * CHUNK_U32;

/// A field of an EnigmaIoT line, named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LineField {
    /// The message index before the first comma.
    Index,
    /// The header's image size.
    Size,
    /// The header's chunk count.
    Chunks,
    /// The header's MD5.
    Md5,
    /// A chunk's base64 data.
    Data,
}

impl fmt::Display for LineField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Index => "index",
            Self::Size => "size",
            Self::Chunks => "chunk count",
            Self::Md5 => "MD5",
            Self::Data => "chunk data",
        })
    }
}

/// Why an EnigmaIoT line or result could not be parsed or emitted.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnigmaError {
    /// The line is empty.
    #[error("empty EnigmaIoT OTA line")]
    Empty,
    /// A comma-separated field is missing.
    #[error("line has no {field} field")]
    Missing {
        /// Which field.
        field: LineField,
    },
    /// The header has more than four fields.
    #[error("header has more than four fields")]
    TrailingField,
    /// A numeric field has a byte that is not an ASCII digit (or is empty).
    #[error("{field} contains byte {found:#04x}, expected a decimal digit")]
    NotNumeric {
        /// Which field.
        field: LineField,
        /// The offending byte (0 when the field is empty).
        found: u8,
    },
    /// A numeric field exceeds its maximum.
    #[error("{field} exceeds {max}")]
    Overflow {
        /// Which field.
        field: LineField,
        /// Largest allowed value.
        max: u32,
    },
    /// The header's chunk count is not ⌈size/212⌉.
    #[error("header announces {chunks} chunks for {size} bytes, expected {expected}")]
    ChunkCountMismatch {
        /// Size announced.
        size: u32,
        /// Chunks announced.
        chunks: u16,
        /// ⌈size/212⌉.
        expected: u32,
    },
    /// The image needs more chunks than the 16-bit counter carries.
    #[error("image of {size} bytes needs {needed} chunks, the protocol carries at most 65535")]
    TooManyChunks {
        /// Image size.
        size: u32,
        /// Chunks it would need.
        needed: u32,
    },
    /// A zero-byte image (the node would never finish).
    #[error("empty image: EnigmaIoT nodes finish on the last chunk, there would be none")]
    EmptyImage,
    /// The MD5 field is not 32 characters.
    #[error("MD5 has {len} characters, expected 32")]
    Md5Length {
        /// Its length.
        len: usize,
    },
    /// The MD5 field has a character outside `[0-9a-f]` (the gateway rejects `A-F`).
    #[error("MD5 has byte {found:#04x} at offset {offset}, expected lower-case hex")]
    Md5NotLowerHex {
        /// Offset within the MD5 field.
        offset: usize,
        /// The byte.
        found: u8,
    },
    /// Chunk data is not canonical padded standard base64.
    #[error("chunk data is not valid base64 at offset {offset}")]
    Base64 {
        /// Offset within the base64 field.
        offset: usize,
    },
    /// Chunk data decodes to more than 212 bytes (checked by size first: base64 text longer
    /// than any chunk's is reported here even if it is not valid base64).
    #[error("chunk of {len} bytes exceeds {max}", max = CHUNK_SIZE)]
    ChunkTooLarge {
        /// Decoded (or given) length; for over-long text, the length it would decode to.
        len: usize,
    },
    /// Chunk lines are numbered from 1 (index 0 is the header).
    #[error("chunk index 0 is reserved for the header")]
    IndexZero,
    /// A chunk with no data.
    #[error("chunk {index} has no data")]
    EmptyChunk {
        /// Its index.
        index: u16,
    },
    /// The output buffer is too small.
    #[error("output needs {needed} bytes, buffer has {available}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// A result's `status` is not one of 0..=6.
    #[error("unknown EnigmaIoT OTA status {0}")]
    UnknownStatus(u8),
    /// Status 4 (out of sequence) without `last_chunk`.
    #[error("out-of-sequence result without last_chunk")]
    MissingLastChunk,
    /// The result JSON is malformed.
    #[error("result JSON: {0}")]
    Json(JsonError),
}

/// Message 0: the announcement of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EnigmaHeader {
    /// Image size in bytes.
    pub size: u32,
    /// Number of chunk lines that follow (⌈size/212⌉).
    pub chunks: u16,
    /// MD5 of the whole image.
    pub md5: [u8; 16],
}

impl EnigmaHeader {
    /// The header for an image of `size` bytes; rejects empty images and images needing more
    /// than 65 535 chunks.
    pub fn for_image(size: u32, md5: [u8; 16]) -> Result<Self, EnigmaError> {
        if size == 0 {
            return Err(EnigmaError::EmptyImage);
        }
        let needed = size.div_ceil(CHUNK_U32);
        let chunks =
            u16::try_from(needed).map_err(|_| EnigmaError::TooManyChunks { size, needed })?;
        Ok(Self { size, chunks, md5 })
    }

    /// Writes `0,<size>,<chunks>,<md5>`; returns the length.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, EnigmaError> {
        let mut w = Out::new(out);
        w.put(b"0,")?;
        w.num(self.size)?;
        w.put(b",")?;
        w.num(u32::from(self.chunks))?;
        w.put(b",")?;
        for b in self.md5 {
            w.put(&[hex_digit(b >> 4), hex_digit(b & 0xf)])?;
        }
        Ok(w.len)
    }

    /// The raw byte range `[start, end)` of chunk `index` (1-based) in the image, or `None`
    /// when the index is outside `1..=chunks`.
    pub fn chunk_range(&self, index: u16) -> Option<(u32, u32)> {
        if index == 0 || index > self.chunks {
            return None;
        }
        let start = (u32::from(index) - 1) * CHUNK_U32;
        Some((start, self.size.min(start + CHUNK_U32)))
    }
}

/// Message i ≥ 1: one chunk, its data still base64 (zero-copy); validated at parse time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EnigmaChunk<'a> {
    /// Message index, 1-based.
    pub index: u16,
    base64: &'a str,
}

impl<'a> EnigmaChunk<'a> {
    /// The base64 text as received.
    pub fn base64(&self) -> &'a str {
        self.base64
    }

    /// Decoded length in bytes (≤ 212).
    pub fn data_len(&self) -> usize {
        decoded_len(self.base64.as_bytes())
    }

    /// Decodes the data into `out` and returns the filled prefix.
    pub fn decode_into<'o>(&self, out: &'o mut [u8]) -> Result<&'o [u8], EnigmaError> {
        let text = self.base64.as_bytes();
        let needed = decoded_len(text);
        let available = out.len();
        let dst = out
            .get_mut(..needed)
            .ok_or(EnigmaError::BufferTooSmall { needed, available })?;
        let n = STANDARD
            .decode_slice(text, &mut *dst)
            .map_err(|e| base64_error(&e, text))?;
        let dst: &'o [u8] = dst;
        Ok(dst.get(..n).unwrap_or(&[]))
    }

    /// Writes `<index>,<base64(data)>` for 1..=212 bytes of data; returns the length.
    pub fn emit(index: u16, data: &[u8], out: &mut [u8]) -> Result<usize, EnigmaError> {
        if index == 0 {
            return Err(EnigmaError::IndexZero);
        }
        if data.is_empty() {
            return Err(EnigmaError::EmptyChunk { index });
        }
        if data.len() > CHUNK_SIZE {
            return Err(EnigmaError::ChunkTooLarge { len: data.len() });
        }
        let mut w = Out::new(out);
        w.num(u32::from(index))?;
        w.put(b",")?;
        let at = w.len;
        let available = w.buf.len();
        let needed = at + data.len().div_ceil(3) * 4;
        let dst = w
            .buf
            .get_mut(at..needed)
            .ok_or(EnigmaError::BufferTooSmall { needed, available })?;
        let written = STANDARD
            .encode_slice(data, dst)
            .map_err(|_| EnigmaError::BufferTooSmall { needed, available })?;
        Ok(at + written)
    }
}

/// One line published on `{net}/{node}/set/ota`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EnigmaLine<'a> {
    /// Message 0.
    Header(EnigmaHeader),
    /// Message i ≥ 1.
    Chunk(EnigmaChunk<'a>),
}

impl<'a> EnigmaLine<'a> {
    /// Parses a line strictly: canonical fields, consistent chunk count, valid base64 of at
    /// most 212 bytes.
    pub fn parse(line: &'a [u8]) -> Result<Self, EnigmaError> {
        if line.is_empty() {
            return Err(EnigmaError::Empty);
        }
        let mut fields = line.splitn(2, |&b| b == b',');
        let index = parse_num(
            fields.next().unwrap_or(&[]),
            LineField::Index,
            u32::from(u16::MAX),
        )?;
        let rest = fields.next().ok_or(EnigmaError::Missing {
            field: LineField::Data,
        })?;
        if index == 0 {
            return parse_header(rest).map(EnigmaLine::Header);
        }
        let index = u16::try_from(index).map_err(|_| EnigmaError::Overflow {
            field: LineField::Index,
            max: u32::from(u16::MAX),
        })?;
        let len = base64_check(rest)?;
        if len == 0 {
            return Err(EnigmaError::EmptyChunk { index });
        }
        if len > CHUNK_SIZE {
            return Err(EnigmaError::ChunkTooLarge { len });
        }
        // base64_check accepted only ASCII, so this cannot fail.
        let base64 = core::str::from_utf8(rest).map_err(|_| EnigmaError::Base64 { offset: 0 })?;
        Ok(EnigmaLine::Chunk(EnigmaChunk { index, base64 }))
    }
}

fn parse_header(rest: &[u8]) -> Result<EnigmaHeader, EnigmaError> {
    let mut fields = rest.split(|&b| b == b',');
    let size_f = fields.next().ok_or(EnigmaError::Missing {
        field: LineField::Size,
    })?;
    let chunks_f = fields.next().ok_or(EnigmaError::Missing {
        field: LineField::Chunks,
    })?;
    let md5_f = fields.next().ok_or(EnigmaError::Missing {
        field: LineField::Md5,
    })?;
    if fields.next().is_some() {
        return Err(EnigmaError::TrailingField);
    }
    let size = parse_num(size_f, LineField::Size, u32::MAX)?;
    let chunks = parse_num(chunks_f, LineField::Chunks, u32::from(u16::MAX))?;
    if md5_f.len() != 32 {
        return Err(EnigmaError::Md5Length { len: md5_f.len() });
    }
    let mut md5 = [0u8; 16];
    for (i, (slot, pair)) in md5.iter_mut().zip(md5_f.chunks_exact(2)).enumerate() {
        let nib = |off: usize| {
            let c = pair.get(off).copied().unwrap_or(0);
            match c {
                b'0'..=b'9' => Ok(c - b'0'),
                b'a'..=b'f' => Ok(c - b'a' + 10),
                _ => Err(EnigmaError::Md5NotLowerHex {
                    offset: 2 * i + off,
                    found: c,
                }),
            }
        };
        *slot = (nib(0)? << 4) | nib(1)?;
    }
    let header = EnigmaHeader::for_image(size, md5)?;
    if u32::from(header.chunks) != chunks {
        return Err(EnigmaError::ChunkCountMismatch {
            size,
            chunks: u16::try_from(chunks).unwrap_or(u16::MAX),
            expected: u32::from(header.chunks),
        });
    }
    Ok(header)
}

fn parse_num(f: &[u8], field: LineField, max: u32) -> Result<u32, EnigmaError> {
    if f.is_empty() {
        return Err(EnigmaError::NotNumeric { field, found: 0 });
    }
    let mut v: u64 = 0;
    for &c in f {
        if !c.is_ascii_digit() {
            return Err(EnigmaError::NotNumeric { field, found: c });
        }
        v = v * 10 + u64::from(c - b'0');
        if v > u64::from(max) {
            return Err(EnigmaError::Overflow { field, max });
        }
    }
    u32::try_from(v).map_err(|_| EnigmaError::Overflow { field, max })
}

fn hex_digit(n: u8) -> u8 {
    if n < 10 { b'0' + n } else { b'a' + n - 10 }
}

struct Out<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> Out<'b> {
    fn new(buf: &'b mut [u8]) -> Self {
        Self { buf, len: 0 }
    }

    fn put(&mut self, s: &[u8]) -> Result<(), EnigmaError> {
        let needed = self.len + s.len();
        let available = self.buf.len();
        self.buf
            .get_mut(self.len..needed)
            .ok_or(EnigmaError::BufferTooSmall { needed, available })?
            .copy_from_slice(s);
        self.len = needed;
        Ok(())
    }

    fn num(&mut self, v: u32) -> Result<(), EnigmaError> {
        let mut digits = [0u8; 10];
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
}

// Standard base64 (RFC 4648 §4) with padding, canonical only: the `base64` crate's `STANDARD`
// engine requires padding and rejects non-zero trailing bits. Each chunk line is encoded on its
// own, so a decoder never sees concatenated groups.

/// Scratch space for validating a line: the most that `CHUNK_B64_LEN` characters decode to
/// (one byte more than a chunk, so an oversized chunk is still told apart from bad base64).
const SCRATCH_LEN: usize = CHUNK_B64_LEN / 4 * 3;

/// Decoded length of canonical padded base64 text.
fn decoded_len(text: &[u8]) -> usize {
    let pad = text.iter().rev().take(2).filter(|&&c| c == b'=').count();
    (text.len() / 4 * 3).saturating_sub(pad)
}

/// Validates canonical padded base64; returns the decoded length.
fn base64_check(text: &[u8]) -> Result<usize, EnigmaError> {
    // Checked here rather than left to the crate: it reports a partial last group as
    // `InvalidPadding` without an offset, and we name where the incomplete group starts.
    let partial = text.len() % 4;
    if partial != 0 {
        return Err(EnigmaError::Base64 {
            offset: text.len() - partial,
        });
    }
    // No chunk is longer than `CHUNK_B64_LEN` characters: longer text is refused by its size
    // before any decoding, which also bounds the scratch buffer on a heap-free device.
    if text.len() > CHUNK_B64_LEN {
        return Err(EnigmaError::ChunkTooLarge {
            len: decoded_len(text),
        });
    }
    let mut scratch = [0u8; SCRATCH_LEN];
    STANDARD
        .decode_slice(text, &mut scratch)
        .map_err(|e| base64_error(&e, text))
}

/// Our error for the crate's; every offset it reports lies within `text`.
fn base64_error(e: &DecodeSliceError, text: &[u8]) -> EnigmaError {
    match *e {
        DecodeSliceError::DecodeError(
            DecodeError::InvalidByte(offset, _)
            | DecodeError::InvalidLastSymbol(offset, _)
            | DecodeError::InvalidLength(offset),
        ) => EnigmaError::Base64 { offset },
        // Not reachable once `base64_check` has seen whole groups: blame the last group.
        DecodeSliceError::DecodeError(DecodeError::InvalidPadding) => EnigmaError::Base64 {
            offset: text.len().saturating_sub(4),
        },
        DecodeSliceError::OutputSliceTooSmall => EnigmaError::ChunkTooLarge {
            len: decoded_len(text),
        },
    }
}

/// The status a node reports on `{net}/{node}/result/ota` (EnigmaIoT `OTA_*` codes).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EnigmaStatus {
    /// 0: message 0 accepted.
    Started,
    /// 1: chunk received before message 0.
    StartError,
    /// 2: MD5 matched.
    CheckOk,
    /// 3: MD5 mismatch or finalising the image failed.
    CheckFail,
    /// 4: a chunk arrived out of sequence; resume after `last_chunk`.
    OutOfSequence,
    /// 5: 10 s without a valid OTA message; the node reboots.
    Timeout,
    /// 6: image accepted; the node reboots.
    Finished,
}

impl EnigmaStatus {
    /// All statuses in code order.
    pub const ALL: [Self; 7] = [
        Self::Started,
        Self::StartError,
        Self::CheckOk,
        Self::CheckFail,
        Self::OutOfSequence,
        Self::Timeout,
        Self::Finished,
    ];

    /// The numeric code (0..=6).
    pub const fn code(self) -> u8 {
        match self {
            Self::Started => 0,
            Self::StartError => 1,
            Self::CheckOk => 2,
            Self::CheckFail => 3,
            Self::OutOfSequence => 4,
            Self::Timeout => 5,
            Self::Finished => 6,
        }
    }

    /// The status for a numeric code.
    pub fn from_code(code: u8) -> Result<Self, EnigmaError> {
        Self::ALL
            .into_iter()
            .find(|s| s.code() == code)
            .ok_or(EnigmaError::UnknownStatus(code))
    }

    /// EnigmaIoT's constant name (`OTA_STARTED`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Started => "OTA_STARTED",
            Self::StartError => "OTA_START_ERROR",
            Self::CheckOk => "OTA_CHECK_OK",
            Self::CheckFail => "OTA_CHECK_FAIL",
            Self::OutOfSequence => "OTA_OUT_OF_SEQUENCE",
            Self::Timeout => "OTA_TIMEOUT",
            Self::Finished => "OTA_FINISHED",
        }
    }

    /// The gateway's `result` text.
    pub const fn text(self) -> &'static str {
        match self {
            Self::Started => "OTA Started",
            Self::StartError => "OTA Start error",
            Self::CheckOk => "OTA check OK",
            Self::CheckFail => "OTA check failed",
            Self::OutOfSequence => "OTA out of sequence error",
            Self::Timeout => "OTA timeout",
            Self::Finished => "OTA finished OK",
        }
    }
}

/// A result message from the gateway, e.g.
/// `{"last_chunk":41,"result":"OTA out of sequence error","status":4}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EnigmaResult {
    /// The status.
    pub status: EnigmaStatus,
    /// For [`EnigmaStatus::OutOfSequence`]: the last chunk the node accepted (resume after it).
    pub last_chunk: Option<u16>,
}

#[derive(Deserialize)]
struct RawResult {
    status: u8,
    #[serde(default)]
    last_chunk: Option<u16>,
}

impl EnigmaResult {
    /// Parses the gateway's JSON (the `result` text is informative and ignored; unknown keys
    /// are ignored).
    pub fn parse(json: &[u8]) -> Result<Self, EnigmaError> {
        let (raw, _) = serde_json_core::from_slice::<RawResult>(json)
            .map_err(|e| EnigmaError::Json(JsonError::Syntax(e)))?;
        let status = EnigmaStatus::from_code(raw.status)?;
        let last_chunk = if status == EnigmaStatus::OutOfSequence {
            Some(raw.last_chunk.ok_or(EnigmaError::MissingLastChunk)?)
        } else {
            None
        };
        Ok(Self { status, last_chunk })
    }

    /// Writes the gateway's JSON (key order as the gateway writes it); returns the length.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, EnigmaError> {
        let mut w = Out::new(out);
        w.put(b"{")?;
        if let Some(last) = self.last_chunk {
            w.put(b"\"last_chunk\":")?;
            w.num(u32::from(last))?;
            w.put(b",")?;
        }
        w.put(b"\"result\":\"")?;
        w.put(self.status.text().as_bytes())?;
        w.put(b"\",\"status\":")?;
        w.num(u32::from(self.status.code()))?;
        w.put(b"}")?;
        Ok(w.len)
    }
}

/// Parses arbitrary bytes as an OTA line and as a result; on success re-emits, re-parses and
/// asserts equality (chunk data compared decoded). Used by the fuzz target and corpus replay.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    let mut line = [0u8; 512];
    let mut raw = [0u8; CHUNK_SIZE];
    let mut raw2 = [0u8; CHUNK_SIZE];
    match EnigmaLine::parse(data) {
        Ok(EnigmaLine::Header(h)) => {
            let n = h.emit(&mut line).unwrap_or(0);
            let text = line.get(..n).unwrap_or(&[]);
            assert_eq!(EnigmaLine::parse(text), Ok(EnigmaLine::Header(h)));
        }
        Ok(EnigmaLine::Chunk(c)) => {
            let decoded = c.decode_into(&mut raw).unwrap_or(&[]);
            assert_eq!(decoded.len(), c.data_len());
            let n = EnigmaChunk::emit(c.index, decoded, &mut line).unwrap_or(0);
            let text = line.get(..n).unwrap_or(&[]);
            let Ok(EnigmaLine::Chunk(again)) = EnigmaLine::parse(text) else {
                panic!("re-emitted chunk line did not parse");
            };
            assert_eq!(again.index, c.index);
            assert_eq!(again.decode_into(&mut raw2).unwrap_or(&[]), decoded);
        }
        Err(_) => {}
    }
    if let Ok(r) = EnigmaResult::parse(data) {
        let n = r.emit(&mut line).unwrap_or(0);
        assert_eq!(EnigmaResult::parse(line.get(..n).unwrap_or(&[])), Ok(r));
    }
}

#[cfg(test)]
mod tests {
    use super::{CHUNK_B64_LEN, EnigmaError, EnigmaLine};

    #[test]
    fn data_after_padding_is_blamed_on_the_first_pad() {
        assert_eq!(
            EnigmaLine::parse(b"1,AA=A"),
            Err(EnigmaError::Base64 { offset: 2 })
        );
        assert_eq!(
            EnigmaLine::parse(b"1,AAAAAA=\xff"),
            Err(EnigmaError::Base64 { offset: 6 })
        );
    }

    #[test]
    fn padding_outside_the_last_group_is_rejected() {
        assert_eq!(
            EnigmaLine::parse(b"1,AA==AAAA"),
            Err(EnigmaError::Base64 { offset: 2 })
        );
        assert_eq!(
            EnigmaLine::parse(b"1,A==="),
            Err(EnigmaError::Base64 { offset: 1 })
        );
    }

    #[test]
    fn over_long_text_is_too_large_before_it_is_decoded() {
        // 288 characters, the last group not even base64: refused by size (216 bytes).
        let mut line = b"1,".to_vec();
        line.extend(core::iter::repeat_n(b'A', CHUNK_B64_LEN));
        line.extend(b"!!!!");
        assert_eq!(
            EnigmaLine::parse(&line),
            Err(EnigmaError::ChunkTooLarge { len: 216 })
        );
    }
}
