//! Host-side streaming packer (`std`): reads a seekable input twice (digest, then seal) and
//! writes `manifest ‖ signature ‖ payload` in constant memory (one chunk buffer).

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::vec::Vec;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use sha2::{Digest, Sha256};

use crate::error::{CryptoError, TextField};
use crate::keys::{PayloadKey, SigningSecret};
use crate::manifest::{
    Encryption, Kind, MANIFEST_LEN, Manifest, SemVer, Text, chunk_aad, chunk_nonce,
};

/// Default chunk size (4 KiB: a common flash sector and MQTT-friendly).
pub const DEFAULT_CHUNK_SIZE: u32 = 4096;

/// What to put in the manifest (everything except what the packer computes: payload size,
/// digest, key ids and nonce prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackageSpec {
    /// Firmware or software.
    pub kind: Kind,
    /// Title.
    pub title: Text,
    /// Release version.
    pub version: SemVer,
    /// Anti-rollback floor (`0.0.0` from [`PackageSpec::new`]).
    pub min_version: SemVer,
    /// Target (hardware or profile id).
    pub target: Text,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// Creation time (Unix seconds).
    pub created_at: u64,
    /// Expiry (Unix seconds), if any.
    pub expires_at: Option<u64>,
}

impl PackageSpec {
    /// A spec with min-version `0.0.0`, 4 KiB chunks and no expiry.
    pub fn new(
        kind: Kind,
        title: &str,
        version: SemVer,
        target: &str,
        created_at: u64,
    ) -> Result<Self, CryptoError> {
        Ok(Self {
            kind,
            title: Text::new(TextField::Title, title)?,
            version,
            min_version: SemVer::default(),
            target: Text::new(TextField::Target, target)?,
            chunk_size: DEFAULT_CHUNK_SIZE,
            created_at,
            expires_at: None,
        })
    }
}

/// How the packer seals the payload.
#[derive(Clone, Copy, Debug)]
pub enum Sealing<'a> {
    /// Plaintext payload.
    None,
    /// ChaCha20-Poly1305 per chunk under `key`; `nonce_prefix` must be unique per package
    /// and key ([`Sealing::chacha20poly1305`] draws it from the OS RNG).
    ChaCha20Poly1305 {
        /// The product's payload key.
        key: &'a PayloadKey,
        /// Per-package nonce prefix.
        nonce_prefix: [u8; 8],
    },
}

impl<'a> Sealing<'a> {
    /// ChaCha20-Poly1305 with a random nonce prefix.
    pub fn chacha20poly1305(key: &'a PayloadKey) -> Result<Self, WriteError> {
        let mut nonce_prefix = [0u8; 8];
        getrandom::fill(&mut nonce_prefix).map_err(WriteError::Rng)?;
        Ok(Self::ChaCha20Poly1305 { key, nonce_prefix })
    }
}

/// Why packing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// Reading the input or writing the output failed.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    /// The spec makes an invalid manifest.
    #[error("invalid manifest: {0}")]
    Manifest(#[from] CryptoError),
    /// The input changed between the digest pass and the sealing pass.
    #[error("input was {first} bytes when hashed but {second} bytes when sealed")]
    InputChanged {
        /// Bytes in the first pass.
        first: u64,
        /// Bytes in the second pass.
        second: u64,
    },
    /// The OS RNG failed.
    #[error("random number generator: {0}")]
    Rng(getrandom::Error),
}

/// Streaming packer: `manifest ‖ signature ‖ payload` from a seekable input.
pub struct PackageWriter<'a> {
    signer: &'a SigningSecret,
    spec: PackageSpec,
    sealing: Sealing<'a>,
}

impl<'a> PackageWriter<'a> {
    /// A packer signing with `signer` (which must be in the devices' key set).
    pub fn new(signer: &'a SigningSecret, spec: PackageSpec, sealing: Sealing<'a>) -> Self {
        Self {
            signer,
            spec,
            sealing,
        }
    }

