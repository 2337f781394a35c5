//! Fixed-size, CRC-protected resume records.
//!
//! A [`Checkpoint`] says which package was being downloaded (kind, title, version, expected
//! digest, size, chunk size) and how far it got (package bytes verified, plaintext bytes
//! written, CRC-32 of the written bytes, next chunk). It encodes to exactly
//! [`CHECKPOINT_LEN`] bytes, little-endian, with a magic, a format version and a trailing
//! CRC-32, so a torn or erased record is detected, never trusted.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `"OTCK"` |
//! | 4 | 1 | format version (1) |
//! | 5 | 1 | kind: 0 firmware, 1 software |
//! | 6 | 1 | checksum algorithm: 1 MD5, 2 SHA256, 3 SHA384, 4 SHA512, 5 CRC32, 6 MURMUR3_32, 7 MURMUR3_128 |
//! | 7 | 1 | title length (≤ 64) |
//! | 8 | 1 | version length (≤ 64) |
//! | 9 | 1 | digest length (= the algorithm's) |
//! | 10 | 2 | reserved, 0 |
//! | 12 | 4 | chunk size |
//! | 16 | 8 | package size |
//! | 24 | 8 | package bytes verified |
//! | 32 | 8 | plaintext bytes written |
//! | 40 | 4 | CRC-32 of the written bytes |
//! | 44 | 4 | next chunk index |
//! | 48 | 64 | title (UTF-8, zero padded) |
//! | 112 | 64 | version (UTF-8, zero padded) |
//! | 176 | 64 | digest (zero padded) |
//! | 240 | 12 | reserved, 0 |
//! | 252 | 4 | CRC-32 (IEEE) of bytes 0..252 |
//!
//! ```
//! use ota_core::checkpoint::Checkpoint;
//! use ota_core::checksum::{ChecksumAlgorithm, Hasher};
//! use ota_core::updater::Kind;
//!
//! let cp = Checkpoint {
//!     kind: Kind::Firmware,
//!     title: "app".try_into().unwrap(),
//!     version: "1.2.0".try_into().unwrap(),
//!     digest: Hasher::digest(ChecksumAlgorithm::Sha256, b"image"),
//!     package_size: 5,
//!     chunk_size: 4096,
//!     package_offset: 0,
//!     written: 0,
//!     written_crc: 0,
//!     next_chunk: 0,
//! };
//! let bytes = cp.to_bytes();
//! assert_eq!(Checkpoint::from_bytes(&bytes)?, cp);
//! # Ok::<(), ota_core::checkpoint::CheckpointError>(())
//! ```
#![deny(clippy::indexing_slicing)]

use heapless::String;

use crate::checksum::{ChecksumAlgorithm, Digest, MAX_DIGEST_LEN};
use crate::updater::{Kind, MAX_TITLE_LEN, MAX_VERSION_LEN};

/// Encoded size of a checkpoint in bytes.
pub const CHECKPOINT_LEN: usize = 256;
/// The record's magic.
pub const MAGIC: [u8; 4] = *b"OTCK";
/// The format version written by this code.
pub const FORMAT_VERSION: u8 = 1;

const TITLE_AT: usize = 48;
const VERSION_AT: usize = TITLE_AT + MAX_TITLE_LEN;
const DIGEST_AT: usize = VERSION_AT + MAX_VERSION_LEN;
const CRC_AT: usize = CHECKPOINT_LEN - 4;

/// A field of the record, named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// The package title.
    Title,
    /// The package version.
    Version,
}

impl core::fmt::Display for Field {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Title => "title",
            Self::Version => "version",
        })
    }
}

