//! `ota-demo-server`: the OTA service on its embedded default (an SQLite file and a local blob
//! directory in `--data-dir`) serving ThingsBoard's HTTP device API (plus the REST
//! management API) and its CoAP device API on loopback, with demo firmware uploaded and
//! assigned.
//!
//! On a new data directory it creates the profile `demo` whose default firmware is
//! `ota-demo` 1.1.0 (self-test passes), three devices — `demo-http-1` and `demo-coap-1` on the
//! profile default, `demo-fail-1` assigned `ota-demo` 1.2.0 whose self-test fails — and
//! prints one machine-readable line once both listeners are bound:
//!
//! ```text
//! READY http=127.0.0.1:40123 coap=127.0.0.1:51234 token=demo-http-1 tokens=demo-http-1,demo-coap-1,demo-fail-1 data=/tmp/…
//! ```
//!
//! Then a line per change of a device's recorded update state
//! (`STATE token=demo-http-1 fw_state=UPDATED current=1.1.0 target=1.1.0`), until SIGINT or
//! SIGTERM.
//!
//! The firmware is a plain image checked by SHA-256 (ThingsBoard's `fw_checksum`): the HTTP
//! and CoAP device clients drive `ota-core`'s plain reader.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use ota_core::checksum::ChecksumAlgorithm;
use ota_demo_device::image;
use ota_server::config::Config;
use ota_server::model::{
    Device, DeviceId, DeviceProfile, OtaPackage, PackageId, PackageSource, PackageType, ProfileId,
};
use ota_server::service::{Ota, UploadMeta, now_ms};

/// Name of the demo device profile.
const PROFILE: &str = "demo";
/// Title of the demo firmware.
const TITLE: &str = "ota-demo";
/// The version every device on the profile is offered (its self-test passes).
const GOOD_VERSION: &str = "1.1.0";
/// The version `demo-fail-1` is offered (its self-test fails).
const BAD_VERSION: &str = "1.2.0";
/// Devices on the profile default.
const TOKENS: [&str; 2] = ["demo-http-1", "demo-coap-1"];
/// The device assigned the failing image.
const FAIL_TOKEN: &str = "demo-fail-1";
/// Size of the demo images.
const IMAGE_LEN: usize = 200_000;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "The OTA demo server (HTTP + CoAP device APIs on loopback)"
)]
struct Args {
    /// Where the SQLite file and blob directory live (a new temporary directory if unset).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// HTTP listen address (device API and REST).
    #[arg(long, default_value = "127.0.0.1:0")]
    http: SocketAddr,
    /// CoAP (UDP) listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    coap: SocketAddr,
    /// Password of the REST admin user `tenant@thingsboard.org`.
    #[arg(long, default_value = "demo")]
    admin_password: String,
}

async fn create_package(
    ota: &Ota,
    profile: ProfileId,
    version: &str,
    self_test_passes: bool,
) -> anyhow::Result<OtaPackage> {
    let p = OtaPackage {
        id: PackageId::new_random(),
        created_time: now_ms(),
        profile_id: profile,
        package_type: PackageType::Firmware,
        title: TITLE.into(),
        version: version.into(),
        tag: None,
        source: PackageSource::Pending,
        sming_app_id: None,
        additional_info: None,
    };
    ota.store().create_package(&p).await?;
    let meta = UploadMeta {
        algorithm: ChecksumAlgorithm::Sha256,
        declared: None,
        file_name: format!("{TITLE}-{version}.bin"),
        content_type: "application/octet-stream".into(),
    };
    let bytes = Bytes::from(image::build(version, self_test_passes, IMAGE_LEN));
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes)]);
    Ok(ota.upload(p.id, meta, body).await?)
}

fn device(profile: ProfileId, token: &str, firmware: Option<PackageId>) -> Device {
    Device {
        id: DeviceId::new_random(),
        created_time: now_ms(),
        name: token.into(),
        profile_id: profile,
        access_token: token.into(),
        firmware_id: firmware,
        software_id: None,
        enigma: None,
    }
}

