//! `--format ota`: the project's signed manifest + (optionally) encrypted chunks.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ota_crypto::CryptoError;
use ota_crypto::keyfile;
use ota_crypto::keys::{KeyEntry, KeySet, PayloadKey, RootKey, SigningSecret};
use ota_crypto::manifest::{Encryption, Kind, MAGIC, MANIFEST_LEN, Manifest, SemVer};
use ota_crypto::reader::{DevicePolicy, SignedPackageReader, chunk_buffer_len};
use ota_crypto::writer::{PackageSpec, PackageWriter, Sealing, WriteError};
use serde_json::json;

use crate::exit::{Class, Failure, OrFail, Result};
use crate::files::{self, Atomic};
use crate::progress;

/// Whether a file prefix is a native package (manifest magic `OTAM`).
pub fn is_native(prefix: &[u8]) -> bool {
    prefix == MAGIC
}

/// Native-only options of `pack`.
#[derive(Debug, clap::Args)]
pub struct PackOpts {
    /// Native: title (product / application name).
    #[arg(long)]
    pub title: Option<String>,
    /// Native: release version `MAJOR.MINOR.PATCH`.
    #[arg(long = "version", value_parser = parse_semver)]
    pub release: Option<SemVer>,
    /// Native: target (hardware or profile id).
    #[arg(long)]
    pub target: Option<String>,
    /// Native: anti-rollback floor `MAJOR.MINOR.PATCH`.
    #[arg(long, value_parser = parse_semver)]
    pub min_version: Option<SemVer>,
    /// Native: software instead of firmware.
    #[arg(long)]
    pub software: bool,
    /// Native: payload key file (hex) for `--encrypt`.
    #[arg(long)]
    pub payload_key: Option<PathBuf>,
    /// Native: plaintext bytes per chunk.
    #[arg(long)]
    pub chunk_size: Option<u32>,
    /// Native: expiry in seconds from now.
    #[arg(long)]
    pub expires_in: Option<u64>,
}

/// Native-only options of `verify`/`inspect`.
#[derive(Debug, clap::Args)]
pub struct ReadOpts {
    /// Native: the root-signed key set (`keyset.bin` from `ota keygen`).
    #[arg(long)]
    pub keyset: Option<PathBuf>,
    /// Native: payload key file (hex) for encrypted packages.
    #[arg(long = "payload-key")]
    pub read_payload_key: Option<PathBuf>,
    /// Native: the device's target (default: the manifest's).
    #[arg(long = "device-target")]
    pub device_target: Option<String>,
    /// Native: the highest version the device already accepted (anti-rollback).
    #[arg(long, value_parser = parse_semver)]
    pub highest_accepted: Option<SemVer>,
}

/// Parses `MAJOR.MINOR.PATCH`.
pub fn parse_semver(s: &str) -> std::result::Result<SemVer, String> {
    let parts: Vec<&str> = s.split('.').collect();
    let [major, minor, patch] = parts.as_slice() else {
        return Err(format!("`{s}` is not MAJOR.MINOR.PATCH"));
    };
    let num = |p: &str| {
        p.parse::<u32>()
            .map_err(|e| format!("`{p}` in `{s}` is not a number: {e}"))
    };
    Ok(SemVer::new(num(major)?, num(minor)?, num(patch)?))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn text(path: &Path) -> Result<String> {
    let raw = files::read_key(path)?;
    String::from_utf8(raw).or_fail(Class::Key, || {
        format!("{} is not UTF-8 text", path.display())
    })
}

fn key_err(path: &Path) -> impl FnOnce() -> String + '_ {
    move || format!("key file {}", path.display())
}

/// `ota keygen` (native): root + signing key pairs, a payload key, and the root-signed key set.
pub fn keygen(dir: &Path, force: bool) -> Result<serde_json::Value> {
    std::fs::create_dir_all(dir)
        .or_fail(Class::Io, || format!("cannot create {}", dir.display()))?;
    let rng = |e: getrandom::Error| {
        Failure::new(
            Class::Internal,
            anyhow::anyhow!("OS random generator failed: {e}"),
        )
    };
    let root = SigningSecret::generate().map_err(rng)?;
    let signing = SigningSecret::generate().map_err(rng)?;
    let payload = PayloadKey::generate().map_err(rng)?;
    let pem = |s: &SigningSecret| {
        keyfile::signing_secret_pem(s).or_fail(Class::Internal, || "encoding a PEM key".into())
    };
    let public = |p: &[u8; 32]| {
        keyfile::public_key_pem(p).or_fail(Class::Internal, || "encoding a PEM key".into())
    };
    let keyset = KeySet::new(1, &[KeyEntry::new(signing.public_key(), 0, None)], &[])
        .or_fail(Class::Internal, || "building the key set".into())?
        .sign(&root);
    let files = [
        ("root.key", pem(&root)?.as_bytes().to_vec(), true),
        ("root.pub", public(&root.public_key())?.into_bytes(), false),
        ("signing.key", pem(&signing)?.as_bytes().to_vec(), true),
        (
            "signing.pub",
            public(&signing.public_key())?.into_bytes(),
            false,
        ),
        (
            "payload.key",
            keyfile::to_hex32(payload.as_bytes()).as_bytes().to_vec(),
            true,
        ),
        ("keyset.bin", keyset, false),
    ];
    let mut written = Vec::new();
    for (name, bytes, secret) in &files {
        let path = dir.join(name);
        files::write_small(&path, bytes, force, *secret)?;
        written.push(path.display().to_string());
    }
    Ok(json!({ "format": "ota", "files": written }))
}

