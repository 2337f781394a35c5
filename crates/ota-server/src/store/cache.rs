//! A read-through cache for the lookups every device request makes.
//!
//! Each HTTP request, CoAP block and MQTT chunk request authenticates a token and resolves
//! the device's effective package (device → profile → package). Done against the database,
//! that is two or three queries per 4 KiB served, which profiling showed to be most of the
//! server's time per chunk. [`CachedStore`] keeps those three lookups (device by token,
//! profile, package) in memory:
//!
//! - every write through it clears the cache (writes are rare next to chunk reads), and a
//!   generation counter keeps a read that raced a write from re-inserting the old row;
//! - [`CachedStore::invalidate`] clears it from outside — the service calls it for every
//!   assignment change it hears, including those another replica sent through PostgreSQL;
//! - entries expire after a time-to-live, which bounds how long a change made by another
//!   replica that sends no notification (a new token, a deleted device) stays unseen here;
//! - misses are not cached (a flood of bad tokens cannot fill memory), and each map is
//!   bounded: when full it is cleared and refilled.
//!
//! Update states are never cached: they are written on every report and read rarely.
//! Nothing in the crate ecosystem offers a cache that is invalidated by the writes of an
//! async trait object in this way, so this is a few maps behind one mutex.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{AssignmentChange, PackageQuery, Page, Store, StoreError};
use crate::model::{
    Device, DeviceId, DeviceProfile, DeviceUpdateState, Millis, OtaPackage, PackageData, PackageId,
    PackageType, ProfileId,
};

/// Entries per map before it is cleared and refilled.
const MAX_ENTRIES: usize = 100_000;
/// Size below which a map is never swept for expired rows.
const SWEEP_FLOOR: usize = 256;

struct Map<K, V> {
    rows: HashMap<K, (Instant, V)>,
    /// Size at which expired rows are dropped next: twice the live rows after the last
    /// sweep, so sweeping costs O(1) per insert, and rows of devices that connected once
    /// (a fleet reconnecting after a server restart) do not stay for the life of the
    /// process.
    sweep_at: usize,
}

impl<K: Eq + Hash, V: Clone> Map<K, V> {
    fn new() -> Self {
        Self {
            rows: HashMap::new(),
            sweep_at: SWEEP_FLOOR,
        }
    }

    fn get(&self, k: &K, ttl: Duration) -> Option<V> {
        self.rows
            .get(k)
            .filter(|(at, _)| at.elapsed() < ttl)
            .map(|(_, v)| v.clone())
    }

    fn put(&mut self, k: K, v: V, ttl: Duration) {
        if self.rows.len() >= self.sweep_at {
            self.rows.retain(|_, (at, _)| at.elapsed() < ttl);
            self.rows.shrink_to_fit();
            self.sweep_at = (self.rows.len() * 2).max(SWEEP_FLOOR);
        }
        if self.rows.len() >= MAX_ENTRIES {
            self.rows.clear();
        }
        self.rows.insert(k, (Instant::now(), v));
    }
}

struct Maps {
    generation: u64,
    tokens: Map<String, Device>,
    profiles: Map<ProfileId, DeviceProfile>,
    packages: Map<PackageId, OtaPackage>,
}

/// A [`Store`] that caches device-by-token, profile and package reads of another store.
pub struct CachedStore {
    inner: Arc<dyn Store>,
    ttl: Duration,
    maps: Mutex<Maps>,
}

impl std::fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl CachedStore {
    /// Caches `inner`'s lookups for at most `ttl` each; a zero `ttl` caches nothing.
    pub fn new(inner: Arc<dyn Store>, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            maps: Mutex::new(Maps {
                generation: 0,
                tokens: Map::new(),
                profiles: Map::new(),
                packages: Map::new(),
            }),
        }
    }

    /// The store behind the cache.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    /// Forgets every cached row.
    pub fn invalidate(&self) {
        let mut m = self.lock();
        m.generation = m.generation.wrapping_add(1);
        m.tokens.rows.clear();
        m.profiles.rows.clear();
        m.packages.rows.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A cached row, or the generation to insert a fresh one under.
    fn lookup<K: Eq + Hash, V: Clone>(
        &self,
        pick: impl FnOnce(&Maps) -> &Map<K, V>,
        k: &K,
    ) -> Result<V, u64> {
        let m = self.lock();
        pick(&m).get(k, self.ttl).ok_or(m.generation)
    }

    /// Inserts a row read under `generation` unless a write happened since.
    fn remember<K: Eq + Hash, V: Clone>(
        &self,
        generation: u64,
        pick: impl FnOnce(&mut Maps) -> &mut Map<K, V>,
        k: K,
        v: V,
    ) {
        if self.ttl.is_zero() {
            return;
        }
        let mut m = self.lock();
        if m.generation == generation {
            pick(&mut m).put(k, v, self.ttl);
        }
    }

    /// Runs a write, then forgets every cached row (also when the write failed: it may
    /// have committed before the error reached us).
    fn written<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        self.invalidate();
        r
    }
}

#[async_trait]
impl Store for CachedStore {
    async fn create_profile(&self, profile: &DeviceProfile) -> Result<(), StoreError> {
        self.written(self.inner.create_profile(profile).await)
    }

    async fn profile(&self, id: ProfileId) -> Result<DeviceProfile, StoreError> {
        match self.lookup(|m| &m.profiles, &id) {
            Ok(p) => Ok(p),
            Err(generation) => {
                let p = self.inner.profile(id).await?;
                self.remember(generation, |m| &mut m.profiles, id, p.clone());
                Ok(p)
            }
        }
    }

