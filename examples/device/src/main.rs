//! `ota-demo-device`: a device on a file-backed simulated NOR flash that runs firmware 1.0.0
//! from slot A and updates from the demo server over ThingsBoard's HTTP, CoAP or MQTT device
//! API.
//!
//! ```text
//! ota-demo-device --http http://127.0.0.1:8080 --token demo-http-1 --keys DIR [--flash dev.flash]
//! ota-demo-device --coap 127.0.0.1:5683       --token demo-coap-1 --keys DIR [--flash dev.flash]
//! ota-demo-device --mqtt 127.0.0.1:1884       --token demo-mqtt-1 --keys DIR [--flash dev.flash]
//! ota-demo-device --sming demo --broker 127.0.0.1:18830 [--flash dev.flash]
//! ```
//!
//! `--sming APP` makes it a Sming `OtaUpgradeMqtt` device instead: it subscribes to
//! `a/APP/u/{major}.{minor}` of the version it runs on the broker and installs the retained
//! announce when its patch is higher (see `ota_demo_device::sming`; the simple Sming format is
//! neither signed nor encrypted, so no keys are used and nothing is reported).
//!
//! Packages are signed and encrypted (`ota-crypto`): the device pins the root public key,
//! accepts the key set only if that root signed it, and writes to the inactive slot only
//! plaintext the signed-package reader released; the slot is marked for a trial boot only
//! once the reader verified every byte. `--keys DIR` reads `root.pub`, `keyset.bin` and
//! `payload.key` (what the demo server writes to `<data-dir>/device-keys`); `--root-key`,
//! `--key-set` and `--payload-key` name the files one by one.
//!
//! Each power cycle lets `ota_core::boot` decide which slot starts; the version printed is
//! read from the header of the image in that slot. A trial image runs the self-test its
//! header carries, then confirms (or rejects and rolls back), and the owed `UPDATED` (or
//! `FAILED`) is reported to the server.
//!
//! `--cut-at N` cuts the power at the Nth flash operation (reads, programs and erases count,
//! from the start of the run): that operation is torn as `ota-testkit`'s flash tears it, the
//! file keeps what was written, and the process exits at once. Running again resumes.
//!
//! Exit status: 0 when the device ends on the assigned version, 2 when the offered package
//! was refused (reported `FAILED`), 3 when the assigned version was rolled back, 4 after a
//! power cut, 1 on any other failure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use ota_demo_device::device::{
    self, DEFAULT_TARGET, End, FACTORY_VERSION, Settings, TransportConfig,
};
use ota_demo_device::flash::{CAPACITY, Chip};
use ota_demo_device::log::Log;
use ota_demo_device::sming::{self, SmingSettings};
use ota_demo_device::trust::{Trust, TrustFiles};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "A simulated A/B device updating over HTTP, CoAP or MQTT"
)]
struct Args {
    // Transports: exactly one. A new transport adds its flag here (and to the group) and a
    // `TransportConfig` variant.
    /// Base URL of the HTTP device API (`http://127.0.0.1:8080`).
    #[arg(long, group = "transport")]
    http: Option<String>,
    /// Address of the CoAP device API (`127.0.0.1:5683`).
    #[arg(long, group = "transport")]
    coap: Option<SocketAddr>,
    /// Host and port of the MQTT device API (`127.0.0.1:1884`).
    #[arg(long, group = "transport", value_name = "HOST:PORT", value_parser = host_port)]
    mqtt: Option<(String, u16)>,
    /// Be a Sming device of this application id, taking retained announces from `--broker`.
    #[arg(long, group = "transport", value_name = "APP", requires = "broker")]
    sming: Option<String>,
    /// The MQTT broker of `--sming`.
    #[arg(long, value_name = "HOST:PORT", value_parser = host_port, requires = "sming")]
    broker: Option<(String, u16)>,
    /// How long `--sming` waits for the retained announce, seconds.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    announce_wait: u64,
    /// The device's access token.
    #[arg(long, required_unless_present = "sming", default_value = "")]
    token: String,
    /// Directory holding `root.pub`, `keyset.bin` and `payload.key`.
    #[arg(long)]
    keys: Option<PathBuf>,
    /// The pinned root public key (hex or PEM; overrides `--keys`).
    #[arg(long)]
    root_key: Option<PathBuf>,
    /// The root-signed key set (overrides `--keys`).
    #[arg(long)]
    key_set: Option<PathBuf>,
    /// The payload key (hex; overrides `--keys`).
    #[arg(long)]
    payload_key: Option<PathBuf>,
    /// The target (board) packages must be signed for.
    #[arg(long, default_value = DEFAULT_TARGET)]
    target: String,
    /// The flash file (created and provisioned with 1.0.0 in slot A when missing).
    #[arg(long)]
    flash: Option<PathBuf>,
    /// Re-provision the flash file with the factory image first.
    #[arg(long)]
    fresh: bool,
    /// Cut the power at the Nth flash operation of this run (N ≥ 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    cut_at: Option<u64>,
}

