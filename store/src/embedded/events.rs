//! The event half on SQLite ([`EventStore`]): batches appended through the writer's group
//! commit with their delivery marks, alarm records aggregated in the same transaction, listings,
//! resource history, sequences for the load tester, and retention.

use super::writer::WriteJob;
use async_trait::async_trait;
use fleetpulse_proto::domain::AlarmChange;
use fleetpulse_proto::{AccountId, AlarmTypeCode, DeviceId, EnterpriseId, Severity, UnixMillis};
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::sync::atomic::Ordering;

use super::{EmbeddedStore, SqlValue};
use crate::*;

fn alarm_record_from_row(r: &Row<'_>) -> rusqlite::Result<AlarmRecord> {
    let code = AlarmTypeCode(r.get(3)?);
    let alarm_type = code.alarm_type();
    let status: String = r.get(9)?;
    Ok(AlarmRecord {
        id: r.get(0)?,
        device_id: DeviceId(r.get(1)?),
        enterprise_id: EnterpriseId(r.get(2)?),
        code,
        name: alarm_type.map_or("Unknown", |t| t.name),
        severity: alarm_type.map_or(Severity::Minor, |t| t.severity),
        first_at: UnixMillis(r.get(4)?),
        latest_at: UnixMillis(r.get(5)?),
        count: r.get(6)?,
        description: r.get(7)?,
        // Only this build writes the column; anything else reads as closed.
        status: AlarmStatus::parse(&status).unwrap_or(AlarmStatus::Cleared),
        cleared_at: r.get::<_, Option<i64>>(8)?.map(UnixMillis),
        cleared_by: r.get::<_, Option<u64>>(10)?.map(AccountId),
        acknowledged_at: r.get::<_, Option<i64>>(11)?.map(UnixMillis),
        acknowledged_by: r.get::<_, Option<u64>>(12)?.map(AccountId),
    })
}

/// The columns `alarm_record_from_row` reads, in its order.
const ALARM_RECORD_COLUMNS: &str = "id, device_id, enterprise_id, code, first_at, latest_at, count, description, \
     cleared_at, status, cleared_by, acknowledged_at, acknowledged_by";

/// The `WHERE` clause of an alarm filter (empty if it filters nothing) and its values in order,
/// or `None` if it matches no record. Only the filters given become terms, so that the planner
/// can pick the index that fits (a term like `(?1 IS NULL OR enterprise_id = ?1)` cannot use one).
fn alarm_filter_sql(filter: &AlarmFilter) -> Result<Option<(String, Vec<SqlValue>)>> {
    let mut terms: Vec<String> = Vec::new();
    let mut values: Vec<SqlValue> = Vec::new();
    match filter.enterprises_term()? {
        None => return Ok(None),
        Some(term) if !term.is_empty() => terms.push(term.trim_start_matches(" AND ").to_owned()),
        Some(_) => {}
    }
    if let Some(e) = filter.enterprise {
        terms.push("enterprise_id = ?".into());
        values.push(Box::new(e.0));
    }
    if let Some(d) = filter.device {
        terms.push("device_id = ?".into());
        values.push(Box::new(d.0));
    }
    if let Some(code) = filter.code {
        terms.push("code = ?".into());
        values.push(Box::new(code.0));
    }
    if let Some(status) = filter.status {
        terms.push("status = ?".into());
        values.push(Box::new(status.as_str()));
    }
    if let Some(t) = filter.latest_from {
        terms.push("latest_at >= ?".into());
        values.push(Box::new(t.0));
    }
    if let Some(t) = filter.latest_to {
        terms.push("latest_at < ?".into());
        values.push(Box::new(t.0));
    }
    match filter.severity_codes() {
        Some(codes) if codes.is_empty() => return Ok(None),
        // Integers from the static table of alarm types: nothing to escape.
        Some(codes) => {
            terms.push(format!("code IN ({})", codes.iter().map(u16::to_string).collect::<Vec<_>>().join(",")))
        }
        None => {}
    }
    let clause = if terms.is_empty() { String::new() } else { format!(" WHERE {}", terms.join(" AND ")) };
    Ok(Some((clause, values)))
}

