//! The server's entities: packages, device profiles, devices and per-device update states.
//!
//! Values here are already validated; parsing from the outside world happens at the edges
//! (REST, store rows, device telemetry).

use std::fmt;
use std::str::FromStr;

use ota_core::checksum::ChecksumAlgorithm;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ModelError;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh random id.
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = ModelError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s)
                    .map(Self)
                    .map_err(|_| ModelError::InvalidId { value: s.to_owned() })
            }
        }
    };
}

id_type!(
    /// Identifies an [`OtaPackage`].
    PackageId
);
id_type!(
    /// Identifies a [`DeviceProfile`].
    ProfileId
);
id_type!(
    /// Identifies a [`Device`].
    DeviceId
);

/// Milliseconds since the Unix epoch (ThingsBoard's `createdTime`/`ts` unit).
pub type Millis = i64;

/// Firmware or software: the two independent update channels of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PackageType {
    /// Firmware (`fw_*` attributes, `v2/fw/...` topics).
    Firmware,
    /// Software (`sw_*` attributes, `v2/sw/...` topics).
    Software,
}

impl PackageType {
    /// Both types, firmware first.
    pub const ALL: [Self; 2] = [Self::Firmware, Self::Software];

    /// ThingsBoard's name: `FIRMWARE` or `SOFTWARE`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Firmware => "FIRMWARE",
            Self::Software => "SOFTWARE",
        }
    }

    /// Attribute key prefix: `fw` or `sw`.
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Firmware => "fw",
            Self::Software => "sw",
        }
    }
}

impl fmt::Display for PackageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PackageType {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "FIRMWARE" => Ok(Self::Firmware),
            "SOFTWARE" => Ok(Self::Software),
            other => Err(ModelError::InvalidPackageType {
                value: other.to_owned(),
            }),
        }
    }
}

/// Stored bytes of a package (set once by an upload, immutable afterwards).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageData {
    /// Key of the bytes in the blob store.
    pub blob_key: String,
    /// File name given at upload.
    pub file_name: String,
    /// Content type given at upload.
    pub content_type: String,
    /// Length in bytes.
    pub size: u64,
    /// Checksum algorithm.
    pub checksum_algorithm: ChecksumAlgorithm,
    /// Checksum in ThingsBoard's lowercase hex encoding.
    pub checksum: String,
}

/// An external URL the device downloads from itself (ThingsBoard `usesUrl`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageUrl {
    /// The URL.
    pub url: String,
    /// Checksum algorithm, if the operator gave one.
    pub checksum_algorithm: Option<ChecksumAlgorithm>,
    /// Checksum, if the operator gave one.
    pub checksum: Option<String>,
}

/// Where a package's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PackageSource {
    /// Info created, no bytes uploaded yet: cannot be assigned.
    Pending,
    /// Bytes in the blob store.
    Data(PackageData),
    /// External URL.
    Url(PackageUrl),
}

/// An OTA package: what a device is told to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtaPackage {
    /// Id.
    pub id: PackageId,
    /// Creation time.
    pub created_time: Millis,
    /// The device profile it belongs to; only devices of that profile may get it.
    pub profile_id: ProfileId,
    /// Firmware or software.
    pub package_type: PackageType,
    /// Title (`fw_title`).
    pub title: String,
    /// Version (`fw_version`).
    pub version: String,
    /// Optional tag (`fw_tag`).
    pub tag: Option<String>,
    /// Where the bytes are.
    pub source: PackageSource,
    /// Sming application id for the retained announce, if the package is announced that way.
    pub sming_app_id: Option<String>,
    /// Free JSON kept for the operator (ThingsBoard `additionalInfo`).
    pub additional_info: Option<serde_json::Value>,
}

impl OtaPackage {
    /// Whether the package can be assigned: it has stored bytes or a URL.
    pub fn has_data(&self) -> bool {
        !matches!(self.source, PackageSource::Pending)
    }

    /// The stored data, if any.
    pub fn data(&self) -> Option<&PackageData> {
        match &self.source {
            PackageSource::Data(d) => Some(d),
            _ => None,
        }
    }
}

/// Limits on user-supplied package fields (ThingsBoard: 255 characters).
pub const MAX_TEXT_LEN: usize = 255;

/// Checks a title, version or tag: non-blank, at most [`MAX_TEXT_LEN`] characters.
pub fn check_text(field: &'static str, value: &str) -> Result<(), ModelError> {
    if value.trim().is_empty() {
        return Err(ModelError::Blank { field });
    }
    let len = value.chars().count();
    if len > MAX_TEXT_LEN {
        return Err(ModelError::TooLong {
            field,
            len,
            max: MAX_TEXT_LEN,
        });
    }
    Ok(())
}

/// A device profile: groups devices and carries their default packages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceProfile {
    /// Id.
    pub id: ProfileId,
    /// Creation time.
    pub created_time: Millis,
    /// Unique name.
    pub name: String,
    /// Default firmware for devices of this profile without their own.
    pub firmware_id: Option<PackageId>,
    /// Default software for devices of this profile without their own.
    pub software_id: Option<PackageId>,
}

