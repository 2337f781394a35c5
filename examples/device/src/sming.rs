//! The device as a Sming `OtaUpgradeMqtt` device: it subscribes to `a/{app}/u/{major}.{minor}`
//! of the version it runs on an MQTT broker, takes the retained announce (the patch version as
//! a varint, then the whole image, in one PUBLISH), and installs the image when its patch is
//! above the running one; the image goes through `ota-core`'s `Updater` into the inactive slot,
//! which is then trial-booted, self-tested and confirmed or rolled back like any other update.
//!
//! Decoding: the patch prefix is read as real LEB128 (`ota_core::frame::sming::SmingPayload`,
//! what Sming's deployer writes), not with the sum-of-groups rule of Sming's own device code,
//! which misreads patches above 127.
//!
//! Acceptance: Sming installs when the announced patch is not below the running one, so an
//! equal patch is installed again, and with a retained announce a device that runs the
//! announced version re-flashes itself at every start. This device installs only a strictly
//! higher patch (the rule the reference recommends for compatible devices), and does not try
//! again a version whose self-test failed.
//!
//! The simple format carries no checksum, signature or length: the SHA-256 the `Updater`
//! checks is computed here from the received image, so it guards the write to flash (read
//! back and verified before the slot is marked), not the transfer. Only TLS to the broker
//! protects what is received.
//!
//! Memory: the client (`rumqttc`) reads the whole PUBLISH into memory before handing it
//! over, so receiving costs about the image size on top of the process (the payload is used
//! where the client put it, not copied again); `ota_mqtt::sming` and `docs/getting-started.md`
//! give measured figures and what a streaming client would need.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use ota_core::UpdateError;
use ota_core::boot::{BootController, Slot, SlotVersion};
use ota_core::frame::sming::{PatchEncoding, SmingPayload};
use ota_core::updater::{self, Action, Kind, Offer, PlainReader, Updater};
use ota_core::version::Version;
use ota_http::device::Slot as _;
use ota_testkit::flash::SimFlash;
use rumqttc::{Client, Event, MqttOptions, Packet, Publish, QoS};
use sha2::{Digest as _, Sha256};

use crate::device::{End, PowerOn, Rejection, finish, power_on};
use crate::flash::{CHUNK, Chip, SLOT_LEN, UpdateSlot};
use crate::image::Header;
use crate::log::Log;

/// Power cycles before giving up (install, trial, roll-back each take one).
const MAX_POWER_CYCLES: u32 = 4;
/// Largest PUBLISH accepted from the broker: an image larger than the slot is refused after
/// it arrived, so this only bounds what a broker can make the device buffer.
const MAX_PACKET: usize = 16 * 1024 * 1024;

/// How an announce that is not a Sming payload is refused.
const MALFORMED: Rejection = Rejection {
    error: UpdateError::InvalidPackage,
    detail: None,
};

/// Where the device finds its announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmingSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// The application id (`a/{app}/u/…`).
    pub app: String,
    /// How long to wait for the retained announce after subscribing.
    pub wait: Duration,
}

/// Runs the device on `chip` (provisioned) against the announces of `settings`, until it runs
/// the announced version, has rolled it back or refused it, or its power is cut.
pub fn run(
    settings: &SmingSettings,
    chip: &Chip,
    log: &Log,
    on_boot: &mut dyn FnMut(&Chip, Slot, &Header),
) -> anyhow::Result<End> {
    let result = cycles(settings, chip, log, on_boot);
    finish(chip, log, result)
}

/// The announce received: `None` when nothing is retained on the topic (or it was withdrawn).
fn receive(settings: &SmingSettings, topic: &str, log: &Log) -> anyhow::Result<Option<Publish>> {
    let id = format!("ota-demo-sming-{}", std::process::id());
    let mut options = MqttOptions::new(id, settings.host.clone(), settings.port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(MAX_PACKET, 64 * 1024);
    let (client, mut connection) = Client::new(options, 8);
    client
        .subscribe(topic, QoS::AtLeastOnce)
        .context("queueing the subscription")?;
    let until = Instant::now() + settings.wait;
    let mut subscribed = false;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match connection.recv_timeout(left) {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                subscribed = true;
                log.step(
                    "SUBSCRIBED",
                    format!("{topic} on {}:{}", settings.host, settings.port),
                );
            }
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) if p.topic == topic => {
                let _ = client.disconnect();
                if p.payload.is_empty() {
                    return Ok(None);
                }
                // The payload as the client read it: no second copy of the image.
                return Ok(Some(p));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(anyhow!("broker {}:{}: {e}", settings.host, settings.port));
            }
            Err(_) => break,
        }
    }
    let _ = client.disconnect();
    if !subscribed {
        bail!(
            "broker {}:{} did not acknowledge the subscription within {:?}",
            settings.host,
            settings.port,
            settings.wait
        );
    }
    Ok(None)
}

