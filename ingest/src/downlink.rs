//! Wakes the sessions of devices that have new commands queued (ING-8).
//!
//! The command queue lives in the store; a session sends what is queued for its device when the
//! device connects and whenever it is woken. Whoever queues commands (the API, the task
//! scheduler) calls [`CommandSignal::wake`] after the commands are stored. A device without a
//! session on this node is handed to [`CommandSignal::forward_to`]'s queue when several nodes
//! share the store (issue 16: the node holding its session is woken through PostgreSQL); else its
//! commands wait in the store until it connects.

use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use fleetpulse_proto::DeviceId;
use tokio::sync::{Notify, mpsc};

/// The sessions of this node that can be woken, by device. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct CommandSignal {
    sessions: Arc<DashMap<DeviceId, Arc<Notify>>>,
    /// Where devices without a session here go (set once, several nodes).
    elsewhere: Arc<OnceLock<mpsc::Sender<Vec<DeviceId>>>>,
}

impl CommandSignal {
    /// Tells the sessions of these devices to send what is queued for them: those connected to
    /// this node directly, the others through the queue given to [`Self::forward_to`] (if any;
    /// when it is full they are not woken and get their commands when they next connect).
    pub fn wake(&self, devices: impl IntoIterator<Item = DeviceId>) {
        let mut missed = Vec::new();
        for device in devices {
            if let Some(session) = self.sessions.get(&device) {
                session.notify_one();
            } else {
                missed.push(device);
            }
        }
        if let Some(elsewhere) = self.elsewhere.get()
            && !missed.is_empty()
            && elsewhere.try_send(missed).is_err()
        {
            tracing::warn!(message = "The command wake-up queue to other nodes is full; wake-ups dropped.");
        }
    }

    /// Wakes the sessions of these devices on this node only (a wake-up from another node).
    pub fn wake_here(&self, devices: &[DeviceId]) {
        for device in devices {
            if let Some(session) = self.sessions.get(device) {
                session.notify_one();
            }
        }
    }

    /// Several nodes: wake-ups for devices without a session here go to `elsewhere`. Only the
    /// first call counts.
    pub fn forward_to(&self, elsewhere: mpsc::Sender<Vec<DeviceId>>) {
        let _ = self.elsewhere.set(elsewhere);
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
