//! One streaming hasher over every checksum algorithm ThingsBoard offers, with
//! ThingsBoard's exact names and hex encodings.
//!
//! ```
//! use ota_core::checksum::{ChecksumAlgorithm, Digest, Hasher};
//!
//! // From the `fw_checksum_algorithm` / `fw_checksum` attributes of an offer:
//! let algorithm = ChecksumAlgorithm::from_tb_name("SHA256")?;
//! let expected = Digest::from_hex(
//!     algorithm,
//!     "1f825aa2f0020ef7cf91dfa30da4668d791c5d4824fc8e41354b89ec05795ab3",
//! )?;
//!
//! // Fed chunk by chunk as the image arrives:
//! let mut hasher = Hasher::new(algorithm);
//! for chunk in [&[0u8, 1, 2, 3][..], &[4, 5, 6, 7], &[8, 9]] {
//!     hasher.update(chunk);
//! }
//! assert!(hasher.finalize().matches(&expected));
//! # Ok::<(), ota_core::checksum::ChecksumError>(())
//! ```
#![deny(clippy::indexing_slicing)]

mod digest;
mod error;
mod murmur;

use core::fmt;
use core::str::FromStr;

use sha2::Digest as _;

pub use digest::{Digest, MAX_DIGEST_LEN, MAX_HEX_LEN};
pub use error::{ChecksumError, NameExcerpt};
pub use murmur::{Murmur3_32, Murmur3_128};

/// A checksum algorithm as named by ThingsBoard's `fw_checksum_algorithm` attribute.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChecksumAlgorithm {
    /// MD5 (16 bytes). Not collision resistant: accept it only for compatibility.
    Md5,
    /// SHA-256 (32 bytes), ThingsBoard's default.
    Sha256,
    /// SHA-384 (48 bytes).
    Sha384,
    /// SHA-512 (64 bytes).
    Sha512,
    /// CRC-32 (IEEE/zlib, 4 bytes). Detects corruption only.
    Crc32,
    /// MurmurHash3 x86_32, seed 0 (4 bytes). Detects corruption only.
    Murmur3_32,
    /// MurmurHash3 x64_128, seed 0 (16 bytes). Detects corruption only.
    Murmur3_128,
}

impl ChecksumAlgorithm {
    /// Every algorithm, in ThingsBoard's declaration order.
    pub const ALL: [Self; 7] = [
        Self::Md5,
        Self::Sha256,
        Self::Sha384,
        Self::Sha512,
        Self::Crc32,
        Self::Murmur3_32,
        Self::Murmur3_128,
    ];

    /// Parses ThingsBoard's exact (upper-case) name, e.g. `"SHA256"` or `"MURMUR3_128"`.
    pub fn from_tb_name(name: &str) -> Result<Self, ChecksumError> {
        Self::ALL
            .into_iter()
            .find(|alg| alg.tb_name() == name)
            .ok_or(ChecksumError::UnknownAlgorithm {
                name: NameExcerpt::new(name),
            })
    }

    /// ThingsBoard's name, as in the `fw_checksum_algorithm` attribute.
    pub const fn tb_name(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA256",
            Self::Sha384 => "SHA384",
            Self::Sha512 => "SHA512",
            Self::Crc32 => "CRC32",
            Self::Murmur3_32 => "MURMUR3_32",
            Self::Murmur3_128 => "MURMUR3_128",
        }
    }

    /// Length of the digest in bytes (its hex text is twice as long).
    pub const fn digest_len(self) -> usize {
        match self {
            Self::Md5 | Self::Murmur3_128 => 16,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
            Self::Crc32 | Self::Murmur3_32 => 4,
        }
    }

    /// Whether the algorithm resists deliberate collisions (SHA-2 family). The others only
    /// detect transport corruption; authenticity must then come from a signature.
    pub const fn is_cryptographic(self) -> bool {
        matches!(self, Self::Sha256 | Self::Sha384 | Self::Sha512)
    }
}

impl FromStr for ChecksumAlgorithm {
    type Err = ChecksumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_tb_name(s)
    }
}

