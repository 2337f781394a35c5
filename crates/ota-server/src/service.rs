//! The service layer: management operations (used by REST) and the [`DeviceApi`] every
//! transport calls. Handlers and transports stay thin; the rules live here and in
//! [`crate::rules`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use ota_core::checksum::{ChecksumAlgorithm, ChecksumError};
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::blob::{BlobError, BlobStore};
use crate::error::{AttributeError, ModelError, RuleError};
use crate::events::{AssignmentEvent, CATALOG_CAPACITY, CatalogEvent, Events};
use crate::model::{
    Device, DeviceId, DeviceProfile, OtaPackage, PackageData, PackageId, PackageSource,
    PackageType, UpdateState,
};
use crate::rules::{self, StateReport};
use crate::store::{AssignmentChange, CachedStore, Store, StoreError};

/// A service failure.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Storage failed or a rule was broken.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Blob storage failed (or the upload was too large).
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// A value was invalid.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A checksum algorithm or value could not be parsed.
    #[error(transparent)]
    Checksum(#[from] ChecksumError),
    /// The uploaded bytes do not match the declared checksum.
    #[error(
        "Wrong otaPackage file! {algorithm} checksum of the upload is {actual}, declared {declared:?}"
    )]
    ChecksumMismatch {
        /// Algorithm.
        algorithm: ChecksumAlgorithm,
        /// Declared value.
        declared: String,
        /// Computed value.
        actual: String,
    },
    /// The package has a URL or no data, so there are no bytes to serve.
    #[error("package {package} has no stored data")]
    NoStoredData {
        /// Package.
        package: PackageId,
    },
    /// The upload body was unreadable.
    #[error("upload failed: {0}")]
    Upload(String),
    /// Client attributes from a device were refused; nothing was stored.
    #[error(transparent)]
    Attributes(#[from] AttributeError),
}

impl From<RuleError> for ServiceError {
    fn from(e: RuleError) -> Self {
        Self::Store(StoreError::Rule(e))
    }
}

/// Tunables of the service.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Largest accepted upload, bytes.
    pub max_upload_bytes: u64,
    /// A non-final update older than this becomes `FAILED(TIMEOUT)`.
    pub update_timeout: Duration,
    /// How often coalesced progress is written.
    pub progress_flush: Duration,
    /// Packages kept in memory for chunk reads.
    pub cached_packages: usize,
    /// How long a device, profile or package row read for a device request may be reused.
    /// Writes through this service (and assignment changes heard from other replicas) clear
    /// the cache at once; the time-to-live bounds how long any other change made by another
    /// replica stays unseen. Zero disables the cache.
    pub lookup_cache_ttl: Duration,
    /// Most client attributes one device may hold.
    pub max_client_attributes: usize,
    /// Longest client attribute key, characters.
    pub max_attribute_key_chars: usize,
    /// Largest client attribute value, bytes of its JSON text.
    pub max_attribute_value_bytes: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 16 * 1024 * 1024,
            update_timeout: Duration::from_hours(1),
            progress_flush: Duration::from_secs(5),
            cached_packages: 16,
            lookup_cache_ttl: Duration::from_secs(2),
            max_client_attributes: 256,
            // ThingsBoard's attribute key column is `varchar(255)`.
            max_attribute_key_chars: 255,
            max_attribute_value_bytes: 4096,
        }
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The OTA service.
pub struct Ota {
    store: Arc<CachedStore>,
    blobs: BlobStore,
    events: Events,
    catalog: broadcast::Sender<CatalogEvent>,
    config: ServiceConfig,
    cache: Mutex<HashMap<PackageId, Bytes>>,
    progress: Mutex<HashMap<(DeviceId, PackageType), u64>>,
    fanout: std::sync::OnceLock<Fanout>,
}

/// Assignment changes sent through PostgreSQL NOTIFY so every replica hears them.
struct Fanout {
    pool: sqlx::PgPool,
    channel: String,
}

impl std::fmt::Debug for Ota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ota")
            .field("blobs", &self.blobs)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// An upload request (REST `POST /api/otaPackage/{id}`).
