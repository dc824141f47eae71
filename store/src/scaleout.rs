//! The scale-out store (STO-2, STO-3): PostgreSQL for entities, ClickHouse for events, and a
//! durable local spool in front of ClickHouse.
//!
//! Every event batch is appended to the [`Spool`] (fsynced, group commit) before `append`
//! returns, so an acknowledged frame survives a crash of this process and any outage of
//! ClickHouse. A drainer task reads spooled records in order, merges them into one batch,
//! inserts it into ClickHouse (retrying with backoff while ClickHouse is unreachable; the rows are
//! idempotent, so a retry after an ambiguous failure does not double count) and then acknowledges
//! them to the spool. When the spool is full, `append` waits: acknowledgements to devices stop
//! instead of data being dropped.
//!
//! Records an earlier run left in the spool are drained without the rows whose (device, seq) the
//! inner store already holds: with several nodes (issue 16), a device whose frames this node made
//! durable but had not acknowledged when it died sends them again to another node, which stores
//! them with its own receipt time (another row); draining them here afterwards would store them
//! twice. A frame this node did acknowledge is not sent again, so it is drained as before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fleetpulse_proto::DeviceId;

use crate::spool::{RecordId, Spool, SpoolError};
use crate::*;

/// Most spooled records merged into one insert.
const DRAIN_RECORDS: usize = 512;
/// Most spooled bytes merged into one insert.
const DRAIN_BYTES: usize = 16 << 20;

impl From<SpoolError> for StoreError {
    fn from(e: SpoolError) -> Self {
        match e {
            SpoolError::Closed => StoreError::Closed,
            e => StoreError::Backend(format!("spool: {e}")),
        }
    }
}

/// Counters of the drainer, for metrics.
#[derive(Debug, Default)]
pub struct DrainStats {
    /// Spooled records drained into the inner store.
    pub drained_records: AtomicU64,
    /// Failed inserts (each retried).
    pub insert_failures: AtomicU64,
    /// Spooled records that could not be decoded (skipped and counted; never expected).
    pub undecodable_records: AtomicU64,
    /// Rows of records left by an earlier run left out because the inner store already held
    /// their (device, seq), stored by another node.
    pub already_stored_rows: AtomicU64,
}

/// The highest delivery mark of every device this process has seen, and the spool record still
/// holding it (None once drained). Marks only grow, so a cached mark is never stale: devices
/// known here can start sessions even while ClickHouse is unreachable.
type Marks = Mutex<HashMap<DeviceId, (u64, Option<RecordId>)>>;

/// An [`EventStore`] that makes batches durable in a spool and drains them into `inner`.
pub struct SpooledEvents {
    inner: Arc<dyn EventStore>,
    spool: Spool,
    marks: Arc<Marks>,
    stats: Arc<DrainStats>,
}

impl std::fmt::Debug for SpooledEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpooledEvents").field("spool", &self.spool.stats()).finish_non_exhaustive()
    }
}

fn decode(bytes: &[u8], stats: &DrainStats) -> Option<EventBatch> {
    match serde_json::from_slice(bytes) {
        Ok(batch) => Some(batch),
        Err(error) => {
            stats.undecodable_records.fetch_add(1, Ordering::Relaxed);
            tracing::error!(message = "Skipping an undecodable spool record.", %error);
            None
        }
    }
}

fn note_marks(marks: &Marks, batch: &EventBatch, id: RecordId) {
    let mut marks = marks.lock().unwrap_or_else(|p| p.into_inner());
    for (device, seq) in &batch.delivery {
        let entry = marks.entry(*device).or_insert((*seq, Some(id)));
        if *seq >= entry.0 {
            *entry = (*seq, Some(id));
        }
    }
}

