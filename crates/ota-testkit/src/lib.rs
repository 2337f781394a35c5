//! Deterministic test kit for OTA devices.
//!
//! * [`flash`] — a simulated NOR flash with injectable power cuts, partitions and file backing.
//! * [`clock`] — a virtual millisecond clock.
//! * [`server`] — a scripted chunk server with seeded loss, duplication, reordering and stalls.
#![forbid(unsafe_code)]
pub mod clock;
pub mod flash;
pub mod server;

pub use flash::{SimFlash, SimFlashError, TearMode};
