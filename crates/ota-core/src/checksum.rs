//! Module `checksum` (being written).
