//! A private Mosquitto broker on a free loopback port (never the machine's 1883), and the
//! paho-mqtt emulators of a Sming device and an EnigmaIoT gateway + node that `ota-mqtt`'s
//! tests use (`crates/ota-mqtt/tests/*.py`), run as separate processes.

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

/// A Mosquitto broker of our own (anonymous clients, no persistence), stopped on drop.
pub struct Mosquitto {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

fn spawn(binary: &Path, dir: &Path, port: u16) -> Option<Child> {
    let conf = dir.join("mosquitto.conf");
    let mut f = std::fs::File::create(&conf).expect("config");
    writeln!(
        f,
        "listener {port} 127.0.0.1\nallow_anonymous true\n\
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
    /// Starts a broker on a free port and waits until it accepts connections.
    pub fn start() -> Self {
        let binary = mosquitto_binary();
        let dir = tempfile::tempdir().expect("tempdir");
        for _ in 0..5 {
            let port = free_port();
            assert_ne!(port, 1883);
            // None: the port was taken meanwhile; try another one.
            if let Some(child) = spawn(&binary, dir.path(), port) {
                return Self { child, port, dir };
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
        self.child = spawn(&mosquitto_binary(), self.dir.path(), self.port).unwrap_or_else(|| {
            let log =
                std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default();
            panic!("mosquitto did not restart on port {}: {log}", self.port)
        });
    }
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ota-mqtt/tests")
        .join(name)
}

fn python_with_paho() -> Command {
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

/// A Sming device running `app` `version` that subscribes once and reports what the broker
/// delivered (see `sming_device.py`).
pub fn sming_device(port: u16, app: &str, version: &str) -> Value {
    let args = [
        "--port",
        &port.to_string(),
        "--app",
        app,
        "--version",
        version,
    ]
    .map(str::to_owned);
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
