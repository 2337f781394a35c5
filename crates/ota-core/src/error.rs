//! The update error every layer reports, with stable wire names.

/// Why an update failed. `Copy`, tiny, and each variant has a stable wire name
/// ([`UpdateError::wire_name`]) that devices put in ThingsBoard's `fw_error` and that the
/// server matches on. New variants may be added: match with a wildcard arm.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum UpdateError {
    /// The downloaded image's digest differs from the one announced.
    #[error("CHECKSUM_MISMATCH: the image digest does not match the announced checksum")]
    ChecksumMismatch,
    /// The transport failed repeatedly (retries exhausted).
    #[error("NETWORK_ERROR: the transport failed after all retries")]
    Network,
    /// The image does not fit the inactive slot.
    #[error("INSUFFICIENT_STORAGE: the image is larger than the update slot")]
    InsufficientStorage,
    /// The package is malformed (bad header, bad framing, unsupported format).
    #[error("INVALID_PACKAGE: the package is malformed")]
    InvalidPackage,
    /// Writing or activating the new image failed.
    #[error("INSTALLATION_FAILED: writing or activating the image failed")]
    InstallationFailed,
    /// The package signature did not verify against a trusted key.
    #[error("SIGNATURE_INVALID: the package signature does not verify with a trusted key")]
    SignatureInvalid,
    /// The offered version is below the minimum this device accepts.
    #[error("DOWNGRADE_REJECTED: the offered version is below the minimum accepted")]
    DowngradeRejected,
    /// The package's manifest has expired.
    #[error("EXPIRED: the package manifest has expired")]
    Expired,
    /// An encrypted chunk failed authentication.
    #[error("DECRYPTION_FAILED: an encrypted chunk failed authentication")]
    DecryptionFailed,
    /// The transport stalled beyond the configured timeouts and retries.
    #[error("TIMEOUT: no progress within the configured timeout and retries")]
    Timeout,
    /// The server withdrew the update (ThingsBoard `{"deleted":[…]}` push).
    #[error("CANCELLED: the update was withdrawn by the server")]
    Cancelled,
    /// The package is meant for other hardware or another profile.
    #[error("WRONG_TARGET: the package is for another target")]
    WrongTarget,
    /// The offer's title does not fit the updater's bounded buffer.
    #[error("TITLE_TOO_LONG: the offered title exceeds the device's title capacity")]
    TitleTooLong,
    /// The offer's version does not fit the updater's bounded buffer.
    #[error("VERSION_TOO_LONG: the offered version exceeds the device's version capacity")]
    VersionTooLong,
    /// The offer names a checksum algorithm this device does not know.
    #[error("UNSUPPORTED_ALGORITHM: the checksum algorithm is not supported")]
    UnsupportedAlgorithm,
    /// The caller drove the machine out of order (a bug in the transport driver).
    #[error("INVALID_STATE: the update machine was driven out of order")]
    InvalidState,
}

impl UpdateError {
    /// The stable wire name (ThingsBoard-style upper snake case).
    pub const fn wire_name(self) -> &'static str {
        match self {
            Self::ChecksumMismatch => "CHECKSUM_MISMATCH",
            Self::Network => "NETWORK_ERROR",
            Self::InsufficientStorage => "INSUFFICIENT_STORAGE",
            Self::InvalidPackage => "INVALID_PACKAGE",
            Self::InstallationFailed => "INSTALLATION_FAILED",
            Self::SignatureInvalid => "SIGNATURE_INVALID",
            Self::DowngradeRejected => "DOWNGRADE_REJECTED",
            Self::Expired => "EXPIRED",
            Self::DecryptionFailed => "DECRYPTION_FAILED",
            Self::Timeout => "TIMEOUT",
            Self::Cancelled => "CANCELLED",
            Self::WrongTarget => "WRONG_TARGET",
            Self::TitleTooLong => "TITLE_TOO_LONG",
            Self::VersionTooLong => "VERSION_TOO_LONG",
            Self::UnsupportedAlgorithm => "UNSUPPORTED_ALGORITHM",
            Self::InvalidState => "INVALID_STATE",
        }
    }

    /// Every variant, for exhaustive tests and lookups.
    pub const ALL: [Self; 16] = [
        Self::ChecksumMismatch,
        Self::Network,
        Self::InsufficientStorage,
        Self::InvalidPackage,
        Self::InstallationFailed,
        Self::SignatureInvalid,
        Self::DowngradeRejected,
        Self::Expired,
        Self::DecryptionFailed,
        Self::Timeout,
        Self::Cancelled,
        Self::WrongTarget,
        Self::TitleTooLong,
        Self::VersionTooLong,
        Self::UnsupportedAlgorithm,
        Self::InvalidState,
    ];

    /// Parses a stable wire name back (also accepts a `fw_error` text that starts with it).
    pub fn from_wire_name(s: &str) -> Option<Self> {
        let name = s.split(':').next().unwrap_or(s).trim();
        Self::ALL.into_iter().find(|e| e.wire_name() == name)
    }
}
