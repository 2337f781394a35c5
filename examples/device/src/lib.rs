//! # ota-demo-device
//!
//! A device on a file-backed simulated NOR flash that updates from the demo server over
//! ThingsBoard's HTTP or CoAP device API: the [`image`] format the demo firmware uses, the
//! [`flash`] layout (boot state, checkpoint sector, slots A/B) and the glue between the
//! transports' device clients and that flash.

pub mod flash;
pub mod image;
pub mod log;
