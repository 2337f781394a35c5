//! The plain-image reader: package bytes are the image, checked against an announced digest.

use crate::UpdateError;
use crate::checksum::{ChecksumAlgorithm, Digest, Hasher};
use crate::reader::{Feed, PackageReader};

use super::{Offer, ResumableReader};

/// A [`PackageReader`] for plain images (ThingsBoard, Sming simple, EnigmaIoT): bytes pass
/// through unchanged and are hashed on the way; [`finish`](PackageReader::finish) succeeds only
/// when exactly the announced number of bytes was seen and their digest matches.
///
/// ```
/// use ota_core::checksum::{ChecksumAlgorithm, Hasher};
/// use ota_core::reader::PackageReader;
/// use ota_core::updater::PlainReader;
///
/// let image = b"firmware image";
/// let digest = Hasher::digest(ChecksumAlgorithm::Sha256, image);
/// let mut reader = PlainReader::new(digest, image.len() as u64);
/// let mut out = [0u8; 32];
/// let fed = reader.feed(image, &mut out)?;
/// assert_eq!((fed.consumed, fed.produced), (image.len(), image.len()));
/// reader.finish()?;
/// # Ok::<(), ota_core::UpdateError>(())
/// ```
#[derive(Clone, Debug)]
pub struct PlainReader {
    hasher: Hasher,
    expected: Digest,
    len: u64,
    seen: u64,
}

impl PlainReader {
    /// A reader for an image of `len` bytes whose digest must equal `expected`.
    pub fn new(expected: Digest, len: u64) -> Self {
        Self {
            hasher: Hasher::new(expected.algorithm()),
            expected,
            len,
            seen: 0,
        }
    }

    /// A reader for the image an [`Offer`] announces (its size, algorithm and hex checksum).
    pub fn for_offer(offer: &Offer<'_>) -> Result<Self, UpdateError> {
        let algorithm = ChecksumAlgorithm::from_tb_name(offer.checksum_algorithm)?;
        let expected = Digest::from_hex(algorithm, offer.checksum)?;
        Ok(Self::new(expected, offer.size))
    }

    /// The digest the image must have.
    pub const fn expected(&self) -> &Digest {
        &self.expected
    }

    /// Image bytes seen so far.
    pub const fn seen(&self) -> u64 {
        self.seen
    }

    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.seen)
    }
}

impl PackageReader for PlainReader {
    fn feed(&mut self, input: &[u8], out: &mut [u8]) -> Result<Feed, UpdateError> {
        if !input.is_empty() && self.remaining() == 0 {
            // More bytes than announced: the package is not the one offered.
            return Err(UpdateError::InvalidPackage);
        }
        let room = usize::try_from(self.remaining()).unwrap_or(usize::MAX);
        let n = input.len().min(out.len()).min(room);
        let (Some(src), Some(dst)) = (input.get(..n), out.get_mut(..n)) else {
            return Err(UpdateError::InvalidState);
        };
        dst.copy_from_slice(src);
        self.hasher.update(src);
        self.seen += n as u64;
        Ok(Feed {
            consumed: n,
            produced: n,
        })
    }

    fn finish(&mut self) -> Result<(), UpdateError> {
        if self.seen != self.len {
            return Err(UpdateError::InvalidPackage);
        }
        let hasher = core::mem::replace(&mut self.hasher, Hasher::new(self.expected.algorithm()));
        if hasher.finalize().matches(&self.expected) {
            Ok(())
        } else {
            Err(UpdateError::ChecksumMismatch)
        }
    }

    fn package_len(&self) -> Option<u64> {
        Some(self.len)
    }

    fn plaintext_len(&self) -> Option<u64> {
        Some(self.len)
    }
}

impl ResumableReader for PlainReader {
    fn absorb_written(&mut self, plaintext: &[u8]) -> Result<(), UpdateError> {
        if plaintext.len() as u64 > self.remaining() {
            return Err(UpdateError::InvalidPackage);
        }
        self.hasher.update(plaintext);
        self.seen += plaintext.len() as u64;
        Ok(())
    }

    fn restart(&mut self) {
        self.hasher = Hasher::new(self.expected.algorithm());
        self.seen = 0;
    }
}
