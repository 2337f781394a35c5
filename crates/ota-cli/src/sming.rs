//! `--format sming`: Sming's advanced `.ota` files (`otatool.py` compatible).

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ota_crypto::sming::file::{
    Encryption, ReadError, ReadOptions, Report, Rom, WriteError, WriteOptions, looks_plain,
    read_package, write_package,
};
use ota_crypto::sming::{Integrity, Slot, SmingKey, Timestamp, Verifier};
use serde_json::json;

use crate::exit::{Class, Failure, OrFail, Result};
use crate::files::{self, Atomic};
use crate::progress;

/// Loads an `ota.key` file.
pub fn load_key(path: &Path) -> Result<SmingKey> {
    let text = files::read_key(path)?;
    SmingKey::from_hex(&text).or_fail(Class::Key, || {
        format!("{} is not a Sming ota.key", path.display())
    })
}

/// `ota keygen --sming`: `ota.key` plus the two binaries Sming links into firmware.
pub fn keygen(dir: &Path, force: bool) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .or_fail(Class::Io, || format!("cannot create {}", dir.display()))?;
    let mut bytes = [0u8; 64];
    getrandom::fill(&mut bytes).or_fail(Class::Internal, || "OS random generator failed".into())?;
    let key = SmingKey::from_bytes(&bytes);
    bytes.fill(0);
    let paths = [
        dir.join("ota.key"),
        dir.join("verify.key.bin"),
        dir.join("decrypt.key.bin"),
    ];
    let [key_path, verify_path, decrypt_path] = &paths;
    files::write_small(key_path, &key.to_hex(), force, true)?;
    files::write_small(verify_path, key.verifying_key().as_bytes(), force, false)?;
    files::write_small(decrypt_path, key.stream_key(), force, true)?;
    Ok(paths.to_vec())
}

/// A ROM given on the command line as `FILE@ADDR` (address decimal or `0x` hex).
#[derive(Clone, Debug)]
pub struct RomSpec {
    /// Image file.
    pub path: PathBuf,
    /// Flash address.
    pub address: u32,
}

impl std::str::FromStr for RomSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (path, addr) = s
            .rsplit_once('@')
            .ok_or_else(|| format!("`{s}` is not FILE@ADDR"))?;
        Ok(Self {
            path: PathBuf::from(path),
            address: parse_u32(addr)?,
        })
    }
}

/// Parses a decimal or `0x` hexadecimal `u32`.
pub fn parse_u32(s: &str) -> std::result::Result<u32, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("`{s}` is not a 32-bit address: {e}"))
}

/// What `ota pack --format sming` needs.
#[allow(clippy::struct_excessive_bools)] // one field per command-line flag
pub struct PackArgs<'a> {
    /// ROMs in file order.
    pub roms: &'a [RomSpec],
    /// `ota.key`.
    pub key: Option<&'a Path>,
    /// MD5 trailer instead of a signature.
    pub unsigned: bool,
    /// Wrap in a secretstream container.
    pub encrypt: bool,
    /// Build timestamp (ms since 1900); now (UTC) if `None`.
    pub timestamp: Option<u64>,
    /// Output file.
    pub out: &'a Path,
    /// Replace an existing output.
    pub force: bool,
    /// No progress bar.
    pub quiet: bool,
}

/// Current time as a Sming timestamp (UTC; `otatool.py` uses local time, see the reference).
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Timestamp::from_unix_millis(ms).unwrap_or(Timestamp(u64::MAX))
}

