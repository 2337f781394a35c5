//! Host side (feature `std`): write Sming `.ota` files like `otatool.py mkfile`, and read
//! whole files for `verify`/`inspect`, streaming through `std::io` in constant memory.

use std::boxed::Box;
use std::io::{self, Read, Write};
use std::vec;
use std::vec::Vec;

use ed25519_dalek::{Digest, Sha512, SigningKey};
use md5::Md5;

use super::plain::Check;
use super::reader::SmingReader;
use super::stream::Pusher;
use super::{
    FileHeader, Integrity, OTATOOL_CHUNK_PLAINTEXT, RomHeader, STREAM_ABYTES, STREAM_HEADER_LEN,
    Slot, SmingError, Summary, Timestamp, Verifier,
};

/// One ROM image to package: where it goes and where its bytes come from.
#[derive(Debug)]
pub struct Rom<R> {
    /// Flash address the image was built for (`--rom FILE@ADDR` in `otatool.py`).
    pub address: u32,
    /// Exact number of bytes `data` will yield.
    pub size: u32,
    /// The image bytes.
    pub data: R,
}

/// Encryption parameters of a package.
#[derive(Clone)]
pub struct Encryption {
    /// The secretstream key (`decrypt.key.bin`).
    pub key: [u8; 32],
    /// The 24-byte stream header; draw it at random (libsodium does) except for test vectors.
    pub header: [u8; STREAM_HEADER_LEN],
}

impl core::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Encryption")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// How to write a package.
#[derive(Debug)]
pub struct WriteOptions {
    /// Build timestamp for the header ([`Timestamp::from_unix_millis`] of "now", UTC).
    pub timestamp: Timestamp,
    /// `Some` for a signed package (Ed25519ph); `None` for an MD5 trailer.
    pub signing_key: Option<SigningKey>,
    /// `Some` to wrap the file in a secretstream container.
    pub encryption: Option<Encryption>,
}

/// Why writing failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Reading a ROM or writing the output failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// More than 255 ROMs.
    #[error("{count} ROMs given, the format holds at most 255")]
    TooManyRoms {
        /// ROMs given.
        count: usize,
    },
    /// A ROM source yielded a different number of bytes than announced.
    #[error("ROM {rom} yielded {actual} bytes, {declared} were declared")]
    RomSizeMismatch {
        /// ROM index.
        rom: usize,
        /// Declared size.
        declared: u32,
        /// Bytes actually read (stops counting one past the declared size).
        actual: u64,
    },
    /// The encryption step failed (cannot happen with chunk sizes used here).
    #[error("secretstream encryption failed at chunk {chunk}")]
    Encryption {
        /// Chunk index.
        chunk: u32,
    },
}

enum TrailerHash {
    Sha512(Box<Sha512>),
    Md5(Md5),
}

/// Everything after the plain layout: either the output itself or the encryptor.
enum Sink<W: Write> {
    Plain(W),
    Encrypted {
        out: W,
        pusher: Pusher,
        /// `buf[0]` is the tag slot, `buf[1..=len]` the pending plaintext.
        buf: Box<[u8; OTATOOL_CHUNK_PLAINTEXT + STREAM_ABYTES]>,
        len: usize,
        chunk: u32,
    },
}

impl<W: Write> Sink<W> {
    fn write(&mut self, mut data: &[u8]) -> Result<u64, WriteError> {
        match self {
            Self::Plain(out) => {
                out.write_all(data)?;
                Ok(data.len() as u64)
            }
            Self::Encrypted {
                out,
                pusher,
                buf,
                len,
                chunk,
            } => {
                let mut written = 0u64;
                while !data.is_empty() {
                    if *len == OTATOOL_CHUNK_PLAINTEXT {
                        // More data follows: this full piece is not the last one.
                        written += push(out, pusher, buf, len, chunk, false)?;
                    }
                    let take = (OTATOOL_CHUNK_PLAINTEXT - *len).min(data.len());
                    let (head, rest) = data.split_at(take);
                    if let Some(dst) = buf.get_mut(1 + *len..1 + *len + take) {
                        dst.copy_from_slice(head);
                    }
                    *len += take;
                    data = rest;
                }
                Ok(written)
            }
        }
    }

