//! The streaming, heap-free Sming `.ota` reader (device side).

use crypto_secretstream::PullStream;
use ed25519_dalek::VerifyingKey;
use ota_core::UpdateError;
use ota_core::reader::{Feed, PackageReader, ResumableReader};
use zeroize::Zeroize;

use super::plain::{Check, PlainParser};
use super::stream::{pull_chunk, pull_init};
use super::{
    FileHeader, Integrity, RomHeader, STREAM_HEADER_LEN, Slot, SmingError, Stage, Timestamp,
    Verifier,
};

/// Largest ciphertext chunk a default reader holds: what `otatool.py` writes (2048 bytes).
pub const DEFAULT_CHUNK_CAPACITY: usize = 2048;

/// How a device reads Sming packages: what it trusts, where it writes, what it refuses.
#[derive(Clone, Copy, Debug)]
pub struct SmingConfig {
    /// The device's build setting: signed (with the pinned key) or MD5.
    pub verifier: Verifier,
    /// `Some(key)` if the device was built with `ENABLE_OTA_ENCRYPTION=1`.
    pub decrypt_key: Option<[u8; 32]>,
    /// The slot that will receive the image (Sming: the next boot partition).
    pub slot: Slot,
    /// The running firmware's build timestamp; `None` when downgrades are allowed
    /// (`ENABLE_OTA_DOWNGRADE=1`). Older files are refused, equal ones accepted.
    pub minimum_timestamp: Option<Timestamp>,
}

/// What a verified package held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The file header.
    pub header: FileHeader,
    /// Index and record of the ROM written to the slot (`None` for a zero-ROM package).
    pub selected: Option<(u8, RomHeader)>,
    /// Length of the plain layout in bytes.
    pub plain_len: u64,
    /// Encrypted chunks read (0 for a plain file).
    pub chunks: u32,
    /// The trailer kind.
    pub integrity: Integrity,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Header,
    Length,
    Body,
    Plain,
    Final,
}

struct Container<const N: usize> {
    key: [u8; 32],
    stream: Option<PullStream>,
    phase: Phase,
    small: [u8; STREAM_HEADER_LEN],
    small_len: usize,
    chunk: [u8; N],
    chunk_len: usize,
    chunk_target: usize,
    plain_start: usize,
    plain_end: usize,
    index: u32,
    final_seen: bool,
    /// The chunk's last input byte is not yet reported consumed: its plaintext is still
    /// pending, and the caller must call again (re-feeding that byte) to drain it.
    holding: bool,
}

impl<const N: usize> Container<N> {
    fn new(key: [u8; 32]) -> Self {
        Self {
            key,
            stream: None,
            phase: Phase::Header,
            small: [0; STREAM_HEADER_LEN],
            small_len: 0,
            chunk: [0; N],
            chunk_len: 0,
            chunk_target: 0,
            plain_start: 0,
            plain_end: 0,
            index: 0,
            final_seen: false,
            holding: false,
        }
    }

    /// Back to the state [`Container::new`] gave, keeping the key.
    fn reset(&mut self) {
        self.stream = None;
        self.phase = Phase::Header;
        self.small = [0; STREAM_HEADER_LEN];
        self.small_len = 0;
        self.chunk.zeroize();
        self.chunk_len = 0;
        self.chunk_target = 0;
        self.plain_start = 0;
        self.plain_end = 0;
        self.index = 0;
        self.final_seen = false;
        self.holding = false;
    }

    /// Decrypts the collected chunk in place; its plaintext becomes pending.
    fn decrypt(&mut self) -> Result<(), SmingError> {
        let failed = SmingError::DecryptionFailed {
            chunk: self.index,
            len: u32::try_from(self.chunk_len).unwrap_or(u32::MAX),
        };
        let stream = self.stream.as_mut().ok_or(failed)?;
        let (len, last) =
            pull_chunk(stream, &mut self.chunk, self.chunk_len).map_err(|_| failed)?;
        self.holding = true;
        self.plain_start = 0;
        self.plain_end = len;
        self.final_seen = last;
        self.phase = Phase::Plain;
        if !last {
            self.index = self.index.saturating_add(1);
        }
        Ok(())
    }
}

