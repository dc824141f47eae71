//! The event half of the store (`EventStore`: one engine's API, so one trait): append-only
//! status, resource and alarm events, the alarm records aggregated from them, delivery marks,
//! resource history and retention.

use async_trait::async_trait;
use fleetpulse_proto::domain::{AlarmChange, DeviceStatus, ResourceSample};
use fleetpulse_proto::{AccountId, AlarmTypeCode, DeviceId, EnterpriseId, Mac, Severity, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::{Page, Result};

/// Most records one [`EventStore::latest_alarm_records`] returns, whatever limit it is given.
pub const MAX_LATEST_ALARM_RECORDS: u32 = 500;

/// Most samples one [`crate::EventStore::resource_history`] returns, whatever limit it is given.
pub const MAX_RESOURCE_HISTORY: u32 = 1_000;

/// Append-only event streams, aggregated alarm records and delivery marks.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends a batch; returns once it is durable. A batch is applied whole or not at all.
    async fn append(&self, batch: EventBatch) -> Result<()>;
    /// The highest sequence number durably applied for the device (0 if none).
    async fn last_seq(&self, device: DeviceId) -> Result<u64>;
    /// Aggregated alarm records matching the filter, ordered by record id (keyset pagination).
    async fn list_alarm_records(&self, filter: AlarmFilter, page: Page) -> Result<Vec<AlarmRecord>>;
    /// The alarm record with this id.
    async fn alarm_record(&self, id: u64) -> Result<Option<AlarmRecord>>;
    /// The most recently occurred alarm records matching the filter (as in
    /// [`EventStore::list_alarm_records`]), ordered by latest occurrence then id, both
    /// descending; at most `limit`, and never more than [`MAX_LATEST_ALARM_RECORDS`] (ALM-6,
    /// the bell icon).
    async fn latest_alarm_records(&self, filter: AlarmFilter, limit: u32) -> Result<Vec<AlarmRecord>>;
    /// The newest alarm log the device attached to an alarm of this type (ALM-1: Application
    /// crash, Application no response, Kernel panic), with the time of its alarm.
    async fn alarm_log(&self, device: DeviceId, code: AlarmTypeCode) -> Result<Option<(UnixMillis, Vec<u8>)>>;
    /// Per device: how many persisted rows carry a device sequence number, and which distinct
    /// numbers, as ranges (LT-3). Devices without rows are answered with zero rows.
    async fn device_sequences(&self, devices: &[DeviceId]) -> Result<Vec<DeviceSequences>>;
    /// The device's CPU/memory samples received in `[from, to)`, newest first (by device
    /// sequence number, which follows receipt time), at most `limit` and never more than
    /// [`MAX_RESOURCE_HISTORY`].
    async fn resource_history(
        &self,
        device: DeviceId,
        from: UnixMillis,
        to: UnixMillis,
        limit: u32,
    ) -> Result<Vec<ResourcePoint>>;
    /// Number of event rows of each kind, for metrics and tests.
    async fn event_counts(&self) -> Result<EventCounts>;
    /// Retention (STO-4): removes status events, resource reports and alarm events older than
    /// `cutoff` (at the backend's granularity: ClickHouse drops whole days). Aggregated alarm
    /// records and delivery marks stay. Returns the number of rows (embedded) or partitions
    /// (ClickHouse) removed.
    async fn apply_retention(&self, cutoff: UnixMillis) -> Result<u64>;
    /// The backend's own numbers for `/metrics` (queue depths, commits, spool state), read at
    /// scrape time.
    fn metrics(&self) -> Vec<StoreMetric> {
        Vec::new()
    }
    /// Whether the store can complete writes now (false while its disk is full or failing);
    /// `/readyz` answers 503 while false. Backends that cannot tell answer true.
    fn writable(&self) -> bool {
        true
    }
}

/// One number a store reports for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreMetric {
    /// Prometheus name (without the `_total` suffix of counters).
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// The value.
    pub value: u64,
    /// A monotonic counter (else a gauge).
    pub counter: bool,
}

