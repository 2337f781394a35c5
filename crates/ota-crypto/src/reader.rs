//! The device-side streaming reader: manifest → signature → policy → chunk-by-chunk
//! decryption into the caller's buffers → digest.
//!
//! Memory: the reader itself is under 1 KiB (asserted in the tests) and borrows two things
//! from the caller: the [`KeySet`] and a **chunk buffer** in which one sealed chunk is
//! collected until its tag verifies (a ChaCha20-Poly1305 chunk cannot release plaintext before
//! that). The chunk buffer must hold `chunk_size + 16` bytes of the package it reads;
//! [`chunk_buffer_len`] says how much a given manifest needs.

#![deny(clippy::indexing_slicing)]

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use ed25519_dalek::Signature;
use ota_core::UpdateError;
use ota_core::reader::{Feed, PackageReader, ResumableReader};
use sha2::{Digest, Sha256};

use crate::HEADER_LEN;
use crate::error::CryptoError;
use crate::keys::{KeySet, PayloadKey, SIGNATURE_LEN};
use crate::manifest::{
    Encryption, Kind, MANIFEST_LEN, Manifest, SemVer, TAG_LEN, chunk_aad, chunk_nonce,
};

/// What the device knows and decides with: time, identity and its anti-rollback state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevicePolicy<'a> {
    /// The device's current time (Unix seconds), for expiry and key validity.
    pub now: u64,
    /// The device's target (hardware or profile id); must equal the manifest's.
    pub target: &'a str,
    /// Which kind of package the device is fetching.
    pub kind: Kind,
    /// The highest version the device has accepted (persisted across reboots); packages below
    /// it are rejected.
    pub highest_accepted: SemVer,
    /// The version the server offered (ThingsBoard's `fw_version`), if the device acts on it.
    /// When set, the signed manifest must carry exactly this version: the offer is unsigned,
    /// so a device that records the offered version (say, as its new anti-rollback floor once
    /// the image boots) must not install a package signed for another one.
    pub offered_version: Option<SemVer>,
}

impl DevicePolicy<'_> {
    /// Checks an authenticated manifest against this policy.
    pub fn check(&self, m: &Manifest) -> Result<(), CryptoError> {
        if m.kind != self.kind {
            return Err(CryptoError::WrongKind);
        }
        if m.target.as_str() != self.target {
            return Err(CryptoError::WrongTarget);
        }
        if let Some(offered) = self.offered_version
            && offered != m.version
        {
            return Err(CryptoError::NotTheOfferedVersion {
                offered,
                signed: m.version,
            });
        }
        if m.version < m.min_version {
            return Err(CryptoError::BelowMinVersion {
                version: m.version,
                min_version: m.min_version,
            });
        }
        if m.version < self.highest_accepted {
            return Err(CryptoError::BelowAcceptedVersion {
                version: m.version,
                accepted: self.highest_accepted,
            });
        }
        if let Some(expires_at) = m.expires_at
            && self.now >= expires_at
        {
            return Err(CryptoError::Expired {
                expires_at,
                now: self.now,
            });
        }
        Ok(())
    }
}

