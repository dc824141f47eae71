//! Closing the session of a device an admin deleted or moved (DEV-4): the API holds a
//! [`SessionCloser`] and closes the device's connection on this node with a close code that
//! says why (`close_code::DEVICE_DELETED`, `close_code::DEVICE_MOVED`).

use std::sync::Arc;

use dashmap::DashMap;
use fleetpulse_proto::DeviceId;
use quinn::VarInt;

/// The connections of this node, by device. Cheap to clone; the default closes nothing (no
/// ingest in this process).
#[derive(Debug, Clone, Default)]
pub struct SessionCloser {
    connections: Arc<DashMap<DeviceId, quinn::Connection>>,
}

impl SessionCloser {
    pub(crate) fn new(connections: Arc<DashMap<DeviceId, quinn::Connection>>) -> SessionCloser {
        SessionCloser { connections }
    }

    /// Closes the device's connection on this node with `code` and `reason`; whether it had
    /// one. The session ends as on any close (its shard forgets the device).
    pub fn close(&self, device: DeviceId, code: u32, reason: &str) -> bool {
        match self.connections.remove(&device) {
            Some((_, conn)) => {
                conn.close(VarInt::from_u32(code), reason.as_bytes());
                true
            }
            None => false,
        }
    }
}
