//! The signed manifest: a fixed-layout, little-endian, 182-byte record that binds everything
//! a device decides on before it accepts a single payload byte.
//!
//! ```text
//! off len field
//!   0   4 magic "OTAM"
//!   4   2 format version (1)
//!   6   1 kind: 1 firmware, 2 software
//!   7   1 cipher: 0 none, 1 ChaCha20-Poly1305
//!   8  12 version: major u32, minor u32, patch u32
//!  20  12 min-version (anti-rollback floor), same layout
//!  32   8 payload size (plaintext bytes) u64
//!  40   4 chunk size u32 (16 ..= 1 MiB)
//!  44   8 created-at (Unix seconds) u64
//!  52   8 expires-at (Unix seconds, 0 = never) u64
//!  60   8 signing key id
//!  68   8 payload key id (0 when cipher = none)
//!  76   8 nonce prefix (0 when cipher = none)
//!  84  32 SHA-256 of the plaintext payload
//! 116   1 title length (1 ..= 32)     117  32 title, UTF-8, zero padded
//! 149   1 target length (1 ..= 32)    150  32 target, UTF-8, zero padded
//! 182     end
//! ```

#![deny(clippy::indexing_slicing)]

use core::fmt;

use sha2::{Digest, Sha256};

use crate::error::{CryptoError, TextField};
use crate::keys::KeyId;
use crate::wire::{Cursor, Writer};

/// Manifest magic.
pub const MAGIC: [u8; 4] = *b"OTAM";
/// Manifest format version this crate reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes of an encoded manifest.
pub const MANIFEST_LEN: usize = 182;
/// Capacity of the title and target fields.
pub const TEXT_CAPACITY: usize = 32;
/// Smallest chunk size.
pub const MIN_CHUNK_SIZE: u32 = 16;
/// Largest chunk size (1 MiB).
pub const MAX_CHUNK_SIZE: u32 = 1 << 20;
/// Bytes of a Poly1305 tag after each sealed chunk.
pub const TAG_LEN: usize = 16;

/// Firmware or software package (ThingsBoard's `FIRMWARE` / `SOFTWARE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A firmware image.
    Firmware,
    /// A software package.
    Software,
}

impl Kind {
    const fn code(self) -> u8 {
        match self {
            Self::Firmware => 1,
            Self::Software => 2,
        }
    }
}

/// A release version triple as signed in the manifest (`major.minor.patch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SemVer {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl SemVer {
    /// `major.minor.patch`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }
}

impl From<SemVer> for ota_core::version::Version<'static> {
    fn from(v: SemVer) -> Self {
        Self::new(v.major, v.minor, v.patch)
    }
}

impl fmt::Display for SemVer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A bounded UTF-8 text field (title or target).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Text {
    len: u8,
    bytes: [u8; TEXT_CAPACITY],
}

impl Text {
    /// Checks and stores `s` (1 to 32 bytes).
    pub fn new(field: TextField, s: &str) -> Result<Self, CryptoError> {
        let len = s.len();
        if len == 0 {
            return Err(CryptoError::TextEmpty(field));
        }
        let mut bytes = [0u8; TEXT_CAPACITY];
        let dst = bytes
            .get_mut(..len)
            .ok_or(CryptoError::TextTooLong { field, len })?;
        dst.copy_from_slice(s.as_bytes());
        // `len` ≤ 32 here.
        Ok(Self {
            len: u8::try_from(len).unwrap_or(u8::MAX),
            bytes,
        })
    }