/// Why stored bytes are not a usable checkpoint.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Fewer bytes than a record.
    #[error("checkpoint is {len} bytes, expected {CHECKPOINT_LEN}")]
    Truncated {
        /// Bytes given.
        len: usize,
    },
    /// More bytes than a record.
    #[error("checkpoint is {len} bytes, expected {CHECKPOINT_LEN}")]
    Oversized {
        /// Bytes given.
        len: usize,
    },
    /// All bytes are 0xFF: nothing was ever stored (or it was cleared).
    #[error("no checkpoint stored (erased flash)")]
    Erased,
    /// The magic is not `"OTCK"`.
    #[error("bad checkpoint magic {found:02x?}")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// A format version this code does not read.
    #[error("unsupported checkpoint format version {version}")]
    UnsupportedFormat {
        /// The stored format version.
        version: u8,
    },
    /// The CRC-32 does not match: a torn or corrupted write.
    #[error("checkpoint CRC mismatch: stored {stored:08x}, computed {computed:08x}")]
    BadCrc {
        /// CRC stored in the record.
        stored: u32,
        /// CRC of the record's bytes.
        computed: u32,
    },
    /// Unknown kind code.
    #[error("unknown package kind code {code}")]
    UnknownKind {
        /// The stored code.
        code: u8,
    },
    /// Unknown checksum algorithm code.
    #[error("unknown checksum algorithm code {code}")]
    UnknownAlgorithm {
        /// The stored code.
        code: u8,
    },
    /// A text field's length exceeds its capacity.
    #[error("checkpoint {field} length {len} exceeds {max}")]
    FieldLength {
        /// Which field.
        field: Field,
        /// Stored length.
        len: u8,
        /// Capacity.
        max: usize,
    },
    /// A text field is not UTF-8.
    #[error("checkpoint {field} is not UTF-8")]
    NotUtf8 {
        /// Which field.
        field: Field,
    },
    /// The digest length does not match the algorithm.
    #[error("checkpoint digest length {len} does not match {algorithm}")]
    DigestLength {
        /// The algorithm.
        algorithm: ChecksumAlgorithm,
        /// Stored length.
        len: u8,
    },
    /// The chunk size is 0.
    #[error("checkpoint chunk size is 0")]
    ZeroChunkSize,
    /// Bytes verified exceed the package size.
    #[error("checkpoint offset {offset} exceeds package size {size}")]
    OffsetPastEnd {
        /// Stored offset.
        offset: u64,
        /// Stored package size.
        size: u64,
    },
}

/// A resume record. See the [module docs](self) for the byte layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Firmware or software.
    pub kind: Kind,
    /// Package title.
    pub title: String<MAX_TITLE_LEN>,
    /// Package version.
    pub version: String<MAX_VERSION_LEN>,
    /// The digest the image must have (with its algorithm).
    pub digest: Digest,
    /// Package size in bytes.
    pub package_size: u64,
    /// Chunk size of the download.
    pub chunk_size: u32,
    /// Package bytes received and fed to the reader.
    pub package_offset: u64,
    /// Plaintext bytes written to the slot.
    pub written: u64,
    /// CRC-32 of the first `written` slot bytes.
    pub written_crc: u32,
    /// Index of the next chunk to request.
    pub next_chunk: u32,
}

const fn algorithm_code(a: ChecksumAlgorithm) -> u8 {
    match a {
        ChecksumAlgorithm::Md5 => 1,
        ChecksumAlgorithm::Sha256 => 2,
        ChecksumAlgorithm::Sha384 => 3,
        ChecksumAlgorithm::Sha512 => 4,
        ChecksumAlgorithm::Crc32 => 5,
        ChecksumAlgorithm::Murmur3_32 => 6,
        ChecksumAlgorithm::Murmur3_128 => 7,
    }
}

const fn algorithm_from_code(code: u8) -> Option<ChecksumAlgorithm> {
    Some(match code {
        1 => ChecksumAlgorithm::Md5,
        2 => ChecksumAlgorithm::Sha256,
        3 => ChecksumAlgorithm::Sha384,
        4 => ChecksumAlgorithm::Sha512,
        5 => ChecksumAlgorithm::Crc32,
        6 => ChecksumAlgorithm::Murmur3_32,
        7 => ChecksumAlgorithm::Murmur3_128,
        _ => return None,
    })
}

