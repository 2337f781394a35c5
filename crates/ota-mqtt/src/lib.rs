//! # ota-mqtt
//!
//! The MQTT transport of the OTA stack. The `server` feature provides the ThingsBoard-dialect
//! endpoint: devices connect to `otad` itself with MQTT 3.1.1 or 5, the access token as user
//! name, and update with ThingsBoard's device API (`v1/devices/me/...`, `v2/fw|sw/...`), so
//! unmodified ThingsBoard device SDKs work against it. Every reply goes to the asking
//! session only; the rules live in `ota-server`'s [`DeviceApi`](ota_server::service::DeviceApi).
//!
//! The `broker` feature publishes through an external broker instead: the Sming retained
//! announce ([`sming`]) and the EnigmaIoT OTA stream ([`enigma`]).
//!
//! The `device` feature provides the other side: [`device::MqttDevice`], a ThingsBoard MQTT
//! device client that drives `ota-core`'s `Updater` and resumes after lost connections.

#[cfg(feature = "broker")]
pub mod broker;
pub mod chunk;
#[cfg(feature = "device")]
pub mod device;
#[cfg(feature = "broker")]
pub mod enigma;
pub mod filter;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "broker")]
pub mod sming;

#[cfg(feature = "server")]
pub use server::{MqttConfig, RateLimits, serve};
