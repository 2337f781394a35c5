//! # otad
//!
//! The OTA server daemon: `ota-server`'s REST API and `/metrics`, and the device endpoint of
//! every transport — ThingsBoard's HTTP device API (on the REST server or its own port), its
//! CoAP device API (UDP) and its MQTT device API (TCP, and TLS with optional client
//! certificates, see `ota_mqtt::server::TlsConfig`) — over one service,
//! on the embedded default (SQLite + a local blob directory) or the scale-out one
//! (PostgreSQL + S3), from one [`Config`].
//!
//! The transports depend on `ota-server`'s `DeviceApi`, so `ota-server` cannot mount them
//! itself; this crate does (docs/adr/0006-otad-crate.md).
//!
//! With `[broker]` enabled it also drives the Sming retained announce and the EnigmaIoT OTA
//! stream over an external MQTT broker from the service's own changes ([`broker`]).
//!
//! Each bound address is logged once it is bound (`CoAP listening addr=…`, `MQTT listening
//! addr=…`, …); `otad listening addr=…` (the REST server) comes last, when every listener is
//! up.

pub mod broker;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub use ota_server::config::Config;
use ota_server::server::ServeError;
use ota_server::service::DeviceApi;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

/// A start-up or serving failure.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A setting cannot be used (checked again here for callers that did not load the
    /// configuration through `Config::load`).
    #[error(transparent)]
    Config(#[from] ota_server::config::ConfigError),
    /// Storage could not be opened, or the REST server failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The MQTT TLS certificate, key or client CA cannot be used.
    #[error("MQTT TLS: {0}")]
    Tls(#[from] ota_mqtt::server::TlsError),
    /// A listener could not be bound.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The configured address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// Aborts the transport tasks when `run` returns, however it returns.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

async fn tcp(what: &'static str, addr: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { what, addr, source })
}

fn local(
    what: &'static str,
    addr: SocketAddr,
    r: std::io::Result<SocketAddr>,
) -> Result<SocketAddr, RunError> {
    r.map_err(|source| RunError::Bind { what, addr, source })
}

/// Serves the HTTP device API on its own listener, each response sent at once (device
/// requests are small request/response pairs).
async fn serve_device_http(l: TcpListener, app: axum::Router) {
    let l = axum::serve::ListenerExt::tap_io(l, |s| {
        if let Err(e) = s.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    if let Err(e) = axum::serve(l, app).await {
        tracing::error!(error = %e, "HTTP device API server failed");
    }
}

/// Opens storage, binds every configured listener and serves until `shutdown` completes;
/// then drains REST requests, writes pending progress and returns.
pub async fn run(
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let broker_endpoint = if config.broker.enabled {
        Some(config.broker.check()?)
    } else {
        None
    };
    let (rest_app, ota) = ota_server::server::build(config).await?;
    let api: Arc<dyn DeviceApi> = ota.clone();
    let mut tasks = Tasks(Vec::new());
    if let Some(endpoint) = &broker_endpoint {
        tracing::info!(
            broker = %format!("{}:{}", endpoint.host, endpoint.port),
            sming = config.broker.sming,
            enigma = config.broker.enigma,
            "external MQTT broker dialects enabled"
        );
        tasks
            .0
            .extend(broker::spawn(&config.broker, endpoint, &ota));
    }

    let rest = tcp("REST", config.listen).await?;
    let device_http = ota_http::router(ota.clone());
    let app = match config.http.listen {
        None => rest_app.merge(device_http),
        Some(addr) => {
            let l = tcp("the HTTP device API", addr).await?;
            let bound = local("the HTTP device API", addr, l.local_addr())?;
            tracing::info!(addr = %bound, "HTTP device API listening");
            tasks
                .0
                .push(tokio::spawn(serve_device_http(l, device_http)));
            rest_app
        }
    };

    if config.coap.enabled {
        let addr = config.coap.listen;
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| RunError::Bind {
                what: "CoAP",
                addr,
                source,
            })?;
        let bound = local("CoAP", addr, udp.local_addr())?;
        tracing::info!(addr = %bound, "CoAP listening");
        let api = api.clone();
        tasks.0.push(tokio::spawn(async move {
            if let Err(e) = ota_coap::server::serve(udp, api).await {
                tracing::error!(error = %e, "CoAP server failed");
            }
        }));
    }

    if config.mqtt.enabled {
        let addr = config.mqtt.listen;
        let l = tcp("MQTT", addr).await?;
        let bound = local("MQTT", addr, l.local_addr())?;
        tracing::info!(addr = %bound, "MQTT listening");
        tasks.0.push(tokio::spawn(ota_mqtt::serve(
            l,
            api.clone(),
            ota_mqtt::MqttConfig::default(),
        )));
    }

    let tls = &config.mqtt.tls;
    if tls.enabled {
        let material = ota_mqtt::server::TlsConfig::from_pem_files(
            &tls.cert_file,
            &tls.key_file,
            tls.client_ca_file.as_deref(),
            tls.require_client_cert,
        )?;
        let l = tcp("MQTT over TLS", tls.listen).await?;
        let bound = local("MQTT over TLS", tls.listen, l.local_addr())?;
        let client_certificates = if tls.client_ca_file.is_none() {
            "off"
        } else if tls.require_client_cert {
            "required"
        } else {
            "optional"
        };
        tracing::info!(
            client_certificates = %client_certificates,
            addr = %bound,
            "MQTT TLS listening"
        );
        tasks.0.push(tokio::spawn(ota_mqtt::server::serve_tls(
            l,
            material,
            api.clone(),
            ota_mqtt::MqttConfig::default(),
        )));
    }

    ota_server::server::serve_app(rest, app, ota, shutdown).await?;
    drop(tasks);
    Ok(())
}
