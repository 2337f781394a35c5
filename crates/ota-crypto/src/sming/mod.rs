//! Sming's advanced `.ota` format (`OtaUpgrade`): read, verify, decrypt, and write.
//!
//! Plain layout (all integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic: [`MAGIC_SIGNED`] (Ed25519ph trailer) or [`MAGIC_MD5`] (MD5 trailer) |
//! | 4 | 8 | build [`Timestamp`], milliseconds since 1900-01-01 |
//! | 12 | 1 | ROM count |
//! | 13 | 3 | reserved (zero) |
//! | 16 | … | per ROM: `u32` address, `u32` size, `size` image bytes |
//! | end | 64 / 16 | Ed25519ph signature (SHA-512 prehash, empty context) or MD5 over all preceding bytes |
//!
//! Nothing may follow the trailer. The encrypted container wraps the whole plain file in a
//! libsodium `crypto_secretstream_xchacha20poly1305` stream: a 24-byte header, then chunks
//! `u16le L` + `L + 1` ciphertext bytes, the last tagged FINAL; nothing may follow it.
//!
//! [`SmingReader`] is the device side: `no_std`, no heap, bounded state; it hands the
//! image of the ROM whose address matches the target slot modulo 1 MiB to the caller and
//! accepts the package only once the trailer verified. `file` (feature `std`) produces
//! files byte-identical to Sming's `otatool.py mkfile`.
#![deny(clippy::indexing_slicing)]

mod error;
#[cfg(feature = "std")]
pub mod file;
mod key;
mod plain;
mod reader;
mod stream;

pub use error::{SmingCode, SmingError, Stage};
pub use key::{KeyFileError, SmingKey};
pub use reader::{DEFAULT_CHUNK_CAPACITY, SmingConfig, SmingReader, Summary};

use ed25519_dalek::VerifyingKey;

/// Magic of a signed package (Ed25519ph trailer).
pub const MAGIC_SIGNED: u32 = 0xF01A_F02A;
/// Magic of an unsigned package (MD5 trailer).
pub const MAGIC_MD5: u32 = 0xF01A_F020;
/// Length of the file header.
pub const FILE_HEADER_LEN: usize = 16;
/// Length of a ROM record header (address + size).
pub const ROM_HEADER_LEN: usize = 8;
/// Length of the secretstream header of an encrypted file.
pub const STREAM_HEADER_LEN: usize = 24;
/// Ciphertext overhead of one secretstream chunk (tag byte + Poly1305 MAC).
pub const STREAM_ABYTES: usize = 17;
/// Plaintext bytes per chunk in files written by `otatool.py` (2048 − 17).
pub const OTATOOL_CHUNK_PLAINTEXT: usize = 2048 - STREAM_ABYTES;
/// Devices match ROM addresses modulo this window (ESP8266 maps flash in 1 MiB windows).
pub const ADDRESS_WINDOW_MASK: u32 = 0x000F_FFFF;

/// Which trailer a package carries.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Integrity {
    /// Ed25519ph signature, 64 bytes ([`MAGIC_SIGNED`]).
    Ed25519ph,
    /// MD5 digest, 16 bytes ([`MAGIC_MD5`]); integrity only, no authenticity.
    Md5,
}

impl Integrity {
    /// The magic a package with this trailer starts with.
    pub const fn magic(self) -> u32 {
        match self {
            Self::Ed25519ph => MAGIC_SIGNED,
            Self::Md5 => MAGIC_MD5,
        }
    }

    /// The trailer length in bytes.
    pub const fn trailer_len(self) -> usize {
        match self {
            Self::Ed25519ph => 64,
            Self::Md5 => 16,
        }
    }

    /// The trailer kind a magic announces, if it is a Sming magic.
    pub const fn from_magic(magic: u32) -> Option<Self> {
        match magic {
            MAGIC_SIGNED => Some(Self::Ed25519ph),
            MAGIC_MD5 => Some(Self::Md5),
            _ => None,
        }
    }
}

impl core::fmt::Display for Integrity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Ed25519ph => "Ed25519ph signature",
            Self::Md5 => "MD5",
        })
    }
}