    fn parse(field: TextField, len: u8, bytes: [u8; TEXT_CAPACITY]) -> Result<Self, CryptoError> {
        let n = usize::from(len);
        if n == 0 {
            return Err(CryptoError::TextEmpty(field));
        }
        let (text, pad) = bytes
            .split_at_checked(n)
            .ok_or(CryptoError::TextTooLong { field, len: n })?;
        core::str::from_utf8(text).map_err(|e| CryptoError::TextNotUtf8 {
            field,
            offset: e.valid_up_to(),
        })?;
        if pad.iter().any(|&b| b != 0) {
            return Err(CryptoError::TextPadding(field));
        }
        Ok(Self { len, bytes })
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        let bytes = self.bytes.get(..usize::from(self.len)).unwrap_or_default();
        // Checked at construction; an empty string cannot be observed.
        core::str::from_utf8(bytes).unwrap_or_default()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// How the payload is sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encryption {
    /// Plaintext payload (integrity from the signed digest only).
    None,
    /// Each chunk sealed with ChaCha20-Poly1305 under a pre-shared payload key;
    /// nonce = `nonce_prefix ‖ chunk index (u32 LE)`.
    ChaCha20Poly1305 {
        /// Which payload key.
        key_id: KeyId,
        /// Per-package random nonce prefix.
        nonce_prefix: [u8; 8],
    },
}

/// The parsed manifest (a `Copy` value; see the module docs for the layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Manifest {
    /// Firmware or software.
    pub kind: Kind,
    /// Release version.
    pub version: SemVer,
    /// Anti-rollback floor: the version must not be below it, and a device that installs the
    /// package should never accept anything below it afterwards.
    pub min_version: SemVer,
    /// Plaintext payload bytes.
    pub payload_size: u64,
    /// Plaintext bytes per chunk (the last chunk may be shorter).
    pub chunk_size: u32,
    /// Creation time (Unix seconds).
    pub created_at: u64,
    /// Expiry (Unix seconds, exclusive), if any.
    pub expires_at: Option<u64>,
    /// Id of the key that signed this manifest.
    pub signing_key: KeyId,
    /// Payload sealing.
    pub encryption: Encryption,
    /// SHA-256 of the plaintext payload.
    pub digest: [u8; 32],
    /// Title (product / application).
    pub title: Text,
    /// Target (hardware or profile id).
    pub target: Text,
}

impl Manifest {
    /// Encodes the manifest (the exact bytes that are signed).
    pub fn encode(&self) -> [u8; MANIFEST_LEN] {
        let mut out = [0u8; MANIFEST_LEN];
        let mut w = Writer::new(&mut out);
        w.put(&MAGIC);
        w.put(&FORMAT_VERSION.to_le_bytes());
        w.put(&[self.kind.code()]);
        let (cipher, key_id, prefix) = match self.encryption {
            Encryption::None => (0u8, KeyId::default(), [0u8; 8]),
            Encryption::ChaCha20Poly1305 {
                key_id,
                nonce_prefix,
            } => (1, key_id, nonce_prefix),
        };
        w.put(&[cipher]);
        for v in [self.version, self.min_version] {
            w.put(&v.major.to_le_bytes());
            w.put(&v.minor.to_le_bytes());
            w.put(&v.patch.to_le_bytes());
        }
        w.put(&self.payload_size.to_le_bytes());
        w.put(&self.chunk_size.to_le_bytes());
        w.put(&self.created_at.to_le_bytes());
        w.put(&self.expires_at.unwrap_or(0).to_le_bytes());
        w.put(&self.signing_key.0);
        w.put(&key_id.0);
        w.put(&prefix);
        w.put(&self.digest);
        for t in [&self.title, &self.target] {
            w.put(&[t.len]);
            w.put(&t.bytes);
        }
        out
    }

    /// Parses and checks an encoded manifest (syntax only: nothing here is trusted until the
    /// signature over these bytes has been verified).
    pub fn parse(bytes: &[u8]) -> Result<Self, CryptoError> {
        let short = CryptoError::Truncated {
            received: bytes.len() as u64,
            expected: MANIFEST_LEN as u64,
        };
        if bytes.len() > MANIFEST_LEN {
            return Err(CryptoError::TrailingBytes(bytes.len() - MANIFEST_LEN));
        }
        let mut c = Cursor::new(bytes);
        let magic: [u8; 4] = c.array().ok_or(short)?;
        if magic != MAGIC {
            return Err(CryptoError::BadMagic { found: magic });
        }
        let format = c.u16().ok_or(short)?;
        if format != FORMAT_VERSION {
            return Err(CryptoError::UnsupportedFormat(format));
        }
        let kind = match c.u8().ok_or(short)? {
            1 => Kind::Firmware,
            2 => Kind::Software,
            k => return Err(CryptoError::UnknownKind(k)),
        };
        let cipher = c.u8().ok_or(short)?;
        let semver = |c: &mut Cursor<'_>| -> Option<SemVer> {
            Some(SemVer {
                major: c.u32()?,
                minor: c.u32()?,
                patch: c.u32()?,
            })
        };
        let version = semver(&mut c).ok_or(short)?;
        let min_version = semver(&mut c).ok_or(short)?;
        let payload_size = c.u64().ok_or(short)?;
        let chunk_size = c.u32().ok_or(short)?;
        let created_at = c.u64().ok_or(short)?;
        let expires = c.u64().ok_or(short)?;
        let signing_key = KeyId(c.array().ok_or(short)?);
        let key_id = KeyId(c.array().ok_or(short)?);
        let nonce_prefix: [u8; 8] = c.array().ok_or(short)?;
        let digest = c.array().ok_or(short)?;
        let title_len = c.u8().ok_or(short)?;
        let title_bytes = c.array().ok_or(short)?;
        let target_len = c.u8().ok_or(short)?;
        let target_bytes = c.array().ok_or(short)?;