/// `ota pack --format sming`.
pub fn pack(args: &PackArgs<'_>) -> Result<serde_json::Value> {
    let key = match args.key {
        Some(path) => Some(load_key(path)?),
        None if args.unsigned && !args.encrypt => None,
        None => {
            return Err(Failure::new(
                Class::Key,
                anyhow::anyhow!("signing or encrypting a Sming package needs --key ota.key"),
            ));
        }
    };
    let encryption = if args.encrypt {
        let mut header = [0u8; 24];
        getrandom::fill(&mut header)
            .or_fail(Class::Internal, || "OS random generator failed".into())?;
        key.as_ref().map(|k| Encryption {
            key: *k.stream_key(),
            header,
        })
    } else {
        None
    };
    let timestamp = args.timestamp.map_or_else(now, Timestamp);
    let options = WriteOptions {
        timestamp,
        signing_key: if args.unsigned {
            None
        } else {
            key.as_ref().map(SmingKey::signing_key)
        },
        encryption,
    };
    let mut total = 0u64;
    let mut roms = Vec::with_capacity(args.roms.len());
    for spec in args.roms {
        let (file, len) = files::open(&spec.path)?;
        let size = u32::try_from(len).or_fail(Class::InvalidPackage, || {
            format!(
                "{} is {len} bytes; a Sming ROM holds at most 4 GiB",
                spec.path.display()
            )
        })?;
        total += len;
        roms.push(Rom {
            address: spec.address,
            size,
            data: file,
        });
    }
    let bar = progress::bar(total, "pack", args.quiet);
    let mut roms: Vec<Rom<_>> = roms
        .into_iter()
        .map(|r| Rom {
            address: r.address,
            size: r.size,
            data: bar.wrap_read(r.data),
        })
        .collect();
    let mut out = Atomic::create(args.out, args.force, false)?;
    let written = write_package(out.writer(), &options, &mut roms).map_err(|e| match e {
        WriteError::Io(io) => Failure::new(
            Class::Io,
            anyhow::Error::new(io).context("writing the package"),
        ),
        other => Failure::new(Class::InvalidPackage, other),
    })?;
    out.commit()?;
    bar.finish_and_clear();
    Ok(json!({
        "format": "sming",
        "output": args.out.display().to_string(),
        "bytes": written,
        "signed": options.signing_key.is_some(),
        "encrypted": args.encrypt,
        "timestamp_ms_since_1900": timestamp.0,
        "roms": args.roms.len(),
    }))
}

/// What `verify`/`inspect` need.
#[allow(clippy::struct_excessive_bools)] // one field per command-line flag
pub struct ReadArgs<'a> {
    /// The package.
    pub file: &'a Path,
    /// `ota.key` (verifies signatures, decrypts).
    pub key: Option<&'a Path>,
    /// Only the public key (`verify.key.bin`, 32 raw bytes or 64 hex digits).
    pub public_key: Option<&'a Path>,
    /// Enforce signature/MD5 like a device (`verify`), or just look (`inspect`).
    pub enforce: bool,
    /// Encrypted files: expect an MD5 trailer inside (device built without signing).
    pub unsigned: bool,
    /// Refuse packages older than this (ms since 1900).
    pub min_timestamp: Option<u64>,
    /// Select the ROM for this slot like a device.
    pub slot: Option<u32>,
    /// Write the selected ROM image here.
    pub extract: Option<&'a Path>,
    /// Replace an existing extract file.
    pub force: bool,
    /// No progress bar.
    pub quiet: bool,
}

fn load_public(path: &Path) -> Result<ed25519_dalek::VerifyingKey> {
    let raw = files::read_key(path)?;
    let raw = if raw.len() == 32 {
        raw
    } else {
        let text = std::str::from_utf8(&raw).unwrap_or("").trim();
        hex::decode(text).or_fail(Class::Key, || {
            format!(
                "{} is neither 32 raw bytes nor 64 hex digits",
                path.display()
            )
        })?
    };
    let bytes: [u8; 32] = raw.try_into().map_err(|v: Vec<u8>| {
        Failure::new(
            Class::Key,
            anyhow::anyhow!(
                "{} holds {} bytes, a public key is 32",
                path.display(),
                v.len()
            ),
        )
    })?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).or_fail(Class::Key, || {
        format!("{} is not a valid Ed25519 public key", path.display())
    })
}

