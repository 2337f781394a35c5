//! The package-reader trait: how the updater turns downloaded package bytes into verified
//! plaintext for the slot.
//!
//! `ota-core` implements it for plain images checked against an announced checksum
//! (ThingsBoard, Sming simple, EnigmaIoT); `ota-crypto` implements it for signed and
//! encrypted packages. The core never depends on a crypto crate.

use crate::UpdateError;

/// What one [`PackageReader::feed`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Feed {
    /// How many input bytes were consumed (the caller re-feeds the rest).
    pub consumed: usize,
    /// How many plaintext bytes were written to the front of `out`.
    pub produced: usize,
}

/// A streaming package reader with bounded state.
///
/// Contract:
/// * bytes may arrive in any split, down to one byte per call;
/// * no plaintext is produced before the reader has authenticated whatever header the format
///   has (for signed packages: manifest and signature);
/// * [`finish`](PackageReader::finish) returns `Ok` only when every byte was seen and every
///   check (digest, signature, authentication tags) passed: nothing may become bootable before.
pub trait PackageReader {
    /// Feeds package bytes; writes plaintext to the front of `out`.
    ///
    /// A reader that needs more room than `out` offers consumes less input; the caller
    /// drains `out` and calls again with the unconsumed rest.
    fn feed(&mut self, input: &[u8], out: &mut [u8]) -> Result<Feed, UpdateError>;

    /// Ends the stream: `Ok` only if the whole package was read and verified.
    fn finish(&mut self) -> Result<(), UpdateError>;

    /// Total package bytes the transport must deliver, once known.
    fn package_len(&self) -> Option<u64>;

    /// Total plaintext bytes that will be written to the slot, once known.
    fn plaintext_len(&self) -> Option<u64>;
}

/// A reader that can resume after a power cut: besides streaming, it can re-absorb plaintext that an
/// earlier run already verified and wrote, and start over.
pub trait ResumableReader: PackageReader {
    /// Re-absorbs `plaintext` read back from the slot (in order, from offset 0) so the final
    /// check covers it. Once the checkpoint's `written` bytes are absorbed, the reader must be
    /// in the state it had after the checkpoint's `package_offset` package bytes; a reader that
    /// cannot guarantee that returns `Err`, and the machine restarts the download from 0.
    fn absorb_written(&mut self, plaintext: &[u8]) -> Result<(), UpdateError>;

    /// Forgets everything fed or absorbed so far.
    fn restart(&mut self);
}
