//! Payload framing of the three dialects, zero-copy: parsing borrows the payload, emitting
//! writes into a caller buffer.
//!
//! * [`sming`] — Sming's retained announce: varint (or 1-byte) patch version + image.
//! * [`enigma`] — EnigmaIoT's text lines: header `0,size,chunks,md5`, chunks `i,base64`, and
//!   the gateway's result codes.
//! * [`thingsboard`] — ThingsBoard's JSON: attribute responses and pushes, attribute
//!   requests, OTA telemetry.

pub mod enigma;
pub mod sming;
pub mod thingsboard;

use core::fmt;

/// Which ThingsBoard package stream: firmware (`fw_` keys, `v2/fw/...`) or software
/// (`sw_` keys, `v2/sw/...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Firmware (`fw`).
    Firmware,
    /// Software (`sw`).
    Software,
}

impl Kind {
    /// `"fw"` or `"sw"`: the topic level and attribute-key prefix.
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Firmware => "fw",
            Self::Software => "sw",
        }
    }

    /// Both kinds.
    pub const ALL: [Self; 2] = [Self::Firmware, Self::Software];
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix())
    }
}