/// The query of [`EventStore::latest_alarm_records`] and its values, or `None` if it returns
/// nothing (a zero limit, a filter matching no record). Newest first along
/// `alarm_records_latest`, or `alarm_records_enterprise` for one enterprise: both indexes end in
/// the rowid (`id`), so neither the order nor the limit needs a sort of every matching record.
pub(super) fn latest_alarm_records_sql(filter: &AlarmFilter, limit: u32) -> Result<Option<(String, Vec<SqlValue>)>> {
    let limit = limit.min(MAX_LATEST_ALARM_RECORDS);
    if limit == 0 {
        return Ok(None);
    }
    let Some((conditions, mut values)) = alarm_filter_sql(filter)? else { return Ok(None) };
    values.push(Box::new(limit));
    let sql = format!(
        "SELECT {ALARM_RECORD_COLUMNS} FROM alarm_records{conditions} ORDER BY latest_at DESC, id DESC LIMIT ?"
    );
    Ok(Some((sql, values)))
}

/// `device_events.kind` of a status event, a resource report and an alarm event: the statements
/// below spell the same numbers.
const STATUS_KIND: i64 = 0;
const RESOURCE_KIND: i64 = 1;
const ALARM_KIND: i64 = 2;

/// A device's sequence numbers (`?1`): one walk of its range of `device_events`, already in seq
/// order. Offline alarms (kind 2 with seq 0) are the server's, not the device's sequence.
pub(super) const DEVICE_SEQUENCES_SQL: &str =
    "SELECT seq FROM device_events WHERE device_id = ?1 AND (kind <> 2 OR seq > 0) ORDER BY seq";

/// A device's resource samples (`?1`) with `?2 <= at < ?3`, newest first, at most `?4`: a walk of
/// its range of `device_events` backwards (no sort), reading the resource reports (kind 1) on it.
pub(super) const RESOURCE_HISTORY_SQL: &str = "SELECT r.at, r.cpu_centi_pct, r.mem_used, r.mem_total \
     FROM device_events AS d CROSS JOIN resource_reports AS r ON r.id = d.row \
     WHERE d.device_id = ?1 AND d.kind = 1 AND r.at >= ?2 AND r.at < ?3 ORDER BY d.seq DESC LIMIT ?4";

/// The newest log of a device (`?1`) and alarm type (`?2`), along the partial index
/// `alarm_events_log`, which holds only the alarm events that carry a log.
pub(super) const ALARM_LOG_SQL: &str = "SELECT at, log FROM alarm_events \
     WHERE device_id = ?1 AND code = ?2 AND log IS NOT NULL ORDER BY at DESC LIMIT 1";

fn append_batch(c: &Connection, b: &EventBatch) -> Result<()> {
    // Each event's entry in `device_events`, written here rather than by a trigger: a trigger
    // made the commit 11 % dearer (the store bench).
    let mut index =
        c.prepare_cached("INSERT INTO device_events (device_id, seq, kind, row) VALUES (?1, ?2, ?3, ?4)")?;
    if !b.status.is_empty() {
        let mut st = c.prepare_cached(
            "INSERT INTO status_events (device_id, enterprise_id, seq, at, sip_summary, call_status, firmware, \
             public_ip, private_ip, uptime_s, last_reboot, lines) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for e in &b.status {
            let s = &e.status;
            let lines = serde_json::to_string(&s.lines).map_err(|e| StoreError::Backend(e.to_string()))?;
            st.execute(params![
                e.device_id.0,
                e.enterprise_id.0,
                e.seq,
                e.at.0,
                serde_json::to_value(s.sip_summary()).ok().and_then(|v| v.as_str().map(str::to_owned)),
                serde_json::to_value(s.call_status).ok().and_then(|v| v.as_str().map(str::to_owned)),
                s.firmware,
                s.public_ip.map(|ip| ip.to_string()),
                s.private_ip.map(|ip| ip.to_string()),
                s.uptime_s,
                s.last_reboot.map(|t| t.0),
                lines,
            ])?;
            index.execute(params![e.device_id.0, e.seq, STATUS_KIND, c.last_insert_rowid()])?;
        }
    }
    if !b.resources.is_empty() {
        let mut st = c.prepare_cached(
            "INSERT INTO resource_reports (device_id, enterprise_id, seq, at, cpu_centi_pct, mem_used, mem_total) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for e in &b.resources {
            st.execute(params![
                e.device_id.0,
                e.enterprise_id.0,
                e.seq,
                e.at.0,
                e.sample.cpu_centi_pct,
                e.sample.mem_used_bytes,
                e.sample.mem_total_bytes
            ])?;
            index.execute(params![e.device_id.0, e.seq, RESOURCE_KIND, c.last_insert_rowid()])?;
        }
    }
    if !b.alarms.is_empty() {
        let mut st = c.prepare_cached(
            "INSERT INTO alarm_events (device_id, enterprise_id, seq, at, code, clear, description, log) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for e in &b.alarms {
            st.execute(params![
                e.device_id.0,
                e.enterprise_id.0,
                e.seq,
                e.at.0,
                e.code.0,
                e.clear,
                e.description,
                e.log
            ])?;
            index.execute(params![e.device_id.0, e.seq, ALARM_KIND, c.last_insert_rowid()])?;
        }
    }
    for ch in &b.alarm_changes {
        apply_alarm_change(c, ch)?;
    }
    if !b.delivery.is_empty() {
        let mut st = c.prepare_cached(
            "INSERT INTO delivery_marks (device_id, last_seq) VALUES (?1, ?2) \
             ON CONFLICT (device_id) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
        )?;
        for (device, seq) in &b.delivery {
            st.execute(params![device.0, seq])?;
        }
    }
    Ok(())
}

