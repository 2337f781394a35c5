//! Keys: the pinned root, the root-signed key set of signing keys, signing secrets and
//! pre-shared payload keys.
//!
//! Trust flows one way: the device pins the **root** public key (kept offline by the
//! publisher); the root signs a [`KeySet`] listing the signing keys that may sign manifests,
//! their validity windows and the revoked key ids; a signing key signs manifests. A key set
//! is accepted only with a valid root signature and a version not older than the last one
//! the device accepted, so a stolen signing key can be revoked and can never introduce
//! another key.
//!
//! Key set wire format (little-endian, see `docs/format.md`):
//!
//! ```text
//! 0   4  magic "OTAK"          4  2  format version (1)
//! 6   1  key count n (≤ 8)     7  1  revoked count m (≤ 16)
//! 8   8  key set version (monotonic)
//! 16  n × 56  key entries: id (8) ‖ ed25519 public key (32) ‖ valid_from u64 ‖ valid_until u64 (0 = open)
//! ..  m × 8   revoked key ids
//! ..  64      ed25519 signature by the root over every preceding byte
//! ```

#![deny(clippy::indexing_slicing)]

use core::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::CryptoError;
use crate::wire::Cursor;

/// Maximum number of signing keys in one key set.
pub const MAX_KEYS: usize = 8;
/// Maximum number of revoked key ids in one key set.
pub const MAX_REVOKED: usize = 16;
/// Key set magic.
pub const KEY_SET_MAGIC: [u8; 4] = *b"OTAK";
/// Key set format version this crate reads and writes.
pub const KEY_SET_FORMAT: u16 = 1;
/// Bytes of the fixed key set header.
pub const KEY_SET_HEADER_LEN: usize = 16;
/// Bytes of one key entry.
pub const KEY_ENTRY_LEN: usize = 56;
/// Bytes of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Largest encoded (signed) key set.
pub const MAX_KEY_SET_LEN: usize =
    KEY_SET_HEADER_LEN + MAX_KEYS * KEY_ENTRY_LEN + MAX_REVOKED * 8 + SIGNATURE_LEN;

/// Eight-byte key identifier.
///
/// For signing keys it is the first 8 bytes of SHA-256 of the public key; for payload keys,
/// of SHA-256 over a domain tag and the key (so the id reveals nothing usable about the key).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// The id of an ed25519 public key.
    pub fn of_public_key(public: &[u8; 32]) -> Self {
        Self(first8(&Sha256::digest(public)))
    }

    /// The id of a payload (symmetric) key.
    pub fn of_payload_key(key: &[u8; 32]) -> Self {
        let mut h = Sha256::new();
        h.update(b"ota-crypto payload key id\0");
        h.update(key);
        Self(first8(&h.finalize()))
    }
}

fn first8(digest: &[u8]) -> [u8; 8] {
    let mut id = [0u8; 8];
    for (d, s) in id.iter_mut().zip(digest) {
        *d = *s;
    }
    id
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// The pinned root public key: the only key whose signature makes a [`KeySet`] trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootKey(VerifyingKey);

impl RootKey {
    /// Pins a root public key (32 bytes, compressed Edwards point).
    pub fn from_bytes(public: &[u8; 32]) -> Result<Self, CryptoError> {
        VerifyingKey::from_bytes(public)
            .ok()
            .filter(|k| !k.is_weak())
            .map(Self)
            .ok_or(CryptoError::MalformedPublicKey(KeyId::of_public_key(
                public,
            )))
    }

    /// The public key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The root's key id.
    pub fn key_id(&self) -> KeyId {
        KeyId::of_public_key(self.0.as_bytes())
    }
}

/// An ed25519 secret key (root or signing key). Wiped from memory when dropped.
#[derive(Clone)]
pub struct SigningSecret(SigningKey);

impl ZeroizeOnDrop for SigningSecret {}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningSecret({})", self.key_id())
    }
}