#[derive(Clone, Debug)]
pub struct UploadMeta {
    /// Algorithm to hash with.
    pub algorithm: ChecksumAlgorithm,
    /// Checksum the operator declared; must match byte for byte if given.
    pub declared: Option<String>,
    /// File name.
    pub file_name: String,
    /// Content type.
    pub content_type: String,
}

impl Ota {
    /// A service over a store and a blob store.
    pub fn new(store: Arc<dyn Store>, blobs: BlobStore, config: ServiceConfig) -> Self {
        Self {
            store: Arc::new(CachedStore::new(store, config.lookup_cache_ttl)),
            blobs,
            events: Events::default(),
            catalog: broadcast::channel(CATALOG_CAPACITY).0,
            config,
            cache: Mutex::new(HashMap::new()),
            progress: Mutex::new(HashMap::new()),
            fanout: std::sync::OnceLock::new(),
        }
    }

    /// Sends assignment changes through PostgreSQL `NOTIFY` on channel `ota_assign_{namespace}`
    /// and delivers those heard (from any replica, this one included) to local subscribers.
    /// Replicas sharing a database must use the same namespace; parallel tests use distinct
    /// ones so they do not hear each other. Listening has started when this returns.
    pub async fn enable_pg_fanout(
        self: &Arc<Self>,
        pool: sqlx::PgPool,
        namespace: &str,
    ) -> Result<(), ServiceError> {
        let channel = format!("ota_assign_{namespace}");
        let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
            .await
            .map_err(StoreError::from)?;
        listener.listen(&channel).await.map_err(StoreError::from)?;
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(n) => {
                        let Some(ota) = weak.upgrade() else { break };
                        match serde_json::from_str::<AssignmentChange>(n.payload()) {
                            Ok(change) => {
                                if let Err(e) = ota.publish_locally(&change).await {
                                    tracing::warn!(error = %e, "delivering a notified assignment failed");
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, payload = n.payload(), "bad assignment notification");
                            }
                        }
                    }
                    Err(e) => {
                        if weak.strong_count() == 0 {
                            break;
                        }
                        tracing::warn!(error = %e, "assignment listener lost its connection; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        // A second call keeps the first fan-out.
        let _ = self.fanout.set(Fanout { pool, channel });
        Ok(())
    }

    /// Computes the pushes of one change and hands them to this process's subscribers.
    async fn publish_locally(
        &self,
        c: &AssignmentChange,
    ) -> Result<Option<OtaPackage>, ServiceError> {
        // The change may come from another replica: forget rows it may have changed.
        self.store.invalidate();
        let new = match c.new {
            Some(id) => Some(self.store.package(id).await?),
            None => None,
        };
        self.catalog_event(CatalogEvent::Assignment(c.clone()));
        let pushes = rules::assignment_pushes(c.package_type, c.old, new.as_ref());
        if !pushes.is_empty() {
            self.events.publish(AssignmentEvent {
                device_id: c.device_id,
                package_type: c.package_type,
                pushes,
            });
        }
        Ok(new)
    }

    /// Future catalogue events (assignment changes, profile defaults, uploads, deletions,
    /// device saves) of this process; see [`CatalogEvent`] for what a consumer must do when
    /// it falls behind.
    pub fn catalog_events(&self) -> broadcast::Receiver<CatalogEvent> {
        self.catalog.subscribe()
    }

    fn catalog_event(&self, event: CatalogEvent) {
        // No receiver is not an error: nothing follows the catalogue.
        let _ = self.catalog.send(event);
    }

    /// The store (behind the lookup cache; writes through it clear the cache).
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Forgets every cached device, profile and package row, e.g. after changing the
    /// database behind this service's back.
    pub fn invalidate_cache(&self) {
        self.store.invalidate();
    }

    /// The blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// The configuration.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// Pushes the attribute changes for `changes` to subscribed sessions and marks the
    /// offers `INITIATED`.
    pub async fn announce(&self, changes: &[AssignmentChange]) -> Result<(), ServiceError> {
        for c in changes {
            if c.old == c.new {
                continue;
            }
            if let Some(f) = self.fanout.get() {
                let payload =
                    serde_json::to_string(c).map_err(|e| ServiceError::Upload(e.to_string()))?;
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(&f.channel)
                    .bind(payload)
                    .execute(&f.pool)
                    .await
                    .map_err(StoreError::from)?;
            } else {
                self.publish_locally(c).await?;
            }
            metrics::counter!("ota_assignment_pushes_total").increment(1);
            if c.new.is_some() {
                let mut s = self.store.update_state(c.device_id, c.package_type).await?;
                if s.state == Some(UpdateState::Queued) && s.target_package_id == c.new {
                    let queued_at = s.state_time;
                    s.state = Some(UpdateState::Initiated);
                    s.state_time = now_ms();
                    // Not if the device reported in between (its report wins).
                    self.store.put_update_state_if(&s, queued_at).await?;
                }
            }
        }
        Ok(())
    }

    /// Sets a profile's default packages and announces the changes.
    pub async fn set_profile_packages(
        &self,
        profile: &DeviceProfile,
    ) -> Result<Vec<AssignmentChange>, ServiceError> {
        let changes = self
            .store
            .set_profile_packages(
                profile.id,
                profile.firmware_id,
                profile.software_id,
                now_ms(),
            )
            .await?;
        self.announce(&changes).await?;
        self.catalog_event(CatalogEvent::ProfilePackages {
            profile: profile.id,
        });
        Ok(changes)
    }

    /// Creates a device and announces its packages.
    pub async fn create_device(
        &self,
        device: &Device,
    ) -> Result<Vec<AssignmentChange>, ServiceError> {
        let changes = self.store.create_device(device, now_ms()).await?;
        self.announce(&changes).await?;
        self.catalog_event(CatalogEvent::DeviceSaved { device: device.id });
        Ok(changes)
    }

    /// Updates a device and announces changed packages.
    pub async fn update_device(
        &self,
        device: &Device,
    ) -> Result<Vec<AssignmentChange>, ServiceError> {
        let changes = self.store.update_device(device, now_ms()).await?;
        self.announce(&changes).await?;
        self.catalog_event(CatalogEvent::DeviceSaved { device: device.id });
        Ok(changes)
    }

    /// Deletes a device and its update states.
    pub async fn delete_device(&self, id: DeviceId) -> Result<(), ServiceError> {
        self.store.delete_device(id).await?;
        self.catalog_event(CatalogEvent::DeviceDeleted { device: id });
        Ok(())
    }

    /// Streams an upload into blob storage, checks the checksum and records the data.
    /// On any failure nothing is stored.
    pub async fn upload<S, E>(
        &self,
        id: PackageId,
        meta: UploadMeta,
        mut body: S,
    ) -> Result<OtaPackage, ServiceError>
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        use futures_util::StreamExt;
        let pkg = self.store.package(id).await?;
        if pkg.has_data() {
            return Err(RuleError::DataImmutable { package: id }.into());
        }
        let key = format!("packages/{id}/{}", uuid::Uuid::new_v4());
        let mut writer = self
            .blobs
            .begin(&key, meta.algorithm, self.config.max_upload_bytes)
            .await?;
        while let Some(part) = body.next().await {
            match part {
                Ok(bytes) => writer.write(bytes).await?,
                Err(e) => {
                    let message = e.to_string();
                    writer.abort().await;
                    return Err(ServiceError::Upload(message));
                }
            }
        }
        let size = writer.size();
        let actual = writer.digest().to_string();
        if let Some(declared) = &meta.declared
            && *declared != actual
        {
            writer.abort().await;
            return Err(ServiceError::ChecksumMismatch {
                algorithm: meta.algorithm,
                declared: declared.clone(),
                actual,
            });
        }
        writer.finish().await?;
        let data = PackageData {
            blob_key: key.clone(),
            file_name: meta.file_name,
            content_type: meta.content_type,
            size,
            checksum_algorithm: meta.algorithm,
            checksum: actual,
        };
        if let Err(e) = self.store.set_package_data(id, &data).await {
            self.blobs.delete(&key).await?;
            return Err(e.into());
        }
        metrics::counter!("ota_uploads_total").increment(1);
        self.catalog_event(CatalogEvent::PackageUploaded { package: id });
        Ok(self.store.package(id).await?)
    }

    /// Deletes a package not in use, and its bytes.
    pub async fn delete_package(&self, id: PackageId) -> Result<(), ServiceError> {
        if let Some(key) = self.store.delete_package(id).await? {
            self.blobs.delete(&key).await?;
        }
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        self.catalog_event(CatalogEvent::PackageDeleted { package: id });
        Ok(())
    }

    /// The bytes of a stored-data package (cached).
    pub async fn package_bytes(&self, pkg: &OtaPackage) -> Result<Bytes, ServiceError> {
        if let Some(b) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&pkg.id)
        {
            return Ok(b.clone());
        }
        let PackageSource::Data(d) = &pkg.source else {
            return Err(ServiceError::NoStoredData { package: pkg.id });
        };
        let bytes = self.blobs.get(&d.blob_key).await?;
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= self.config.cached_packages.max(1)
            && let Some(evict) = cache.keys().next().copied()
        {
            cache.remove(&evict);
        }
        cache.insert(pkg.id, bytes.clone());
        Ok(bytes)
    }

