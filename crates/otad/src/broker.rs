//! The external-broker dialects (`[broker]`), driven by the service's catalogue events
//! ([`Ota::catalog_events`]).
//!
//! **Sming retained announce.** For every topic `a/<app>/u/<major>.<minor>` of a firmware
//! package that has a Sming app id and a `major.minor.patch` version, the broker should hold:
//!
//! * the announce of the package with the highest patch (newest on a tie) among those of the
//!   topic that have stored data and are the firmware of a device profile or of a device —
//!   a profile's default counts even when no registered device follows it, since Sming devices
//!   need not be registered;
//! * nothing (an empty retained message) when no package of the topic is assigned.
//!
//! So assigning a package announces it, and unassigning it (or deleting it) withdraws the
//! topic — unless another assigned package of the same app and `major.minor` is there, which
//! is then announced instead. The task re-reads the catalogue after every relevant event
//! (bursts are coalesced), every `resync_secs`, and shortly after a failed publish, and
//! publishes only the difference from what it last published. At start, and whenever the
//! connection to the broker was re-established (a broker without persistence forgets
//! retained messages when it restarts), it knows nothing, so it publishes every topic of
//! every such package once: `otad` owns these topics (do not
//! publish them with another tool).
//!
//! **EnigmaIoT.** A device with an EnigmaIoT address whose effective firmware has stored data
//! and whose update state for it is not final (QUEUED … UPDATING) gets the image streamed
//! through its gateway ([`deliver_package`]), which records the progress and final state like
//! device telemetry. One transfer per device at a time; at most `enigma_concurrency` at once
//! (the others wait). A new assignment cancels the running transfer and starts the new one
//! [`NODE_RESET`] later: a node in the middle of an update refuses a new message 0 (its
//! updater is busy) and only forgets the old transfer when it times out and reboots, 10 s
//! after the last message. A withdrawn assignment, a removed address or a deleted device
//! cancels the transfer (the node then times out by itself). Devices are checked
//! at start (transfers interrupted by a restart resume from message 0) and after each
//! assignment change or device save. A transfer that fails — the broker unreachable included —
//! is recorded as FAILED; assigning the package again retries.
//!
//! Broker outages never stop `otad`: the announcer logs the error and reconnects with
//! back-off (1 s doubling to 30 s); the other transports are unaffected.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ota_mqtt::broker::{BrokerError, BrokerOptions};
use ota_mqtt::enigma::{EnigmaConfig, EnigmaSender, deliver_package};
use ota_mqtt::sming::{SmingAnnouncer, announce_package, package_target, topic};
use ota_server::config::{BrokerEndpoint, BrokerSettings};
use ota_server::events::CatalogEvent;
use ota_server::model::{DeviceId, EnigmaAddress, OtaPackage, PackageId, PackageType};
use ota_server::service::{DeviceApi as _, Ota, ServiceError};
use ota_server::store::{PackageQuery, StoreError};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};

/// How long a burst of events is coalesced before the Sming announces are re-checked.
const COALESCE: Duration = Duration::from_millis(100);
/// How often the announcer checks whether its connection was re-established.
const SESSION_CHECK: Duration = Duration::from_secs(1);
/// How soon a failed Sming publish is retried.
const RETRY: Duration = Duration::from_secs(5);
/// How long a new EnigmaIoT transfer waits after cancelling one to the same node: the node's
/// OTA timeout (10 s without a valid message, then it reboots) plus a margin.
pub const NODE_RESET: Duration = Duration::from_secs(12);
/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Starts the configured dialects; the returned tasks run until aborted.
pub fn spawn(
    settings: &BrokerSettings,
    endpoint: &BrokerEndpoint,
    ota: &Arc<Ota>,
) -> Vec<JoinHandle<()>> {
    let mut options = BrokerOptions::new(
        endpoint.host.clone(),
        endpoint.port,
        settings.client_id.clone(),
    );
    options.credentials.clone_from(&endpoint.credentials);
    let mut tasks = Vec::new();
    if settings.sming {
        // Subscribed before the task starts, so no change made meanwhile is missed.
        let events = ota.catalog_events();
        let resync = Duration::from_secs(settings.resync_secs.max(1));
        tasks.push(tokio::spawn(sming_task(
            ota.clone(),
            options.clone(),
            events,
            resync,
        )));
    }
    if settings.enigma {
        let events = ota.catalog_events();
        let mut enigma_options = options;
        enigma_options.client_id = format!("{}-enigma", settings.client_id);
        let sender = Arc::new(EnigmaSender::new(enigma_options, EnigmaConfig::default()));
        tasks.push(tokio::spawn(enigma_task(
            ota.clone(),
            sender,
            events,
            settings.enigma_concurrency.max(1),
        )));
    }
    tasks
}