impl<const N: usize> Drop for Container<N> {
    fn drop(&mut self) {
        self.key.zeroize();
        self.chunk.zeroize();
    }
}

/// Streams a Sming advanced `.ota` file (plain or encrypted) into the target slot.
///
/// `N` is the largest ciphertext chunk accepted (default [`DEFAULT_CHUNK_CAPACITY`]); the
/// reader holds one chunk plus about 400 bytes of state and never allocates.
///
/// ```
/// use ota_crypto::sming::{SmingConfig, SmingReader, Slot, Verifier};
/// let config = SmingConfig {
///     verifier: Verifier::Md5,
///     decrypt_key: None,
///     slot: Slot { address: 0x2000, size: 0x1000 },
///     minimum_timestamp: None,
/// };
/// let mut reader: SmingReader = SmingReader::new(&config);
/// // Vector B of the reference: one 4-byte ROM at 0x2000, MD5 trailer.
/// let file = [
///     0x20, 0xf0, 0x1a, 0xf0, 0xe6, 0xd5, 0xc4, 0xb3, 0xa2, 0x01, 0, 0, 1, 0, 0, 0,
///     0x00, 0x20, 0, 0, 4, 0, 0, 0, 0xe9, 1, 2, 3,
///     0xa0, 0xa2, 0xaa, 0x38, 0xb3, 0x4e, 0x0c, 0xa9, 0xd1, 0xde, 0x23, 0xae, 0x51, 0x8d, 0x38, 0x7b,
/// ];
/// let mut image = [0u8; 16];
/// let fed = reader.write(&file, &mut image)?;
/// assert_eq!(&image[..fed.produced], &[0xe9, 1, 2, 3]);
/// reader.verify_end()?;
/// # Ok::<(), ota_crypto::sming::SmingError>(())
/// ```
pub struct SmingReader<const N: usize = DEFAULT_CHUNK_CAPACITY> {
    plain: PlainParser,
    container: Option<Container<N>>,
    /// The settings [`ResumableReader::restart`] rebuilds the parser from; the verifying key
    /// is kept compressed (32 bytes instead of 192) to keep the reader small.
    trust: Trust,
    slot: Option<Slot>,
    minimum: Option<Timestamp>,
    error: Option<SmingError>,
    input_offset: u64,
}

/// What the trailer is checked against, with keys in their 32-byte encoding.
#[derive(Clone, Copy)]
enum Trust {
    Md5,
    Ed25519ph([u8; 32]),
    Inspect(Option<[u8; 32]>),
}

impl Trust {
    fn of(check: Check) -> Self {
        match check {
            Check::Verify(Verifier::Md5) => Self::Md5,
            Check::Verify(Verifier::Ed25519ph(key)) => Self::Ed25519ph(key.to_bytes()),
            Check::Inspect(key) => Self::Inspect(key.map(|k| k.to_bytes())),
        }
    }

    /// The check again. A key that was valid when encoded always decodes; if it ever did
    /// not, every signed package fails verification (never a fallback to MD5).
    fn check(self) -> Result<Check, SmingError> {
        let decode = |bytes: [u8; 32]| {
            VerifyingKey::from_bytes(&bytes).map_err(|_| SmingError::VerificationFailed {
                integrity: Integrity::Ed25519ph,
            })
        };
        Ok(match self {
            Self::Md5 => Check::Verify(Verifier::Md5),
            Self::Ed25519ph(bytes) => Check::Verify(Verifier::Ed25519ph(decode(bytes)?)),
            Self::Inspect(None) => Check::Inspect(None),
            Self::Inspect(Some(bytes)) => Check::Inspect(Some(decode(bytes)?)),
        })
    }
}