/// Chunk buffer bytes a package with this manifest needs (`chunk_size + 16` when encrypted,
/// 0 for a plain payload, which streams straight through).
pub fn chunk_buffer_len(m: &Manifest) -> usize {
    match m.encryption {
        Encryption::None => 0,
        Encryption::ChaCha20Poly1305 { .. } => usize::try_from(m.chunk_size)
            .unwrap_or(usize::MAX)
            .saturating_add(TAG_LEN),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Collecting manifest + signature.
    Header,
    /// Manifest authenticated; payload streaming.
    Payload,
    /// `finish` returned `Ok`.
    Finished,
    /// A check failed; the error sticks.
    Failed(CryptoError),
}

/// Streaming reader of a signed (and optionally encrypted) package, with bounded state and
/// no heap. Implements [`ota_core::reader::PackageReader`].
///
/// ```
/// # use ota_crypto::{keys::*, manifest::*, reader::*, writer::*};
/// # let root = SigningSecret::from_seed(&[1; 32]);
/// # let signer = SigningSecret::from_seed(&[2; 32]);
/// # let set = KeySet::new(1, &[KeyEntry::new(signer.public_key(), 0, None)], &[]).unwrap();
/// # let keys = KeySet::verify(&set.sign(&root), &root.root_key(), 0).unwrap();
/// # let payload_key = PayloadKey::from_bytes([3; 32]);
/// # let spec = PackageSpec::new(Kind::Firmware, "app", SemVer::new(1, 0, 0), "board-a", 100).unwrap();
/// # let package = PackageWriter::new(&signer, spec, Sealing::ChaCha20Poly1305 { key: &payload_key, nonce_prefix: [9; 8] })
/// #     .pack_bytes(b"image").unwrap();
/// let policy = DevicePolicy { now: 200, target: "board-a", kind: Kind::Firmware, highest_accepted: SemVer::new(1, 0, 0), offered_version: None };
/// let mut chunk_buf = [0u8; 4096 + 16];
/// let mut reader = SignedPackageReader::new(&keys, Some(&payload_key), policy, &mut chunk_buf);
/// let mut out = [0u8; 256];
/// let mut input = &package[..];
/// let mut image = Vec::new();
/// while !input.is_empty() {
///     let fed = reader.feed(input, &mut out)?;
///     image.extend_from_slice(&out[..fed.produced]);
///     input = &input[fed.consumed..];
/// }
/// reader.finish()?;
/// assert_eq!(image, b"image");
/// # Ok::<(), ota_crypto::CryptoError>(())
/// ```
pub struct SignedPackageReader<'a> {
    keys: &'a KeySet,
    payload_key: Option<&'a PayloadKey>,
    policy: DevicePolicy<'a>,
    chunk_buf: &'a mut [u8],
    phase: Phase,
    header: [u8; HEADER_LEN],
    header_fill: usize,
    manifest: Option<Manifest>,
    manifest_digest: [u8; 32],
    cipher: Option<ChaCha20Poly1305>,
    hasher: Sha256,
    /// Package bytes consumed so far.
    received: u64,
    /// Plaintext bytes released to the caller so far.
    released: u64,
    /// Next sealed chunk to collect.
    chunk_index: u64,
    /// Bytes of the current sealed chunk collected in `chunk_buf`.
    buf_fill: usize,
    /// Decrypted plaintext waiting in `chunk_buf[pending_start..pending_end]`.
    pending_start: usize,
    pending_end: usize,
    /// Built by [`SignedPackageReader::resuming`] and not fed since: the header and
    /// `resume_partial` bytes of a sealed chunk wait in `header` and `chunk_buf` for the
    /// written plaintext to be absorbed.
    resuming: bool,
    resume_partial: usize,
}

/// What a device persists, next to the updater's checkpoint, to resume a signed download
/// after a power cut without fetching the package again from byte 0: the authenticated
/// header and the bytes of the sealed chunk being collected (the rest of the state, the
/// running SHA-256 and the decryptor's position, follows from the plaintext in the slot).
///
/// Nothing in it is trusted on resume: the header's signature and policy are checked again,
/// the partial chunk is authenticated by its tag once complete, and the plaintext re-read from
/// the slot is covered by the signed digest that [`SignedPackageReader::finish`] checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumePoint<'r> {
    /// Manifest and signature.
    pub header: &'r [u8; HEADER_LEN],
    /// Bytes of the sealed chunk being collected (empty for a plain payload).
    pub partial: &'r [u8],
    /// Package bytes consumed (the checkpoint's `package_offset` must equal it).
    pub received: u64,
    /// Plaintext bytes released (the checkpoint's `written` must equal it).
    pub released: u64,
}

