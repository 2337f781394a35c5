//! Module `boot` (being written).
