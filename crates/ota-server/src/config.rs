//! `otad` configuration: a TOML file, then `OTAD_*` environment variables (or the command
//! line flags that stand for them) on top.
//!
//! Besides the REST API, `otad` is the device endpoint of every transport; each one has a
//! table of its own:
//!
//! ```toml
//! listen = "127.0.0.1:8080"          # REST, /metrics and (by default) the HTTP device API
//!
//! [http]
//! # listen = "127.0.0.1:8081"        # the HTTP device API on its own port instead
//!
//! [coap]
//! listen = "127.0.0.1:5683"          # UDP; `enabled = false` turns it off
//!
//! [mqtt]
//! listen = "127.0.0.1:1884"          # plain TCP; `enabled = false` turns it off
//!
//! [mqtt.tls]                         # MQTT over TLS, off unless enabled
//! enabled = true
//! listen = "127.0.0.1:8884"
//! cert_file = "server.pem"           # PEM chain, leaf first
//! key_file = "server.key"            # PEM private key (PKCS#8, PKCS#1 or SEC1)
//! client_ca_file = "ca.pem"          # verify client certificates against these CAs
//! require_client_cert = true         # refuse clients without a valid certificate
//!
//! [broker]                           # an external MQTT broker, off unless enabled
//! enabled = true
//! url = "mqtt://otad:secret@127.0.0.1:1883"  # or host/port/username/password below
//! # host = "127.0.0.1"
//! # port = 1883
//! client_id = "otad"                 # unique on the broker; EnigmaIoT transfers add "-enigma-<n>"
//! sming = true                       # retained Sming announces of assigned packages
//! enigma = true                      # EnigmaIoT OTA to devices with an EnigmaIoT address
//! enigma_concurrency = 4             # EnigmaIoT transfers at a time
//! resync_secs = 60                   # full re-check of the Sming announces
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration problem.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`Config`].
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// File.
        path: String,
        /// Parser message (with line and column).
        message: String,
    },
    /// An environment variable has an invalid value.
    #[error("invalid value {value:?} for environment variable {name}: {reason}")]
    Env {
        /// Variable.
        name: &'static str,
        /// Value.
        value: String,
        /// Why.
        reason: String,
    },
    /// A required setting is missing.
    #[error("{0} must be set (config file key or OTAD_ environment variable)")]
    Missing(&'static str),
    /// A setting has a value that cannot be used.
    #[error("invalid {key}: {reason}")]
    Invalid {
        /// The setting (config file key).
        key: &'static str,
        /// Why.
        reason: String,
    },
}

/// Settings of `otad`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// REST listen address (`OTAD_LISTEN`).
    pub listen: SocketAddr,
    /// `sqlite://path` or `postgres://…` (`OTAD_DATABASE_URL`).
    pub database_url: String,
    /// `file:///dir` or `s3://bucket?…` (`OTAD_BLOB_URL`).
    pub blob_url: String,
    /// Admin user name (`OTAD_ADMIN_USERNAME`).
    pub admin_username: String,
    /// Admin password (`OTAD_ADMIN_PASSWORD`), required.
    pub admin_password: String,
    /// JWT HS256 secret (`OTAD_JWT_SECRET`); random per start when empty (tokens then do
    /// not survive a restart or work across replicas).
    pub jwt_secret: String,
    /// JWT lifetime, seconds.
    pub token_ttl_secs: u64,
    /// Largest upload, bytes (`OTAD_MAX_UPLOAD_BYTES`).
    pub max_upload_bytes: u64,
    /// Most client attributes one device may hold (`OTAD_MAX_CLIENT_ATTRIBUTES`).
    pub max_client_attributes: usize,
    /// Largest client attribute value, bytes of its JSON text
    /// (`OTAD_MAX_ATTRIBUTE_VALUE_BYTES`).
    pub max_attribute_value_bytes: usize,
    /// Non-final updates older than this fail with TIMEOUT, seconds.
    pub update_timeout_secs: u64,
    /// Coalesced progress is written this often, seconds.
    pub progress_flush_secs: u64,
    /// Namespace of the PostgreSQL NOTIFY channel shared by replicas (`OTAD_NOTIFY_NAMESPACE`).
    pub notify_namespace: String,
    /// The HTTP device API (`[http]`).
    pub http: HttpSettings,
    /// The CoAP device API (`[coap]`).
    pub coap: CoapSettings,
    /// The MQTT device API (`[mqtt]`).
    pub mqtt: MqttSettings,
    /// The external MQTT broker of the Sming and EnigmaIoT dialects (`[broker]`).
    pub broker: BrokerSettings,
}

