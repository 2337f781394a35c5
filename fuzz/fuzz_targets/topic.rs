#![no_main]
// Entry point filled in with its parser.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = data;
});
