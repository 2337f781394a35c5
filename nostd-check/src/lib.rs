//! Calls into the no_std crates so the linker must resolve everything they use.
//! A dependency that pulls `std` fails with a duplicate `panic_impl` lang item;
//! one that pulls `alloc` fails with "no global memory allocator found".
#![no_std]
#![deny(unsafe_code)]

use core::panic::PanicInfo;

#[panic_handler]
fn panic(_info: &PanicInfo<'_>) -> ! {
    loop {}
}

/// Exercises the error table so the core is linked.
// Exported so the code under test is linked and its size can be measured.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn ota_check_error(code: u8) -> usize {
    let all = ota_core::UpdateError::ALL;
    all.get(usize::from(code)).map_or(0, |e| e.wire_name().len())
}