async fn connect_with_retry<T, F, Fut>(what: &str, options: &BrokerOptions, mut connect: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BrokerError>>,
{
    let broker = format!("{}:{}", options.host, options.port);
    let mut delay = Duration::from_secs(1);
    loop {
        match connect().await {
            Ok(t) => {
                tracing::info!(%broker, client_id = %options.client_id, "{what} connected to the MQTT broker");
                return t;
            }
            Err(e) => {
                tracing::error!(%broker, error = %e, retry_in = ?delay, "{what} cannot connect to the MQTT broker; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// One Sming announce topic.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SmingTopic {
    /// App id.
    pub app: String,
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

/// What this process last left on the broker for a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retained {
    /// The announce of this package.
    Announced(PackageId),
    /// Nothing (an empty retained message).
    Withdrawn,
}

/// A publish the announcer owes the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SmingAction<'a> {
    /// Announce this package on its topic.
    Announce(SmingTopic, &'a OtaPackage),
    /// Clear the topic.
    Withdraw(SmingTopic),
}

/// The announce each topic should hold (see the module docs): every topic of a firmware
/// package with a Sming app id and a usable version, mapped to the package to announce or
/// `None` (withdrawn). `assigned` holds the firmware of every profile and device.
pub fn wanted<'a, S: std::hash::BuildHasher>(
    packages: &'a [OtaPackage],
    assigned: &HashSet<PackageId, S>,
) -> BTreeMap<SmingTopic, Option<&'a OtaPackage>> {
    let mut out: BTreeMap<SmingTopic, Option<&OtaPackage>> = BTreeMap::new();
    for p in packages {
        if p.package_type != PackageType::Firmware {
            continue;
        }
        let (app, version) = match package_target(p) {
            None => continue,
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                if assigned.contains(&p.id) {
                    tracing::warn!(package = %p.id, error = %e, "assigned package with a Sming app id is not announced");
                }
                continue;
            }
        };
        if let Err(e) = topic(app, version.major, version.minor) {
            if assigned.contains(&p.id) {
                tracing::warn!(package = %p.id, error = %e, "assigned package with a Sming app id is not announced");
            }
            continue;
        }
        let key = SmingTopic {
            app: app.to_owned(),
            major: version.major,
            minor: version.minor,
        };
        let slot = out.entry(key).or_default();
        if !assigned.contains(&p.id) {
            continue;
        }
        if p.data().is_none() {
            tracing::warn!(package = %p.id, "assigned Sming package has a URL, not stored data: not announced");
            continue;
        }
        let rank = |q: &OtaPackage| {
            let patch = package_target(q).and_then(Result::ok).map(|(_, v)| v.patch);
            (patch, q.created_time)
        };
        if slot.is_none_or(|best| rank(p) > rank(best)) {
            *slot = Some(p);
        }
    }
    out
}

/// The publishes that bring the broker from `retained` to `wanted`: an announce where another
/// (or no known) package is retained, a withdraw where a topic should be empty and is not
/// known to be — or where a topic this process announced has no package any more.
pub fn plan<'a, S: std::hash::BuildHasher>(
    wanted: &BTreeMap<SmingTopic, Option<&'a OtaPackage>>,
    retained: &HashMap<SmingTopic, Retained, S>,
) -> Vec<SmingAction<'a>> {
    let mut actions = Vec::new();
    for (t, want) in wanted {
        let have = retained.get(t);
        match want {
            Some(p) if have != Some(&Retained::Announced(p.id)) => {
                actions.push(SmingAction::Announce(t.clone(), p));
            }
            None if have != Some(&Retained::Withdrawn) => {
                actions.push(SmingAction::Withdraw(t.clone()));
            }
            _ => {}
        }
    }
    let mut gone: Vec<&SmingTopic> = retained
        .iter()
        .filter(|(t, r)| !wanted.contains_key(*t) && matches!(r, Retained::Announced(_)))
        .map(|(t, _)| t)
        .collect();
    gone.sort();
    actions.extend(gone.into_iter().cloned().map(SmingAction::Withdraw));
    actions
}

