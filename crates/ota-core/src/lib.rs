//! # ota-core
//!
//! The `#![no_std]`, heap-free, sans-I/O protocol core of the OTA stack.
//!
//! * [`version`] — heap-free semantic versions and the update policies of Sming,
//!   ThingsBoard and anti-rollback.
//! * [`topic`] — zero-copy parse/format of ThingsBoard, Sming and EnigmaIoT MQTT topics.
//! * [`frame`] — payload framing: Sming varint patch + body, EnigmaIoT lines, ThingsBoard JSON.
//! * [`checksum`] — one streaming hasher over every algorithm ThingsBoard offers.
//! * [`reader`] — the package-reader trait the updater streams bytes through
//!   (implemented here for plain packages and by `ota-crypto` for signed ones).
//! * [`updater`] — the device update state machine (`handle_*` in, `poll_*` out).
//! * [`checkpoint`] — fixed-size, CRC-protected resume records.
//! * [`boot`] — power-safe A/B boot state over `embedded-storage`'s `NorFlash`.
//!
//! The core never reads a clock, never does I/O, never allocates and never panics on input.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod boot;
pub mod checkpoint;
pub mod checksum;
pub mod error;
pub mod frame;
pub mod reader;
pub mod topic;
pub mod updater;
pub mod version;

pub use error::UpdateError;