/// Parses `host:port` (`[::1]:1884` for an IPv6 address).
fn host_port(text: &str) -> Result<(String, u16), String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?} is not HOST:PORT"))?;
    let port = port
        .parse()
        .map_err(|e| format!("port {port:?} of {text:?}: {e}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{text:?} names no host"));
    }
    Ok((host.to_owned(), port))
}

impl Args {
    fn transport(&self) -> anyhow::Result<TransportConfig> {
        match (&self.http, self.coap, &self.mqtt) {
            (Some(url), None, None) => Ok(TransportConfig::Http(url.clone())),
            (None, Some(addr), None) => Ok(TransportConfig::Coap(addr)),
            (None, None, Some((host, port))) => Ok(TransportConfig::Mqtt {
                host: host.clone(),
                port: *port,
            }),
            _ => bail!("one of --http, --coap or --mqtt is required"),
        }
    }

    fn trust_files(&self) -> anyhow::Result<TrustFiles> {
        let base = self.keys.as_deref().map(TrustFiles::in_dir);
        let pick = |one: &Option<PathBuf>, from: Option<PathBuf>, flag: &str| {
            one.clone()
                .or(from)
                .with_context(|| format!("--keys DIR or {flag} FILE is required"))
        };
        Ok(TrustFiles {
            root: pick(
                &self.root_key,
                base.as_ref().map(|b| b.root.clone()),
                "--root-key",
            )?,
            key_set: pick(
                &self.key_set,
                base.as_ref().map(|b| b.key_set.clone()),
                "--key-set",
            )?,
            payload: pick(
                &self.payload_key,
                base.as_ref().map(|b| b.payload.clone()),
                "--payload-key",
            )?,
        })
    }
}

/// Opens (and provisions, when new) the flash file and arms the power cut.
fn chip(args: &Args, name: &str, log: &Log) -> anyhow::Result<Chip> {
    let path = args
        .flash
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("ota-demo-device-{name}.flash")));
    if args.fresh && path.exists() {
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    let existed = path.exists();
    let chip = Chip::open(&path).with_context(|| format!("opening {}", path.display()))?;
    if !existed {
        device::provision(&chip)?;
        log.step(
            "PROVISIONED",
            format!(
                "{} ({CAPACITY} bytes): slot A = {FACTORY_VERSION}, boot state formatted",
                path.display()
            ),
        );
    }
    let chip = Chip::open(&path).with_context(|| format!("opening {}", path.display()))?;
    if let Some(n) = args.cut_at {
        chip.cut_at(n);
        log.step("CUT-AT", format!("the power goes at flash operation #{n}"));
    }
    Ok(chip)
}

fn run(args: &Args, log: &Log) -> anyhow::Result<End> {
    if let (Some(app), Some((host, port))) = (&args.sming, &args.broker) {
        let settings = SmingSettings {
            host: host.clone(),
            port: *port,
            app: app.clone(),
            wait: Duration::from_secs(args.announce_wait),
        };
        let chip = chip(args, &format!("sming-{app}"), log)?;
        return sming::run(&settings, &chip, log, &mut |_, _, _| {});
    }
    let settings = Settings {
        transport: args.transport()?,
        token: args.token.clone(),
        target: args.target.clone(),
        trust: Trust::load(&args.trust_files()?)?,
    };
    log.step(
        "TRUST",
        format!(
            "root key {} pinned; key set v{} with {} signing key(s)",
            settings.trust.root.key_id(),
            settings.trust.keys.version(),
            settings.trust.keys.keys().len()
        ),
    );
    let chip = chip(args, &args.token, log)?;
    device::run(&settings, &chip, log, &mut |_, _, _| {})
}

fn main() -> ExitCode {
    let args = Args::parse();
    let log = Log::start();
    match run(&args, &log) {
        Ok(End::Current { version, slot }) => {
            println!(
                "RESULT version={version} slot={slot} elapsed_ms={}",
                log.elapsed_ms()
            );
            ExitCode::SUCCESS
        }
        Ok(End::Rejected {
            offered,
            why,
            version,
            slot,
        }) => {
            println!(
                "RESULT version={version} slot={slot} rejected={offered} error={} elapsed_ms={}",
                why.error.wire_name(),
                log.elapsed_ms()
            );
            ExitCode::from(2)
        }
        Ok(End::RolledBack {
            failed,
            version,
            slot,
        }) => {
            println!(
                "RESULT version={version} slot={slot} rolled_back={failed} elapsed_ms={}",
                log.elapsed_ms()
            );
            ExitCode::from(3)
        }
        Ok(End::PowerCut { op, during }) => {
            println!(
                "RESULT power_cut_at={op} during={during} elapsed_ms={}",
                log.elapsed_ms()
            );
            ExitCode::from(4)
        }
        Err(e) => {
            eprintln!("ota-demo-device: {e:#}");
            ExitCode::FAILURE
        }
    }
}