impl DeviceProfile {
    /// The default package of the given type.
    pub fn package(&self, t: PackageType) -> Option<PackageId> {
        match t {
            PackageType::Firmware => self.firmware_id,
            PackageType::Software => self.software_id,
        }
    }
}

/// The optional EnigmaIoT address of a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnigmaAddress {
    /// Network name (first topic level).
    pub network: String,
    /// Node address (second topic level).
    pub node: String,
}

/// A device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Id.
    pub id: DeviceId,
    /// Creation time.
    pub created_time: Millis,
    /// Unique name.
    pub name: String,
    /// Profile.
    pub profile_id: ProfileId,
    /// Access token (MQTT user name, HTTP/CoAP path segment).
    pub access_token: String,
    /// Own firmware: overrides the profile's when set.
    pub firmware_id: Option<PackageId>,
    /// Own software: overrides the profile's when set.
    pub software_id: Option<PackageId>,
    /// EnigmaIoT address, for devices reached through an EnigmaIoT gateway.
    pub enigma: Option<EnigmaAddress>,
}

impl Device {
    /// The device's own package of the given type.
    pub fn package(&self, t: PackageType) -> Option<PackageId> {
        match t {
            PackageType::Firmware => self.firmware_id,
            PackageType::Software => self.software_id,
        }
    }
}

/// ThingsBoard's `OtaPackageUpdateStatus`, the update state of one device and type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum UpdateState {
    /// Assignment saved, not yet pushed.
    Queued,
    /// Attributes pushed to the device.
    Initiated,
    /// The device is downloading.
    Downloading,
    /// All bytes received.
    Downloaded,
    /// Checksum verified.
    Verified,
    /// Being applied.
    Updating,
    /// Running the target package (final).
    Updated,
    /// Failed (final; a new offer restarts).
    Failed,
}

impl UpdateState {
    /// ThingsBoard's name (`QUEUED`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::Initiated => "INITIATED",
            Self::Downloading => "DOWNLOADING",
            Self::Downloaded => "DOWNLOADED",
            Self::Verified => "VERIFIED",
            Self::Updating => "UPDATING",
            Self::Updated => "UPDATED",
            Self::Failed => "FAILED",
        }
    }

    /// `UPDATED` or `FAILED`: nothing more will happen without a new offer.
    pub const fn is_final(self) -> bool {
        matches!(self, Self::Updated | Self::Failed)
    }

    /// Position in the normal progression (`QUEUED` = 0 … `UPDATED` = 6); `FAILED` has none.
    pub const fn rank(self) -> Option<u8> {
        match self {
            Self::Queued => Some(0),
            Self::Initiated => Some(1),
            Self::Downloading => Some(2),
            Self::Downloaded => Some(3),
            Self::Verified => Some(4),
            Self::Updating => Some(5),
            Self::Updated => Some(6),
            Self::Failed => None,
        }
    }
}

impl fmt::Display for UpdateState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for UpdateState {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "QUEUED" => Self::Queued,
            "INITIATED" => Self::Initiated,
            "DOWNLOADING" => Self::Downloading,
            "DOWNLOADED" => Self::Downloaded,
            "VERIFIED" => Self::Verified,
            "UPDATING" => Self::Updating,
            "UPDATED" => Self::Updated,
            "FAILED" => Self::Failed,
            other => {
                return Err(ModelError::InvalidState {
                    value: other.to_owned(),
                });
            }
        })
    }
}

/// The update state of one device for one package type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceUpdateState {
    /// Device.
    pub device_id: DeviceId,
    /// Firmware or software.
    #[serde(rename = "type")]
    pub package_type: PackageType,
    /// Title the device last reported running.
    pub current_title: Option<String>,
    /// Version the device last reported running.
    pub current_version: Option<String>,
    /// Package offered to the device (absent: nothing offered).
    pub target_package_id: Option<PackageId>,
    /// Title offered.
    pub target_title: Option<String>,
    /// Version offered.
    pub target_version: Option<String>,
    /// State (absent: nothing offered yet).
    pub state: Option<UpdateState>,
    /// Error text of the last `FAILED`.
    pub error: Option<String>,
    /// Bytes downloaded so far, as last reported (coalesced, may lag).
    pub progress: u64,
    /// When `state` was entered.
    pub state_time: Millis,
    /// Number of reports that were recorded as anomalies.
    pub anomalies: u64,
}

impl DeviceUpdateState {
    /// A state with nothing offered and nothing reported.
    pub fn empty(device_id: DeviceId, package_type: PackageType) -> Self {
        Self {
            device_id,
            package_type,
            current_title: None,
            current_version: None,
            target_package_id: None,
            target_title: None,
            target_version: None,
            state: None,
            error: None,
            progress: 0,
            state_time: 0,
            anomalies: 0,
        }
    }
}
