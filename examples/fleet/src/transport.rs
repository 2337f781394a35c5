//! The transports a fleet device can speak, behind one small trait.
//!
//! Each transport wraps that transport's device client from its crate, used through its
//! public API only: [`ota_http::device::HttpDevice`], [`ota_coap::device::CoapClient`]
//! with [`ota_coap::device::run_update`], and [`ota_mqtt::device::MqttDevice`] (async, on a
//! single-threaded runtime of the device's own thread). The power-cycle loop in
//! [`crate::device`] sees only [`DeviceLink`].
//!
//! Adding a transport takes: a variant of [`TransportKind`] (and its place in
//! [`TransportKind::ALL`] so devices are spread over it), the server's listener for it in
//! [`crate::server`] and its address in [`Endpoints`], and one [`DeviceLink`]
//! implementation created in [`connect`].

use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::str::FromStr;

use ota_coap::device::{
    ClientConfig, ClientError, CoapClient, RunConfig, UpdateOutcome, run_update,
};
use ota_core::UpdateError;
use ota_core::frame::thingsboard::JsonError;
use ota_core::updater::{self, Kind};
use ota_http::device::{DeviceError, HttpDevice, Outcome, OwnedOffer};
use ota_mqtt::device::MqttDevice;
use serde_json::{Map, Value};

use crate::flash::{CHUNK, UpdateTarget};

/// The device API a simulated device speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransportKind {
    /// ThingsBoard's HTTP device API.
    Http,
    /// ThingsBoard's CoAP device API (Block2 downloads).
    Coap,
    /// ThingsBoard's MQTT device API (`v2/fw/request/{id}/chunk/{n}`).
    Mqtt,
}

impl TransportKind {
    /// Every transport the fleet spreads its devices over, in order.
    pub const ALL: [Self; 3] = [Self::Http, Self::Coap, Self::Mqtt];

