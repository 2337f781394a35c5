//! `upload`, `assign`, `status`: the server's REST API (ThingsBoard's OTA subset).
//!
//! Each command logs in (`POST /api/auth/login`) and sends the JWT as
//! `X-Authorization: Bearer …`. A refused request exits with class 9 and the server's
//! `message` and `errorCode`.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use clap::{ArgGroup, ValueEnum};
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::exit::{Class, Failure, OrFail, Result};

/// Where the server is and who logs in.
#[derive(Debug, clap::Args)]
pub struct ServerOpts {
    /// Base URL of the OTA server's REST API.
    #[arg(long, env = "OTA_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Admin user name.
    #[arg(long, env = "OTA_USER")]
    user: String,
    /// Admin password.
    #[arg(long, env = "OTA_PASSWORD", hide_env_values = true)]
    password: String,
}

/// Package types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// A firmware package (`fw_*` attributes).
    Firmware,
    /// A software package (`sw_*` attributes).
    Software,
}

impl Kind {
    fn tb_name(self) -> &'static str {
        match self {
            Self::Firmware => "FIRMWARE",
            Self::Software => "SOFTWARE",
        }
    }
}

/// Options of `upload`.
#[derive(Debug, clap::Args)]
pub struct UploadArgs {
    /// The package file (sent as is; its SHA-256 is declared and checked by the server).
    file: PathBuf,
    /// Device profile id the package belongs to.
    #[arg(long)]
    profile: String,
    /// Package title (for example the firmware name).
    #[arg(long)]
    title: String,
    /// Package version (title + version are unique per profile and type).
    #[arg(long = "version", value_name = "VERSION")]
    package_version: String,
    /// Firmware or software.
    #[arg(long = "type", value_enum, default_value_t = Kind::Firmware)]
    kind: Kind,
    /// Optional tag.
    #[arg(long)]
    tag: Option<String>,
    #[command(flatten)]
    server: ServerOpts,
}

/// Options of `assign`.
#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("target").required(true).args(["device", "profile"])))]
#[command(group(ArgGroup::new("package").required(true).multiple(true).args(["firmware", "software"])))]
pub struct AssignArgs {
    /// Assign to this device (overrides its profile's packages).
    #[arg(long)]
    device: Option<String>,
    /// Assign as the default of this device profile.
    #[arg(long)]
    profile: Option<String>,
    /// Firmware package id, or `none` to clear.
    #[arg(long, value_name = "PKG")]
    firmware: Option<String>,
    /// Software package id, or `none` to clear.
    #[arg(long, value_name = "PKG")]
    software: Option<String>,
    #[command(flatten)]
    server: ServerOpts,
}

/// Options of `status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    server: ServerOpts,
}

/// A command's result: JSON for `--json`, and its text form.
#[derive(Debug)]
pub struct Report {
    /// Printed with `--json`.
    pub json: Value,
    /// Printed otherwise.
    pub text: String,
}

/// A logged-in REST client.
struct Api {
    http: Client,
    base: String,
    token: String,
}

impl Api {
    fn login(opts: &ServerOpts) -> Result<Self> {
        let base = opts.url.trim_end_matches('/').to_owned();
        let http = Client::builder()
            .build()
            .or_fail(Class::Internal, || "creating the HTTP client".into())?;
        let mut api = Self {
            http,
            base,
            token: String::new(),
        };
        let req = api
            .http
            .post(format!("{}/api/auth/login", api.base))
            .json(&json!({"username": opts.user, "password": opts.password}));
        let body = api.send(req, &format!("login as {:?}", opts.user))?;
        let token = body["token"].as_str().ok_or_else(|| {
            Failure::new(
                Class::Server,
                anyhow::anyhow!("login response has no token: {body}"),
            )
        })?;
        token.clone_into(&mut api.token);
        Ok(api)
    }

    fn req(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("X-Authorization", format!("Bearer {}", self.token))
    }

    /// Sends and returns the JSON body of a 2xx response; anything else is a class-9 failure
    /// naming `what` and the server's message.
    fn send(&self, req: RequestBuilder, what: &str) -> Result<Value> {
        let resp = req.send().or_fail(Class::Server, || {
            format!("{what}: cannot reach {}", self.base)
        })?;
        let status = resp.status();
        let text = resp
            .text()
            .or_fail(Class::Server, || format!("{what}: reading the response"))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(body);
        }
        let message = body["message"].as_str().map_or_else(
            || body.to_string(),
            |m| match body["errorCode"].as_u64() {
                Some(code) => format!("{m} (errorCode {code})"),
                None => m.to_owned(),
            },
        );
        Err(Failure::new(
            Class::Server,
            anyhow::anyhow!("{what}: server answered {status}: {message}"),
        ))
    }

    fn get(&self, path: &str) -> Result<Value> {
        self.send(self.req(reqwest::Method::GET, path), &format!("GET {path}"))
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(
            self.req(reqwest::Method::POST, path).json(body),
            &format!("POST {path}"),
        )
    }
}

fn entity(kind: &str, id: &str) -> Value {
    json!({"entityType": kind, "id": id})
}

fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut file =
        std::fs::File::open(path).or_fail(Class::Io, || format!("opening {}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .or_fail(Class::Io, || format!("reading {}", path.display()))?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            break;
        };
        hasher.update(chunk);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// `ota upload`: creates the package info, uploads the file with its SHA-256, prints the id.
pub fn upload(args: &UploadArgs) -> Result<Report> {
    let (checksum, size) = sha256_file(&args.file)?;
    let file_name = args.file.file_name().map_or_else(
        || "package.bin".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    let api = Api::login(&args.server)?;
    let info = api.post(
        "/api/otaPackage",
        &json!({
            "title": args.title,
            "version": args.package_version,
            "tag": args.tag,
            "type": args.kind.tb_name(),
            "deviceProfileId": entity("DEVICE_PROFILE", &args.profile),
        }),
    )?;
    let id = info["id"]["id"]
        .as_str()
        .ok_or_else(|| {
            Failure::new(
                Class::Server,
                anyhow::anyhow!("package info has no id: {info}"),
            )
        })?
        .to_owned();
    let part = reqwest::blocking::multipart::Part::file(&args.file)
        .or_fail(Class::Io, || format!("opening {}", args.file.display()))?
        .file_name(file_name)
        .mime_str("application/octet-stream")
        .or_fail(Class::Internal, || "content type".into())?;
    let form = reqwest::blocking::multipart::Form::new().part("file", part);
    let path = format!("/api/otaPackage/{id}?checksumAlgorithm=SHA256&checksum={checksum}");
    let saved = api.send(
        api.req(reqwest::Method::POST, &path).multipart(form),
        &format!("uploading {} to package {id}", args.file.display()),
    )?;
    Ok(Report {
        json: json!({
            "id": id,
            "title": saved["title"],
            "version": saved["version"],
            "type": saved["type"],
            "checksumAlgorithm": saved["checksumAlgorithm"],
            "checksum": saved["checksum"],
            "dataSize": saved["dataSize"],
            "localSize": size,
        }),
        text: format!("{id}\n"),
    })
}

/// `none` clears a slot; anything else is a package id.
fn slot(arg: Option<&String>, current: &Value) -> Value {
    match arg.map(String::as_str) {
        None => current.clone(),
        Some("none") => Value::Null,
        Some(id) => entity("OTA_PACKAGE", id),
    }
}

/// `ota assign`: sets a device's or a profile's firmware and/or software package.
pub fn assign(args: &AssignArgs) -> Result<Report> {
    let api = Api::login(&args.server)?;
    let saved = if let Some(device) = &args.device {
        let mut d = api.get(&format!("/api/device/{device}"))?;
        d["firmwareId"] = slot(args.firmware.as_ref(), &d["firmwareId"]);
        d["softwareId"] = slot(args.software.as_ref(), &d["softwareId"]);
        api.post("/api/device", &d)?
    } else {
        let profile = args.profile.as_deref().unwrap_or_default();
        let mut p = api.get(&format!("/api/deviceProfile/{profile}"))?;
        p["firmwareId"] = slot(args.firmware.as_ref(), &p["firmwareId"]);
        p["softwareId"] = slot(args.software.as_ref(), &p["softwareId"]);
        api.post("/api/deviceProfile", &p)?
    };
    let show = |v: &Value| v["id"].as_str().unwrap_or("none").to_owned();
    let kind = if args.device.is_some() {
        "device"
    } else {
        "profile"
    };
    let text = format!(
        "{kind} {} ({}): firmware {}, software {}\n",
        saved["id"]["id"].as_str().unwrap_or_default(),
        saved["name"].as_str().unwrap_or_default(),
        show(&saved["firmwareId"]),
        show(&saved["softwareId"]),
    );
    Ok(Report { json: saved, text })
}

fn title_version(state: &Value, prefix: &str) -> String {
    match (
        state[format!("{prefix}Title")].as_str(),
        state[format!("{prefix}Version")].as_str(),
    ) {
        (Some(t), Some(v)) => format!("{t} {v}"),
        (Some(t), None) => t.to_owned(),
        _ => "-".to_owned(),
    }
}

/// `ota status`: the update state of every device and package type, as a table.
pub fn status(args: &StatusArgs) -> Result<Report> {
    let api = Api::login(&args.server)?;
    let states = api.get("/api/otaStates")?;
    let mut states = match states {
        Value::Array(a) => a,
        other => {
            return Err(Failure::new(
                Class::Server,
                anyhow::anyhow!("/api/otaStates is not a list: {other}"),
            ));
        }
    };
    let mut names = std::collections::HashMap::new();
    for s in &mut states {
        let id = s["deviceId"].as_str().unwrap_or_default().to_owned();
        if !names.contains_key(&id) {
            let name = api
                .get(&format!("/api/device/{id}"))?
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            names.insert(id.clone(), name);
        }
        s["deviceName"] = json!(names.get(&id));
    }
    states.sort_by(|a, b| {
        (a["deviceName"].as_str(), a["type"].as_str())
            .cmp(&(b["deviceName"].as_str(), b["type"].as_str()))
    });
    let header = [
        "DEVICE", "TYPE", "CURRENT", "TARGET", "STATE", "PROGRESS", "ERROR",
    ];
    let rows: Vec<[String; 7]> = states
        .iter()
        .map(|s| {
            [
                s["deviceName"].as_str().unwrap_or_default().to_owned(),
                s["type"].as_str().unwrap_or_default().to_owned(),
                title_version(s, "current"),
                title_version(s, "target"),
                s["state"].as_str().unwrap_or("-").to_owned(),
                s["progress"].as_u64().unwrap_or(0).to_string(),
                s["error"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in std::iter::once(header.map(str::to_owned)).chain(rows) {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(widths) {
            let _ = write!(line, "{cell:<w$}  ");
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    Ok(Report {
        json: Value::Array(states),
        text,
    })
}