/// What the device trusts: a public key (signed builds) or MD5 only (unsigned builds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verifier {
    /// Accept only [`MAGIC_SIGNED`] files whose signature verifies with this key.
    Ed25519ph(VerifyingKey),
    /// Accept only [`MAGIC_MD5`] files whose MD5 matches.
    Md5,
}

impl Verifier {
    /// The trailer kind this verifier expects.
    pub const fn integrity(&self) -> Integrity {
        match self {
            Self::Ed25519ph(_) => Integrity::Ed25519ph,
            Self::Md5 => Integrity::Md5,
        }
    }
}

/// Offset between Sming's epoch (1900-01-01) and the Unix epoch, in milliseconds.
pub const EPOCH_1900_OFFSET_MS: u64 = 2_208_988_800_000;

/// A Sming build timestamp: milliseconds since 1900-01-01 UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// From Unix milliseconds (UTC); `None` on overflow.
    pub const fn from_unix_millis(ms: u64) -> Option<Self> {
        match ms.checked_add(EPOCH_1900_OFFSET_MS) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }

    /// To Unix milliseconds; `None` for instants before 1970.
    pub const fn to_unix_millis(self) -> Option<u64> {
        self.0.checked_sub(EPOCH_1900_OFFSET_MS)
    }
}

impl core::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ms since 1900", self.0)
    }
}

/// The flash slot the device will write: its address and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slot {
    /// Start address in flash; ROM records match it modulo 1 MiB.
    pub address: u32,
    /// Slot size in bytes; a matching larger ROM is rejected.
    pub size: u32,
}

impl Slot {
    /// Whether a ROM record for `address` belongs in this slot (Sming's rule).
    pub const fn matches(&self, address: u32) -> bool {
        address & ADDRESS_WINDOW_MASK == self.address & ADDRESS_WINDOW_MASK
    }
}

/// A parsed 16-byte file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileHeader {
    /// The magic (signed or MD5).
    pub magic: u32,
    /// Build timestamp.
    pub timestamp: Timestamp,
    /// Number of ROM records.
    pub rom_count: u8,
}

impl FileHeader {
    /// Parses the 16 header bytes (the magic is not judged here).
    pub fn parse(bytes: &[u8; FILE_HEADER_LEN]) -> Self {
        let [m0, m1, m2, m3, t0, t1, t2, t3, t4, t5, t6, t7, count, ..] = *bytes;
        Self {
            magic: u32::from_le_bytes([m0, m1, m2, m3]),
            timestamp: Timestamp(u64::from_le_bytes([t0, t1, t2, t3, t4, t5, t6, t7])),
            rom_count: count,
        }
    }

    /// The 16 header bytes, reserved bytes zero.
    pub fn to_bytes(&self) -> [u8; FILE_HEADER_LEN] {
        let mut out = [0u8; FILE_HEADER_LEN];
        let (magic, rest) = out.split_at_mut(4);
        magic.copy_from_slice(&self.magic.to_le_bytes());
        let (ts, rest) = rest.split_at_mut(8);
        ts.copy_from_slice(&self.timestamp.0.to_le_bytes());
        if let Some(count) = rest.first_mut() {
            *count = self.rom_count;
        }
        out
    }
}

/// A ROM record header: where the image goes and how long it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RomHeader {
    /// Flash address the image was built for.
    pub address: u32,
    /// Image length in bytes.
    pub size: u32,
}

impl RomHeader {
    /// Parses the 8 record-header bytes.
    pub fn parse(bytes: &[u8; ROM_HEADER_LEN]) -> Self {
        let [a0, a1, a2, a3, s0, s1, s2, s3] = *bytes;
        Self {
            address: u32::from_le_bytes([a0, a1, a2, a3]),
            size: u32::from_le_bytes([s0, s1, s2, s3]),
        }
    }

    /// The 8 record-header bytes.
    pub fn to_bytes(&self) -> [u8; ROM_HEADER_LEN] {
        let mut out = [0u8; ROM_HEADER_LEN];
        let (a, s) = out.split_at_mut(4);
        a.copy_from_slice(&self.address.to_le_bytes());
        s.copy_from_slice(&self.size.to_le_bytes());
        out
    }
}
