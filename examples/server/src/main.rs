//! `ota-demo-server`: the OTA service on its embedded default (an SQLite file and a local blob
//! directory in `--data-dir`) serving ThingsBoard's HTTP device API (plus the REST
//! management API), its CoAP and its MQTT device API on loopback, with demo firmware signed,
//! encrypted, uploaded and assigned.
//!
//! On a new data directory it creates the product's keys (kept in the directory; see
//! below), the profile `demo` whose default firmware is `ota-demo` 1.1.0 (self-test passes),
//! the devices `demo-http-1`, `demo-coap-1`, `demo-mqtt-1` and `demo-cut-1` on the profile default,
//! `demo-fail-1` assigned `ota-demo` 1.2.0 whose self-test fails, and `demo-rogue-1`
//! assigned `ota-demo` 1.3.0 signed by a key the devices do not trust. Then it prints one
//! machine-readable line once the listeners are bound:
//!
//! ```text
//! READY http=127.0.0.1:40123 coap=127.0.0.1:51234 mqtt=127.0.0.1:40124 token=demo-http-1 tokens=demo-http-1,… keys=/tmp/…/device-keys data=/tmp/…
//! ```
//!
//! With `--broker HOST:PORT` it also publishes a Sming announce there before `READY`: the
//! demo image `1.0.1` (self-test passes, not signed: Sming's simple format has no signature),
//! retained on `a/demo/u/1.0` (`--sming-app` changes `demo`), for `ota-demo-device --sming`.
//!
//! Then a line per change of a device's recorded update state
//! (`STATE token=demo-http-1 fw_state=UPDATED current=1.1.0 target=1.1.0`), until SIGINT or
//! SIGTERM.
//!
//! Every package is an `ota-crypto` package (`manifest ‖ signature ‖ payload`, see
//! `docs/format.md`): signed with ed25519 by the signing key, whose public key is in the key
//! set signed by the root key, and encrypted with ChaCha20-Poly1305 under the payload key.
//! The server itself checks only the SHA-256 of what was uploaded (ThingsBoard's
//! `fw_checksum`); the devices verify signature, tags and digest.
//!
//! ```text
//! <data-dir>/keys/root.key              root signing secret (hex seed; kept offline in a real product)
//! <data-dir>/keys/signing.key           package signing secret (hex seed)
//! <data-dir>/device-keys/root.pub       root public key: what devices pin
//! <data-dir>/device-keys/keyset.bin     the key set, signed by the root key
//! <data-dir>/device-keys/payload.key    payload key (devices hold it to decrypt)
//! ```

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
use ota_crypto::keyfile;
use ota_crypto::keys::{KeyEntry, KeySet, PayloadKey, SigningSecret};
use ota_crypto::manifest::{Kind, SemVer};
use ota_crypto::writer::{PackageSpec, PackageWriter, Sealing};
use ota_demo_device::device::DEFAULT_TARGET;
use ota_demo_device::image;
use ota_demo_device::trust::{KEY_SET_FILE, PAYLOAD_FILE, ROOT_FILE};
use ota_mqtt::broker::BrokerOptions;
use ota_mqtt::sming::{SmingAnnouncer, SmingVersion};
use ota_server::config::Config;
use ota_server::model::{
    Device, DeviceId, DeviceProfile, OtaPackage, PackageId, PackageSource, PackageType, ProfileId,
};
use ota_server::service::{DeviceApi, Ota, UploadMeta, now_ms};

/// Name of the demo device profile.
const PROFILE: &str = "demo";
/// Title of the demo firmware.
const TITLE: &str = "ota-demo";
/// The version every device on the profile is offered (its self-test passes).
const GOOD_VERSION: &str = "1.1.0";
/// The version `demo-fail-1` is offered (its self-test fails).
const BAD_VERSION: &str = "1.2.0";
/// The version `demo-rogue-1` is offered (signed by a key the devices do not trust).
const ROGUE_VERSION: &str = "1.3.0";
/// Devices on the profile default.
const TOKENS: [&str; 4] = ["demo-http-1", "demo-coap-1", "demo-mqtt-1", "demo-cut-1"];
/// The device assigned the failing image.
const FAIL_TOKEN: &str = "demo-fail-1";
/// The device assigned the package signed by an untrusted key.
const ROGUE_TOKEN: &str = "demo-rogue-1";

