//! The device as a Sming `OtaUpgradeMqtt` device (`--sming`) against a private Mosquitto on
//! a free loopback port: the retained announce, published by `ota-mqtt`'s `SmingAnnouncer`, is
//! decoded, installed through the updater, trial-booted and confirmed; a lower or equal patch
//! is not installed again, an image whose self-test fails is rolled back, and a power cut
//! while the image is written leaves the old version running until the next power-on
//! installs it.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ota_demo_device::image;
use ota_mqtt::broker::BrokerOptions;
use ota_mqtt::sming::{SmingAnnouncer, SmingVersion};

const DEVICE: &str = env!("CARGO_BIN_EXE_ota-demo-device");
const SETUP_HINT: &str = "run scripts/setup-test-deps.sh";
const APP: &str = "demo";

fn mosquitto_binary() -> PathBuf {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the mosquitto broker is not installed (Debian package `mosquitto`): {SETUP_HINT}"
            )
        })
}

/// A Mosquitto broker of our own on 127.0.0.1 (never 1883), stopped on drop.
struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Mosquitto {
    fn start() -> Self {
        let binary = mosquitto_binary();
        let dir = tempfile::tempdir().expect("tempdir");
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            assert_ne!(port, 1883);
            let conf = dir.path().join("mosquitto.conf");
            let mut f = std::fs::File::create(&conf).expect("config");
            writeln!(
                f,
                "listener {port} 127.0.0.1\nallow_anonymous true\n\
                 message_size_limit 268435455\npersistence false\nlog_dest stderr\nlog_type error\n"
            )
            .expect("write config");
            let mut child = Command::new(&binary)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}; {SETUP_HINT}", binary.display()));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Self {
                        child,
                        port,
                        _dir: dir,
                    };
                }
                if child.try_wait().expect("poll mosquitto").is_some() || Instant::now() > deadline
                {
                    let _ = child.kill();
                    let _ = child.wait();
                    break; // port taken meanwhile: try another one
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("mosquitto did not start");
    }

    /// Publishes the retained announce of `version` with `image` and waits for the broker to
    /// take it.
    fn announce(&self, version: &str, image: Vec<u8>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let options = BrokerOptions::new("127.0.0.1", self.port, "test-announcer");
            let announcer = SmingAnnouncer::connect(options).await.expect("connect");
            let version = SmingVersion::parse(version).expect("version");
            announcer
                .announce(APP, version, image.into())
                .await
                .expect("announce");
            announcer.close().await;
        });
    }
}

fn device(broker: &Mosquitto, flash: &Path) -> Output {
    device_with(broker, flash, &[])
}

fn device_with(broker: &Mosquitto, flash: &Path, extra: &[&str]) -> Output {
    Command::new(DEVICE)
        .args(["--sming", APP, "--broker"])
        .arg(format!("127.0.0.1:{}", broker.port))
        .args(["--announce-wait", "2", "--flash"])
        .arg(flash)
        .args(extra)
        .stderr(Stdio::piped())
        .output()
        .expect("running ota-demo-device")
}

fn text(out: &Output) -> String {
    format!(
        "{}\n--- stderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn result_line(text: &str) -> &str {
    text.lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line:\n{text}"))
}

#[test]
fn a_sming_device_installs_the_retained_announce_and_does_not_reflash_it() {
    let broker = Mosquitto::start();
    // Patch 200 is written as the varint `c8 01`, which Sming's own decoder would read as 73.
    broker.announce("1.0.200", image::build("1.0.200", true, 100_000));
    let dir = tempfile::tempdir().expect("flash dir");
    let flash = dir.path().join("sming.flash");

    let out = device(&broker, &flash);
    let text = text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("SUBSCRIBED   a/demo/u/1.0 "), "{text}");
    assert!(
        text.contains("ANNOUNCE     a/demo/u/1.0: patch 200 (100000 image bytes"),
        "{text}"
    );
    assert!(text.contains("VERIFIED"), "{text}");
    assert!(
        text.contains("power-on #2: trial boot #1, slot B runs 1.0.200"),
        "{text}"
    );
    assert!(text.contains("CONFIRMED"), "{text}");
    assert!(
        result_line(&text).starts_with("RESULT version=1.0.200 slot=B "),
        "{text}"
    );

    // Powered on again: the same retained announce is not above what runs.
    let again = device(&broker, &flash);
    let text = self::text(&again);
    assert_eq!(again.status.code(), Some(0), "{text}");
    assert!(
        text.contains("power-on #1: normal boot, slot B runs 1.0.200"),
        "{text}"
    );
    assert!(
        text.contains("1.0.200 is not above 1.0.200 (only a higher patch is installed)"),
        "{text}"
    );
    assert!(!text.contains("VERIFIED"), "{text}");
}

