//! `ota-bench-server`: the OTA service (SQLite file + local blob directory in `--data-dir`)
//! serving ThingsBoard's HTTP and CoAP device APIs on loopback for the load benchmarks in
//! `scripts/bench-http.sh` and `scripts/bench-coap.sh`.
//!
//! It uploads two firmware images of title `bench-fw` — one of `--http-size` bytes (1 MiB by
//! default) assigned to device `bench-http`, one of `--coap-size` bytes (256 KiB by default)
//! assigned to device `bench-coap` — and writes the same bytes to `http.bin` and `coap.bin` in
//! the data directory, so that the reference servers (nginx, libcoap) serve identical files.
//! Once both listeners are bound it prints one machine-readable line:
//!
//! ```text
//! READY http=127.0.0.1:40123 coap=127.0.0.1:51234 title=bench-fw http_token=bench-http http_version=1.0.0 http_image=/tmp/…/http.bin coap_token=bench-coap coap_version=2.0.0 coap_image=/tmp/…/coap.bin
//! ```
//!
//! and serves until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use ota_core::checksum::ChecksumAlgorithm;
use ota_server::config::Config;
use ota_server::model::{
    Device, DeviceId, DeviceProfile, OtaPackage, PackageId, PackageSource, PackageType, ProfileId,
};
use ota_server::service::{Ota, UploadMeta, now_ms};

/// Title of both benchmark images.
const TITLE: &str = "bench-fw";
/// Device (access token) and version of the HTTP image.
const HTTP_DEVICE: (&str, &str) = ("bench-http", "1.0.0");
/// Device (access token) and version of the CoAP image.
const COAP_DEVICE: (&str, &str) = ("bench-coap", "2.0.0");

#[derive(Parser, Debug)]
#[command(
    version,
    about = "The OTA server prepared for the HTTP and CoAP load benchmarks (loopback)"
)]
struct Args {
    /// Where the SQLite file, blob directory and image copies live (must be writable).
    #[arg(long)]
    data_dir: PathBuf,
    /// HTTP listen address (device API).
    #[arg(long, default_value = "127.0.0.1:0")]
    http: SocketAddr,
    /// CoAP (UDP) listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    coap: SocketAddr,
    /// Size in bytes of the image served over HTTP.
    #[arg(long, default_value_t = 1 << 20)]
    http_size: usize,
    /// Size in bytes of the image served over CoAP.
    #[arg(long, default_value_t = 256 << 10)]
    coap_size: usize,
}

/// `len` bytes from a fixed-seed xorshift64 stream: incompressible and identical on every run.
fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Creates and uploads a firmware package of `bytes` on `profile`.
async fn upload(
    ota: &Ota,
    profile: ProfileId,
    version: &str,
    bytes: Vec<u8>,
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
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(bytes))]);
    Ok(ota.upload(p.id, meta, body).await?)
}

/// Uploads the image of `len` bytes, writes its copy to `copy` and assigns it to device `token`.
async fn provision(
    ota: &Ota,
    profile: ProfileId,
    (token, version): (&str, &str),
    len: usize,
    copy: &Path,
) -> anyhow::Result<()> {
    let bytes = image(len, len as u64);
    std::fs::write(copy, &bytes).with_context(|| format!("writing {}", copy.display()))?;
    let package = upload(ota, profile, version, bytes).await?;
    let device = Device {
        id: DeviceId::new_random(),
        created_time: now_ms(),
        name: token.into(),
        profile_id: profile,
        access_token: token.into(),
        firmware_id: Some(package.id),
        software_id: None,
        enigma: None,
    };
    ota.create_device(&device).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
        return;
    }
    let _ = ctrl_c.await;
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = &args.data_dir;
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    let config = Config {
        database_url: format!("sqlite://{}", dir.join("ota.db").display()),
        blob_url: format!("file://{}", blobs.display()),
        ..Config::default()
    };
    let (_rest, ota) = ota_server::server::build(&config).await?;
    let profile = DeviceProfile {
        id: ProfileId::new_random(),
        created_time: now_ms(),
        name: "bench".into(),
        firmware_id: None,
        software_id: None,
    };
    ota.store().create_profile(&profile).await?;
    let (http_image, coap_image) = (dir.join("http.bin"), dir.join("coap.bin"));
    provision(&ota, profile.id, HTTP_DEVICE, args.http_size, &http_image).await?;
    provision(&ota, profile.id, COAP_DEVICE, args.coap_size, &coap_image).await?;

    let app = ota_http::router(ota.clone());
    let tcp = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("binding HTTP on {}", args.http))?;
    let udp = tokio::net::UdpSocket::bind(args.coap)
        .await
        .with_context(|| format!("binding CoAP on {}", args.coap))?;
    let (http_addr, coap_addr) = (tcp.local_addr()?, udp.local_addr()?);
    let coap = tokio::spawn(ota_coap::server::serve(udp, ota.clone()));
    println!(
        "READY http={http_addr} coap={coap_addr} title={TITLE} http_token={} http_version={} http_image={} coap_token={} coap_version={} coap_image={}",
        HTTP_DEVICE.0,
        HTTP_DEVICE.1,
        http_image.display(),
        COAP_DEVICE.0,
        COAP_DEVICE.1,
        coap_image.display(),
    );
    // Small responses: send each as soon as it is written (as otad does).
    let tcp = axum::serve::ListenerExt::tap_io(tcp, |s| {
        if let Err(e) = s.set_nodelay(true) {
            eprintln!("TCP_NODELAY not set: {e}");
        }
    });
    axum::serve(tcp, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    coap.abort();
    ota.flush_progress().await?;
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
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ota-bench-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::image;

    #[test]
    fn image_has_requested_length_and_is_deterministic() {
        let a = image(1003, 7);
        assert_eq!(a.len(), 1003);
        assert_eq!(a, image(1003, 7));
        assert_ne!(a, image(1003, 9));
    }
}
