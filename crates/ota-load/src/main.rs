//! `ota-load`: an MQTT load generator for the OTA stack.
//!
//! * `ota-load serve` — the OTA service (SQLite + local blobs in `--data-dir`) with the
//!   ThingsBoard-dialect MQTT endpoint on loopback, one image of `--size` bytes assigned to
//!   devices `load-0` … `load-{N-1}`. Prints `READY mqtt=ADDR pid=PID …` and serves until
//!   SIGINT/SIGTERM.
//! * `ota-load run --server ADDR` — N simulated devices, each its own MQTT connection running
//!   the real `Updater` through [`ota_mqtt::device::MqttDevice`], update from the endpoint.
//!   With `--relay`, the same devices fetch the same image in the same chunk size at QoS 1
//!   from a plain broker instead: publisher connections of this process answer each device's
//!   chunk requests on its own topic (`relay/{i}/req/…` → `relay/{i}/res/…`).
//!   Prints devices/s, MiB/s, p50/p99 update time and errors on one `RESULT` line.
//! * `ota-load idle --server ADDR` — N connected, subscribed, idle devices (for measuring the
//!   server's memory per connection); prints `IDLE connected=N` and holds them until stdin
//!   closes.
//!
//! Everything is meant for 127.0.0.1; see `scripts/bench-mqtt.sh`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use ota_core::checksum::{ChecksumAlgorithm, Hasher};
use ota_core::updater::{Config, Kind};
use ota_mqtt::device::{
    CheckpointStore, Dialect, LinkOptions, MqttDevice, Outcome, OwnedOffer, Slot,
};
use ota_server::model::{
    Device, DeviceId, DeviceProfile, OtaPackage, PackageId, PackageSource, PackageType, ProfileId,
};
use ota_server::service::{DeviceApi, UploadMeta, now_ms};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::AsyncReadExt;

/// Title and version of the served image (devices run `0.0.0`).
const TITLE: &str = "load-fw";
const VERSION: &str = "1.0.0";
/// Access-token prefix of the simulated devices.
const TOKEN_PREFIX: &str = "load-";

#[derive(Parser, Debug)]
#[command(
    version,
    about = "MQTT load generator: simulated OTA devices on loopback"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the ThingsBoard-dialect MQTT endpoint over an OTA service on SQLite.
    Serve {
        /// Where the SQLite file and blob directory live (must be writable).
        #[arg(long)]
        data_dir: PathBuf,
        /// MQTT listen address.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Devices to create (tokens `load-0` …).
        #[arg(long, default_value_t = 1000)]
        devices: usize,
        /// Image size in bytes.
        #[arg(long, default_value_t = 256 << 10)]
        size: usize,
    },
    /// Update N simulated devices and print the figures.
    Run {
        /// The MQTT endpoint (or, with `--relay`, the broker).
        #[arg(long)]
        server: SocketAddr,
        /// Simulated devices.
        #[arg(long, default_value_t = 1000)]
        devices: usize,
        /// Chunk size in bytes.
        #[arg(long, default_value_t = 4096)]
        chunk: u32,
        /// Relay mode: fetch from a plain broker, answered by this process's publishers.
        #[arg(long)]
        relay: bool,
        /// Relay mode: image size in bytes (the endpoint mode learns it from the attributes).
        #[arg(long, default_value_t = 256 << 10)]
        size: usize,
        /// Relay mode: publisher connections (a shared subscription spreads the requests).
        #[arg(long, default_value_t = 2)]
        publishers: usize,
        /// Devices started per second (connection ramp).
        #[arg(long, default_value_t = 2000)]
        ramp: u32,
        /// Give up on the run after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Hold N connected, subscribed, idle devices until stdin closes.
    Idle {
        /// The MQTT endpoint or broker.
        #[arg(long)]
        server: SocketAddr,
        /// Idle devices.
        #[arg(long, default_value_t = 1000)]
        devices: usize,
        /// Subscribe to relay topics (a plain broker) instead of the ThingsBoard filters.
        #[arg(long)]
        relay: bool,
        /// Connections opened per second.
        #[arg(long, default_value_t = 2000)]
        ramp: u32,
    },
}

