//! Deterministic test kit for OTA devices.
#![forbid(unsafe_code)]