/// Firmware packages with a Sming app id, and the firmware of every profile and device.
async fn sming_catalogue(ota: &Ota) -> Result<(Vec<OtaPackage>, HashSet<PackageId>), StoreError> {
    let mut packages = Vec::new();
    let mut query = PackageQuery {
        page_size: 500,
        package_type: Some(PackageType::Firmware),
        ..PackageQuery::default()
    };
    loop {
        let page = ota.store().packages(&query).await?;
        packages.extend(page.data.into_iter().filter(|p| p.sming_app_id.is_some()));
        if !page.has_next {
            break;
        }
        query.page += 1;
    }
    let mut assigned = HashSet::new();
    if packages.is_empty() {
        return Ok((packages, assigned));
    }
    assigned.extend(
        ota.store()
            .profiles()
            .await?
            .iter()
            .filter_map(|p| p.firmware_id),
    );
    assigned.extend(
        ota.store()
            .devices()
            .await?
            .iter()
            .filter_map(|d| d.firmware_id),
    );
    Ok((packages, assigned))
}

/// Brings the broker in line with the catalogue; false when something must be retried.
async fn sming_reconcile(
    ota: &Ota,
    announcer: &SmingAnnouncer,
    retained: &mut HashMap<SmingTopic, Retained>,
) -> bool {
    let (packages, assigned) = match sming_catalogue(ota).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "reading packages for the Sming announces failed");
            return false;
        }
    };
    let wanted = wanted(&packages, &assigned);
    let mut ok = true;
    for action in plan(&wanted, retained) {
        match action {
            SmingAction::Announce(t, p) => match announce_package(announcer, ota, p).await {
                Ok(_) => {
                    retained.insert(t, Retained::Announced(p.id));
                }
                Err(e) => {
                    tracing::warn!(package = %p.id, error = %e, "Sming announce failed");
                    retained.remove(&t);
                    ok = false;
                }
            },
            SmingAction::Withdraw(t) => match announcer.withdraw(&t.app, t.major, t.minor).await {
                Ok(()) => {
                    retained.insert(t, Retained::Withdrawn);
                }
                Err(e) => {
                    tracing::warn!(app = %t.app, major = t.major, minor = t.minor, error = %e, "Sming withdraw failed");
                    ok = false;
                }
            },
        }
    }
    // Topics without packages that are known to be empty need no memory.
    retained.retain(|t, r| wanted.contains_key(t) || *r != Retained::Withdrawn);
    ok
}

fn sming_relevant(e: &CatalogEvent) -> bool {
    match e {
        CatalogEvent::Assignment(c) => c.package_type == PackageType::Firmware,
        CatalogEvent::DeviceSaved { .. } => false,
        _ => true,
    }
}

async fn sming_task(
    ota: Arc<Ota>,
    options: BrokerOptions,
    mut events: broadcast::Receiver<CatalogEvent>,
    resync: Duration,
) {
    let announcer = connect_with_retry("Sming announcer", &options, || {
        SmingAnnouncer::connect(options.clone())
    })
    .await;
    let mut retained = HashMap::new();
    let mut sessions = announcer.sessions();
    loop {
        let ok = sming_reconcile(&ota, &announcer, &mut retained).await;
        let deadline = Instant::now() + if ok { resync } else { RETRY };
        loop {
            let wake = deadline.min(Instant::now() + SESSION_CHECK);
            match timeout_at(wake, events.recv()).await {
                Err(_) if announcer.sessions() != sessions => {
                    // Reconnected: the broker may have lost what it retained.
                    sessions = announcer.sessions();
                    tracing::info!(
                        "Sming announcer reconnected to the MQTT broker; republishing every announce"
                    );
                    retained.clear();
                    break;
                }
                Err(_) if Instant::now() >= deadline => break,
                Ok(Err(RecvError::Lagged(_))) => break,
                Ok(Ok(e)) if sming_relevant(&e) => {
                    tokio::time::sleep(COALESCE).await;
                    while events.try_recv().is_ok() {}
                    break;
                }
                // Not yet due, or an event that does not concern the announces.
                Err(_) | Ok(Ok(_)) => {}
                Ok(Err(RecvError::Closed)) => return,
            }
        }
    }
}

struct Transfer {
    package: PackageId,
    address: EnigmaAddress,
    generation: u64,
    handle: JoinHandle<()>,
}

struct Enigma {
    ota: Arc<Ota>,
    sender: Arc<EnigmaSender>,
    permits: Arc<Semaphore>,
    running: HashMap<DeviceId, Transfer>,
    done: mpsc::UnboundedSender<(DeviceId, u64)>,
    generation: u64,
}

impl Enigma {
    fn cancel(&mut self, device: DeviceId, why: &str) {
        if let Some(t) = self.running.remove(&device) {
            if !t.handle.is_finished() {
                tracing::info!(%device, package = %t.package, reason = why, "EnigmaIoT OTA cancelled");
            }
            t.handle.abort();
        }
    }