    /// Moves every update stuck longer than the timeout to `FAILED(TIMEOUT)`; returns how many.
    pub async fn expire_stuck(&self, now: i64) -> Result<usize, ServiceError> {
        let timeout = i64::try_from(self.config.update_timeout.as_millis()).unwrap_or(i64::MAX);
        let mut n = 0;
        for s in self.store.update_states().await? {
            if let Some(failed) = rules::expire(&s, now, timeout)
                && self
                    .store
                    .put_update_state_if(&failed, s.state_time)
                    .await?
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Writes the coalesced progress values; returns how many were written.
    pub async fn flush_progress(&self) -> Result<usize, ServiceError> {
        let pending: Vec<((DeviceId, PackageType), u64)> = self
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        let n = pending.len();
        for ((device, t), bytes) in pending {
            // Only the progress column: a whole-row write here could undo a state report
            // recorded between our read and our write.
            self.store.set_progress(device, t, bytes).await?;
        }
        Ok(n)
    }
}

/// Takes a `[s·n, min(len, s·(n+1)))` slice, ThingsBoard style: size 0 is the whole file, a
/// start at or past the end is an empty chunk. Zero-copy.
pub fn chunk_of(bytes: &Bytes, index: u64, size: u64) -> Bytes {
    if size == 0 {
        return bytes.clone();
    }
    let len = bytes.len();
    let start = index
        .checked_mul(size)
        .and_then(|s| usize::try_from(s).ok())
        .unwrap_or(usize::MAX);
    if start >= len {
        return Bytes::new();
    }
    let end = usize::try_from(size)
        .ok()
        .and_then(|s| start.checked_add(s))
        .map_or(len, |e| e.min(len));
    bytes.slice(start..end)
}

/// Parses a client-attributes body (`POST /api/v1/{token}/attributes`, MQTT
/// `v1/devices/me/attributes`): it must be one JSON object, as ThingsBoard's
/// `JsonConverter.convertToAttributesProto` requires.
pub fn parse_client_attributes(body: &[u8]) -> Result<Map<String, Value>, AttributeError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(AttributeError::NotAnObject {
            got: match other {
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                Value::Bool(_) => "boolean",
                Value::Null => "null",
                Value::Object(_) => "object",
            },
        }),
        Err(e) => Err(AttributeError::NotJson(e.to_string())),
    }
}