        let encryption = match cipher {
            0 => {
                if key_id != KeyId::default() || nonce_prefix != [0; 8] {
                    return Err(CryptoError::StrayEncryptionParameters);
                }
                Encryption::None
            }
            1 => Encryption::ChaCha20Poly1305 {
                key_id,
                nonce_prefix,
            },
            c => return Err(CryptoError::UnknownCipher(c)),
        };
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(CryptoError::ChunkSizeOutOfRange(chunk_size));
        }
        if payload_size.div_ceil(u64::from(chunk_size)) > u64::from(u32::MAX) {
            return Err(CryptoError::TooManyChunks {
                size: payload_size,
                chunk_size,
            });
        }
        let expires_at = (expires != 0).then_some(expires);
        if let Some(expires_at) = expires_at
            && expires_at <= created_at
        {
            return Err(CryptoError::ExpiresBeforeCreated {
                created_at,
                expires_at,
            });
        }
        let title = Text::parse(TextField::Title, title_len, title_bytes)?;
        let target = Text::parse(TextField::Target, target_len, target_bytes)?;
        Ok(Self {
            kind,
            version,
            min_version,
            payload_size,
            chunk_size,
            created_at,
            expires_at,
            signing_key,
            encryption,
            digest,
            title,
            target,
        })
    }

    /// Checks that this manifest encodes to bytes that [`Manifest::parse`] accepts.
    pub fn validate(&self) -> Result<(), CryptoError> {
        Self::parse(&self.encode()).map(|_| ())
    }

    /// Number of chunks the payload is cut into. An encrypted payload always has at least one
    /// (possibly empty) chunk, so every sealed payload ends with a chunk flagged "last".
    pub fn chunk_count(&self) -> u64 {
        let n = self
            .payload_size
            .div_ceil(u64::from(self.chunk_size.max(1)));
        match self.encryption {
            Encryption::None => n,
            Encryption::ChaCha20Poly1305 { .. } => n.max(1),
        }
    }

    /// Plaintext bytes in chunk `index`.
    pub fn chunk_len(&self, index: u64) -> u64 {
        let start = index.saturating_mul(u64::from(self.chunk_size));
        self.payload_size
            .saturating_sub(start)
            .min(u64::from(self.chunk_size))
    }

    /// Bytes of the payload as transported (with one tag per sealed chunk).
    pub fn sealed_payload_len(&self) -> u64 {
        match self.encryption {
            Encryption::None => self.payload_size,
            Encryption::ChaCha20Poly1305 { .. } => self
                .payload_size
                .saturating_add(self.chunk_count().saturating_mul(TAG_LEN as u64)),
        }
    }

    /// Bytes of the whole package: manifest, signature and sealed payload.
    pub fn package_len(&self) -> u64 {
        (crate::HEADER_LEN as u64).saturating_add(self.sealed_payload_len())
    }

    /// SHA-256 of the encoded manifest (bound into every chunk's associated data).
    pub fn digest_of(encoded: &[u8; MANIFEST_LEN]) -> [u8; 32] {
        Sha256::digest(encoded).into()
    }
}

/// Associated data of sealed chunk `index`: manifest digest ‖ index (u32 LE) ‖ last flag.
pub(crate) fn chunk_aad(manifest_digest: &[u8; 32], index: u32, last: bool) -> [u8; 37] {
    let mut aad = [0u8; 37];
    let mut w = Writer::new(&mut aad);
    w.put(manifest_digest);
    w.put(&index.to_le_bytes());
    w.put(&[u8::from(last)]);
    aad
}

/// Nonce of sealed chunk `index`: prefix ‖ index (u32 LE).
pub(crate) fn chunk_nonce(prefix: [u8; 8], index: u32) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    let mut w = Writer::new(&mut nonce);
    w.put(&prefix);
    w.put(&index.to_le_bytes());
    nonce
}