/// Writes `image` (announced as `version`) through the `Updater` into the inactive slot and
/// marks it for a trial boot; `Ok(Some(_))` when it was refused.
fn install(
    chip: &Chip,
    boot: &mut BootController<SimFlash>,
    version: Version<'_>,
    image: &[u8],
    log: &Log,
) -> anyhow::Result<Option<Rejection>> {
    let refused = |error| {
        Ok(Some(Rejection {
            error,
            detail: None,
        }))
    };
    if image.len() > SLOT_LEN {
        log.step(
            "TOO-BIG",
            format!("{} bytes do not fit the {SLOT_LEN}-byte slot", image.len()),
        );
        return refused(UpdateError::InsufficientStorage);
    }
    let text = version.to_string();
    match Header::parse(image) {
        Ok(h) if h.version == text => {}
        Ok(h) => {
            log.step(
                "MISMATCH",
                format!("the image says {}, the announce {text}", h.version),
            );
            return refused(UpdateError::InvalidPackage);
        }
        Err(e) => {
            log.step("BAD-IMAGE", e);
            return refused(UpdateError::InvalidPackage);
        }
    }
    let digest = hex::encode(Sha256::digest(image));
    let size = image.len() as u64;
    let offer = Offer::new(Kind::Firmware, "sming", &text, size, "SHA256", &digest);
    let reader = match PlainReader::for_offer(&offer) {
        Ok(r) => r,
        Err(e) => return refused(e),
    };
    let mut config = updater::Config::new(CHUNK, SLOT_LEN as u64);
    // No checkpoints: after a power cut the retained announce brings the whole image again.
    config.checkpoint_interval = 0;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut back = vec![0u8; CHUNK as usize];
    let mut up = Updater::new(config, &mut buf, None)?;
    let mut slot = UpdateSlot::new(chip, boot, SlotVersion::from(version), size, log)?;
    let start = Instant::now();
    let now = || updater::Instant::from_millis(elapsed_ms(start));
    if let Err(e) = up.handle_offer(&offer, reader, now()) {
        return refused(e);
    }
    loop {
        let Some(action) = up.poll_action() else {
            if let updater::State::Failed(e) = up.state() {
                return refused(e);
            }
            bail!("the updater stopped in state {:?}", up.state());
        };
        let step = match action {
            Action::RequestChunk { index, size } => {
                let at = usize::try_from(u64::from(index) * u64::from(CHUNK))?;
                let end = at.saturating_add(size as usize).min(image.len());
                let chunk = image.get(at..end).unwrap_or_default();
                up.handle_chunk(index, chunk, now())
            }
            Action::Write { offset, .. } => {
                slot.write(offset, up.chunk_data())?;
                up.handle_write_done(now())
            }
            Action::ReadBack { offset, len } => {
                let part = back
                    .get_mut(..len)
                    .context("read-back longer than a chunk")?;
                slot.read(offset, part)?;
                up.handle_read_back(part, now())
            }
            Action::Finalize => {
                slot.finalize()?;
                up.handle_finalize_done(now())
            }
            Action::Reboot => return Ok(None),
            Action::Persist(_) | Action::ClearCheckpoint | Action::Report(_) => Ok(()),
        };
        if let Err(e) = step {
            return refused(e);
        }
    }
}

