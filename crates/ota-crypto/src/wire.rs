//! Panic-free little-endian byte cursor and writer shared by the manifest and key set codecs.

#![deny(clippy::indexing_slicing)]

/// Reads fixed-size fields from the front of a slice; `None` when the slice is exhausted.
pub(crate) struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.rest.split_first_chunk::<N>()?;
        self.rest = rest;
        Some(*head)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

/// Writes fields to the front of a slice the caller sized exactly; excess writes are dropped
/// (callers size the buffer from the same constants, and tests check the lengths).
pub(crate) struct Writer<'a> {
    rest: &'a mut [u8],
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Self { rest: buf }
    }

    pub(crate) fn put(&mut self, bytes: &[u8]) {
        let rest = core::mem::take(&mut self.rest);
        let n = bytes.len().min(rest.len());
        let (head, tail) = rest.split_at_mut(n);
        head.copy_from_slice(bytes.get(..n).unwrap_or_default());
        self.rest = tail;
    }
}
