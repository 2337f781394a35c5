//! 1,000 power cuts at random flash operations, across download, slot writes, marking, trial
//! boot, self-test, confirm and report: the demo device's own code (`device::run`) on its
//! simulated NOR flash (in memory, torn operations as `ota-testkit`'s flash tears them),
//! against the demo server process over real loopback sockets, HTTP and CoAP in parallel.
//!
//! Every device is cut once, powered on again and run to the end. Asserted: no device is left
//! unbootable, no slot starts whose bytes are not exactly a released image (the factory 1.0.0
//! or the signed 1.1.0), and every device ends on 1.1.0 confirmed (or 1.0.0). The counts are
//! printed (`cargo test -p ota-demo-device --test power_cuts -- --nocapture`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ota_core::boot::{BootController, BootDecision, Slot, TrialState};
use ota_demo_device::device::{
    self, BOOT_CONFIG, End, FACTORY_LEN, FACTORY_VERSION, Settings, TransportConfig,
};
use ota_demo_device::flash::Chip;
use ota_demo_device::image::{self, Header};
use ota_demo_device::log::Log;
use ota_demo_device::trust::{Trust, TrustFiles};

/// Power cuts in all (half over HTTP, half over CoAP).
const CUTS: u64 = 1000;
/// Plaintext bytes of the demo images the server packs for this test (nine sealed chunks:
/// two checkpoints on the way).
const IMAGE_LEN: usize = 36_000;
const NEW_VERSION: &str = "1.1.0";
const DEVICE: &str = env!("CARGO_BIN_EXE_ota-demo-device");

/// The server binary, next to the device binary (built by cargo when missing).
fn server_binary() -> PathBuf {
    let device = Path::new(DEVICE);
    let server = device.with_file_name(format!("ota-demo-server{}", std::env::consts::EXE_SUFFIX));
    if !server.exists() {
        let profile_dir = device.parent().expect("target profile directory");
        let target_dir = profile_dir.parent().expect("target directory");
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "-p", "ota-demo-server", "--bin", "ota-demo-server"])
            .arg("--target-dir")
            .arg(target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build");
        assert!(
            status.success(),
            "building ota-demo-server failed: {status}"
        );
    }
    server
}

