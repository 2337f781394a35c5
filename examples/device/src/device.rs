//! The device's life, one power cycle after another: power-on, the boot decision, the
//! self-test of a trial image, the report the boot state owes the server, and the download of
//! a new offer into the inactive slot through the signed-package reader.
//!
//! The binary runs it on a file-backed chip; simulations run it in-process on a chip in
//! memory, with power cuts scheduled at any flash operation.

use std::cell::Cell;
use std::net::{SocketAddr, UdpSocket};

use anyhow::{Context, anyhow, bail};
use ota_coap::device::{ClientConfig, CoapClient, RunConfig, UpdateOutcome, run_update_with};
use ota_core::UpdateError;
use ota_core::boot::{BootConfig, BootController, BootDecision, ReportOutcome, Slot, SlotVersion};
use ota_core::checkpoint::Checkpoint;
use ota_core::updater::{self, Kind};
use ota_core::version::Version;
use ota_crypto::CryptoError;
use ota_crypto::manifest::SemVer;
use ota_crypto::reader::{DevicePolicy, SignedPackageReader};
use ota_http::device::{DeviceError, HttpDevice, Outcome, OwnedOffer};
use ota_mqtt::device::MqttDevice;
use ota_testkit::flash::SimFlash;
use serde_json::{Map, Value};

use crate::flash::{CHUNK, Chip, CoapTarget, SLOT_LEN, UpdateSlot};
use crate::image::{self, Header};
use crate::log::Log;
use crate::trust::{ResumeTap, Trust, Verifier};

/// The firmware the device leaves the factory with.
pub const FACTORY_VERSION: &str = "1.0.0";
/// Size of the factory image.
pub const FACTORY_LEN: usize = 150_000;
/// The target (board) the device accepts packages for.
pub const DEFAULT_TARGET: &str = "ota-demo-board";
/// The boot state's policy: two start-ups per trial, so a power cut while the new image
/// starts does not throw a good update away (a failed self-test still rolls back at once:
/// the device rejects the trial).
pub const BOOT_CONFIG: BootConfig = BootConfig::new(2);
/// Title reported when the server assigns nothing.
const DEFAULT_TITLE: &str = "ota-demo";
/// Power cycles before giving up (download, trial, roll-back each take one).
const MAX_POWER_CYCLES: u32 = 4;
/// A checkpoint every this many plaintext bytes written (four sectors).
const CHECKPOINT_INTERVAL: u32 = 4 * CHUNK;
/// Largest sealed chunk the device can authenticate (plaintext chunk + 16-byte tag).
const MAX_SEALED_CHUNK: usize = 16 * 1024 + 16;

/// How the device reaches the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportConfig {
    /// ThingsBoard's HTTP device API at this base URL (`http://127.0.0.1:8080`).
    Http(String),
    /// ThingsBoard's CoAP device API at this address.
    Coap(SocketAddr),
    /// ThingsBoard's MQTT device API at this host and port.
    Mqtt {
        /// Host name or address of the MQTT endpoint.
        host: String,
        /// Its port.
        port: u16,
    },
}

/// Everything a run needs besides the chip.
#[derive(Debug)]
pub struct Settings {
    /// The transport.
    pub transport: TransportConfig,
    /// The device's access token.
    pub token: String,
    /// The target packages must be signed for.
    pub target: String,
    /// The pinned keys.
    pub trust: Trust,
}

/// Why a downloaded package was not installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The updater's error (what the server was told in `fw_error`).
    pub error: UpdateError,
    /// The reader's own reason, when the package itself was refused.
    pub detail: Option<CryptoError>,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Running the assigned version (or nothing is assigned).
    Current {
        /// The version read from the booted slot.
        version: String,
        /// The booted slot.
        slot: Slot,
    },
    /// The assigned version was rolled back after its self-test failed; the old one runs.
    RolledBack {
        /// The rolled-back version.
        failed: String,
        /// The version running.
        version: String,
        /// The booted slot.
        slot: Slot,
    },
    /// The offered package was refused (reported `FAILED`); the old version runs.
    Rejected {
        /// The offered version.
        offered: String,
        /// Why.
        why: Rejection,
        /// The version running.
        version: String,
        /// The booted slot.
        slot: Slot,
    },
    /// The power was cut: the chip keeps what the cut left.
    PowerCut {
        /// Flash operations done when the power went.
        op: u64,
        /// The last step the device logged before.
        during: &'static str,
    },
}