    fn finish(self) -> Result<(W, u64), WriteError> {
        match self {
            Self::Plain(out) => Ok((out, 0)),
            Self::Encrypted {
                mut out,
                mut pusher,
                mut buf,
                mut len,
                mut chunk,
            } => {
                let n = push(&mut out, &mut pusher, &mut buf, &mut len, &mut chunk, true)?;
                Ok((out, n))
            }
        }
    }
}

fn push<W: Write>(
    out: &mut W,
    pusher: &mut Pusher,
    buf: &mut [u8; OTATOOL_CHUNK_PLAINTEXT + STREAM_ABYTES],
    len: &mut usize,
    chunk: &mut u32,
    last: bool,
) -> Result<u64, WriteError> {
    let total = pusher
        .push(buf, *len, last)
        .map_err(|_| WriteError::Encryption { chunk: *chunk })?;
    let prefix = u16::try_from(total - 1).map_err(|_| WriteError::Encryption { chunk: *chunk })?;
    out.write_all(&prefix.to_le_bytes())?;
    out.write_all(buf.get(..total).unwrap_or_default())?;
    *len = 0;
    *chunk += 1;
    Ok(2 + total as u64)
}

/// Writes a package in one streaming pass; returns the bytes written to `out`.
///
/// The output is byte-identical to `otatool.py mkfile` for the same inputs (and, when
/// encrypting, the same stream header): plaintext pieces of 2031 bytes, the last one
/// tagged FINAL. Memory use is constant whatever the ROM sizes.
pub fn write_package<R: Read, W: Write>(
    out: W,
    options: &WriteOptions,
    roms: &mut [Rom<R>],
) -> Result<u64, WriteError> {
    let rom_count =
        u8::try_from(roms.len()).map_err(|_| WriteError::TooManyRoms { count: roms.len() })?;
    let integrity = if options.signing_key.is_some() {
        Integrity::Ed25519ph
    } else {
        Integrity::Md5
    };
    let mut hash = match integrity {
        Integrity::Ed25519ph => TrailerHash::Sha512(Box::new(Sha512::new())),
        Integrity::Md5 => TrailerHash::Md5(Md5::new()),
    };
    let mut written = 0u64;
    let mut sink = match &options.encryption {
        None => Sink::Plain(out),
        Some(enc) => {
            let mut out = out;
            out.write_all(&enc.header)?;
            written += STREAM_HEADER_LEN as u64;
            Sink::Encrypted {
                out,
                pusher: Pusher::new(&enc.header, &enc.key),
                buf: Box::new([0; OTATOOL_CHUNK_PLAINTEXT + STREAM_ABYTES]),
                len: 0,
                chunk: 0,
            }
        }
    };
    let mut emit = |sink: &mut Sink<W>, data: &[u8]| -> Result<u64, WriteError> {
        match &mut hash {
            TrailerHash::Sha512(h) => h.update(data),
            TrailerHash::Md5(h) => h.update(data),
        }
        sink.write(data)
    };
    let header = FileHeader {
        magic: integrity.magic(),
        timestamp: options.timestamp,
        rom_count,
    };
    written += emit(&mut sink, &header.to_bytes())?;
    let mut buf = vec![0u8; 64 * 1024];
    for (index, rom) in roms.iter_mut().enumerate() {
        let record = RomHeader {
            address: rom.address,
            size: rom.size,
        };
        written += emit(&mut sink, &record.to_bytes())?;
        let mut left = u64::from(rom.size);
        let mismatch = |actual| WriteError::RomSizeMismatch {
            rom: index,
            declared: rom.size,
            actual,
        };
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let n = rom.data.read(buf.get_mut(..want).unwrap_or_default())?;
            if n == 0 {
                return Err(mismatch(u64::from(rom.size) - left));
            }
            written += emit(&mut sink, buf.get(..n).unwrap_or_default())?;
            left -= n as u64;
        }
        // One byte more would mean the source is longer than declared.
        if rom.data.read(&mut [0u8; 1])? != 0 {
            return Err(mismatch(u64::from(rom.size) + 1));
        }
    }
    let trailer: Vec<u8> = match (hash, &options.signing_key) {
        (TrailerHash::Sha512(h), Some(key)) => key
            .sign_prehashed(*h, None)
            .map_err(|e| WriteError::Io(io::Error::other(e)))?
            .to_bytes()
            .to_vec(),
        (TrailerHash::Md5(h), _) => h.finalize().to_vec(),
        (TrailerHash::Sha512(_), None) => Vec::new(),
    };
    written += sink.write(&trailer)?;
    let (mut out, tail) = sink.finish()?;
    out.flush()?;
    Ok(written + tail)
}

