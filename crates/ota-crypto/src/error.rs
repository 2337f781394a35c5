//! The typed error of the signed package format, and its mapping to the updater's wire errors.

#![deny(clippy::indexing_slicing)]

use ota_core::UpdateError;

use crate::keys::KeyId;
use crate::manifest::SemVer;

/// Which length-bounded text field of a manifest an error is about.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TextField {
    /// The package title (product / application name).
    Title,
    /// The target (hardware or profile id).
    Target,
}

impl core::fmt::Display for TextField {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Title => "title",
            Self::Target => "target",
        })
    }
}

/// Everything that can go wrong while parsing, verifying or decrypting a package or key set.
///
/// Every variant is distinct so a device log (and a test) can tell *why* a package was
/// rejected; [`CryptoError::update_error`] folds them into the stable wire names the updater
/// reports. Small and `Copy`.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum CryptoError {
    // ---- manifest syntax -------------------------------------------------------------
    /// The manifest does not start with the `OTAM` magic.
    #[error("manifest magic is {found:02x?}, expected \"OTAM\"")]
    BadMagic {
        /// The four bytes found.
        found: [u8; 4],
    },
    /// The manifest uses a format version this reader does not know.
    #[error("manifest format version {0} is not supported (this reader knows 1)")]
    UnsupportedFormat(u16),
    /// The manifest's kind byte is neither firmware (1) nor software (2).
    #[error("package kind {0} is unknown (1 = firmware, 2 = software)")]
    UnknownKind(u8),
    /// The manifest's cipher byte names no known payload encryption.
    #[error("payload cipher {0} is unknown (0 = none, 1 = ChaCha20-Poly1305)")]
    UnknownCipher(u8),
    /// The chunk size is outside the allowed range.
    #[error("chunk size {0} is outside {min}..={max}", min = crate::manifest::MIN_CHUNK_SIZE, max = crate::manifest::MAX_CHUNK_SIZE)]
    ChunkSizeOutOfRange(u32),
    /// A text field's length byte exceeds the field's capacity.
    #[error("{field} length {len} exceeds {max} bytes", max = crate::manifest::TEXT_CAPACITY)]
    TextTooLong {
        /// Which field.
        field: TextField,
        /// The declared length.
        len: usize,
    },
    /// A text field is empty.
    #[error("{0} is empty")]
    TextEmpty(TextField),
    /// A text field is not UTF-8.
    #[error("{field} is not UTF-8 (invalid byte at offset {offset})")]
    TextNotUtf8 {
        /// Which field.
        field: TextField,
        /// Offset of the first invalid byte inside the field.
        offset: usize,
    },
    /// The padding after a text field is not all zero (one manifest, one encoding).
    #[error("{0} padding is not zero")]
    TextPadding(TextField),
    /// An unencrypted manifest carries a non-zero encryption key id or nonce prefix.
    #[error("unencrypted manifest carries encryption parameters")]
    StrayEncryptionParameters,
    /// The payload is too large for the chunk count to fit the 32-bit chunk index.
    #[error("payload of {size} bytes needs more than 2^32 chunks of {chunk_size} bytes")]
    TooManyChunks {
        /// Declared payload size.
        size: u64,
        /// Declared chunk size.
        chunk_size: u32,
    },
    /// The manifest expires before it was created.
    #[error("manifest expires at {expires_at}, before its creation at {created_at}")]
    ExpiresBeforeCreated {
        /// Creation time (Unix seconds).
        created_at: u64,
        /// Expiry (Unix seconds).
        expires_at: u64,
    },

    // ---- signing keys and signatures --------------------------------------------------
    /// The manifest names a signing key the pinned key set does not contain.
    #[error("signing key {0} is not in the key set")]
    UnknownSigningKey(KeyId),
    /// The manifest's signing key has been revoked by the root.
    #[error("signing key {0} is revoked")]
    RevokedSigningKey(KeyId),
    /// The signing key is not valid yet at the device's `now`.
    #[error("signing key {id} is valid from {valid_from}, now is {now}")]
    SigningKeyNotYetValid {
        /// The key.
        id: KeyId,
        /// Start of its validity window (Unix seconds).
        valid_from: u64,
        /// The device's time.
        now: u64,
    },
    /// The signing key's validity window has ended.
    #[error("signing key {id} was valid until {valid_until}, now is {now}")]
    SigningKeyExpired {
        /// The key.
        id: KeyId,
        /// End of its validity window (Unix seconds, exclusive).
        valid_until: u64,
        /// The device's time.
        now: u64,
    },
    /// The key set entry holds bytes that are not a valid ed25519 public key.
    #[error("signing key {0} is not a valid ed25519 point")]
    MalformedPublicKey(KeyId),
    /// The manifest signature does not verify (strictly) with the named key.
    #[error("manifest signature does not verify with signing key {0}")]
    BadSignature(KeyId),

    // ---- key sets ---------------------------------------------------------------------
    /// The key set does not start with the `OTAK` magic.
    #[error("key set magic is {found:02x?}, expected \"OTAK\"")]
    KeySetBadMagic {
        /// The four bytes found.
        found: [u8; 4],
    },
    /// The key set uses a format version this reader does not know.
    #[error("key set format version {0} is not supported (this reader knows 1)")]
    KeySetUnsupportedFormat(u16),
    /// The key set lists more keys than a device holds.
    #[error("key set lists {0} keys, at most {max} allowed", max = crate::keys::MAX_KEYS)]
    KeySetTooManyKeys(usize),
    /// The key set lists more revocations than a device holds.
    #[error("key set lists {0} revocations, at most {max} allowed", max = crate::keys::MAX_REVOKED)]
    KeySetTooManyRevocations(usize),
    /// The key set's length disagrees with its counts.
    #[error("key set is {found} bytes, its counts require {expected}")]
    KeySetLength {
        /// Length implied by the header counts.
        expected: usize,
        /// Length received.
        found: usize,
    },
    /// Two entries of a key set share a key id.
    #[error("key id {0} appears twice in the key set")]
    KeySetDuplicateKey(KeyId),
    /// A key entry's id is not derived from its public key.
    #[error("key set entry {0} does not match its public key's id")]
    KeySetKeyIdMismatch(KeyId),
    /// A key entry's validity window is empty.
    #[error("key set entry {0} has an empty validity window")]
    KeySetEmptyWindow(KeyId),
    /// The key set is not signed by the pinned root key.
    #[error("key set is not signed by the pinned root key")]
    KeySetNotSignedByRoot,
    /// The key set is older than one the device already accepted (replay).
    #[error("key set version {found} is older than the accepted version {accepted}")]
    KeySetRollback {
        /// Version of the offered set.
        found: u64,
        /// Highest version the device accepted before.
        accepted: u64,
    },

    // ---- device policy ----------------------------------------------------------------
    /// The package is for another target.
    #[error("package target does not match this device's target")]
    WrongTarget,
    /// The package is of another kind (firmware vs software) than the device asked for.
    #[error("package kind does not match the expected kind")]
    WrongKind,
    /// The signed manifest carries another version than the one the server offered.
    #[error("the package is signed as version {signed}, but version {offered} was offered")]
    NotTheOfferedVersion {
        /// Version in the (unsigned) offer.
        offered: SemVer,
        /// Version in the signed manifest.
        signed: SemVer,
    },
    /// The manifest's own version is below the anti-rollback floor it declares.
    #[error("version {version} is below the manifest's min-version {min_version}")]
    BelowMinVersion {
        /// Version of the package.
        version: SemVer,
        /// Its declared anti-rollback floor.
        min_version: SemVer,
    },
    /// The package version is below the highest version the device already accepted.
    #[error("version {version} is below the device's highest accepted version {accepted}")]
    BelowAcceptedVersion {
        /// Version of the package.
        version: SemVer,
        /// Highest version the device accepted before.
        accepted: SemVer,
    },
    /// The manifest has expired at the device's `now`.
    #[error("manifest expired at {expires_at}, now is {now}")]
    Expired {
        /// Expiry (Unix seconds).
        expires_at: u64,
        /// The device's time.
        now: u64,
    },

    // ---- payload ----------------------------------------------------------------------
    /// The payload is encrypted under a key this device does not hold.
    #[error("payload is encrypted under key {0}, which this device does not hold")]
    UnknownPayloadKey(KeyId),
    /// An encrypted chunk failed authentication (tampered, reordered, spliced or truncated).
    #[error("chunk {0} failed authentication")]
    ChunkAuthentication(u32),
    /// The caller's chunk buffer cannot hold one sealed chunk.
    #[error("chunk buffer holds {available} bytes, a sealed chunk needs {needed}")]
    ChunkBufferTooSmall {
        /// Bytes needed (chunk size + tag).
        needed: usize,
        /// Bytes the caller provided.
        available: usize,
    },
    /// Bytes arrived after the end of the package.
    #[error("{0} bytes after the end of the package")]
    TrailingBytes(usize),
    /// The stream ended before the package did.
    #[error("package ended after {received} of {expected} bytes")]
    Truncated {
        /// Package bytes received.
        received: u64,
        /// Package length declared by the manifest.
        expected: u64,
    },
    /// The plaintext digest does not match the signed one.
    #[error("payload SHA-256 does not match the signed digest")]
    DigestMismatch,
    /// A resumed reader was fed after absorbing plaintext that does not end where its
    /// persisted partial chunk begins.
    #[error("resume point does not match the {released} plaintext bytes absorbed")]
    ResumeMisaligned {
        /// Plaintext bytes absorbed.
        released: u64,
    },
    /// `finish` was called while decrypted plaintext still waited to be drained.
    #[error("{0} plaintext bytes were not drained before finish")]
    PlaintextNotDrained(u64),
    /// The reader was used after it finished.
    #[error("the reader has already finished")]
    AlreadyFinished,
}

