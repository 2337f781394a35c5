//! `ota-demo-device`: a device on a file-backed simulated NOR flash that runs firmware 1.0.0
//! from slot A and updates from the demo server over ThingsBoard's HTTP or CoAP device API.
//!
//! ```text
//! ota-demo-device --http http://127.0.0.1:8080 --token demo-http-1 [--flash dev.flash]
//! ota-demo-device --coap 127.0.0.1:5683       --token demo-coap-1 [--flash dev.flash]
//! ```
//!
//! Each power cycle re-opens the flash file and lets `ota_core::boot` decide which slot
//! starts; the version printed is read from the header of the image in that slot. A trial
//! image runs the self-test its header carries, then confirms (or rejects and rolls back),
//! and the owed `UPDATED` (or `FAILED`) is reported to the server.
//!
//! Exit status: 0 when the device ends on the assigned version, 3 when the assigned version
//! was rolled back, 1 on any other failure.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use ota_coap::device::{ClientConfig, CoapClient, RunConfig, UpdateOutcome, run_update};
use ota_core::boot::{BootConfig, BootController, BootDecision, ReportOutcome, Slot, SlotVersion};
use ota_core::updater::{self, Kind};
use ota_core::version::Version;
use ota_demo_device::flash::{CAPACITY, CHUNK, Chip, CoapTarget, SLOT_LEN, UpdateSlot};
use ota_demo_device::image;
use ota_demo_device::log::Log;
use ota_http::device::{HttpDevice, Outcome, OwnedOffer};
use serde_json::{Map, Value};

/// The firmware the device leaves the factory with.
const FACTORY_VERSION: &str = "1.0.0";
/// Title reported when the server assigns nothing.
const DEFAULT_TITLE: &str = "ota-demo";
/// Power cycles before giving up (download, trial, roll-back each take one).
const MAX_POWER_CYCLES: u32 = 4;

#[derive(Parser, Debug)]
#[command(version, about = "A simulated A/B device updating over HTTP or CoAP")]
struct Args {
    /// Base URL of the HTTP device API (`http://127.0.0.1:8080`).
    #[arg(long, conflicts_with = "coap", required_unless_present = "coap")]
    http: Option<String>,
    /// Address of the CoAP device API (`127.0.0.1:5683`).
    #[arg(long)]
    coap: Option<SocketAddr>,
    /// The device's access token.
    #[arg(long)]
    token: String,
    /// The flash file (created and provisioned with 1.0.0 in slot A when missing).
    #[arg(long)]
    flash: Option<PathBuf>,
    /// Re-provision the flash file with the factory image first.
    #[arg(long)]
    fresh: bool,
}

/// One transport's device client.
enum Transport {
    Http(HttpDevice),
    Coap(CoapClient),
}

impl Transport {
    fn connect(args: &Args) -> anyhow::Result<Self> {
        if let Some(url) = &args.http {
            let mut config = updater::Config::new(CHUNK, SLOT_LEN as u64);
            config.request_timeout_ms = 10_000;
            return Ok(Self::Http(HttpDevice::new(
                url,
                &args.token,
                Kind::Firmware,
                config,
            )));
        }
        let server = args
            .coap
            .ok_or_else(|| anyhow!("--http or --coap is required"))?;
        let any: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(any).context("binding the CoAP socket")?;
        Ok(Self::Coap(CoapClient::new(
            socket,
            server,
            ClientConfig::new(&args.token),
        )))
    }

