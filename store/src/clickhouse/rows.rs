//! Rows of the ClickHouse tables (RowBinary via the `clickhouse` crate) and their explicit
//! conversions from and to the store's domain types.

use ::clickhouse::Row;
use fleetpulse_proto::{AccountId, AlarmTypeCode, DeviceId, EnterpriseId, Severity, UnixMillis};
use serde::{Deserialize, Serialize};

use super::records::RecordState;
use crate::{AlarmEvent, AlarmLifecycle, AlarmRecord, AlarmStatus, ResourceEvent, Result, StatusEvent, StoreError};

/// The snake_case name serde gives a unit enum variant (as the embedded store stores them).
fn variant_name<T: Serialize>(value: T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// A `status_events` row.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub(super) struct StatusRow {
    pub enterprise_id: u64,
    pub device_id: u64,
    pub seq: u64,
    pub at_ms: i64,
    pub sip_summary: String,
    pub call_status: String,
    pub firmware: String,
    pub public_ip: Option<String>,
    pub private_ip: Option<String>,
    pub uptime_s: u64,
    pub last_reboot: Option<i64>,
    /// The SIP lines as JSON.
    pub lines: String,
}

impl StatusRow {
    pub fn from_event(e: &StatusEvent) -> Result<StatusRow> {
        let s = &e.status;
        Ok(StatusRow {
            enterprise_id: e.enterprise_id.0,
            device_id: e.device_id.0,
            seq: e.seq,
            at_ms: e.at.0,
            sip_summary: variant_name(s.sip_summary()),
            call_status: variant_name(s.call_status),
            firmware: s.firmware.clone(),
            public_ip: s.public_ip.map(|ip| ip.to_string()),
            private_ip: s.private_ip.map(|ip| ip.to_string()),
            uptime_s: s.uptime_s,
            last_reboot: s.last_reboot.map(|t| t.0),
            lines: serde_json::to_string(&s.lines).map_err(|e| StoreError::Backend(e.to_string()))?,
        })
    }
}

/// A `resource_reports` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Row, Serialize, Deserialize)]
pub(super) struct ResourceRow {
    pub enterprise_id: u64,
    pub device_id: u64,
    pub seq: u64,
    pub at_ms: i64,
    pub cpu_centi_pct: u16,
    pub mem_used: u64,
    pub mem_total: u64,
}

impl ResourceRow {
    pub fn from_event(e: &ResourceEvent) -> ResourceRow {
        ResourceRow {
            enterprise_id: e.enterprise_id.0,
            device_id: e.device_id.0,
            seq: e.seq,
            at_ms: e.at.0,
            cpu_centi_pct: e.sample.cpu_centi_pct,
            mem_used: e.sample.mem_used_bytes,
            mem_total: e.sample.mem_total_bytes,
        }
    }
}

/// An `alarm_events` row.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub(super) struct AlarmEventRow {
    pub enterprise_id: u64,
    pub device_id: u64,
    pub seq: u64,
    pub at_ms: i64,
    pub code: u16,
    pub clear: u8,
    pub description: String,
    /// Raw bytes in a `Nullable(String)` column (RowBinary encodes both as length + bytes).
    pub log: Option<Vec<u8>>,
}

impl AlarmEventRow {
    pub fn from_event(e: &AlarmEvent) -> AlarmEventRow {
        AlarmEventRow {
            enterprise_id: e.enterprise_id.0,
            device_id: e.device_id.0,
            seq: e.seq,
            at_ms: e.at.0,
            code: e.code.0,
            clear: u8::from(e.clear),
            description: e.description.clone(),
            log: e.log.clone(),
        }
    }
}

/// A `delivery_marks` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Row, Serialize, Deserialize)]
pub(super) struct DeliveryRow {
    pub device_id: u64,
    pub last_seq: u64,
}

/// `status` values of `alarm_records` (`Enum8`, RowBinary `Int8`).
const ACTIVE: i8 = 1;
const CLEARED: i8 = 2;
const ACKNOWLEDGED: i8 = 3;

fn status_code(status: AlarmStatus) -> i8 {
    match status {
        AlarmStatus::Active => ACTIVE,
        AlarmStatus::Acknowledged => ACKNOWLEDGED,
        AlarmStatus::Cleared => CLEARED,
    }
}

fn status_of(code: i8) -> AlarmStatus {
    match code {
        ACTIVE => AlarmStatus::Active,
        ACKNOWLEDGED => AlarmStatus::Acknowledged,
        _ => AlarmStatus::Cleared,
    }
}

/// An `alarm_records` row: the full state of a record at a version.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub(super) struct AlarmRecordRow {
    pub id: u64,
    pub enterprise_id: u64,
    pub device_id: u64,
    pub code: u16,
    pub first_at: i64,
    pub latest_at: i64,
    pub count: u64,
    pub description: String,
    pub status: i8,
    pub cleared_at: Option<i64>,
    pub version: u64,
    pub applied: u64,
    pub acknowledged_at: Option<i64>,
    pub acknowledged_by: Option<u64>,
    pub cleared_by: Option<u64>,
}

impl AlarmRecordRow {
    pub fn from_state(s: &RecordState) -> AlarmRecordRow {
        let l = &s.life;
        AlarmRecordRow {
            id: s.id,
            enterprise_id: s.enterprise_id.0,
            device_id: s.device_id.0,
            code: s.code.0,
            first_at: l.first_at.0,
            latest_at: l.latest_at.0,
            count: l.count,
            description: l.description.clone(),
            status: status_code(l.status),
            cleared_at: l.cleared_at.map(|t| t.0),
            version: s.version(),
            applied: s.applied,
            acknowledged_at: l.acknowledged_at.map(|t| t.0),
            acknowledged_by: l.acknowledged_by.map(|a| a.0),
            cleared_by: l.cleared_by.map(|a| a.0),
        }
    }

    pub fn into_state(self) -> RecordState {
        RecordState {
            id: self.id,
            enterprise_id: EnterpriseId(self.enterprise_id),
            device_id: DeviceId(self.device_id),
            code: AlarmTypeCode(self.code),
            life: AlarmLifecycle {
                first_at: UnixMillis(self.first_at),
                latest_at: UnixMillis(self.latest_at),
                count: self.count,
                description: self.description,
                status: status_of(self.status),
                cleared_at: self.cleared_at.map(UnixMillis),
                cleared_by: self.cleared_by.map(AccountId),
                acknowledged_at: self.acknowledged_at.map(UnixMillis),
                acknowledged_by: self.acknowledged_by.map(AccountId),
            },
            applied: self.applied,
        }
    }

    pub fn into_record(self) -> AlarmRecord {
        let s = self.into_state();
        let alarm_type = s.code.alarm_type();
        let l = s.life;
        AlarmRecord {
            id: s.id,
            device_id: s.device_id,
            enterprise_id: s.enterprise_id,
            code: s.code,
            name: alarm_type.map_or("Unknown", |t| t.name),
            severity: alarm_type.map_or(Severity::Minor, |t| t.severity),
            first_at: l.first_at,
            latest_at: l.latest_at,
            count: l.count,
            description: l.description,
            status: l.status,
            cleared_at: l.cleared_at,
            cleared_by: l.cleared_by,
            acknowledged_at: l.acknowledged_at,
            acknowledged_by: l.acknowledged_by,
        }
    }
}
