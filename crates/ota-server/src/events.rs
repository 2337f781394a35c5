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
    channels: Mutex<HashMap<DeviceId, broadcast::Sender<AssignmentEvent>>>,
}

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
        map.entry(device)
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }

    /// Delivers an event to the device's subscribers, if any; returns how many got it.
    pub fn publish(&self, event: AssignmentEvent) -> usize {
        let mut map = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(tx) = map.get(&event.device_id) else {
            return 0;
        };
        let id = event.device_id;
        if let Ok(n) = tx.send(event) {
            n
        } else {
            // Every receiver is gone: drop the channel.
            map.remove(&id);
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