impl CryptoError {
    /// The updater's wire error for this failure.
    pub const fn update_error(self) -> UpdateError {
        match self {
            Self::UnknownSigningKey(_)
            | Self::RevokedSigningKey(_)
            | Self::SigningKeyNotYetValid { .. }
            | Self::SigningKeyExpired { .. }
            | Self::MalformedPublicKey(_)
            | Self::BadSignature(_)
            | Self::KeySetNotSignedByRoot
            | Self::KeySetRollback { .. }
            | Self::KeySetBadMagic { .. }
            | Self::KeySetUnsupportedFormat(_)
            | Self::KeySetTooManyKeys(_)
            | Self::KeySetTooManyRevocations(_)
            | Self::KeySetLength { .. }
            | Self::KeySetDuplicateKey(_)
            | Self::KeySetKeyIdMismatch(_)
            | Self::KeySetEmptyWindow(_) => UpdateError::SignatureInvalid,
            Self::WrongTarget | Self::WrongKind => UpdateError::WrongTarget,
            Self::BelowMinVersion { .. } | Self::BelowAcceptedVersion { .. } => {
                UpdateError::DowngradeRejected
            }
            Self::Expired { .. } => UpdateError::Expired,
            Self::UnknownPayloadKey(_) | Self::ChunkAuthentication(_) => {
                UpdateError::DecryptionFailed
            }
            Self::DigestMismatch => UpdateError::ChecksumMismatch,
            Self::ChunkBufferTooSmall { .. } => UpdateError::InsufficientStorage,
            Self::AlreadyFinished
            | Self::PlaintextNotDrained(_)
            | Self::ResumeMisaligned { .. } => UpdateError::InvalidState,
            Self::NotTheOfferedVersion { .. }
            | Self::BadMagic { .. }
            | Self::UnsupportedFormat(_)
            | Self::UnknownKind(_)
            | Self::UnknownCipher(_)
            | Self::ChunkSizeOutOfRange(_)
            | Self::TextTooLong { .. }
            | Self::TextEmpty(_)
            | Self::TextNotUtf8 { .. }
            | Self::TextPadding(_)
            | Self::StrayEncryptionParameters
            | Self::TooManyChunks { .. }
            | Self::ExpiresBeforeCreated { .. }
            | Self::TrailingBytes(_)
            | Self::Truncated { .. } => UpdateError::InvalidPackage,
        }
    }
}

impl From<CryptoError> for UpdateError {
    fn from(e: CryptoError) -> Self {
        e.update_error()
    }
}
