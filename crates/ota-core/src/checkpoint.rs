//! Module `checkpoint` (being written).