/// The external MQTT broker (Mosquitto, ...) through which `otad` publishes Sming announces
/// and streams EnigmaIoT updates. Off by default. When replicas share a database, enable it
/// on one of them only (each would otherwise stream to the same EnigmaIoT nodes).
///
/// `url` (`mqtt://[user[:password]@]host[:port]`), when set, gives host, port and credentials
/// in one value and overrides `host`, `port`, `username` and `password`. TLS to the broker is
/// not supported (`mqtts://` is refused).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSettings {
    /// Whether `otad` connects to the broker (`OTAD_BROKER_URL` set to a URL turns it on,
    /// `off` turns it off).
    pub enabled: bool,
    /// `mqtt://[user[:password]@]host[:port]` (`OTAD_BROKER_URL`).
    pub url: Option<String>,
    /// Broker host (`OTAD_BROKER_HOST`).
    pub host: String,
    /// Broker port (`OTAD_BROKER_PORT`).
    pub port: u16,
    /// MQTT client id (`OTAD_BROKER_CLIENT_ID`); must be unique on the broker. EnigmaIoT
    /// transfers connect as `<client_id>-enigma-<n>`.
    pub client_id: String,
    /// User name (`OTAD_BROKER_USERNAME`).
    pub username: Option<String>,
    /// Password (`OTAD_BROKER_PASSWORD`).
    pub password: Option<String>,
    /// Publish the retained Sming announce of assigned packages with a Sming app id.
    pub sming: bool,
    /// Stream assigned firmware to devices with an EnigmaIoT address.
    pub enigma: bool,
    /// EnigmaIoT transfers running at once (at least 1); one per node at a time.
    pub enigma_concurrency: usize,
    /// Seconds between full re-checks of the Sming announces against the store (changes
    /// are applied at once; the re-check catches changes made through another replica).
    pub resync_secs: u64,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            url: None,
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: "otad".into(),
            username: None,
            password: None,
            sming: true,
            enigma: true,
            enigma_concurrency: 4,
            resync_secs: 60,
        }
    }
}

impl std::fmt::Debug for BrokerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerSettings")
            .field("enabled", &self.enabled)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("sming", &self.sming)
            .field("enigma", &self.enigma)
            .finish_non_exhaustive()
    }
}

/// Where and as whom to connect to the broker, resolved from [`BrokerSettings`].
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerEndpoint {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name and password, if any.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for BrokerEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerEndpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .finish_non_exhaustive()
    }
}

