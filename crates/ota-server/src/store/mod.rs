//! Persistent state: the [`Store`] trait and its SQL backends (SQLite, PostgreSQL).

mod cache;
mod sql;

pub use cache::CachedStore;
pub use sql::SqlStore;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::error::RuleError;
use crate::model::{
    Device, DeviceId, DeviceProfile, DeviceUpdateState, Millis, OtaPackage, PackageData, PackageId,
    PackageType, ProfileId,
};

/// A storage failure.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The operation broke a model rule; nothing was changed.
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// A referenced entity does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// `device`, `device profile`, `package`.
        what: &'static str,
        /// The id looked up.
        id: String,
    },
    /// A row could not be turned back into a model value.
    #[error("corrupt {what} row: {detail}")]
    Corrupt {
        /// Table.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The database URL is not `sqlite:` or `postgres:`.
    #[error("unsupported database URL {url:?}: expected sqlite://… or postgres://…")]
    UnsupportedUrl {
        /// The URL.
        url: String,
    },
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// One device whose effective package of one type changed, computed inside the transaction
/// that changed it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AssignmentChange {
    /// Device.
    pub device_id: DeviceId,
    /// Type.
    pub package_type: PackageType,
    /// Effective package before.
    pub old: Option<PackageId>,
    /// Effective package after.
    pub new: Option<PackageId>,
}

/// Sort keys of the package list (ThingsBoard's `sortProperty`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackageSort {
    /// `createdTime` (default).
    CreatedTime,
    /// `type`.
    Type,
    /// `title`.
    Title,
    /// `version`.
    Version,
    /// `tag`.
    Tag,
    /// `url`.
    Url,
    /// `fileName`.
    FileName,
    /// `dataSize`.
    DataSize,
    /// `checksum`.
    Checksum,
}

impl PackageSort {
    /// Parses ThingsBoard's `sortProperty` name.
    pub fn from_tb_name(s: &str) -> Option<Self> {
        Some(match s {
            "createdTime" => Self::CreatedTime,
            "type" => Self::Type,
            "title" => Self::Title,
            "version" => Self::Version,
            "tag" => Self::Tag,
            "url" => Self::Url,
            "fileName" => Self::FileName,
            "dataSize" => Self::DataSize,
            "checksum" => Self::Checksum,
            _ => return None,
        })
    }

    pub(crate) const fn column(self) -> &'static str {
        match self {
            Self::CreatedTime => "created_time",
            Self::Type => "package_type",
            Self::Title => "title",
            Self::Version => "version",
            Self::Tag => "tag",
            Self::Url => "url",
            Self::FileName => "file_name",
            Self::DataSize => "data_size",
            Self::Checksum => "checksum",
        }
    }
}

/// A page request over packages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageQuery {
    /// Zero-based page.
    pub page: u32,
    /// Rows per page (≥ 1).
    pub page_size: u32,
    /// Case-insensitive substring of the title.
    pub text_search: Option<String>,
    /// Sort key.
    pub sort: PackageSort,
    /// Descending order.
    pub descending: bool,
    /// Only this profile's packages.
    pub profile_id: Option<ProfileId>,
    /// Only this type.
    pub package_type: Option<PackageType>,
    /// Only packages with data or URL.
    pub with_data_only: bool,
}

impl Default for PackageQuery {
    fn default() -> Self {
        Self {
            page: 0,
            page_size: 10,
            text_search: None,
            sort: PackageSort::CreatedTime,
            descending: false,
            profile_id: None,
            package_type: None,
            with_data_only: false,
        }
    }
}

/// One page of results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The rows.
    pub data: Vec<T>,
    /// Rows matching in total.
    pub total_elements: u64,
    /// Pages in total.
    pub total_pages: u64,
    /// Whether a later page exists.
    pub has_next: bool,
}