    async fn profiles(&self) -> Result<Vec<DeviceProfile>, StoreError> {
        self.inner.profiles().await
    }

    async fn set_profile_packages(
        &self,
        id: ProfileId,
        firmware: Option<PackageId>,
        software: Option<PackageId>,
        now: Millis,
    ) -> Result<Vec<AssignmentChange>, StoreError> {
        let r = self
            .inner
            .set_profile_packages(id, firmware, software, now)
            .await;
        self.written(r)
    }

    async fn create_device(
        &self,
        device: &Device,
        now: Millis,
    ) -> Result<Vec<AssignmentChange>, StoreError> {
        self.written(self.inner.create_device(device, now).await)
    }

    async fn update_device(
        &self,
        device: &Device,
        now: Millis,
    ) -> Result<Vec<AssignmentChange>, StoreError> {
        self.written(self.inner.update_device(device, now).await)
    }

    async fn set_device_token(&self, id: DeviceId, token: &str) -> Result<(), StoreError> {
        self.written(self.inner.set_device_token(id, token).await)
    }

    async fn device(&self, id: DeviceId) -> Result<Device, StoreError> {
        self.inner.device(id).await
    }

    async fn device_by_token(&self, token: &str) -> Result<Option<Device>, StoreError> {
        let key = token.to_owned();
        match self.lookup(|m| &m.tokens, &key) {
            Ok(d) => Ok(Some(d)),
            Err(generation) => {
                let d = self.inner.device_by_token(token).await?;
                if let Some(d) = &d {
                    self.remember(generation, |m| &mut m.tokens, key, d.clone());
                }
                Ok(d)
            }
        }
    }

    async fn devices(&self) -> Result<Vec<Device>, StoreError> {
        self.inner.devices().await
    }

    async fn delete_device(&self, id: DeviceId) -> Result<(), StoreError> {
        self.written(self.inner.delete_device(id).await)
    }

    async fn create_package(&self, package: &OtaPackage) -> Result<(), StoreError> {
        self.written(self.inner.create_package(package).await)
    }

    async fn package(&self, id: PackageId) -> Result<OtaPackage, StoreError> {
        match self.lookup(|m| &m.packages, &id) {
            Ok(p) => Ok(p),
            Err(generation) => {
                let p = self.inner.package(id).await?;
                self.remember(generation, |m| &mut m.packages, id, p.clone());
                Ok(p)
            }
        }
    }

    async fn packages(&self, query: &PackageQuery) -> Result<Page<OtaPackage>, StoreError> {
        self.inner.packages(query).await
    }

    async fn set_package_data(&self, id: PackageId, data: &PackageData) -> Result<(), StoreError> {
        self.written(self.inner.set_package_data(id, data).await)
    }

    async fn delete_package(&self, id: PackageId) -> Result<Option<String>, StoreError> {
        self.written(self.inner.delete_package(id).await)
    }

    async fn blob_keys(&self) -> Result<Vec<String>, StoreError> {
        self.inner.blob_keys().await
    }

    async fn update_state(
        &self,
        device: DeviceId,
        t: PackageType,
    ) -> Result<DeviceUpdateState, StoreError> {
        self.inner.update_state(device, t).await
    }

    async fn put_update_state(&self, state: &DeviceUpdateState) -> Result<(), StoreError> {
        self.inner.put_update_state(state).await
    }

    async fn put_update_state_if(
        &self,
        state: &DeviceUpdateState,
        expected_state_time: Millis,
    ) -> Result<bool, StoreError> {
        self.inner
            .put_update_state_if(state, expected_state_time)
            .await
    }

    async fn set_progress(
        &self,
        device: DeviceId,
        t: PackageType,
        progress: u64,
    ) -> Result<(), StoreError> {
        self.inner.set_progress(device, t, progress).await
    }

    async fn update_states(&self) -> Result<Vec<DeviceUpdateState>, StoreError> {
        self.inner.update_states().await
    }

    // Client attributes are never cached: they are read only on a device's request and
    // their writes do not touch any cached row.
    async fn merge_client_attributes(
        &self,
        device: DeviceId,
        attributes: &serde_json::Map<String, serde_json::Value>,
        max_keys: usize,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.inner
            .merge_client_attributes(device, attributes, max_keys, now)
            .await
    }

    async fn client_attributes(
        &self,
        device: DeviceId,
        keys: Option<&[String]>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
        self.inner.client_attributes(device, keys).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_rows_are_swept_as_the_map_grows() {
        let ttl = Duration::from_millis(20);
        let mut m = Map::new();
        for k in 0..SWEEP_FLOOR {
            m.put(k, k, ttl);
        }
        std::thread::sleep(ttl * 2);
        // The next insert past the sweep size drops every expired row.
        m.put(SWEEP_FLOOR, SWEEP_FLOOR, ttl);
        assert_eq!(m.rows.len(), 1);
        assert_eq!(m.get(&SWEEP_FLOOR, ttl), Some(SWEEP_FLOOR));
        assert_eq!(m.get(&0, ttl), None);
        // Rows within their TTL survive a sweep.
        let long = Duration::from_hours(1);
        let mut m = Map::new();
        for k in 0..=SWEEP_FLOOR {
            m.put(k, k, long);
        }
        assert_eq!(m.rows.len(), SWEEP_FLOOR + 1);
        assert_eq!(m.get(&0, long), Some(0));
    }
}
