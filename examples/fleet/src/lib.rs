//! # ota-demo-fleet
//!
//! A fleet of simulated devices on mixed transports updating from one server that the
//! example starts in its own process on loopback: `ota-server`'s service on SQLite and a
//! local blob directory, ThingsBoard's HTTP device API ([`ota_http::router`]), CoAP device
//! API ([`ota_coap::server::serve`]) and MQTT device API ([`ota_mqtt::serve`]); devices are
//! spread round-robin over the three.
//!
//! Every device is a thread running a transport's device client over an in-memory A/B
//! flash with `ota_core::boot`'s power-safe state ([`device`]). Healthy devices update from
//! 1.0.0 to [`server::GOOD_VERSION`]; the failing ones are assigned
//! [`server::BAD_VERSION`], whose self-test fails, so they roll back to 1.0.0 and report
//! `FAILED`. While they run, a [`view`] shows per-state counts from the server's recorded
//! update states and bytes and throughput from the devices; [`run`] returns a [`Summary`].
//!
//! The transports sit behind [`transport::DeviceLink`]; see [`transport`] for what adding
//! one takes.

pub mod device;
/// `docs/porting.md`, whose code blocks run as this crate's doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/porting.md")]
pub struct PortingGuide;
pub mod firmware;
pub mod flash;
pub mod server;
pub mod transport;
pub mod view;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ota_server::model::{PackageType, UpdateState};
use ota_server::store::StoreError;

use crate::device::{Device, DeviceEnd, DeviceProgress, DoneOnDrop, FACTORY_VERSION};
use crate::server::{BAD_VERSION, FleetServer, GOOD_VERSION, Member, ServerError};
use crate::transport::{Endpoints, TransportKind, connect};
use crate::view::{Snapshot, View, ViewMode};

/// How often the view is refreshed.
const REFRESH: Duration = Duration::from_millis(250);

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Devices in the fleet.
    pub devices: usize,
    /// Devices assigned the image whose self-test fails.
    pub failing: usize,
    /// Size of the firmware images, bytes.
    pub image_len: usize,
    /// Give up waiting for the devices after this long.
    pub timeout: Duration,
    /// How progress is shown.
    pub view: ViewMode,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            devices: 50,
            failing: 5,
            image_len: 200_000,
            timeout: Duration::from_mins(5),
            view: ViewMode::Lines,
        }
    }
}

/// Why a fleet run failed (a device that fails is part of the [`Summary`], not this).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The options do not describe a fleet.
    #[error("{0}")]
    Options(String),
    /// The server could not start.
    #[error("server: {0}")]
    Server(#[from] ServerError),
    /// Reading the recorded states failed.
    #[error("reading update states: {0}")]
    Store(#[from] StoreError),
    /// The runtime, a thread or the terminal failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Some devices were still running at the deadline.
    #[error("{running} devices still running after {timeout:?}")]
    Timeout {
        /// Devices not finished.
        running: usize,
        /// The deadline.
        timeout: Duration,
    },
}

/// How one device ended, seen from both sides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceReport {
    /// Access token.
    pub token: String,
    /// Transport.
    pub transport: TransportKind,
    /// Whether it was assigned the failing image.
    pub failing: bool,
    /// The update state the server recorded.
    pub state: Option<UpdateState>,
    /// The version the server recorded as running (`current_fw_version`).
    pub server_version: Option<String>,
    /// How the device's loop ended (`Err`: the device's error).
    pub end: Result<DeviceEnd, String>,
}

impl DeviceReport {
    /// The version the device runs (read from its booted slot), `?` after an error.
    pub fn version(&self) -> &str {
        self.end.as_ref().map_or("?", DeviceEnd::version)
    }

    /// The state's name, `NONE` when nothing was recorded.
    pub fn state_name(&self) -> &'static str {
        self.state.map_or("NONE", UpdateState::as_str)
    }

    /// Whether the device ended as planned: a healthy device `UPDATED` and running
    /// [`GOOD_VERSION`]; a failing one `FAILED`, rolled back from [`BAD_VERSION`] and running
    /// [`FACTORY_VERSION`] — on the device and in the server's record.
    pub fn as_expected(&self) -> bool {
        if self.failing {
            self.state == Some(UpdateState::Failed)
                && matches!(&self.end, Ok(DeviceEnd::RolledBack { failed, version, .. })
                    if failed == BAD_VERSION && version == FACTORY_VERSION)
                && self.server_version.as_deref() == Some(FACTORY_VERSION)
        } else {
            self.state == Some(UpdateState::Updated)
                && matches!(&self.end, Ok(DeviceEnd::Current { version, .. }) if version == GOOD_VERSION)
                && self.server_version.as_deref() == Some(GOOD_VERSION)
        }
    }
}

