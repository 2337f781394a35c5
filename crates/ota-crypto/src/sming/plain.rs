//! The plain-layout state machine: header, ROM records, trailer; hashes as it goes.

use ed25519_dalek::{Digest, Sha512, Signature};
use md5::Md5;
use ota_core::reader::Feed;

use super::{
    FILE_HEADER_LEN, FileHeader, Integrity, ROM_HEADER_LEN, RomHeader, Slot, SmingError, Stage,
    Timestamp, Verifier,
};

/// How many ROM headers are remembered for inspection (Sming packages hold 1–3).
pub const REMEMBERED_ROMS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    FileHeader,
    RomHeader,
    Rom { write: bool, remaining: u32 },
    Trailer,
    Done,
}

#[derive(Clone, Debug)]
enum Hash {
    Sha512(Sha512),
    Md5(Md5),
}

impl Hash {
    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha512(h) => h.update(data),
            Self::Md5(h) => h.update(data),
        }
    }
}

/// What the trailer is checked against.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Check {
    /// A device: only this verifier's magic and key.
    Verify(Verifier),
    /// Inspection: either magic; MD5 is checked, signatures only if a key is given.
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    Inspect(Option<ed25519_dalek::VerifyingKey>),
}

/// Parses the plain layout; hands the selected ROM's bytes to the caller.
#[derive(Clone, Debug)]
pub(crate) struct PlainParser {
    check: Check,
    slot: Option<Slot>,
    minimum: Option<Timestamp>,
    state: State,
    hash: Hash,
    acc: [u8; 64],
    acc_len: usize,
    offset: u64,
    header: Option<FileHeader>,
    rom_index: u8,
    selected: Option<(u8, RomHeader)>,
    roms: heapless::Vec<RomHeader, REMEMBERED_ROMS>,
    integrity: Option<Integrity>,
}

impl PlainParser {
    /// `slot: None` selects the first ROM whatever its address (host-side reading).
    pub(crate) fn new(check: Check, slot: Option<Slot>, minimum: Option<Timestamp>) -> Self {
        let hash = match check {
            Check::Verify(Verifier::Md5) => Hash::Md5(Md5::new()),
            _ => Hash::Sha512(Sha512::new()),
        };
        Self {
            check,
            slot,
            minimum,
            state: State::FileHeader,
            hash,
            acc: [0; 64],
            acc_len: 0,
            offset: 0,
            header: None,
            rom_index: 0,
            selected: None,
            roms: heapless::Vec::new(),
            integrity: None,
        }
    }

    pub(crate) fn header(&self) -> Option<FileHeader> {
        self.header
    }

    pub(crate) fn selected(&self) -> Option<(u8, RomHeader)> {
        self.selected
    }

    pub(crate) fn roms(&self) -> &[RomHeader] {
        &self.roms
    }