impl<const N: usize> core::fmt::Debug for SmingReader<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SmingReader")
            .field("encrypted", &self.container.is_some())
            .field("input_offset", &self.input_offset)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<const N: usize> SmingReader<N> {
    /// A reader configured like a Sming device.
    pub fn new(config: &SmingConfig) -> Self {
        Self::with_check(
            Check::Verify(config.verifier),
            config.decrypt_key,
            Some(config.slot),
            config.minimum_timestamp,
        )
    }

    pub(crate) fn with_check(
        check: Check,
        decrypt_key: Option<[u8; 32]>,
        slot: Option<Slot>,
        minimum: Option<Timestamp>,
    ) -> Self {
        Self {
            plain: PlainParser::new(check, slot, minimum),
            container: decrypt_key.map(Container::new),
            trust: Trust::of(check),
            slot,
            minimum,
            error: None,
            input_offset: 0,
        }
    }

    /// A fresh parser for the settings this reader was built with.
    fn fresh_parser(&self) -> Result<PlainParser, SmingError> {
        Ok(PlainParser::new(
            self.trust.check()?,
            self.slot,
            self.minimum,
        ))
    }

    /// Package bytes consumed so far.
    pub fn input_offset(&self) -> u64 {
        self.input_offset
    }

    /// The file header, once read.
    pub fn file_header(&self) -> Option<FileHeader> {
        self.plain.header()
    }

    /// The first ROM records seen (up to 8; Sming packages hold 1–3).
    pub fn roms(&self) -> &[RomHeader] {
        self.plain.roms()
    }

    /// The ROM chosen for the slot, once its record was read.
    pub fn selected(&self) -> Option<(u8, RomHeader)> {
        self.plain.selected()
    }

    /// Feeds package bytes; bytes of the selected ROM are written to the front of `out`.
    ///
    /// Consumes less than `input` only when `out` is full. After an error every call
    /// returns the same error.
    pub fn write(&mut self, input: &[u8], out: &mut [u8]) -> Result<Feed, SmingError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let result = match self.container {
            None => self.plain.feed(input, out),
            Some(_) => self.feed_encrypted(input, out),
        };
        match result {
            Ok(feed) => {
                self.input_offset += feed.consumed as u64;
                Ok(feed)
            }
            Err(e) => {
                self.error = Some(e);
                Err(e)
            }
        }
    }

    fn feed_encrypted(&mut self, input: &[u8], out: &mut [u8]) -> Result<Feed, SmingError> {
        let Some(c) = self.container.as_mut() else {
            return Ok(Feed::default());
        };
        let mut feed = Feed::default();
        loop {
            let rest = input.get(feed.consumed..).unwrap_or_default();
            match c.phase {
                Phase::Plain if c.plain_start < c.plain_end => {
                    let pending = c.chunk.get(c.plain_start..c.plain_end).unwrap_or_default();
                    let room = out.get_mut(feed.produced..).unwrap_or_default();
                    let step = self.plain.feed(pending, room)?;
                    c.plain_start += step.consumed;
                    feed.produced += step.produced;
                    if step.consumed == 0 {
                        break; // `out` is full; the held byte makes the caller come back
                    }
                }
                Phase::Plain => {
                    if c.holding {
                        if rest.is_empty() {
                            break;
                        }
                        feed.consumed += 1;
                        c.holding = false;
                    }
                    c.phase = if c.final_seen {
                        Phase::Final
                    } else {
                        Phase::Length
                    };
                }
                _ if rest.is_empty() => break,
                Phase::Header => {
                    let take = (STREAM_HEADER_LEN - c.small_len).min(rest.len());
                    if let (Some(dst), Some(src)) = (
                        c.small.get_mut(c.small_len..c.small_len + take),
                        rest.get(..take),
                    ) {
                        dst.copy_from_slice(src);
                    }
                    c.small_len += take;
                    feed.consumed += take;
                    if c.small_len == STREAM_HEADER_LEN {
                        // The key stays (zeroized on drop) so that `restart` can
                        // decrypt the stream again from its header.
                        c.stream = Some(pull_init(&c.small, &c.key));
                        c.small_len = 0;
                        c.phase = Phase::Length;
                    }
                }
                Phase::Length => {
                    if let (Some(dst), Some(&src)) = (c.small.get_mut(c.small_len), rest.first()) {
                        *dst = src;
                    }
                    c.small_len += 1;
                    feed.consumed += 1;
                    if c.small_len == 2 {
                        let [lo, hi, ..] = c.small;
                        let len = usize::from(u16::from_le_bytes([lo, hi])) + 1;
                        if len > N {
                            return Err(SmingError::ChunkTooLarge {
                                chunk: c.index,
                                len: u32::try_from(len).unwrap_or(u32::MAX),
                                capacity: u32::try_from(N).unwrap_or(u32::MAX),
                            });
                        }
                        c.small_len = 0;
                        c.chunk_len = 0;
                        c.chunk_target = len;
                        c.phase = Phase::Body;
                    }
                }
                Phase::Body => {
                    let take = (c.chunk_target - c.chunk_len).min(rest.len());
                    if let (Some(dst), Some(src)) = (
                        c.chunk.get_mut(c.chunk_len..c.chunk_len + take),
                        rest.get(..take),
                    ) {
                        dst.copy_from_slice(src);
                    }
                    c.chunk_len += take;
                    feed.consumed += take;
                    if c.chunk_len == c.chunk_target {
                        // Report the last byte only once the plaintext is drained.
                        feed.consumed -= 1;
                        c.decrypt()?;
                    }
                }
                Phase::Final => return Err(SmingError::DataAfterFinal { chunk: c.index }),
            }
        }
        Ok(feed)
    }

    /// Ends the stream: `Ok` only if the trailer verified (and, encrypted, FINAL was seen).
    pub fn verify_end(&mut self) -> Result<Summary, SmingError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let truncated = |stage| SmingError::Truncated {
            stage,
            offset: self.input_offset,
        };
        let chunks = match &self.container {
            Some(c) if c.phase != Phase::Final => {
                let stage = if c.phase == Phase::Header {
                    Stage::StreamHeader
                } else {
                    Stage::Chunk
                };
                let e = truncated(stage);
                self.error = Some(e);
                return Err(e);
            }
            Some(c) => c.index + 1,
            None => 0,
        };
        if !self.plain.is_done() {
            let e = truncated(self.plain.stage());
            self.error = Some(e);
            return Err(e);
        }
        match (self.plain.header(), self.plain.integrity()) {
            (Some(header), Some(integrity)) => Ok(Summary {
                header,
                selected: self.plain.selected(),
                plain_len: self.plain.offset(),
                chunks,
                integrity,
            }),
            _ => Err(truncated(Stage::FileHeader)),
        }
    }
}

