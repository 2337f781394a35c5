//! # ota-coap
//!
//! The CoAP transport of the OTA stack (RFC 7252 messages, RFC 7959 Block2 block-wise
//! transfer), speaking ThingsBoard's CoAP device API:
//!
//! * `GET /fw/{token}` and `/sw/{token}` with `title`, `version`, `size`, `chunk` queries;
//! * `GET /api/v1/{token}/attributes` (shared and client attributes), `POST` there (client
//!   attributes) and `POST /api/v1/{token}/telemetry`.
//!
//! The `server` feature serves these over any [`ota_server::service::DeviceApi`] from one
//! tokio `UdpSocket`; the `device` feature is a blocking client that drives `ota-core`'s
//! `Updater` over Block2. Messages are encoded and decoded by `coap-lite`.

pub mod block;
#[cfg(feature = "device")]
pub mod device;
#[cfg(feature = "server")]
pub mod server;
