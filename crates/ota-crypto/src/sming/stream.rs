//! libsodium `crypto_secretstream_xchacha20poly1305` framing as Sming uses it.
//!
//! Pull uses [`crypto_secretstream::PullStream`] over a caller-owned slice (no heap). Push
//! drives the crate's public [`Stream`] AEAD with the nonce/counter evolution of libsodium
//! (counter from 1, nonce ^= first 8 MAC bytes after each message), for the two tags Sming
//! produces (MESSAGE and FINAL), so a header can be supplied for reproducible files.

#[cfg(feature = "std")]
use crypto_secretstream::Stream;
#[cfg(feature = "std")]
use crypto_secretstream::aead::AeadInPlace;
#[cfg(feature = "std")]
use crypto_secretstream::aead::generic_array::GenericArray;
use crypto_secretstream::aead::{self, Buffer};
use crypto_secretstream::{Header, Key, PullStream, Tag};

use super::{STREAM_ABYTES, STREAM_HEADER_LEN};

/// An [`aead::Buffer`] over a fixed slice: lets `PullStream` decrypt in place without heap.
pub(crate) struct SliceBuffer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> SliceBuffer<'a> {
    pub(crate) fn new(buf: &'a mut [u8], len: usize) -> Self {
        let len = len.min(buf.len());
        Self { buf, len }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl AsRef<[u8]> for SliceBuffer<'_> {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl AsMut<[u8]> for SliceBuffer<'_> {
    fn as_mut(&mut self) -> &mut [u8] {
        self.buf.get_mut(..self.len).unwrap_or_default()
    }
}

impl Buffer for SliceBuffer<'_> {
    fn extend_from_slice(&mut self, other: &[u8]) -> aead::Result<()> {
        let end = self.len.checked_add(other.len()).ok_or(aead::Error)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(aead::Error)?;
        dst.copy_from_slice(other);
        self.len = end;
        Ok(())
    }

    fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// Opens a pull stream from a 24-byte header.
pub(crate) fn pull_init(header: &[u8; STREAM_HEADER_LEN], key: &[u8; 32]) -> PullStream {
    PullStream::init(Header::from(*header), &Key::from(*key))
}

/// Decrypts one chunk in place; returns (plaintext length, is FINAL).
pub(crate) fn pull_chunk(
    stream: &mut PullStream,
    chunk: &mut [u8],
    len: usize,
) -> Result<(usize, bool), aead::Error> {
    if len < STREAM_ABYTES {
        return Err(aead::Error);
    }
    let mut buffer = SliceBuffer::new(chunk, len);
    let tag = stream.pull(&mut buffer, &[])?;
    Ok((buffer.len(), tag == Tag::Final))
}

/// The push side with an explicit header.
#[cfg(feature = "std")]
pub(crate) struct Pusher {
    stream: Stream,
    nonce: [u8; 8],
    counter: u32,
}

#[cfg(feature = "std")]
impl Pusher {
    /// Starts a stream with the given header (libsodium draws it at random).
    pub(crate) fn new(header: &[u8; STREAM_HEADER_LEN], key: &[u8; 32]) -> Self {
        let mut nonce = [0u8; 8];
        if let Some(tail) = header.get(16..) {
            nonce.copy_from_slice(tail);
        }
        Self {
            stream: Stream::init(&Key::from(*key), Header::from(*header)),
            nonce,
            counter: 1,
        }
    }

    /// Encrypts `buf[1..len + 1]` (the message, with `buf[0]` reserved for the tag) in place
    /// and appends the MAC; returns the ciphertext length `len + 17`. `buf` must hold it.
    pub(crate) fn push(
        &mut self,
        buf: &mut [u8],
        len: usize,
        last: bool,
    ) -> Result<usize, aead::Error> {
        let total = len.checked_add(STREAM_ABYTES).ok_or(aead::Error)?;
        let body_end = len + 1;
        let tag = if last { Tag::Final } else { Tag::Message };
        let mut cipher_nonce = [0u8; 12];
        let (counter, nonce) = cipher_nonce.split_at_mut(4);
        counter.copy_from_slice(&self.counter.to_le_bytes());
        nonce.copy_from_slice(&self.nonce);
        let body = buf.get_mut(..body_end).ok_or(aead::Error)?;
        if let Some(first) = body.first_mut() {
            *first = tag as u8;
        }
        let mac =
            self.stream
                .encrypt_in_place_detached(&GenericArray::from(cipher_nonce), &[], body)?;
        buf.get_mut(body_end..total)
            .ok_or(aead::Error)?
            .copy_from_slice(mac.as_slice());
        for (n, m) in self.nonce.iter_mut().zip(mac.as_slice()) {
            *n ^= m;
        }
        // libsodium rekeys when the counter wraps; 2^32 chunks (8 TB) is out of scope.
        self.counter = self.counter.checked_add(1).ok_or(aead::Error)?;
        Ok(total)
    }
}
