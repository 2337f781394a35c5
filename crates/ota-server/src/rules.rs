//! The assignment and update-state rules (ThingsBoard reference §6–7), as pure functions.

use serde_json::{Map, Value};

use crate::error::{Anomaly, RuleError};
use crate::model::{
    Device, DeviceProfile, DeviceUpdateState, Millis, OtaPackage, PackageId, PackageSource,
    PackageType, ProfileId, UpdateState,
};

/// The package a device should run: its own if set, else its profile's.
///
/// ```
/// # use ota_server::model::*;
/// # use ota_server::rules::effective_package;
/// let p = PackageId::new_random();
/// let own = PackageId::new_random();
/// assert_eq!(effective_package(Some(own), Some(p)), Some(own));
/// assert_eq!(effective_package(None, Some(p)), Some(p));
/// ```
pub fn effective_package(
    device_own: Option<PackageId>,
    profile_default: Option<PackageId>,
) -> Option<PackageId> {
    device_own.or(profile_default)
}

/// [`effective_package`] for a device and its profile.
pub fn effective_for(
    device: &Device,
    profile: &DeviceProfile,
    t: PackageType,
) -> Option<PackageId> {
    effective_package(device.package(t), profile.package(t))
}

/// The nine keys ThingsBoard deletes when a package is unassigned, in its key-enum order.
pub fn all_attribute_keys(t: PackageType) -> Vec<String> {
    [
        "title",
        "version",
        "ts",
        "state",
        "size",
        "checksum",
        "checksum_algorithm",
        "url",
        "tag",
    ]
    .iter()
    .map(|k| format!("{}_{k}", t.prefix()))
    .collect()
}

/// The shared attributes announcing `pkg` (§6.1) and the keys that do not apply to it
/// (pushed as `{"deleted":[…]}` first).
pub fn shared_attributes(pkg: &OtaPackage) -> (Map<String, Value>, Vec<String>) {
    let p = pkg.package_type.prefix();
    let key = |k: &str| format!("{p}_{k}");
    let mut set = Map::new();
    let mut deleted = Vec::new();
    set.insert(key("title"), Value::from(pkg.title.clone()));
    set.insert(key("version"), Value::from(pkg.version.clone()));
    match pkg.tag.as_deref().filter(|t| !t.is_empty()) {
        Some(tag) => {
            set.insert(key("tag"), Value::from(tag));
        }
        None => deleted.push(key("tag")),
    }
    match &pkg.source {
        PackageSource::Data(d) => {
            set.insert(key("size"), Value::from(d.size));
            set.insert(
                key("checksum_algorithm"),
                Value::from(d.checksum_algorithm.tb_name()),
            );
            set.insert(key("checksum"), Value::from(d.checksum.clone()));
            deleted.push(key("url"));
        }
        PackageSource::Url(u) => {
            set.insert(key("url"), Value::from(u.url.clone()));
            deleted.push(key("size"));
            if let (Some(a), Some(c)) = (u.checksum_algorithm, &u.checksum) {
                set.insert(key("checksum_algorithm"), Value::from(a.tb_name()));
                set.insert(key("checksum"), Value::from(c.clone()));
            } else {
                deleted.push(key("checksum_algorithm"));
                deleted.push(key("checksum"));
            }
        }
        PackageSource::Pending => {}
    }
    (set, deleted)
}

/// One message pushed to a device subscribed to its shared attributes.
#[derive(Clone, Debug, PartialEq)]
pub enum AttributePush {
    /// `{"deleted":[keys]}`.
    Deleted(Vec<String>),
    /// `{"key":value,…}`.
    Set(Map<String, Value>),
}

impl AttributePush {
    /// The JSON payload ThingsBoard sends on `v1/devices/me/attributes`.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Deleted(keys) => serde_json::json!({ "deleted": keys }),
            Self::Set(m) => Value::Object(m.clone()),
        }
    }
}

/// What must be pushed when a device's effective package of type `t` changes from `old` to
/// `new`: nothing if unchanged; the full deletion when unassigned; else the not-applicable
/// deletion followed by the new attributes.
pub fn assignment_pushes(
    t: PackageType,
    old: Option<PackageId>,
    new: Option<&OtaPackage>,
) -> Vec<AttributePush> {
    if old == new.map(|p| p.id) {
        return Vec::new();
    }
    match new {
        None => vec![AttributePush::Deleted(all_attribute_keys(t))],
        Some(pkg) => {
            let (set, deleted) = shared_attributes(pkg);
            vec![AttributePush::Deleted(deleted), AttributePush::Set(set)]
        }
    }
}