    /// Display name (`HTTP`, `CoAP`, `MQTT`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Http => "HTTP",
            Self::Coap => "CoAP",
            Self::Mqtt => "MQTT",
        }
    }

    /// Lower-case name used in access tokens (`http`, `coap`, `mqtt`).
    pub const fn slug(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Coap => "coap",
            Self::Mqtt => "mqtt",
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A transport name that is not one of [`TransportKind::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport {0:?} (known: http, coap, mqtt)")]
pub struct UnknownTransport(pub String);

impl FromStr for TransportKind {
    type Err = UnknownTransport;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.slug().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownTransport(s.to_owned()))
    }
}

/// Where the server listens, per transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// HTTP device API (and the REST management API).
    pub http: SocketAddr,
    /// CoAP device API.
    pub coap: SocketAddr,
    /// MQTT device API.
    pub mqtt: SocketAddr,
}

/// Why a device's exchange with the server failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The HTTP client failed.
    #[error("HTTP: {0}")]
    Http(#[from] DeviceError),
    /// A CoAP exchange failed.
    #[error("CoAP: {0}")]
    Coap(#[from] ClientError),
    /// The MQTT client failed.
    #[error("MQTT: {0}")]
    Mqtt(#[from] ota_mqtt::device::DeviceError),
    /// The shared attributes are not ThingsBoard JSON.
    #[error("attributes: {0}")]
    Attributes(#[from] JsonError),
    /// The device's socket or checkpoint sector failed.
    #[error("device I/O: {0}")]
    Io(#[from] io::Error),
    /// The offered version is not `MAJOR.MINOR.PATCH`.
    #[error("offered version {0:?} is not a semantic version")]
    Version(String),
    /// The download failed (reported to the server as `FAILED`).
    #[error("update failed: {0}")]
    Update(UpdateError),
    /// The download ended without an installed image.
    #[error("update did not install: {0}")]
    NotInstalled(String),
}

/// What the device loop needs from a transport's client.
pub trait DeviceLink: Send {
    /// The transport.
    fn kind(&self) -> TransportKind;
    /// Tells the server the title and version running now (`current_fw_*` telemetry).
    fn report_running(&mut self, title: &str, version: &str) -> Result<(), LinkError>;
    /// The firmware offer in the shared attributes, if any.
    fn offer(&mut self) -> Result<Option<OwnedOffer>, LinkError>;
    /// Downloads `offer` into the inactive slot and marks it for a trial boot.
    fn download(&mut self, offer: &OwnedOffer, target: UpdateTarget<'_>) -> Result<(), LinkError>;
    /// Reports the outcome of a trial boot: `UPDATED` with the version now running, or
    /// `FAILED` (`INSTALLATION_FAILED`) after a roll-back.
    fn report_boot(&mut self, title: &str, version: &str, confirmed: bool)
    -> Result<(), LinkError>;
}

/// Opens `kind`'s client for the device with `token`; `seed` varies CoAP message ids and
/// retransmission jitter between devices.
pub fn connect(
    kind: TransportKind,
    endpoints: &Endpoints,
    token: &str,
    slot_len: u64,
    seed: u64,
) -> Result<Box<dyn DeviceLink>, LinkError> {
    match kind {
        TransportKind::Http => {
            let mut config = updater::Config::new(CHUNK, slot_len);
            config.request_timeout_ms = 10_000;
            let url = format!("http://{}", endpoints.http);
            Ok(Box::new(HttpLink {
                client: HttpDevice::new(&url, token, Kind::Firmware, config),
            }))
        }
        TransportKind::Coap => {
            let any: SocketAddr = if endpoints.coap.is_ipv4() {
                ([127, 0, 0, 1], 0).into()
            } else {
                (std::net::Ipv6Addr::LOCALHOST, 0).into()
            };
            let socket = UdpSocket::bind(any)?;
            let mut config = ClientConfig::new(token);
            config.seed = seed | 1;
            Ok(Box::new(CoapLink {
                client: CoapClient::new(socket, endpoints.coap, config),
                slot_len,
            }))
        }
        TransportKind::Mqtt => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let mut config = updater::Config::new(CHUNK, slot_len);
            config.request_timeout_ms = 10_000;
            let host = endpoints.mqtt.ip().to_string();
            let client =
                MqttDevice::new(&host, endpoints.mqtt.port(), token, Kind::Firmware, config);
            Ok(Box::new(MqttLink { rt, client }))
        }
    }
}

/// A device on ThingsBoard's HTTP device API.
struct HttpLink {
    client: HttpDevice,
}

impl DeviceLink for HttpLink {
    fn kind(&self) -> TransportKind {
        TransportKind::Http
    }

    fn report_running(&mut self, title: &str, version: &str) -> Result<(), LinkError> {
        Ok(self.client.post_telemetry(&running(title, version))?)
    }

    fn offer(&mut self) -> Result<Option<OwnedOffer>, LinkError> {
        Ok(self.client.fetch_offer()?)
    }

    fn download(
        &mut self,
        offer: &OwnedOffer,
        mut target: UpdateTarget<'_>,
    ) -> Result<(), LinkError> {
        match self
            .client
            .download(offer, &mut target.slot, &mut target.checkpoints)?
        {
            Outcome::Installed { .. } => Ok(()),
            Outcome::Failed(e) => Err(LinkError::Update(e)),
            other => Err(LinkError::NotInstalled(format!("{other:?}"))),
        }
    }

    fn report_boot(
        &mut self,
        title: &str,
        version: &str,
        confirmed: bool,
    ) -> Result<(), LinkError> {
        Ok(self.client.report_boot(title, version, confirmed)?)
    }
}

/// A device on ThingsBoard's CoAP device API.
struct CoapLink {
    client: CoapClient,
    slot_len: u64,
}

impl DeviceLink for CoapLink {
    fn kind(&self) -> TransportKind {
        TransportKind::Coap
    }

    fn report_running(&mut self, title: &str, version: &str) -> Result<(), LinkError> {
        let body = Value::Object(running(title, version)).to_string();
        Ok(self.client.telemetry(body.as_bytes())?)
    }

    fn offer(&mut self) -> Result<Option<OwnedOffer>, LinkError> {
        match self.client.attributes() {
            Ok(doc) => Ok(OwnedOffer::from_attributes(Kind::Firmware, &doc)?),
            // ThingsBoard's CoAP answers 4.04 when no attribute exists.
            Err(ClientError::Status { code: 0x84 }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn download(
        &mut self,
        _offer: &OwnedOffer,
        mut target: UpdateTarget<'_>,
    ) -> Result<(), LinkError> {
        // `run_update` reads the offer from the attributes itself and resumes from the
        // checkpoint when it describes the same package.
        let stored = target.checkpoints.checkpoint()?;
        let run = RunConfig::new(CHUNK, self.slot_len);
        match run_update(
            &mut self.client,
            &mut target,
            Kind::Firmware,
            run,
            stored.as_ref(),
        ) {
            Ok(UpdateOutcome::RebootRequired) => Ok(()),
            Ok(other) => Err(LinkError::NotInstalled(format!("{other:?}"))),
            Err(e) => Err(LinkError::Update(e)),
        }
    }

    fn report_boot(
        &mut self,
        title: &str,
        version: &str,
        confirmed: bool,
    ) -> Result<(), LinkError> {
        let mut m = Map::new();
        if confirmed {
            m = running(title, version);
            m.insert("fw_state".into(), Value::from("UPDATED"));
        } else {
            let e = UpdateError::InstallationFailed;
            m.insert("fw_state".into(), Value::from("FAILED"));
            m.insert(
                "fw_error".into(),
                Value::from(updater::fw_error(e).as_str()),
            );
        }
        Ok(self
            .client
            .telemetry(Value::Object(m).to_string().as_bytes())?)
    }
}

/// A device on ThingsBoard's MQTT device API. The client is async: its connection task runs
/// on this device's own single-threaded runtime while the device waits for it.
struct MqttLink {
    rt: tokio::runtime::Runtime,
    client: MqttDevice,
}

impl DeviceLink for MqttLink {
    fn kind(&self) -> TransportKind {
        TransportKind::Mqtt
    }

    fn report_running(&mut self, title: &str, version: &str) -> Result<(), LinkError> {
        // Queued; the connection sends it while the device waits for its attributes.
        let _runtime = self.rt.enter();
        self.client.send_telemetry(&running(title, version));
        Ok(())
    }

    fn offer(&mut self) -> Result<Option<OwnedOffer>, LinkError> {
        Ok(self.rt.block_on(self.client.fetch_offer())?)
    }

    fn download(
        &mut self,
        offer: &OwnedOffer,
        mut target: UpdateTarget<'_>,
    ) -> Result<(), LinkError> {
        let outcome = self.rt.block_on(self.client.download(
            offer,
            &mut target.slot,
            &mut target.checkpoints,
        ))?;
        match outcome {
            Outcome::Installed { .. } => Ok(()),
            Outcome::Failed(e) => Err(LinkError::Update(e)),
            other => Err(LinkError::NotInstalled(format!("{other:?}"))),
        }
    }

    fn report_boot(
        &mut self,
        title: &str,
        version: &str,
        confirmed: bool,
    ) -> Result<(), LinkError> {
        Ok(self
            .rt
            .block_on(self.client.report_boot(title, version, confirmed))?)
    }
}

impl Drop for MqttLink {
    /// Delivers the queued reports (the last one is the device's outcome) and disconnects.
    fn drop(&mut self) {
        self.rt.block_on(self.client.close());
    }
}

/// `current_fw_title` / `current_fw_version` telemetry.
fn running(title: &str, version: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("current_fw_title".into(), Value::from(title));
    m.insert("current_fw_version".into(), Value::from(version));
    m
}

#[cfg(test)]
mod tests {
    use super::{TransportKind, UnknownTransport};

    #[test]
    fn names_parse_back() {
        for t in TransportKind::ALL {
            assert_eq!(t.slug().parse::<TransportKind>(), Ok(t));
            assert_eq!(t.name().parse::<TransportKind>(), Ok(t));
        }
        assert_eq!(
            "lwm2m".parse::<TransportKind>(),
            Err(UnknownTransport("lwm2m".into()))
        );
    }
}
