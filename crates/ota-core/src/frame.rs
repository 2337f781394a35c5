//! Module `frame` (being written).
