//! The ThingsBoard-dialect MQTT endpoint: devices connect to `otad` itself (MQTT 3.1.1 and 5
//! on one port, access token as user name) and get their attributes, chunks and pushes from
//! [`DeviceApi`], each answer published to the asking session only.
//!
//! ```no_run
//! # async fn run(api: std::sync::Arc<dyn ota_server::service::DeviceApi>) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:1884").await?;
//! ota_mqtt::serve(listener, api, ota_mqtt::MqttConfig::default()).await;
//! # Ok(()) }
//! ```

mod session;

use std::sync::Arc;
use std::time::Duration;

use ota_server::service::DeviceApi;
use tokio::net::TcpListener;

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
        match listener.accept().await {
            Ok((sock, peer)) => {
                let _ = sock.set_nodelay(true);
                tokio::spawn(session::run(sock, peer, api.clone(), config.clone()));
            }
            Err(e) => {
                // Out of file descriptors and similar: wait a moment instead of spinning.
                tracing::warn!(error = %e, "MQTT accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
