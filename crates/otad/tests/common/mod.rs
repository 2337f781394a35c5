//! A real `otad` process on free loopback ports, and REST set-up through a real HTTP client.
#![allow(dead_code, clippy::missing_panics_doc)]

#[path = "../../../ota-mqtt/tests/broker_support/mosquitto.rs"]
pub mod mosquitto;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

/// Every transport on a free port.
pub const FREE_PORTS: &str = "[coap]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nlisten = \"127.0.0.1:0\"\n";

/// A running `otad`, killed on drop.
pub struct Otad {
    child: Child,
    /// Data directory (SQLite file, blobs, config).
    pub dir: tempfile::TempDir,
    /// REST server (and HTTP device API unless `http` is set).
    pub rest: SocketAddr,
    /// The HTTP device API's own port, if it has one.
    pub http: Option<SocketAddr>,
    /// CoAP, if served.
    pub coap: Option<SocketAddr>,
    /// Plain MQTT, if served.
    pub mqtt: Option<SocketAddr>,
    /// MQTT over TLS, if served.
    pub mqtt_tls: Option<SocketAddr>,
    /// Log lines up to the ready line.
    pub log: Vec<String>,
    /// Log lines after the ready line, as they come.
    lines: mpsc::Receiver<String>,
}

fn addr_of(line: &str) -> SocketAddr {
    line.split("addr=")
        .nth(1)
        .map(str::trim)
        .expect("addr= field")
        .parse()
        .expect("socket address")
}

impl Otad {
    /// Starts `otad` on a new data directory (SQLite, local blobs, admin `admin` / `pw`) with
    /// `tables` (TOML tables) appended to the configuration file, and waits until it
    /// reports its listeners.
    pub fn start(tables: &str) -> Self {
        Self::start_on(None, tables)
    }

    /// [`Self::start`] on `(database_url, blob_url)` instead of SQLite + local blobs.
    pub fn start_on(storage: Option<(&str, &str)>, tables: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("otad.toml");
        let (db, blobs) = storage.map_or_else(
            || {
                (
                    format!("sqlite://{}", dir.path().join("ota.db").display()),
                    format!("file://{}", dir.path().join("blobs").display()),
                )
            },
            |(d, b)| (d.to_owned(), b.to_owned()),
        );
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ndatabase_url = \"{db}\"\nblob_url = \"{blobs}\"\nadmin_username = \"admin\"\nadmin_password = \"pw\"\n{tables}"
            ),
        )
        .expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_otad"))
            .arg(&config)
            .current_dir(dir.path())
            .env("RUST_LOG", "info,otad::broker=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn otad");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                // Keep draining after the ready line so the server never blocks on a pipe.
                let _ = tx.send(line);
            }
        });
        let mut s = Self {
            child,
            dir,
            rest: SocketAddr::from(([0, 0, 0, 0], 0)),
            http: None,
            coap: None,
            mqtt: None,
            mqtt_tls: None,
            log: Vec::new(),
            lines: rx,
        };
        loop {
            let line = s
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("otad did not report its listeners ({e}): {:?}", s.log));
            s.log.push(line.clone());
            if line.contains("HTTP device API listening") {
                s.http = Some(addr_of(&line));
            } else if line.contains("CoAP listening") {
                s.coap = Some(addr_of(&line));
            } else if line.contains("MQTT listening") {
                s.mqtt = Some(addr_of(&line));
            } else if line.contains("MQTT TLS listening") {
                s.mqtt_tls = Some(addr_of(&line));
            } else if line.contains("otad listening") {
                s.rest = addr_of(&line);
                break;
            }
        }
        s
    }

    /// The next log line containing every one of `needles`, skipping the others; fails after
    /// `within`.
    pub fn wait_log(&mut self, needles: &[&str], within: Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|e| {
                panic!("otad logged no line with {needles:?} within {within:?} ({e})")
            });
            self.log.push(line.clone());
            if needles.iter().all(|n| line.contains(n)) {
                return line;
            }
        }
    }

    /// A line already logged (before the ready line included) containing every one of
    /// `needles`, or else the next one; fails after `within`.
    pub fn logged(&mut self, needles: &[&str], within: Duration) -> String {
        if let Some(line) = self
            .log
            .iter()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return line.clone();
        }
        self.wait_log(needles, within)
    }

    /// `http://` base URL of the REST server.
    pub fn url(&self) -> String {
        format!("http://{}", self.rest)
    }
}

impl Drop for Otad {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `{"entityType": kind, "id": id}`.
pub fn entity(kind: &str, id: &str) -> Value {
    json!({"entityType": kind, "id": id})
}

/// The REST API as the admin.
pub struct Rest {
    http: reqwest::blocking::Client,
    url: String,
    token: String,
}

impl Rest {
    /// Logs in as `admin` / `pw`.
    pub fn login(url: &str) -> Self {
        let http = reqwest::blocking::Client::new();
        let body: Value = http
            .post(format!("{url}/api/auth/login"))
            .json(&json!({"username": "admin", "password": "pw"}))
            .send()
            .expect("login")
            .json()
            .expect("json");
        Self {
            http,
            url: url.to_owned(),
            token: body["token"].as_str().expect("token").to_owned(),
        }
    }