/// Leaves out of `batch` the device-sequenced rows (status, resources, device alarms) whose
/// (device, seq) `inner` already holds; returns how many. Delivery marks and alarm record changes
/// stay (a mark only grows; a change of an alarm already applied is applied again as is).
async fn without_stored(inner: &dyn EventStore, batch: &mut EventBatch) -> Result<u64> {
    let mut devices: Vec<DeviceId> = batch
        .status
        .iter()
        .map(|e| e.device_id)
        .chain(batch.resources.iter().map(|e| e.device_id))
        .chain(batch.alarms.iter().filter(|e| e.seq > 0).map(|e| e.device_id))
        .collect();
    devices.sort_unstable();
    devices.dedup();
    if devices.is_empty() {
        return Ok(0);
    }
    let held: HashMap<DeviceId, Vec<(u64, u64)>> =
        inner.device_sequences(&devices).await?.into_iter().map(|s| (s.device_id, s.ranges)).collect();
    let stored = |device: &DeviceId, seq: u64| {
        held.get(device).is_some_and(|ranges| ranges.iter().any(|&(from, to)| from <= seq && seq <= to))
    };
    let before = batch.rows();
    batch.status.retain(|e| !stored(&e.device_id, e.seq));
    batch.resources.retain(|e| !stored(&e.device_id, e.seq));
    batch.alarms.retain(|e| e.seq == 0 || !stored(&e.device_id, e.seq));
    Ok((before - batch.rows()) as u64)
}

impl SpooledEvents {
    /// Recovers the delivery marks of records still in the spool and starts the drainer.
    pub async fn start(inner: Arc<dyn EventStore>, spool: Spool) -> Result<SpooledEvents> {
        let marks = Arc::new(Marks::default());
        let stats = Arc::new(DrainStats::default());
        // Nothing appends yet: a read that finds nothing within a moment has seen every record
        // (the pending count alone could include records that turn out corrupt when read).
        let mut after = None;
        let mut recovered = None;
        for _ in 0..=spool.stats().pending_records {
            let read = spool.read_after(after, DRAIN_RECORDS, DRAIN_BYTES);
            let Ok(records) = tokio::time::timeout(Duration::from_millis(200), read).await else { break };
            for (id, bytes) in &records? {
                if let Some(batch) = decode(bytes, &stats) {
                    note_marks(&marks, &batch, *id);
                }
                after = Some(*id);
                recovered = Some(*id);
            }
        }
        tokio::spawn(drain(inner.clone(), spool.clone(), marks.clone(), stats.clone(), recovered));
        Ok(SpooledEvents { inner, spool, marks, stats })
    }

    /// The spool, for metrics.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Counters of the drainer.
    pub fn drain_stats(&self) -> &DrainStats {
        &self.stats
    }
}