/// Persistent state of the server. Every method is one transaction.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a device profile.
    async fn create_profile(&self, profile: &DeviceProfile) -> Result<(), StoreError>;
    /// A device profile.
    async fn profile(&self, id: ProfileId) -> Result<DeviceProfile, StoreError>;
    /// All device profiles, by name.
    async fn profiles(&self) -> Result<Vec<DeviceProfile>, StoreError>;
    /// Sets a profile's default packages; returns the devices (without their own package)
    /// whose effective package changed. QUEUED/withdrawn update states are written in the same
    /// transaction.
    async fn set_profile_packages(
        &self,
        id: ProfileId,
        firmware: Option<PackageId>,
        software: Option<PackageId>,
        now: Millis,
    ) -> Result<Vec<AssignmentChange>, StoreError>;

    /// Creates a device (its effective packages are offered: QUEUED states written).
    async fn create_device(
        &self,
        device: &Device,
        now: Millis,
    ) -> Result<Vec<AssignmentChange>, StoreError>;
    /// Replaces a device's name, profile, own packages and EnigmaIoT address (token and
    /// creation time are kept); returns the effective-package changes.
    async fn update_device(
        &self,
        device: &Device,
        now: Millis,
    ) -> Result<Vec<AssignmentChange>, StoreError>;
    /// Sets a device's access token.
    async fn set_device_token(&self, id: DeviceId, token: &str) -> Result<(), StoreError>;
    /// A device.
    async fn device(&self, id: DeviceId) -> Result<Device, StoreError>;
    /// The device with this access token, if any.
    async fn device_by_token(&self, token: &str) -> Result<Option<Device>, StoreError>;
    /// All devices, by name.
    async fn devices(&self) -> Result<Vec<Device>, StoreError>;
    /// Deletes a device, its update states and its client attributes.
    async fn delete_device(&self, id: DeviceId) -> Result<(), StoreError>;

    /// Creates package info (no data yet, or a URL).
    async fn create_package(&self, package: &OtaPackage) -> Result<(), StoreError>;
    /// A package.
    async fn package(&self, id: PackageId) -> Result<OtaPackage, StoreError>;
    /// A page of packages.
    async fn packages(&self, query: &PackageQuery) -> Result<Page<OtaPackage>, StoreError>;
    /// Records uploaded data; fails with [`RuleError::DataImmutable`] if data or a URL is set.
    async fn set_package_data(&self, id: PackageId, data: &PackageData) -> Result<(), StoreError>;
    /// Deletes a package not in use; returns the blob key it had, to delete from blob storage.
    async fn delete_package(&self, id: PackageId) -> Result<Option<String>, StoreError>;
    /// Blob keys referenced by packages (to collect orphaned blobs).
    async fn blob_keys(&self) -> Result<Vec<String>, StoreError>;

    /// The update state of a device for a type (empty if none stored).
    async fn update_state(
        &self,
        device: DeviceId,
        t: PackageType,
    ) -> Result<DeviceUpdateState, StoreError>;
    /// Writes an update state.
    async fn put_update_state(&self, state: &DeviceUpdateState) -> Result<(), StoreError>;
    /// Writes an update state only if the stored row still has state time
    /// `expected_state_time` (compare-and-set, so a read-modify-write cannot undo a report
    /// that landed in between); returns whether it was written. No stored row: not written.
    async fn put_update_state_if(
        &self,
        state: &DeviceUpdateState,
        expected_state_time: Millis,
    ) -> Result<bool, StoreError>;
    /// Sets only the download progress of a stored update state (no stored row: nothing is
    /// written), leaving every other column as the last writer left it.
    async fn set_progress(
        &self,
        device: DeviceId,
        t: PackageType,
        progress: u64,
    ) -> Result<(), StoreError>;
    /// Every stored update state (fleet view).
    async fn update_states(&self) -> Result<Vec<DeviceUpdateState>, StoreError>;

    /// Merges client-scope attributes into a device's: the given keys are replaced, the
    /// others kept, all in one transaction. If the device would then hold more than
    /// `max_keys` keys, fails with [`RuleError::TooManyAttributes`] and writes nothing.
    /// [`StoreError::NotFound`] if there is no such device.
    async fn merge_client_attributes(
        &self,
        device: DeviceId,
        attributes: &Map<String, Value>,
        max_keys: usize,
        now: Millis,
    ) -> Result<(), StoreError>;
    /// A device's client attributes: all of them, or only those named in `keys` (names
    /// without a value are left out). A device without attributes (or no device) has none.
    async fn client_attributes(
        &self,
        device: DeviceId,
        keys: Option<&[String]>,
    ) -> Result<Map<String, Value>, StoreError>;
}