fn elapsed_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Forgets the report the boot state owes (Sming devices report nothing); the version that
/// was rolled back, if that is what it was.
fn clear_owed(boot: &mut BootController<SimFlash>) -> anyhow::Result<Option<String>> {
    let Some(owed) = boot.owed_report() else {
        return Ok(None);
    };
    let failed = matches!(owed.outcome, ota_core::boot::ReportOutcome::Failed(_))
        .then(|| owed.version.to_string());
    boot.clear_owed_report()
        .map_err(|e| anyhow!("clearing the owed report: {e:?}"))?;
    Ok(failed)
}

fn cycles(
    settings: &SmingSettings,
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
        if let Some(failed) = clear_owed(&mut boot)? {
            rolled_back = Some(failed);
        }
        let current = Version::parse(&running.version)
            .map_err(|e| anyhow!("running version {:?}: {e:?}", running.version))?;
        let topic = format!("a/{}/u/{}.{}", settings.app, current.major, current.minor);
        let Some(Publish { payload, .. }) = receive(settings, &topic, log)? else {
            log.step("IDLE", format!("nothing announced on {topic}"));
            return Ok(End::Current {
                version: running.version,
                slot,
            });
        };
        let announce = match SmingPayload::parse(&payload, PatchEncoding::Varint) {
            Ok(a) => a,
            Err(e) => {
                log.step("REJECTED", format!("announce on {topic}: {e}"));
                return Ok(End::Rejected {
                    offered: "?".into(),
                    why: MALFORMED,
                    version: running.version,
                    slot,
                });
            }
        };
        let offered_text = format!("{}.{}.{}", current.major, current.minor, announce.patch);
        let offered = Version::parse(&offered_text)
            .map_err(|e| anyhow!("announced version {offered_text:?}: {e:?}"))?;
        log.step(
            "ANNOUNCE",
            format!(
                "{topic}: patch {} ({} image bytes in one {}-byte PUBLISH payload)",
                announce.patch,
                announce.body.len(),
                payload.len()
            ),
        );
        if offered.patch <= current.patch {
            log.step(
                "IDLE",
                format!(
                    "{offered_text} is not above {} (only a higher patch is installed)",
                    running.version
                ),
            );
            return Ok(End::Current {
                version: running.version,
                slot,
            });
        }
        if rolled_back.as_deref() == Some(offered_text.as_str()) {
            log.step(
                "IDLE",
                format!("{offered_text} was rolled back; not trying it again"),
            );
            return Ok(End::RolledBack {
                failed: offered_text,
                version: running.version,
                slot,
            });
        }
        log.step(
            "OFFER",
            format!(
                "{offered_text} over Sming MQTT, into slot {}",
                boot.inactive_slot()
            ),
        );
        if let Some(why) = install(chip, &mut boot, offered, announce.body, log)? {
            log.step(
                "REJECTED",
                format!(
                    "{offered_text}: {}; slot {slot} still runs {}",
                    why.error, running.version
                ),
            );
            return Ok(End::Rejected {
                offered: offered_text,
                why,
                version: running.version,
                slot,
            });
        }
        log.step("REBOOT", "");
    }
    bail!("no stable state after {MAX_POWER_CYCLES} power cycles")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image;

    #[test]
    fn images_that_do_not_fit_or_do_not_match_the_announce_are_refused() {
        let chip = Chip::in_memory(7);
        crate::device::provision(&chip).expect("provision");
        let log = Log::quiet();
        let mut boot =
            BootController::open_with(chip.boot_area().expect("area"), crate::device::BOOT_CONFIG)
                .expect("boot state");
        let v = Version::parse("1.0.3").expect("version");
        let target = boot.inactive_slot();
        let too_big = image::build("1.0.3", true, SLOT_LEN + 1);
        let other = image::build("1.0.4", true, 10_000);
        let garbage = vec![0x5a; 10_000];
        for (bytes, error) in [
            (&too_big, UpdateError::InsufficientStorage),
            (&other, UpdateError::InvalidPackage),
            (&garbage, UpdateError::InvalidPackage),
        ] {
            let why = install(&chip, &mut boot, v, bytes, &log).expect("no I/O error");
            assert_eq!(why.map(|r| r.error), Some(error));
        }
        let good = image::build("1.0.3", true, 10_000);
        assert_eq!(
            install(&chip, &mut boot, v, &good, &log).expect("install"),
            None
        );
        assert_eq!(chip.header(target).expect("header").version, "1.0.3");
    }
}