impl SigningSecret {
    /// A secret key from its 32-byte seed (RFC 8032 secret key).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// A fresh secret key from the operating system's RNG.
    #[cfg(feature = "std")]
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut())?;
        Ok(Self::from_seed(&seed))
    }

    /// The 32-byte seed (secret). Handle with care.
    pub fn to_seed(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.0.to_bytes())
    }

    /// The public key bytes.
    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// The public key as a pinned root (when this secret is the root).
    pub fn root_key(&self) -> RootKey {
        RootKey(self.0.verifying_key())
    }

    /// The id of this key's public half.
    pub fn key_id(&self) -> KeyId {
        KeyId::of_public_key(&self.public_key())
    }

    /// Signs `message` (deterministic ed25519).
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.0.sign(message).to_bytes()
    }

    #[cfg(feature = "std")]
    pub(crate) fn from_dalek(key: SigningKey) -> Self {
        Self(key)
    }

    #[cfg(feature = "std")]
    pub(crate) fn inner(&self) -> &SigningKey {
        &self.0
    }
}

/// A pre-shared ChaCha20-Poly1305 payload key (per product). Wiped from memory when dropped.
#[derive(Clone)]
pub struct PayloadKey {
    key: [u8; 32],
    id: KeyId,
}

impl Drop for PayloadKey {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl ZeroizeOnDrop for PayloadKey {}

impl fmt::Debug for PayloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PayloadKey({})", self.id)
    }
}

impl PayloadKey {
    /// Wraps 32 secret bytes; the caller should wipe its copy.
    pub fn from_bytes(key: [u8; 32]) -> Self {
        let id = KeyId::of_payload_key(&key);
        Self { key, id }
    }

    /// A fresh key from the operating system's RNG.
    #[cfg(feature = "std")]
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(Self::from_bytes(key))
    }

    /// The key's id (what manifests name).
    pub fn key_id(&self) -> KeyId {
        self.id
    }

    /// The secret bytes. Handle with care.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.key
    }
}

/// One signing key in a [`KeySet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    /// Its id (derived from `public`).
    pub id: KeyId,
    /// The ed25519 public key.
    pub public: [u8; 32],
    /// Start of the validity window (Unix seconds, inclusive).
    pub valid_from: u64,
    /// End of the validity window (Unix seconds, exclusive); `None` = open-ended.
    pub valid_until: Option<u64>,
}

impl KeyEntry {
    /// An entry for `public`, valid from `valid_from` until `valid_until`.
    pub fn new(public: [u8; 32], valid_from: u64, valid_until: Option<u64>) -> Self {
        Self {
            id: KeyId::of_public_key(&public),
            public,
            valid_from,
            valid_until,
        }
    }
}

/// The root-signed set of signing keys and revocations, as held by a device.
///
/// Holds raw public keys (about 600 bytes at capacity); a key is decompressed only when a
/// manifest names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySet {
    version: u64,
    keys: heapless::Vec<KeyEntry, MAX_KEYS>,
    revoked: heapless::Vec<KeyId, MAX_REVOKED>,
}

impl KeySet {
    /// A key set to sign (publisher side).
    ///
    /// Fails on too many keys or revocations, duplicate ids, ids not derived from their
    /// keys, or empty validity windows.
    pub fn new(version: u64, keys: &[KeyEntry], revoked: &[KeyId]) -> Result<Self, CryptoError> {
        let keys = heapless::Vec::from_slice(keys)
            .map_err(|_| CryptoError::KeySetTooManyKeys(keys.len()))?;
        let revoked = heapless::Vec::from_slice(revoked)
            .map_err(|_| CryptoError::KeySetTooManyRevocations(revoked.len()))?;
        let set = Self {
            version,
            keys,
            revoked,
        };
        set.check()?;
        Ok(set)
    }

