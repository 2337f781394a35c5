//! # ota-crypto
//!
//! Signed (ed25519) and encrypted (ChaCha20-Poly1305) OTA packages, verified and decrypted
//! as a stream in bounded RAM, with key pinning and rotation, and compatibility with Sming's
//! advanced `.ota` format.
//!
//! A package is `manifest ‖ signature ‖ payload` (byte layout in `docs/format.md`):
//!
//! * [`manifest`] — the 182-byte fixed-layout manifest that binds kind, title, version,
//!   min-version, target, payload size and SHA-256, chunk size, encryption, times and key id.
//! * [`keys`] — pinned root key, root-signed [`keys::KeySet`] (rotation, revocation,
//!   anti-replay), signing secrets and payload keys (zeroized on drop).
//! * [`reader`] — [`reader::SignedPackageReader`]: no heap, < 1 KiB of state plus the caller's
//!   chunk buffer; implements [`ota_core::reader::PackageReader`].
//! * `writer` (`std`) — the streaming packer; `keyfile` (`std`) — hex and PEM key files.
//! * [`sming`] — Sming's advanced `.ota` format.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod error;
#[doc(hidden)]
pub mod fuzz;
#[cfg(feature = "std")]
pub mod keyfile;
pub mod keys;
pub mod manifest;
pub mod reader;
pub mod sming;
mod wire;
#[cfg(feature = "std")]
pub mod writer;

pub use error::CryptoError;

/// Bytes before the payload: manifest and its ed25519 signature.
pub const HEADER_LEN: usize = manifest::MANIFEST_LEN + keys::SIGNATURE_LEN;
