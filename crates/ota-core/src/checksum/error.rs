//! Typed errors of the `checksum` module.

use core::fmt;

use super::ChecksumAlgorithm;
use crate::UpdateError;

/// Why a checksum name, hex string or digest was rejected. `Copy` and small; the message names
/// the offending value.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    /// The algorithm name is not one of ThingsBoard's (`MD5`, `SHA256`, `SHA384`, `SHA512`,
    /// `CRC32`, `MURMUR3_32`, `MURMUR3_128`; exact, upper case).
    #[error("unknown checksum algorithm {name}")]
    UnknownAlgorithm {
        /// A bounded copy of the rejected name.
        name: NameExcerpt,
    },
    /// A character of a hex checksum is not `0-9`, `a-f` or `A-F`.
    #[error("invalid hex character {found:?} at position {position} of a {algorithm} checksum")]
    InvalidHexChar {
        /// The algorithm whose checksum was being parsed.
        algorithm: ChecksumAlgorithm,
        /// Byte offset of the character in the input string.
        position: usize,
        /// The offending character.
        found: char,
    },
    /// A hex checksum has the wrong number of characters for its algorithm.
    #[error("{algorithm} checksum has {got} hex characters, expected {expected}")]
    HexLength {
        /// The algorithm whose checksum was being parsed.
        algorithm: ChecksumAlgorithm,
        /// Characters required (twice [`ChecksumAlgorithm::digest_len`]).
        expected: usize,
        /// Characters (bytes) received.
        got: usize,
    },
    /// A raw digest has the wrong number of bytes for its algorithm.
    #[error("{algorithm} digest has {got} bytes, expected {expected}")]
    DigestLength {
        /// The algorithm of the digest.
        algorithm: ChecksumAlgorithm,
        /// Bytes required ([`ChecksumAlgorithm::digest_len`]).
        expected: usize,
        /// Bytes received.
        got: usize,
    },
}

impl From<ChecksumError> for UpdateError {
    /// An unknown algorithm name is [`UpdateError::UnsupportedAlgorithm`]; a malformed
    /// checksum value is [`UpdateError::InvalidPackage`].
    fn from(e: ChecksumError) -> Self {
        match e {
            ChecksumError::UnknownAlgorithm { .. } => UpdateError::UnsupportedAlgorithm,
            ChecksumError::InvalidHexChar { .. }
            | ChecksumError::HexLength { .. }
            | ChecksumError::DigestLength { .. } => UpdateError::InvalidPackage,
        }
    }
}

/// A bounded, `Copy` excerpt of a rejected name: its first [`NameExcerpt::CAPACITY`] bytes
/// (cut on a character boundary) and its full length, so an error can name the value
/// without allocating and without holding a borrow of the input.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NameExcerpt {
    bytes: [u8; NameExcerpt::CAPACITY],
    kept: u8,
    full_len: usize,
}

impl NameExcerpt {
    /// Bytes kept from the rejected name (the longest valid name, `MURMUR3_128`, has 11).
    pub const CAPACITY: usize = 24;

    /// Copies at most [`Self::CAPACITY`] bytes of `name`, cut on a character boundary.
    pub fn new(name: &str) -> Self {
        let kept = name.floor_char_boundary(Self::CAPACITY);
        let mut bytes = [0u8; Self::CAPACITY];
        if let (Some(dst), Some(src)) = (bytes.get_mut(..kept), name.as_bytes().get(..kept)) {
            dst.copy_from_slice(src);
        }
        Self {
            bytes,
            // `kept <= CAPACITY = 24`, so it fits.
            kept: u8::try_from(kept).unwrap_or(0),
            full_len: name.len(),
        }
    }

    /// The kept prefix of the name.
    pub fn as_str(&self) -> &str {
        let kept = self.bytes.get(..usize::from(self.kept)).unwrap_or_default();
        core::str::from_utf8(kept).unwrap_or_default()
    }

    /// Length in bytes of the whole rejected name.
    pub const fn full_len(&self) -> usize {
        self.full_len
    }

    /// Whether the name was longer than what was kept.
    pub const fn is_truncated(&self) -> bool {
        self.full_len > self.kept as usize
    }
}

impl fmt::Display for NameExcerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_truncated() {
            write!(f, "{:?}… ({} bytes)", self.as_str(), self.full_len)
        } else {
            write!(f, "{:?}", self.as_str())
        }
    }
}

impl fmt::Debug for NameExcerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
