//! Sming advanced `.ota` format (being written).