    pub(crate) fn integrity(&self) -> Option<Integrity> {
        self.integrity
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Total plain length, known once the last ROM record has been read.
    pub(crate) fn total_len(&self) -> Option<u64> {
        match self.state {
            State::Trailer | State::Done => Some(
                self.offset - self.acc_len as u64
                    + self.integrity.map_or(0, |i| i.trailer_len() as u64),
            ),
            _ => None,
        }
    }

    pub(crate) fn stage(&self) -> Stage {
        match self.state {
            State::FileHeader => Stage::FileHeader,
            State::RomHeader => Stage::RomHeader,
            State::Rom { .. } => Stage::RomImage,
            State::Trailer | State::Done => Stage::Trailer,
        }
    }

    /// Absorbs up to `need` bytes into the accumulator; `true` once it holds `need`.
    fn accumulate(&mut self, input: &[u8], need: usize, hash: bool) -> (usize, bool) {
        let take = need.saturating_sub(self.acc_len).min(input.len());
        if let (Some(dst), Some(src)) = (
            self.acc.get_mut(self.acc_len..self.acc_len + take),
            input.get(..take),
        ) {
            dst.copy_from_slice(src);
            if hash {
                self.hash.update(src);
            }
        }
        self.acc_len += take;
        self.offset += take as u64;
        (take, self.acc_len == need)
    }

    fn next_rom(&mut self) {
        self.rom_index = self.rom_index.saturating_add(1);
        let count = self.header.map_or(0, |h| h.rom_count);
        self.state = if self.rom_index >= count {
            State::Trailer
        } else {
            State::RomHeader
        };
    }

    fn on_file_header(&mut self) -> Result<(), SmingError> {
        let mut bytes = [0u8; FILE_HEADER_LEN];
        if let Some(src) = self.acc.get(..FILE_HEADER_LEN) {
            bytes.copy_from_slice(src);
        }
        let header = FileHeader::parse(&bytes);
        let integrity = match self.check {
            Check::Verify(v) => {
                let expected = v.integrity().magic();
                if header.magic != expected {
                    return Err(SmingError::WrongMagic {
                        found: header.magic,
                        expected,
                    });
                }
                v.integrity()
            }
            Check::Inspect(_) => {
                let Some(integrity) = Integrity::from_magic(header.magic) else {
                    return Err(SmingError::WrongMagic {
                        found: header.magic,
                        expected: super::MAGIC_SIGNED,
                    });
                };
                if integrity == Integrity::Md5 {
                    // Inspection starts with SHA-512 state; nothing hashed beyond the header.
                    let mut md5 = Md5::new();
                    md5.update(bytes);
                    self.hash = Hash::Md5(md5);
                }
                integrity
            }
        };
        if let Some(minimum) = self.minimum
            && header.timestamp < minimum
        {
            return Err(SmingError::DowngradeNotAllowed {
                found: header.timestamp,
                minimum,
            });
        }
        self.integrity = Some(integrity);
        self.header = Some(header);
        self.state = if header.rom_count == 0 {
            State::Trailer
        } else {
            State::RomHeader
        };
        Ok(())
    }

    fn on_rom_header(&mut self) -> Result<(), SmingError> {
        let mut bytes = [0u8; ROM_HEADER_LEN];
        if let Some(src) = self.acc.get(..ROM_HEADER_LEN) {
            bytes.copy_from_slice(src);
        }
        let rom = RomHeader::parse(&bytes);
        // Capacity overflow only means the rest is not remembered.
        let _ = self.roms.push(rom);
        let write = self.selected.is_none() && self.slot.is_none_or(|s| s.matches(rom.address));
        if write {
            if let Some(slot) = self.slot
                && rom.size > slot.size
            {
                return Err(SmingError::RomTooLarge {
                    rom: self.rom_index,
                    size: rom.size,
                    slot_size: slot.size,
                });
            }
            self.selected = Some((self.rom_index, rom));
        }
        if rom.size == 0 {
            self.next_rom();
        } else {
            self.state = State::Rom {
                write,
                remaining: rom.size,
            };
        }
        Ok(())
    }

    fn on_trailer(&mut self) -> Result<(), SmingError> {
        let integrity = self.integrity.unwrap_or(Integrity::Ed25519ph);
        let hash = core::mem::replace(&mut self.hash, Hash::Md5(Md5::new()));
        let ok = match (hash, self.check) {
            (Hash::Md5(md5), _) => {
                let digest = md5.finalize();
                self.acc.get(..16) == Some(&digest[..])
            }
            (
                Hash::Sha512(sha),
                Check::Verify(Verifier::Ed25519ph(key)) | Check::Inspect(Some(key)),
            ) => {
                let mut sig = [0u8; 64];
                sig.copy_from_slice(&self.acc);
                let sig = Signature::from_bytes(&sig);
                key.verify_prehashed_strict(sha, None, &sig).is_ok()
            }
            (Hash::Sha512(_), _) => matches!(self.check, Check::Inspect(None)),
        };
        self.state = State::Done;
        if !ok {
            return Err(SmingError::VerificationFailed { integrity });
        }
        let rom_count = self.header.map_or(0, |h| h.rom_count);
        if rom_count != 0
            && self.selected.is_none()
            && let Some(slot) = self.slot
        {
            return Err(SmingError::NoRomFound {
                slot_address: slot.address,
            });
        }
        Ok(())
    }

    /// Feeds plaintext; copies bytes of the selected ROM to `out`.
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut [u8]) -> Result<Feed, SmingError> {
        let mut feed = Feed::default();
        while let Some(rest) = input.get(feed.consumed..) {
            if rest.is_empty() {
                break;
            }
            match self.state {
                State::FileHeader => {
                    let (n, full) = self.accumulate(rest, FILE_HEADER_LEN, true);
                    feed.consumed += n;
                    if full {
                        self.acc_len = 0;
                        self.on_file_header()?;
                    }
                }
                State::RomHeader => {
                    let (n, full) = self.accumulate(rest, ROM_HEADER_LEN, true);
                    feed.consumed += n;
                    if full {
                        self.acc_len = 0;
                        self.on_rom_header()?;
                    }
                }
                State::Rom { write, remaining } => {
                    let room = out.len().saturating_sub(feed.produced);
                    let mut n = rest
                        .len()
                        .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    if write {
                        n = n.min(room);
                    }
                    if n == 0 {
                        break;
                    }
                    let Some(src) = rest.get(..n) else {
                        break;
                    };
                    self.hash.update(src);
                    if write && let Some(dst) = out.get_mut(feed.produced..feed.produced + n) {
                        dst.copy_from_slice(src);
                        feed.produced += n;
                    }
                    feed.consumed += n;
                    self.offset += n as u64;
                    let left = remaining - u32::try_from(n).unwrap_or(remaining);
                    if left == 0 {
                        self.next_rom();
                    } else {
                        self.state = State::Rom {
                            write,
                            remaining: left,
                        };
                    }
                }
                State::Trailer => {
                    let need = self.integrity.map_or(64, Integrity::trailer_len);
                    let (n, full) = self.accumulate(rest, need, false);
                    feed.consumed += n;
                    if full {
                        self.on_trailer()?;
                    }
                }
                State::Done => {
                    return Err(SmingError::DataAfterTrailer {
                        offset: self.offset,
                    });
                }
            }
        }
        Ok(feed)
    }
}
