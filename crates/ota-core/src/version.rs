//! Module `version` (being written).
