//! Assignment changes fanned out to the transports holding a device's session, and the
//! catalogue events followed by the external-broker dialects.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::broadcast;

use crate::model::{DeviceId, PackageId, PackageType, ProfileId};
use crate::rules::AttributePush;
use crate::store::AssignmentChange;

/// Shared-attribute pushes owed to one device after its effective package changed, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct AssignmentEvent {
    /// Device.
    pub device_id: DeviceId,
    /// Type.
    pub package_type: PackageType,
    /// Messages to push on `v1/devices/me/attributes`, first to last.
    pub pushes: Vec<AttributePush>,
}

/// Per-device broadcast channels (in-process).
#[derive(Debug, Default)]
pub struct Events {
    channels: Mutex<Channels>,
}

#[derive(Debug, Default)]
struct Channels {
    by_device: HashMap<DeviceId, broadcast::Sender<AssignmentEvent>>,
    /// Size at which channels nobody listens to any more are dropped: twice the channels
    /// in use after the last sweep (at least [`SWEEP_FLOOR`]), so a fleet whose devices
    /// come and go does not keep a channel for every device that ever connected.
    sweep_at: usize,
}

/// Channels kept before the first sweep.
const SWEEP_FLOOR: usize = 1024;

/// Events a device's channel holds for a slow session. A session that falls further behind
/// sees `Lagged` and pushes the current attributes instead; one assignment change sends at
/// most two events (firmware and software), and every connected device pays for each slot.
const CAPACITY: usize = 2;

impl Events {
    /// Receives the device's future assignment events.
    pub fn subscribe(&self, device: DeviceId) -> broadcast::Receiver<AssignmentEvent> {
        let mut map = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.by_device.len() >= map.sweep_at.max(SWEEP_FLOOR) {
            map.by_device.retain(|_, tx| tx.receiver_count() > 0);
            map.by_device.shrink_to_fit();
            map.sweep_at = map.by_device.len() * 2;
        }
        map.by_device
            .entry(device)
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }

    /// Delivers an event to the device's subscribers, if any; returns how many got it.
    pub fn publish(&self, event: AssignmentEvent) -> usize {
        let mut map = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(tx) = map.by_device.get(&event.device_id) else {
            return 0;
        };
        let id = event.device_id;
        if let Ok(n) = tx.send(event) {
            n
        } else {
            // Every receiver is gone: drop the channel.
            map.by_device.remove(&id);
            0
        }
    }
}

/// A change to what is stored or assigned, for consumers that follow the whole catalogue
/// rather than one device's session (`otad`'s Sming announcer and EnigmaIoT sender).
///
/// Events are delivered on a bounded broadcast channel: a consumer that falls behind gets
/// `RecvError::Lagged` and must re-read the state it follows from the store. They say *what*
/// changed, not the new state: consumers read that from the store.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CatalogEvent {
    /// A device's effective package changed. Heard from every replica when PostgreSQL
    /// fan-out is on; the other events are only seen by the replica that made the change.
    Assignment(AssignmentChange),
    /// A profile's default packages were set (even when no device follows them).
    ProfilePackages {
        /// The profile.
        profile: ProfileId,
    },
    /// A package's data was uploaded.
    PackageUploaded {
        /// The package.
        package: PackageId,
    },
    /// A package was deleted.
    PackageDeleted {
        /// The package.
        package: PackageId,
    },
    /// A device was created or updated (its EnigmaIoT address may have changed).
    DeviceSaved {
        /// The device.
        device: DeviceId,
    },
    /// A device was deleted.
    DeviceDeleted {
        /// The device.
        device: DeviceId,
    },
}

/// Capacity of the catalogue channel; a slower consumer sees `Lagged` and resynchronises.
pub(crate) const CATALOG_CAPACITY: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PackageType;

    fn event(device_id: DeviceId) -> AssignmentEvent {
        AssignmentEvent {
            device_id,
            package_type: PackageType::Firmware,
            pushes: Vec::new(),
        }
    }

    #[test]
    fn channels_of_gone_sessions_are_dropped_and_live_ones_kept() {
        let events = Events::default();
        let kept = DeviceId::new_random();
        let mut rx = events.subscribe(kept);
        // Sessions that connect once and leave.
        for _ in 0..10 * SWEEP_FLOOR {
            drop(events.subscribe(DeviceId::new_random()));
        }
        let left = events.channels.lock().expect("lock").by_device.len();
        assert!(left <= 2 * SWEEP_FLOOR, "{left} channels kept");
        // The live session still gets its events.
        assert_eq!(events.publish(event(kept)), 1);
        assert_eq!(rx.try_recv().expect("event").device_id, kept);
    }
}