    fn check(&self) -> Result<(), CryptoError> {
        for (i, k) in self.keys.iter().enumerate() {
            if KeyId::of_public_key(&k.public) != k.id {
                return Err(CryptoError::KeySetKeyIdMismatch(k.id));
            }
            if k.valid_until.is_some_and(|u| u <= k.valid_from) {
                return Err(CryptoError::KeySetEmptyWindow(k.id));
            }
            if self.keys.iter().skip(i + 1).any(|o| o.id == k.id) {
                return Err(CryptoError::KeySetDuplicateKey(k.id));
            }
        }
        for (i, r) in self.revoked.iter().enumerate() {
            if self.revoked.iter().skip(i + 1).any(|o| o == r) {
                return Err(CryptoError::KeySetDuplicateKey(*r));
            }
        }
        Ok(())
    }

    /// The key set version (monotonically increasing per publisher).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The signing keys.
    pub fn keys(&self) -> &[KeyEntry] {
        &self.keys
    }

    /// The revoked key ids.
    pub fn revoked(&self) -> &[KeyId] {
        &self.revoked
    }

    /// Bytes of this set once signed.
    pub fn encoded_len(&self) -> usize {
        KEY_SET_HEADER_LEN
            + self.keys.len() * KEY_ENTRY_LEN
            + self.revoked.len() * 8
            + SIGNATURE_LEN
    }

    /// Encodes and signs this set with the root secret into `out`; returns the length written.
    pub fn sign_into(&self, root: &SigningSecret, out: &mut [u8]) -> Result<usize, CryptoError> {
        let len = self.encoded_len();
        let body_len = len - SIGNATURE_LEN;
        let Some(buf) = out.get_mut(..len) else {
            return Err(CryptoError::KeySetLength {
                expected: len,
                found: out.len(),
            });
        };
        let (body, sig) = buf.split_at_mut(body_len);
        let mut w = crate::wire::Writer::new(body);
        w.put(&KEY_SET_MAGIC);
        w.put(&KEY_SET_FORMAT.to_le_bytes());
        // Counts fit a byte: bounded by MAX_KEYS / MAX_REVOKED.
        w.put(&[u8::try_from(self.keys.len()).unwrap_or(u8::MAX)]);
        w.put(&[u8::try_from(self.revoked.len()).unwrap_or(u8::MAX)]);
        w.put(&self.version.to_le_bytes());
        for k in &self.keys {
            w.put(&k.id.0);
            w.put(&k.public);
            w.put(&k.valid_from.to_le_bytes());
            w.put(&k.valid_until.unwrap_or(0).to_le_bytes());
        }
        for r in &self.revoked {
            w.put(&r.0);
        }
        sig.copy_from_slice(&root.sign(body));
        Ok(len)
    }

    /// Encodes and signs this set with the root secret.
    #[cfg(feature = "alloc")]
    pub fn sign(&self, root: &SigningSecret) -> alloc::vec::Vec<u8> {
        let mut out = alloc::vec![0u8; self.encoded_len()];
        // The buffer has exactly `encoded_len` bytes, so this cannot fail.
        let _ = self.sign_into(root, &mut out);
        out
    }

    /// Parses a signed key set **without** checking its signature (for inspection tools).
    pub fn parse_unverified(bytes: &[u8]) -> Result<Self, CryptoError> {
        let (set, _, _) = Self::parse_parts(bytes)?;
        set.check()?;
        Ok(set)
    }