impl BrokerSettings {
    /// Applies the `OTAD_BROKER_*` variables read through `get`.
    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("OTAD_BROKER_URL") {
            if v == "off" {
                self.enabled = false;
            } else {
                self.enabled = true;
                self.url = (!v.is_empty()).then_some(v);
            }
        }
        if let Some(v) = get("OTAD_BROKER_HOST") {
            self.host = v;
        }
        if let Some(v) = get("OTAD_BROKER_PORT") {
            self.port = v
                .parse()
                .map_err(|e: std::num::ParseIntError| ConfigError::Env {
                    name: "OTAD_BROKER_PORT",
                    value: v.clone(),
                    reason: e.to_string(),
                })?;
        }
        if let Some(v) = get("OTAD_BROKER_CLIENT_ID") {
            self.client_id = v;
        }
        if let Some(v) = get("OTAD_BROKER_USERNAME") {
            self.username = (!v.is_empty()).then_some(v);
        }
        if let Some(v) = get("OTAD_BROKER_PASSWORD") {
            self.password = (!v.is_empty()).then_some(v);
        }
        Ok(())
    }

    /// Checks every setting; returns the endpoint.
    pub fn check(&self) -> Result<BrokerEndpoint, ConfigError> {
        let endpoint = self.endpoint()?;
        if self.client_id.is_empty() {
            return Err(ConfigError::Missing("broker.client_id"));
        }
        if self.enigma_concurrency == 0 {
            return Err(ConfigError::Invalid {
                key: "broker.enigma_concurrency",
                reason: "must be at least 1".into(),
            });
        }
        Ok(endpoint)
    }

    /// Host, port and credentials: from `url` when set, else from the separate keys.
    pub fn endpoint(&self) -> Result<BrokerEndpoint, ConfigError> {
        let bad = |reason: String| ConfigError::Invalid {
            key: "broker.url",
            reason,
        };
        let Some(text) = self.url.as_deref().filter(|u| !u.is_empty()) else {
            if self.host.is_empty() {
                return Err(ConfigError::Missing("broker.host"));
            }
            let credentials = match (&self.username, &self.password) {
                (Some(u), p) => Some((u.clone(), p.clone().unwrap_or_default())),
                (None, Some(_)) => {
                    return Err(ConfigError::Invalid {
                        key: "broker.password",
                        reason: "a password needs broker.username".into(),
                    });
                }
                (None, None) => None,
            };
            return Ok(BrokerEndpoint {
                host: self.host.clone(),
                port: self.port,
                credentials,
            });
        };
        let url = url::Url::parse(text).map_err(|e| bad(format!("{text:?}: {e}")))?;
        if url.scheme() != "mqtt" && url.scheme() != "tcp" {
            return Err(bad(format!(
                "{text:?}: scheme {:?} is not supported (mqtt://host:port)",
                url.scheme()
            )));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad(format!("{text:?} has no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(bad(format!(
                "{text:?}: only mqtt://[user[:password]@]host[:port] is understood"
            )));
        }
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let credentials = (!url.username().is_empty()).then(|| {
            (
                decode(url.username()),
                url.password().map(decode).unwrap_or_default(),
            )
        });
        Ok(BrokerEndpoint {
            host,
            port: url.port().unwrap_or(1883),
            credentials,
        })
    }
}

/// Where the HTTP device API (`/api/v1/{token}/…`) is served.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Its own listen address (`OTAD_HTTP_LISTEN`); unset (or `rest` in the environment)
    /// mounts it on the REST server.
    pub listen: Option<SocketAddr>,
}

/// The CoAP (UDP) device API.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CoapSettings {
    /// Whether it is served.
    pub enabled: bool,
    /// UDP listen address (`OTAD_COAP_LISTEN`, or `off`).
    pub listen: SocketAddr,
}

impl Default for CoapSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 5683)),
        }
    }
}

/// The MQTT device API: plain TCP and, optionally, TLS.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSettings {
    /// Whether the plain TCP listener is served.
    pub enabled: bool,
    /// Plain TCP listen address (`OTAD_MQTT_LISTEN`, or `off`). Not 1883 by default, so
    /// that `otad` starts next to a local broker.
    pub listen: SocketAddr,
    /// The TLS listener (`[mqtt.tls]`).
    pub tls: MqttTlsSettings,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 1884)),
            tls: MqttTlsSettings::default(),
        }
    }
}

/// MQTT over TLS, with optional client-certificate authentication.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MqttTlsSettings {
    /// Whether the TLS listener is served (`OTAD_MQTT_TLS_LISTEN` set to an address turns it
    /// on, `off` turns it off).
    pub enabled: bool,
    /// TLS listen address.
    pub listen: SocketAddr,
    /// Server certificate chain, PEM, leaf first (`OTAD_MQTT_TLS_CERT_FILE`).
    pub cert_file: PathBuf,
    /// Server private key, PEM (`OTAD_MQTT_TLS_KEY_FILE`).
    pub key_file: PathBuf,
    /// CA certificates, PEM, that client certificates are verified against
    /// (`OTAD_MQTT_TLS_CLIENT_CA_FILE`); unset means client certificates are not asked for.
    pub client_ca_file: Option<PathBuf>,
    /// Refuse the TLS handshake of a client without a valid certificate
    /// (`OTAD_MQTT_TLS_REQUIRE_CLIENT_CERT`); needs `client_ca_file`. When false, a
    /// certificate is verified if one is presented.
    pub require_client_cert: bool,
}

