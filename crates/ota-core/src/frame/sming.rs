//! Sming `OtaUpgradeMqtt` payload: patch version prefix + firmware body, nothing else (no
//! length, no checksum). The prefix is an unsigned LEB128 varint (Sming's default,
//! `ENABLE_OTA_VARINT_VERSION=1`) or a single byte.
//!
//! ```
//! use ota_core::frame::sming::{PatchEncoding, SmingPayload, SmingWarning};
//!
//! let p = SmingPayload::parse(&[0x03, 0xe9, 0x01], PatchEncoding::Varint).unwrap();
//! assert_eq!((p.patch, p.body), (3, &[0xe9, 0x01][..]));
//!
//! let mut prefix = [0u8; 10];
//! let out = SmingPayload::emit_prefix(300, PatchEncoding::Varint, &mut prefix).unwrap();
//! assert_eq!(&prefix[..out.len], &[0xac, 0x02]);
//! // Devices in the field add the 7-bit groups without shifting: they would read 46.
//! assert_eq!(out.warning, Some(SmingWarning::DeviceMisreads { device_reads: 46 }));
//! ```
//!
//! The decoder here is the deployer's (real LEB128). Sming's device decoder sums the 7-bit
//! groups without shifting, so devices agree only for patches 0..=127; [`device_reading`]
//! predicts what they read and the encoder reports the mismatch as a [`SmingWarning`].
#![deny(clippy::indexing_slicing)]

/// The longest LEB128 varint accepted (a 64-bit value needs 10 bytes).
pub const MAX_VARINT_LEN: usize = 10;

/// How the patch version is written in front of the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PatchEncoding {
    /// Unsigned LEB128 (Sming's default).
    Varint,
    /// One byte, 0..=255 (`ENABLE_OTA_VARINT_VERSION=0`).
    Byte,
}

/// Why a Sming payload could not be parsed or emitted.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SmingError {
    /// The payload is empty: not even a patch version.
    #[error("empty Sming payload: no patch version")]
    Empty,
    /// The payload ends inside the varint (every byte had the continuation bit).
    #[error("payload ends inside the patch varint after {len} bytes")]
    TruncatedVarint {
        /// Bytes of varint seen.
        len: usize,
    },
    /// The varint is longer than [`MAX_VARINT_LEN`] bytes.
    #[error("patch varint is longer than {max} bytes", max = MAX_VARINT_LEN)]
    VarintTooLong,
    /// The varint is well-formed but its value exceeds `u32`.
    #[error("patch varint of {len} bytes exceeds {max}", max = u32::MAX)]
    PatchOverflow {
        /// Varint length in bytes.
        len: usize,
    },
    /// One-byte mode cannot carry the patch.
    #[error("patch {patch} does not fit the 1-byte prefix (max 255)")]
    PatchTooLargeForByte {
        /// The patch asked for.
        patch: u32,
    },
    /// The output buffer is too small.
    #[error("output needs {needed} bytes, buffer has {available}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
}

/// What existing Sming devices will make of an encoded patch.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SmingWarning {
    /// The patch is above 127: devices decode the varint as the plain sum of its 7-bit groups
    /// and read `device_reads` instead (Sming `PayloadParser::getPatchVersion`).
    DeviceMisreads {
        /// The patch number a Sming device will see.
        device_reads: u32,
    },
    /// 1-byte mode with a patch of 128..=255: devices read the byte through a `char`, which
    /// is signed on some targets, so the comparison may see a negative number.
    SignedCharRisk,
}

/// The prefix written by [`SmingPayload::emit_prefix`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// Bytes written.
    pub len: usize,
    /// Set when devices in the field will not read the patch as written.
    pub warning: Option<SmingWarning>,
}

/// A parsed Sming payload: the patch version and the image bytes that follow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SmingPayload<'a> {
    /// The patch version (the topic carries `major.minor`).
    pub patch: u32,
    /// The image (raw ROM or `.ota` package), borrowed from the payload.
    pub body: &'a [u8],
}

