//! `otad`: the OTA server daemon.
fn main() {}
