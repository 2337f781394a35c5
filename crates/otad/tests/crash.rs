//! Crash safety of the real `otad` (SQLite + local blob directory): 100 times, uploads and
//! assignment changes are in flight through the REST API when the process is killed with
//! SIGKILL; it is restarted on the same data directory and then
//!
//! - every package whose upload was acknowledged is listed with its data, and `/download`
//!   returns exactly the bytes sent, with the checksum that was declared;
//! - every acknowledged device / profile assignment reads back as acknowledged (an assignment
//!   whose response was lost may or may not have happened, nothing else);
//! - no package is visible with missing, short or wrong bytes.
//!
//! The kill moment is chosen by a seeded RNG (`OTA_CRASH_SEED` overrides it): after the
//! k-th response of the round, or, every few rounds, part-way through the body of a 1 MiB
//! upload written by hand over TCP so that the server is cut off mid-stream.
#![allow(clippy::missing_panics_doc, clippy::too_many_lines)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ota_core::checksum::{ChecksumAlgorithm, Hasher};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

const ROUNDS: usize = 100;
const DEVICES: usize = 3;
const BIG: usize = 1024 * 1024;
const SECRET: &str = "crash-test-secret";

fn sha256(data: &[u8]) -> String {
    Hasher::digest(ChecksumAlgorithm::Sha256, data).to_string()
}

/// A running `otad` and the means to kill it once.
struct Otad {
    child: Mutex<Child>,
    killed: AtomicBool,
    base: String,
    addr: String,
}

impl Otad {
    fn start(config: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_otad"))
            .arg(config)
            .env("RUST_LOG", "warn,ota_server::server=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn otad");
        let out = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(out).lines();
        let addr = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| {
                l.contains("otad listening")
                    .then(|| l.split("addr=").nth(1).map(|a| a.trim().to_owned()))
                    .flatten()
            })
            .expect("listening line");
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        Self {
            child: Mutex::new(child),
            killed: AtomicBool::new(false),
            base: format!("http://{addr}"),
            addr,
        }
    }

    /// SIGKILL, once; later calls do nothing.
    fn kill(&self) {
        if !self.killed.swap(true, Ordering::SeqCst) {
            let mut child = self.child.lock().expect("lock");
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }
}