impl fmt::Display for ChecksumAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tb_name())
    }
}

/// A streaming hasher for any [`ChecksumAlgorithm`]: feed the image in pieces of any size,
/// then [`finalize`](Hasher::finalize). Fixed size (at most a few hundred bytes), no
/// allocation; the result does not depend on how the input was split.
#[derive(Clone)]
pub struct Hasher {
    state: State,
}

#[derive(Clone)]
enum State {
    Md5(md5::Md5),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
    Crc32(crc32fast::Hasher),
    Murmur3_32(Murmur3_32),
    Murmur3_128(Murmur3_128),
}

impl Hasher {
    /// A fresh hasher for `algorithm`.
    pub fn new(algorithm: ChecksumAlgorithm) -> Self {
        let state = match algorithm {
            ChecksumAlgorithm::Md5 => State::Md5(md5::Md5::new()),
            ChecksumAlgorithm::Sha256 => State::Sha256(sha2::Sha256::new()),
            ChecksumAlgorithm::Sha384 => State::Sha384(sha2::Sha384::new()),
            ChecksumAlgorithm::Sha512 => State::Sha512(sha2::Sha512::new()),
            ChecksumAlgorithm::Crc32 => State::Crc32(crc32fast::Hasher::new()),
            ChecksumAlgorithm::Murmur3_32 => State::Murmur3_32(Murmur3_32::new()),
            ChecksumAlgorithm::Murmur3_128 => State::Murmur3_128(Murmur3_128::new()),
        };
        Self { state }
    }

    /// The digest of `data` in one call.
    pub fn digest(algorithm: ChecksumAlgorithm, data: &[u8]) -> Digest {
        let mut hasher = Self::new(algorithm);
        hasher.update(data);
        hasher.finalize()
    }

    /// The algorithm this hasher computes.
    pub const fn algorithm(&self) -> ChecksumAlgorithm {
        match self.state {
            State::Md5(_) => ChecksumAlgorithm::Md5,
            State::Sha256(_) => ChecksumAlgorithm::Sha256,
            State::Sha384(_) => ChecksumAlgorithm::Sha384,
            State::Sha512(_) => ChecksumAlgorithm::Sha512,
            State::Crc32(_) => ChecksumAlgorithm::Crc32,
            State::Murmur3_32(_) => ChecksumAlgorithm::Murmur3_32,
            State::Murmur3_128(_) => ChecksumAlgorithm::Murmur3_128,
        }
    }

    /// Feeds the next bytes of the input.
    #[inline]
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.state {
            State::Md5(h) => h.update(data),
            State::Sha256(h) => h.update(data),
            State::Sha384(h) => h.update(data),
            State::Sha512(h) => h.update(data),
            State::Crc32(h) => h.update(data),
            State::Murmur3_32(h) => h.update(data),
            State::Murmur3_128(h) => h.update(data),
        }
    }

    /// The digest of everything fed so far, in ThingsBoard's byte order.
    pub fn finalize(self) -> Digest {
        let algorithm = self.algorithm();
        match self.state {
            State::Md5(h) => Digest::from_raw(algorithm, &h.finalize()),
            State::Sha256(h) => Digest::from_raw(algorithm, &h.finalize()),
            State::Sha384(h) => Digest::from_raw(algorithm, &h.finalize()),
            State::Sha512(h) => Digest::from_raw(algorithm, &h.finalize()),
            // Guava's `HashCode.fromInt(v).asBytes()` is little-endian.
            State::Crc32(h) => Digest::from_raw(algorithm, &h.finalize().to_le_bytes()),
            State::Murmur3_32(h) => Digest::from_raw(algorithm, &h.finish().to_le_bytes()),
            State::Murmur3_128(h) => {
                let (h1, h2) = h.finish();
                let mut bytes = [0u8; 16];
                let (lo, hi) = bytes.split_at_mut(8);
                lo.copy_from_slice(&h1.to_le_bytes());
                hi.copy_from_slice(&h2.to_le_bytes());
                Digest::from_raw(algorithm, &bytes)
            }
        }
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher")
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