#[derive(Parser, Debug)]
#[command(
    version,
    about = "The OTA demo server (HTTP, CoAP and MQTT device APIs on loopback)"
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
    /// MQTT listen address (ThingsBoard's MQTT device API; a free port by default, never the
    /// broker port 1883 unless asked).
    #[arg(long, default_value = "127.0.0.1:0")]
    mqtt: SocketAddr,
    /// Password of the REST admin user `tenant@thingsboard.org`.
    #[arg(long, default_value = "demo")]
    admin_password: String,
    /// An MQTT broker to publish the retained Sming announce of 1.0.1 on (`HOST:PORT`).
    #[arg(long, value_name = "HOST:PORT")]
    broker: Option<String>,
    /// The Sming application id of that announce.
    #[arg(long, default_value = "demo", requires = "broker")]
    sming_app: String,
    /// Size of the demo images (plaintext bytes) on a new data directory.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(32..=250_000))]
    image_len: u64,
}

/// The product's keys.
struct Keys {
    /// Signs packages; in the key set.
    signing: SigningSecret,
    /// Encrypts payloads.
    payload: PayloadKey,
}

/// Writes `text` to `path`, readable by the owner only on Unix.
fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Loads the keys from `dir`, or creates them (root, signing and payload key, and the key set
/// the root signs) when `dir/keys` does not exist yet.
fn keys(dir: &Path) -> anyhow::Result<Keys> {
    let secrets = dir.join("keys");
    let public = dir.join("device-keys");
    if secrets.exists() {
        let signing = keyfile::parse_signing_secret(&read_text(&secrets.join("signing.key"))?)
            .context("signing key")?;
        let payload = keyfile::parse_payload_key(&read_text(&public.join(PAYLOAD_FILE))?)
            .context("payload key")?;
        println!("setup: keys in {} reused", secrets.display());
        return Ok(Keys { signing, payload });
    }
    let root = SigningSecret::generate().map_err(|e| anyhow::anyhow!("OS RNG: {e}"))?;
    let signing = SigningSecret::generate().map_err(|e| anyhow::anyhow!("OS RNG: {e}"))?;
    let payload = PayloadKey::generate().map_err(|e| anyhow::anyhow!("OS RNG: {e}"))?;
    let set = KeySet::new(1, &[KeyEntry::new(signing.public_key(), 0, None)], &[])?;
    // Public half first: a crash in between leaves no `keys/`, and the next start redoes it.
    std::fs::create_dir_all(&public).with_context(|| format!("creating {}", public.display()))?;
    std::fs::write(
        public.join(ROOT_FILE),
        &*keyfile::to_hex32(&root.public_key()),
    )?;
    std::fs::write(public.join(KEY_SET_FILE), set.sign(&root))?;
    let tmp = dir.join("keys.tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    write_secret(
        &tmp.join(PAYLOAD_FILE),
        &keyfile::to_hex32(payload.as_bytes()),
    )?;
    write_secret(&tmp.join("root.key"), &keyfile::to_hex32(&root.to_seed()))?;
    write_secret(
        &tmp.join("signing.key"),
        &keyfile::to_hex32(&signing.to_seed()),
    )?;
    std::fs::copy(tmp.join(PAYLOAD_FILE), public.join(PAYLOAD_FILE))?;
    std::fs::rename(&tmp, &secrets)?;
    println!(
        "setup: keys created: root {} (pinned by devices), signing {} (key set v1), payload {}",
        root.key_id(),
        signing.key_id(),
        payload.key_id()
    );
    Ok(Keys { signing, payload })
}

/// A demo image of `len` bytes for `version`, signed by `signer` and encrypted.
fn pack(
    signer: &SigningSecret,
    payload: &PayloadKey,
    version: &str,
    self_test_passes: bool,
    len: usize,
) -> anyhow::Result<Vec<u8>> {
    let v = ota_core::version::Version::parse(version)
        .map_err(|e| anyhow::anyhow!("version {version:?}: {e:?}"))?;
    let spec = PackageSpec::new(
        Kind::Firmware,
        TITLE,
        SemVer::new(v.major, v.minor, v.patch),
        DEFAULT_TARGET,
        now_secs(),
    )?;
    let writer = PackageWriter::new(signer, spec, Sealing::chacha20poly1305(payload)?);
    Ok(writer.pack_bytes(&image::build(version, self_test_passes, len))?)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn create_package(
    ota: &Ota,
    profile: ProfileId,
    version: &str,
    package: Vec<u8>,
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
        file_name: format!("{TITLE}-{version}.otapkg"),
        content_type: "application/octet-stream".into(),
    };
    let bytes = Bytes::from(package);
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
async fn provision(ota: &Ota, keys: &Keys, image_len: usize) -> anyhow::Result<()> {
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
    let (signer, sealer) = (&keys.signing, &keys.payload);
    let good = pack(signer, sealer, GOOD_VERSION, true, image_len)?;
    let good = create_package(ota, profile.id, GOOD_VERSION, good).await?;
    let bad = pack(signer, sealer, BAD_VERSION, false, image_len)?;
    let bad = create_package(ota, profile.id, BAD_VERSION, bad).await?;
    // Generated here and forgotten: no key set names it.
    let untrusted = SigningSecret::generate().map_err(|e| anyhow::anyhow!("OS RNG: {e}"))?;
    let rogue = pack(&untrusted, sealer, ROGUE_VERSION, true, image_len)?;
    let rogue = create_package(ota, profile.id, ROGUE_VERSION, rogue).await?;
    profile.firmware_id = Some(good.id);
    ota.set_profile_packages(&profile).await?;
    for token in TOKENS {
        ota.create_device(&device(profile.id, token, None)).await?;
    }
    ota.create_device(&device(profile.id, FAIL_TOKEN, Some(bad.id)))
        .await?;
    ota.create_device(&device(profile.id, ROGUE_TOKEN, Some(rogue.id)))
        .await?;
    for p in [&good, &bad, &rogue] {
        if let Some(d) = p.data() {
            println!(
                "setup: uploaded {} {} ({} bytes signed+encrypted, {} {}) blob={}",
                p.title, p.version, d.size, d.checksum_algorithm, d.checksum, d.blob_key
            );
        }
    }
    println!(
        "setup: profile {PROFILE:?} → {TITLE} {GOOD_VERSION}; devices {}; {FAIL_TOKEN} → {TITLE} {BAD_VERSION} (self-test fails); {ROGUE_TOKEN} → {TITLE} {ROGUE_VERSION} (signed by untrusted key {})",
        TOKENS.join(", "),
        untrusted.key_id()
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

/// The version the Sming announce carries.
const SMING_VERSION: &str = "1.0.1";

/// Publishes the retained Sming announce of [`SMING_VERSION`] on `broker`.
async fn announce_sming(broker: &str, app: &str, image_len: usize) -> anyhow::Result<()> {
    let (host, port) = broker
        .rsplit_once(':')
        .with_context(|| format!("--broker {broker:?} is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("--broker {broker:?}: port"))?;
    let options = BrokerOptions::new(
        host,
        port,
        format!("ota-demo-server-{}", std::process::id()),
    );
    let announcer = SmingAnnouncer::connect(options)
        .await
        .with_context(|| format!("connecting to the broker {broker}"))?;
    let version = SmingVersion::parse(SMING_VERSION)?;
    let image = image::build(SMING_VERSION, true, image_len);
    let sent = announcer.announce(app, version, image.into()).await?;
    announcer.close().await;
    println!(
        "setup: Sming announce of {SMING_VERSION} retained on {} at {broker} ({} payload bytes)",
        sent.topic, sent.payload_len
    );
    Ok(())
}

async fn run(args: Args, dir: &Path) -> anyhow::Result<()> {
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    // The blob store and the printed paths need an absolute directory.
    let dir = &dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let blobs = dir.join("blobs");
    let config = Config {
        database_url: format!("sqlite://{}", dir.join("ota.db").display()),
        blob_url: format!("file://{}", blobs.display()),
        admin_password: args.admin_password.clone(),
        ..Config::default()
    };
    let keys = keys(dir)?;
    let (rest, ota) = ota_server::server::build(&config).await?;
    let image_len = usize::try_from(args.image_len).context("--image-len")?;
    provision(&ota, &keys, image_len).await?;
    if let Some(broker) = &args.broker {
        announce_sming(broker, &args.sming_app, image_len).await?;
    }
    let app = rest.merge(ota_http::router(ota.clone()));
    let tcp = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("binding HTTP on {}", args.http))?;
    let udp = tokio::net::UdpSocket::bind(args.coap)
        .await
        .with_context(|| format!("binding CoAP on {}", args.coap))?;
    let mqtt_listener = tokio::net::TcpListener::bind(args.mqtt)
        .await
        .with_context(|| format!("binding MQTT on {}", args.mqtt))?;
    let (http_addr, coap_addr) = (tcp.local_addr()?, udp.local_addr()?);
    let mqtt_addr = mqtt_listener.local_addr()?;
    let coap = tokio::spawn(ota_coap::server::serve(udp, ota.clone()));
    let api: Arc<dyn DeviceApi> = ota.clone();
    let mqtt = tokio::spawn(ota_mqtt::serve(
        mqtt_listener,
        api,
        ota_mqtt::MqttConfig::default(),
    ));
    let watcher = tokio::spawn(watch_states(ota.clone()));
    println!(
        "READY http={http_addr} coap={coap_addr} mqtt={mqtt_addr} token={} tokens={},{FAIL_TOKEN},{ROGUE_TOKEN} keys={} data={}",
        TOKENS[0],
        TOKENS.join(","),
        dir.join("device-keys").display(),
        dir.display()
    );
    axum::serve(tcp, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    coap.abort();
    mqtt.abort();
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
