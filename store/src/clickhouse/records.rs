//! Aggregated alarm records computed in memory: the full state of each record after a batch's
//! changes, written as one `alarm_records` row (no I/O here).
//!
//! Each change goes through the lifecycle rule both stores share ([`AlarmLifecycle::apply`]);
//! what is kept here is ClickHouse's part: the full state per record, its version, and the
//! fingerprint that makes a resent batch change nothing.
//!
//! Re-applying a batch must not count twice: each written state carries the fingerprint of the
//! changes that produced it (`applied`). When the current state already carries the fingerprint
//! of a batch's changes for the record, that batch was applied before and changes nothing.

use std::collections::HashMap;

use fleetpulse_proto::domain::{AlarmChange, AlarmChangeKind};
use fleetpulse_proto::{AlarmTypeCode, DeviceId, EnterpriseId};

use crate::{AlarmLifecycle, AlarmStatus, EventBatch, Result, StoreError};

/// Record ids are `device_id << 16 | code`, so device ids must fit in 48 bits.
const MAX_DEVICE_ID: u64 = (1 << 48) - 1;

/// The deterministic id of the record of (device, alarm type), used for keyset pagination.
pub(super) fn record_id(device: DeviceId, code: AlarmTypeCode) -> Result<u64> {
    if device.0 > MAX_DEVICE_ID {
        return Err(StoreError::Backend(format!(
            "device id {} does not fit the 48 bits of ClickHouse alarm record ids",
            device.0
        )));
    }
    Ok(device.0 << 16 | u64::from(code.0))
}

/// The full state of one aggregated alarm record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RecordState {
    /// `record_id(device_id, code)`.
    pub id: u64,
    pub enterprise_id: EnterpriseId,
    pub device_id: DeviceId,
    pub code: AlarmTypeCode,
    /// What the lifecycle rule reads and changes.
    pub life: AlarmLifecycle,
    /// Fingerprint of the batch changes that produced this state.
    pub applied: u64,
}

impl RecordState {
    /// The `ReplacingMergeTree` version: `count * 3 + stage` (active 0, acknowledged 1, cleared
    /// 2). It grows with every change of state — a raise adds at least 1, an acknowledgement 1,
    /// a clear 1 or 2 — so the newest state wins whatever the order parts merge in.
    pub fn version(&self) -> u64 {
        let stage = match self.life.status {
            AlarmStatus::Active => 0,
            AlarmStatus::Acknowledged => 1,
            AlarmStatus::Cleared => 2,
        };
        self.life.count.saturating_mul(3).saturating_add(stage)
    }
}

/// The changes of one batch to one record, in batch order.
#[derive(Debug)]
pub(super) struct RecordChanges<'a> {
    pub id: u64,
    pub device_id: DeviceId,
    pub enterprise_id: EnterpriseId,
    pub code: AlarmTypeCode,
    pub changes: Vec<&'a AlarmChange>,
    /// Identifies these changes: see [`fingerprint`].
    pub fingerprint: u64,
}

/// Groups a batch's alarm changes per record (records in order of first change).
pub(super) fn group(batch: &EventBatch) -> Result<Vec<RecordChanges<'_>>> {
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut groups: Vec<RecordChanges<'_>> = Vec::new();
    for change in &batch.alarm_changes {
        let id = record_id(change.device_id, change.code)?;
        let slot = *index.entry(id).or_insert_with(|| {
            groups.push(RecordChanges {
                id,
                device_id: change.device_id,
                enterprise_id: change.enterprise_id,
                code: change.code,
                changes: Vec::new(),
                fingerprint: 0,
            });
            groups.len() - 1
        });
        groups[slot].changes.push(change);
    }
    for g in &mut groups {
        let mark = batch.delivery.iter().filter(|(d, _)| *d == g.device_id).map(|(_, seq)| *seq).max();
        g.fingerprint = fingerprint(mark, &g.changes);
    }
    Ok(groups)
}

/// A stable 64-bit fingerprint (FNV-1a, which unlike std's hashers is fixed forever: it is
/// stored) of a record's changes in a batch and the batch's delivery mark for the device. Two
/// different batches give the same value only if they carry the same changes for the record and
/// the same mark: a resent batch.
fn fingerprint(delivery_mark: Option<u64>, changes: &[&AlarmChange]) -> u64 {
    let mut h = Fnv1a::default();
    match delivery_mark {
        Some(seq) => {
            h.write(&[1]);
            h.write(&seq.to_le_bytes());
        }
        None => h.write(&[0]),
    }
    for c in changes {
        h.write(&c.device_id.0.to_le_bytes());
        h.write(&c.code.0.to_le_bytes());
        h.write(&c.at.0.to_le_bytes());
        match &c.kind {
            AlarmChangeKind::Raise { description } => {
                h.write(&[1]);
                h.write(&(description.len() as u64).to_le_bytes());
                h.write(description.as_bytes());
            }
            AlarmChangeKind::Clear => h.write(&[2]),
            AlarmChangeKind::Acknowledge { by } => {
                h.write(&[3]);
                h.write(&by.0.to_le_bytes());
            }
            AlarmChangeKind::ManualClear { by } => {
                h.write(&[4]);
                h.write(&by.0.to_le_bytes());
            }
        }
    }
    // 0 means "no batch" in rows written before any change; keep it out of the range.
    h.0.max(1)
}