/// Applies one alarm change to its aggregated record through the lifecycle rule both stores share
/// ([`AlarmLifecycle::apply`]): reads the record, and writes it back only if the change changes it.
fn apply_alarm_change(c: &Connection, ch: &AlarmChange) -> Result<()> {
    let row = c
        .prepare_cached(
            "SELECT id, first_at, latest_at, count, description, status, cleared_at, cleared_by, acknowledged_at, \
             acknowledged_by FROM alarm_records WHERE device_id = ?1 AND code = ?2",
        )?
        .query_row(params![ch.device_id.0, ch.code.0], |r| {
            let status: String = r.get(5)?;
            let lifecycle = AlarmLifecycle {
                first_at: UnixMillis(r.get(1)?),
                latest_at: UnixMillis(r.get(2)?),
                count: r.get(3)?,
                description: r.get(4)?,
                status: AlarmStatus::Active,
                cleared_at: r.get::<_, Option<i64>>(6)?.map(UnixMillis),
                cleared_by: r.get::<_, Option<u64>>(7)?.map(AccountId),
                acknowledged_at: r.get::<_, Option<i64>>(8)?.map(UnixMillis),
                acknowledged_by: r.get::<_, Option<u64>>(9)?.map(AccountId),
            };
            Ok((r.get::<_, i64>(0)?, lifecycle, status))
        })
        .optional()?;
    let current = match row {
        None => None,
        Some((id, lifecycle, status)) => Some((
            id,
            AlarmLifecycle {
                status: AlarmStatus::parse(&status)
                    .ok_or_else(|| StoreError::Backend(format!("unknown alarm status {status:?}")))?,
                ..lifecycle
            },
        )),
    };
    let Ok(next) = AlarmLifecycle::apply(current.as_ref().map(|(_, l)| l), ch.at, &ch.kind) else { return Ok(()) };
    let stage = (
        next.status.as_str(),
        next.cleared_at.map(|t| t.0),
        next.cleared_by.map(|a| a.0),
        next.acknowledged_at.map(|t| t.0),
        next.acknowledged_by.map(|a| a.0),
    );
    match current {
        None => {
            c.prepare_cached(
                "INSERT INTO alarm_records (device_id, enterprise_id, code, first_at, latest_at, count, description, \
                 status, cleared_at, cleared_by, acknowledged_at, acknowledged_by) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                ch.device_id.0,
                ch.enterprise_id.0,
                ch.code.0,
                next.first_at.0,
                next.latest_at.0,
                next.count,
                next.description,
                stage.0,
                stage.1,
                stage.2,
                stage.3,
                stage.4,
            ])?;
        }
        // An acknowledgement or a clear: only the stage columns change, so the indexes over the
        // occurrence times are left alone.
        Some((id, old)) if (old.first_at, old.latest_at, old.count) == (next.first_at, next.latest_at, next.count) => {
            c.prepare_cached(
                "UPDATE alarm_records SET status = ?2, cleared_at = ?3, cleared_by = ?4, acknowledged_at = ?5, \
                 acknowledged_by = ?6 WHERE id = ?1",
            )?
            .execute(params![id, stage.0, stage.1, stage.2, stage.3, stage.4])?;
        }
        Some((id, _)) => {
            c.prepare_cached(
                "UPDATE alarm_records SET first_at = ?2, latest_at = ?3, count = ?4, description = ?5, status = ?6, \
                 cleared_at = ?7, cleared_by = ?8, acknowledged_at = ?9, acknowledged_by = ?10 WHERE id = ?1",
            )?
            .execute(params![
                id,
                next.first_at.0,
                next.latest_at.0,
                next.count,
                next.description,
                stage.0,
                stage.1,
                stage.2,
                stage.3,
                stage.4,
            ])?;
        }
    }
    Ok(())
}