    /// Starts, keeps, restarts or cancels the device's transfer (see the module docs).
    async fn evaluate(&mut self, id: DeviceId) -> Result<(), ServiceError> {
        let device = match self.ota.store().device(id).await {
            Ok(d) => d,
            Err(StoreError::NotFound { .. }) => {
                self.cancel(id, "device deleted");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let Some(address) = device.enigma.clone() else {
            self.cancel(id, "no EnigmaIoT address");
            return Ok(());
        };
        let package = self
            .ota
            .assigned_package(&device, PackageType::Firmware)
            .await?;
        let Some(package) = package else {
            self.cancel(id, "firmware assignment withdrawn");
            return Ok(());
        };
        if package.data().is_none() {
            tracing::warn!(device = %id, package = %package.id, "firmware has a URL, not stored data: not sent over EnigmaIoT");
            self.cancel(id, "firmware has no stored data");
            return Ok(());
        }
        if let Some(t) = self.running.get(&id)
            && t.package == package.id
            && t.address == address
            && !t.handle.is_finished()
        {
            return Ok(());
        }
        let state = self
            .ota
            .store()
            .update_state(id, PackageType::Firmware)
            .await?;
        let pending = state.target_package_id == Some(package.id)
            && state.state.is_some_and(|s| !s.is_final());
        if !pending {
            self.cancel(id, "firmware already delivered or failed");
            return Ok(());
        }
        let interrupted = self
            .running
            .get(&id)
            .is_some_and(|t| !t.handle.is_finished());
        self.cancel(id, "superseded by a newer assignment");
        self.generation += 1;
        let generation = self.generation;
        let (ota, sender, permits, done) = (
            self.ota.clone(),
            self.sender.clone(),
            self.permits.clone(),
            self.done.clone(),
        );
        let package_id = package.id;
        let handle = tokio::spawn(async move {
            if interrupted {
                tracing::info!(device = %device.id, wait = ?NODE_RESET, "EnigmaIoT node is reset by its OTA timeout before the new transfer");
                tokio::time::sleep(NODE_RESET).await;
            }
            // The semaphore is never closed.
            let _permit = permits.acquire_owned().await;
            let node = device
                .enigma
                .as_ref()
                .map(|a| format!("{}/{}", a.network, a.node));
            tracing::info!(device = %device.id, node = ?node, package = %package.id, version = %package.version, "EnigmaIoT OTA starting");
            match deliver_package(&sender, &ota, &device, &package).await {
                Ok(o) => {
                    tracing::info!(device = %device.id, chunks = o.chunks, resends = o.resends, restarts = o.restarts, "EnigmaIoT OTA finished");
                }
                Err(e) => tracing::warn!(device = %device.id, error = %e, "EnigmaIoT OTA failed"),
            }
            let _ = done.send((device.id, generation));
        });
        self.running.insert(
            id,
            Transfer {
                package: package_id,
                address,
                generation,
                handle,
            },
        );
        Ok(())
    }

    async fn evaluate_logged(&mut self, id: DeviceId) {
        if let Err(e) = self.evaluate(id).await {
            tracing::warn!(device = %id, error = %e, "checking the EnigmaIoT update failed");
        }
    }

    /// Checks every device with an EnigmaIoT address and every running transfer.
    async fn resync(&mut self) {
        let mut ids: Vec<DeviceId> = match self.ota.store().devices().await {
            Ok(all) => all
                .into_iter()
                .filter(|d| d.enigma.is_some())
                .map(|d| d.id)
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "listing devices for EnigmaIoT updates failed");
                Vec::new()
            }
        };
        ids.extend(self.running.keys().copied());
        ids.sort_unstable_by_key(ToString::to_string);
        ids.dedup();
        for id in ids {
            self.evaluate_logged(id).await;
        }
    }
}