/// The outcome of a fleet run.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Every device, in fleet order.
    pub devices: Vec<DeviceReport>,
    /// From the first device start to the last device end.
    pub elapsed: Duration,
    /// Bytes written to update slots, all devices together.
    pub bytes: u64,
}

impl Summary {
    /// Devices per recorded final state.
    pub fn by_state(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for d in &self.devices {
            *m.entry(d.state_name()).or_default() += 1;
        }
        m
    }

    /// Devices per transport and recorded state.
    pub fn by_transport(&self) -> BTreeMap<TransportKind, BTreeMap<&'static str, usize>> {
        let mut m: BTreeMap<_, BTreeMap<_, _>> = BTreeMap::new();
        for d in &self.devices {
            *m.entry(d.transport)
                .or_default()
                .entry(d.state_name())
                .or_default() += 1;
        }
        m
    }

    /// Devices per version running (read from their booted slots).
    pub fn by_version(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for d in &self.devices {
            *m.entry(d.version().to_owned()).or_default() += 1;
        }
        m
    }

    /// Overall throughput.
    pub fn mib_per_s(&self) -> f64 {
        view::mib_per_s(self.bytes, self.elapsed)
    }

    /// Devices that did not end as planned.
    pub fn unexpected(&self) -> Vec<&DeviceReport> {
        self.devices.iter().filter(|d| !d.as_expected()).collect()
    }

    /// The summary as `SUMMARY …` lines.
    pub fn lines(&self) -> Vec<String> {
        fn counts<K: std::fmt::Display>(m: &BTreeMap<K, usize>) -> String {
            m.iter()
                .map(|(k, n)| format!("{k}={n}"))
                .collect::<Vec<_>>()
                .join(" ")
        }
        let mut lines = vec![format!(
            "SUMMARY devices={} time={:.2}s bytes={} throughput={:.2}MiB/s",
            self.devices.len(),
            self.elapsed.as_secs_f64(),
            self.bytes,
            self.mib_per_s()
        )];
        lines.push(format!("SUMMARY state {}", counts(&self.by_state())));
        for (t, m) in self.by_transport() {
            lines.push(format!("SUMMARY transport={t} {}", counts(&m)));
        }
        lines.push(format!("SUMMARY version {}", counts(&self.by_version())));
        for d in self.unexpected() {
            lines.push(format!(
                "SUMMARY unexpected token={} transport={} state={} server_version={} device={}",
                d.token,
                d.transport,
                d.state_name(),
                d.server_version.as_deref().unwrap_or("-"),
                match &d.end {
                    Ok(end) => format!("{end:?}"),
                    Err(e) => format!("error: {e}"),
                }
            ));
        }
        lines.push(format!(
            "SUMMARY as_expected={}/{}",
            self.devices.len() - self.unexpected().len(),
            self.devices.len()
        ));
        lines
    }
}

/// A device thread and what it shares with the view.
struct Running {
    member: Member,
    progress: Arc<DeviceProgress>,
    thread: JoinHandle<Result<DeviceEnd, String>>,
}

/// Reads the recorded states into a snapshot.
///
/// The coalesced `fw_progress` is not written here ([`ota_server::service::Ota::flush_progress`]):
/// it rewrites each state row it read a moment before, so running it while devices report
/// can put back a state a device has just left. Bytes come from the devices' counters.
async fn snapshot(
    server: &FleetServer,
    running: &[Running],
    total_bytes: u64,
    started: Instant,
) -> Result<
    (
        Snapshot,
        BTreeMap<ota_server::model::DeviceId, ota_server::model::DeviceUpdateState>,
    ),
    FleetError,
> {
    // Devices first: a device marked done had its last report acknowledged, so the states
    // read after this include it.
    let mut snap = Snapshot::new(running.len(), total_bytes);
    for r in running {
        snap.done += usize::from(r.progress.done.load(Ordering::Acquire));
        snap.bytes += r.progress.written.load(Ordering::Relaxed);
    }
    let states: BTreeMap<_, _> = server
        .ota
        .store()
        .update_states()
        .await?
        .into_iter()
        .filter(|s| s.package_type == PackageType::Firmware)
        .map(|s| (s.device_id, s))
        .collect();
    snap.elapsed = started.elapsed();
    for r in running {
        snap.count(states.get(&r.member.id).and_then(|s| s.state));
    }
    Ok((snap, states))
}