/// The demo server process; killed on drop.
struct Server {
    child: Child,
    ready: String,
    data: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let data = tempfile::tempdir().expect("data dir");
        let mut child = Command::new(server_binary())
            .arg("--data-dir")
            .arg(data.path())
            .args(["--image-len", &IMAGE_LEN.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting ota-demo-server");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining so the server never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("READY ") {
                    let _ = tx.send(line);
                }
            }
        });
        let ready = rx
            .recv_timeout(Duration::from_mins(1))
            .expect("the server printed READY");
        Self { child, ready, data }
    }

    fn field(&self, key: &str) -> String {
        self.ready
            .split(' ')
            .find_map(|f| f.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {:?}", self.ready))
            .to_owned()
    }

    fn settings(&self, transport: &str) -> Settings {
        let (config, token) = match transport {
            "http" => (
                TransportConfig::Http(format!("http://{}", self.field("http="))),
                "demo-http-1",
            ),
            _ => (
                TransportConfig::Coap(self.field("coap=").parse().expect("CoAP address")),
                "demo-coap-1",
            ),
        };
        Settings {
            transport: config,
            token: token.into(),
            target: device::DEFAULT_TARGET.into(),
            trust: Trust::load(&TrustFiles::in_dir(&self.data.path().join("device-keys")))
                .expect("device keys"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the devices of one transport went through.
#[derive(Debug, Default)]
struct Tally {
    /// Power cuts, by the last step the device logged before.
    cuts: BTreeMap<&'static str, u64>,
    /// Slots started.
    boots: u64,
    /// Slots started whose bytes are not exactly a released image.
    unverified_boots: u64,
    /// Devices on the new version, confirmed.
    new_confirmed: u64,
    /// Devices on the old version.
    old: u64,
    /// Devices that could not boot after the cut.
    unbootable: u64,
    /// Devices powered on again with a checkpoint and a resume point stored: their download
    /// went on from there.
    resumed: u64,
    /// Anything else, described.
    other: Vec<String>,
}

impl Tally {
    fn merge(&mut self, o: Self) {
        for (k, v) in o.cuts {
            *self.cuts.entry(k).or_default() += v;
        }
        self.boots += o.boots;
        self.unverified_boots += o.unverified_boots;
        self.new_confirmed += o.new_confirmed;
        self.old += o.old;
        self.unbootable += o.unbootable;
        self.resumed += o.resumed;
        self.other.extend(o.other);
    }
}

/// The released images, by version: what a started slot must hold byte for byte.
fn released() -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([
        (
            FACTORY_VERSION.to_owned(),
            image::build(FACTORY_VERSION, true, FACTORY_LEN),
        ),
        (
            NEW_VERSION.to_owned(),
            image::build(NEW_VERSION, true, IMAGE_LEN),
        ),
    ])
}

/// A provisioned chip in memory.
fn factory_chip(seed: u64) -> Chip {
    let chip = Chip::in_memory(seed);
    device::provision(&chip).expect("provisioning");
    chip
}

/// The slot the boot state starts now and whether it is a confirmed, settled state.
fn settled(chip: &Chip) -> Option<(Slot, String)> {
    let mut boot = BootController::open_with(chip.boot_area().ok()?, BOOT_CONFIG).ok()?;
    let decision = boot.boot().ok()?;
    let normal = matches!(decision, BootDecision::Normal { .. })
        && boot.trial() == TrialState::None
        && boot.owed_report().is_none();
    let header = chip.header(decision.slot()).ok()?;
    normal.then_some((decision.slot(), header.version))
}

/// Whether the chip holds a checkpoint with a resume point for the same moment.
fn resumable(chip: &Chip) -> bool {
    let Ok(mut area) = chip.checkpoint_area() else {
        return false;
    };
    match (area.checkpoint(), area.resume_point()) {
        (Ok(Some(c)), Ok(Some(r))) => r.received == c.package_offset && r.released == c.written,
        _ => false,
    }
}

/// Flash operations of one uninterrupted update from the factory state.
fn operations_of_an_update(settings: &Settings) -> u64 {
    let chip = factory_chip(0);
    let start = chip.op_count();
    let end =
        device::run(settings, &chip, &Log::quiet(), &mut |_, _, _| {}).expect("reference run");
    assert!(
        matches!(&end, End::Current { version, .. } if version == NEW_VERSION),
        "{end:?}"
    );
    chip.op_count() - start
}

/// `xorshift64*`: a deterministic cut schedule.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// `cuts` devices over `transport`, each cut once at a random operation of an update.
fn cut_devices(server: &Server, transport: &str, cuts: u64, seed: u64) -> (Tally, u64) {
    let settings = server.settings(transport);
    let ops = operations_of_an_update(&settings);
    let images = released();
    let mut tally = Tally::default();
    let mut rng = seed;
    for i in 0..cuts {
        let chip = factory_chip(seed ^ i);
        let cut_at = next(&mut rng) % ops + 1;
        let (mut boots, mut unverified) = (0, 0);
        let mut check = |chip: &Chip, slot: Slot, header: &Header| {
            boots += 1;
            let exact = images
                .get(&header.version)
                .is_some_and(|img| chip.peek_slot(slot, img.len()) == *img);
            if !exact {
                unverified += 1;
            }
        };
        chip.cut_at(cut_at);
        let log = Log::quiet();
        match device::run(&settings, &chip, &log, &mut check) {
            Ok(End::PowerCut { during, .. }) => *tally.cuts.entry(during).or_default() += 1,
            other => tally.other.push(format!(
                "{transport} device {i}: no cut at op {cut_at}: {other:?}"
            )),
        }
        chip.power_on();
        if resumable(&chip) {
            tally.resumed += 1;
        }
        match device::run(&settings, &chip, &Log::quiet(), &mut check) {
            Ok(End::Current { version, .. }) => match settled(&chip) {
                Some((_, v)) if v == version && v == NEW_VERSION => tally.new_confirmed += 1,
                Some((_, v)) if v == version && v == FACTORY_VERSION => tally.old += 1,
                s => tally.other.push(format!(
                    "{transport} device {i} (cut at {cut_at}): ended on {version}, boot state {s:?}"
                )),
            },
            Ok(other) => tally.other.push(format!(
                "{transport} device {i} (cut at {cut_at}): ended {other:?}"
            )),
            Err(e) => {
                tally.unbootable += 1;
                tally
                    .other
                    .push(format!("{transport} device {i} (cut at {cut_at}): {e:#}"));
            }
        }
        tally.boots += boots;
        tally.unverified_boots += unverified;
    }
    (tally, ops)
}

#[test]
fn a_thousand_power_cuts_leave_every_device_bootable_on_a_verified_image() {
    let started = Instant::now();
    let server = Server::start();
    let (http, coap) = std::thread::scope(|s| {
        let http = s.spawn(|| cut_devices(&server, "http", CUTS / 2, 0x5eed_0001));
        let coap = s.spawn(|| cut_devices(&server, "coap", CUTS - CUTS / 2, 0x5eed_0002));
        (
            http.join().expect("HTTP devices"),
            coap.join().expect("CoAP devices"),
        )
    });
    let ((mut tally, http_ops), (coap_tally, coap_ops)) = (http, coap);
    tally.merge(coap_tally);
    let cuts: u64 = tally.cuts.values().sum();
    println!(
        "flash operations of one update: {http_ops} (HTTP), {coap_ops} (CoAP); cut points uniform over them"
    );
    println!(
        "power cuts: {cuts}, by the step in progress: {:?}",
        tally.cuts
    );
    println!(
        "powered on again with a checkpoint and resume point (the download went on from there): {}",
        tally.resumed
    );
    println!(
        "devices: {} | on {NEW_VERSION} confirmed: {} | on {FACTORY_VERSION}: {} | unbootable: {} | slots started: {} | unverified images started: {} | other: {} | {:.1} s",
        CUTS,
        tally.new_confirmed,
        tally.old,
        tally.unbootable,
        tally.boots,
        tally.unverified_boots,
        tally.other.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(tally.other.is_empty(), "{:#?}", tally.other);
    assert_eq!(cuts, CUTS);
    assert_eq!(tally.unbootable, 0);
    assert_eq!(tally.unverified_boots, 0);
    assert_eq!(tally.new_confirmed + tally.old, CUTS);
    assert!(tally.resumed > 0, "no download resumed from a checkpoint");
    // The cuts reach every phase, not only the download: the boot decision at power-on,
    // slot writes, marking the trial (while VERIFIED), the trial boot's decision (after
    // REBOOT), confirming (during SELF-TEST) and clearing the owed report (UPDATED).
    for step in [
        "POWER-ON",
        "DOWNLOADING",
        "VERIFIED",
        "REBOOT",
        "SELF-TEST",
        "UPDATED",
    ] {
        assert!(
            tally.cuts.get(step).is_some_and(|&n| n > 0),
            "no cut while {step}: {:?}",
            tally.cuts
        );
    }
}