/// `ota verify`/`ota inspect` for Sming files.
pub fn read(args: &ReadArgs<'_>) -> Result<serde_json::Value> {
    let key = args.key.map(load_key).transpose()?;
    let public = match (args.public_key, &key) {
        (Some(path), _) => Some(load_public(path)?),
        (None, Some(k)) => Some(k.verifying_key()),
        (None, None) => None,
    };
    let (mut file, len) = files::open(args.file)?;
    let mut magic = [0u8; 4];
    let got = read_prefix(&mut file, &mut magic)
        .or_fail(Class::Io, || format!("cannot read {}", args.file.display()))?;
    let prefix = magic.get(..got).unwrap_or_default();
    let encrypted = !looks_plain(prefix);
    if encrypted && key.is_none() {
        return Err(Failure::new(
            Class::Key,
            anyhow::anyhow!(
                "{} is not a plain Sming file; if it is encrypted, pass --key ota.key",
                args.file.display()
            ),
        ));
    }
    let integrity = if encrypted {
        if args.unsigned {
            Integrity::Md5
        } else {
            Integrity::Ed25519ph
        }
    } else {
        Integrity::from_magic(u32::from_le_bytes(magic)).unwrap_or(Integrity::Ed25519ph)
    };
    let verifier = match (args.enforce, encrypted, integrity, public) {
        // Inspect without a key, or encrypted (the inner magic is unknown until decrypted):
        // accept either trailer, check signatures with the key if one is given.
        (false, _, _, None) | (false, true, _, _) => None,
        (_, _, Integrity::Md5, _) => Some(Verifier::Md5),
        (_, _, _, Some(pk)) => Some(Verifier::Ed25519ph(pk)),
        (true, _, _, None) => {
            return Err(Failure::new(
                Class::Key,
                anyhow::anyhow!(
                    "verifying a signed Sming package needs --key ota.key or --public-key verify.key.bin"
                ),
            ));
        }
    };
    let options = ReadOptions {
        verifier,
        public_key: if args.enforce { None } else { public },
        decrypt_key: if encrypted {
            key.as_ref().map(|k| *k.stream_key())
        } else {
            None
        },
        slot: args.slot.map(|address| Slot {
            address,
            size: u32::MAX,
        }),
        minimum_timestamp: args.min_timestamp.map(Timestamp),
    };
    let bar = progress::bar(
        len,
        if args.enforce { "verify" } else { "inspect" },
        args.quiet,
    );
    let input = io::Cursor::new(magic).take(got as u64).chain(file);
    let result = match args.extract {
        Some(path) => {
            let mut out = Atomic::create(path, args.force, false)?;
            let report = read_package(input, &options, out.writer(), |n| bar.set_position(n));
            match report {
                Ok(report) => {
                    out.commit()?;
                    Ok(report)
                }
                Err(e) => Err(e),
            }
        }
        None => read_package(input, &options, io::sink(), |n| bar.set_position(n)),
    };
    bar.finish_and_clear();
    let report = result.map_err(|e| match e {
        ReadError::Io(io) => Failure::new(
            Class::Io,
            anyhow::Error::new(io).context(format!("reading {}", args.file.display())),
        ),
        ReadError::Package(p) => Failure::new(
            Class::of_update_error(p.into()),
            anyhow::Error::new(p).context(format!("{} rejected", args.file.display())),
        ),
        other => Failure::new(Class::Internal, other),
    })?;
    Ok(report_json(&report))
}

fn read_prefix(file: &mut impl Read, buf: &mut [u8; 4]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        let n = file.read(buf.get_mut(got..).unwrap_or_default())?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

fn report_json(report: &Report) -> serde_json::Value {
    let s = &report.summary;
    json!({
        "format": "sming",
        "encrypted": report.encrypted,
        "integrity": match s.integrity { Integrity::Ed25519ph => "ed25519ph", _ => "md5" },
        "magic": format!("{:#010x}", s.header.magic),
        "signature_checked": report.signature_checked,
        "timestamp_ms_since_1900": s.header.timestamp.0,
        "timestamp_unix_ms": s.header.timestamp.to_unix_millis(),
        "rom_count": s.header.rom_count,
        "roms": report.roms.iter().map(|r| json!({"address": format!("{:#x}", r.address), "size": r.size})).collect::<Vec<_>>(),
        "selected_rom": s.selected.map(|(i, _)| i),
        "package_len": report.package_len,
        "plain_len": s.plain_len,
        "chunks": s.chunks,
    })
}
