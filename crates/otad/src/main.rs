//! `otad`: the OTA server daemon (REST API, `/metrics`, and the HTTP, CoAP and MQTT device
//! endpoints).
//!
//! ```text
//! otad [CONFIG.toml] [--listen ADDR] [--coap-listen ADDR|off] [--mqtt-listen ADDR|off]
//!      [--broker-url mqtt://HOST:PORT|off] …
//! ```
//!
//! Settings come from the file, then `OTAD_*` environment variables, then the flags (each
//! flag stands for the environment variable named in its help).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use otad::Config;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "The OTA server: REST API, /metrics and the HTTP, CoAP and MQTT device endpoints"
)]
struct Args {
    /// TOML configuration file.
    config: Option<PathBuf>,
    /// REST (and, by default, HTTP device API) listen address [OTAD_LISTEN].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// `sqlite://path` or `postgres://…` [OTAD_DATABASE_URL].
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// `file:///dir` or `s3://bucket?…` [OTAD_BLOB_URL].
    #[arg(long, value_name = "URL")]
    blob_url: Option<String>,
    /// The HTTP device API on its own port, or `rest` for the REST server [OTAD_HTTP_LISTEN].
    #[arg(long, value_name = "ADDR|rest")]
    http_listen: Option<String>,
    /// CoAP (UDP) listen address, or `off` [OTAD_COAP_LISTEN].
    #[arg(long, value_name = "ADDR|off")]
    coap_listen: Option<String>,
    /// MQTT (TCP) listen address, or `off` [OTAD_MQTT_LISTEN].
    #[arg(long, value_name = "ADDR|off")]
    mqtt_listen: Option<String>,
    /// MQTT over TLS listen address, or `off` [OTAD_MQTT_TLS_LISTEN].
    #[arg(long, value_name = "ADDR|off")]
    mqtt_tls_listen: Option<String>,
    /// MQTT TLS server certificate chain, PEM [OTAD_MQTT_TLS_CERT_FILE].
    #[arg(long, value_name = "FILE")]
    mqtt_tls_cert: Option<String>,
    /// MQTT TLS server private key, PEM [OTAD_MQTT_TLS_KEY_FILE].
    #[arg(long, value_name = "FILE")]
    mqtt_tls_key: Option<String>,
    /// CA certificates (PEM) that MQTT client certificates are verified against
    /// [OTAD_MQTT_TLS_CLIENT_CA_FILE].
    #[arg(long, value_name = "FILE")]
    mqtt_tls_client_ca: Option<String>,
    /// Refuse MQTT TLS clients without a valid certificate: `true` or `false`
    /// [OTAD_MQTT_TLS_REQUIRE_CLIENT_CERT].
    #[arg(long, value_name = "BOOL")]
    mqtt_tls_require_client_cert: Option<String>,
    /// External MQTT broker for the Sming and EnigmaIoT dialects,
    /// `mqtt://[user[:password]@]host[:port]`, or `off` [OTAD_BROKER_URL]. Prefer the
    /// environment or the file for a password.
    #[arg(long, value_name = "URL|off")]
    broker_url: Option<String>,
    /// MQTT client id on that broker [OTAD_BROKER_CLIENT_ID].
    #[arg(long, value_name = "ID")]
    broker_client_id: Option<String>,
    /// User name on that broker [OTAD_BROKER_USERNAME] (the password only through
    /// OTAD_BROKER_PASSWORD or the file, never on the command line).
    #[arg(long, value_name = "NAME")]
    broker_username: Option<String>,
}

impl Args {
    /// The flags given, keyed by the environment variable each stands for.
    fn overrides(self) -> (Option<PathBuf>, HashMap<&'static str, String>) {
        let pairs = [
            ("OTAD_LISTEN", self.listen),
            ("OTAD_DATABASE_URL", self.database_url),
            ("OTAD_BLOB_URL", self.blob_url),
            ("OTAD_HTTP_LISTEN", self.http_listen),
            ("OTAD_COAP_LISTEN", self.coap_listen),
            ("OTAD_MQTT_LISTEN", self.mqtt_listen),
            ("OTAD_MQTT_TLS_LISTEN", self.mqtt_tls_listen),
            ("OTAD_MQTT_TLS_CERT_FILE", self.mqtt_tls_cert),
            ("OTAD_MQTT_TLS_KEY_FILE", self.mqtt_tls_key),
            ("OTAD_MQTT_TLS_CLIENT_CA_FILE", self.mqtt_tls_client_ca),
            (
                "OTAD_MQTT_TLS_REQUIRE_CLIENT_CERT",
                self.mqtt_tls_require_client_cert,
            ),
            ("OTAD_BROKER_URL", self.broker_url),
            ("OTAD_BROKER_CLIENT_ID", self.broker_client_id),
            ("OTAD_BROKER_USERNAME", self.broker_username),
        ];
        let flags = pairs
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        (self.config, flags)
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            tracing::info!("shutting down");
            return;
        }
    }
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let (path, flags) = Args::parse().overrides();
    let config = match Config::load_with(path.as_deref(), |k| {
        flags.get(k).cloned().or_else(|| std::env::var(k).ok())
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("otad: {e}");
            return ExitCode::from(2);
        }
    };
    match otad::run(&config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otad: {e}");
            ExitCode::FAILURE
        }
    }
}
