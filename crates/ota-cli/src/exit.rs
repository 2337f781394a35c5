//! Exit codes: one per error class, stable for scripts.

use std::fmt;
use std::process::ExitCode;

use ota_core::UpdateError;

/// The class of a failure; its discriminant is the process exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// 1: an unexpected internal error.
    Internal = 1,
    /// 2: bad command-line usage (clap reports these itself with 2).
    Usage = 2,
    /// 3: reading or writing a file failed.
    Io = 3,
    /// 4: a key file is missing, malformed or of the wrong kind.
    Key = 4,
    /// 5: the package is malformed, truncated, or has trailing data.
    InvalidPackage = 5,
    /// 6: the signature or checksum does not verify.
    Verification = 6,
    /// 7: an encrypted chunk failed authentication (wrong key or tampered).
    Decryption = 7,
    /// 8: the package is well-formed and authentic but refused by policy
    /// (downgrade, expired, wrong target, too large).
    Policy = 8,
    /// 9: the OTA server could not be reached, refused the login, or refused the request.
    Server = 9,
}

/// The table printed in `--help` and the crate README.
pub const TABLE: &str = "\
Exit codes:
  0  success
  1  internal error
  2  usage error (bad arguments)
  3  I/O error (reading or writing a file)
  4  key error (missing, malformed or wrong kind of key file)
  5  invalid package (malformed, truncated, trailing data, wrong format)
  6  verification failed (signature or checksum mismatch)
  7  decryption failed (wrong key or tampered ciphertext)
  8  refused by policy (downgrade, expired, wrong target, too large)
  9  server error (unreachable, login refused, request refused)";

impl Class {
    /// The class of an updater error.
    pub fn of_update_error(e: UpdateError) -> Self {
        match e {
            UpdateError::InvalidPackage | UpdateError::UnsupportedAlgorithm => Self::InvalidPackage,
            UpdateError::SignatureInvalid | UpdateError::ChecksumMismatch => Self::Verification,
            UpdateError::DecryptionFailed => Self::Decryption,
            UpdateError::DowngradeRejected
            | UpdateError::Expired
            | UpdateError::WrongTarget
            | UpdateError::InsufficientStorage => Self::Policy,
            _ => Self::Internal,
        }
    }
}

/// A failure with its class and a human-readable chain of causes.
pub struct Failure {
    /// The exit class.
    pub class: Class,
    /// What went wrong.
    pub error: anyhow::Error,
}

impl Failure {
    /// A failure of `class`.
    pub fn new(class: Class, error: impl Into<anyhow::Error>) -> Self {
        Self {
            class,
            error: error.into(),
        }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.class as u8)
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {:#}", self.class, self.error)
    }
}

/// Result of a command.
pub type Result<T> = std::result::Result<T, Failure>;

/// Attaches an exit class and context to any error.
pub trait OrFail<T> {
    /// Classifies the error as `class`, with `context` as the outer message.
    fn or_fail(self, class: Class, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<anyhow::Error>> OrFail<T> for std::result::Result<T, E> {
    fn or_fail(self, class: Class, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Failure::new(class, e.into().context(context())))
    }
}
