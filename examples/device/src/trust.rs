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

use std::cell::Cell;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ota_core::UpdateError;
use ota_core::reader::{Feed, PackageReader, ResumableReader};
use ota_crypto::CryptoError;
use ota_crypto::keyfile;
use ota_crypto::keys::{KeySet, PayloadKey, RootKey};
use ota_crypto::reader::SignedPackageReader;

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
/// the package (the updater itself only sees the coarser [`UpdateError`]).
pub struct Verifier<'a> {
    inner: SignedPackageReader<'a>,
    rejected: &'a Cell<Option<CryptoError>>,
}

impl<'a> Verifier<'a> {
    /// Wraps `inner`; its first error is stored in `rejected`.
    pub fn new(inner: SignedPackageReader<'a>, rejected: &'a Cell<Option<CryptoError>>) -> Self {
        Self { inner, rejected }
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
        self.inner.feed(input, out).map_err(|e| self.keep(e))
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
        self.inner.restart();
    }
}