/// How to read a package on the host.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadOptions {
    /// `Some` to enforce a device's setting (magic + key); `None` to inspect: accept either
    /// magic, check MD5 trailers, and check signatures only with [`ReadOptions::public_key`]
    /// ([`Report::signature_checked`] says whether one was checked).
    pub verifier: Option<Verifier>,
    /// When inspecting (`verifier: None`): the key to check a signed trailer with, if any.
    pub public_key: Option<ed25519_dalek::VerifyingKey>,
    /// The secretstream key if the file is encrypted.
    pub decrypt_key: Option<[u8; 32]>,
    /// `Some` to select like a device; `None` selects the first ROM.
    pub slot: Option<Slot>,
    /// Refuse files older than this.
    pub minimum_timestamp: Option<Timestamp>,
}

/// Result of reading a whole file on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// What the reader saw.
    pub summary: Summary,
    /// Every ROM record (the reader remembers up to 8).
    pub roms: Vec<RomHeader>,
    /// Total package bytes read.
    pub package_len: u64,
    /// Whether an Ed25519ph signature was checked against a key.
    pub signature_checked: bool,
    /// Whether the file was encrypted.
    pub encrypted: bool,
}

/// Why reading a file on the host failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Reading the input or writing the image failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The package was rejected.
    #[error(transparent)]
    Package(#[from] SmingError),
}

/// Whether `bytes` start with a Sming plain magic (an encrypted file starts with a random
/// header instead; a collision has probability 2^-31).
pub fn looks_plain(bytes: &[u8]) -> bool {
    match bytes {
        [a, b, c, d, ..] => Integrity::from_magic(u32::from_le_bytes([*a, *b, *c, *d])).is_some(),
        _ => false,
    }
}

/// Reads a whole package from `input`, writing the selected ROM image to `image`.
///
/// Streams with a 64 KiB buffer; `on_progress` gets the package bytes read so far.
pub fn read_package<R: Read, W: Write>(
    mut input: R,
    options: &ReadOptions,
    mut image: W,
    mut on_progress: impl FnMut(u64),
) -> Result<Report, ReadError> {
    let check = options
        .verifier
        .map_or(Check::Inspect(options.public_key), Check::Verify);
    let mut reader: SmingReader = SmingReader::with_check(
        check,
        options.decrypt_key,
        options.slot,
        options.minimum_timestamp,
    );
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = vec![0u8; 64 * 1024];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let mut chunk = buf.get(..n).unwrap_or_default();
        while !chunk.is_empty() {
            let fed = reader.write(chunk, &mut out)?;
            image.write_all(out.get(..fed.produced).unwrap_or_default())?;
            chunk = chunk.get(fed.consumed..).unwrap_or_default();
        }
        on_progress(reader.input_offset());
    }
    let summary = reader.verify_end()?;
    image.flush()?;
    Ok(Report {
        summary,
        roms: reader.roms().to_vec(),
        package_len: reader.input_offset(),
        signature_checked: summary.integrity == Integrity::Ed25519ph
            && (matches!(options.verifier, Some(Verifier::Ed25519ph(_)))
                || (options.verifier.is_none() && options.public_key.is_some())),
        encrypted: options.decrypt_key.is_some(),
    })
}