/// `len` bytes from a fixed-seed xorshift64 stream: incompressible and identical on every run.
fn image(len: usize) -> Vec<u8> {
    let mut state = (len as u64) | 1;
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

fn sha256_hex(data: &[u8]) -> String {
    let mut buf = [0u8; 128];
    Hasher::digest(ChecksumAlgorithm::Sha256, data)
        .to_hex(&mut buf)
        .to_owned()
}

/// A slot that keeps nothing: the updater checks the image's digest on the way, which is
/// all a load run needs (and 10,000 × 256 KiB of memory would be the generator's bottleneck).
struct NullSlot {
    written: u64,
}

impl Slot for NullSlot {
    fn write(&mut self, _offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.written += data.len() as u64;
        Ok(())
    }
    fn read(&mut self, _offset: u64, _buf: &mut [u8]) -> std::io::Result<()> {
        Err(std::io::Error::other("the load slot keeps no bytes"))
    }
    fn finalize(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// No checkpoints: a load run never restarts.
struct NoCheckpoints;

impl CheckpointStore for NoCheckpoints {
    fn load(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        Ok(None)
    }
    fn save(
        &mut self,
        _record: &[u8; ota_core::checkpoint::CHECKPOINT_LEN],
    ) -> std::io::Result<()> {
        Ok(())
    }
    fn clear(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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

async fn serve(
    data_dir: PathBuf,
    listen: SocketAddr,
    devices: usize,
    size: usize,
) -> anyhow::Result<()> {
    let blobs = data_dir.join("blobs");
    std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    let config = ota_server::config::Config {
        database_url: format!("sqlite://{}", data_dir.join("ota.db").display()),
        blob_url: format!("file://{}", blobs.display()),
        ..ota_server::config::Config::default()
    };
    let (_rest, ota) = ota_server::server::build(&config).await?;
    let profile = DeviceProfile {
        id: ProfileId::new_random(),
        created_time: now_ms(),
        name: "load".into(),
        firmware_id: None,
        software_id: None,
    };
    ota.store().create_profile(&profile).await?;
    let package = OtaPackage {
        id: PackageId::new_random(),
        created_time: now_ms(),
        profile_id: profile.id,
        package_type: PackageType::Firmware,
        title: TITLE.into(),
        version: VERSION.into(),
        tag: None,
        source: PackageSource::Pending,
        sming_app_id: None,
        additional_info: None,
    };
    ota.store().create_package(&package).await?;
    let meta = UploadMeta {
        algorithm: ChecksumAlgorithm::Sha256,
        declared: None,
        file_name: format!("{TITLE}.bin"),
        content_type: "application/octet-stream".into(),
    };
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(image(size)))]);
    let package = ota.upload(package.id, meta, body).await?;
    for i in 0..devices {
        let d = Device {
            id: DeviceId::new_random(),
            created_time: now_ms(),
            name: format!("{TOKEN_PREFIX}{i}"),
            profile_id: profile.id,
            access_token: format!("{TOKEN_PREFIX}{i}"),
            firmware_id: Some(package.id),
            software_id: None,
            enigma: None,
        };
        ota.create_device(&d).await?;
    }
    let socket = if listen.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket
        .bind(listen)
        .with_context(|| format!("binding {listen}"))?;
    let listener = socket.listen(4096)?;
    let addr = listener.local_addr()?;
    println!(
        "READY mqtt={addr} pid={} devices={devices} size={size} title={TITLE} version={VERSION}",
        std::process::id()
    );
    let api: Arc<dyn DeviceApi> = ota.clone();
    tokio::select! {
        () = ota_mqtt::serve(listener, api, ota_mqtt::MqttConfig::default()) => {}
        () = shutdown_signal() => {}
    }
    Ok(())
}

/// One device's result: its update time, or what went wrong.
type DeviceResult = Result<Duration, String>;

async fn one_device(
    server: SocketAddr,
    i: usize,
    chunk: u32,
    relay: Option<Arc<OwnedOffer>>,
) -> DeviceResult {
    let mut config = Config::new(chunk, 1 << 30);
    config.checkpoint_interval = 0;
    config.request_timeout_ms = 30_000;
    let token = format!("{TOKEN_PREFIX}{i}");
    let mut dev = MqttDevice::new(
        &server.ip().to_string(),
        server.port(),
        &token,
        Kind::Firmware,
        config,
    )
    .running(TITLE, "0.0.0")
    .client_id(&token)
    .link_options(LinkOptions {
        attribute_timeout: Duration::from_mins(1),
        ..LinkOptions::default()
    });
    if relay.is_some() {
        dev = dev.dialect(Dialect::Relay {
            prefix: format!("relay/{i}"),
        });
    }
    let mut slot = NullSlot { written: 0 };
    let started = Instant::now();
    let out = match &relay {
        Some(offer) => dev.download(offer, &mut slot, &mut NoCheckpoints).await,
        None => dev.update(&mut slot, &mut NoCheckpoints).await,
    };
    let took = started.elapsed();
    dev.close().await;
    match out {
        Ok(Outcome::Installed { .. }) => Ok(took),
        Ok(other) => Err(format!("{token}: {other:?} after {} bytes", slot.written)),
        Err(e) => Err(format!("{token}: {e}")),
    }
}

/// Answers relayed chunk requests from `publishers` connections to the broker.
async fn start_relay(broker: SocketAddr, image: Bytes, publishers: usize) -> anyhow::Result<()> {
    let filter = if publishers > 1 {
        "$share/ota-load/relay/+/req/+/chunk/+"
    } else {
        "relay/+/req/+/chunk/+"
    };
    for k in 0..publishers {
        let mut o = MqttOptions::new(
            format!("ota-load-relay-{k}"),
            broker.ip().to_string(),
            broker.port(),
        );
        o.set_keep_alive(Duration::from_mins(1));
        o.set_inflight(u16::MAX);
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(o, 65_536);
        client.subscribe(filter, QoS::AtLeastOnce).await?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Bytes)>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send((p.topic, p.payload)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("relay publisher {k}: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        let image = image.clone();
        tokio::spawn(async move {
            while let Some((topic, payload)) = rx.recv().await {
                let Some((topic, data)) = relay_answer(&topic, &payload, &image) else {
                    continue;
                };
                if client
                    .publish_bytes(topic, QoS::AtLeastOnce, false, data)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .context("relay publisher not subscribed in time")??;
    }
    Ok(())
}

/// The answer to `relay/{i}/req/{r}/chunk/{n}` with the chunk size as payload.
fn relay_answer(topic: &str, payload: &[u8], image: &Bytes) -> Option<(String, Bytes)> {
    let rest = topic.strip_prefix("relay/")?;
    let (device, rest) = rest.split_once("/req/")?;
    let (req, n) = rest.split_once("/chunk/")?;
    let n: usize = n.parse().ok()?;
    let size: usize = std::str::from_utf8(payload).ok()?.parse().ok()?;
    let start = n.checked_mul(size)?.min(image.len());
    let end = start.saturating_add(size).min(image.len());
    // A slice of the shared image, not a copy (as the endpoint serves it).
    let data = image.slice(start..end);
    Some((format!("relay/{device}/res/{req}/chunk/{n}"), data))
}

#[allow(clippy::too_many_arguments)]
async fn run(
    server: SocketAddr,
    devices: usize,
    chunk: u32,
    relay: bool,
    size: usize,
    publishers: usize,
    ramp: u32,
    timeout: u64,
) -> anyhow::Result<()> {
    let offer = if relay {
        let img = Bytes::from(image(size));
        start_relay(server, img.clone(), publishers.max(1)).await?;
        Some(Arc::new(OwnedOffer {
            kind: Kind::Firmware,
            title: TITLE.into(),
            version: VERSION.into(),
            size: img.len() as u64,
            checksum_algorithm: "SHA256".into(),
            checksum: sha256_hex(&img),
            tag: None,
            url: None,
        }))
    } else {
        None
    };
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let gap = Duration::from_secs_f64(1.0 / f64::from(ramp.max(1)));
    for i in 0..devices {
        tasks.spawn(one_device(server, i, chunk, offer.clone()));
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            started + gap * u32::try_from(i + 1).unwrap_or(u32::MAX),
        ))
        .await;
    }
    let mut times = Vec::with_capacity(devices);
    let mut errors = Vec::new();
    let deadline = tokio::time::Instant::from_std(started + Duration::from_secs(timeout));
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok(Ok(t)))) => times.push(t),
            Ok(Some(Ok(Err(e)))) => errors.push(e),
            Ok(Some(Err(e))) => errors.push(format!("device task: {e}")),
            Ok(None) => break,
            Err(_) => {
                errors.push(format!(
                    "{} devices unfinished at the {timeout} s timeout",
                    tasks.len()
                ));
                tasks.abort_all();
                break;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    times.sort();
    let pct = |p: f64| -> f64 {
        if times.is_empty() {
            return 0.0;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let idx = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1;
        times[idx].as_secs_f64() * 1000.0
    };
    let image_len = match &offer {
        Some(o) => o.size,
        None => size as u64,
    };
    #[allow(clippy::cast_precision_loss)]
    let mib = (times.len() as u64 * image_len) as f64 / f64::from(1u32 << 20);
    for e in errors.iter().take(5) {
        eprintln!("error: {e}");
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = times.len() as f64 / elapsed;
    println!(
        "RESULT mode={} devices={devices} ok={} errors={} chunk={chunk} image={image_len} elapsed_s={elapsed:.2} devices_per_s={rate:.1} mib_per_s={:.1} p50_ms={:.0} p99_ms={:.0}",
        if relay { "relay" } else { "ours" },
        times.len(),
        errors.len(),
        mib / elapsed,
        pct(0.50),
        pct(0.99),
    );
    if !errors.is_empty() {
        bail!("{} of {devices} devices failed", errors.len());
    }
    Ok(())
}

async fn idle(server: SocketAddr, devices: usize, relay: bool, ramp: u32) -> anyhow::Result<()> {
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
    let started = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / f64::from(ramp.max(1)));
    let mut clients = Vec::with_capacity(devices);
    for i in 0..devices {
        let token = format!("{TOKEN_PREFIX}{i}");
        let mut o = MqttOptions::new(token.clone(), server.ip().to_string(), server.port());
        o.set_credentials(token, String::new());
        o.set_keep_alive(Duration::from_mins(1));
        let (client, mut el) = AsyncClient::new(o, 8);
        let filters: Vec<String> = if relay {
            vec![format!("relay/{i}/res/+/chunk/+")]
        } else {
            vec![
                "v1/devices/me/attributes".into(),
                "v1/devices/me/attributes/response/+".into(),
                "v2/fw/response/+/chunk/+".into(),
                "v2/fw/error".into(),
            ]
        };
        let subs = filters.len();
        for f in filters {
            client.subscribe(f, QoS::AtLeastOnce).await?;
        }
        let tx = ready_tx.clone();
        tokio::spawn(async move {
            let mut acked = 0;
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        acked += 1;
                        if acked == subs {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        clients.push(client);
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            started + gap * u32::try_from(i + 1).unwrap_or(u32::MAX),
        ))
        .await;
    }
    let mut ok = 0;
    while ok < devices {
        match tokio::time::timeout(Duration::from_mins(1), ready_rx.recv()).await {
            Ok(Some(Ok(()))) => ok += 1,
            Ok(Some(Err(e))) => bail!("idle device lost its connection: {e}"),
            _ => bail!("only {ok} of {devices} idle devices connected"),
        }
    }
    println!("IDLE connected={ok}");
    // Hold until stdin closes (the script's signal that it has measured).
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    drop(clients);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Args::parse().command {
        Command::Serve {
            data_dir,
            listen,
            devices,
            size,
        } => serve(data_dir, listen, devices, size).await,
        Command::Run {
            server,
            devices,
            chunk,
            relay,
            size,
            publishers,
            ramp,
            timeout,
        } => {
            run(
                server, devices, chunk, relay, size, publishers, ramp, timeout,
            )
            .await
        }
        Command::Idle {
            server,
            devices,
            relay,
            ramp,
        } => idle(server, devices, relay, ramp).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ota-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::{image, relay_answer};

    #[test]
    fn relay_answers_slice_the_image() {
        let img = Bytes::from(image(10));
        let (topic, data) = relay_answer("relay/7/req/2/chunk/1", b"4", &img).expect("answer");
        assert_eq!(topic, "relay/7/res/2/chunk/1");
        assert_eq!(&data[..], &img[4..8]);
        let (_, tail) = relay_answer("relay/7/req/2/chunk/2", b"4", &img).expect("answer");
        assert_eq!(&tail[..], &img[8..]);
        let (_, past) = relay_answer("relay/7/req/2/chunk/9", b"4", &img).expect("answer");
        assert!(past.is_empty());
        assert_eq!(relay_answer("relay/7/req/2/chunk/x", b"4", &img), None);
        assert_eq!(relay_answer("relay/7/req/2/chunk/1", b"four", &img), None);
        assert_eq!(relay_answer("other/7/req/2/chunk/1", b"4", &img), None);
    }

    #[test]
    fn images_are_deterministic() {
        assert_eq!(image(1003), image(1003));
        assert_eq!(image(1003).len(), 1003);
    }
}