/// Checks client attributes against the limits of `config` (the key count is checked
/// again against what is stored, when merging).
pub fn check_client_attributes(
    attributes: &Map<String, Value>,
    config: &ServiceConfig,
) -> Result<(), AttributeError> {
    if attributes.len() > config.max_client_attributes {
        return Err(AttributeError::TooManyKeys {
            count: attributes.len(),
            max: config.max_client_attributes,
        });
    }
    for (key, value) in attributes {
        if key.is_empty() {
            return Err(AttributeError::EmptyKey);
        }
        let len = key.chars().count();
        if len > config.max_attribute_key_chars {
            return Err(AttributeError::KeyTooLong {
                len,
                max: config.max_attribute_key_chars,
            });
        }
        if value.is_null() {
            return Err(AttributeError::NullValue { key: key.clone() });
        }
        let len = value.to_string().len();
        if len > config.max_attribute_value_bytes {
            return Err(AttributeError::ValueTooLarge {
                key: key.clone(),
                len,
                max: config.max_attribute_value_bytes,
            });
        }
    }
    Ok(())
}

/// What every transport (MQTT, HTTP, CoAP) calls.
#[async_trait]
pub trait DeviceApi: Send + Sync {
    /// The device with this access token.
    async fn authenticate(&self, token: &str) -> Result<Option<Device>, ServiceError>;
    /// The device's effective package of a type.
    async fn assigned_package(
        &self,
        device: &Device,
        t: PackageType,
    ) -> Result<Option<OtaPackage>, ServiceError>;
    /// The current assignment as ThingsBoard shared attributes (`fw_*` and `sw_*`).
    async fn shared_attributes(&self, device: &Device) -> Result<Map<String, Value>, ServiceError>;
    /// Chunk `index` of `size` bytes of a stored-data package (zero-copy from the cache).
    async fn read_chunk(
        &self,
        package: &OtaPackage,
        index: u64,
        size: u64,
    ) -> Result<Bytes, ServiceError>;
    /// Records one flat telemetry object from the device (state transitions are checked and
    /// written; progress is coalesced in memory).
    async fn record_telemetry(
        &self,
        device: &Device,
        values: &Map<String, Value>,
    ) -> Result<(), ServiceError>;
    /// Future assignment changes of one device.
    fn subscribe(&self, device: DeviceId) -> broadcast::Receiver<AssignmentEvent>;
    /// Merges client-scope attributes the device reported: the given keys are replaced, the
    /// others kept. Bad input fails with [`ServiceError::Attributes`] and stores nothing.
    /// The default stores nothing and fails with [`AttributeError::Unsupported`].
    async fn record_client_attributes(
        &self,
        device: &Device,
        attributes: &Map<String, Value>,
    ) -> Result<(), ServiceError> {
        let _ = (device, attributes);
        Err(AttributeError::Unsupported.into())
    }
    /// The device's client attributes: all, or only `keys` (keys without a value are left
    /// out). The default has none.
    async fn client_attributes(
        &self,
        device: &Device,
        keys: Option<&[String]>,
    ) -> Result<Map<String, Value>, ServiceError> {
        let _ = (device, keys);
        Ok(Map::new())
    }
}

