//! # ota-crypto
//!
//! Signed (ed25519) and encrypted (ChaCha20-Poly1305) OTA packages, verified and decrypted
//! as a stream in bounded RAM, with key pinning and rotation, and compatibility with Sming's
//! advanced `.ota` format.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod sming;
