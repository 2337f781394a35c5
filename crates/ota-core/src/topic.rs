//! Module `topic` (being written).