impl<'a> SignedPackageReader<'a> {
    /// A reader that trusts `keys` (a verified key set), decrypts with `payload_key` (if the
    /// package is encrypted) and applies `policy`. `chunk_buf` collects one sealed chunk; it
    /// must hold [`chunk_buffer_len`] bytes for the package read (pass `&mut []` for plain
    /// packages).
    pub fn new(
        keys: &'a KeySet,
        payload_key: Option<&'a PayloadKey>,
        policy: DevicePolicy<'a>,
        chunk_buf: &'a mut [u8],
    ) -> Self {
        Self {
            keys,
            payload_key,
            policy,
            chunk_buf,
            phase: Phase::Header,
            header: [0; HEADER_LEN],
            header_fill: 0,
            manifest: None,
            manifest_digest: [0; 32],
            cipher: None,
            hasher: Sha256::new(),
            received: 0,
            released: 0,
            chunk_index: 0,
            buf_fill: 0,
            pending_start: 0,
            pending_end: 0,
            resuming: false,
            resume_partial: 0,
        }
    }

    /// A reader that continues a download from a [`ResumePoint`] an earlier reader gave
    /// ([`SignedPackageReader::resume_point`]): give it the plaintext already in the slot
    /// through [`ResumableReader::absorb_written`] (from offset 0, `point.released` bytes),
    /// then feed the package from byte `point.received`.
    ///
    /// The header is verified again by the first `absorb_written`; an error there (or
    /// anything but whole sealed chunks absorbed before the next feed) fails the reader, and
    /// the updater then restarts the download from byte 0. Fed without absorbing first, the
    /// reader starts over like [`SignedPackageReader::new`].
    ///
    /// # Errors
    /// [`CryptoError::ChunkBufferTooSmall`] if `chunk_buf` cannot hold `partial`.
    pub fn resuming(
        keys: &'a KeySet,
        payload_key: Option<&'a PayloadKey>,
        policy: DevicePolicy<'a>,
        chunk_buf: &'a mut [u8],
        header: &[u8; HEADER_LEN],
        partial: &[u8],
    ) -> Result<Self, CryptoError> {
        let mut r = Self::new(keys, payload_key, policy, chunk_buf);
        let available = r.chunk_buf.len();
        r.chunk_buf
            .get_mut(..partial.len())
            .ok_or(CryptoError::ChunkBufferTooSmall {
                needed: partial.len(),
                available,
            })?
            .copy_from_slice(partial);
        r.header = *header;
        r.header_fill = HEADER_LEN;
        r.resuming = true;
        r.resume_partial = partial.len();
        Ok(r)
    }