    /// The manifest for a payload of `payload_size` bytes with plaintext `digest`.
    pub fn manifest(&self, payload_size: u64, digest: [u8; 32]) -> Result<Manifest, CryptoError> {
        let s = &self.spec;
        let m = Manifest {
            kind: s.kind,
            version: s.version,
            min_version: s.min_version,
            payload_size,
            chunk_size: s.chunk_size,
            created_at: s.created_at,
            expires_at: s.expires_at,
            signing_key: self.signer.key_id(),
            encryption: match self.sealing {
                Sealing::None => Encryption::None,
                Sealing::ChaCha20Poly1305 { key, nonce_prefix } => Encryption::ChaCha20Poly1305 {
                    key_id: key.key_id(),
                    nonce_prefix,
                },
            },
            digest,
            title: s.title,
            target: s.target,
        };
        m.validate()?;
        if m.version < m.min_version {
            return Err(CryptoError::BelowMinVersion {
                version: m.version,
                min_version: m.min_version,
            });
        }
        Ok(m)
    }

    /// Packs `input` (read twice: digest, then seal) into `output`; returns the manifest.
    /// Memory stays constant (one chunk) whatever the input size.
    pub fn write<R: Read + Seek, W: Write>(
        &self,
        mut input: R,
        mut output: W,
    ) -> Result<Manifest, WriteError> {
        let start = input.stream_position()?;
        let mut hasher = Sha256::new();
        let chunk_size = usize::try_from(self.spec.chunk_size).unwrap_or(0);
        let mut buf = std::vec![0u8; chunk_size];
        let mut size = 0u64;
        loop {
            let n = read_full(&mut input, &mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(buf.get(..n).unwrap_or_default());
            size += n as u64;
        }
        let m = self.manifest(size, hasher.finalize().into())?;
        input.seek(SeekFrom::Start(start))?;

        let encoded = m.encode();
        output.write_all(&encoded)?;
        output.write_all(&self.signer.sign(&encoded))?;
        let manifest_digest = Manifest::digest_of(&encoded);
        let cipher = match self.sealing {
            Sealing::None => None,
            Sealing::ChaCha20Poly1305 { key, nonce_prefix } => {
                Some((ChaCha20Poly1305::new(key.as_bytes().into()), nonce_prefix))
            }
        };
        let mut sealed_bytes = 0u64;
        for index in 0..m.chunk_count() {
            let len = usize::try_from(m.chunk_len(index)).unwrap_or(0);
            let chunk = buf.get_mut(..len).unwrap_or_default();
            let n = read_full(&mut input, chunk)?;
            sealed_bytes += n as u64;
            if n != len {
                return Err(WriteError::InputChanged {
                    first: size,
                    second: sealed_bytes,
                });
            }
            match &cipher {
                None => output.write_all(chunk)?,
                Some((cipher, prefix)) => {
                    let idx = u32::try_from(index).map_err(|_| CryptoError::TooManyChunks {
                        size,
                        chunk_size: m.chunk_size,
                    })?;
                    let nonce = Nonce::from(chunk_nonce(*prefix, idx));
                    let aad = chunk_aad(&manifest_digest, idx, index + 1 == m.chunk_count());
                    let tag = cipher
                        .encrypt_inout_detached(&nonce, &aad, chunk.into())
                        .map_err(|_| io::Error::other("chunk too large for ChaCha20-Poly1305"))?;
                    output.write_all(chunk)?;
                    output.write_all(&tag)?;
                }
            }
        }
        let mut probe = [0u8; 1];
        if read_full(&mut input, &mut probe)? != 0 {
            return Err(WriteError::InputChanged {
                first: size,
                second: sealed_bytes + 1,
            });
        }
        output.flush()?;
        Ok(m)
    }

    /// Packs an in-memory payload.
    pub fn pack_bytes(&self, payload: &[u8]) -> Result<Vec<u8>, WriteError> {
        let mut out = Vec::with_capacity(payload.len() + MANIFEST_LEN + 64 + 64);
        self.write(io::Cursor::new(payload), &mut out)?;
        Ok(out)
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(buf.get_mut(filled..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
