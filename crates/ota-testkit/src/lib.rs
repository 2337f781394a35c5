//! Deterministic test kit for OTA devices.
#![forbid(unsafe_code)]
pub mod clock;
pub mod server;
