//! Errors of the server, one enum per layer.

use crate::model::{PackageId, PackageType, ProfileId, UpdateState};

/// A value from outside could not become a model value.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// Not a UUID.
    #[error("invalid id {value:?}: expected a UUID")]
    InvalidId {
        /// The rejected text.
        value: String,
    },
    /// Not `FIRMWARE`/`SOFTWARE`.
    #[error("invalid package type {value:?}: expected FIRMWARE or SOFTWARE")]
    InvalidPackageType {
        /// The rejected text.
        value: String,
    },
    /// Not one of ThingsBoard's update states.
    #[error("invalid update state {value:?}")]
    InvalidState {
        /// The rejected text.
        value: String,
    },
    /// A required text field is blank.
    #[error("{field} must not be blank")]
    Blank {
        /// Field name.
        field: &'static str,
    },
    /// A text field is too long.
    #[error("{field} is {len} characters long, at most {max} allowed")]
    TooLong {
        /// Field name.
        field: &'static str,
        /// Characters given.
        len: usize,
        /// Limit.
        max: usize,
    },
}

/// An operation broke a rule of the model.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The package belongs to another device profile.
    #[error("package {package} belongs to device profile {package_profile}, not to {profile}")]
    ProfileMismatch {
        /// Package.
        package: PackageId,
        /// The package's profile.
        package_profile: ProfileId,
        /// The profile it was assigned within.
        profile: ProfileId,
    },
    /// A software package given as firmware or the reverse.
    #[error("package {package} is {actual}, cannot be assigned as {expected}")]
    TypeMismatch {
        /// Package.
        package: PackageId,
        /// Its type.
        actual: PackageType,
        /// The slot it was given for.
        expected: PackageType,
    },
    /// The package has neither uploaded bytes nor a URL.
    #[error("package {package} has no data: upload a file or give a URL first")]
    NoData {
        /// Package.
        package: PackageId,
    },
    /// The package is assigned to a device or profile.
    #[error("package {package} is in use by a device or device profile and cannot be deleted")]
    InUse {
        /// Package.
        package: PackageId,
    },
    /// Title and version already taken within the profile and type.
    #[error("OtaPackage with such title and version already exists! ({title} {version})")]
    Duplicate {
        /// Title.
        title: String,
        /// Version.
        version: String,
    },
    /// Bytes were already uploaded, or the package uses a URL.
    #[error("package {package} data cannot be changed once set")]
    DataImmutable {
        /// Package.
        package: PackageId,
    },
    /// A device profile still has devices or packages.
    #[error("device profile {profile} is in use by devices or packages and cannot be deleted")]
    ProfileInUse {
        /// Profile.
        profile: ProfileId,
    },
    /// A name (device, profile) or access token is taken.
    #[error("{what} {value:?} already exists")]
    NameTaken {
        /// `device name`, `profile name` or `access token`.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// A device would hold more client attributes than allowed.
    #[error("device would have {count} client attributes, at most {max} allowed")]
    TooManyAttributes {
        /// Keys after the merge.
        count: usize,
        /// Limit.
        max: usize,
    },
}

/// Client attributes a device sent that cannot be stored; nothing of the request was
/// stored.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    /// The body is not JSON.
    #[error("client attributes are not JSON: {0}")]
    NotJson(String),
    /// The body is JSON but not an object (ThingsBoard answers these with `400` too).
    #[error("client attributes must be a JSON object, got {got}")]
    NotAnObject {
        /// `array`, `string`, `number`, `boolean`, `null`.
        got: &'static str,
    },
    /// A key is the empty string.
    #[error("client attribute keys must not be empty")]
    EmptyKey,
    /// A key is too long.
    #[error("client attribute key of {len} characters, at most {max} allowed")]
    KeyTooLong {
        /// Characters given.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A value is `null` (ThingsBoard's converter cannot parse `null` either).
    #[error("client attribute {key:?} is null")]
    NullValue {
        /// The key.
        key: String,
    },
    /// A value is too large.
    #[error("client attribute {key:?} is {len} bytes of JSON, at most {max} allowed")]
    ValueTooLarge {
        /// The key.
        key: String,
        /// Bytes of its JSON text.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The device would hold too many keys.
    #[error("device would have {count} client attributes, at most {max} allowed")]
    TooManyKeys {
        /// Keys after the merge.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// This device API does not store client attributes.
    #[error("client attributes are not stored by this service")]
    Unsupported,
}

/// A reported state that the server did not trust.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Anomaly {
    /// A progress state while nothing was offered.
    #[error("reported {reported} but no package was offered")]
    NothingOffered {
        /// Reported state.
        reported: UpdateState,
    },
    /// `UPDATED` with a title/version other than the offered one.
    #[error(
        "reported UPDATED running {title:?} {version:?}, offered {target_title:?} {target_version:?}"
    )]
    WrongPackage {
        /// Reported current title.
        title: Option<String>,
        /// Reported current version.
        version: Option<String>,
        /// Offered title.
        target_title: String,
        /// Offered version.
        target_version: String,
    },
    /// A backwards or otherwise impossible jump.
    #[error("impossible transition {from} -> {to}")]
    ImpossibleTransition {
        /// Stored state.
        from: UpdateState,
        /// Reported state.
        to: UpdateState,
    },
    /// States the server sets itself (`QUEUED`, `INITIATED`) cannot be reported.
    #[error("{reported} is set by the server, not reported by devices")]
    ServerState {
        /// Reported state.
        reported: UpdateState,
    },
}
