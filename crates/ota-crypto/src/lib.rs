//! Signed and encrypted OTA packages.
#![no_std]
#![forbid(unsafe_code)]
