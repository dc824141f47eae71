//! Live device state, written by the ingest shards and read by the management API.
//!
//! A [`DashMap`] keyed by device: each shard writes only its own devices, readers take short
//! shard-local locks, and there is no global lock on the hot path. Per-device state is small
//! and bounded (status strings and SIP lines are bounded by validation at the edge).

use std::sync::atomic::{AtomicI64, Ordering};

use dashmap::DashMap;
use fleetpulse_proto::domain::{DeviceStatus, ResourceSample, SipSummary};
use fleetpulse_proto::{DeviceId, EnterpriseId, UnixMillis};
use serde::Serialize;

/// What the ingest tier knows about a device right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct LiveDevice {
    /// Owning enterprise.
    pub enterprise_id: EnterpriseId,
    /// Online: heartbeats arrive within the allowed interval.
    pub online: bool,
    /// A QUIC connection of the device is open right now.
    pub connected: bool,
    /// Last frame received.
    pub last_seen: UnixMillis,
    /// Since when it is online (None while offline).
    pub online_since: Option<UnixMillis>,
    /// Declared heartbeat interval, seconds.
    pub heartbeat_interval_s: u32,
    /// SIP account summary from the last status report.
    pub sip: SipSummary,
    /// Last reported status.
    pub status: Option<DeviceStatus>,
    /// Last CPU/memory sample and when it arrived.
    pub resources: Option<(UnixMillis, ResourceSample)>,
    /// Highest sequence number applied.
    pub last_seq: u64,
}

/// Live state of every device seen since the process started.
#[derive(Debug, Default)]
pub struct LiveState {
    devices: DashMap<DeviceId, LiveDevice>,
    started: AtomicI64,
}

impl LiveState {
    /// An empty state.
    pub fn new() -> Self {
        LiveState { devices: DashMap::new(), started: AtomicI64::new(UnixMillis::now().0) }
    }

    /// A copy of the device's live state, if it was seen since start.
    pub fn get(&self, id: DeviceId) -> Option<LiveDevice> {
        self.devices.get(&id).map(|d| d.clone())
    }

    /// Whether the device is online.
    pub fn is_online(&self, id: DeviceId) -> bool {
        self.devices.get(&id).is_some_and(|d| d.online)
    }

    /// Counts of (online, connected, known) devices, optionally of one enterprise.
    ///
    /// Walks the map: meant for metrics and dashboards at scrape frequency, not per request loops.
    pub fn counts(&self, enterprise: Option<EnterpriseId>) -> LiveCounts {
        let mut c = LiveCounts::default();
        for d in self.devices.iter() {
            if enterprise.is_some_and(|e| e != d.enterprise_id) {
                continue;
            }
            c.known += 1;
            c.online += u64::from(d.online);
            c.connected += u64::from(d.connected);
        }
        c
    }

    /// When this process started serving, for uptime.
    pub fn started_at(&self) -> UnixMillis {
        UnixMillis(self.started.load(Ordering::Relaxed))
    }

    /// Applies `f` to the device's entry, creating it with `init` if absent.
    pub(crate) fn update(&self, id: DeviceId, init: impl FnOnce() -> LiveDevice, f: impl FnOnce(&mut LiveDevice)) {
        let mut entry = self.devices.entry(id).or_insert_with(init);
        f(&mut entry);
    }

    /// Applies `f` to the device's entry if present.
    pub(crate) fn modify(&self, id: DeviceId, f: impl FnOnce(&mut LiveDevice)) {
        if let Some(mut d) = self.devices.get_mut(&id) {
            f(&mut d);
        }
    }
}

/// Device counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct LiveCounts {
    /// Online devices.
    pub online: u64,
    /// Devices with an open connection.
    pub connected: u64,
    /// Devices seen since start.
    pub known: u64,
}
