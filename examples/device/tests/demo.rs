//! The demo server and the demo device as processes over real loopback sockets: each device
//! ends on the version read from the slot it booted, and the server records the outcome.
//! Packages are signed and encrypted; tampered packages and packages signed by a key the
//! device does not trust are refused, reported `FAILED`, and the device keeps booting 1.0.0.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_mins(1);
const DEVICE: &str = env!("CARGO_BIN_EXE_ota-demo-device");

/// The server binary: built next to the device binary (the same target directory and
/// profile), by cargo when this package's tests run alone.
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

/// A running demo server; killed on drop.
struct Server {
    child: Child,
    lines: Receiver<String>,
    http: String,
    coap: String,
    mqtt: String,
    /// The server's lines up to `READY`.
    setup: Vec<String>,
    data: PathBuf,
    /// The data directory, when the server made its own (removed on drop).
    owned: Option<tempfile::TempDir>,
}

impl Server {
    fn start() -> Self {
        let owned = tempfile::tempdir().expect("data dir");
        let mut server = Self::start_in(owned.path());
        server.owned = Some(owned);
        server
    }

    /// A server on the data directory `data` (created, or reused as it is).
    fn start_in(data: &Path) -> Self {
        let mut child = Command::new(server_binary())
            .arg("--data-dir")
            .arg(data)
            .args(["--image-len", "60000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting ota-demo-server");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Self {
            child,
            lines,
            http: String::new(),
            coap: String::new(),
            mqtt: String::new(),
            setup: Vec::new(),
            data: data.to_path_buf(),
            owned: None,
        };
        let mut setup = Vec::new();
        let ready = server.wait_for(|l| {
            setup.push(l.to_owned());
            l.starts_with("READY ")
        });
        server.setup = setup;
        let field = |key: &str| {
            ready
                .split(' ')
                .find_map(|f| f.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in {ready:?}"))
                .to_owned()
        };
        server.http = format!("http://{}", field("http="));
        server.coap = field("coap=");
        server.mqtt = field("mqtt=");
        server
    }

    /// The first server line (from now on) that `matches`, within the deadline.
    fn wait_for(&self, mut matches: impl FnMut(&str) -> bool) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if matches(&line) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no matching server line within {DEADLINE:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("server exited before the line came")
                }
            }
        }
    }
}

impl Server {
    /// The keys a device is provisioned with.
    fn keys(&self) -> PathBuf {
        self.data.join("device-keys")
    }

    /// The stored bytes of the package of `version`, as the setup line names them.
    fn blob(&self, version: &str) -> PathBuf {
        let prefix = format!("setup: uploaded ota-demo {version} ");
        let line = self
            .setup
            .iter()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no upload line for {version} in {:?}", self.setup));
        let (_, key) = line
            .rsplit_once(" blob=")
            .unwrap_or_else(|| panic!("no blob key in {line:?}"));
        self.data.join("blobs").join(key)
    }

    /// The transport arguments of a device.
    fn transport(&self, transport: &str) -> [String; 2] {
        match transport {
            "http" => ["--http".into(), self.http.clone()],
            "mqtt" => ["--mqtt".into(), self.mqtt.clone()],
            _ => ["--coap".into(), self.coap.clone()],
        }
    }