    fn send(&self, req: reqwest::blocking::RequestBuilder) -> Value {
        let resp = req
            .header("X-Authorization", format!("Bearer {}", self.token))
            .send()
            .expect("send");
        let status = resp.status();
        let body: Value = resp.json().expect("json");
        assert!(status.is_success(), "{status}: {body}");
        body
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Value {
        self.send(self.http.post(format!("{}{path}", self.url)).json(body))
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Value {
        self.send(self.http.get(format!("{}{path}", self.url)))
    }

    /// A profile whose default firmware is `title` `version` with `image` (SHA-256).
    pub fn profile_with_firmware(
        &self,
        name: &str,
        title: &str,
        version: &str,
        image: &[u8],
    ) -> String {
        let profile = self.post("/api/deviceProfile", &json!({"name": name}))["id"]["id"]
            .as_str()
            .expect("profile id")
            .to_owned();
        let package = self.post(
            "/api/otaPackage",
            &json!({"title": title, "version": version, "type": "FIRMWARE",
                    "deviceProfileId": entity("DEVICE_PROFILE", &profile)}),
        )["id"]["id"]
            .as_str()
            .expect("package id")
            .to_owned();
        let form = reqwest::blocking::multipart::Form::new().part(
            "file",
            reqwest::blocking::multipart::Part::bytes(image.to_vec())
                .file_name(format!("{title}.bin"))
                .mime_str("application/octet-stream")
                .expect("mime"),
        );
        self.send(
            self.http
                .post(format!(
                    "{}/api/otaPackage/{package}?checksumAlgorithm=SHA256",
                    self.url
                ))
                .multipart(form),
        );
        self.post(
            "/api/deviceProfile",
            &json!({"id": entity("DEVICE_PROFILE", &profile), "name": name,
                    "firmwareId": entity("OTA_PACKAGE", &package)}),
        );
        profile
    }

    /// A new device profile without packages; returns its id.
    pub fn profile(&self, name: &str) -> String {
        self.post("/api/deviceProfile", &json!({"name": name}))["id"]["id"]
            .as_str()
            .expect("profile id")
            .to_owned()
    }

    /// Sets (or clears) a profile's default firmware.
    pub fn set_profile_firmware(&self, profile: &str, name: &str, package: Option<&str>) {
        self.post(
            "/api/deviceProfile",
            &json!({"id": entity("DEVICE_PROFILE", profile), "name": name,
                    "firmwareId": package.map(|p| entity("OTA_PACKAGE", p))}),
        );
    }

    /// A firmware package of `profile` with `image` uploaded (SHA-256), announced to Sming
    /// devices of `sming_app_id` if given; returns its id.
    pub fn package(
        &self,
        profile: &str,
        title: &str,
        version: &str,
        sming_app_id: Option<&str>,
        image: &[u8],
    ) -> String {
        let package = self.post(
            "/api/otaPackage",
            &json!({"title": title, "version": version, "type": "FIRMWARE",
                    "deviceProfileId": entity("DEVICE_PROFILE", profile),
                    "smingAppId": sming_app_id}),
        )["id"]["id"]
            .as_str()
            .expect("package id")
            .to_owned();
        let form = reqwest::blocking::multipart::Form::new().part(
            "file",
            reqwest::blocking::multipart::Part::bytes(image.to_vec())
                .file_name(format!("{title}.bin"))
                .mime_str("application/octet-stream")
                .expect("mime"),
        );
        self.send(
            self.http
                .post(format!(
                    "{}/api/otaPackage/{package}?checksumAlgorithm=SHA256",
                    self.url
                ))
                .multipart(form),
        );
        package
    }

    /// The device's firmware update state once its `state` reads `want`.
    pub fn wait_for_state(&self, device: &str, want: &str, within: Duration) -> Value {
        let deadline = std::time::Instant::now() + within;
        loop {
            let states = self.get(&format!("/api/device/{device}/otaState"));
            let fw = states
                .as_array()
                .and_then(|a| a.iter().find(|s| s["type"] == "FIRMWARE"))
                .cloned()
                .expect("firmware state");
            if fw["state"] == want {
                return fw;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "state never reached {want}: {fw}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A device on `profile` with access token (credentials id) `token`; returns its id.
    pub fn device(&self, profile: &str, name: &str, token: &str) -> String {
        let id = self.post(
            "/api/device",
            &json!({"name": name, "deviceProfileId": entity("DEVICE_PROFILE", profile)}),
        )["id"]["id"]
            .as_str()
            .expect("device id")
            .to_owned();
        self.post(
            "/api/device/credentials",
            &json!({"deviceId": entity("DEVICE", &id), "credentialsType": "ACCESS_TOKEN",
                    "credentialsId": token}),
        );
        id
    }
}

/// Deterministic incompressible bytes.
pub fn image(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// A client tool from the PATH, or a failure naming the package that provides it.
pub fn tool(name: &str, package: &str) -> Command {
    let found = Command::new(name)
        .arg("--help")
        .output()
        .is_ok_and(|o| !o.stdout.is_empty() || !o.stderr.is_empty());
    assert!(
        found,
        "{name} not found: run scripts/setup-test-deps.sh (Debian package {package})"
    );
    Command::new(name)
}