fn crypto_failure(e: CryptoError, what: impl Into<String>) -> Failure {
    Failure::new(
        Class::of_update_error(e.update_error()),
        anyhow::Error::new(e).context(what.into()),
    )
}

/// `ota pack --format ota`.
pub fn pack(
    input: &Path,
    output: &Path,
    key: Option<&Path>,
    encrypt: bool,
    force: bool,
    quiet: bool,
    opts: &PackOpts,
) -> Result<serde_json::Value> {
    let usage = |m: &str| Failure::new(Class::Usage, anyhow::anyhow!("{m}"));
    let key = key.ok_or_else(|| usage("native pack needs --key signing.key"))?;
    let signer = keyfile::parse_signing_secret(&text(key)?).or_fail(Class::Key, key_err(key))?;
    let title = opts
        .title
        .as_deref()
        .ok_or_else(|| usage("native pack needs --title"))?;
    let version = opts
        .release
        .ok_or_else(|| usage("native pack needs --version MAJOR.MINOR.PATCH"))?;
    let target = opts
        .target
        .as_deref()
        .ok_or_else(|| usage("native pack needs --target"))?;
    let kind = if opts.software {
        Kind::Software
    } else {
        Kind::Firmware
    };
    let now = now_secs();
    let mut spec = PackageSpec::new(kind, title, version, target, now).map_err(|e| {
        Failure::new(
            Class::Usage,
            anyhow::Error::new(e).context("manifest fields"),
        )
    })?;
    if let Some(min) = opts.min_version {
        spec.min_version = min;
    }
    if let Some(size) = opts.chunk_size {
        spec.chunk_size = size;
    }
    spec.expires_at = opts.expires_in.map(|s| now.saturating_add(s));
    let payload_key = match (&opts.payload_key, encrypt) {
        (Some(path), true) => {
            Some(keyfile::parse_payload_key(&text(path)?).or_fail(Class::Key, key_err(path))?)
        }
        (None, true) => return Err(usage("--encrypt needs --payload-key payload.key")),
        (_, false) => None,
    };
    let sealing = match &payload_key {
        Some(k) => Sealing::chacha20poly1305(k)
            .or_fail(Class::Internal, || "drawing a nonce prefix".into())?,
        None => Sealing::None,
    };
    let (file, len) = files::open(input)?;
    // The packer reads the input twice (digest, then seal): show both passes.
    let bar = progress::bar(len.saturating_mul(2), "pack", quiet);
    let reader = Tracked {
        inner: file,
        bar: bar.clone(),
    };
    let mut out = Atomic::create(output, force, false)?;
    let manifest = PackageWriter::new(&signer, spec, sealing)
        .write(reader, out.writer())
        .map_err(|e| match e {
            WriteError::Io(io) => {
                Failure::new(Class::Io, anyhow::Error::new(io).context("packing"))
            }
            WriteError::Manifest(c) => Failure::new(
                Class::Usage,
                anyhow::Error::new(c).context("manifest fields"),
            ),
            other => Failure::new(Class::Internal, other),
        })?;
    out.commit()?;
    bar.finish_and_clear();
    Ok(
        json!({ "format": "ota", "output": output.display().to_string(), "bytes": manifest.package_len(), "manifest": manifest_json(&manifest) }),
    )
}