    /// The final (`UPDATED` or `FAILED`) state line of `token`.
    fn final_state(&self, token: &str) -> String {
        let prefix = format!("STATE token={token} fw_state=");
        // The server prints state changes as it polls them, so intermediate states
        // (DOWNLOADING, VERIFIED, UPDATING, ...) may or may not appear: wait for a final one.
        self.wait_for(|l| {
            l.starts_with(&prefix)
                && (l.contains("fw_state=UPDATED ") || l.contains("fw_state=FAILED "))
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn device(server: &Server, transport: &str, token: &str, flash: &Path, extra: &[&str]) -> Output {
    Command::new(DEVICE)
        .args(server.transport(transport))
        .args(["--token", token, "--flash"])
        .arg(flash)
        .arg("--keys")
        .arg(server.keys())
        .args(extra)
        .stderr(Stdio::piped())
        .output()
        .expect("running ota-demo-device")
}

/// The device's standard output, and its standard error when it wrote any.
fn stdout(out: &Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.stderr.is_empty() {
        text.push_str("\n--- stderr:\n");
        text.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    text
}

fn result_line(text: &str) -> &str {
    text.lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line:\n{text}"))
}

fn updates_to_1_1_0(transport: &str) {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("flash dir");
    let flash = dir.path().join("device.flash");
    let token = format!("demo-{transport}-1");
    let out = device(&server, transport, &token, &flash, &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "device output:\n{text}");
    assert!(
        text.contains("power-on #1: normal boot, slot A runs 1.0.0"),
        "{text}"
    );
    assert!(
        text.contains("VERIFIED") && text.contains("every check of the reader passed"),
        "{text}"
    );
    assert!(
        text.contains("power-on #2: trial boot #1, slot B runs 1.1.0"),
        "{text}"
    );
    let result = result_line(&text);
    assert!(
        result.starts_with("RESULT version=1.1.0 slot=B "),
        "{result}"
    );
    assert_eq!(
        server.final_state(&token),
        format!("STATE token={token} fw_state=UPDATED current=1.1.0 target=1.1.0")
    );

    // The next power-on boots the confirmed slot and finds nothing to do.
    let again = device(&server, transport, &token, &flash, &[]);
    let text = stdout(&again);
    assert_eq!(again.status.code(), Some(0), "{text}");
    assert!(
        text.contains("power-on #1: normal boot, slot B runs 1.1.0"),
        "{text}"
    );
    assert!(!text.contains("DOWNLOADING"), "{text}");
}

#[test]
fn http_device_updates_from_the_demo_server() {
    updates_to_1_1_0("http");
}

#[test]
fn coap_device_updates_from_the_demo_server() {
    updates_to_1_1_0("coap");
}

#[test]
fn mqtt_device_updates_from_the_demo_server() {
    updates_to_1_1_0("mqtt");
}

fn failing_self_test_rolls_back_and_reports_failed(transport: &str) {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("flash dir");
    let flash = dir.path().join("device.flash");
    let out = device(&server, transport, "demo-fail-1", &flash, &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "device output:\n{text}");
    assert!(
        text.contains("power-on #2: trial boot #1, slot B runs 1.2.0"),
        "{text}"
    );
    assert!(text.contains("SELF-TEST    FAILED"), "{text}");
    assert!(
        text.contains("power-on #3: normal boot, slot A runs 1.0.0"),
        "{text}"
    );
    assert!(
        result_line(&text).starts_with("RESULT version=1.0.0 slot=A rolled_back=1.2.0 "),
        "{text}"
    );
    let state = server.final_state("demo-fail-1");
    assert!(
        state.starts_with(
            "STATE token=demo-fail-1 fw_state=FAILED current=- target=1.2.0 error=INSTALLATION_FAILED"
        ),
        "{state}"
    );
    // The old slot keeps booting; a new run tries the assigned version again and rolls it
    // back again.
    let again = device(&server, transport, "demo-fail-1", &flash, &[]);
    let text = stdout(&again);
    assert_eq!(again.status.code(), Some(3), "{text}");
    assert!(
        text.contains("power-on #1: normal boot, slot A runs 1.0.0"),
        "{text}"
    );
}

#[test]
fn failing_self_test_rolls_back_and_reports_failed_over_coap() {
    failing_self_test_rolls_back_and_reports_failed("coap");
}

#[test]
fn failing_self_test_rolls_back_and_reports_failed_over_http() {
    failing_self_test_rolls_back_and_reports_failed("http");
}

#[test]
fn failing_self_test_rolls_back_and_reports_failed_over_mqtt() {
    failing_self_test_rolls_back_and_reports_failed("mqtt");
}

/// Runs `token` against `server` twice: the package is refused with `error` (and `reason` in
/// the device's words), `FAILED` is recorded, and slot A keeps booting 1.0.0.
fn refused(
    server: &Server,
    transport: &str,
    token: &str,
    offered: &str,
    error: &str,
    reason: &str,
) {
    let dir = tempfile::tempdir().expect("flash dir");
    let flash = dir.path().join("device.flash");
    for run in 1..=2 {
        let out = device(server, transport, token, &flash, &[]);
        let text = stdout(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "run {run}, device output:\n{text}"
        );
        assert!(
            text.contains("power-on #1: normal boot, slot A runs 1.0.0"),
            "{text}"
        );
        assert!(!text.contains("MARKED"), "{text}");
        assert!(!text.contains("trial boot"), "{text}");
        assert!(text.contains(reason), "{text}");
        assert!(
            result_line(&text).starts_with(&format!(
                "RESULT version=1.0.0 slot=A rejected={offered} error={error} "
            )),
            "{text}"
        );
        if run == 1 {
            // A second identical FAILED is no change of state: the server prints it once.
            let state = server.final_state(token);
            assert!(
                state.starts_with(&format!(
                    "STATE token={token} fw_state=FAILED current=- target={offered} error={error}:"
                )),
                "{state}"
            );
        }
    }
}

/// Flips one byte of the stored 1.1.0 package at `offset` (from the end when negative).
fn tamper(server: &Server, offset: i64) {
    let path = server.blob("1.1.0");
    let mut bytes = std::fs::read(&path).expect("reading the stored package");
    let len = i64::try_from(bytes.len()).expect("size");
    let at = usize::try_from(if offset < 0 { len + offset } else { offset }).expect("offset");
    bytes[at] ^= 0x01;
    std::fs::write(&path, bytes).expect("writing the stored package");
}

#[test]
fn tampered_payload_is_refused_over_http() {
    let server = Server::start();
    tamper(&server, 30_000);
    refused(
        &server,
        "http",
        "demo-http-1",
        "1.1.0",
        "DECRYPTION_FAILED",
        "chunk 7 failed authentication",
    );
}

#[test]
fn tampered_payload_is_refused_over_coap() {
    let server = Server::start();
    // The last byte: the tag of the last chunk.
    tamper(&server, -1);
    refused(
        &server,
        "coap",
        "demo-coap-1",
        "1.1.0",
        "DECRYPTION_FAILED",
        "failed authentication",
    );
}

#[test]
fn tampered_manifest_is_refused_over_coap() {
    let server = Server::start();
    // Inside the manifest (its payload digest): the signature no longer verifies.
    tamper(&server, 90);
    refused(
        &server,
        "coap",
        "demo-coap-1",
        "1.1.0",
        "SIGNATURE_INVALID",
        "does not verify with signing key",
    );
}

#[test]
fn a_package_signed_for_another_version_than_offered_is_refused_over_http() {
    // The server offers 1.1.0 but serves the (validly signed) 1.2.0 package: the device
    // must not install it, since it would record 1.1.0 as what it runs and as its floor.
    let server = Server::start();
    let other = std::fs::read(server.blob("1.2.0")).expect("reading the 1.2.0 package");
    std::fs::write(server.blob("1.1.0"), other).expect("replacing the 1.1.0 package");
    refused(
        &server,
        "http",
        "demo-http-1",
        "1.1.0",
        "INVALID_PACKAGE",
        "signed as version 1.2.0, but version 1.1.0 was offered",
    );
}

#[test]
fn package_signed_by_an_untrusted_key_is_refused_over_http() {
    let server = Server::start();
    refused(
        &server,
        "http",
        "demo-rogue-1",
        "1.3.0",
        "SIGNATURE_INVALID",
        "is not in the key set",
    );
}

#[test]
fn package_signed_by_an_untrusted_key_is_refused_over_coap() {
    let server = Server::start();
    refused(
        &server,
        "coap",
        "demo-rogue-1",
        "1.3.0",
        "SIGNATURE_INVALID",
        "is not in the key set",
    );
}

#[test]
fn a_device_pinning_another_root_refuses_the_key_set() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("dir");
    let other_root = dir.path().join("other-root.pub");
    // A valid ed25519 public key (the base point), not the server's root.
    let base_point = format!("58{}\n", "66".repeat(31));
    std::fs::write(&other_root, base_point).expect("writing a key");
    let out = device(
        &server,
        "http",
        "demo-http-1",
        &dir.path().join("device.flash"),
        &["--root-key", other_root.to_str().expect("utf-8 path")],
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(!stdout(&out).contains("BOOT"), "{}", stdout(&out));
    assert!(
        err.contains("key set is not signed by the pinned root key"),
        "{err}"
    );
}

fn a_power_cut_mid_download_resumes_on_the_next_run(transport: &str) {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("flash dir");
    let flash = dir.path().join("device.flash");
    let out = device(
        &server,
        transport,
        "demo-cut-1",
        &flash,
        &["--cut-at", "20"],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(4), "device output:\n{text}");
    assert!(text.contains("DOWNLOADING"), "{text}");
    assert!(
        result_line(&text).starts_with("RESULT power_cut_at=20 during=DOWNLOADING "),
        "{text}"
    );
    let again = device(&server, transport, "demo-cut-1", &flash, &[]);
    let text = stdout(&again);
    assert_eq!(again.status.code(), Some(0), "device output:\n{text}");
    assert!(
        text.contains("power-on #1: normal boot, slot A runs 1.0.0"),
        "{text}"
    );
    // The download goes on from the checkpoint: the bytes before it are re-read from the
    // slot, not fetched again.
    assert!(
        text.contains("are re-read and re-hashed, the header verified again, the download goes on"),
        "{text}"
    );
    assert!(!text.contains("DOWNLOADING  4096 / "), "{text}");
    assert!(
        result_line(&text).starts_with("RESULT version=1.1.0 slot=B "),
        "{text}"
    );
    assert_eq!(
        server.final_state("demo-cut-1"),
        "STATE token=demo-cut-1 fw_state=UPDATED current=1.1.0 target=1.1.0"
    );
}

#[test]
fn a_power_cut_mid_download_resumes_on_the_next_run_over_http() {
    a_power_cut_mid_download_resumes_on_the_next_run("http");
}

#[test]
fn a_power_cut_mid_download_resumes_on_the_next_run_over_mqtt() {
    a_power_cut_mid_download_resumes_on_the_next_run("mqtt");
}

#[test]
fn the_server_keeps_its_keys_and_firmware_across_restarts() {
    let data = tempfile::tempdir().expect("data dir");
    let first = Server::start_in(data.path());
    assert!(
        first
            .setup
            .iter()
            .any(|l| l.starts_with("setup: keys created: root ")),
        "{:?}",
        first.setup
    );
    let root = std::fs::read_to_string(first.keys().join("root.pub")).expect("root key");
    drop(first);

    let second = Server::start_in(data.path());
    assert!(
        second
            .setup
            .iter()
            .any(|l| l.starts_with("setup: keys in ") && l.ends_with(" reused")),
        "{:?}",
        second.setup
    );
    assert!(
        second
            .setup
            .iter()
            .any(|l| l.contains("profile \"demo\" exists")),
        "{:?}",
        second.setup
    );
    assert_eq!(
        std::fs::read_to_string(second.keys().join("root.pub")).expect("root key"),
        root
    );
    // A device provisioned with the first run's keys updates from the restarted server.
    let dir = tempfile::tempdir().expect("flash dir");
    let out = device(
        &second,
        "http",
        "demo-http-1",
        &dir.path().join("d.flash"),
        &[],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        result_line(&text).starts_with("RESULT version=1.1.0 slot=B "),
        "{text}"
    );
}

#[test]
fn bad_mqtt_addresses_and_an_unreachable_mqtt_server_are_errors() {
    let dir = tempfile::tempdir().expect("dir");
    let run = |mqtt: &str| {
        Command::new(DEVICE)
            .args(["--mqtt", mqtt, "--token", "demo-mqtt-1", "--keys"])
            .arg(dir.path())
            .arg("--flash")
            .arg(dir.path().join("device.flash"))
            .output()
            .expect("running ota-demo-device")
    };
    for (bad, says) in [
        ("localhost", "is not HOST:PORT"),
        (":1884", "names no host"),
        ("127.0.0.1:99999", "port \"99999\""),
    ] {
        let out = run(bad);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "clap's usage error: {err}");
        assert!(err.contains(says), "{bad}: {err}");
    }

    // A server's keys, but nothing listens on the MQTT port.
    let server = Server::start();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let out = device_to(
        &server,
        "--mqtt",
        &closed.to_string(),
        &dir.path().join("d.flash"),
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        err.contains("reading attributes over MQTT: no connection after"),
        "{err}"
    );
}

fn device_to(server: &Server, flag: &str, address: &str, flash: &Path) -> Output {
    Command::new(DEVICE)
        .args([flag, address, "--token", "demo-mqtt-1", "--flash"])
        .arg(flash)
        .arg("--keys")
        .arg(server.keys())
        .stderr(Stdio::piped())
        .output()
        .expect("running ota-demo-device")
}
