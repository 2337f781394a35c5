//! `ota upload | assign | status` against a real `otad` (SQLite, local blobs) on a free port.
#![allow(clippy::too_many_lines)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::{Value, json};
use sha2::Digest as _;

/// `otad`, built into the same target directory and profile as `ota`.
fn otad_binary() -> PathBuf {
    let ota = Path::new(env!("CARGO_BIN_EXE_ota"));
    let profile_dir = ota.parent().expect("target profile directory");
    let target_dir = profile_dir.parent().expect("target directory");
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--quiet", "-p", "otad", "--bin", "otad"])
        .arg("--target-dir")
        .arg(target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("running cargo build");
    assert!(status.success(), "building otad failed: {status}");
    ota.with_file_name(format!("otad{}", std::env::consts::EXE_SUFFIX))
}

/// A running `otad`; killed on drop.
struct Otad {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Otad {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(otad_binary())
            .current_dir(dir.path())
            .env("OTAD_LISTEN", "127.0.0.1:0")
            .env("OTAD_COAP_LISTEN", "127.0.0.1:0")
            .env("OTAD_MQTT_LISTEN", "127.0.0.1:0")
            .env(
                "OTAD_DATABASE_URL",
                format!("sqlite://{}", dir.path().join("ota.db").display()),
            )
            .env(
                "OTAD_BLOB_URL",
                format!("file://{}", dir.path().join("blobs").display()),
            )
            .env("OTAD_ADMIN_USERNAME", "admin")
            .env("OTAD_ADMIN_PASSWORD", "pw")
            .env("RUST_LOG", "warn,ota_server::server=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn otad");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let addr = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| {
                l.contains("otad listening")
                    .then(|| l.split("addr=").nth(1).map(|a| a.trim().to_owned()))
                    .flatten()
            })
            .expect("listening line");
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        Self {
            child,
            url: format!("http://{addr}"),
            dir,
        }
    }

    /// `ota ARGS` with `OTA_URL`/`OTA_USER`/`OTA_PASSWORD` set for this server.
    fn ota(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_ota"))
            .current_dir(self.dir.path())
            .env("OTA_URL", &self.url)
            .env("OTA_USER", "admin")
            .env("OTA_PASSWORD", "pw")
            .args(args)
            .output()
            .expect("run ota")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.ota(args);
        assert!(
            out.status.success(),
            "ota {args:?} exited {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 stdout")
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("JSON on stdout")
    }

    /// Exit code and stderr of a failing `ota ARGS`.
    fn fails(&self, args: &[&str]) -> (Option<i32>, String) {
        let out = self.ota(args);
        assert!(!out.status.success(), "ota {args:?} should fail");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Otad {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Direct REST access for setting up and checking what the CLI did.
struct Rest {
    http: reqwest::blocking::Client,
    url: String,
    token: String,
}

impl Rest {
    fn login(url: &str) -> Self {
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

    fn send(&self, req: reqwest::blocking::RequestBuilder) -> reqwest::blocking::Response {
        let resp = req
            .header("X-Authorization", format!("Bearer {}", self.token))
            .send()
            .expect("send");
        assert!(resp.status().is_success(), "{}", resp.status());
        resp
    }

    fn post(&self, path: &str, body: &Value) -> Value {
        self.send(self.http.post(format!("{}{path}", self.url)).json(body))
            .json()
            .expect("json")
    }

    fn get(&self, path: &str) -> Value {
        self.send(self.http.get(format!("{}{path}", self.url)))
            .json()
            .expect("json")
    }

    fn download(&self, id: &str) -> Vec<u8> {
        self.send(
            self.http
                .get(format!("{}/api/otaPackage/{id}/download", self.url)),
        )
        .bytes()
        .expect("bytes")
        .to_vec()
    }
}

#[test]
fn upload_assign_status_against_otad() {
    let server = Otad::start();
    let rest = Rest::login(&server.url);
    let profile = rest.post("/api/deviceProfile", &json!({"name": "thermostat"}))["id"]["id"]
        .as_str()
        .expect("profile id")
        .to_owned();
    let device = rest.post(
        "/api/device",
        &json!({"name": "kitchen", "deviceProfileId": {"entityType": "DEVICE_PROFILE", "id": profile}}),
    )["id"]["id"]
        .as_str()
        .expect("device id")
        .to_owned();

    let firmware: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(server.dir.path().join("fw.bin"), &firmware).expect("write");
    std::fs::write(server.dir.path().join("app.bin"), b"app v2").expect("write");

    // Text mode prints the package id alone, for scripts.
    let fw_id = server.ok(&[
        "upload",
        "fw.bin",
        "--profile",
        &profile,
        "--title",
        "thermo-fw",
        "--version",
        "1.2.0",
    ]);
    let fw_id = fw_id.trim_end().to_owned();
    assert_eq!(fw_id.len(), 36, "a UUID: {fw_id:?}");
    assert_eq!(rest.download(&fw_id), firmware);
    let info = rest.get(&format!("/api/otaPackage/info/{fw_id}"));
    assert_eq!(
        info["checksum"],
        json!(hex::encode(sha2::Sha256::digest(&firmware)))
    );
    assert_eq!(info["checksumAlgorithm"], "SHA256");

    let sw = server.json(&[
        "upload",
        "app.bin",
        "--profile",
        &profile,
        "--title",
        "thermo-app",
        "--version",
        "2",
        "--type",
        "software",
        "--tag",
        "stable",
    ]);
    let sw_id = sw["id"].as_str().expect("id").to_owned();
    assert_eq!(sw["type"], "SOFTWARE");
    assert_eq!(sw["dataSize"], 6);
    assert_eq!(
        sw["checksum"],
        json!(hex::encode(sha2::Sha256::digest(b"app v2")))
    );

    // Device assignment, then profile default; --url on the command line wins over OTA_URL.
    let out = server.ok(&["assign", "--device", &device, "--firmware", &fw_id]);
    assert!(out.contains(&format!("firmware {fw_id}")), "{out}");
    assert_eq!(
        rest.get(&format!("/api/device/{device}"))["firmwareId"]["id"],
        json!(fw_id)
    );
    let p = server.json(&[
        "assign",
        "--url",
        &server.url,
        "--profile",
        &profile,
        "--software",
        &sw_id,
    ]);
    assert_eq!(p["softwareId"]["id"], json!(sw_id));
    assert_eq!(
        rest.get(&format!("/api/deviceProfile/{profile}"))["softwareId"]["id"],
        json!(sw_id)
    );

    // Fleet status: the device is offered both packages.
    let states = server.json(&["status"]);
    let states = states.as_array().expect("array");
    let fw_state = states
        .iter()
        .find(|s| s["type"] == "FIRMWARE")
        .expect("firmware state");
    assert_eq!(fw_state["deviceName"], "kitchen");
    assert_eq!(fw_state["targetTitle"], "thermo-fw");
    assert_eq!(fw_state["targetVersion"], "1.2.0");
    let table = server.ok(&["status"]);
    let mut lines = table.lines();
    let header = lines.next().expect("header");
    assert!(
        header.starts_with("DEVICE") && header.contains("STATE"),
        "{table}"
    );
    let fw_row = lines
        .find(|l| l.contains("FIRMWARE"))
        .unwrap_or_else(|| panic!("no firmware row in\n{table}"));
    assert!(
        fw_row.starts_with("kitchen") && fw_row.contains("thermo-fw 1.2.0"),
        "{table}"
    );

    // Clearing a slot.
    server.ok(&["assign", "--device", &device, "--firmware", "none"]);
    assert_eq!(
        rest.get(&format!("/api/device/{device}"))["firmwareId"],
        Value::Null
    );

    // Refusals exit 9 with the server's message.
    let (code, err) = server.fails(&[
        "upload",
        "fw.bin",
        "--profile",
        &profile,
        "--title",
        "thermo-fw",
        "--version",
        "1.2.0",
    ]);
    assert_eq!(code, Some(9));
    assert!(err.contains("already exists"), "{err}");
    let (code, err) = server.fails(&["assign", "--device", &device, "--firmware", &sw_id]);
    assert_eq!(code, Some(9));
    assert!(err.contains("cannot be assigned as FIRMWARE"), "{err}");
    let (code, err) = server.fails(&["status", "--password", "wrong"]);
    assert_eq!(code, Some(9));
    assert!(err.contains("Invalid username or password"), "{err}");
    let (code, err) = server.fails(&["status", "--url", "http://127.0.0.1:1"]);
    assert_eq!(code, Some(9));
    assert!(err.contains("cannot reach http://127.0.0.1:1"), "{err}");
    let (code, _) = server.fails(&["assign", "--device", &device]);
    assert_eq!(code, Some(2), "a package option is required");
}