/// Programs the factory image into slot A and formats the boot state.
pub fn provision(chip: &Chip) -> anyhow::Result<()> {
    chip.program(Slot::A, &image::build(FACTORY_VERSION, true, FACTORY_LEN))?;
    let factory = Version::parse(FACTORY_VERSION).map_err(|e| anyhow!("{e:?}"))?;
    BootController::format(chip.boot_area()?, factory.into(), BOOT_CONFIG)
        .map_err(|e| anyhow!("formatting the boot state: {e:?}"))?;
    Ok(())
}

/// The MQTT client and the runtime its connection task runs on. The runtime runs only
/// while the device waits for the client, so after a power cut nothing the client queued
/// (a `FAILED` for the write that the cut tore) leaves the device.
#[derive(Debug)]
struct Mqtt {
    rt: tokio::runtime::Runtime,
    dev: MqttDevice,
}

/// How the device talks to the server.
#[derive(Debug)]
enum Transport {
    Http(HttpDevice),
    Coap(CoapClient),
    Mqtt(Box<Mqtt>),
}

impl Transport {
    fn connect(settings: &Settings) -> anyhow::Result<Self> {
        match &settings.transport {
            TransportConfig::Http(url) => {
                let mut config = updater::Config::new(CHUNK, SLOT_LEN as u64);
                config.request_timeout_ms = 10_000;
                config.checkpoint_interval = CHECKPOINT_INTERVAL;
                Ok(Self::Http(HttpDevice::new(
                    url,
                    &settings.token,
                    Kind::Firmware,
                    config,
                )))
            }
            TransportConfig::Coap(server) => {
                let any: SocketAddr = if server.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let socket = UdpSocket::bind(any).context("binding the CoAP socket")?;
                Ok(Self::Coap(CoapClient::new(
                    socket,
                    *server,
                    ClientConfig::new(&settings.token),
                )))
            }
            TransportConfig::Mqtt { host, port } => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("starting the MQTT client's runtime")?;
                let mut config = updater::Config::new(CHUNK, SLOT_LEN as u64);
                config.request_timeout_ms = 10_000;
                config.checkpoint_interval = CHECKPOINT_INTERVAL;
                // The updater's buffer takes a transport chunk plus a whole sealed chunk,
                // which the reader releases at once when its tag verifies.
                let dev = MqttDevice::new(host, *port, &settings.token, Kind::Firmware, config)
                    .buffer_len(CHUNK as usize + MAX_SEALED_CHUNK);
                Ok(Self::Mqtt(Box::new(Mqtt { rt, dev })))
            }
        }
    }

    const fn name(&self) -> &'static str {
        match self {
            Self::Http(_) => "HTTP",
            Self::Coap(_) => "CoAP",
            Self::Mqtt(_) => "MQTT",
        }
    }

    /// Delivers what the client still queues and disconnects (MQTT; the others hold nothing).
    fn close(&mut self) {
        if let Self::Mqtt(m) = self {
            m.rt.block_on(m.dev.close());
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
            Self::Mqtt(m) => {
                m.rt.block_on(m.dev.fetch_offer())
                    .context("reading attributes over MQTT")
            }
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
                    let e = UpdateError::InstallationFailed;
                    m.insert("fw_state".into(), Value::from("FAILED"));
                    m.insert(
                        "fw_error".into(),
                        Value::from(updater::fw_error(e).as_str()),
                    );
                }
                c.telemetry(Value::Object(m).to_string().as_bytes())
                    .map_err(|e| anyhow!("sending telemetry over CoAP: {e}"))
            }
            Self::Mqtt(m) => {
                m.rt.block_on(m.dev.report_boot(title, version, confirmed))
                    .context("reporting over MQTT")
            }
        }
    }

    /// Downloads `offer` through the signed-package reader into the inactive slot and marks
    /// it for a trial boot; `Ok(Some(_))` when the package was refused.
    fn download(
        &mut self,
        chip: &Chip,
        boot: &mut BootController<SimFlash>,
        offer: &OwnedOffer,
        settings: &Settings,
        log: &Log,
    ) -> anyhow::Result<Option<Rejection>> {
        let version = SlotVersion::from(
            Version::parse(&offer.version)
                .map_err(|e| anyhow!("offered version {:?}: {e:?}", offer.version))?,
        );
        let policy = policy(settings, boot.highest_accepted(), version);
        let rejected = Cell::new(None);
        let tap: ResumeTap = ResumeTap::default();
        let mut chunk_buf = vec![0u8; MAX_SEALED_CHUNK];
        // The updater's buffer takes a transport chunk plus a whole sealed chunk, which the
        // reader releases at once when its tag verifies.
        let mut plaintext = vec![0u8; CHUNK as usize + MAX_SEALED_CHUNK];
        let mut checkpoints = chip.checkpoint_area()?.with_tap(tap.clone());
        let stored = checkpoints.checkpoint()?;
        // The resume point stored with the checkpoint, if it describes the same moment.
        let resume = match &stored {
            Some(c) => checkpoints.resume_point()?.filter(|r| {
                r.received == c.package_offset
                    && r.released == c.written
                    && r.partial.len() <= chunk_buf.len()
            }),
            None => None,
        };
        let (keys, payload) = (&settings.trust.keys, Some(&settings.trust.payload));
        let inner = match &resume {
            Some(r) => SignedPackageReader::resuming(
                keys,
                payload,
                policy,
                &mut chunk_buf,
                &r.header,
                &r.partial,
            )?,
            None => SignedPackageReader::new(keys, payload, policy, &mut chunk_buf),
        };
        let reader = Verifier::new(inner, &rejected, &tap);
        log_resume(log, stored.as_ref(), resume.is_some());
        let slot = UpdateSlot::new(chip, boot, version, offer.size, log)?;
        let refused = |error| Rejection {
            error,
            detail: rejected.get(),
        };
        match self {
            Self::Http(d) => {
                let mut slot = slot;
                match d.download_with(offer, reader, &mut plaintext, &mut slot, &mut checkpoints) {
                    Ok(Outcome::Installed { .. }) => Ok(None),
                    Ok(Outcome::Failed(e)) => Ok(Some(refused(e))),
                    Ok(other) => bail!("update did not install: {other:?}"),
                    Err(DeviceError::PowerCut(e)) => Err(anyhow!(e)),
                    Err(e) => Err(e.into()),
                }
            }
            Self::Coap(c) => {
                let mut target = CoapTarget { slot, checkpoints };
                let mut run = RunConfig::new(CHUNK, SLOT_LEN as u64);
                run.checkpoint_interval = CHECKPOINT_INTERVAL;
                let outcome = run_update_with(
                    c,
                    &mut target,
                    Kind::Firmware,
                    run,
                    stored.as_ref(),
                    &mut plaintext,
                    |_| Ok(reader),
                );
                match outcome {
                    Ok(UpdateOutcome::RebootRequired) => Ok(None),
                    Ok(UpdateOutcome::Interrupted) => bail!("power cut during the download"),
                    Ok(other) => bail!("update did not install: {other:?}"),
                    Err(e) => Ok(Some(refused(e))),
                }
            }
            Self::Mqtt(m) => {
                let mut slot = slot;
                let outcome = m.rt.block_on(m.dev.download_reader(
                    offer,
                    reader,
                    &mut slot,
                    &mut checkpoints,
                ));
                // A torn flash operation fails the update inside the client; it is a power
                // cut, not a refusal.
                if !chip.is_powered() {
                    bail!("power cut during the download");
                }
                match outcome.context("downloading over MQTT")? {
                    Outcome::Installed { .. } => Ok(None),
                    Outcome::Failed(e) => Ok(Some(refused(e))),
                    other => bail!("update did not install: {other:?}"),
                }
            }
        }
    }
}