    /// Where the download stands, to persist for a later [`SignedPackageReader::resuming`]:
    /// `None` before the header is accepted, while decrypted plaintext waits to be released,
    /// and after an error or the end.
    pub fn resume_point(&self) -> Option<ResumePoint<'_>> {
        if self.phase != Phase::Payload || self.pending_start < self.pending_end || self.resuming {
            return None;
        }
        let partial = match self.manifest?.encryption {
            Encryption::None => &[][..],
            Encryption::ChaCha20Poly1305 { .. } => self.chunk_buf.get(..self.buf_fill)?,
        };
        Some(ResumePoint {
            header: &self.header,
            partial,
            received: self.received,
            released: self.released,
        })
    }

    /// Absorbs plaintext a resumed download finds in the slot (see
    /// [`SignedPackageReader::resuming`]).
    fn absorb(&mut self, plaintext: &[u8]) -> Result<(), CryptoError> {
        match self.phase {
            Phase::Failed(e) => return Err(e),
            Phase::Finished => return Err(CryptoError::AlreadyFinished),
            Phase::Header => {
                self.accept_header()?;
                self.phase = Phase::Payload;
            }
            Phase::Payload => {}
        }
        let Some(m) = self.manifest else {
            return Err(CryptoError::ResumeMisaligned {
                released: self.released,
            });
        };
        let released = self.released + plaintext.len() as u64;
        if released > m.payload_size {
            return Err(CryptoError::TrailingBytes(plaintext.len()));
        }
        self.hasher.update(plaintext);
        self.released = released;
        let header = HEADER_LEN as u64;
        match m.encryption {
            Encryption::None => self.received = header + released,
            Encryption::ChaCha20Poly1305 { .. } => {
                let chunk = u64::from(m.chunk_size);
                self.chunk_index = released / chunk;
                self.received = header
                    + self.chunk_index * (chunk + TAG_LEN as u64)
                    + self.resume_partial as u64;
                self.buf_fill = self.resume_partial;
            }
        }
        Ok(())
    }

    /// First feed after [`SignedPackageReader::resuming`]: the absorbed plaintext must end on
    /// a sealed-chunk boundary (and a plain payload has no partial chunk); a reader that
    /// absorbed nothing starts over.
    fn end_resume(&mut self) -> Result<(), CryptoError> {
        self.resuming = false;
        if self.phase == Phase::Header {
            ResumableReader::restart(self);
            return Ok(());
        }
        let Some(m) = self.manifest else {
            return Ok(());
        };
        let aligned = match m.encryption {
            Encryption::None => self.resume_partial == 0,
            Encryption::ChaCha20Poly1305 { .. } => {
                self.released.is_multiple_of(u64::from(m.chunk_size))
                    && (self.resume_partial as u64) < m.chunk_len(self.chunk_index) + TAG_LEN as u64
            }
        };
        if aligned {
            Ok(())
        } else {
            Err(CryptoError::ResumeMisaligned {
                released: self.released,
            })
        }
    }

    /// The manifest, once it has been authenticated and accepted by the policy.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// Package bytes consumed so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    fn fail(&mut self, e: CryptoError) -> CryptoError {
        self.phase = Phase::Failed(e);
        e
    }

    /// Feeds package bytes, writing plaintext to the front of `out`.
    ///
    /// Consumes less than `input` only when `out` is full (drain it and call again with the
    /// rest). Errors are sticky: after one, every call returns it again.
    pub fn feed(&mut self, input: &[u8], out: &mut [u8]) -> Result<Feed, CryptoError> {
        match self.phase {
            Phase::Failed(e) => return Err(e),
            Phase::Finished => return Err(CryptoError::AlreadyFinished),
            Phase::Header | Phase::Payload => {}
        }
        if self.resuming
            && let Err(e) = self.end_resume()
        {
            return Err(self.fail(e));
        }
        let mut fed = Feed::default();
        match self.feed_inner(input, out, &mut fed) {
            Ok(()) => Ok(fed),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn feed_inner(
        &mut self,
        input: &[u8],
        out: &mut [u8],
        fed: &mut Feed,
    ) -> Result<(), CryptoError> {
        let mut input = input;
        if self.phase == Phase::Header {
            let want = HEADER_LEN - self.header_fill;
            let n = want.min(input.len());
            let (take, rest) = input.split_at(n);
            if let Some(dst) = self.header.get_mut(self.header_fill..self.header_fill + n) {
                dst.copy_from_slice(take);
            }
            self.header_fill += n;
            self.received += n as u64;
            fed.consumed += n;
            input = rest;
            if self.header_fill < HEADER_LEN {
                return Ok(());
            }
            self.accept_header()?;
            self.phase = Phase::Payload;
        }
        let Some(m) = self.manifest else {
            return Ok(());
        };
        let mut out = out;
        match m.encryption {
            Encryption::None => {
                let remaining = m.payload_size - self.released;
                let n = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(input.len())
                    .min(out.len());
                let (take, rest) = input.split_at(n);
                if let Some(dst) = out.get_mut(..n) {
                    dst.copy_from_slice(take);
                }
                self.hasher.update(take);
                self.released += n as u64;
                self.received += n as u64;
                fed.consumed += n;
                fed.produced += n;
                input = rest;
            }
            Encryption::ChaCha20Poly1305 { .. } => loop {
                // 1. Release decrypted plaintext.
                let pending = self.pending_end - self.pending_start;
                let n = pending.min(out.len());
                if n > 0 {
                    let src = self
                        .chunk_buf
                        .get(self.pending_start..self.pending_start + n)
                        .unwrap_or_default();
                    let (dst, rest) = core::mem::take(&mut out).split_at_mut(n);
                    dst.copy_from_slice(src);
                    out = rest;
                    self.pending_start += n;
                    self.released += n as u64;
                    fed.produced += n;
                }
                if self.pending_start < self.pending_end || self.chunk_index >= m.chunk_count() {
                    break;
                }
                // 2. Collect the next sealed chunk.
                let sealed =
                    usize::try_from(m.chunk_len(self.chunk_index)).unwrap_or(usize::MAX) + TAG_LEN;
                let n = (sealed - self.buf_fill).min(input.len());
                let (take, rest) = input.split_at(n);
                if let Some(dst) = self.chunk_buf.get_mut(self.buf_fill..self.buf_fill + n) {
                    dst.copy_from_slice(take);
                }
                self.buf_fill += n;
                self.received += n as u64;
                fed.consumed += n;
                input = rest;
                if self.buf_fill < sealed {
                    break;
                }
                // 3. Open it.
                self.open_chunk(&m, sealed - TAG_LEN)?;
            },
        }
        if !input.is_empty() && self.received >= m.package_len() {
            return Err(CryptoError::TrailingBytes(input.len()));
        }
        Ok(())
    }

    fn open_chunk(&mut self, m: &Manifest, len: usize) -> Result<(), CryptoError> {
        let index = u32::try_from(self.chunk_index).map_err(|_| CryptoError::TooManyChunks {
            size: m.payload_size,
            chunk_size: m.chunk_size,
        })?;
        let last = self.chunk_index + 1 == m.chunk_count();
        let Encryption::ChaCha20Poly1305 { nonce_prefix, .. } = m.encryption else {
            return Ok(());
        };
        let fail = CryptoError::ChunkAuthentication(index);
        let cipher = self.cipher.as_ref().ok_or(fail)?;
        let (text, rest) = self.chunk_buf.split_at_mut_checked(len).ok_or(fail)?;
        let tag = rest
            .get(..TAG_LEN)
            .and_then(|t| Tag::try_from(t).ok())
            .ok_or(fail)?;
        let nonce = Nonce::from(chunk_nonce(nonce_prefix, index));
        let aad = chunk_aad(&self.manifest_digest, index, last);
        cipher
            .decrypt_inout_detached(&nonce, &aad, text.into(), &tag)
            .map_err(|_| fail)?;
        self.hasher.update(&*text);
        self.chunk_index += 1;
        self.buf_fill = 0;
        self.pending_start = 0;
        self.pending_end = len;
        Ok(())
    }

    /// Manifest + signature complete: authenticate, then apply the policy, then set up
    /// decryption. Nothing of the payload has been accepted yet.
    fn accept_header(&mut self) -> Result<(), CryptoError> {
        let (mbytes, sig) = self.header.split_at(MANIFEST_LEN);
        let m = Manifest::parse(mbytes)?;
        let key = self.keys.signing_key(m.signing_key, self.policy.now)?;
        let sig: [u8; SIGNATURE_LEN] = sig
            .try_into()
            .map_err(|_| CryptoError::BadSignature(m.signing_key))?;
        key.verify_strict(mbytes, &Signature::from_bytes(&sig))
            .map_err(|_| CryptoError::BadSignature(m.signing_key))?;
        self.policy.check(&m)?;
        if let Encryption::ChaCha20Poly1305 { key_id, .. } = m.encryption {
            let pk = self
                .payload_key
                .filter(|k| k.key_id() == key_id)
                .ok_or(CryptoError::UnknownPayloadKey(key_id))?;
            let needed = chunk_buffer_len(&m);
            if self.chunk_buf.len() < needed {
                return Err(CryptoError::ChunkBufferTooSmall {
                    needed,
                    available: self.chunk_buf.len(),
                });
            }
            self.cipher = Some(ChaCha20Poly1305::new(pk.as_bytes().into()));
        }
        let mut encoded = [0u8; MANIFEST_LEN];
        encoded.copy_from_slice(mbytes);
        self.manifest_digest = Manifest::digest_of(&encoded);
        self.manifest = Some(m);
        Ok(())
    }

    /// Ends the stream: `Ok` only when every package byte was received, every chunk
    /// authenticated, all plaintext released, and the plaintext SHA-256 equals the signed one.
    pub fn finish(&mut self) -> Result<(), CryptoError> {
        match self.phase {
            Phase::Failed(e) => return Err(e),
            Phase::Finished => return Err(CryptoError::AlreadyFinished),
            Phase::Header | Phase::Payload => {}
        }
        let r = self.check_complete();
        match r {
            Ok(()) => {
                self.phase = Phase::Finished;
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn check_complete(&mut self) -> Result<(), CryptoError> {
        let Some(m) = self.manifest else {
            return Err(CryptoError::Truncated {
                received: self.received,
                expected: HEADER_LEN as u64,
            });
        };
        if self.received < m.package_len() {
            return Err(CryptoError::Truncated {
                received: self.received,
                expected: m.package_len(),
            });
        }
        if self.released < m.payload_size {
            return Err(CryptoError::PlaintextNotDrained(
                m.payload_size - self.released,
            ));
        }
        let digest: [u8; 32] = self.hasher.clone().finalize().into();
        if digest != m.digest {
            return Err(CryptoError::DigestMismatch);
        }
        Ok(())
    }
}

impl PackageReader for SignedPackageReader<'_> {
    fn feed(&mut self, input: &[u8], out: &mut [u8]) -> Result<Feed, UpdateError> {
        SignedPackageReader::feed(self, input, out).map_err(CryptoError::update_error)
    }

    fn finish(&mut self) -> Result<(), UpdateError> {
        SignedPackageReader::finish(self).map_err(CryptoError::update_error)
    }

    fn package_len(&self) -> Option<u64> {
        self.manifest.map(|m| m.package_len())
    }

    fn plaintext_len(&self) -> Option<u64> {
        self.manifest.map(|m| m.payload_size)
    }
}

/// A reader from [`SignedPackageReader::new`] resumes by restarting from byte 0: the state
/// after a package prefix (the authenticated manifest, the decryptor's position and the
/// running SHA-256 over the plaintext) needs the manifest and signature at the start of the
/// package, which the plaintext in the slot cannot stand in for (it carries no signature), so
/// its [`absorb_written`](ResumableReader::absorb_written) refuses and the updater downloads
/// the package again from the start.
///
/// A reader from [`SignedPackageReader::resuming`] has the header (and the partial sealed
/// chunk) a device persisted with its checkpoint: it verifies the header again, re-hashes the
/// absorbed plaintext and continues where the checkpoint left off.
impl ResumableReader for SignedPackageReader<'_> {
    /// `Err(UpdateError::InvalidState)` for a reader from [`SignedPackageReader::new`] (left
    /// as it was; the caller [`restart`](ResumableReader::restart)s it and feeds the package
    /// from byte 0). For a reader from [`SignedPackageReader::resuming`]: the header's
    /// verification error, if any, else `Ok` while the plaintext fits the payload.
    fn absorb_written(&mut self, plaintext: &[u8]) -> Result<(), UpdateError> {
        if !self.resuming {
            return Err(UpdateError::InvalidState);
        }
        self.absorb(plaintext)
            .map_err(|e| self.fail(e).update_error())
    }

    /// Back to the state [`SignedPackageReader::new`] gave: same key set, payload key, policy
    /// and chunk buffer; the manifest, decryptor, digest, counters and any error are cleared.
    fn restart(&mut self) {
        let chunk_buf = core::mem::take(&mut self.chunk_buf);
        *self = Self::new(self.keys, self.payload_key, self.policy, chunk_buf);
    }
}
