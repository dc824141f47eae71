//! The device snapshot writer: one task that keeps the store's per-device snapshot (online flag,
//! last status report) current for the device lists (DEV-1, DEV-3).
//!
//! Shards hand it, once a batch is durable, the status reports and online/offline transitions
//! of that batch. It coalesces them per device (the latest update of each part wins, see
//! [`DeviceSnapshotUpdate::merge`]) and writes them with
//! [`fleetpulse_store::DeviceStore::update_device_snapshots`] at most every
//! [`FLUSH_INTERVAL`], or as soon as [`FLUSH_ENTRIES`] devices wait, in batches of at most
//! [`fleetpulse_store::MAX_SNAPSHOT_BATCH`]. Heartbeats never reach it (they write nothing).
//!
//! The queue from the shards is bounded ([`QUEUE_BATCHES`]); when it is full the shard waits
//! (counted in `fleetpulse_ingest_snapshot_queue_full`), nothing is dropped. A failed write is
//! counted and kept for the next flush (newer updates merged over it); the pending map holds at
//! most one entry per device, so it is bounded by the fleet.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fleetpulse_proto::{DeviceId, UnixMillis};
use fleetpulse_store::{
    DeadLetterReason, DeadLetterSink, DeadLetterStage, DeviceSnapshotUpdate, DeviceStore, MAX_SNAPSHOT_BATCH,
    NewDeadLetter, StoreError,
};
use tokio::sync::mpsc;

use crate::metrics::IngestMetrics;

/// Longest time an update waits before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Devices waiting that trigger a write at once.
pub const FLUSH_ENTRIES: usize = 1_000;

/// Batches of updates the queue from the shards holds before they wait.
pub const QUEUE_BATCHES: usize = 256;

/// The sans-I/O part: pending updates, one per device, in order of first arrival.
#[derive(Debug, Default)]
pub struct SnapshotCoalescer {
    pending: HashMap<DeviceId, DeviceSnapshotUpdate>,
    order: Vec<DeviceId>,
}

impl SnapshotCoalescer {
    /// Adds updates; a device already waiting gets the later update merged over its entry.
    pub fn push(&mut self, updates: impl IntoIterator<Item = DeviceSnapshotUpdate>) {
        for u in updates {
            match self.pending.get_mut(&u.device_id) {
                Some(entry) => entry.merge(u),
                None => {
                    self.order.push(u.device_id);
                    self.pending.insert(u.device_id, u);
                }
            }
        }
    }

    /// Puts back updates whose write failed, under the updates that arrived since (those win).
    pub fn restore(&mut self, failed: Vec<DeviceSnapshotUpdate>) {
        for mut old in failed {
            match self.pending.remove(&old.device_id) {
                Some(newer) => {
                    old.merge(newer);
                    self.pending.insert(old.device_id, old);
                }
                None => {
                    self.order.push(old.device_id);
                    self.pending.insert(old.device_id, old);
                }
            }
        }
    }

    /// Devices waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Takes up to [`MAX_SNAPSHOT_BATCH`] updates, oldest devices first.
    pub fn take_batch(&mut self) -> Vec<DeviceSnapshotUpdate> {
        let n = self.order.len().min(MAX_SNAPSHOT_BATCH);
        self.order.drain(..n).filter_map(|d| self.pending.remove(&d)).collect()
    }
}