/// Says how a download starts again from a stored checkpoint (`usable`: with the reader's
/// resume point).
fn log_resume(log: &Log, stored: Option<&Checkpoint>, usable: bool) {
    match (stored, usable) {
        (Some(c), true) => log.step(
            "RESUME",
            format!(
                "checkpoint of {} {} at {} of {} package bytes: the {} bytes in the slot \
                 are re-read and re-hashed, the header verified again, the download goes on",
                c.title, c.version, c.package_offset, c.package_size, c.written
            ),
        ),
        (Some(c), false) => log.step(
            "RESUME",
            format!(
                "checkpoint of {} {} at {} of {} package bytes without a usable resume \
                 point: the package is verified again from byte 0",
                c.title, c.version, c.package_offset, c.package_size
            ),
        ),
        _ => {}
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What one power-on left running.
pub(crate) struct PowerOn {
    pub(crate) boot: BootController<SimFlash>,
    pub(crate) slot: Slot,
    pub(crate) running: Header,
}

/// Powers the device on: lets the boot state pick the slot, reads the version from that slot
/// and, for a trial, runs the image's self-test and confirms it or rejects it (`None`: the
/// trial was rejected, power-cycle again). `on_boot` sees every slot that starts.
pub(crate) fn power_on(
    chip: &Chip,
    cycle: u32,
    log: &Log,
    on_boot: &mut dyn FnMut(&Chip, Slot, &Header),
) -> anyhow::Result<Option<PowerOn>> {
    let mut boot = BootController::open_with(chip.boot_area()?, BOOT_CONFIG)
        .map_err(|e| anyhow!("opening the boot state: {e:?}"))?;
    let decision = boot.boot().map_err(|e| anyhow!("boot decision: {e:?}"))?;
    let running = chip.header(decision.slot())?;
    on_boot(chip, decision.slot(), &running);
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
            boot.confirm().map_err(|e| anyhow!("confirming: {e:?}"))?;
            log.step(
                "CONFIRMED",
                format!("slot {} is now active", boot.active_slot()),
            );
        } else {
            log.step("SELF-TEST", "FAILED (outcome byte in the image)");
            boot.reject().map_err(|e| anyhow!("rejecting: {e:?}"))?;
            log.step("REJECTED", "the old slot starts at the next power-on");
            return Ok(None);
        }
    }
    Ok(Some(PowerOn {
        boot,
        slot: decision.slot(),
        running,
    }))
}

