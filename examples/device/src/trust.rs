//! What the device trusts: the pinned root public key, the key set it signed (the keys
//! allowed to sign packages) and the product's payload key; and the package reader built on
//! them, which remembers the typed reason it rejected a package.
//!
//! On disk (what the demo server writes to `<data-dir>/device-keys/`):
//!
//! ```text
//! root.pub      the root public key, 64 hex digits (or PEM)
//! keyset.bin    the root-signed key set
//! payload.key   the ChaCha20-Poly1305 payload key, 64 hex digits
//! ```

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::Context;
use ota_core::UpdateError;
use ota_core::reader::{Feed, PackageReader, ResumableReader};
use ota_crypto::CryptoError;
use ota_crypto::keyfile;
use ota_crypto::keys::{KeySet, PayloadKey, RootKey};
use ota_crypto::reader::SignedPackageReader;

/// Bytes of a package header (manifest and signature).
pub const HEADER_LEN: usize = ota_crypto::HEADER_LEN;

/// The signed reader's last resume point, copied out after every feed, for the checkpoint
/// area to save next to each checkpoint.
pub type ResumeTap = Rc<RefCell<Option<Snapshot>>>;

/// An owned [`ota_crypto::reader::ResumePoint`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Package bytes received.
    pub received: u64,
    /// Plaintext bytes released.
    pub released: u64,
    /// Manifest and signature.
    pub header: [u8; HEADER_LEN],
    /// Bytes of the sealed chunk being collected.
    pub partial: Vec<u8>,
}

impl Snapshot {
    /// `received ‖ released ‖ header ‖ partial` (integers little-endian).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16 + HEADER_LEN + self.partial.len());
        v.extend_from_slice(&self.received.to_le_bytes());
        v.extend_from_slice(&self.released.to_le_bytes());
        v.extend_from_slice(&self.header);
        v.extend_from_slice(&self.partial);
        v
    }

    /// The inverse of [`Snapshot::encode`]; `None` if `bytes` is shorter than the fixed part.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (received, rest) = bytes.split_first_chunk::<8>()?;
        let (released, rest) = rest.split_first_chunk::<8>()?;
        let (header, partial) = rest.split_first_chunk::<HEADER_LEN>()?;
        Some(Self {
            received: u64::from_le_bytes(*received),
            released: u64::from_le_bytes(*released),
            header: *header,
            partial: partial.to_vec(),
        })
    }
}

/// File name of the root public key in a key directory.
pub const ROOT_FILE: &str = "root.pub";
/// File name of the signed key set in a key directory.
pub const KEY_SET_FILE: &str = "keyset.bin";
/// File name of the payload key in a key directory.
pub const PAYLOAD_FILE: &str = "payload.key";

/// Where the three files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustFiles {
    /// The pinned root public key.
    pub root: PathBuf,
    /// The root-signed key set.
    pub key_set: PathBuf,
    /// The payload key.
    pub payload: PathBuf,
}

impl TrustFiles {
    /// The standard names in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            root: dir.join(ROOT_FILE),
            key_set: dir.join(KEY_SET_FILE),
            payload: dir.join(PAYLOAD_FILE),
        }
    }
}

/// The device's verified trust anchors.
#[derive(Debug)]
pub struct Trust {
    /// The pinned root key.
    pub root: RootKey,
    /// The key set, verified against `root`.
    pub keys: KeySet,
    /// The payload key.
    pub payload: PayloadKey,
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

impl Trust {
    /// Loads the files and accepts the key set only if the pinned root key signed it.
    pub fn load(files: &TrustFiles) -> anyhow::Result<Self> {
        let root = keyfile::parse_root_key(&read_text(&files.root)?)
            .with_context(|| format!("root key {}", files.root.display()))?;
        let set = std::fs::read(&files.key_set)
            .with_context(|| format!("reading {}", files.key_set.display()))?;
        let keys = KeySet::verify(&set, &root, 0)
            .with_context(|| format!("key set {}", files.key_set.display()))?;
        let payload = keyfile::parse_payload_key(&read_text(&files.payload)?)
            .with_context(|| format!("payload key {}", files.payload.display()))?;
        Ok(Self {
            root,
            keys,
            payload,
        })
    }
}

/// [`SignedPackageReader`] for the updater, keeping the [`CryptoError`] that made it reject
/// the package (the updater itself only sees the coarser [`UpdateError`]) and copying its
/// resume point out after every feed.
pub struct Verifier<'a> {
    inner: SignedPackageReader<'a>,
    rejected: &'a Cell<Option<CryptoError>>,
    tap: &'a RefCell<Option<Snapshot>>,
}

impl<'a> Verifier<'a> {
    /// Wraps `inner`; its first error is stored in `rejected`, its resume point in `tap`.
    pub fn new(
        inner: SignedPackageReader<'a>,
        rejected: &'a Cell<Option<CryptoError>>,
        tap: &'a RefCell<Option<Snapshot>>,
    ) -> Self {
        Self {
            inner,
            rejected,
            tap,
        }
    }

    fn keep(&self, e: CryptoError) -> UpdateError {
        if self.rejected.get().is_none() {
            self.rejected.set(Some(e));
        }
        e.update_error()
    }
}

impl PackageReader for Verifier<'_> {
    fn feed(&mut self, input: &[u8], out: &mut [u8]) -> Result<Feed, UpdateError> {
        let fed = self.inner.feed(input, out).map_err(|e| self.keep(e));
        *self.tap.borrow_mut() = self.inner.resume_point().map(|p| Snapshot {
            received: p.received,
            released: p.released,
            header: *p.header,
            partial: p.partial.to_vec(),
        });
        fed
    }

    fn finish(&mut self) -> Result<(), UpdateError> {
        self.inner.finish().map_err(|e| self.keep(e))
    }

    fn package_len(&self) -> Option<u64> {
        PackageReader::package_len(&self.inner)
    }

    fn plaintext_len(&self) -> Option<u64> {
        PackageReader::plaintext_len(&self.inner)
    }
}

impl ResumableReader for Verifier<'_> {
    fn absorb_written(&mut self, plaintext: &[u8]) -> Result<(), UpdateError> {
        self.inner.absorb_written(plaintext)
    }

    fn restart(&mut self) {
        self.rejected.set(None);
        *self.tap.borrow_mut() = None;
        self.inner.restart();
    }
}

#[cfg(test)]
mod tests {
    use super::{HEADER_LEN, Snapshot};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn snapshots_round_trip(
            received in any::<u64>(),
            released in any::<u64>(),
            fill in any::<u8>(),
            partial in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let s = Snapshot { received, released, header: [fill; HEADER_LEN], partial };
            prop_assert_eq!(Snapshot::decode(&s.encode()), Some(s));
        }

        #[test]
        fn any_bytes_decode_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let decoded = Snapshot::decode(&bytes);
            prop_assert_eq!(decoded.is_some(), bytes.len() >= 16 + HEADER_LEN);
        }
    }

    #[test]
    fn a_short_record_is_no_snapshot() {
        assert_eq!(Snapshot::decode(&[0u8; 16 + HEADER_LEN - 1]), None);
        let s = Snapshot::decode(&[7u8; 16 + HEADER_LEN]).expect("fixed part only");
        assert!(s.partial.is_empty());
        assert_eq!(s.received, u64::from_le_bytes([7; 8]));
    }
}
