//! # ota-http
//!
//! ThingsBoard's HTTP device API, both sides.
//!
//! * `server` feature — [`router`]: `GET /api/v1/{token}/firmware|software` (chunked by
//!   `size`/`chunk`, exactly as ThingsBoard answers), `GET`/`POST /api/v1/{token}/attributes`
//!   (shared and client attributes),
//!   the `attributes/updates` long poll, `POST /api/v1/{token}/telemetry`, and a per-device
//!   package URL with `Range`/`ETag` for standard downloaders. Every handler calls
//!   `ota-server`'s `DeviceApi`; bytes are served from the `Bytes` it returns, never copied.
//! * `device` feature — `HttpDevice`: a blocking client that reads the shared attributes,
//!   drives `ota-core`'s `Updater` chunk by chunk and reports telemetry.

#[cfg(feature = "server")]
pub mod query;
#[cfg(feature = "server")]
pub mod range;
#[cfg(feature = "server")]
pub mod server;

#[cfg(feature = "server")]
pub use server::router;

#[cfg(feature = "device")]
pub mod device;