/// Checks that `pkg` may be assigned as type `t` within device profile `profile`.
pub fn check_assignable(
    profile: ProfileId,
    t: PackageType,
    pkg: &OtaPackage,
) -> Result<(), RuleError> {
    if pkg.package_type != t {
        return Err(RuleError::TypeMismatch {
            package: pkg.id,
            actual: pkg.package_type,
            expected: t,
        });
    }
    if pkg.profile_id != profile {
        return Err(RuleError::ProfileMismatch {
            package: pkg.id,
            package_profile: pkg.profile_id,
            profile,
        });
    }
    if !pkg.has_data() {
        return Err(RuleError::NoData { package: pkg.id });
    }
    Ok(())
}

/// The state after `pkg` is offered (ThingsBoard's `QUEUED` with the target telemetry).
pub fn offer(state: &DeviceUpdateState, pkg: &OtaPackage, now: Millis) -> DeviceUpdateState {
    DeviceUpdateState {
        target_package_id: Some(pkg.id),
        target_title: Some(pkg.title.clone()),
        target_version: Some(pkg.version.clone()),
        state: Some(UpdateState::Queued),
        error: None,
        progress: 0,
        state_time: now,
        ..state.clone()
    }
}

/// The state after the package is withdrawn: no target, no state; current kept.
pub fn withdraw(state: &DeviceUpdateState, now: Millis) -> DeviceUpdateState {
    DeviceUpdateState {
        target_package_id: None,
        target_title: None,
        target_version: None,
        state: None,
        error: None,
        progress: 0,
        state_time: now,
        ..state.clone()
    }
}

/// Error text stored when an update times out.
pub const TIMEOUT_ERROR: &str = "TIMEOUT";

/// If `state` has sat in a non-final state longer than `timeout_ms`, the `FAILED(TIMEOUT)` state.
pub fn expire(
    state: &DeviceUpdateState,
    now: Millis,
    timeout_ms: Millis,
) -> Option<DeviceUpdateState> {
    let s = state.state?;
    if s.is_final() || now.saturating_sub(state.state_time) <= timeout_ms {
        return None;
    }
    Some(DeviceUpdateState {
        state: Some(UpdateState::Failed),
        error: Some(TIMEOUT_ERROR.to_owned()),
        state_time: now,
        ..state.clone()
    })
}

/// What a device said about one package type in a telemetry message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateReport {
    /// `fw_state` (absent, or a value such as the Python SDK's `IDLE` that is not a state).
    pub state: Option<UpdateState>,
    /// `fw_error`, if non-empty.
    pub error: Option<String>,
    /// `current_fw_title`.
    pub current_title: Option<String>,
    /// `current_fw_version`.
    pub current_version: Option<String>,
    /// Bytes downloaded (`fw_progress`, ours), if reported.
    pub progress: Option<u64>,
}

impl StateReport {
    /// Extracts the report for type `t` from one flat telemetry object; `None` if it
    /// mentions none of the type's keys.
    pub fn from_telemetry(t: PackageType, values: &Map<String, Value>) -> Option<Self> {
        let p = t.prefix();
        let text = |k: String| values.get(&k).and_then(Value::as_str).map(str::to_owned);
        let state_text = text(format!("{p}_state"));
        let report = Self {
            state: state_text.as_deref().and_then(|s| s.parse().ok()),
            error: text(format!("{p}_error")).filter(|e| !e.is_empty()),
            current_title: text(format!("current_{p}_title")),
            current_version: text(format!("current_{p}_version")),
            progress: values.get(&format!("{p}_progress")).and_then(Value::as_u64),
        };
        let mentioned = state_text.is_some()
            || report.error.is_some()
            || report.current_title.is_some()
            || report.current_version.is_some()
            || report.progress.is_some();
        mentioned.then_some(report)
    }
}

/// The result of checking a report against the stored state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportOutcome {
    /// The state to store.
    pub state: DeviceUpdateState,
    /// Whether anything durable changed (a write is needed).
    pub changed: bool,
    /// Set when the reported state transition was not trusted (recorded, not applied).
    pub anomaly: Option<Anomaly>,
}