/// Client side of one `otad` life.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn login(base: &str) -> Self {
        let http = reqwest::Client::new();
        let resp = http
            .post(format!("{base}/api/auth/login"))
            .json(&json!({"username": "admin", "password": "pw"}))
            .send()
            .await
            .expect("login");
        assert_eq!(resp.status(), StatusCode::OK);
        let token = resp.json::<Value>().await.expect("json")["token"]
            .as_str()
            .expect("token")
            .to_owned();
        Self {
            http,
            base: base.to_owned(),
            token,
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("X-Authorization", format!("Bearer {}", self.token))
    }

    /// `Some(body)` when a response arrived (it must be 200), `None` when the server died.
    async fn post(&self, path: &str, body: &Value) -> Option<Value> {
        let resp = self
            .req(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .ok()?;
        let status = resp.status();
        let body: Value = resp.json().await.ok()?;
        assert_eq!(status, StatusCode::OK, "POST {path}: {body}");
        Some(body)
    }

    async fn get(&self, path: &str) -> Value {
        let resp = self
            .req(reqwest::Method::GET, path)
            .send()
            .await
            .expect("server is up");
        let status = resp.status();
        let body: Value = resp.json().await.expect("json");
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    async fn download(&self, id: &str) -> (StatusCode, Vec<u8>) {
        let resp = self
            .req(
                reqwest::Method::GET,
                &format!("/api/otaPackage/{id}/download"),
            )
            .send()
            .await
            .expect("server is up");
        let status = resp.status();
        (status, resp.bytes().await.expect("body").to_vec())
    }

    async fn all_packages(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for page in 0.. {
            let body = self
                .get(&format!("/api/otaPackages?pageSize=500&page={page}"))
                .await;
            out.extend(body["data"].as_array().expect("data").iter().cloned());
            if body["hasNext"] != json!(true) {
                break;
            }
        }
        out
    }
}

fn entity(kind: &str, id: &str) -> Value {
    json!({"entityType": kind, "id": id})
}

fn id_of(v: &Value) -> Option<String> {
    v["id"].as_str().map(str::to_owned)
}

/// What a device or the profile is assigned: (firmware, software).
type Assignment = (Option<String>, Option<String>);

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Target {
    Device(usize),
    Profile,
}

/// What the test sent, and what it was told.
#[derive(Default)]
struct Ledger {
    /// Every package whose bytes were (at least partly) sent: id → (sha256, length).
    sent: HashMap<String, (String, usize)>,
    /// Packages whose upload was acknowledged, by type (`true` = firmware).
    acked: Vec<(String, bool)>,
    /// Packages already downloaded and found intact.
    verified: HashSet<String>,
    /// The assignment each target is known to have.
    known: HashMap<Target, Assignment>,
    /// Assignments sent this life whose response never arrived.
    pending: HashMap<Target, Vec<Assignment>>,
    /// Acknowledged assignments not yet read back after a restart.
    unchecked_assignments: usize,
    acked_assignments_intact: usize,
    uploads_cut: usize,
    big_uploads_cut: usize,
    partial_visible: Vec<String>,
}

/// Counts responses and kills the server at the k-th.
struct Trigger {
    otad: Arc<Otad>,
    after: usize,
    seen: AtomicUsize,
}

impl Trigger {
    fn response(&self) {
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.after {
            self.otad.kill();
        }
    }
}

enum Op {
    Upload {
        title: String,
        firmware: bool,
        data: Vec<u8>,
    },
    BigCut {
        title: String,
        data: Vec<u8>,
        cut_at: usize,
    },
    Assign {
        target: Target,
        value: Assignment,
    },
}

enum Outcome {
    /// Info created (id), upload acknowledged or not.
    Uploaded {
        id: Option<String>,
        sha: String,
        len: usize,
        firmware: bool,
        acked: bool,
    },
    Assigned {
        target: Target,
        value: Assignment,
        acked: bool,
    },
}

async fn create_info(api: &Api, profile: &str, title: &str, firmware: bool) -> Option<String> {
    let body = api
        .post(
            "/api/otaPackage",
            &json!({
                "title": title,
                "version": "1.0",
                "type": if firmware { "FIRMWARE" } else { "SOFTWARE" },
                "deviceProfileId": entity("DEVICE_PROFILE", profile),
            }),
        )
        .await?;
    id_of(&body["id"])
}

/// Streams a multipart upload by hand and stops after `cut_at` body bytes, firing the kill.
async fn cut_upload(api: &Api, addr: &str, id: &str, data: &[u8], cut_at: usize, otad: &Otad) {
    let boundary = "crashtestboundary7d1e";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let head = format!(
        "POST /api/otaPackage/{id}?checksumAlgorithm=SHA256&checksum={} HTTP/1.1\r\nHost: {addr}\r\nX-Authorization: Bearer {}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        sha256(data),
        api.token,
        body.len()
    );
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return;
    };
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut written = 0;
    for chunk in body.chunks(16 * 1024) {
        let take = chunk.len().min(cut_at.saturating_sub(written));
        if stream.write_all(&chunk[..take]).await.is_err() {
            return;
        }
        written += take;
        if written >= cut_at {
            break;
        }
    }
    let _ = stream.flush().await;
    otad.kill();
}

async fn run_op(
    api: &Api,
    otad: &Otad,
    trigger: &Trigger,
    profile: &str,
    devices: &[String],
    op: Op,
) -> Outcome {
    match op {
        Op::Upload {
            title,
            firmware,
            data,
        } => {
            let sha = sha256(&data);
            let len = data.len();
            let Some(id) = create_info(api, profile, &title, firmware).await else {
                return Outcome::Uploaded {
                    id: None,
                    sha,
                    len,
                    firmware,
                    acked: false,
                };
            };
            trigger.response();
            let form = Form::new().part(
                "file",
                Part::bytes(data)
                    .file_name(format!("{title}.bin"))
                    .mime_str("application/octet-stream")
                    .expect("mime"),
            );
            let acked = match api
                .req(
                    reqwest::Method::POST,
                    &format!("/api/otaPackage/{id}?checksumAlgorithm=SHA256&checksum={sha}"),
                )
                .multipart(form)
                .send()
                .await
            {
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.json::<Value>().await;
                    if let Ok(body) = &body {
                        assert_eq!(status, StatusCode::OK, "upload {id}: {body}");
                        trigger.response();
                    }
                    body.is_ok()
                }
                Err(_) => false,
            };
            Outcome::Uploaded {
                id: Some(id),
                sha,
                len,
                firmware,
                acked,
            }
        }
        Op::BigCut {
            title,
            data,
            cut_at,
        } => {
            let sha = sha256(&data);
            let len = data.len();
            let id = create_info(api, profile, &title, true).await;
            if let Some(id) = &id {
                cut_upload(api, &otad.addr, id, &data, cut_at, otad).await;
            }
            Outcome::Uploaded {
                id,
                sha,
                len,
                firmware: true,
                acked: false,
            }
        }
        Op::Assign { target, value } => {
            let fw = value.0.as_deref().map(|p| entity("OTA_PACKAGE", p));
            let sw = value.1.as_deref().map(|p| entity("OTA_PACKAGE", p));
            let resp = match target {
                Target::Device(i) => {
                    api.post(
                        "/api/device",
                        &json!({
                            "id": entity("DEVICE", &devices[i]),
                            "name": format!("device-{i}"),
                            "deviceProfileId": entity("DEVICE_PROFILE", profile),
                            "firmwareId": fw,
                            "softwareId": sw,
                        }),
                    )
                    .await
                }
                Target::Profile => {
                    api.post(
                        "/api/deviceProfile",
                        &json!({
                            "id": entity("DEVICE_PROFILE", profile),
                            "name": "crash-profile",
                            "firmwareId": fw,
                            "softwareId": sw,
                        }),
                    )
                    .await
                }
            };
            if resp.is_some() {
                trigger.response();
            }
            Outcome::Assigned {
                target,
                value,
                acked: resp.is_some(),
            }
        }
    }
}

