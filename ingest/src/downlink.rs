//! Wakes the sessions of devices that have new commands queued (ING-8).
//!
//! The command queue lives in the store; a session sends what is queued for its device when the
//! device connects and whenever it is woken. Whoever queues commands (the API, the task
//! scheduler) calls [`CommandSignal::wake`] after the commands are stored. A device without a
//! session on this node is not woken: its commands wait in the store until it connects.
//!
//! Devices without a session (HTTPS ingest, relays: [`crate::https_commands`]) pick their
//! commands up in the answer to a request. So that a heartbeat costs no store write, the signal
//! also keeps the devices whose queue was found empty since it last changed ("checked"); a wake
//! takes the device out again, and its next request claims.

use std::sync::Arc;

use dashmap::DashMap;
use fleetpulse_proto::DeviceId;
use tokio::sync::Notify;

/// The sessions of this node that can be woken, by device. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct CommandSignal {
    sessions: Arc<DashMap<DeviceId, Arc<Notify>>>,
    /// Devices without a session whose queue was found empty and not woken since: one entry
    /// per such device (a few bytes), so requests of idle devices claim nothing.
    checked: Arc<DashMap<DeviceId, ()>>,
}

impl CommandSignal {
    /// Tells the sessions of these devices (those connected to this node) to send what is
    /// queued for them.
    pub fn wake(&self, devices: impl IntoIterator<Item = DeviceId>) {
        for device in devices {
            self.checked.remove(&device);
            if let Some(session) = self.sessions.get(&device) {
                session.notify_one();
            }
        }
    }

    /// Whether a request of the device should look for commands: its queue was not found empty
    /// since it was last woken (or since this process started).
    pub(crate) fn may_have_commands(&self, device: DeviceId) -> bool {
        !self.checked.contains_key(&device)
    }

    /// Marks the device checked *before* its queue is claimed: a wake during the claim takes the
    /// mark away again, so a command queued meanwhile is claimed by the next request.
    pub(crate) fn checking(&self, device: DeviceId) {
        self.checked.insert(device, ());
    }

    /// The claim found commands: the device's next request looks again (for more, and for the
    /// ones it may not have received).
    pub(crate) fn claimed(&self, device: DeviceId) {
        self.checked.remove(&device);
    }

    /// How many sessions can be woken.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Registers the device's session (replacing an older one of the same device) and answers
    /// what it waits on. A wake before the session waits is kept (one permit), so a command
    /// queued between the session's first claim and its first wait is not missed.
    pub(crate) fn register(&self, device: DeviceId) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        self.sessions.insert(device, notify.clone());
        notify
    }

    /// Forgets the device's session, unless a newer session registered since.
    pub(crate) fn unregister(&self, device: DeviceId, notify: &Arc<Notify>) {
        self.sessions.remove_if(&device, |_, current| Arc::ptr_eq(current, notify));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_reaches_the_latest_session_of_a_device_only() {
        let signal = CommandSignal::default();
        let old = signal.register(DeviceId(1));
        let new = signal.register(DeviceId(1));
        let other = signal.register(DeviceId(2));
        signal.wake([DeviceId(1), DeviceId(3)]);
        // The permit is kept until the session waits.
        tokio::time::timeout(std::time::Duration::from_secs(1), new.notified()).await.expect("woken");
        let not_woken = |n: Arc<Notify>| async move {
            tokio::time::timeout(std::time::Duration::from_millis(20), n.notified()).await.is_err()
        };
        assert!(not_woken(old.clone()).await);
        assert!(not_woken(other.clone()).await);
        signal.unregister(DeviceId(1), &old);
        assert_eq!(signal.sessions(), 2, "an older session does not unregister the newer one");
        signal.unregister(DeviceId(1), &new);
        assert_eq!(signal.sessions(), 1);
    }
}