    const fn name(&self) -> &'static str {
        match self {
            Self::Http(_) => "HTTP",
            Self::Coap(_) => "CoAP",
        }
    }

    /// The firmware offer in the shared attributes, if any.
    fn offer(&mut self) -> anyhow::Result<Option<OwnedOffer>> {
        match self {
            Self::Http(d) => Ok(d.fetch_offer()?),
            Self::Coap(c) => match c.attributes() {
                Ok(doc) => Ok(OwnedOffer::from_attributes(Kind::Firmware, &doc)?),
                // ThingsBoard's CoAP answers 4.04 when no attribute exists.
                Err(ota_coap::device::ClientError::Status { code: 0x84 }) => Ok(None),
                Err(e) => Err(anyhow!("reading attributes over CoAP: {e}")),
            },
        }
    }

    /// Reports the outcome of a trial boot.
    fn report_boot(&mut self, title: &str, version: &str, confirmed: bool) -> anyhow::Result<()> {
        match self {
            Self::Http(d) => Ok(d.report_boot(title, version, confirmed)?),
            Self::Coap(c) => {
                let mut m = Map::new();
                if confirmed {
                    m.insert("fw_state".into(), Value::from("UPDATED"));
                    m.insert("current_fw_title".into(), Value::from(title));
                    m.insert("current_fw_version".into(), Value::from(version));
                } else {
                    let e = ota_core::UpdateError::InstallationFailed;
                    m.insert("fw_state".into(), Value::from("FAILED"));
                    m.insert(
                        "fw_error".into(),
                        Value::from(updater::fw_error(e).as_str()),
                    );
                }
                c.telemetry(Value::Object(m).to_string().as_bytes())
                    .map_err(|e| anyhow!("sending telemetry over CoAP: {e}"))
            }
        }
    }

    /// Downloads `offer` into the inactive slot and marks it for a trial boot.
    fn download(
        &mut self,
        chip: &Chip,
        boot: &mut BootController<ota_testkit::flash::SimFlash>,
        offer: &OwnedOffer,
        log: Log,
    ) -> anyhow::Result<()> {
        let version = SlotVersion::from(
            Version::parse(&offer.version)
                .map_err(|e| anyhow!("offered version {:?}: {e:?}", offer.version))?,
        );
        let mut checkpoints = chip.checkpoint_area()?;
        let slot = UpdateSlot::new(chip, boot, version, offer.size, log)?;
        match self {
            Self::Http(d) => {
                let mut slot = slot;
                match d.download(offer, &mut slot, &mut checkpoints)? {
                    Outcome::Installed { .. } => Ok(()),
                    Outcome::Failed(e) => bail!("update failed: {}", updater::fw_error(e)),
                    other => bail!("update did not install: {other:?}"),
                }
            }
            Self::Coap(c) => {
                let stored = checkpoints.checkpoint()?;
                let mut target = CoapTarget { slot, checkpoints };
                let run = RunConfig::new(CHUNK, SLOT_LEN as u64);
                match run_update(c, &mut target, Kind::Firmware, run, stored.as_ref()) {
                    Ok(UpdateOutcome::RebootRequired) => Ok(()),
                    Ok(other) => bail!("update did not install: {other:?}"),
                    Err(e) => bail!("update failed: {}", updater::fw_error(e)),
                }
            }
        }
    }
}

/// How the run ended.
enum End {
    /// Running the assigned version (or nothing is assigned).
    Current { version: String, slot: Slot },
    /// The assigned version was rolled back; the old one runs.
    RolledBack {
        failed: String,
        version: String,
        slot: Slot,
    },
}

fn provision(path: &std::path::Path, fresh: bool, log: Log) -> anyhow::Result<()> {
    if fresh && path.exists() {
        std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    }
    if path.exists() {
        return Ok(());
    }
    let chip = Chip::open(path).with_context(|| format!("creating {}", path.display()))?;
    chip.program(Slot::A, &image::build(FACTORY_VERSION, true, 150_000))?;
    let factory = Version::parse(FACTORY_VERSION).map_err(|e| anyhow!("{e:?}"))?;
    BootController::format(chip.boot_area()?, factory.into(), BootConfig::default())?;
    log.step(
        "PROVISIONED",
        format!(
            "{} ({CAPACITY} bytes): slot A = {FACTORY_VERSION}, boot state formatted",
            path.display()
        ),
    );
    Ok(())
}

/// What one power-on left running.
struct PowerOn {
    chip: Chip,
    boot: BootController<ota_testkit::flash::SimFlash>,
    slot: Slot,
    running: image::Header,
}