async fn read_assignment(
    api: &Api,
    target: Target,
    profile: &str,
    devices: &[String],
) -> Assignment {
    let body = match target {
        Target::Device(i) => api.get(&format!("/api/device/{}", devices[i])).await,
        Target::Profile => api.get(&format!("/api/deviceProfile/{profile}")).await,
    };
    (id_of(&body["firmwareId"]), id_of(&body["softwareId"]))
}

/// After a restart: everything acknowledged is intact, nothing partial is visible.
async fn check(api: &Api, ledger: &mut Ledger, profile: &str, devices: &[String], full: bool) {
    let listed = api.all_packages().await;
    let mut with_data = HashSet::new();
    for p in &listed {
        let id = id_of(&p["id"]).expect("package id");
        if p["hasData"] != json!(true) {
            continue;
        }
        with_data.insert(id.clone());
        let Some((sha, len)) = ledger.sent.get(&id).cloned() else {
            ledger
                .partial_visible
                .push(format!("{id}: data never sent"));
            continue;
        };
        if p["checksum"] != json!(sha) || p["dataSize"] != json!(len) {
            ledger.partial_visible.push(format!(
                "{id}: listed as {} / {}",
                p["checksum"], p["dataSize"]
            ));
            continue;
        }
        if full || !ledger.verified.contains(&id) {
            let (status, bytes) = api.download(&id).await;
            if status != StatusCode::OK || bytes.len() != len || sha256(&bytes) != sha {
                ledger.partial_visible.push(format!(
                    "{id}: download {status}, {} bytes, expected {len}",
                    bytes.len()
                ));
                continue;
            }
            ledger.verified.insert(id);
        }
    }
    for (id, _) in &ledger.acked {
        assert!(
            with_data.contains(id) && ledger.verified.contains(id),
            "acknowledged package {id} lost its data after kill -9"
        );
    }
    let mut targets: Vec<Target> = (0..devices.len()).map(Target::Device).collect();
    targets.push(Target::Profile);
    for t in targets {
        let actual = read_assignment(api, t, profile, devices).await;
        let known = ledger.known.get(&t).cloned().unwrap_or_default();
        let pending = ledger.pending.remove(&t).unwrap_or_default();
        assert!(
            actual == known || pending.contains(&actual),
            "{t:?} reads {actual:?}; acknowledged {known:?}, unacknowledged {pending:?}"
        );
        ledger.known.insert(t, actual);
    }
    ledger.acked_assignments_intact += ledger.unchecked_assignments;
    ledger.unchecked_assignments = 0;
}

