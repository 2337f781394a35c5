//! The ThingsBoard-dialect MQTT endpoint: devices connect to `otad` itself (MQTT 3.1.1 and 5
//! on one port, access token as user name) and get their attributes, chunks and pushes from
//! [`DeviceApi`], each answer published to the asking session only. Client attributes
//! published on `v1/devices/me/attributes` are stored through [`DeviceApi`] and come back in
//! the `client` section of attribute responses.
//!
//! ```no_run
//! # async fn run(api: std::sync::Arc<dyn ota_server::service::DeviceApi>) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:1884").await?;
//! ota_mqtt::serve(listener, api, ota_mqtt::MqttConfig::default()).await;
//! # Ok(()) }
//! ```
//!
//! [`serve_tls`] serves the same endpoint over TLS (rustls), optionally verifying client
//! certificates against a CA; see [`TlsConfig`] for how a certificate identifies a device.

mod fuzz;
mod link;
mod session;
mod tls;

pub use fuzz::fuzz_check;
pub use tls::{ClientAuth, TlsConfig, TlsError, certificate_fingerprint};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ota_server::service::DeviceApi;
use tokio::net::{TcpListener, TcpStream};

/// The largest MQTT packet ThingsBoard accepts (`NETTY_MAX_PAYLOAD_SIZE`).
pub const DEFAULT_MAX_PACKET_SIZE: u32 = 65_536;

/// Rate limits reported to devices by the `getSessionLimits` RPC, in ThingsBoard's
/// `"capacity:seconds,…"` notation; empty means no limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimits {
    /// `messages`.
    pub messages: String,
    /// `telemetryMessages`.
    pub telemetry_messages: String,
    /// `telemetryDataPoints`.
    pub telemetry_data_points: String,
}

/// Tunables of the MQTT endpoint.
#[derive(Clone, Debug)]
pub struct MqttConfig {
    /// Largest MQTT packet accepted from a device, bytes; a larger one closes the connection
    /// before its body is buffered. Also reported as `maxPayloadSize` by `getSessionLimits`
    /// and as `MaximumPacketSize` in the MQTT 5 CONNACK.
    pub max_packet_size: u32,
    /// Largest chunk size a device may ask for; a larger one gets `PAYLOAD_TOO_LARGE` on
    /// `v2/fw/error` and is disconnected (ThingsBoard: 65,536). Size 0 (whole file) is
    /// always allowed.
    pub max_chunk_size: u64,
    /// QoS 1 messages a session may have unacknowledged in each direction; a device that
    /// lets more of our publishes go unacknowledged is disconnected. Reported as
    /// `maxInflightMessages` and as `ReceiveMaximum` in the MQTT 5 CONNACK.
    pub max_inflight: u16,
    /// Chunk request ids remembered per connection (size and package); the least recently
    /// used is forgotten beyond this.
    pub max_request_ids: usize,
    /// Subscriptions a session may hold; further filters are refused in the SUBACK.
    pub max_subscriptions: usize,
    /// Time allowed between the TCP accept and the CONNECT packet.
    pub connect_timeout: Duration,
    /// Push the current `fw_*`/`sw_*` attributes when a session subscribes to
    /// `v1/devices/me/attributes`. ThingsBoard never does, and the Python SDK restarts its
    /// download on every attributes message, so this is off by default.
    pub push_on_subscribe: bool,
    /// Rate limits reported by `getSessionLimits` (not enforced here).
    pub rate_limits: RateLimits,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            max_chunk_size: crate::chunk::MAX_CHUNK_SIZE,
            max_inflight: 100,
            max_request_ids: 16,
            max_subscriptions: 16,
            connect_timeout: Duration::from_secs(10),
            push_on_subscribe: false,
            rate_limits: RateLimits::default(),
        }
    }
}

/// Serves ThingsBoard-dialect MQTT on `listener` until the task is dropped; each connection
/// runs in its own task and a failing connection never affects another.
pub async fn serve(listener: TcpListener, api: Arc<dyn DeviceApi>, config: MqttConfig) {
    let config = Arc::new(config);
    loop {
        let (sock, peer) = accept(&listener).await;
        tokio::spawn(session::run(
            link::Wire::Tcp(sock),
            peer,
            None,
            api.clone(),
            config.clone(),
        ));
    }
}

/// [`serve`] over TLS: each accepted connection completes its TLS handshake (within
/// [`MqttConfig::connect_timeout`]) before MQTT starts; a failed handshake — a client
/// without a certificate when one is required, or with one the CA did not sign — closes
/// that connection only.
///
/// ```no_run
/// # async fn run(api: std::sync::Arc<dyn ota_server::service::DeviceApi>) -> Result<(), Box<dyn std::error::Error>> {
/// use std::path::Path;
/// let tls = ota_mqtt::server::TlsConfig::from_pem_files(
///     Path::new("server.pem"),
///     Path::new("server.key"),
///     Some(Path::new("ca.pem")),
///     true,
/// )?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8884").await?;
/// ota_mqtt::server::serve_tls(listener, tls, api, ota_mqtt::MqttConfig::default()).await;
/// # Ok(()) }
/// ```
pub async fn serve_tls(
    listener: TcpListener,
    tls: TlsConfig,
    api: Arc<dyn DeviceApi>,
    config: MqttConfig,
) {
    let config = Arc::new(config);
    loop {
        let (sock, peer) = accept(&listener).await;
        let (tls, api, config) = (tls.clone(), api.clone(), config.clone());
        tokio::spawn(async move {
            let Some((stream, certificate)) = tls.accept(sock, peer, config.connect_timeout).await
            else {
                return;
            };
            session::run(link::Wire::tls(stream), peer, certificate, api, config).await;
        });
    }
}

/// The next connection, with `TCP_NODELAY` set.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                let _ = sock.set_nodelay(true);
                return (sock, peer);
            }
            Err(e) => {
                // Out of file descriptors and similar: wait a moment instead of spinning.
                tracing::warn!(error = %e, "MQTT accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
