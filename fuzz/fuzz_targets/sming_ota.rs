#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ota_crypto::fuzz::fuzz_sming_ota(data));
