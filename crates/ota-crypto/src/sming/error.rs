//! Errors of the Sming `.ota` reader, mirroring Sming's `OtaUpgrade::BasicStream::Error`.

use ota_core::UpdateError;

use super::{Integrity, Timestamp};

/// Sming's own error codes (`OtaUpgrade::BasicStream::Error`, in enum order).
///
/// Sming never sends them on a wire; they are here so that logs and tests can say which
/// device-side error a [`SmingError`] corresponds to.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SmingCode {
    /// `None`: no error.
    None = 0,
    /// `InvalidFormat`: wrong magic, or data after the encrypted stream's final chunk.
    InvalidFormat = 1,
    /// `UnsupportedData`: bytes after the trailer.
    UnsupportedData = 2,
    /// `DecryptionFailed`: a secretstream chunk failed authentication.
    DecryptionFailed = 3,
    /// `NoRomFound`: no ROM record matches the target slot.
    NoRomFound = 4,
    /// `RomTooLarge`: the matching ROM does not fit the slot.
    RomTooLarge = 5,
    /// `DowngradeNotAllowed`: the file is older than the running firmware.
    DowngradeNotAllowed = 6,
    /// `VerificationFailed`: signature or MD5 mismatch.
    VerificationFailed = 7,
    /// `FlashWriteFailed` (device side only).
    FlashWriteFailed = 8,
    /// `RomActivationFailed` (device side only).
    RomActivationFailed = 9,
    /// `OutOfMemory`: an encrypted chunk is larger than the reader can hold.
    OutOfMemory = 10,
    /// `Internal` (device side only).
    Internal = 11,
}

/// Where in the plain layout a stream ended early.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Inside the secretstream header (first 24 bytes of an encrypted file).
    StreamHeader,
    /// Inside an encrypted chunk or its length prefix.
    Chunk,
    /// Inside the 16-byte file header.
    FileHeader,
    /// Inside an 8-byte ROM record header.
    RomHeader,
    /// Inside a ROM image.
    RomImage,
    /// Inside the signature or MD5 trailer.
    Trailer,
}

impl core::fmt::Display for Stage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::StreamHeader => "secretstream header",
            Self::Chunk => "encrypted chunk",
            Self::FileHeader => "file header",
            Self::RomHeader => "ROM record header",
            Self::RomImage => "ROM image",
            Self::Trailer => "trailer",
        })
    }
}

/// Why a Sming `.ota` stream was rejected. Sticky: once returned, every later call returns it.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SmingError {
    /// The magic is not the one this reader expects (a signed reader given an MD5 file, or
    /// the reverse, or not a Sming file at all). Sming: `InvalidFormat`.
    #[error("magic {found:#010x} is not the expected {expected:#010x}")]
    WrongMagic {
        /// The magic found at offset 0.
        found: u32,
        /// The magic the reader was configured for.
        expected: u32,
    },
    /// A byte followed the encrypted chunk tagged FINAL. Sming: `InvalidFormat`.
    #[error("data after the final encrypted chunk (chunk {chunk})")]
    DataAfterFinal {
        /// Index of the FINAL chunk.
        chunk: u32,
    },
    /// A byte followed the trailer of the plain layout. Sming: `UnsupportedData`.
    #[error("data after the trailer at plain offset {offset}")]
    DataAfterTrailer {
        /// Offset of the first extra byte in the plain layout.
        offset: u64,
    },
    /// A secretstream chunk failed authentication (or is shorter than its 17-byte
    /// overhead). Sming: `DecryptionFailed`.
    #[error("encrypted chunk {chunk} ({len} bytes) failed authentication")]
    DecryptionFailed {
        /// Chunk index, from 0.
        chunk: u32,
        /// Ciphertext length of that chunk.
        len: u32,
    },
    /// The trailer verified but no ROM record matched the slot. Sming: `NoRomFound`.
    #[error("no ROM record matches slot address {slot_address:#x} (modulo 1 MiB)")]
    NoRomFound {
        /// The slot address the reader was configured with.
        slot_address: u32,
    },
    /// The matching ROM is larger than the slot. Sming: `RomTooLarge`.
    #[error("ROM {rom} is {size} bytes, the slot holds {slot_size}")]
    RomTooLarge {
        /// ROM record index.
        rom: u8,
        /// ROM size from its record.
        size: u32,
        /// Slot size.
        slot_size: u32,
    },
    /// The file's build timestamp is older than the running firmware's. Sming:
    /// `DowngradeNotAllowed`.
    #[error("package timestamp {found} is older than the running firmware's {minimum}")]
    DowngradeNotAllowed {
        /// Timestamp in the file header.
        found: Timestamp,
        /// The running firmware's build timestamp.
        minimum: Timestamp,
    },
    /// The Ed25519ph signature or the MD5 digest does not match. Sming: `VerificationFailed`.
    #[error("{integrity} trailer does not match the package")]
    VerificationFailed {
        /// Which check failed.
        integrity: Integrity,
    },
    /// An encrypted chunk is larger than this reader's chunk buffer. Sming: `OutOfMemory`.
    #[error("encrypted chunk {chunk} is {len} bytes, the reader holds at most {capacity}")]
    ChunkTooLarge {
        /// Chunk index, from 0.
        chunk: u32,
        /// Ciphertext length announced by the prefix.
        len: u32,
        /// This reader's chunk capacity.
        capacity: u32,
    },
    /// The stream ended before the package was complete (ours; Sming leaves this to the
    /// missing signature check).
    #[error("package ends inside the {stage} at byte {offset}")]
    Truncated {
        /// What was being read.
        stage: Stage,
        /// Input bytes seen.
        offset: u64,
    },
}

impl SmingError {
    /// The Sming device error this corresponds to.
    pub const fn sming_code(self) -> SmingCode {
        match self {
            Self::WrongMagic { .. } | Self::DataAfterFinal { .. } | Self::Truncated { .. } => {
                SmingCode::InvalidFormat
            }
            Self::DataAfterTrailer { .. } => SmingCode::UnsupportedData,
            Self::DecryptionFailed { .. } => SmingCode::DecryptionFailed,
            Self::NoRomFound { .. } => SmingCode::NoRomFound,
            Self::RomTooLarge { .. } => SmingCode::RomTooLarge,
            Self::DowngradeNotAllowed { .. } => SmingCode::DowngradeNotAllowed,
            Self::VerificationFailed { .. } => SmingCode::VerificationFailed,
            Self::ChunkTooLarge { .. } => SmingCode::OutOfMemory,
        }
    }
}

impl From<SmingError> for UpdateError {
    fn from(e: SmingError) -> Self {
        match e {
            SmingError::WrongMagic { .. }
            | SmingError::DataAfterFinal { .. }
            | SmingError::DataAfterTrailer { .. }
            | SmingError::Truncated { .. } => Self::InvalidPackage,
            SmingError::DecryptionFailed { .. } => Self::DecryptionFailed,
            SmingError::NoRomFound { .. } => Self::WrongTarget,
            SmingError::RomTooLarge { .. } | SmingError::ChunkTooLarge { .. } => {
                Self::InsufficientStorage
            }
            SmingError::DowngradeNotAllowed { .. } => Self::DowngradeRejected,
            SmingError::VerificationFailed {
                integrity: Integrity::Ed25519ph,
            } => Self::SignatureInvalid,
            SmingError::VerificationFailed {
                integrity: Integrity::Md5,
            } => Self::ChecksumMismatch,
        }
    }
}