fn put(out: &mut [u8; CHECKPOINT_LEN], at: usize, bytes: &[u8]) {
    if let Some(dst) = out.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

fn get<const N: usize>(b: &[u8; CHECKPOINT_LEN], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = b.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

fn text<const N: usize>(
    b: &[u8; CHECKPOINT_LEN],
    at: usize,
    len: u8,
    field: Field,
) -> Result<String<N>, CheckpointError> {
    let too_long = CheckpointError::FieldLength { field, len, max: N };
    let raw = b.get(at..at + usize::from(len)).ok_or(too_long)?;
    let s = core::str::from_utf8(raw).map_err(|_| CheckpointError::NotUtf8 { field })?;
    String::try_from(s).map_err(|_| too_long)
}

impl Checkpoint {
    /// Encodes to the fixed-size record.
    pub fn to_bytes(&self) -> [u8; CHECKPOINT_LEN] {
        let mut b = [0u8; CHECKPOINT_LEN];
        let digest = self.digest.as_bytes();
        put(&mut b, 0, &MAGIC);
        #[allow(clippy::cast_possible_truncation)] // lengths are ≤ 64 by type
        let header = [
            FORMAT_VERSION,
            match self.kind {
                Kind::Firmware => 0,
                Kind::Software => 1,
            },
            algorithm_code(self.digest.algorithm()),
            self.title.len() as u8,
            self.version.len() as u8,
            digest.len() as u8,
        ];
        put(&mut b, 4, &header);
        put(&mut b, 12, &self.chunk_size.to_le_bytes());
        put(&mut b, 16, &self.package_size.to_le_bytes());
        put(&mut b, 24, &self.package_offset.to_le_bytes());
        put(&mut b, 32, &self.written.to_le_bytes());
        put(&mut b, 40, &self.written_crc.to_le_bytes());
        put(&mut b, 44, &self.next_chunk.to_le_bytes());
        put(&mut b, TITLE_AT, self.title.as_bytes());
        put(&mut b, VERSION_AT, self.version.as_bytes());
        put(&mut b, DIGEST_AT, digest);
        let crc = crc32fast::hash(b.get(..CRC_AT).unwrap_or_default());
        put(&mut b, CRC_AT, &crc.to_le_bytes());
        b
    }

    /// Decodes a record; every malformed input is a typed error, never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CheckpointError> {
        let b: &[u8; CHECKPOINT_LEN] = match bytes.len() {
            n if n < CHECKPOINT_LEN => return Err(CheckpointError::Truncated { len: n }),
            n if n > CHECKPOINT_LEN => return Err(CheckpointError::Oversized { len: n }),
            _ => bytes
                .try_into()
                .map_err(|_| CheckpointError::Truncated { len: bytes.len() })?,
        };
        if b.iter().all(|&x| x == 0xFF) {
            return Err(CheckpointError::Erased);
        }
        let magic: [u8; 4] = get(b, 0);
        if magic != MAGIC {
            return Err(CheckpointError::BadMagic { found: magic });
        }
        let [version, kind, alg, title_len, version_len, digest_len] = get(b, 4);
        if version != FORMAT_VERSION {
            return Err(CheckpointError::UnsupportedFormat { version });
        }
        let stored = u32::from_le_bytes(get(b, CRC_AT));
        let computed = crc32fast::hash(b.get(..CRC_AT).unwrap_or_default());
        if stored != computed {
            return Err(CheckpointError::BadCrc { stored, computed });
        }
        let kind = match kind {
            0 => Kind::Firmware,
            1 => Kind::Software,
            code => return Err(CheckpointError::UnknownKind { code }),
        };
        let algorithm =
            algorithm_from_code(alg).ok_or(CheckpointError::UnknownAlgorithm { code: alg })?;
        let title = text(b, TITLE_AT, title_len, Field::Title)?;
        let version = text(b, VERSION_AT, version_len, Field::Version)?;
        let bad_digest = CheckpointError::DigestLength {
            algorithm,
            len: digest_len,
        };
        if usize::from(digest_len) > MAX_DIGEST_LEN {
            return Err(bad_digest);
        }
        let raw = b
            .get(DIGEST_AT..DIGEST_AT + usize::from(digest_len))
            .ok_or(bad_digest)?;
        let digest = Digest::from_bytes(algorithm, raw).map_err(|_| bad_digest)?;
        let chunk_size = u32::from_le_bytes(get(b, 12));
        let package_size = u64::from_le_bytes(get(b, 16));
        let package_offset = u64::from_le_bytes(get(b, 24));
        if chunk_size == 0 {
            return Err(CheckpointError::ZeroChunkSize);
        }
        if package_offset > package_size {
            return Err(CheckpointError::OffsetPastEnd {
                offset: package_offset,
                size: package_size,
            });
        }
        Ok(Self {
            kind,
            title,
            version,
            digest,
            package_size,
            chunk_size,
            package_offset,
            written: u64::from_le_bytes(get(b, 32)),
            written_crc: u32::from_le_bytes(get(b, 40)),
            next_chunk: u32::from_le_bytes(get(b, 44)),
        })
    }
}

/// Fuzz entry point: parse; on success re-encode and re-parse, which must give the same
/// record. Panics only if that property breaks.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    if let Ok(cp) = Checkpoint::from_bytes(data) {
        let again = Checkpoint::from_bytes(&cp.to_bytes());
        assert_eq!(
            again.as_ref(),
            Ok(&cp),
            "checkpoint re-encode changed the record"
        );
    }
}
