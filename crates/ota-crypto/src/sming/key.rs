//! Sming's `ota.key`: 64 bytes as lowercase hex — Ed25519 seed ‖ secretstream key.

use ed25519_dalek::{SigningKey, VerifyingKey};
use zeroize::Zeroize;

/// Why an `ota.key` text was rejected.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum KeyFileError {
    /// A character is not a hex digit.
    #[error("byte {byte:#04x} at offset {offset} is not a hex digit")]
    NotHex {
        /// Offset in the (whitespace-trimmed) text.
        offset: usize,
        /// The offending byte.
        byte: u8,
    },
    /// The number of hex digits is odd.
    #[error("{digits} hex digits is an odd count")]
    OddLength {
        /// Digits found.
        digits: usize,
    },
    /// Fewer than 64 bytes (128 hex digits).
    #[error("key file holds {bytes} bytes, Sming needs at least 64")]
    TooShort {
        /// Bytes found.
        bytes: usize,
    },
}

/// The key material of a Sming `ota.key` file.
///
/// Bytes 0..32 are the Ed25519 seed (`crypto_sign_seed_keypair`), bytes 32..64 the
/// `crypto_secretstream_xchacha20poly1305` key. Both are zeroized on drop.
///
/// ```
/// use ota_crypto::sming::SmingKey;
/// let text: String = (0u8..64).map(|b| format!("{b:02x}")).collect();
/// let key = SmingKey::from_hex(text.as_bytes())?;
/// assert_eq!(key.verifying_key().as_bytes()[..4], [0x03, 0xa1, 0x07, 0xbf]);
/// # Ok::<(), ota_crypto::sming::KeyFileError>(())
/// ```
#[derive(Clone)]
pub struct SmingKey {
    seed: [u8; 32],
    stream_key: [u8; 32],
}

impl core::fmt::Debug for SmingKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SmingKey")
            .field("verifying_key", &self.verifying_key())
            .finish_non_exhaustive()
    }
}

impl Drop for SmingKey {
    fn drop(&mut self) {
        self.seed.zeroize();
        self.stream_key.zeroize();
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

impl SmingKey {
    /// Parses the text of an `ota.key` file.
    ///
    /// Leading/trailing ASCII whitespace is ignored (Sming's tool would reject a trailing
    /// newline; we accept it). Like `otatool.py`, bytes past the first 64 are ignored, but
    /// every digit must be valid hex.
    pub fn from_hex(text: &[u8]) -> Result<Self, KeyFileError> {
        let text = text.trim_ascii();
        if let Some((offset, &byte)) = text
            .iter()
            .enumerate()
            .find(|&(_, &b)| hex_value(b).is_none())
        {
            return Err(KeyFileError::NotHex { offset, byte });
        }
        if !text.len().is_multiple_of(2) {
            return Err(KeyFileError::OddLength { digits: text.len() });
        }
        if text.len() < 128 {
            return Err(KeyFileError::TooShort {
                bytes: text.len() / 2,
            });
        }
        let mut bytes = [0u8; 64];
        for (dst, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            let mut value = 0u8;
            for &digit in pair {
                value = (value << 4) | hex_value(digit).unwrap_or(0);
            }
            *dst = value;
        }
        let key = Self::from_bytes(&bytes);
        bytes.zeroize();
        Ok(key)
    }

    /// Builds the key from its 64 raw bytes (seed ‖ secretstream key).
    pub fn from_bytes(bytes: &[u8; 64]) -> Self {
        let mut seed = [0u8; 32];
        let mut stream_key = [0u8; 32];
        let (a, b) = bytes.split_at(32);
        seed.copy_from_slice(a);
        stream_key.copy_from_slice(b);
        Self { seed, stream_key }
    }

    /// The 64 raw bytes (seed ‖ secretstream key).
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        let (a, b) = out.split_at_mut(32);
        a.copy_from_slice(&self.seed);
        b.copy_from_slice(&self.stream_key);
        out
    }

    /// Writes the `ota.key` text (128 lowercase hex digits, no newline) into `out`.
    pub fn to_hex(&self) -> [u8; 128] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 128];
        let mut bytes = self.to_bytes();
        for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
            if let [hi, lo] = pair {
                *hi = DIGITS.get(usize::from(byte >> 4)).copied().unwrap_or(b'0');
                *lo = DIGITS.get(usize::from(byte & 0xf)).copied().unwrap_or(b'0');
            }
        }
        bytes.zeroize();
        out
    }

    /// The Ed25519 signing key derived from the seed.
    pub fn signing_key(&self) -> SigningKey {
        SigningKey::from_bytes(&self.seed)
    }

    /// The public key Sming embeds as `verify.key.bin`.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing_key().verifying_key()
    }

    /// The secretstream key Sming embeds as `decrypt.key.bin`.
    pub fn stream_key(&self) -> &[u8; 32] {
        &self.stream_key
    }
}