/// Sends the report the boot state still owes the server, then forgets it; returns the
/// version that was rolled back, if that is what it reported.
fn report_owed(
    boot: &mut BootController<SimFlash>,
    transport: &mut Transport,
    title: &str,
    running: &str,
    log: &Log,
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
    boot.clear_owed_report()
        .map_err(|e| anyhow!("clearing the owed report: {e:?}"))?;
    Ok(failed)
}

/// Runs the device on `chip` (provisioned) until it is on the assigned version, has rolled
/// it back or refused it, or its power is cut. `on_boot` sees every slot that starts, before
/// it runs.
pub fn run(
    settings: &Settings,
    chip: &Chip,
    log: &Log,
    on_boot: &mut dyn FnMut(&Chip, Slot, &Header),
) -> anyhow::Result<End> {
    let result = cycles(settings, chip, log, on_boot);
    finish(chip, log, result)
}

/// The end of a run: `result` while the chip has power, otherwise the power cut.
pub(crate) fn finish(chip: &Chip, log: &Log, result: anyhow::Result<End>) -> anyhow::Result<End> {
    if chip.is_powered() {
        return result;
    }
    let during = log.last_step();
    log.step(
        "POWER-CUT",
        format!(
            "flash operation #{} torn while {during}; the device is off",
            chip.op_count()
        ),
    );
    Ok(End::PowerCut {
        op: chip.op_count(),
        during,
    })
}

fn cycles(
    settings: &Settings,
    chip: &Chip,
    log: &Log,
    on_boot: &mut dyn FnMut(&Chip, Slot, &Header),
) -> anyhow::Result<End> {
    let mut transport = Transport::connect(settings)?;
    let end = cycles_over(settings, &mut transport, chip, log, on_boot);
    // A device whose power was cut sends nothing more.
    if chip.is_powered() {
        transport.close();
    }
    end
}

fn cycles_over(
    settings: &Settings,
    transport: &mut Transport,
    chip: &Chip,
    log: &Log,
    on_boot: &mut dyn FnMut(&Chip, Slot, &Header),
) -> anyhow::Result<End> {
    let mut rolled_back: Option<String> = None;
    for cycle in 1..=MAX_POWER_CYCLES {
        let Some(PowerOn {
            mut boot,
            slot,
            running,
        }) = power_on(chip, cycle, log, on_boot)?
        else {
            log.step("REBOOT", "");
            continue;
        };
        let offer = transport.offer()?;
        let title = offer.as_ref().map_or(DEFAULT_TITLE, |o| o.title.as_str());
        if let Some(failed) = report_owed(&mut boot, transport, title, &running.version, log)? {
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
        if let Some(why) = transport.download(chip, &mut boot, &offer, settings, log)? {
            log.step(
                "REJECTED",
                format!(
                    "{} {}: fw_error={} ({}); reported FAILED, slot {} still runs {}",
                    offer.title,
                    offer.version,
                    updater::fw_error(why.error),
                    why.detail
                        .map_or_else(|| why.error.to_string(), |d| d.to_string()),
                    slot,
                    running.version
                ),
            );
            return Ok(End::Rejected {
                offered: offer.version,
                why,
                version: running.version,
                slot,
            });
        }
        log.step("REBOOT", "");
    }
    bail!("no stable state after {MAX_POWER_CYCLES} power cycles")
}

/// What the reader checks a manifest against. The device records the offered version as what
/// it runs and as its new floor, so the signed package must be exactly that version.
fn policy(settings: &Settings, highest: SlotVersion, offered: SlotVersion) -> DevicePolicy<'_> {
    let semver = |v: SlotVersion| {
        let part = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        SemVer::new(part(v.major), part(v.minor), part(v.patch))
    };
    DevicePolicy {
        now: unix_now(),
        target: &settings.target,
        kind: ota_crypto::manifest::Kind::Firmware,
        highest_accepted: semver(highest),
        offered_version: Some(semver(offered)),
    }
}