/// Refuses options that do not describe a fleet.
fn check(options: &Options) -> Result<(), FleetError> {
    if options.devices == 0 {
        return Err(FleetError::Options("--devices must be at least 1".into()));
    }
    if options.failing > options.devices {
        return Err(FleetError::Options(format!(
            "--failing {} exceeds --devices {}",
            options.failing, options.devices
        )));
    }
    if options.image_len < firmware::HEADER_LEN {
        return Err(FleetError::Options(format!(
            "--image-size must be at least {} bytes",
            firmware::HEADER_LEN
        )));
    }
    Ok(())
}

/// Starts `member`'s device thread.
fn spawn(
    member: Member,
    endpoints: Endpoints,
    image_len: usize,
    started: Instant,
) -> Result<Running, FleetError> {
    let progress = Arc::new(DeviceProgress::new(started));
    let thread = std::thread::Builder::new()
        .name(member.token.clone())
        .spawn({
            let progress = progress.clone();
            let member = member.clone();
            move || {
                let _done = DoneOnDrop(&progress);
                let slot_len = flash::Chip::new(image_len).slot_len() as u64;
                let link = connect(
                    member.transport,
                    &endpoints,
                    &member.token,
                    slot_len,
                    member.index as u64,
                )
                .map_err(|e| e.to_string())?;
                let mut device = Device::provision(image_len, link).map_err(|e| e.to_string())?;
                device.run(&progress).map_err(|e| e.to_string())
            }
        })?;
    Ok(Running {
        member,
        progress,
        thread,
    })
}

/// Runs a fleet: starts the server, starts every device, shows progress on `out` until all
/// have finished (or `options.timeout`), and returns the summary (also printed).
pub fn run<W: Write>(options: &Options, out: W) -> Result<Summary, FleetError> {
    check(options)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let fleet = server::members(options.devices, options.failing);
    let server = runtime.block_on(server::start(&fleet, options.image_len))?;
    let mut view = View::new(out, options.view);
    let per_transport: Vec<String> = TransportKind::ALL
        .iter()
        .map(|t| {
            let n = fleet.iter().filter(|m| m.transport == *t).count();
            format!("{n} {t}")
        })
        .collect();
    writeln!(
        view.out(),
        "fleet: {} devices ({}), {} assigned {BAD_VERSION} whose self-test fails, the rest {GOOD_VERSION}; {} KiB images; server http={} coap={} mqtt={}",
        options.devices,
        per_transport.join(", "),
        options.failing,
        options.image_len / 1024,
        server.endpoints.http,
        server.endpoints.coap,
        server.endpoints.mqtt
    )?;
    let started = Instant::now();
    let running = fleet
        .into_iter()
        .map(|member| spawn(member, server.endpoints, options.image_len, started))
        .collect::<Result<Vec<_>, _>>()?;
    let total_bytes = options.image_len as u64 * running.len() as u64;
    let (last, states) = runtime.block_on(async {
        loop {
            let (snap, states) = snapshot(&server, &running, total_bytes, started).await?;
            let finished = snap.done == running.len();
            if finished || snap.elapsed >= options.timeout {
                view.show(&snap, true)?;
                return Ok::<_, FleetError>((snap, states));
            }
            view.show(&snap, false)?;
            tokio::time::sleep(REFRESH).await;
        }
    })?;
    if last.done < running.len() {
        return Err(FleetError::Timeout {
            running: running.len() - last.done,
            timeout: options.timeout,
        });
    }
    // From the first start to the last device's end, not to the view's last refresh.
    let elapsed = running
        .iter()
        .map(|r| r.progress.elapsed_at_end())
        .max()
        .unwrap_or(last.elapsed);
    let mut devices = Vec::with_capacity(running.len());
    for r in running {
        let end = r
            .thread
            .join()
            .unwrap_or_else(|_| Err("device thread panicked".into()));
        let state = states.get(&r.member.id);
        devices.push(DeviceReport {
            token: r.member.token,
            transport: r.member.transport,
            failing: r.member.failing,
            state: state.and_then(|s| s.state),
            server_version: state.and_then(|s| s.current_version.clone()),
            end,
        });
    }
    let summary = Summary {
        devices,
        elapsed,
        bytes: last.bytes,
    };
    for line in summary.lines() {
        writeln!(view.out(), "{line}")?;
    }
    drop(server);
    Ok(summary)
}
