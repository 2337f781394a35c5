#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ota_core::checkpoint::fuzz_check(data));
