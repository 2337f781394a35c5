//! # ota-demo-device
//!
//! A device on a file-backed simulated NOR flash that updates from the demo server over
//! ThingsBoard's HTTP, CoAP or MQTT device API with signed and encrypted packages: the [`image`]
//! format the demo firmware uses, the [`flash`] layout (boot state, checkpoint sector, slots
//! A/B), the pinned keys and package reader ([`trust`]) and the device's life from power-on
//! to confirmed update ([`device`]), which the binary runs on a file and simulations run
//! in-process with power cuts.

pub mod device;
pub mod flash;
pub mod image;
pub mod log;
pub mod sming;
pub mod trust;