/// A status report as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StatusEvent {
    /// The device.
    pub device_id: DeviceId,
    /// Its enterprise.
    pub enterprise_id: EnterpriseId,
    /// Device sequence number.
    pub seq: u64,
    /// Server receive time.
    pub at: UnixMillis,
    /// The status.
    pub status: DeviceStatus,
}

/// A resource report as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResourceEvent {
    /// The device.
    pub device_id: DeviceId,
    /// Its enterprise.
    pub enterprise_id: EnterpriseId,
    /// Device sequence number.
    pub seq: u64,
    /// Server receive time.
    pub at: UnixMillis,
    /// The sample.
    pub sample: ResourceSample,
}

/// One alarm occurrence as stored (raw, before aggregation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AlarmEvent {
    /// The device.
    pub device_id: DeviceId,
    /// Its enterprise.
    pub enterprise_id: EnterpriseId,
    /// Device sequence number; 0 for alarms the server derived (Offline).
    pub seq: u64,
    /// Time.
    pub at: UnixMillis,
    /// Alarm type.
    pub code: AlarmTypeCode,
    /// True if the device cleared the alarm.
    pub clear: bool,
    /// Description.
    pub description: String,
    /// Alarm log, for the types that carry one.
    pub log: Option<Vec<u8>>,
}

/// Everything one group of frames changes; applied atomically by [`crate::EventStore::append`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventBatch {
    /// Status reports.
    pub status: Vec<StatusEvent>,
    /// Resource reports.
    pub resources: Vec<ResourceEvent>,
    /// Alarm occurrences.
    pub alarms: Vec<AlarmEvent>,
    /// Changes to aggregated alarm records.
    pub alarm_changes: Vec<AlarmChange>,
    /// Highest applied sequence number per device in this batch.
    pub delivery: Vec<(DeviceId, u64)>,
}

impl EventBatch {
    /// Number of rows the batch writes (its weight for batching limits).
    pub fn rows(&self) -> usize {
        self.status.len() + self.resources.len() + self.alarms.len() + self.alarm_changes.len() + self.delivery.len()
    }

    /// True if the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.rows() == 0
    }
}

/// Whether an alarm record is still active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlarmStatus {
    /// Raised, neither acknowledged nor cleared.
    Active,
    /// Acknowledged by an account; still not cleared (further raises keep it acknowledged).
    Acknowledged,
    /// Cleared by recovery, by the device or by an account.
    Cleared,
}

impl AlarmStatus {
    /// Name in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmStatus::Active => "active",
            AlarmStatus::Acknowledged => "acknowledged",
            AlarmStatus::Cleared => "cleared",
        }
    }
}

/// An alarm aggregated per (device, type) (ALM-1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct AlarmRecord {
    /// Identifier.
    pub id: u64,
    /// The device.
    pub device_id: DeviceId,
    /// Its enterprise.
    pub enterprise_id: EnterpriseId,
    /// Alarm type code.
    pub code: AlarmTypeCode,
    /// Alarm type name.
    pub name: &'static str,
    /// Severity.
    pub severity: Severity,
    /// First occurrence.
    pub first_at: UnixMillis,
    /// Latest occurrence.
    pub latest_at: UnixMillis,
    /// Number of occurrences.
    pub count: u64,
    /// Latest description.
    pub description: String,
    /// Active or cleared.
    pub status: AlarmStatus,
    /// When it was cleared.
    pub cleared_at: Option<UnixMillis>,
    /// Who cleared it by hand (None for recovery and device clears).
    pub cleared_by: Option<AccountId>,
    /// When it was acknowledged (in its current activation).
    pub acknowledged_at: Option<UnixMillis>,
    /// Who acknowledged it.
    pub acknowledged_by: Option<AccountId>,
}

