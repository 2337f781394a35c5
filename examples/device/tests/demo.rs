//! The demo server and the demo device as processes over real loopback sockets: each device
//! ends on the version read from the slot it booted, and the server records the outcome.

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
    _data: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let data = tempfile::tempdir().expect("data dir");
        let mut child = Command::new(server_binary())
            .arg("--data-dir")
            .arg(data.path())
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
            _data: data,
        };
        let ready = server.wait_for(|l| l.starts_with("READY "));
        let field = |key: &str| {
            ready
                .split(' ')
                .find_map(|f| f.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in {ready:?}"))
                .to_owned()
        };
        server.http = format!("http://{}", field("http="));
        server.coap = field("coap=");
        server
    }

    /// The first server line (from now on) that `matches`, within the deadline.
    fn wait_for(&self, matches: impl Fn(&str) -> bool) -> String {
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

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn device(transport: &[&str], token: &str, flash: &Path) -> Output {
    Command::new(DEVICE)
        .args(transport)
        .args(["--token", token, "--flash"])
        .arg(flash)
        .stderr(Stdio::inherit())
        .output()
        .expect("running ota-demo-device")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn updates_to_1_1_0(transport: &str) {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("flash dir");
    let flash = dir.path().join("device.flash");
    let (args, token) = if transport == "http" {
        (["--http", server.http.as_str()], "demo-http-1")
    } else {
        (["--coap", server.coap.as_str()], "demo-coap-1")
    };
    let out = device(&args, token, &flash);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "device output:\n{text}");
    assert!(
        text.contains("power-on #1: normal boot, slot A runs 1.0.0"),
        "{text}"
    );
    assert!(
        text.contains("power-on #2: trial boot #1, slot B runs 1.1.0"),
        "{text}"
    );
    let result = text
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line:\n{text}"));
    assert!(
        result.starts_with("RESULT version=1.1.0 slot=B "),
        "{result}"
    );
    let prefix = format!("STATE token={token} fw_state=");
    // The server prints state changes as it polls them, so intermediate states (DOWNLOADING,
    // VERIFIED, UPDATING, ...) may or may not appear: wait for a final one.
    let state = server.wait_for(|l| {
        l.starts_with(&prefix)
            && (l.contains("fw_state=UPDATED ") || l.contains("fw_state=FAILED "))
    });
    assert_eq!(
        state,
        format!("STATE token={token} fw_state=UPDATED current=1.1.0 target=1.1.0")
    );

    // The next power-on boots the confirmed slot and finds nothing to do.
    let again = device(&args, token, &flash);
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
fn failing_self_test_rolls_back_and_reports_failed_over_coap() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("flash dir");
    let out = device(
        &["--coap", server.coap.as_str()],
        "demo-fail-1",
        &dir.path().join("device.flash"),
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "device output:\n{text}");
    assert!(
        text.contains("power-on #2: trial boot #1, slot B runs 1.2.0"),
        "{text}"
    );
    assert!(
        text.contains("power-on #3: normal boot, slot A runs 1.0.0"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("RESULT version=1.0.0 slot=A rolled_back=1.2.0 ")),
        "{text}"
    );
    let state = server.wait_for(|l| {
        l.starts_with("STATE token=demo-fail-1 fw_state=")
            && (l.contains("fw_state=UPDATED ") || l.contains("fw_state=FAILED "))
    });
    assert!(
        state.starts_with(
            "STATE token=demo-fail-1 fw_state=FAILED current=- target=1.2.0 error=INSTALLATION_FAILED"
        ),
        "{state}"
    );
}