/// Applies a device's report to the stored state, checking the transition.
///
/// Current title/version are always recorded. A state change is applied only if it is
/// possible from the stored state; otherwise the stored state is kept and the anomaly
/// returned (and counted). Progress is not handled here (it is coalesced in memory).
pub fn apply_report(
    stored: &DeviceUpdateState,
    report: &StateReport,
    now: Millis,
) -> ReportOutcome {
    let mut next = stored.clone();
    if report.current_title.is_some() {
        next.current_title.clone_from(&report.current_title);
    }
    if report.current_version.is_some() {
        next.current_version.clone_from(&report.current_version);
    }
    let mut anomaly = None;
    if let Some(to) = report.state {
        match check_transition(&next, to) {
            Ok(true) => {
                next.state = Some(to);
                next.state_time = now;
                next.error = if to == UpdateState::Failed {
                    Some(report.error.clone().unwrap_or_else(|| "UNKNOWN".to_owned()))
                } else {
                    None
                };
            }
            Ok(false) => {}
            Err(a) => {
                next.anomalies += 1;
                anomaly = Some(a);
            }
        }
    }
    let changed = next != *stored;
    ReportOutcome {
        state: next,
        changed,
        anomaly,
    }
}

/// `Ok(true)`: apply; `Ok(false)`: same state again, nothing to do; `Err`: anomaly.
fn check_transition(s: &DeviceUpdateState, to: UpdateState) -> Result<bool, Anomaly> {
    if matches!(to, UpdateState::Queued | UpdateState::Initiated) {
        return Err(Anomaly::ServerState { reported: to });
    }
    let (Some(target_title), Some(target_version), Some(from)) =
        (&s.target_title, &s.target_version, s.state)
    else {
        return Err(Anomaly::NothingOffered { reported: to });
    };
    if from == to {
        return Ok(false);
    }
    match to {
        UpdateState::Failed => Ok(!from.is_final()),
        UpdateState::Downloading if from != UpdateState::Updated => Ok(true),
        UpdateState::Updated => {
            if from == UpdateState::Failed {
                return Err(Anomaly::ImpossibleTransition { from, to });
            }
            let title_ok = s.current_title.as_ref().is_none_or(|t| t == target_title);
            let version_ok = s
                .current_version
                .as_ref()
                .is_none_or(|v| v == target_version);
            if title_ok && version_ok {
                Ok(true)
            } else {
                Err(Anomaly::WrongPackage {
                    title: s.current_title.clone(),
                    version: s.current_version.clone(),
                    target_title: target_title.clone(),
                    target_version: target_version.clone(),
                })
            }
        }
        _ => {
            // DOWNLOADED, VERIFIED, UPDATING: only forward, and only once a download started.
            match (from.rank(), to.rank()) {
                (Some(f), Some(t)) if f >= 2 && t > f && !from.is_final() => Ok(true),
                _ => Err(Anomaly::ImpossibleTransition { from, to }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeviceId, PackageData, PackageUrl};
    use ota_core::checksum::ChecksumAlgorithm;

    fn demo(t: PackageType) -> OtaPackage {
        OtaPackage {
            id: PackageId::new_random(),
            created_time: 1,
            profile_id: ProfileId::new_random(),
            package_type: t,
            title: "demo".into(),
            version: "1.1".into(),
            tag: None,
            source: PackageSource::Data(PackageData {
                blob_key: "k".into(),
                file_name: "demo.bin".into(),
                content_type: "application/octet-stream".into(),
                size: 10,
                checksum_algorithm: ChecksumAlgorithm::Sha256,
                checksum: "1f825aa2f0020ef7cf91dfa30da4668d791c5d4824fc8e41354b89ec05795ab3".into(),
            }),
            sming_app_id: None,
            additional_info: None,
        }
    }

    #[test]
    fn device_package_overrides_profile() {
        let (own, prof) = (PackageId::new_random(), PackageId::new_random());
        assert_eq!(effective_package(Some(own), Some(prof)), Some(own));
        assert_eq!(effective_package(None, Some(prof)), Some(prof));
        assert_eq!(effective_package(None, None), None);
    }

    #[test]
    fn assignment_push_matches_reference_vector_12() {
        let pkg = demo(PackageType::Firmware);
        let pushes = assignment_pushes(PackageType::Firmware, None, Some(&pkg));
        assert_eq!(pushes.len(), 2);
        assert_eq!(
            pushes[0].to_json(),
            serde_json::json!({"deleted":["fw_tag","fw_url"]})
        );
        assert_eq!(
            pushes[1].to_json(),
            serde_json::json!({"fw_title":"demo","fw_version":"1.1","fw_size":10,"fw_checksum_algorithm":"SHA256",
                "fw_checksum":"1f825aa2f0020ef7cf91dfa30da4668d791c5d4824fc8e41354b89ec05795ab3"})
        );
    }

    #[test]
    fn unassignment_push_matches_reference_vector_13() {
        let pushes = assignment_pushes(PackageType::Firmware, Some(PackageId::new_random()), None);
        assert_eq!(
            pushes,
            vec![AttributePush::Deleted(
                [
                    "fw_title",
                    "fw_version",
                    "fw_ts",
                    "fw_state",
                    "fw_size",
                    "fw_checksum",
                    "fw_checksum_algorithm",
                    "fw_url",
                    "fw_tag"
                ]
                .map(String::from)
                .to_vec()
            )]
        );
    }

    #[test]
    fn same_package_again_pushes_nothing() {
        let pkg = demo(PackageType::Software);
        assert!(assignment_pushes(PackageType::Software, Some(pkg.id), Some(&pkg)).is_empty());
        assert!(assignment_pushes(PackageType::Software, None, None).is_empty());
    }

    #[test]
    fn software_uses_sw_prefix_and_tag() {
        let mut pkg = demo(PackageType::Software);
        pkg.tag = Some("beta".into());
        let (set, deleted) = shared_attributes(&pkg);
        assert_eq!(set.get("sw_tag"), Some(&Value::from("beta")));
        assert_eq!(deleted, vec!["sw_url".to_owned()]);
    }

    #[test]
    fn url_package_without_checksum_deletes_size_and_checksum() {
        let mut pkg = demo(PackageType::Firmware);
        pkg.source = PackageSource::Url(PackageUrl {
            url: "https://x/y.bin".into(),
            checksum_algorithm: None,
            checksum: None,
        });
        let (set, deleted) = shared_attributes(&pkg);
        assert_eq!(set.get("fw_url"), Some(&Value::from("https://x/y.bin")));
        assert_eq!(
            deleted,
            ["fw_tag", "fw_size", "fw_checksum_algorithm", "fw_checksum"]
                .map(String::from)
                .to_vec()
        );
    }

    #[test]
    fn assignable_checks_type_profile_and_data() {
        let pkg = demo(PackageType::Firmware);
        assert_eq!(
            check_assignable(pkg.profile_id, PackageType::Firmware, &pkg),
            Ok(())
        );
        let other = ProfileId::new_random();
        assert_eq!(
            check_assignable(other, PackageType::Firmware, &pkg),
            Err(RuleError::ProfileMismatch {
                package: pkg.id,
                package_profile: pkg.profile_id,
                profile: other
            })
        );
        assert_eq!(
            check_assignable(pkg.profile_id, PackageType::Software, &pkg),
            Err(RuleError::TypeMismatch {
                package: pkg.id,
                actual: PackageType::Firmware,
                expected: PackageType::Software
            })
        );
        let mut pending = pkg.clone();
        pending.source = PackageSource::Pending;
        assert_eq!(
            check_assignable(pkg.profile_id, PackageType::Firmware, &pending),
            Err(RuleError::NoData { package: pkg.id })
        );
    }

    fn offered() -> (DeviceUpdateState, OtaPackage) {
        let pkg = demo(PackageType::Firmware);
        let s = offer(
            &DeviceUpdateState::empty(DeviceId::new_random(), PackageType::Firmware),
            &pkg,
            100,
        );
        (s, pkg)
    }

    fn report(state: UpdateState) -> StateReport {
        StateReport {
            state: Some(state),
            ..StateReport::default()
        }
    }

    #[test]
    fn normal_progression_is_accepted() {
        let (mut s, _) = offered();
        let mut now = 100;
        for st in [
            UpdateState::Downloading,
            UpdateState::Downloaded,
            UpdateState::Verified,
            UpdateState::Updating,
        ] {
            now += 1;
            let out = apply_report(&s, &report(st), now);
            assert_eq!(out.anomaly, None, "{st}");
            assert!(out.changed);
            assert_eq!(out.state.state, Some(st));
            s = out.state;
        }
        let done = StateReport {
            state: Some(UpdateState::Updated),
            current_title: Some("demo".into()),
            current_version: Some("1.1".into()),
            ..StateReport::default()
        };
        let out = apply_report(&s, &done, now + 1);
        assert_eq!(out.anomaly, None);
        assert_eq!(out.state.state, Some(UpdateState::Updated));
        assert_eq!(out.state.current_version.as_deref(), Some("1.1"));
    }

    #[test]
    fn repeated_state_needs_no_write() {
        let (s, _) = offered();
        let s = apply_report(&s, &report(UpdateState::Downloading), 101).state;
        let out = apply_report(&s, &report(UpdateState::Downloading), 102);
        assert!(!out.changed);
        assert_eq!(out.anomaly, None);
    }

    #[test]
    fn updated_for_never_offered_package_is_an_anomaly() {
        let s = DeviceUpdateState::empty(DeviceId::new_random(), PackageType::Firmware);
        let out = apply_report(&s, &report(UpdateState::Updated), 5);
        assert_eq!(
            out.anomaly,
            Some(Anomaly::NothingOffered {
                reported: UpdateState::Updated
            })
        );
        assert_eq!(out.state.state, None);
        assert_eq!(out.state.anomalies, 1);
    }

    #[test]
    fn updated_with_other_version_is_an_anomaly() {
        let (s, _) = offered();
        let r = StateReport {
            state: Some(UpdateState::Updated),
            current_title: Some("demo".into()),
            current_version: Some("9.9".into()),
            ..StateReport::default()
        };
        let out = apply_report(&s, &r, 101);
        assert!(matches!(out.anomaly, Some(Anomaly::WrongPackage { .. })));
        assert_eq!(out.state.state, Some(UpdateState::Queued));
        assert_eq!(out.state.current_version.as_deref(), Some("9.9"));
    }

    #[test]
    fn backward_and_skipping_jumps_are_anomalies() {
        let (s, _) = offered();
        let out = apply_report(&s, &report(UpdateState::Verified), 101);
        assert_eq!(
            out.anomaly,
            Some(Anomaly::ImpossibleTransition {
                from: UpdateState::Queued,
                to: UpdateState::Verified
            })
        );
        let s = apply_report(&s, &report(UpdateState::Downloading), 101).state;
        let s = apply_report(&s, &report(UpdateState::Verified), 102).state;
        let out = apply_report(&s, &report(UpdateState::Downloaded), 103);
        assert_eq!(
            out.anomaly,
            Some(Anomaly::ImpossibleTransition {
                from: UpdateState::Verified,
                to: UpdateState::Downloaded
            })
        );
        assert_eq!(out.state.state, Some(UpdateState::Verified));
        let out = apply_report(&s, &report(UpdateState::Initiated), 103);
        assert_eq!(
            out.anomaly,
            Some(Anomaly::ServerState {
                reported: UpdateState::Initiated
            })
        );
    }

    #[test]
    fn failure_keeps_error_and_retry_restarts_download() {
        let (s, _) = offered();
        let s = apply_report(&s, &report(UpdateState::Downloading), 101).state;
        let r = StateReport {
            state: Some(UpdateState::Failed),
            error: Some("Checksum verification failed!".into()),
            ..StateReport::default()
        };
        let s = apply_report(&s, &r, 102).state;
        assert_eq!(s.error.as_deref(), Some("Checksum verification failed!"));
        let out = apply_report(&s, &report(UpdateState::Downloading), 103);
        assert_eq!(out.anomaly, None);
        assert_eq!(out.state.error, None);
    }

    #[test]
    fn stuck_update_times_out() {
        let (s, _) = offered();
        assert_eq!(expire(&s, 100 + 1000, 1000), None);
        let failed = expire(&s, 100 + 1001, 1000).expect("expired");
        assert_eq!(failed.state, Some(UpdateState::Failed));
        assert_eq!(failed.error.as_deref(), Some(TIMEOUT_ERROR));
        assert_eq!(expire(&failed, 1_000_000, 1000), None);
        assert_eq!(
            expire(
                &DeviceUpdateState::empty(DeviceId::new_random(), PackageType::Firmware),
                1_000_000,
                1
            ),
            None
        );
    }

    #[test]
    fn telemetry_parsing_picks_the_right_type() {
        let v = serde_json::json!({"current_fw_title":"Initial","current_fw_version":"v0","fw_state":"IDLE","fw_error":""});
        let Value::Object(m) = v else { unreachable!() };
        let r = StateReport::from_telemetry(PackageType::Firmware, &m).expect("fw report");
        assert_eq!(r.state, None);
        assert_eq!(r.error, None);
        assert_eq!(r.current_title.as_deref(), Some("Initial"));
        assert_eq!(StateReport::from_telemetry(PackageType::Software, &m), None);
    }
}
