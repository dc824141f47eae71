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
//! takes the device out again, and its next request claims. Woken devices without a session are
//! also written to a bounded log ([`WokenLog`]) that relays follow with a long poll
//! (`POST /ingest/v1/relay/wakes`), so a device behind a relay is made to exchange at once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

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
    /// Woken devices without a session, for relays' long polls.
    woken: Arc<WokenLog>,
}

/// Entries [`WokenLog`] keeps; a relay further behind misses the older ones (their devices get
/// their commands with their next exchange instead).
pub const WOKEN_LOG_ENTRIES: usize = 65_536;

/// The devices without a session woken lately, numbered: a relay asks for those after the last
/// number it saw and waits when there are none.
#[derive(Debug, Default)]
pub(crate) struct WokenLog {
    entries: Mutex<WokenEntries>,
    news: Notify,
}

#[derive(Debug, Default)]
struct WokenEntries {
    /// The number the next entry gets (numbers start at 1).
    next: u64,
    log: VecDeque<(u64, DeviceId)>,
}

impl WokenLog {
    fn push(&self, devices: &[DeviceId]) {
        if devices.is_empty() {
            return;
        }
        {
            let mut e = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for &device in devices {
                e.next += 1;
                let n = e.next;
                if e.log.len() == WOKEN_LOG_ENTRIES {
                    e.log.pop_front();
                }
                e.log.push_back((n, device));
            }
        }
        self.news.notify_waiters();
    }

    /// The devices woken after `after` and the number to ask after next time. `after` above
    /// the newest number (this process restarted) starts again from the newest.
    pub(crate) fn since(&self, after: u64) -> (Vec<DeviceId>, u64) {
        let e = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if after >= e.next {
            return (Vec::new(), e.next);
        }
        let devices = e.log.iter().filter(|(n, _)| *n > after).map(|&(_, d)| d).collect();
        (devices, e.next)
    }

    /// [`Self::since`], waiting up to `limit` for something new when there is nothing yet.
    pub(crate) async fn wait_since(&self, after: u64, limit: std::time::Duration) -> (Vec<DeviceId>, u64) {
        let news = self.news.notified();
        tokio::pin!(news);
        news.as_mut().enable();
        let (devices, next) = self.since(after);
        if !devices.is_empty() || after > next {
            return (devices, next);
        }
        let _ = tokio::time::timeout(limit, news).await;
        self.since(after)
    }
}

impl CommandSignal {
    /// Tells the sessions of these devices (those connected to this node) to send what is
    /// queued for them.
    pub fn wake(&self, devices: impl IntoIterator<Item = DeviceId>) {
        let mut without_session = Vec::new();
        for device in devices {
            self.checked.remove(&device);
            match self.sessions.get(&device) {
                Some(session) => session.notify_one(),
                None => without_session.push(device),
            }
        }
        self.woken.push(&without_session);
    }

    /// The log of woken devices without a session (relays follow it).
    pub(crate) fn woken(&self) -> &WokenLog {
        &self.woken
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

    #[test]
    fn a_device_found_empty_is_not_claimed_for_until_woken() {
        let signal = CommandSignal::default();
        assert!(signal.may_have_commands(DeviceId(1)), "unknown since start: look");
        signal.checking(DeviceId(1));
        assert!(!signal.may_have_commands(DeviceId(1)), "found empty");
        signal.wake([DeviceId(1)]);
        assert!(signal.may_have_commands(DeviceId(1)), "woken: look again");
        signal.checking(DeviceId(1));
        signal.claimed(DeviceId(1));
        assert!(signal.may_have_commands(DeviceId(1)), "commands found: look again next time");
    }

    #[tokio::test]
    async fn the_woken_log_lists_devices_without_a_session_after_a_number() {
        let signal = CommandSignal::default();
        let _session = signal.register(DeviceId(1));
        let (none, start) = signal.woken().since(u64::MAX);
        assert!(none.is_empty());
        signal.wake([DeviceId(1), DeviceId(2), DeviceId(3)]);
        let (woken, next) = signal.woken().since(start);
        assert_eq!(woken, vec![DeviceId(2), DeviceId(3)], "a device with a session is woken through it");
        assert!(signal.woken().since(next).0.is_empty());
        let waiting = {
            let signal = signal.clone();
            tokio::spawn(async move { signal.woken().wait_since(next, std::time::Duration::from_secs(10)).await })
        };
        tokio::task::yield_now().await;
        signal.wake([DeviceId(4)]);
        assert_eq!(waiting.await.expect("joined").0, vec![DeviceId(4)]);
        // A number from before a restart of the server starts again from the newest.
        assert_eq!(signal.woken().since(next + 1_000), (Vec::new(), next + 1));
    }
}