impl<const N: usize> PackageReader for SmingReader<N> {
    fn feed(&mut self, input: &[u8], out: &mut [u8]) -> Result<Feed, UpdateError> {
        Ok(self.write(input, out)?)
    }

    fn finish(&mut self) -> Result<(), UpdateError> {
        self.verify_end()?;
        Ok(())
    }

    fn package_len(&self) -> Option<u64> {
        match self.container {
            None => self.plain.total_len(),
            Some(_) => None,
        }
    }

    fn plaintext_len(&self) -> Option<u64> {
        self.plain.selected().map(|(_, rom)| u64::from(rom.size))
    }
}

/// Sming packages resume by restarting from byte 0.
///
/// The parser's state after a prefix (file header, ROM records, the running SHA-512/MD5 over
/// the whole file, and for encrypted files the secretstream state after the stream header)
/// comes only from the package bytes themselves, not from the plaintext in the slot, so
/// [`absorb_written`](ResumableReader::absorb_written) always refuses: bytes already in the
/// slot are never trusted, and the updater downloads the package again from the start.
impl<const N: usize> ResumableReader for SmingReader<N> {
    /// Always `Err(UpdateError::InvalidState)`: the reader is left as it was, and the caller
    /// [`restart`](ResumableReader::restart)s it and feeds the package from byte 0.
    fn absorb_written(&mut self, _plaintext: &[u8]) -> Result<(), UpdateError> {
        Err(UpdateError::InvalidState)
    }

    /// Back to the state [`SmingReader::new`] gave: same verifier, key, slot and minimum
    /// timestamp; the error, offset and everything parsed are cleared.
    fn restart(&mut self) {
        if let Some(c) = self.container.as_mut() {
            c.reset();
        }
        self.input_offset = 0;
        match self.fresh_parser() {
            Ok(parser) => {
                self.plain = parser;
                self.error = None;
            }
            Err(e) => self.error = Some(e),
        }
    }
}
