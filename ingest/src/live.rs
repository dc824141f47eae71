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
    /// Last reported status. Boxed, as the sample below: most of a million idle devices never
    /// send one, and the box keeps them out of every device's record (≈ 150 B of the 1 KiB
    /// budget per idle device, SPEC §8).
    pub status: Option<Box<DeviceStatus>>,
    /// Last CPU/memory sample and when it arrived.
    pub resources: Option<Box<(UnixMillis, ResourceSample)>>,
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

    /// Applies one change decided by a shard (the shard owns the device; see [`LiveUpdate`]).
    pub(crate) fn apply(&self, update: LiveUpdate) {
        match update {
            LiveUpdate::Opened { device, enterprise, at, heartbeat_interval_s, last_seq } => {
                let mut entry = self.devices.entry(device).or_insert_with(|| LiveDevice {
                    enterprise_id: enterprise,
                    online: true,
                    connected: true,
                    last_seen: at,
                    online_since: Some(at),
                    heartbeat_interval_s,
                    sip: SipSummary::Unknown,
                    status: None,
                    resources: None,
                    last_seq,
                });
                let d = &mut *entry;
                if !d.online {
                    d.online_since = Some(at);
                }
                d.online = true;
                d.connected = true;
                d.last_seen = at;
                d.heartbeat_interval_s = heartbeat_interval_s;
                d.last_seq = last_seq;
            }
            LiveUpdate::Disconnected { device } => self.modify(device, |d| d.connected = false),
            LiveUpdate::Status { device, status } => {
                let sip = status.sip_summary();
                self.modify(device, |d| {
                    d.sip = sip;
                    d.status = Some(Box::new(status));
                });
            }
            LiveUpdate::Resources { device, at, sample } => {
                self.modify(device, |d| d.resources = Some(Box::new((at, sample))))
            }
            LiveUpdate::Seen { device, at, last_seq } => self.modify(device, |d| {
                d.last_seen = at;
                d.last_seq = last_seq;
            }),
            LiveUpdate::Offline { device } => self.modify(device, |d| {
                d.online = false;
                d.online_since = None;
            }),
        }
    }

    /// Applies `f` to the device's entry if present.
    fn modify(&self, id: DeviceId, f: impl FnOnce(&mut LiveDevice)) {
        if let Some(mut d) = self.devices.get_mut(&id) {
            f(&mut d);
        }
    }
}

/// A change to one device's live state, decided by the device's shard core
/// ([`crate::batcher::ShardBatcher`]) and applied by its shell with [`LiveState::apply`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LiveUpdate {
    /// The device opened a session at `at`: online (since `at` if it was not), connected; the
    /// entry is created if the device is new.
    Opened { device: DeviceId, enterprise: EnterpriseId, at: UnixMillis, heartbeat_interval_s: u32, last_seq: u64 },
    /// The device's current connection closed.
    Disconnected { device: DeviceId },
    /// A status report was applied (the SIP summary is derived from it).
    Status { device: DeviceId, status: DeviceStatus },
    /// A CPU/memory sample received at `at` was applied.
    Resources { device: DeviceId, at: UnixMillis, sample: ResourceSample },
    /// Frames received at `at` were applied up to `last_seq`.
    Seen { device: DeviceId, at: UnixMillis, last_seq: u64 },
    /// The device missed its heartbeats.
    Offline { device: DeviceId },
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

#[cfg(test)]
mod tests {
    use super::LiveDevice;

    /// Every device seen since start costs one of these (issue 15: ≤ 1 KiB resident per idle
    /// device at a million, SPEC §8). What a device reports is boxed, so an idle device's record
    /// stays one cache line instead of carrying room for a status it never sent.
    #[test]
    fn an_idle_devices_live_record_fits_one_cache_line() {
        let size = std::mem::size_of::<LiveDevice>();
        assert!(size <= 64, "LiveDevice is {size} bytes");
    }
}
