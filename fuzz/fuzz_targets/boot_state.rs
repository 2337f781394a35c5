#![no_main]
//! Boot-state area contents + a script of state changes with power cuts; see
//! `ota_core::boot::fuzz_check` for the input layout and the invariants checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ota_core::boot::fuzz_check(data));
