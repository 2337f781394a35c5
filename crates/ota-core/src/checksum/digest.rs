//! A finished checksum value and its ThingsBoard hex encoding.

use core::fmt;

use super::{ChecksumAlgorithm, ChecksumError};

/// Largest digest of any algorithm (SHA-512), in bytes.
pub const MAX_DIGEST_LEN: usize = 64;

/// Longest hex encoding of any digest, in characters.
pub const MAX_HEX_LEN: usize = 2 * MAX_DIGEST_LEN;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A checksum value of a known algorithm, held inline (no allocation).
///
/// The bytes are the ones ThingsBoard hex-encodes (Guava's `HashCode.asBytes()`): the standard
/// digest for MD5/SHA-*, and the little-endian bytes of the integer result for CRC32 and
/// MURMUR3_32 (`h1` then `h2`, each little-endian, for MURMUR3_128). So the hex text of
/// [`Digest::to_hex`] is byte-for-byte the `fw_checksum` attribute ThingsBoard publishes.
///
/// ```
/// use ota_core::checksum::{ChecksumAlgorithm, Digest, Hasher};
///
/// let announced = Digest::from_hex(ChecksumAlgorithm::Crc32, "2639F4CB")?;
/// let mut hasher = Hasher::new(ChecksumAlgorithm::Crc32);
/// hasher.update(b"1234");
/// hasher.update(b"56789");
/// let computed = hasher.finalize();
/// assert!(computed.matches(&announced));
/// let mut buf = [0u8; 128];
/// assert_eq!(computed.to_hex(&mut buf), "2639f4cb");
/// # Ok::<(), ota_core::checksum::ChecksumError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest {
    // Invariant: bytes past `len` are zero, so whole-array comparisons are exact.
    bytes: [u8; MAX_DIGEST_LEN],
    len: u8,
    algorithm: ChecksumAlgorithm,
}

impl Digest {
    /// Wraps `bytes` (already checked to be `algorithm.digest_len()` long by the caller).
    pub(super) fn from_raw(algorithm: ChecksumAlgorithm, raw: &[u8]) -> Self {
        let mut bytes = [0u8; MAX_DIGEST_LEN];
        let len = raw.len().min(MAX_DIGEST_LEN);
        if let (Some(dst), Some(src)) = (bytes.get_mut(..len), raw.get(..len)) {
            dst.copy_from_slice(src);
        }
        Self {
            bytes,
            len: u8::try_from(len).unwrap_or(0),
            algorithm,
        }
    }

    /// A digest from its raw bytes (as [`Digest::as_bytes`] returns them).
    pub fn from_bytes(algorithm: ChecksumAlgorithm, bytes: &[u8]) -> Result<Self, ChecksumError> {
        let expected = algorithm.digest_len();
        if bytes.len() != expected {
            return Err(ChecksumError::DigestLength {
                algorithm,
                expected,
                got: bytes.len(),
            });
        }
        Ok(Self::from_raw(algorithm, bytes))
    }

    /// Parses a hex checksum (upper or lower case) such as ThingsBoard's `fw_checksum`.
    ///
    /// The length must be exactly `2 * algorithm.digest_len()` characters; no `0x` prefix,
    /// no separators, no whitespace.
    pub fn from_hex(algorithm: ChecksumAlgorithm, hex: &str) -> Result<Self, ChecksumError> {
        let expected = 2 * algorithm.digest_len();
        if hex.len() != expected {
            return Err(ChecksumError::HexLength {
                algorithm,
                expected,
                got: hex.len(),
            });
        }
        let mut bytes = [0u8; MAX_DIGEST_LEN];
        let (pairs, _) = hex.as_bytes().as_chunks::<2>();
        for (i, (dst, &[hi, lo])) in bytes.iter_mut().zip(pairs).enumerate() {
            let nibble = |offset: usize, c: u8| {
                nibble_value(c).ok_or_else(|| ChecksumError::InvalidHexChar {
                    algorithm,
                    position: 2 * i + offset,
                    found: hex
                        .get(2 * i + offset..)
                        .and_then(|rest| rest.chars().next())
                        .unwrap_or(char::REPLACEMENT_CHARACTER),
                })
            };
            *dst = (nibble(0, hi)? << 4) | nibble(1, lo)?;
        }
        Ok(Self {
            bytes,
            len: u8::try_from(algorithm.digest_len()).unwrap_or(0),
            algorithm,
        })
    }

    /// The algorithm this digest was computed with.
    pub const fn algorithm(&self) -> ChecksumAlgorithm {
        self.algorithm
    }

    /// The digest bytes, `algorithm().digest_len()` long.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// Writes the lowercase hex encoding (ThingsBoard's exact text) into `buf` and returns it.
    pub fn to_hex<'b>(&self, buf: &'b mut [u8; MAX_HEX_LEN]) -> &'b str {
        let (pairs, _) = buf.as_chunks_mut::<2>();
        for (pair, &b) in pairs.iter_mut().zip(self.as_bytes()) {
            *pair = [hex_digit(b >> 4), hex_digit(b)];
        }
        let hex = buf.get(..2 * usize::from(self.len)).unwrap_or_default();
        core::str::from_utf8(hex).unwrap_or_default()
    }

    /// Writes the lowercase hex encoding to any [`fmt::Write`] (also what `Display` prints).
    pub fn write_hex<W: fmt::Write + ?Sized>(&self, out: &mut W) -> fmt::Result {
        let mut buf = [0u8; MAX_HEX_LEN];
        out.write_str(self.to_hex(&mut buf))
    }

    /// Compares with `other` in time independent of where the bytes differ, so a device
    /// checking a value against an announced one leaks nothing about it through timing.
    /// Different algorithms never match.
    pub fn matches(&self, other: &Digest) -> bool {
        let diff = self
            .bytes
            .iter()
            .zip(other.bytes.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // `black_box` keeps the optimiser from turning the fold into an early-exit compare.
        let diff = core::hint::black_box(diff);
        // Algorithm and length are public, so short-circuiting on them leaks nothing.
        self.algorithm == other.algorithm && self.len == other.len && diff == 0
    }
}

/// Value of one hex digit, either case.
const fn nibble_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The lowercase hex digit of the low nibble of `n`.
fn hex_digit(n: u8) -> u8 {
    HEX.get(usize::from(n & 0x0f)).copied().unwrap_or(b'0')
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_hex(f)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({}:", self.algorithm)?;
        self.write_hex(f)?;
        f.write_str(")")
    }
}