/// 64-bit FNV-1a.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// The state after applying `group` to `current`, or `None` if nothing is to be written: the
/// changes were applied before, or they change nothing (a clear of a cleared or missing record).
/// Each change goes through the one lifecycle rule, [`AlarmLifecycle::apply`].
pub(super) fn apply(current: Option<&RecordState>, group: &RecordChanges<'_>) -> Option<RecordState> {
    if current.is_some_and(|s| s.applied == group.fingerprint) {
        return None;
    }
    let mut state = current.map(|s| s.life.clone());
    let mut changed = false;
    for change in &group.changes {
        if let Ok(next) = AlarmLifecycle::apply(state.as_ref(), change.at, &change.kind) {
            changed = true;
            state = Some(next);
        }
    }
    let life = state.filter(|_| changed)?;
    Some(RecordState {
        id: group.id,
        enterprise_id: current.map_or(group.enterprise_id, |s| s.enterprise_id),
        device_id: group.device_id,
        code: group.code,
        life,
        applied: group.fingerprint,
    })
}

/// Current states of recently used records, bounded; one entry is evicted (arbitrarily) per
/// insertion when full. A miss is answered from ClickHouse by the caller.
#[derive(Debug)]
pub(super) struct RecordCache {
    states: HashMap<u64, RecordState>,
    capacity: usize,
}

impl RecordCache {
    /// An empty cache holding at most `capacity` records.
    pub fn new(capacity: usize) -> RecordCache {
        RecordCache { states: HashMap::new(), capacity: capacity.max(1) }
    }

    /// A cache that keeps nothing: every change reads the record's state from ClickHouse first
    /// (several nodes write records).
    pub fn none() -> RecordCache {
        RecordCache { states: HashMap::new(), capacity: 0 }
    }

    pub fn get(&self, id: u64) -> Option<&RecordState> {
        self.states.get(&id)
    }

    pub fn insert(&mut self, state: RecordState) {
        if self.capacity == 0 {
            return;
        }
        if self.states.len() >= self.capacity
            && !self.states.contains_key(&state.id)
            && let Some(victim) = self.states.keys().next().copied()
        {
            self.states.remove(&victim);
        }
        self.states.insert(state.id, state);
    }

    pub fn remove(&mut self, id: u64) {
        self.states.remove(&id);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.states.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_proto::UnixMillis;

    fn change(at: i64, kind: AlarmChangeKind) -> AlarmChange {
        AlarmChange {
            device_id: DeviceId(7),
            enterprise_id: EnterpriseId(1),
            code: AlarmTypeCode(105),
            at: UnixMillis(at),
            kind,
        }
    }

    fn raise(at: i64, description: &str) -> AlarmChange {
        change(at, AlarmChangeKind::Raise { description: description.into() })
    }

    fn batch(changes: Vec<AlarmChange>, mark: Option<u64>) -> EventBatch {
        EventBatch {
            alarm_changes: changes,
            delivery: mark.map(|m| vec![(DeviceId(7), m)]).unwrap_or_default(),
            ..EventBatch::default()
        }
    }

    /// Applies each batch in turn, as `append` does.
    fn run(batches: &[EventBatch]) -> Option<RecordState> {
        let mut state: Option<RecordState> = None;
        for b in batches {
            for g in group(b).expect("group") {
                if let Some(next) = apply(state.as_ref(), &g) {
                    state = Some(next);
                }
            }
        }
        state
    }

    #[test]
    fn raises_count_and_clears_only_active_records() {
        let s = run(&[batch(vec![raise(10, "a")], Some(1)), batch(vec![raise(5, "b")], Some(2))]).expect("record");
        assert_eq!(
            (s.life.count, s.life.first_at, s.life.latest_at, s.life.description.as_str()),
            (2, UnixMillis(10), UnixMillis(10), "b")
        );
        assert_eq!(s.life.status, AlarmStatus::Active);
        assert_eq!(s.version(), 6);
        let b1 = batch(vec![raise(10, "a")], Some(1));
        let b2 = batch(vec![change(20, AlarmChangeKind::Clear), change(30, AlarmChangeKind::Clear)], Some(2));
        let s = run(&[b1.clone(), b2.clone()]).expect("record");
        assert_eq!((s.life.status, s.life.cleared_at, s.version()), (AlarmStatus::Cleared, Some(UnixMillis(20)), 5));
        let s = run(&[b1, b2, batch(vec![raise(40, "c")], Some(3))]).expect("record");
        assert_eq!(
            (s.life.status, s.life.cleared_at, s.life.count, s.life.latest_at),
            (AlarmStatus::Active, None, 2, UnixMillis(40))
        );
        assert_eq!(run(&[batch(vec![change(1, AlarmChangeKind::Clear)], None)]), None, "clear of a missing record");
    }

    #[test]
    fn a_resent_batch_changes_nothing_but_an_equal_later_one_does() {
        let b = batch(vec![raise(10, "a"), raise(11, "a")], Some(4));
        let once = run(std::slice::from_ref(&b)).expect("record");
        assert_eq!(run(&[b.clone(), b.clone()]), Some(once.clone()));
        // Same changes, later delivery mark: new frames, counted.
        let later = batch(vec![raise(10, "a"), raise(11, "a")], Some(5));
        assert_eq!(run(&[b, later]).map(|s| s.life.count), Some(4));
    }

    #[test]
    fn ids_pack_device_and_code_and_refuse_wide_devices() {
        assert_eq!(record_id(DeviceId(3), AlarmTypeCode(109)).expect("id"), (3 << 16) | 109);
        assert!(record_id(DeviceId(1 << 48), AlarmTypeCode(1)).is_err());
    }

    #[test]
    fn the_cache_stays_bounded() {
        let mut cache = RecordCache::new(2);
        let state = run(&[batch(vec![raise(1, "x")], None)]).expect("record");
        for id in 0..5 {
            cache.insert(RecordState { id, ..state.clone() });
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get(4).is_some(), "the newest entry stays");
    }
}
