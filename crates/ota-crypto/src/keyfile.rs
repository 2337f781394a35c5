//! Text key files (`std`): hex (64 digits, the 32 key bytes) or PEM (PKCS#8 `PRIVATE KEY` for
//! ed25519 secrets, SPKI `PUBLIC KEY` for ed25519 public keys). Payload keys are hex only.
//!
//! Surrounding whitespace and a trailing newline are accepted; anything else is an error that
//! says what was found.

use std::string::String;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::spki::{DecodePublicKey, EncodePublicKey};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use std::string::ToString;
use zeroize::Zeroizing;

use crate::keys::{PayloadKey, RootKey, SigningSecret};

/// Why a key file was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file is empty (or whitespace only).
    #[error("key file is empty")]
    Empty,
    /// Hex text of the wrong length.
    #[error("hex key has {found} digits, expected 64")]
    HexLength {
        /// Digits found.
        found: usize,
    },
    /// A character that is not a hex digit.
    #[error("hex key has {found:?} at offset {offset}, expected a hex digit")]
    HexDigit {
        /// Offset of the character.
        offset: usize,
        /// The character.
        found: char,
    },
    /// A PEM block with an unexpected label.
    #[error("PEM label is {found:?}, expected {expected:?}")]
    PemLabel {
        /// The label found.
        found: String,
        /// The label this key needs.
        expected: &'static str,
    },
    /// The PEM/DER content is not a valid ed25519 key of the expected kind.
    #[error("PEM key is invalid: {0}")]
    Pem(String),
    /// The key is a weak (small-order) or invalid ed25519 point.
    #[error("public key is not a valid ed25519 key")]
    InvalidPublicKey,
    /// The format is not recognised.
    #[error("key file is neither 64 hex digits nor PEM (starts with {start:?})")]
    UnknownFormat {
        /// The first few characters.
        start: String,
    },
}

const PRIVATE_LABEL: &str = "PRIVATE KEY";
const PUBLIC_LABEL: &str = "PUBLIC KEY";

/// Parses 64 hex digits into 32 bytes.
pub fn parse_hex32(text: &str) -> Result<Zeroizing<[u8; 32]>, KeyFileError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(KeyFileError::Empty);
    }
    if !t.starts_with(|c: char| c.is_ascii_hexdigit()) {
        return Err(KeyFileError::UnknownFormat {
            start: t.chars().take(16).collect(),
        });
    }
    if let Some((offset, found)) = t.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(KeyFileError::HexDigit { offset, found });
    }
    if t.len() != 64 {
        return Err(KeyFileError::HexLength { found: t.len() });
    }
    let mut out = Zeroizing::new([0u8; 32]);
    for (byte, pair) in out.iter_mut().zip(t.as_bytes().chunks_exact(2)) {
        let s = core::str::from_utf8(pair).unwrap_or("00");
        *byte = u8::from_str_radix(s, 16).unwrap_or(0);
    }
    Ok(out)
}

/// Lower-case hex of 32 bytes.
pub fn to_hex32(bytes: &[u8; 32]) -> Zeroizing<String> {
    use core::fmt::Write;
    let mut s = Zeroizing::new(String::with_capacity(65));
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s.push('\n');
    s
}

fn pem_label(text: &str) -> Option<&str> {
    let first = text.trim_start().lines().next()?;
    first.strip_prefix("-----BEGIN ")?.strip_suffix("-----")
}

fn classify(text: &str, expected_label: &'static str) -> Result<bool, KeyFileError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(KeyFileError::Empty);
    }
    if let Some(label) = pem_label(t) {
        if label != expected_label {
            return Err(KeyFileError::PemLabel {
                found: label.into(),
                expected: expected_label,
            });
        }
        return Ok(true);
    }
    // Text that starts like hex is parsed as hex, so a stray character is reported exactly.
    if t.starts_with(|c: char| c.is_ascii_hexdigit()) {
        return Ok(false);
    }
    Err(KeyFileError::UnknownFormat {
        start: t.chars().take(16).collect(),
    })
}

/// Parses an ed25519 secret key file: PKCS#8 PEM or the 32-byte seed in hex.
pub fn parse_signing_secret(text: &str) -> Result<SigningSecret, KeyFileError> {
    if classify(text, PRIVATE_LABEL)? {
        let key = SigningKey::from_pkcs8_pem(text.trim())
            .map_err(|e| KeyFileError::Pem(e.to_string()))?;
        Ok(SigningSecret::from_dalek(key))
    } else {
        Ok(SigningSecret::from_seed(&*parse_hex32(text)?))
    }
}

/// Parses an ed25519 public key file: SPKI PEM or the 32 bytes in hex.
pub fn parse_public_key(text: &str) -> Result<[u8; 32], KeyFileError> {
    let bytes = if classify(text, PUBLIC_LABEL)? {
        VerifyingKey::from_public_key_pem(text.trim())
            .map_err(|e| KeyFileError::Pem(e.to_string()))?
            .to_bytes()
    } else {
        *parse_hex32(text)?
    };
    RootKey::from_bytes(&bytes).map_err(|_| KeyFileError::InvalidPublicKey)?;
    Ok(bytes)
}

/// Parses a root public key file (same formats as [`parse_public_key`]).
pub fn parse_root_key(text: &str) -> Result<RootKey, KeyFileError> {
    RootKey::from_bytes(&parse_public_key(text)?).map_err(|_| KeyFileError::InvalidPublicKey)
}

/// Parses a payload key file (32 bytes in hex).
pub fn parse_payload_key(text: &str) -> Result<PayloadKey, KeyFileError> {
    Ok(PayloadKey::from_bytes(*parse_hex32(text)?))
}

/// PKCS#8 PEM text of a secret key.
pub fn signing_secret_pem(secret: &SigningSecret) -> Result<Zeroizing<String>, KeyFileError> {
    secret
        .inner()
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyFileError::Pem(e.to_string()))
}

/// SPKI PEM text of a public key.
pub fn public_key_pem(public: &[u8; 32]) -> Result<String, KeyFileError> {
    VerifyingKey::from_bytes(public)
        .map_err(|_| KeyFileError::InvalidPublicKey)?
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| KeyFileError::Pem(e.to_string()))
}