fn plan(rng: &mut StdRng, round: usize, ledger: &Ledger) -> Vec<Op> {
    let mut ops = Vec::new();
    if round % 5 == 4 {
        let mut data = vec![0u8; BIG];
        rng.fill_bytes(&mut data);
        let cut_at = rng.random_range(1..BIG);
        ops.push(Op::BigCut {
            title: format!("big-{round}"),
            data,
            cut_at,
        });
    }
    for i in 0..rng.random_range(1..=3) {
        let mut data = vec![0u8; rng.random_range(1024..8 * 1024)];
        rng.fill_bytes(&mut data);
        ops.push(Op::Upload {
            title: format!("pkg-{round}-{i}"),
            firmware: rng.random_bool(0.5),
            data,
        });
    }
    let firmware: Vec<&String> = ledger.acked.iter().filter(|p| p.1).map(|p| &p.0).collect();
    let software: Vec<&String> = ledger.acked.iter().filter(|p| !p.1).map(|p| &p.0).collect();
    let mut targets: Vec<Target> = (0..DEVICES).map(Target::Device).collect();
    targets.push(Target::Profile);
    for target in targets {
        if !rng.random_bool(0.6) {
            continue;
        }
        let mut pick = |list: &[&String]| {
            (!list.is_empty() && rng.random_bool(0.8))
                .then(|| list[rng.random_range(0..list.len())].clone())
        };
        let value = (pick(&firmware), pick(&software));
        ops.push(Op::Assign { target, value });
    }
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_uploads_and_assignments_loses_nothing_acknowledged() {
    let seed = std::env::var("OTA_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0DA7_C4A5_u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("otad.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase_url = \"sqlite://{}\"\nblob_url = \"file://{}\"\nadmin_username = \"admin\"\nadmin_password = \"pw\"\njwt_secret = \"{SECRET}\"\nmax_upload_bytes = {}\n[coap]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("ota.db").display(),
            dir.path().join("blobs").display(),
            2 * BIG
        ),
    )
    .expect("write config");

    let started = Instant::now();
    let mut otad = Arc::new(Otad::start(&config));
    let mut api = Api::login(&otad.base).await;
    let profile = id_of(
        &api.post("/api/deviceProfile", &json!({"name": "crash-profile"}))
            .await
            .expect("profile")["id"],
    )
    .expect("profile id");
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        let d = api
            .post(
                "/api/device",
                &json!({"name": format!("device-{i}"), "deviceProfileId": entity("DEVICE_PROFILE", &profile)}),
            )
            .await
            .expect("device");
        devices.push(id_of(&d["id"]).expect("device id"));
    }

    let mut ledger = Ledger::default();
    for round in 0..ROUNDS {
        let ops = plan(&mut rng, round, &ledger);
        let big = ops.iter().any(|o| matches!(o, Op::BigCut { .. }));
        let responses: usize = ops
            .iter()
            .map(|o| match o {
                Op::Upload { .. } => 2,
                Op::BigCut { .. } => 0,
                Op::Assign { .. } => 1,
            })
            .sum();
        let trigger = Trigger {
            otad: otad.clone(),
            // In a big round the cut in the 1 MiB body kills; otherwise the k-th response.
            after: if big {
                usize::MAX
            } else {
                rng.random_range(1..=responses)
            },
            seen: AtomicUsize::new(0),
        };
        let outcomes = futures_util::future::join_all(
            ops.into_iter()
                .map(|op| run_op(&api, &otad, &trigger, &profile, &devices, op)),
        )
        .await;
        otad.kill();

        for o in outcomes {
            match o {
                Outcome::Uploaded {
                    id,
                    sha,
                    len,
                    firmware,
                    acked,
                } => {
                    let Some(id) = id else { continue };
                    ledger.sent.insert(id.clone(), (sha, len));
                    if acked {
                        ledger.acked.push((id, firmware));
                    } else {
                        ledger.uploads_cut += 1;
                        if len == BIG {
                            ledger.big_uploads_cut += 1;
                        }
                    }
                }
                Outcome::Assigned {
                    target,
                    value,
                    acked,
                } => {
                    if acked {
                        ledger.known.insert(target, value);
                        ledger.unchecked_assignments += 1;
                    } else {
                        ledger.pending.entry(target).or_default().push(value);
                    }
                }
            }
        }

        otad = Arc::new(Otad::start(&config));
        api = Api::login(&otad.base).await;
        check(&api, &mut ledger, &profile, &devices, round + 1 == ROUNDS).await;
    }
    otad.kill();

    assert!(
        ledger.partial_visible.is_empty(),
        "partial packages visible: {:?}",
        ledger.partial_visible
    );
    assert!(
        ledger.big_uploads_cut > 0,
        "some kills hit a 1 MiB upload mid-body"
    );
    println!(
        "{ROUNDS} kills: {} acknowledged packages intact, {} acknowledged assignments intact, {} uploads cut mid-flight ({} of them 1 MiB mid-body), {} partial packages visible ({:.1} s, seed {seed:#x})",
        ledger.acked.len(),
        ledger.acked_assignments_intact,
        ledger.uploads_cut,
        ledger.big_uploads_cut,
        ledger.partial_visible.len(),
        started.elapsed().as_secs_f64()
    );
}