/// Counts bytes into a progress bar (`Seek` passes through, as the packer rewinds).
struct Tracked<R> {
    inner: R,
    bar: indicatif::ProgressBar,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

impl<R: io::Seek> io::Seek for Tracked<R> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

fn manifest_json(m: &Manifest) -> serde_json::Value {
    json!({
        "kind": match m.kind { Kind::Firmware => "firmware", Kind::Software => "software" },
        "title": m.title.as_str(),
        "version": m.version.to_string(),
        "min_version": m.min_version.to_string(),
        "target": m.target.as_str(),
        "payload_size": m.payload_size,
        "chunk_size": m.chunk_size,
        "chunks": m.chunk_count(),
        "created_at": m.created_at,
        "expires_at": m.expires_at,
        "signing_key": hex::encode(m.signing_key.0),
        "encryption": match m.encryption {
            Encryption::None => json!("none"),
            Encryption::ChaCha20Poly1305 { key_id, .. } => json!({"cipher": "chacha20poly1305", "key_id": hex::encode(key_id.0)}),
        },
        "sha256": hex::encode(m.digest),
        "package_len": m.package_len(),
    })
}

/// `ota verify` / `ota inspect` (native).
pub fn read(
    file: &Path,
    root: Option<&Path>,
    enforce: bool,
    extract: Option<&Path>,
    force: bool,
    quiet: bool,
    opts: &ReadOpts,
) -> Result<serde_json::Value> {
    let (mut input, len) = files::open(file)?;
    let mut head = vec![0u8; MANIFEST_LEN];
    input.read_exact(&mut head).map_err(|e| {
        Failure::new(
            Class::InvalidPackage,
            anyhow::Error::new(e).context(format!("{} is shorter than a manifest", file.display())),
        )
    })?;
    let unverified = Manifest::parse(&head)
        .map_err(|e| crypto_failure(e, format!("{} manifest", file.display())))?;
    let (Some(root), Some(keyset)) = (root, opts.keyset.as_deref()) else {
        if enforce {
            return Err(Failure::new(
                Class::Key,
                anyhow::anyhow!("native verify needs --key root.pub and --keyset keyset.bin"),
            ));
        }
        return Ok(
            json!({ "format": "ota", "verified": false, "file_len": len, "manifest": manifest_json(&unverified) }),
        );
    };
    let root_key: RootKey =
        keyfile::parse_root_key(&text(root)?).or_fail(Class::Key, key_err(root))?;
    let keyset_bytes = files::read_key(keyset)?;
    let keys = KeySet::verify(&keyset_bytes, &root_key, 0).map_err(|e| {
        Failure::new(
            Class::Key,
            anyhow::Error::new(e).context(format!("key set {}", keyset.display())),
        )
    })?;
    let payload_key = match &opts.read_payload_key {
        Some(p) => Some(keyfile::parse_payload_key(&text(p)?).or_fail(Class::Key, key_err(p))?),
        None => None,
    };
    let target = opts
        .device_target
        .clone()
        .unwrap_or_else(|| unverified.target.as_str().to_owned());
    let policy = DevicePolicy {
        now: now_secs(),
        target: &target,
        kind: unverified.kind,
        highest_accepted: opts.highest_accepted.unwrap_or_default(),
        offered_version: None,
    };
    let mut chunk_buf = vec![0u8; chunk_buffer_len(&unverified)];
    let mut reader = SignedPackageReader::new(&keys, payload_key.as_ref(), policy, &mut chunk_buf);
    let bar = progress::bar(len, if enforce { "verify" } else { "inspect" }, quiet);
    let mut atomic = match extract {
        Some(path) => Some(Atomic::create(path, force, false)?),
        None => None,
    };
    let reject = |e: CryptoError| crypto_failure(e, format!("{} rejected", file.display()));
    let streamed = match atomic.as_mut() {
        Some(a) => stream(&mut reader, &mut input, head, a.writer(), &bar),
        None => stream(&mut reader, &mut input, head, &mut io::sink(), &bar),
    };
    match streamed {
        Ok(()) => {}
        Err(Streamed::Package(e)) => return Err(reject(e)),
        Err(Streamed::Io(e)) => {
            return Err(Failure::new(
                Class::Io,
                anyhow::Error::new(e).context(format!("reading {}", file.display())),
            ));
        }
    }
    reader.finish().map_err(reject)?;
    let manifest = reader.manifest().copied().unwrap_or(unverified);
    if let Some(a) = atomic {
        a.commit()?;
    }
    bar.finish_and_clear();
    Ok(
        json!({ "format": "ota", "verified": true, "file_len": len, "manifest": manifest_json(&manifest) }),
    )
}

enum Streamed {
    Package(CryptoError),
    Io(io::Error),
}

/// Feeds `first` and then the rest of `input` through the reader into `sink`.
fn stream(
    reader: &mut SignedPackageReader<'_>,
    input: &mut impl Read,
    first: Vec<u8>,
    sink: &mut dyn Write,
    bar: &indicatif::ProgressBar,
) -> std::result::Result<(), Streamed> {
    let mut out = vec![0u8; 64 * 1024];
    let mut pending = first;
    loop {
        let mut chunk: &[u8] = &pending;
        while !chunk.is_empty() {
            let fed = reader.feed(chunk, &mut out).map_err(Streamed::Package)?;
            sink.write_all(out.get(..fed.produced).unwrap_or_default())
                .map_err(Streamed::Io)?;
            chunk = chunk.get(fed.consumed..).unwrap_or_default();
        }
        bar.set_position(reader.received());
        pending.resize(64 * 1024, 0);
        let n = input.read(&mut pending).map_err(Streamed::Io)?;
        if n == 0 {
            return Ok(());
        }
        pending.truncate(n);
    }
}
