//! Assignment changes fanned out to the transports holding a device's session.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::broadcast;

use crate::model::{DeviceId, PackageType};
use crate::rules::AttributePush;

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

const CAPACITY: usize = 16;

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
