#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ota_mqtt::server::fuzz_check(data));