/// Runs the writer until every sender is gone, then writes what is left.
pub(crate) async fn run(
    mut rx: mpsc::Receiver<Vec<DeviceSnapshotUpdate>>,
    devices: Arc<dyn DeviceStore>,
    dead_letters: DeadLetterSink,
    metrics: IngestMetrics,
    presence: Option<mpsc::Sender<Vec<(DeviceId, bool)>>>,
) {
    let mut pending = SnapshotCoalescer::default();
    let mut tick = tokio::time::interval(FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut open = true;
    while open {
        tokio::select! {
            received = rx.recv() => match received {
                Some(updates) => {
                    if let Some(presence) = &presence {
                        let changed: Vec<(DeviceId, bool)> =
                            updates.iter().filter_map(|u| u.online.map(|on| (u.device_id, on))).collect();
                        // Bounded: the receiver waits when it is behind, and so do the shards.
                        if !changed.is_empty() && presence.send(changed).await.is_err() {
                            tracing::debug!(message = "The session ownership recorder is gone.");
                        }
                    }
                    pending.push(updates);
                    if pending.len() < FLUSH_ENTRIES {
                        continue;
                    }
                }
                None => open = false,
            },
            _ = tick.tick() => {}
        }
        flush(&mut pending, devices.as_ref(), &dead_letters, &metrics).await;
    }
    // Shutdown: a few attempts, then what is left becomes dead letters (the next start marks
    // every device offline anyway, and the next report of each device restores its snapshot).
    let mut last_error = String::new();
    for _ in 0..3 {
        if pending.is_empty() {
            break;
        }
        if let Some(error) = flush(&mut pending, devices.as_ref(), &dead_letters, &metrics).await {
            last_error = error;
        }
    }
    let mut left = Vec::new();
    while !pending.is_empty() {
        left.extend(pending.take_batch());
    }
    give_up(&dead_letters, left, "shutdown", &last_error, 3).await;
}

/// The copy a dead letter of stage `snapshots` holds.
pub fn snapshot_payload(update: &DeviceSnapshotUpdate) -> serde_json::Value {
    serde_json::json!({ "kind": "snapshot", "update": update })
}

async fn give_up(
    dead_letters: &DeadLetterSink,
    updates: Vec<DeviceSnapshotUpdate>,
    code: &'static str,
    detail: &str,
    attempts: u32,
) {
    let at = UnixMillis::now();
    let letters = updates.into_iter().map(|u| NewDeadLetter {
        stage: DeadLetterStage::Snapshots,
        reason: DeadLetterReason { code, detail: detail.to_owned() },
        enterprise_id: None,
        device_id: Some(u.device_id),
        payload: snapshot_payload(&u),
        attempts,
        at,
    });
    dead_letters.record_many(letters.collect()).await;
}

/// Writes everything pending, batch by batch; a failed batch goes back and the flush stops
/// (the error is returned), unless the store refused it for good: then it is given up.
async fn flush(
    pending: &mut SnapshotCoalescer,
    devices: &dyn DeviceStore,
    dead_letters: &DeadLetterSink,
    metrics: &IngestMetrics,
) -> Option<String> {
    while !pending.is_empty() {
        let batch = pending.take_batch();
        let n = batch.len() as u64;
        match devices.update_device_snapshots(batch.clone()).await {
            Ok(()) => {
                metrics.snapshot_updates.inc_by(n);
            }
            Err(error @ (StoreError::InvalidInput(_) | StoreError::LimitExceeded(_))) => {
                metrics.snapshot_write_errors.inc();
                give_up(dead_letters, batch, "store_refused", &error.to_string(), 1).await;
            }
            Err(error) => {
                metrics.snapshot_write_errors.inc();
                tracing::warn!(message = "Writing device snapshots failed; retrying on the next flush.", %error, devices = n);
                pending.restore(batch);
                return Some(error.to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_proto::UnixMillis;
    use fleetpulse_proto::domain::{CallStatus, DeviceStatus};
    use fleetpulse_store::DeviceReport;

    fn online(d: u64, o: bool) -> DeviceSnapshotUpdate {
        DeviceSnapshotUpdate { device_id: DeviceId(d), online: Some(o), report: None }
    }

    fn report(d: u64, at: i64) -> DeviceSnapshotUpdate {
        let status = DeviceStatus {
            lines: vec![],
            call_status: CallStatus::Idle,
            firmware: format!("fw{at}"),
            public_ip: None,
            private_ip: None,
            uptime_s: 1,
            last_reboot: None,
        };
        DeviceSnapshotUpdate {
            device_id: DeviceId(d),
            online: None,
            report: Some(DeviceReport { at: UnixMillis(at), status }),
        }
    }

    #[test]
    fn the_latest_update_of_each_part_wins_per_device() {
        let mut c = SnapshotCoalescer::default();
        c.push([online(1, true), report(1, 10), report(2, 5), online(1, false), report(1, 20)]);
        assert_eq!(c.len(), 2);
        let batch = c.take_batch();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].device_id, DeviceId(1), "devices leave in order of arrival");
        assert_eq!(batch[0].online, Some(false));
        assert_eq!(batch[0].report.as_ref().map(|r| r.at), Some(UnixMillis(20)));
        assert!(c.is_empty());
    }

    #[test]
    fn batches_are_bounded_and_failed_ones_go_back_under_newer_updates() {
        let mut c = SnapshotCoalescer::default();
        c.push((0..2_500).map(|d| online(d, true)));
        let first = c.take_batch();
        assert_eq!(first.len(), MAX_SNAPSHOT_BATCH);
        c.push([online(0, false)]);
        c.restore(first);
        assert_eq!(c.len(), 2_500);
        let mut all = Vec::new();
        while !c.is_empty() {
            let b = c.take_batch();
            assert!(b.len() <= MAX_SNAPSHOT_BATCH);
            all.extend(b);
        }
        let zero = all.iter().find(|u| u.device_id == DeviceId(0)).expect("device 0");
        assert_eq!(zero.online, Some(false), "the newer update wins over the restored one");
    }
}