#[test]
fn a_sming_image_whose_self_test_fails_is_rolled_back() {
    let broker = Mosquitto::start();
    broker.announce("1.0.7", image::build("1.0.7", false, 50_000));
    let dir = tempfile::tempdir().expect("flash dir");
    let out = device(&broker, &dir.path().join("sming.flash"));
    let text = text(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("SELF-TEST    FAILED"), "{text}");
    assert!(
        result_line(&text).starts_with("RESULT version=1.0.0 slot=A rolled_back=1.0.7 "),
        "{text}"
    );
}

#[test]
fn a_sming_announce_that_does_not_match_its_image_or_fit_the_slot_is_refused() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("flash dir");
    let flash = dir.path().join("sming.flash");
    // Nothing retained yet: the device keeps running 1.0.0.
    let out = device(&broker, &flash);
    let text = text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("nothing announced on a/demo/u/1.0"), "{text}");

    broker.announce("1.0.3", image::build("1.0.4", true, 20_000));
    let out = device(&broker, &flash);
    let text = self::text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("the image says 1.0.4, the announce 1.0.3"),
        "{text}"
    );
    assert!(
        result_line(&text)
            .starts_with("RESULT version=1.0.0 slot=A rejected=1.0.3 error=INVALID_PACKAGE "),
        "{text}"
    );

    broker.announce("1.0.9", image::build("1.0.9", true, 300_000));
    let out = device(&broker, &flash);
    let text = self::text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        result_line(&text)
            .starts_with("RESULT version=1.0.0 slot=A rejected=1.0.9 error=INSUFFICIENT_STORAGE "),
        "{text}"
    );
}

#[test]
fn a_power_cut_while_writing_a_sming_image_is_survived() {
    let broker = Mosquitto::start();
    broker.announce("1.0.2", image::build("1.0.2", true, 100_000));
    let dir = tempfile::tempdir().expect("flash dir");
    let flash = dir.path().join("sming.flash");
    let out = device_with(&broker, &flash, &["--cut-at", "30"]);
    let text = text(&out);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(
        result_line(&text).starts_with("RESULT power_cut_at=30 during=DOWNLOADING "),
        "{text}"
    );
    // Powered on again: slot A still runs 1.0.0, the retained announce brings the whole image
    // again and it is installed.
    let again = device(&broker, &flash);
    let text = self::text(&again);
    assert_eq!(again.status.code(), Some(0), "{text}");
    assert!(
        text.contains("power-on #1: normal boot, slot A runs 1.0.0"),
        "{text}"
    );
    assert!(
        result_line(&text).starts_with("RESULT version=1.0.2 slot=B "),
        "{text}"
    );
}

/// The server binary: built next to the device binary, by cargo when this package's tests
/// run alone.
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

#[test]
fn the_demo_server_announces_to_a_broker_and_the_sming_device_installs_it() {
    let broker = Mosquitto::start();
    let data = tempfile::tempdir().expect("data dir");
    let mut server = Command::new(server_binary())
        .arg("--data-dir")
        .arg(data.path())
        .args(["--image-len", "40000", "--broker"])
        .arg(format!("127.0.0.1:{}", broker.port))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting ota-demo-server");
    let stdout = server.stdout.take().expect("piped stdout");
    let mut announced = None;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if line.starts_with("setup: Sming announce ") {
            announced = Some(line);
        } else if line.starts_with("READY ") {
            break;
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    let announced = announced.expect("the server printed no Sming announce line");
    assert!(
        announced.starts_with("setup: Sming announce of 1.0.1 retained on a/demo/u/1.0 at "),
        "{announced}"
    );
    // The server is gone; the broker keeps the announce.
    let dir = tempfile::tempdir().expect("flash dir");
    let out = device(&broker, &dir.path().join("sming.flash"));
    let text = text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        result_line(&text).starts_with("RESULT version=1.0.1 slot=B "),
        "{text}"
    );
}

#[test]
fn bad_sming_flags_and_an_unreachable_broker_are_errors() {
    let dir = tempfile::tempdir().expect("flash dir");
    let flash = dir.path().join("sming.flash");
    let run = |args: &[&str]| {
        Command::new(DEVICE)
            .args(args)
            .arg("--flash")
            .arg(&flash)
            .output()
            .expect("running ota-demo-device")
    };
    let out = run(&["--sming", APP]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--broker"));
    let out = run(&["--sming", APP, "--broker", "localhost"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not HOST:PORT"));
    let out = run(&["--sming", APP, "--broker", "127.0.0.1:http"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("port \"http\""));

    // Nothing listens on this port.
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let broker = format!("127.0.0.1:{}", closed.port());
    let out = run(&["--sming", APP, "--broker", &broker, "--announce-wait", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("broker {broker}: ")), "{stderr}");

    let server = Command::new(server_binary())
        .args(["--broker", &broker])
        .output()
        .expect("running ota-demo-server");
    let stderr = String::from_utf8_lossy(&server.stderr);
    assert_eq!(server.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("connecting to the broker {broker}")),
        "{stderr}"
    );
}