async fn enigma_task(
    ota: Arc<Ota>,
    sender: Arc<EnigmaSender>,
    mut events: broadcast::Receiver<CatalogEvent>,
    concurrency: usize,
) {
    let (done, mut finished) = mpsc::unbounded_channel();
    let mut e = Enigma {
        ota,
        sender,
        permits: Arc::new(Semaphore::new(concurrency)),
        running: HashMap::new(),
        done,
        generation: 0,
    };
    e.resync().await;
    loop {
        tokio::select! {
            Some((id, generation)) = finished.recv() => {
                if e.running.get(&id).is_some_and(|t| t.generation == generation) {
                    e.running.remove(&id);
                }
            }
            r = events.recv() => match r {
                Ok(CatalogEvent::Assignment(c)) if c.package_type == PackageType::Firmware => {
                    e.evaluate_logged(c.device_id).await;
                }
                Ok(CatalogEvent::DeviceSaved { device }) => e.evaluate_logged(device).await,
                Ok(CatalogEvent::DeviceDeleted { device }) => e.cancel(device, "device deleted"),
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "EnigmaIoT sender fell behind the catalogue; re-checking every device");
                    e.resync().await;
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Retained, SmingAction, SmingTopic, plan, wanted};
    use ota_core::checksum::ChecksumAlgorithm;
    use ota_server::model::{
        OtaPackage, PackageData, PackageId, PackageSource, PackageType, ProfileId,
    };
    use std::collections::{HashMap, HashSet};

    fn pkg(app: Option<&str>, version: &str, created: i64, data: bool) -> OtaPackage {
        OtaPackage {
            id: PackageId::new_random(),
            created_time: created,
            profile_id: ProfileId::new_random(),
            package_type: PackageType::Firmware,
            title: "fw".into(),
            version: version.into(),
            tag: None,
            source: if data {
                PackageSource::Data(PackageData {
                    blob_key: "k".into(),
                    file_name: "f".into(),
                    content_type: "application/octet-stream".into(),
                    size: 1,
                    checksum_algorithm: ChecksumAlgorithm::Sha256,
                    checksum: String::new(),
                })
            } else {
                PackageSource::Pending
            },
            sming_app_id: app.map(str::to_owned),
            additional_info: None,
        }
    }

    fn t(app: &str, major: u32, minor: u32) -> SmingTopic {
        SmingTopic {
            app: app.into(),
            major,
            minor,
        }
    }

    #[test]
    fn the_highest_assigned_patch_of_a_topic_is_announced() {
        let old = pkg(Some("demo"), "4.3.7", 1, true);
        let new = pkg(Some("demo"), "4.3.12", 2, true);
        let other = pkg(Some("demo"), "4.4.0", 3, true);
        let plain = pkg(None, "4.3.99", 4, true);
        let bad = pkg(Some("demo"), "v5", 5, true);
        let wild = pkg(Some("de+mo"), "1.0.0", 6, true);
        let all = [
            old.clone(),
            new.clone(),
            other,
            plain.clone(),
            bad.clone(),
            wild,
        ];
        let assigned: HashSet<PackageId> = [old.id, new.id, plain.id, bad.id].into();
        let w = wanted(&all, &assigned);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[&t("demo", 4, 3)].map(|p| p.id), Some(new.id));
        assert_eq!(w[&t("demo", 4, 4)], None, "unassigned topic is withdrawn");

        // Only the old one assigned: it is announced; then unassigned: withdrawn.
        let w = wanted(&all, &[old.id].into());
        assert_eq!(w[&t("demo", 4, 3)].map(|p| p.id), Some(old.id));
    }

    #[test]
    fn packages_without_data_are_not_announced() {
        let url = pkg(Some("demo"), "1.2.3", 1, false);
        let w = wanted(std::slice::from_ref(&url), &[url.id].into());
        assert_eq!(w[&t("demo", 1, 2)], None);
    }

    #[test]
    fn plan_publishes_only_the_difference() {
        let a = pkg(Some("demo"), "4.3.7", 1, true);
        let b = pkg(Some("demo"), "4.3.8", 2, true);
        let all = [a.clone(), b.clone()];

        // Start: nothing known, nothing assigned: every topic is cleared once.
        let mut retained = HashMap::new();
        let w = wanted(&all, &HashSet::new());
        assert_eq!(
            plan(&w, &retained),
            [SmingAction::Withdraw(t("demo", 4, 3))]
        );
        retained.insert(t("demo", 4, 3), Retained::Withdrawn);
        assert_eq!(plan(&w, &retained), []);

        // a assigned: announced once.
        let w = wanted(&all, &[a.id].into());
        assert_eq!(
            plan(&w, &retained),
            [SmingAction::Announce(t("demo", 4, 3), &a)]
        );
        retained.insert(t("demo", 4, 3), Retained::Announced(a.id));
        assert_eq!(plan(&w, &retained), []);

        // b assigned too, then a unassigned: b replaces a, no withdraw.
        let w = wanted(&all, &[a.id, b.id].into());
        assert_eq!(
            plan(&w, &retained),
            [SmingAction::Announce(t("demo", 4, 3), &b)]
        );
        retained.insert(t("demo", 4, 3), Retained::Announced(b.id));
        let w = wanted(&all, &[b.id].into());
        assert_eq!(plan(&w, &retained), []);

        // Every package of the topic deleted while announced: withdrawn.
        let w = wanted(&[], &HashSet::new());
        assert_eq!(
            plan(&w, &retained),
            [SmingAction::Withdraw(t("demo", 4, 3))]
        );
    }
}