/// Moves spooled batches into the inner store, in order, forever. Records up to `recovered` (left
/// by an earlier run) go without the rows the inner store already holds.
async fn drain(
    inner: Arc<dyn EventStore>,
    spool: Spool,
    marks: Arc<Marks>,
    stats: Arc<DrainStats>,
    recovered: Option<RecordId>,
) {
    let mut after: Option<RecordId> = None;
    loop {
        let records = match spool.read_after(after, DRAIN_RECORDS, DRAIN_BYTES).await {
            Ok(records) => records,
            Err(SpoolError::Closed) => return,
            Err(error) => {
                tracing::error!(message = "Reading the spool failed; retrying.", %error);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(&(last, _)) = records.last() else { continue };
        let mut merged = EventBatch::default();
        for (_, bytes) in &records {
            if let Some(b) = decode(bytes, &stats) {
                merged.status.extend(b.status);
                merged.resources.extend(b.resources);
                merged.alarms.extend(b.alarms);
                merged.alarm_changes.extend(b.alarm_changes);
                merged.delivery.extend(b.delivery);
            }
        }
        let mut backoff = Duration::from_millis(100);
        let first = records.first().map_or(last, |(id, _)| *id);
        if recovered.is_some_and(|r| first <= r) {
            loop {
                match without_stored(inner.as_ref(), &mut merged).await {
                    Ok(dropped) => {
                        stats.already_stored_rows.fetch_add(dropped, Ordering::Relaxed);
                        break;
                    }
                    Err(error) => {
                        stats.insert_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(message = "Reading what ClickHouse holds of a recovered spool record failed; retrying.", %error);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        while let Err(error) = inner.append(merged.clone()).await {
            stats.insert_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(message = "Draining the spool failed; retrying.", %error, backoff_ms = backoff.as_millis() as u64);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        if let Err(error) = spool.ack(last) {
            // Not fatal: the records are in the inner store; after a restart they are drained
            // again, which the idempotent rows absorb.
            tracing::error!(message = "Acknowledging drained spool records failed.", %error);
        }
        stats.drained_records.fetch_add(records.len() as u64, Ordering::Relaxed);
        for (_, pending) in marks.lock().unwrap_or_else(|p| p.into_inner()).values_mut() {
            if pending.is_some_and(|id| id <= last) {
                *pending = None;
            }
        }
        after = Some(last);
    }
}

#[async_trait]
impl EventStore for SpooledEvents {
    async fn append(&self, batch: EventBatch) -> Result<()> {
        let bytes = serde_json::to_vec(&batch).map_err(|e| StoreError::Backend(format!("encoding a batch: {e}")))?;
        let id = self.spool.append(bytes).await?;
        note_marks(&self.marks, &batch, id);
        Ok(())
    }

    async fn last_seq(&self, device: DeviceId) -> Result<u64> {
        if let Some((seq, _)) = self.marks.lock().unwrap_or_else(|p| p.into_inner()).get(&device) {
            return Ok(*seq);
        }
        let stored = self.inner.last_seq(device).await?;
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        let entry = marks.entry(device).or_insert((stored, None));
        entry.0 = entry.0.max(stored);
        Ok(entry.0)
    }

    async fn list_alarm_records(&self, filter: AlarmFilter, page: Page) -> Result<Vec<AlarmRecord>> {
        self.inner.list_alarm_records(filter, page).await
    }

    async fn alarm_record(&self, id: u64) -> Result<Option<AlarmRecord>> {
        self.inner.alarm_record(id).await
    }

    async fn latest_alarm_records(&self, filter: AlarmFilter, limit: u32) -> Result<Vec<AlarmRecord>> {
        self.inner.latest_alarm_records(filter, limit).await
    }

    async fn alarm_log(
        &self,
        device: DeviceId,
        code: fleetpulse_proto::AlarmTypeCode,
    ) -> Result<Option<(fleetpulse_proto::UnixMillis, Vec<u8>)>> {
        self.inner.alarm_log(device, code).await
    }

    async fn device_sequences(&self, devices: &[DeviceId]) -> Result<Vec<DeviceSequences>> {
        self.inner.device_sequences(devices).await
    }

    async fn resource_history(
        &self,
        device: DeviceId,
        from: fleetpulse_proto::UnixMillis,
        to: fleetpulse_proto::UnixMillis,
        limit: u32,
    ) -> Result<Vec<ResourcePoint>> {
        self.inner.resource_history(device, from, to, limit).await
    }

    async fn event_counts(&self) -> Result<EventCounts> {
        self.inner.event_counts().await
    }

    async fn apply_retention(&self, cutoff: fleetpulse_proto::UnixMillis) -> Result<u64> {
        self.inner.apply_retention(cutoff).await
    }

    fn metrics(&self) -> Vec<StoreMetric> {
        let spool = self.spool.stats();
        let gauge = |name, help, value| StoreMetric { name, help, value, counter: false };
        let counter = |name, help, value| StoreMetric { name, help, value, counter: true };
        let mut out = vec![
            gauge("fleetpulse_spool_pending_records", "Spooled batches not yet in ClickHouse", spool.pending_records),
            gauge(
                "fleetpulse_spool_pending_bytes",
                "Bytes of spooled batches not yet in ClickHouse",
                spool.pending_bytes,
            ),
            gauge("fleetpulse_spool_segments", "Spool segment files", spool.segments),
            counter(
                "fleetpulse_spool_corrupt_records",
                "Corrupt spool regions skipped since start",
                spool.corrupt_records,
            ),
            counter("fleetpulse_spool_torn_tails", "Torn spool tails cut at open", spool.torn_tails),
            counter(
                "fleetpulse_spool_drained_records",
                "Spooled batches drained into ClickHouse",
                self.stats.drained_records.load(Ordering::Relaxed),
            ),
            counter(
                "fleetpulse_spool_insert_failures",
                "Failed ClickHouse inserts while draining (each retried)",
                self.stats.insert_failures.load(Ordering::Relaxed),
            ),
            counter(
                "fleetpulse_spool_already_stored_rows",
                "Rows of spool records left by an earlier run that ClickHouse already held (stored by another node)",
                self.stats.already_stored_rows.load(Ordering::Relaxed),
            ),
            counter(
                "fleetpulse_spool_undecodable_records",
                "Spool records that could not be decoded",
                self.stats.undecodable_records.load(Ordering::Relaxed),
            ),
        ];
        out.extend(self.inner.metrics());
        out
    }
}

#[cfg(test)]
mod tests {
    use fleetpulse_proto::domain::ResourceSample;
    use fleetpulse_proto::{EnterpriseId, UnixMillis};

    use super::*;
    use crate::embedded::{EmbeddedConfig, EmbeddedStore};
    use crate::spool::SpoolConfig;

    fn resources(device: DeviceId, seqs: &[u64], at: i64) -> EventBatch {
        let sample = ResourceSample { cpu_centi_pct: 100, mem_used_bytes: 1, mem_total_bytes: 2 };
        EventBatch {
            resources: seqs
                .iter()
                .map(|&seq| ResourceEvent {
                    device_id: device,
                    enterprise_id: EnterpriseId(1),
                    seq,
                    at: UnixMillis(at),
                    sample,
                })
                .collect(),
            delivery: vec![(device, seqs.iter().copied().max().unwrap_or(0))],
            ..EventBatch::default()
        }
    }

    /// A node died with seqs 2 and 3 of a device durable in its spool, unacknowledged; the device
    /// sent them again to another node (which stored 2, with its own receipt time). The restarted
    /// node drains 3 and leaves 2 out: each seq is stored once.
    #[tokio::test]
    async fn a_recovered_record_leaves_out_what_another_node_stored() {
        let dir = tempfile::tempdir().expect("temp dir");
        let inner: Arc<dyn EventStore> = Arc::new(
            EmbeddedStore::open(&dir.path().join("db"), EmbeddedConfig { fsync: false, ..EmbeddedConfig::default() })
                .expect("open store"),
        );
        let device = DeviceId(7);
        inner.append(resources(device, &[1, 2], 2_000)).await.expect("the other node's rows");
        let config = SpoolConfig { dir: dir.path().join("spool"), ..SpoolConfig::default() };
        let spool = Spool::open(config.clone()).expect("spool");
        let left = serde_json::to_vec(&resources(device, &[2, 3], 1_000)).expect("encode");
        spool.append(left).await.expect("left by the dead run");
        drop(spool);

        let events = SpooledEvents::start(inner.clone(), Spool::open(config).expect("reopen")).await.expect("start");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while events.drain_stats().drained_records.load(Ordering::Relaxed) < 1 {
            assert!(std::time::Instant::now() < deadline, "never drained");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let seqs = inner.device_sequences(&[device]).await.expect("sequences");
        assert_eq!((seqs[0].rows, seqs[0].ranges.clone()), (3, vec![(1, 3)]));
        assert_eq!(events.drain_stats().already_stored_rows.load(Ordering::Relaxed), 1);
    }
}