#[async_trait]
impl DeviceApi for Ota {
    async fn authenticate(&self, token: &str) -> Result<Option<Device>, ServiceError> {
        Ok(self.store.device_by_token(token).await?)
    }

    async fn assigned_package(
        &self,
        device: &Device,
        t: PackageType,
    ) -> Result<Option<OtaPackage>, ServiceError> {
        let id = match device.package(t) {
            Some(id) => Some(id),
            None => self.store.profile(device.profile_id).await?.package(t),
        };
        match id {
            Some(id) => match self.store.package(id).await {
                Ok(p) => Ok(Some(p)),
                Err(StoreError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            },
            None => Ok(None),
        }
    }

    async fn shared_attributes(&self, device: &Device) -> Result<Map<String, Value>, ServiceError> {
        let mut all = Map::new();
        for t in PackageType::ALL {
            if let Some(pkg) = self.assigned_package(device, t).await? {
                all.extend(rules::shared_attributes(&pkg).0);
            }
        }
        Ok(all)
    }

    async fn read_chunk(
        &self,
        package: &OtaPackage,
        index: u64,
        size: u64,
    ) -> Result<Bytes, ServiceError> {
        let bytes = self.package_bytes(package).await?;
        Ok(chunk_of(&bytes, index, size))
    }

    async fn record_telemetry(
        &self,
        device: &Device,
        values: &Map<String, Value>,
    ) -> Result<(), ServiceError> {
        for t in PackageType::ALL {
            let Some(report) = StateReport::from_telemetry(t, values) else {
                continue;
            };
            if let Some(p) = report.progress {
                self.progress
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert((device.id, t), p);
            }
            if report.state.is_none()
                && report.current_title.is_none()
                && report.current_version.is_none()
            {
                continue;
            }
            let stored = self.store.update_state(device.id, t).await?;
            let outcome = rules::apply_report(&stored, &report, now_ms());
            if let Some(a) = &outcome.anomaly {
                tracing::warn!(device = %device.id, package_type = %t, anomaly = %a, "untrusted state report");
                metrics::counter!("ota_state_anomalies_total").increment(1);
            }
            if outcome.changed {
                self.store.put_update_state(&outcome.state).await?;
            }
        }
        Ok(())
    }

    fn subscribe(&self, device: DeviceId) -> broadcast::Receiver<AssignmentEvent> {
        self.events.subscribe(device)
    }

    async fn record_client_attributes(
        &self,
        device: &Device,
        attributes: &Map<String, Value>,
    ) -> Result<(), ServiceError> {
        check_client_attributes(attributes, &self.config)?;
        if attributes.is_empty() {
            return Ok(());
        }
        match self
            .store
            .merge_client_attributes(
                device.id,
                attributes,
                self.config.max_client_attributes,
                now_ms(),
            )
            .await
        {
            Err(StoreError::Rule(RuleError::TooManyAttributes { count, max })) => {
                Err(AttributeError::TooManyKeys { count, max }.into())
            }
            r => Ok(r?),
        }
    }

    async fn client_attributes(
        &self,
        device: &Device,
        keys: Option<&[String]>,
    ) -> Result<Map<String, Value>, ServiceError> {
        Ok(self.store.client_attributes(device.id, keys).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::{ServiceConfig, check_client_attributes, chunk_of, parse_client_attributes};
    use crate::error::AttributeError;
    use bytes::Bytes;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn client_attributes_round_trip(
            m in prop::collection::btree_map(".{1,16}", json_value(), 0..8)
        ) {
            let m: Map<String, Value> = m.into_iter().collect();
            let text = Value::Object(m.clone()).to_string();
            prop_assert_eq!(parse_client_attributes(text.as_bytes()), Ok(m.clone()));
            prop_assert_eq!(check_client_attributes(&m, &ServiceConfig::default()), Ok(()));
        }

        #[test]
        fn any_bytes_parse_or_fail_typed(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            match parse_client_attributes(&bytes) {
                Ok(m) => prop_assert!(serde_json::from_slice::<Value>(&bytes).is_ok_and(|v| v == Value::Object(m))),
                Err(AttributeError::NotJson(_) | AttributeError::NotAnObject { .. }) => {}
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }
    }

    #[test]
    fn non_objects_name_their_type() {
        for (body, got) in [
            (&b"[]"[..], "array"),
            (b"\"s\"", "string"),
            (b"1.5", "number"),
            (b"true", "boolean"),
            (b"null", "null"),
        ] {
            assert_eq!(
                parse_client_attributes(body),
                Err(AttributeError::NotAnObject { got })
            );
        }
    }

    #[test]
    fn chunks_follow_reference_vectors_2_to_6() {
        let b = Bytes::from_static(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(&chunk_of(&b, 0, 4)[..], &[0, 1, 2, 3]);
        assert_eq!(&chunk_of(&b, 1, 4)[..], &[4, 5, 6, 7]);
        assert_eq!(&chunk_of(&b, 2, 4)[..], &[8, 9]);
        assert!(chunk_of(&b, 3, 4).is_empty());
        assert!(chunk_of(&b, 999, 4).is_empty());
        assert_eq!(&chunk_of(&b, 0, 0)[..], &b[..]);
        assert!(chunk_of(&b, u64::MAX, u64::MAX).is_empty());
        assert_eq!(&chunk_of(&b, 0, u64::MAX)[..], &b[..]);
    }
}