/// Creates the profile, firmware and devices unless the profile exists already.
async fn provision(ota: &Ota) -> anyhow::Result<()> {
    if ota
        .store()
        .profiles()
        .await?
        .iter()
        .any(|p| p.name == PROFILE)
    {
        println!("setup: profile {PROFILE:?} exists, reusing its devices and firmware");
        return Ok(());
    }
    let mut profile = DeviceProfile {
        id: ProfileId::new_random(),
        created_time: now_ms(),
        name: PROFILE.into(),
        firmware_id: None,
        software_id: None,
    };
    ota.store().create_profile(&profile).await?;
    let good = create_package(ota, profile.id, GOOD_VERSION, true).await?;
    let bad = create_package(ota, profile.id, BAD_VERSION, false).await?;
    profile.firmware_id = Some(good.id);
    ota.set_profile_packages(&profile).await?;
    for token in TOKENS {
        ota.create_device(&device(profile.id, token, None)).await?;
    }
    ota.create_device(&device(profile.id, FAIL_TOKEN, Some(bad.id)))
        .await?;
    for p in [&good, &bad] {
        if let Some(d) = p.data() {
            println!(
                "setup: uploaded {} {} ({} bytes, {} {})",
                p.title, p.version, d.size, d.checksum_algorithm, d.checksum
            );
        }
    }
    println!(
        "setup: profile {PROFILE:?} → {TITLE} {GOOD_VERSION}; devices {}, {FAIL_TOKEN} → {TITLE} {BAD_VERSION} (self-test fails)",
        TOKENS.join(", ")
    );
    Ok(())
}

/// Prints a `STATE` line whenever a device's recorded update state changes; writes the
/// coalesced progress on the way.
async fn watch_states(ota: Arc<Ota>) {
    let mut seen: HashMap<DeviceId, String> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        if let Err(e) = ota.flush_progress().await {
            eprintln!("writing progress failed: {e}");
        }
        let (Ok(states), Ok(devices)) = (
            ota.store().update_states().await,
            ota.store().devices().await,
        ) else {
            continue;
        };
        let tokens: HashMap<DeviceId, &str> = devices
            .iter()
            .map(|d| (d.id, d.access_token.as_str()))
            .collect();
        for s in states
            .iter()
            .filter(|s| s.package_type == PackageType::Firmware)
        {
            let line = format!(
                "fw_state={} current={} target={}{}",
                s.state.map_or("NONE", |st| st.as_str()),
                s.current_version.as_deref().unwrap_or("-"),
                s.target_version.as_deref().unwrap_or("-"),
                s.error
                    .as_deref()
                    .map(|e| format!(" error={e}"))
                    .unwrap_or_default(),
            );
            if seen.get(&s.device_id) != Some(&line) {
                println!(
                    "STATE token={} {line}",
                    tokens.get(&s.device_id).copied().unwrap_or("?")
                );
                seen.insert(s.device_id, line);
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            return;
        }
    }
    let _ = ctrl_c.await;
}

async fn run(args: Args, dir: &Path) -> anyhow::Result<()> {
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    let config = Config {
        database_url: format!("sqlite://{}", dir.join("ota.db").display()),
        blob_url: format!("file://{}", blobs.display()),
        admin_password: args.admin_password.clone(),
        ..Config::default()
    };
    let (rest, ota) = ota_server::server::build(&config).await?;
    provision(&ota).await?;
    let app = rest.merge(ota_http::router(ota.clone()));
    let tcp = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("binding HTTP on {}", args.http))?;
    let udp = tokio::net::UdpSocket::bind(args.coap)
        .await
        .with_context(|| format!("binding CoAP on {}", args.coap))?;
    let (http_addr, coap_addr) = (tcp.local_addr()?, udp.local_addr()?);
    let coap = tokio::spawn(ota_coap::server::serve(udp, ota.clone()));
    let watcher = tokio::spawn(watch_states(ota.clone()));
    println!(
        "READY http={http_addr} coap={coap_addr} token={} tokens={},{FAIL_TOKEN} data={}",
        TOKENS[0],
        TOKENS.join(","),
        dir.display()
    );
    axum::serve(tcp, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    coap.abort();
    watcher.abort();
    ota.flush_progress().await?;
    println!("stopped");
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    // A temporary data directory lives as long as the server.
    let temp;
    let dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => match tempfile::Builder::new()
            .prefix("ota-demo-server-")
            .tempdir()
        {
            Ok(t) => {
                temp = t;
                temp.path().to_path_buf()
            }
            Err(e) => {
                eprintln!("ota-demo-server: creating a temporary directory: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    match run(args, &dir).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ota-demo-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}
