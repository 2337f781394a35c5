//! A private Mosquitto broker on a free loopback port (never the machine's 1883), and the
//! Python emulators (paho-mqtt) of Sming devices and EnigmaIoT nodes that talk to it.
#![allow(dead_code, clippy::missing_panics_doc)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ota_core::checksum::ChecksumAlgorithm;
use ota_server::blob::BlobStore;
use ota_server::model::{
    DeviceProfile, OtaPackage, PackageId, PackageSource, PackageType, ProfileId,
};
use ota_server::service::{Ota, ServiceConfig, UploadMeta, now_ms};
use ota_server::store::SqlStore;
use serde_json::Value;
use std::sync::Arc;

const SETUP_HINT: &str = "run scripts/setup-test-deps.sh";

fn mosquitto_binary() -> PathBuf {
    let in_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file());
    in_path.unwrap_or_else(|| {
        panic!("the mosquitto broker is not installed (Debian package `mosquitto`): {SETUP_HINT}")
    })
}

/// A Mosquitto broker of our own, stopped on drop.
pub struct Mosquitto {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
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
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            assert_ne!(port, 1883);
            let conf = dir.path().join("mosquitto.conf");
            let mut f = std::fs::File::create(&conf).expect("config");
            writeln!(
                f,
                "listener {port} 127.0.0.1\n{auth}\
                 message_size_limit 268435455\npersistence false\nlog_dest stderr\nlog_type error\n"
            )
            .expect("write config");
            let log = std::fs::File::create(dir.path().join("mosquitto.log")).expect("log");
            let mut child = Command::new(&binary)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}; {SETUP_HINT}", binary.display()));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Self { child, port, dir };
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
        let log = std::fs::read_to_string(dir.path().join("mosquitto.log")).unwrap_or_default();
        panic!("mosquitto did not start: {log}");
    }
}

/// A script of this crate's `tests/` directory.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
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

/// A running emulator: its stdout lines arrive on a channel.
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

fn pump(stdout: ChildStdout, tx: &mpsc::Sender<String>) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { return };
        if tx.send(line).is_err() {
            return;
        }
    }
}

impl Emulator {
    /// Starts `python3 tests/<script> <args>` and waits for its `READY` line (subscribed).
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
        std::thread::spawn(move || pump(stdout, &tx));
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

/// Runs a Sming device emulator to its end: subscribe, report what the broker delivered.
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

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}

/// A deterministic pseudo-random image.
pub fn image(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// A real `Ota` service on SQLite and a local blob directory under `dir`, with one profile.
pub async fn service(dir: &std::path::Path) -> (Ota, ProfileId) {
    let store = SqlStore::connect(&format!("sqlite://{}", dir.join("ota.db").display()))
        .await
        .expect("store");
    let blobs = BlobStore::local(&dir.join("blobs")).expect("blobs");
    let ota = Ota::new(Arc::new(store), blobs, ServiceConfig::default());
    let profile = DeviceProfile {
        id: ProfileId::new_random(),
        created_time: now_ms(),
        name: "sming".into(),
        firmware_id: None,
        software_id: None,
    };
    ota.store().create_profile(&profile).await.expect("profile");
    (ota, profile.id)
}

/// Creates and uploads a firmware package.
pub async fn package(
    ota: &Ota,
    profile: ProfileId,
    version: &str,
    app: Option<&str>,
    bytes: &[u8],
) -> OtaPackage {
    let p = OtaPackage {
        id: PackageId::new_random(),
        created_time: now_ms(),
        profile_id: profile,
        package_type: PackageType::Firmware,
        title: "sming-fw".into(),
        version: version.into(),
        tag: None,
        source: PackageSource::Pending,
        sming_app_id: app.map(str::to_owned),
        additional_info: None,
    };
    ota.store()
        .create_package(&p)
        .await
        .expect("create package");
    let meta = UploadMeta {
        algorithm: ChecksumAlgorithm::Sha256,
        declared: None,
        file_name: "rom0.bin".into(),
        content_type: "application/octet-stream".into(),
    };
    let body =
        futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::copy_from_slice(bytes))]);
    ota.upload(p.id, meta, body).await.expect("upload")
}