impl<'a> SmingPayload<'a> {
    /// Parses a payload written by Sming's deployer (`pack`).
    pub fn parse(data: &'a [u8], encoding: PatchEncoding) -> Result<Self, SmingError> {
        match encoding {
            PatchEncoding::Byte => match data.split_first() {
                Some((&b, body)) => Ok(Self {
                    patch: u32::from(b),
                    body,
                }),
                None => Err(SmingError::Empty),
            },
            PatchEncoding::Varint => {
                if data.is_empty() {
                    return Err(SmingError::Empty);
                }
                let mut value: u64 = 0;
                let mut overflow = false;
                for (i, &b) in data.iter().enumerate() {
                    if i == MAX_VARINT_LEN {
                        return Err(SmingError::VarintTooLong);
                    }
                    let group = u64::from(b & 0x7f);
                    let shift = 7 * u32::try_from(i).unwrap_or(u32::MAX);
                    match group.checked_shl(shift) {
                        Some(v) if v >> shift == group => value |= v,
                        _ => overflow |= group != 0,
                    }
                    if b & 0x80 == 0 {
                        let len = i + 1;
                        let patch = u32::try_from(value)
                            .ok()
                            .filter(|_| !overflow)
                            .ok_or(SmingError::PatchOverflow { len })?;
                        let body = data.get(len..).unwrap_or(&[]);
                        return Ok(Self { patch, body });
                    }
                }
                Err(SmingError::TruncatedVarint { len: data.len() })
            }
        }
    }

    /// Writes only the patch prefix (the image usually streams from storage after it).
    pub fn emit_prefix(
        patch: u32,
        encoding: PatchEncoding,
        out: &mut [u8],
    ) -> Result<Prefix, SmingError> {
        let mut tmp = [0u8; 5];
        let (len, warning) = match encoding {
            PatchEncoding::Byte => {
                let b =
                    u8::try_from(patch).map_err(|_| SmingError::PatchTooLargeForByte { patch })?;
                if let Some(slot) = tmp.first_mut() {
                    *slot = b;
                }
                (1, (b > 0x7f).then_some(SmingWarning::SignedCharRisk))
            }
            PatchEncoding::Varint => {
                let mut v = patch;
                let mut len = 0;
                for slot in &mut tmp {
                    let group = (v & 0x7f) as u8;
                    v >>= 7;
                    len += 1;
                    if v == 0 {
                        *slot = group;
                        break;
                    }
                    *slot = group | 0x80;
                }
                let device_reads = device_reading(patch);
                (
                    len,
                    (device_reads != patch)
                        .then_some(SmingWarning::DeviceMisreads { device_reads }),
                )
            }
        };
        let available = out.len();
        let dst = out.get_mut(..len).ok_or(SmingError::BufferTooSmall {
            needed: len,
            available,
        })?;
        dst.copy_from_slice(tmp.get(..len).unwrap_or(&[]));
        Ok(Prefix { len, warning })
    }

    /// Writes prefix and body into `out`; returns the prefix info (total length is
    /// `prefix.len + self.body.len()`).
    pub fn emit(&self, encoding: PatchEncoding, out: &mut [u8]) -> Result<Prefix, SmingError> {
        let prefix = Self::emit_prefix(self.patch, encoding, out)?;
        let needed = prefix.len + self.body.len();
        let available = out.len();
        out.get_mut(prefix.len..needed)
            .ok_or(SmingError::BufferTooSmall { needed, available })?
            .copy_from_slice(self.body);
        Ok(prefix)
    }
}

/// The patch a Sming device reads when the deployer wrote `patch` as a varint: the sum of the
/// 7-bit groups (no shifting). Equal to `patch` exactly when `patch <= 127`.
pub const fn device_reading(patch: u32) -> u32 {
    let mut v = patch;
    let mut sum = 0;
    loop {
        sum += v & 0x7f;
        v >>= 7;
        if v == 0 {
            return sum;
        }
    }
}

/// Decodes a prefix the way Sming devices do (sum of 7-bit groups up to the first byte without
/// the continuation bit); `None` when the data ends first. For comparing what a fleet will do.
pub fn device_decode(data: &[u8]) -> Option<(u32, usize)> {
    let mut sum: u32 = 0;
    for (i, &b) in data.iter().enumerate() {
        sum = sum.saturating_add(u32::from(b & 0x7f));
        if b & 0x80 == 0 {
            return Some((sum, i + 1));
        }
    }
    None
}

/// Parses arbitrary bytes in both encodings; on success re-emits and re-parses, asserting the
/// values are equal. Used by the fuzz target and the corpus-replay test.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    let mut buf = [0u8; 4096];
    for enc in [PatchEncoding::Varint, PatchEncoding::Byte] {
        let Ok(p) = SmingPayload::parse(data, enc) else {
            continue;
        };
        let Ok(prefix) = p.emit(enc, &mut buf) else {
            continue;
        };
        let out = buf.get(..prefix.len + p.body.len()).unwrap_or(&[]);
        assert_eq!(
            SmingPayload::parse(out, enc),
            Ok(p),
            "Sming payload did not round-trip"
        );
        if enc == PatchEncoding::Varint {
            assert_eq!(
                device_decode(out).map(|(v, _)| v),
                Some(device_reading(p.patch))
            );
        }
    }
}
