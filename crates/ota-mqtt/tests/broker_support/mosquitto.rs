//! A private Mosquitto broker on a free loopback port (never the machine's 1883), and the
//! paho-mqtt emulators of Sming devices and EnigmaIoT gateways + nodes
//! (`crates/ota-mqtt/tests/*.py`), run as separate processes. Shared by `ota-mqtt`'s and
//! `otad`'s tests (which include this file by path).
#![allow(dead_code, clippy::missing_panics_doc)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const SETUP_HINT: &str = "run scripts/setup-test-deps.sh";

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

/// A free TCP port on 127.0.0.1 (nothing listens on it when this returns).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A Mosquitto broker of our own (no persistence), stopped on drop.
pub struct Mosquitto {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The authentication lines of its configuration.
    auth: String,
    dir: tempfile::TempDir,
}

/// Starts mosquitto on `port` with `auth` and waits until it accepts connections; `None` when
/// it exits or does not listen in time (the port was taken meanwhile).
fn spawn(binary: &Path, dir: &Path, port: u16, auth: &str) -> Option<Child> {
    let conf = dir.join("mosquitto.conf");
    let mut f = std::fs::File::create(&conf).expect("config");
    writeln!(
        f,
        "listener {port} 127.0.0.1\n{auth}\
         message_size_limit 268435455\npersistence false\nlog_dest stderr\nlog_type error\n"
    )
    .expect("write config");
    let log = std::fs::File::create(dir.join("mosquitto.log")).expect("log");
    let mut child = Command::new(binary)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}; {SETUP_HINT}", binary.display()));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(child);
        }
        if child.try_wait().expect("poll mosquitto").is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Mosquitto {
    /// Starts a broker on a free port: listener 127.0.0.1 only, anonymous clients, messages
    /// up to MQTT's maximum size, no persistence.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Same, but only user `user` with password `password` may connect.
    pub fn start_with_password(user: &str, password: &str) -> Self {
        Self::start_with(Some((user, password)))
    }

    fn start_with(login: Option<(&str, &str)>) -> Self {
        let binary = mosquitto_binary();
        let dir = tempfile::tempdir().expect("tempdir");
        let auth = match login {
            None => "allow_anonymous true\n".to_owned(),
            Some((user, password)) => {
                let file = dir.path().join("passwd");
                let tool = binary.with_file_name("mosquitto_passwd");
                let tool = if tool.is_file() {
                    tool
                } else {
                    PathBuf::from("mosquitto_passwd")
                };
                let out = Command::new(&tool)
                    .arg("-c")
                    .arg("-b")
                    .arg(&file)
                    .args([user, password])
                    .output()
                    .unwrap_or_else(|e| panic!("mosquitto_passwd: {e}; {SETUP_HINT}"));
                assert!(out.status.success(), "mosquitto_passwd failed: {out:?}");
                format!("allow_anonymous false\npassword_file {}\n", file.display())
            }
        };
        for _ in 0..5 {
            let port = free_port();
            assert_ne!(port, 1883);
            // None: the port was taken meanwhile; try another one.
            if let Some(child) = spawn(&binary, dir.path(), port, &auth) {
                return Self {
                    child,
                    port,
                    auth,
                    dir,
                };
            }
        }
        let log = std::fs::read_to_string(dir.path().join("mosquitto.log")).unwrap_or_default();
        panic!("mosquitto did not start: {log}");
    }

    /// Stops the broker and starts a new one on the same port: it has forgotten every
    /// retained message and every session.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&mosquitto_binary(), self.dir.path(), self.port, &self.auth)
            .unwrap_or_else(|| {
                let log = std::fs::read_to_string(self.dir.path().join("mosquitto.log"))
                    .unwrap_or_default();
                panic!("mosquitto did not restart on port {}: {log}", self.port)
            });
    }
}

/// A script of `ota-mqtt`'s `tests/` directory (the path works from either crate).
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ota-mqtt/tests")
        .join(name)
}

/// `python3` with paho-mqtt 2.x importable; fails (never skips) without it.
pub fn python_with_paho() -> Command {
    let check = Command::new("python3")
        .args(["-c", "import paho.mqtt.client as m; m.CallbackAPIVersion"])
        .output();
    match check {
        Ok(o) if o.status.success() => Command::new("python3"),
        _ => panic!("python3 with paho-mqtt 2.x is missing: {SETUP_HINT}"),
    }
}

/// A running emulator: its stdout lines arrive on a channel; killed on drop.
pub struct Emulator {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Emulator {
    /// Starts `python3 <script> <args>` and waits for its `READY` line (subscribed).
    pub fn start(script_name: &str, args: &[String]) -> Self {
        let mut child = python_with_paho()
            .arg(script(script_name))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start emulator");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let e = Self { child, lines };
        let line = e
            .lines
            .recv_timeout(Duration::from_secs(20))
            .expect("emulator did not get ready");
        assert_eq!(line, "READY", "emulator said {line:?}");
        e
    }

    /// Waits for the emulator's JSON report (its last line) and its exit.
    pub fn report(mut self, within: Duration) -> Value {
        let line = self
            .lines
            .recv_timeout(within)
            .expect("emulator sent no report");
        let status = self.child.wait().expect("wait emulator");
        assert!(status.success(), "emulator exited with {status}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("emulator report {line:?}: {e}"))
    }
}

/// Runs a Sming device emulator running `app` `version` to its end: it subscribes once and
/// reports what the broker delivered (see `sming_device.py`; `advanced`: a Sming `.ota`).
pub fn sming_device(port: u16, app: &str, version: &str, advanced: bool) -> Value {
    let mut args = vec![
        "--port".to_owned(),
        port.to_string(),
        "--app".to_owned(),
        app.to_owned(),
        "--version".to_owned(),
        version.to_owned(),
    ];
    if advanced {
        args.push("--advanced".to_owned());
    }
    Emulator::start("sming_device.py", &args).report(Duration::from_secs(30))
}

/// An EnigmaIoT gateway with node `node` of network `net` (see `enigma_node.py`), subscribed;
/// it reports when the node installed an image, or after 40 s.
pub fn enigma_node(port: u16, net: &str, node: &str) -> Emulator {
    enigma_node_for(port, net, node, 40)
}

/// [`enigma_node`] reporting after `max_runtime_secs` at the latest.
pub fn enigma_node_for(port: u16, net: &str, node: &str, max_runtime_secs: u32) -> Emulator {
    let args = [
        "--port",
        &port.to_string(),
        "--net",
        net,
        "--node",
        node,
        "--max-runtime",
        &max_runtime_secs.to_string(),
    ]
    .map(str::to_owned);
    Emulator::start("enigma_node.py", &args)
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}
