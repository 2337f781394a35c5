//! Module `updater` (being written).
