//! `ota`: generate keys, pack, verify and inspect OTA packages; upload them to an OTA server,
//! assign them to devices or device profiles, and show the fleet's update status.
//!
//! Two formats: the project's own signed/encrypted package (`--format ota`) and Sming's
//! advanced `.ota` file (`--format sming`, byte-compatible with `otatool.py`). Large files
//! are streamed in constant memory, with a progress bar on a terminal.
//!
//! # Exit codes
//!
//! | code | class |
//! |---|---|
//! | 0 | success |
//! | 1 | internal error |
//! | 2 | usage error (bad arguments) |
//! | 3 | I/O error (reading or writing a file) |
//! | 4 | key error (missing, malformed or wrong kind of key file) |
//! | 5 | invalid package (malformed, truncated, trailing data, wrong format) |
//! | 6 | verification failed (signature or checksum mismatch) |
//! | 7 | decryption failed (wrong key or tampered ciphertext) |
//! | 8 | refused by policy (downgrade, expired, wrong target, too large) |
//! | 9 | server error (unreachable, login refused, request refused) |

mod exit;
mod files;
mod native;
mod progress;
mod remote;
mod sming;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::exit::{Class, Failure, Result};
use crate::sming::RomSpec;

/// Generate keys, pack, verify and inspect signed/encrypted OTA packages.
#[derive(Debug, Parser)]
#[command(name = "ota", version, after_help = exit::TABLE)]
struct Cli {
    /// Print results as JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

/// Package formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Detect from the file (pack: `ota`).
    Auto,
    /// The project's signed manifest + (optionally) encrypted chunks.
    Ota,
    /// Sming's advanced `.ota` (Ed25519ph or MD5 trailer, optional secretstream).
    Sming,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate keys: a root key, a signing key certified by it, a payload key; or, with
    /// `--sming`, a Sming `ota.key` with `verify.key.bin` and `decrypt.key.bin`.
    #[command(after_help = exit::TABLE)]
    Keygen {
        /// Directory to write the key files into (created if missing).
        #[arg(long, short, default_value = ".")]
        out_dir: PathBuf,
        /// Write a Sming `ota.key` instead.
        #[arg(long)]
        sming: bool,
        /// Replace existing key files.
        #[arg(long)]
        force: bool,
    },
    /// Turn a firmware file into a package (streams: constant memory for any size).
    #[command(after_help = exit::TABLE)]
    Pack {
        /// Firmware image (Sming: the first ROM, at `--address`).
        input: Option<PathBuf>,
        /// Output package.
        #[arg(long, short)]
        output: PathBuf,
        /// Package format.
        #[arg(long, value_enum, default_value_t = Format::Ota)]
        format: Format,
        /// Key: Sming `ota.key`; native: the signing key file.
        #[arg(long, short)]
        key: Option<PathBuf>,
        /// Encrypt (Sming: secretstream with the `ota.key`; native: `--payload-key`).
        #[arg(long)]
        encrypt: bool,
        /// Replace an existing output file.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        sming: SmingPack,
        #[command(flatten)]
        native: native::PackOpts,
    },
    /// Verify a package: signature/checksum, decryption, policy. Exit code says why not.
    #[command(after_help = exit::TABLE)]
    Verify {
        /// The package.
        file: PathBuf,
        /// Package format.
        #[arg(long, value_enum, default_value_t = Format::Auto)]
        format: Format,
        /// Key: Sming `ota.key`; native: the root public key file.
        #[arg(long, short)]
        key: Option<PathBuf>,
        /// Write the verified image here.
        #[arg(long)]
        extract: Option<PathBuf>,
        /// Replace an existing `--extract` file.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        sming: SmingRead,
        #[command(flatten)]
        native: native::ReadOpts,
    },
    /// Show what a package holds (verifies what the given keys allow).
    #[command(after_help = exit::TABLE)]
    Inspect {
        /// The package.
        file: PathBuf,
        /// Package format.
        #[arg(long, value_enum, default_value_t = Format::Auto)]
        format: Format,
        /// Key: Sming `ota.key`; native: the root public key file.
        #[arg(long, short)]
        key: Option<PathBuf>,
        #[command(flatten)]
        sming: SmingRead,
        #[command(flatten)]
        native: native::ReadOpts,
    },
    /// Upload a package file to the server for a device profile; prints the package id.
    #[command(after_help = exit::TABLE)]
    Upload(remote::UploadArgs),
    /// Assign a firmware and/or software package to a device or a device profile.
    #[command(after_help = exit::TABLE)]
    Assign(remote::AssignArgs),
    /// Show the update state of every device (a table; `--json` for the raw states).
    #[command(after_help = exit::TABLE)]
    Status(remote::StatusArgs),
}

/// Sming-only options of `pack`.
#[derive(Debug, clap::Args)]
struct SmingPack {
    /// Sming: flash address of INPUT.
    #[arg(long, value_parser = sming::parse_u32, default_value = "0x2000")]
    address: u32,
    /// Sming: another ROM, `FILE@ADDR` (repeatable; written after INPUT).
    #[arg(long = "rom", value_name = "FILE@ADDR")]
    roms: Vec<RomSpec>,
    /// Sming: MD5 trailer instead of an Ed25519ph signature.
    #[arg(long)]
    unsigned: bool,
    /// Sming: build timestamp in ms since 1900 (default: now, UTC).
    #[arg(long)]
    timestamp: Option<u64>,
}