/// Filters of [`crate::EventStore::list_alarm_records`] and
/// [`crate::EventStore::latest_alarm_records`]; `None` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlarmFilter {
    /// Only this enterprise.
    pub enterprise: Option<EnterpriseId>,
    /// Only these enterprises (a channel account's subtree); at most
    /// [`crate::MAX_ENTERPRISE_CHANNEL_FILTER`] ids, an empty list matches nothing.
    pub enterprises: Option<Vec<EnterpriseId>>,
    /// Only this device.
    pub device: Option<DeviceId>,
    /// Only this alarm type.
    pub code: Option<AlarmTypeCode>,
    /// Only alarm types of this severity.
    pub severity: Option<Severity>,
    /// Only active or only cleared records.
    pub status: Option<AlarmStatus>,
    /// Latest occurrence at or after this time.
    pub latest_from: Option<UnixMillis>,
    /// Latest occurrence before this time.
    pub latest_to: Option<UnixMillis>,
}

impl AlarmFilter {
    /// The ` AND enterprise_id IN (…)` term of [`AlarmFilter::enterprises`] (integers: nothing to
    /// escape), empty without that filter; `Ok(None)` if the list is empty (no record matches).
    /// [`crate::StoreError::InvalidInput`] for more than
    /// [`crate::MAX_ENTERPRISE_CHANNEL_FILTER`] ids.
    pub fn enterprises_term(&self) -> crate::Result<Option<String>> {
        let Some(ids) = &self.enterprises else { return Ok(Some(String::new())) };
        crate::check_bound("enterprise ids", ids.len(), crate::MAX_ENTERPRISE_CHANNEL_FILTER)?;
        if ids.is_empty() {
            return Ok(None);
        }
        let list: Vec<String> = ids.iter().map(|e| e.0.to_string()).collect();
        Ok(Some(format!(" AND enterprise_id IN ({})", list.join(","))))
    }

    /// The alarm type codes the severity filter selects (`None`: no severity filter).
    pub fn severity_codes(&self) -> Option<Vec<u16>> {
        self.severity
            .map(|s| fleetpulse_proto::ALARM_TYPES.iter().filter(|t| t.severity == s).map(|t| t.code.0).collect())
    }
}

/// Stored sequence numbers of one device (LT-3 verification).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct StoredSequences {
    /// The device.
    pub device_id: DeviceId,
    /// Its MAC.
    pub mac: Option<Mac>,
    /// Its serial.
    pub serial: Option<String>,
    /// Persisted rows carrying a device sequence number.
    pub rows: u64,
    /// Distinct sequence numbers as sorted, inclusive, non-adjacent ranges.
    pub ranges: Vec<(u64, u64)>,
}

/// Stored sequence numbers of one device, as the event store knows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DeviceSequences {
    /// The device.
    pub device_id: DeviceId,
    /// Persisted rows carrying a device sequence number.
    pub rows: u64,
    /// Distinct sequence numbers as sorted, inclusive, non-adjacent ranges.
    pub ranges: Vec<(u64, u64)>,
}

/// Row counts per event table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct EventCounts {
    /// Status events.
    pub status: u64,
    /// Resource reports.
    pub resources: u64,
    /// Alarm events.
    pub alarms: u64,
    /// Aggregated alarm records.
    pub alarm_records: u64,
}

/// Folds sorted sequence numbers (duplicates allowed) into inclusive ranges.
pub fn to_ranges(sorted: impl IntoIterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for s in sorted {
        match out.last_mut() {
            Some((_, end)) if s <= end.saturating_add(1) => *end = (*end).max(s),
            _ => out.push((s, s)),
        }
    }
    out
}

/// One CPU/memory sample of a device's history (DEV-3, DIA-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ResourcePoint {
    /// Server receive time.
    pub at: UnixMillis,
    /// The sample.
    #[serde(flatten)]
    pub sample: ResourceSample,
}

#[cfg(test)]
mod tests {
    use super::to_ranges;

    #[test]
    fn ranges_fold_runs_and_duplicates() {
        assert_eq!(to_ranges([]), vec![]);
        assert_eq!(to_ranges([1, 2, 3, 5, 5, 6, 9]), vec![(1, 3), (5, 6), (9, 9)]);
        assert_eq!(to_ranges([4, 4, 4]), vec![(4, 4)]);
    }
}