/// Powers the device on: re-opens the flash file, lets the boot state pick the slot, reads
/// the version from that slot and, for a trial, runs the image's self-test and confirms it or
/// rejects it (`None`: the trial was rejected, power-cycle again).
fn power_on(path: &std::path::Path, cycle: u32, log: Log) -> anyhow::Result<Option<PowerOn>> {
    let chip = Chip::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut boot = BootController::open(chip.boot_area()?)?;
    let decision = boot.boot()?;
    let running = chip.header(decision.slot())?;
    let how = match decision {
        BootDecision::Trial { boot: n, .. } => format!("trial boot #{n}"),
        BootDecision::RolledBack { failed, .. } => format!("rolled back from {failed}"),
        _ => "normal boot".to_owned(),
    };
    log.step(
        "BOOT",
        format!(
            "power-on #{cycle}: {how}, slot {} runs {} (read from the slot)",
            decision.slot(),
            running.version
        ),
    );
    if matches!(decision, BootDecision::Trial { .. }) {
        if running.self_test_passes {
            log.step("SELF-TEST", "passed (outcome byte in the image)");
            boot.confirm()?;
            log.step(
                "CONFIRMED",
                format!("slot {} is now active", boot.active_slot()),
            );
        } else {
            log.step("SELF-TEST", "FAILED (outcome byte in the image)");
            boot.reject()?;
            log.step("REJECTED", "the old slot starts at the next power-on");
            return Ok(None);
        }
    }
    Ok(Some(PowerOn {
        chip,
        boot,
        slot: decision.slot(),
        running,
    }))
}

/// Sends the report the boot state still owes the server, then forgets it; returns the
/// version that was rolled back, if that is what it reported.
fn report_owed(
    boot: &mut BootController<ota_testkit::flash::SimFlash>,
    transport: &mut Transport,
    title: &str,
    running: &str,
    log: Log,
) -> anyhow::Result<Option<String>> {
    let Some(owed) = boot.owed_report() else {
        return Ok(None);
    };
    let failed = match owed.outcome {
        ReportOutcome::Updated => {
            transport.report_boot(title, running, true)?;
            log.step(
                "UPDATED",
                format!("reported fw_state=UPDATED current_fw_version={running}"),
            );
            None
        }
        ReportOutcome::Failed(reason) => {
            transport.report_boot(title, &owed.version.to_string(), false)?;
            log.step(
                "FAILED",
                format!(
                    "reported fw_state=FAILED fw_error=INSTALLATION_FAILED ({} of {})",
                    reason.wire_name(),
                    owed.version
                ),
            );
            Some(owed.version.to_string())
        }
    };
    boot.clear_owed_report()?;
    Ok(failed)
}

fn run(args: &Args, log: Log) -> anyhow::Result<End> {
    let path = args.flash.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("ota-demo-device-{}.flash", args.token))
    });
    provision(&path, args.fresh, log)?;
    let mut transport = Transport::connect(args)?;
    let mut rolled_back: Option<String> = None;
    for cycle in 1..=MAX_POWER_CYCLES {
        let Some(PowerOn {
            chip,
            mut boot,
            slot,
            running,
        }) = power_on(&path, cycle, log)?
        else {
            log.step("REBOOT", "");
            continue;
        };
        let offer = transport.offer()?;
        let title = offer.as_ref().map_or(DEFAULT_TITLE, |o| o.title.as_str());
        if let Some(failed) = report_owed(&mut boot, &mut transport, title, &running.version, log)?
        {
            rolled_back = Some(failed);
        }
        let Some(offer) = offer else {
            log.step("IDLE", "no firmware assigned");
            return Ok(End::Current {
                version: running.version,
                slot,
            });
        };
        if offer.version == running.version {
            log.step(
                "IDLE",
                format!("{} {} is up to date", offer.title, offer.version),
            );
            return Ok(End::Current {
                version: running.version,
                slot,
            });
        }
        if rolled_back.as_deref() == Some(offer.version.as_str()) {
            log.step(
                "IDLE",
                format!("{} was rolled back; not trying it again", offer.version),
            );
            return Ok(End::RolledBack {
                failed: offer.version,
                version: running.version,
                slot,
            });
        }
        log.step(
            "OFFER",
            format!(
                "{} {} ({} bytes, {} {}) over {}, into slot {}",
                offer.title,
                offer.version,
                offer.size,
                offer.checksum_algorithm,
                offer.checksum,
                transport.name(),
                boot.inactive_slot()
            ),
        );
        transport.download(&chip, &mut boot, &offer, log)?;
        log.step("REBOOT", "");
    }
    bail!("no stable state after {MAX_POWER_CYCLES} power cycles")
}

fn main() -> ExitCode {
    let args = Args::parse();
    let log = Log::start();
    match run(&args, log) {
        Ok(End::Current { version, slot }) => {
            println!(
                "RESULT version={version} slot={slot} elapsed_ms={}",
                log.elapsed_ms()
            );
            ExitCode::SUCCESS
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
        Err(e) => {
            eprintln!("ota-demo-device: {e:#}");
            ExitCode::FAILURE
        }
    }
}