/// Sming-only options of `verify`/`inspect`.
#[derive(Debug, clap::Args)]
struct SmingRead {
    /// Sming: public key only (`verify.key.bin`: 32 bytes, or 64 hex digits).
    #[arg(long)]
    public_key: Option<PathBuf>,
    /// Sming: encrypted file whose inner trailer is MD5 (device built without signing).
    #[arg(long)]
    unsigned: bool,
    /// Sming: refuse files older than this build timestamp (ms since 1900).
    #[arg(long)]
    min_timestamp: Option<u64>,
    /// Sming: select the ROM for this slot address (modulo 1 MiB) like a device.
    #[arg(long, value_parser = sming::parse_u32)]
    slot: Option<u32>,
}

fn detect(path: &Path) -> Result<Format> {
    use std::io::Read;
    let (mut file, _) = files::open(path)?;
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = file
            .read(magic.get_mut(got..).unwrap_or_default())
            .map_err(|e| {
                Failure::new(
                    Class::Io,
                    anyhow::Error::new(e).context(format!("reading {}", path.display())),
                )
            })?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(if native::is_native(magic.get(..got).unwrap_or_default()) {
        Format::Ota
    } else {
        Format::Sming
    })
}

fn print(value: &serde_json::Value, json: bool) {
    if json {
        println!("{value}");
        return;
    }
    if let Some(map) = value.as_object() {
        for (k, v) in map {
            match v {
                serde_json::Value::String(s) => println!("{k:>24}: {s}"),
                other => println!("{k:>24}: {other}"),
            }
        }
    }
}

/// What `verify` and `inspect` share.
struct ReadCmd<'a> {
    file: &'a Path,
    format: Format,
    key: Option<&'a Path>,
    enforce: bool,
    extract: Option<&'a Path>,
    force: bool,
    quiet: bool,
    sming: &'a SmingRead,
    native: &'a native::ReadOpts,
}

fn read_cmd(c: &ReadCmd<'_>) -> Result<serde_json::Value> {
    let format = if c.format == Format::Auto {
        detect(c.file)?
    } else {
        c.format
    };
    match format {
        Format::Sming => sming::read(&sming::ReadArgs {
            file: c.file,
            key: c.key,
            public_key: c.sming.public_key.as_deref(),
            enforce: c.enforce,
            unsigned: c.sming.unsigned,
            min_timestamp: c.sming.min_timestamp,
            slot: c.sming.slot,
            extract: c.extract,
            force: c.force,
            quiet: c.quiet,
        }),
        Format::Ota | Format::Auto => native::read(
            c.file, c.key, c.enforce, c.extract, c.force, c.quiet, c.native,
        ),
    }
}

#[allow(clippy::too_many_arguments)] // one per command-line option
fn pack_cmd(
    input: Option<PathBuf>,
    output: &Path,
    format: Format,
    key: Option<&Path>,
    encrypt: bool,
    force: bool,
    quiet: bool,
    sming: SmingPack,
    native: &native::PackOpts,
) -> Result<serde_json::Value> {
    if format == Format::Sming {
        let mut roms = Vec::new();
        if let Some(path) = input {
            roms.push(RomSpec {
                path,
                address: sming.address,
            });
        }
        roms.extend(sming.roms);
        return sming::pack(&sming::PackArgs {
            roms: &roms,
            key,
            unsigned: sming.unsigned,
            encrypt,
            timestamp: sming.timestamp,
            out: output,
            force,
            quiet,
        });
    }
    let input = input.ok_or_else(|| {
        Failure::new(
            Class::Usage,
            anyhow::anyhow!("pack needs an INPUT firmware file"),
        )
    })?;
    native::pack(&input, output, key, encrypt, force, quiet, native)
}

fn run(cli: Cli) -> Result<remote::Report> {
    let quiet = cli.quiet;
    let value = match cli.command {
        Command::Upload(args) => return remote::upload(&args),
        Command::Assign(args) => return remote::assign(&args),
        Command::Status(args) => return remote::status(&args),
        Command::Keygen {
            out_dir,
            sming: true,
            force,
        } => {
            let paths = sming::keygen(&out_dir, force)?;
            let files: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            Ok(serde_json::json!({ "format": "sming", "files": files }))
        }
        Command::Keygen {
            out_dir,
            sming: false,
            force,
        } => native::keygen(&out_dir, force),
        Command::Pack {
            input,
            output,
            format,
            key,
            encrypt,
            force,
            sming,
            native,
        } => pack_cmd(
            input,
            &output,
            format,
            key.as_deref(),
            encrypt,
            force,
            quiet,
            sming,
            &native,
        ),
        Command::Verify {
            file,
            format,
            key,
            extract,
            force,
            sming,
            native,
        } => read_cmd(&ReadCmd {
            file: &file,
            format,
            key: key.as_deref(),
            enforce: true,
            extract: extract.as_deref(),
            force,
            quiet,
            sming: &sming,
            native: &native,
        }),
        Command::Inspect {
            file,
            format,
            key,
            sming,
            native,
        } => read_cmd(&ReadCmd {
            file: &file,
            format,
            key: key.as_deref(),
            enforce: false,
            extract: None,
            force: false,
            quiet,
            sming: &sming,
            native: &native,
        }),
    }?;
    // Empty text: shown as `key: value` lines by `print`.
    Ok(remote::Report {
        json: value,
        text: String::new(),
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli) {
        Ok(report) if json || report.text.is_empty() => {
            print(&report.json, json);
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{}", report.text);
            ExitCode::SUCCESS
        }
        Err(failure) => {
            if json {
                let value = serde_json::json!({ "error": format!("{:#}", failure.error), "exit_code": failure.class as u8 });
                println!("{value}");
            }
            eprintln!("ota: error: {:#}", failure.error);
            failure.exit_code()
        }
    }
}