impl Default for MqttTlsSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 8884)),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            client_ca_file: None,
            require_client_cert: false,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("blob_url", &self.blob_url)
            .field("admin_username", &self.admin_username)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://ota.db".into(),
            blob_url: String::new(),
            admin_username: "tenant@thingsboard.org".into(),
            admin_password: String::new(),
            jwt_secret: String::new(),
            token_ttl_secs: 9000,
            max_upload_bytes: 16 * 1024 * 1024,
            max_client_attributes: crate::service::ServiceConfig::default().max_client_attributes,
            max_attribute_value_bytes: crate::service::ServiceConfig::default()
                .max_attribute_value_bytes,
            update_timeout_secs: 3600,
            progress_flush_secs: 5,
            notify_namespace: "default".into(),
            http: HttpSettings::default(),
            coap: CoapSettings::default(),
            mqtt: MqttSettings::default(),
            broker: BrokerSettings::default(),
        }
    }
}

impl Config {
    /// Reads `path` (if given) and applies the environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(path, |k| std::env::var(k).ok())
    }

    /// Reads `path` (if given) and applies the `OTAD_*` settings read through `get` (the
    /// environment, or command line flags in front of it), then checks the result.
    pub fn load_with(
        path: Option<&Path>,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut c = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                Self::from_toml(&text).map_err(|message| ConfigError::Parse {
                    path: p.display().to_string(),
                    message,
                })?
            }
            None => Self::default(),
        };
        c.apply_env(get)?;
        if c.admin_password.is_empty() {
            return Err(ConfigError::Missing("admin_password"));
        }
        let tls = &c.mqtt.tls;
        if tls.enabled {
            if tls.cert_file.as_os_str().is_empty() {
                return Err(ConfigError::Missing("mqtt.tls.cert_file"));
            }
            if tls.key_file.as_os_str().is_empty() {
                return Err(ConfigError::Missing("mqtt.tls.key_file"));
            }
            if tls.require_client_cert && tls.client_ca_file.is_none() {
                return Err(ConfigError::Missing("mqtt.tls.client_ca_file"));
            }
        }
        if c.broker.enabled {
            c.broker.check()?;
        }
        if c.blob_url.is_empty() {
            let dir = std::env::current_dir().map_err(|source| ConfigError::Read {
                path: ".".into(),
                source,
            })?;
            c.blob_url = format!("file://{}", dir.join("blobs").display());
        }
        Ok(c)
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Applies `OTAD_*` variables read through `get`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        /// `off` disables a listener; an address enables it there.
        fn switch(
            name: &'static str,
            v: &str,
            current: SocketAddr,
        ) -> Result<(bool, SocketAddr), ConfigError> {
            if v == "off" {
                Ok((false, current))
            } else {
                v.parse()
                    .map(|a| (true, a))
                    .map_err(|e: std::net::AddrParseError| ConfigError::Env {
                        name,
                        value: v.to_owned(),
                        reason: e.to_string(),
                    })
            }
        }
        fn num<T: std::str::FromStr>(name: &'static str, v: &str) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            v.parse().map_err(|e: T::Err| ConfigError::Env {
                name,
                value: v.to_owned(),
                reason: e.to_string(),
            })
        }
        if let Some(v) = get("OTAD_LISTEN") {
            self.listen = num("OTAD_LISTEN", &v)?;
        }
        if let Some(v) = get("OTAD_DATABASE_URL") {
            self.database_url = v;
        }
        if let Some(v) = get("OTAD_BLOB_URL") {
            self.blob_url = v;
        }
        if let Some(v) = get("OTAD_ADMIN_USERNAME") {
            self.admin_username = v;
        }
        if let Some(v) = get("OTAD_ADMIN_PASSWORD") {
            self.admin_password = v;
        }
        if let Some(v) = get("OTAD_JWT_SECRET") {
            self.jwt_secret = v;
        }
        if let Some(v) = get("OTAD_NOTIFY_NAMESPACE") {
            self.notify_namespace = v;
        }
        if let Some(v) = get("OTAD_MAX_UPLOAD_BYTES") {
            self.max_upload_bytes = num("OTAD_MAX_UPLOAD_BYTES", &v)?;
        }
        if let Some(v) = get("OTAD_MAX_CLIENT_ATTRIBUTES") {
            self.max_client_attributes = num("OTAD_MAX_CLIENT_ATTRIBUTES", &v)?;
        }
        if let Some(v) = get("OTAD_MAX_ATTRIBUTE_VALUE_BYTES") {
            self.max_attribute_value_bytes = num("OTAD_MAX_ATTRIBUTE_VALUE_BYTES", &v)?;
        }
        if let Some(v) = get("OTAD_HTTP_LISTEN") {
            self.http.listen = if v.is_empty() || v == "rest" {
                None
            } else {
                Some(num("OTAD_HTTP_LISTEN", &v)?)
            };
        }
        if let Some(v) = get("OTAD_COAP_LISTEN") {
            (self.coap.enabled, self.coap.listen) =
                switch("OTAD_COAP_LISTEN", &v, self.coap.listen)?;
        }
        if let Some(v) = get("OTAD_MQTT_LISTEN") {
            (self.mqtt.enabled, self.mqtt.listen) =
                switch("OTAD_MQTT_LISTEN", &v, self.mqtt.listen)?;
        }
        let tls = &mut self.mqtt.tls;
        if let Some(v) = get("OTAD_MQTT_TLS_LISTEN") {
            (tls.enabled, tls.listen) = switch("OTAD_MQTT_TLS_LISTEN", &v, tls.listen)?;
        }
        if let Some(v) = get("OTAD_MQTT_TLS_CERT_FILE") {
            tls.cert_file = v.into();
        }
        if let Some(v) = get("OTAD_MQTT_TLS_KEY_FILE") {
            tls.key_file = v.into();
        }
        if let Some(v) = get("OTAD_MQTT_TLS_CLIENT_CA_FILE") {
            tls.client_ca_file = (!v.is_empty()).then(|| v.into());
        }
        if let Some(v) = get("OTAD_MQTT_TLS_REQUIRE_CLIENT_CERT") {
            tls.require_client_cert = num("OTAD_MQTT_TLS_REQUIRE_CLIENT_CERT", &v)?;
        }
        self.broker.apply_env(&get)?;
        Ok(())
    }

    /// The service tunables.
    pub fn service(&self) -> crate::service::ServiceConfig {
        crate::service::ServiceConfig {
            max_upload_bytes: self.max_upload_bytes,
            max_client_attributes: self.max_client_attributes,
            max_attribute_value_bytes: self.max_attribute_value_bytes,
            update_timeout: Duration::from_secs(self.update_timeout_secs),
            progress_flush: Duration::from_secs(self.progress_flush_secs.max(1)),
            ..crate::service::ServiceConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file() {
        let mut c = Config::from_toml("listen = \"127.0.0.1:9000\"\nadmin_password = \"x\"\n")
            .expect("toml");
        c.apply_env(|k| (k == "OTAD_LISTEN").then(|| "0.0.0.0:1".to_owned()))
            .expect("env");
        assert_eq!(c.listen, SocketAddr::from(([0, 0, 0, 0], 1)));
        assert_eq!(c.admin_password, "x");
    }

    #[test]
    fn transport_listeners_from_file_and_env() {
        let c = Config::default();
        assert_eq!(c.http.listen, None, "HTTP device API on the REST server");
        assert!(c.coap.enabled && c.mqtt.enabled && !c.mqtt.tls.enabled);
        assert_ne!(c.mqtt.listen.port(), 1883, "a local broker holds 1883");

        let mut c = Config::from_toml(
            "[http]\nlisten = \"127.0.0.1:8081\"\n[coap]\nenabled = false\n[mqtt]\nlisten = \"127.0.0.1:0\"\n[mqtt.tls]\nenabled = true\ncert_file = \"s.pem\"\nkey_file = \"s.key\"\nclient_ca_file = \"ca.pem\"\nrequire_client_cert = true\n",
        )
        .expect("toml");
        assert_eq!(
            c.http.listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 8081)))
        );
        assert!(!c.coap.enabled);
        assert_eq!(c.mqtt.listen.port(), 0);
        assert_eq!(c.mqtt.tls.client_ca_file, Some(PathBuf::from("ca.pem")));
        assert!(c.mqtt.tls.require_client_cert);

        c.apply_env(|k| match k {
            "OTAD_HTTP_LISTEN" => Some("rest".into()),
            "OTAD_COAP_LISTEN" => Some("127.0.0.1:0".into()),
            "OTAD_MQTT_LISTEN" => Some("off".into()),
            "OTAD_MQTT_TLS_REQUIRE_CLIENT_CERT" => Some("false".into()),
            _ => None,
        })
        .expect("env");
        assert_eq!(c.http.listen, None);
        assert!(c.coap.enabled && c.coap.listen.port() == 0);
        assert!(!c.mqtt.enabled);
        assert!(!c.mqtt.tls.require_client_cert);
    }

    #[test]
    fn tls_without_its_files_is_refused() {
        let err = Config::load_with(None, |k| match k {
            "OTAD_ADMIN_PASSWORD" => Some("pw".into()),
            "OTAD_BLOB_URL" => Some("file:///tmp/blobs".into()),
            "OTAD_MQTT_TLS_LISTEN" => Some("127.0.0.1:0".into()),
            _ => None,
        })
        .expect_err("no certificate");
        assert!(err.to_string().contains("mqtt.tls.cert_file"), "{err}");
        let err = Config::load_with(None, |k| match k {
            "OTAD_ADMIN_PASSWORD" => Some("pw".into()),
            "OTAD_BLOB_URL" => Some("file:///tmp/blobs".into()),
            "OTAD_MQTT_TLS_LISTEN" => Some("127.0.0.1:0".into()),
            "OTAD_MQTT_TLS_CERT_FILE" => Some("s.pem".into()),
            "OTAD_MQTT_TLS_KEY_FILE" => Some("s.key".into()),
            "OTAD_MQTT_TLS_REQUIRE_CLIENT_CERT" => Some("true".into()),
            _ => None,
        })
        .expect_err("no client CA");
        assert!(err.to_string().contains("mqtt.tls.client_ca_file"), "{err}");
        let mut c = Config::default();
        let err = c
            .apply_env(|k| (k == "OTAD_COAP_LISTEN").then(|| "udp:5683".to_owned()))
            .expect_err("address");
        assert!(err.to_string().contains("OTAD_COAP_LISTEN"), "{err}");
        let err = Config::from_toml("[mqtt]\nport = 1\n").expect_err("unknown key");
        assert!(err.contains("port"), "{err}");
    }

    #[test]
    fn broker_from_file_env_and_url() {
        let c = Config::default();
        assert!(!c.broker.enabled, "off by default");
        let c = Config::from_toml(
            "[broker]\nenabled = true\nhost = \"10.0.0.2\"\nport = 1884\nusername = \"u\"\npassword = \"p\"\nclient_id = \"x\"\n",
        )
        .expect("toml");
        let e = c.broker.endpoint().expect("endpoint");
        assert_eq!((e.host.as_str(), e.port), ("10.0.0.2", 1884));
        assert_eq!(e.credentials, Some(("u".into(), "p".into())));

        let c = Config::load_with(None, |k| match k {
            "OTAD_ADMIN_PASSWORD" => Some("pw".into()),
            "OTAD_BLOB_URL" => Some("file:///tmp/blobs".into()),
            "OTAD_BROKER_URL" => Some("mqtt://otad:s%40cret@[::1]:2883".into()),
            "OTAD_BROKER_CLIENT_ID" => Some("otad-7".into()),
            _ => None,
        })
        .expect("config");
        assert!(c.broker.enabled);
        assert_eq!(c.broker.client_id, "otad-7");
        let e = c.broker.endpoint().expect("endpoint");
        assert_eq!((e.host.as_str(), e.port), ("::1", 2883));
        assert_eq!(e.credentials, Some(("otad".into(), "s@cret".into())));
        assert!(!format!("{e:?}").contains("s@cret"), "password not logged");

        let mut off = c.clone();
        off.apply_env(|k| (k == "OTAD_BROKER_URL").then(|| "off".to_owned()))
            .expect("env");
        assert!(!off.broker.enabled);
        let e = Config::from_toml("[broker]\nurl = \"mqtt://h\"\n")
            .expect("toml")
            .broker
            .endpoint()
            .expect("default port");
        assert_eq!(e.port, 1883);
    }

    #[test]
    fn bad_broker_settings_are_refused() {
        let load = |url: &'static str, extra: Option<(&'static str, &'static str)>| {
            Config::load_with(None, move |k| match k {
                "OTAD_ADMIN_PASSWORD" => Some("pw".into()),
                "OTAD_BLOB_URL" => Some("file:///tmp/blobs".into()),
                "OTAD_BROKER_URL" => Some(url.into()),
                k => extra.and_then(|(n, v)| (n == k).then(|| v.to_owned())),
            })
            .expect_err("refused")
            .to_string()
        };
        let err = load("mqtts://h:8883", None);
        assert!(err.contains("broker.url") && err.contains("mqtts"), "{err}");
        let err = load("not a url", None);
        assert!(err.contains("broker.url"), "{err}");
        let err = load("mqtt://h:1883/topic", None);
        assert!(err.contains("broker.url"), "{err}");
        let err = load("mqtt://h", Some(("OTAD_BROKER_CLIENT_ID", "")));
        assert!(err.contains("broker.client_id"), "{err}");
        let err = load("mqtt://h", Some(("OTAD_BROKER_PORT", "99999")));
        assert!(err.contains("OTAD_BROKER_PORT"), "{err}");
        let err = Config::from_toml("[broker]\nenabled = true\npassword = \"p\"\n")
            .expect("toml")
            .broker
            .endpoint()
            .expect_err("password without user")
            .to_string();
        assert!(err.contains("broker.password"), "{err}");
        let err = Config::from_toml("[broker]\nenigma_concurrency = 0\nenabled = true\n")
            .expect("toml")
            .broker
            .check()
            .expect_err("no transfers allowed")
            .to_string();
        assert!(err.contains("broker.enigma_concurrency"), "{err}");
        let err = Config::from_toml("[broker]\nhots = \"x\"\n").expect_err("unknown key");
        assert!(err.contains("hots"), "{err}");
    }

    #[test]
    fn bad_values_name_the_culprit() {
        let err = Config::from_toml("listen = 5\n").expect_err("type");
        assert!(err.contains("listen"), "{err}");
        let err = Config::from_toml("lisen = \"x\"\n").expect_err("unknown key");
        assert!(err.contains("lisen"), "{err}");
        let mut c = Config::default();
        let err = c
            .apply_env(|k| (k == "OTAD_MAX_UPLOAD_BYTES").then(|| "lots".to_owned()))
            .expect_err("number");
        assert!(
            err.to_string().contains("OTAD_MAX_UPLOAD_BYTES") && err.to_string().contains("lots"),
            "{err}"
        );
        let err = c
            .apply_env(|k| (k == "OTAD_MAX_CLIENT_ATTRIBUTES").then(|| "-1".to_owned()))
            .expect_err("number");
        assert!(
            err.to_string().contains("OTAD_MAX_CLIENT_ATTRIBUTES"),
            "{err}"
        );
    }

    #[test]
    fn client_attribute_limits_reach_the_service() {
        let mut c = Config::from_toml(
            "max_client_attributes = 10
",
        )
        .expect("toml");
        c.apply_env(|k| (k == "OTAD_MAX_ATTRIBUTE_VALUE_BYTES").then(|| "100".to_owned()))
            .expect("env");
        let s = c.service();
        assert_eq!(
            (s.max_client_attributes, s.max_attribute_value_bytes),
            (10, 100)
        );
        let d = Config::default().service();
        assert_eq!(
            (d.max_client_attributes, d.max_attribute_value_bytes),
            (256, 4096)
        );
    }
}