    fn parse_parts(bytes: &[u8]) -> Result<(Self, &[u8], [u8; SIGNATURE_LEN]), CryptoError> {
        let mut c = Cursor::new(bytes);
        let magic: [u8; 4] = c.array().ok_or(CryptoError::KeySetLength {
            expected: KEY_SET_HEADER_LEN + SIGNATURE_LEN,
            found: bytes.len(),
        })?;
        if magic != KEY_SET_MAGIC {
            return Err(CryptoError::KeySetBadMagic { found: magic });
        }
        let short = CryptoError::KeySetLength {
            expected: KEY_SET_HEADER_LEN + SIGNATURE_LEN,
            found: bytes.len(),
        };
        let format = c.u16().ok_or(short)?;
        if format != KEY_SET_FORMAT {
            return Err(CryptoError::KeySetUnsupportedFormat(format));
        }
        let n = usize::from(c.u8().ok_or(short)?);
        let m = usize::from(c.u8().ok_or(short)?);
        if n > MAX_KEYS {
            return Err(CryptoError::KeySetTooManyKeys(n));
        }
        if m > MAX_REVOKED {
            return Err(CryptoError::KeySetTooManyRevocations(m));
        }
        let expected = KEY_SET_HEADER_LEN + n * KEY_ENTRY_LEN + m * 8 + SIGNATURE_LEN;
        if bytes.len() != expected {
            return Err(CryptoError::KeySetLength {
                expected,
                found: bytes.len(),
            });
        }
        let short = CryptoError::KeySetLength {
            expected,
            found: bytes.len(),
        };
        let version = c.u64().ok_or(short)?;
        let mut keys = heapless::Vec::new();
        for _ in 0..n {
            let id = KeyId(c.array().ok_or(short)?);
            let public = c.array().ok_or(short)?;
            let valid_from = c.u64().ok_or(short)?;
            let until = c.u64().ok_or(short)?;
            let entry = KeyEntry {
                id,
                public,
                valid_from,
                valid_until: (until != 0).then_some(until),
            };
            keys.push(entry)
                .map_err(|_| CryptoError::KeySetTooManyKeys(n))?;
        }
        let mut revoked = heapless::Vec::new();
        for _ in 0..m {
            revoked
                .push(KeyId(c.array().ok_or(short)?))
                .map_err(|_| CryptoError::KeySetTooManyRevocations(m))?;
        }
        let body = bytes.get(..expected - SIGNATURE_LEN).ok_or(short)?;
        let sig = c.array().ok_or(short)?;
        Ok((
            Self {
                version,
                keys,
                revoked,
            },
            body,
            sig,
        ))
    }

    /// Parses a signed key set and accepts it only if the pinned `root` signed it and its
    /// version is at least `accepted_version` (the highest the device accepted before; pass
    /// 0 the first time). The device persists [`KeySet::version`] after accepting.
    pub fn verify(
        bytes: &[u8],
        root: &RootKey,
        accepted_version: u64,
    ) -> Result<Self, CryptoError> {
        // The signature is checked before anything in the set is trusted; a parse error that
        // precedes it only concerns the framing.
        let (set, body, sig) = Self::parse_parts(bytes)?;
        root.0
            .verify_strict(body, &Signature::from_bytes(&sig))
            .map_err(|_| CryptoError::KeySetNotSignedByRoot)?;
        if set.version < accepted_version {
            return Err(CryptoError::KeySetRollback {
                found: set.version,
                accepted: accepted_version,
            });
        }
        set.check()?;
        Ok(set)
    }

    /// The verifying key for `id` at time `now`: revoked, unknown, not-yet-valid and expired
    /// keys are each rejected with their own error.
    pub fn signing_key(&self, id: KeyId, now: u64) -> Result<VerifyingKey, CryptoError> {
        if self.revoked.contains(&id) {
            return Err(CryptoError::RevokedSigningKey(id));
        }
        let entry = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or(CryptoError::UnknownSigningKey(id))?;
        if now < entry.valid_from {
            return Err(CryptoError::SigningKeyNotYetValid {
                id,
                valid_from: entry.valid_from,
                now,
            });
        }
        if let Some(valid_until) = entry.valid_until
            && now >= valid_until
        {
            return Err(CryptoError::SigningKeyExpired {
                id,
                valid_until,
                now,
            });
        }
        VerifyingKey::from_bytes(&entry.public)
            .ok()
            .filter(|k| !k.is_weak())
            .ok_or(CryptoError::MalformedPublicKey(id))
    }
}