/// An append job: re-appliable (the batch is kept until the group commits).
struct AppendJob {
    batch: EventBatch,
    reply: tokio::sync::oneshot::Sender<Result<()>>,
}

impl WriteJob for AppendJob {
    fn rows(&self) -> usize {
        self.batch.rows()
    }

    fn apply(&mut self, conn: &Connection) -> Result<()> {
        append_batch(conn, &self.batch)
    }

    fn finish(self: Box<Self>, outcome: Result<()>) {
        let _ = self.reply.send(outcome);
    }
}

#[async_trait]
impl EventStore for EmbeddedStore {
    async fn append(&self, batch: EventBatch) -> Result<()> {
        let (reply, done) = tokio::sync::oneshot::channel();
        self.submit(Box::new(AppendJob { batch, reply })).await?;
        done.await.map_err(|_| StoreError::Closed)?
    }

    async fn last_seq(&self, device: DeviceId) -> Result<u64> {
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT last_seq FROM delivery_marks WHERE device_id = ?1")?
                .query_row([device.0], |r| r.get(0))
                .optional()?
                .unwrap_or(0))
        })
        .await
    }

    async fn list_alarm_records(&self, filter: AlarmFilter, page: Page) -> Result<Vec<AlarmRecord>> {
        // The severity filter becomes a list of codes (integers from the static table).
        let severity = match filter.severity_codes() {
            Some(codes) if codes.is_empty() => return Ok(Vec::new()),
            Some(codes) => {
                format!(" AND code IN ({})", codes.iter().map(u16::to_string).collect::<Vec<_>>().join(","))
            }
            None => String::new(),
        };
        let Some(enterprises) = filter.enterprises_term()? else { return Ok(Vec::new()) };
        let status = filter.status.map(AlarmStatus::as_str);
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {ALARM_RECORD_COLUMNS} FROM alarm_records WHERE (?1 IS NULL OR enterprise_id = ?1) AND (?2 IS NULL OR device_id = ?2) \
                 AND (?5 IS NULL OR code = ?5) AND (?6 IS NULL OR status = ?6) \
                 AND (?7 IS NULL OR latest_at >= ?7) AND (?8 IS NULL OR latest_at < ?8){severity}{enterprises} \
                 AND id > ?3 ORDER BY id LIMIT ?4"
            ))?;
            let rows = st.query_map(
                params![
                    filter.enterprise.map(|e| e.0),
                    filter.device.map(|d| d.0),
                    page.after,
                    page.limit,
                    filter.code.map(|c| c.0),
                    status,
                    filter.latest_from.map(|t| t.0),
                    filter.latest_to.map(|t| t.0),
                ],
                alarm_record_from_row,
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn latest_alarm_records(&self, filter: AlarmFilter, limit: u32) -> Result<Vec<AlarmRecord>> {
        let Some((sql, values)) = latest_alarm_records_sql(&filter, limit)? else { return Ok(Vec::new()) };
        self.read(move |c| {
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map(rusqlite::params_from_iter(values.iter()), alarm_record_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn alarm_log(&self, device: DeviceId, code: AlarmTypeCode) -> Result<Option<(UnixMillis, Vec<u8>)>> {
        self.read(move |c| {
            Ok(c.prepare_cached(ALARM_LOG_SQL)?
                .query_row(params![device.0, code.0], |r| Ok((UnixMillis(r.get(0)?), r.get::<_, Vec<u8>>(1)?)))
                .optional()?)
        })
        .await
    }

    async fn alarm_record(&self, id: u64) -> Result<Option<AlarmRecord>> {
        self.read(move |c| {
            Ok(c.prepare_cached(&format!("SELECT {ALARM_RECORD_COLUMNS} FROM alarm_records WHERE id = ?1"))?
                .query_row([id], alarm_record_from_row)
                .optional()?)
        })
        .await
    }

    async fn device_sequences(&self, devices: &[DeviceId]) -> Result<Vec<DeviceSequences>> {
        let devices = devices.to_vec();
        self.read(move |c| {
            let mut seqs = c.prepare_cached(DEVICE_SEQUENCES_SQL)?;
            let mut out = Vec::with_capacity(devices.len());
            for device_id in devices {
                let all =
                    seqs.query_map([device_id.0], |r| r.get::<_, u64>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
                out.push(DeviceSequences { device_id, rows: all.len() as u64, ranges: to_ranges(all) });
            }
            Ok(out)
        })
        .await
    }

    async fn resource_history(
        &self,
        device: DeviceId,
        from: UnixMillis,
        to: UnixMillis,
        limit: u32,
    ) -> Result<Vec<ResourcePoint>> {
        let limit = limit.min(MAX_RESOURCE_HISTORY);
        let Ok(device) = i64::try_from(device.0) else { return Ok(Vec::new()) };
        if limit == 0 || from >= to {
            return Ok(Vec::new());
        }
        self.read(move |c| {
            let mut st = c.prepare_cached(RESOURCE_HISTORY_SQL)?;
            let rows = st.query_map(params![device, from.0, to.0, limit], |r| {
                Ok(ResourcePoint {
                    at: UnixMillis(r.get(0)?),
                    sample: fleetpulse_proto::domain::ResourceSample {
                        cpu_centi_pct: r.get(1)?,
                        mem_used_bytes: r.get(2)?,
                        mem_total_bytes: r.get(3)?,
                    },
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn event_counts(&self) -> Result<EventCounts> {
        self.read(|c| {
            let count = |table: &str| -> rusqlite::Result<u64> {
                c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            };
            Ok(EventCounts {
                status: count("status_events")?,
                resources: count("resource_reports")?,
                alarms: count("alarm_events")?,
                alarm_records: count("alarm_records")?,
            })
        })
        .await
    }

    fn metrics(&self) -> Vec<StoreMetric> {
        let st = &self.stats;
        let counter = |name, help, v: &std::sync::atomic::AtomicU64| StoreMetric {
            name,
            help,
            value: v.load(Ordering::Relaxed),
            counter: true,
        };
        vec![
            StoreMetric {
                name: "fleetpulse_store_writer_queue_depth",
                help: "Write jobs waiting for the embedded store's writer",
                value: self.queue_depth() as u64,
                counter: false,
            },
            counter("fleetpulse_store_commits", "Group commits of the embedded store", &st.commits),
            counter("fleetpulse_store_rows", "Rows committed by the embedded store", &st.rows),
            counter(
                "fleetpulse_store_commit_failures",
                "Failed commit attempts (disk full, I/O error)",
                &st.commit_failures,
            ),
            counter(
                "fleetpulse_store_write_unavailable",
                "Write jobs answered storage_unavailable because the store could not commit",
                &st.unavailable_jobs,
            ),
            counter("fleetpulse_store_mark_failures", "Durable mark writes that failed", &st.mark_failures),
            StoreMetric {
                name: "fleetpulse_store_writable",
                help: "1 while the embedded store can commit, 0 while its writes fail",
                value: u64::from(!st.unwritable.load(Ordering::Relaxed)),
                counter: false,
            },
            counter("fleetpulse_store_job_failures", "Write jobs rolled back alone", &st.job_failures),
        ]
    }

    fn writable(&self) -> bool {
        !self.stats.unwritable.load(Ordering::Relaxed)
    }

    async fn apply_retention(&self, cutoff: UnixMillis) -> Result<u64> {
        self.write(1, move |c| {
            let mut removed = 0u64;
            // The tables' delete triggers take the rows' entries out of `device_events`.
            for table in ["status_events", "resource_reports", "alarm_events"] {
                removed += c.execute(&format!("DELETE FROM {table} WHERE at < ?1"), [cutoff.0])? as u64;
            }
            Ok(removed)
        })
        .await
    }
}
