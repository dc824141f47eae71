//! ClickHouse backend of the event streams (STO-2): [`ClickHouseEvents`] implements
//! [`EventStore`] over ClickHouse's HTTP interface, with the same observable behaviour as the
//! embedded store.
//!
//! # Schema
//! MergeTree family tables, partitioned by day and ordered for the API's queries (per
//! enterprise, per device, by sequence and time), created by versioned migrations that
//! [`connect`] applies and records in `schema_version` ([`SCHEMA_VERSION`]). The DDL runs on
//! ClickHouse 18.16, the version CI installs: times are `at_ms Int64` plus a derived
//! `at DateTime('UTC')` for partitioning (no DateTime64), and retention drops whole day
//! partitions (no TTL): [`ClickHouseEvents::drop_partitions_older_than`].
//!
//! # Duplicate-safe retries: an idempotent design
//! ClickHouse 18.16 has no insert deduplication for non-replicated tables, and a batch spans
//! several tables with no transaction: an [`EventStore::append`] that fails may have inserted
//! some of its tables, and is then retried whole (by ingest, or by the spool after an outage).
//! So every row is written such that writing it again changes nothing a reader sees:
//!
//! - Event tables are `ReplacingMergeTree` keyed by what identifies an event (enterprise,
//!   device, seq, time; plus type and clear for alarms, as the server's derived alarms all carry
//!   seq 0). A re-inserted row has the same key, and every query that must not count twice reads
//!   `FINAL`, which collapses equal keys before merges have done it on disk.
//! - `delivery_marks` is `ReplacingMergeTree(last_seq)` read with `max(last_seq)`: re-inserting
//!   a mark, or an older one, never lowers it. Marks are inserted last, after the events.
//! - `alarm_records` holds the full state of each record, `ReplacingMergeTree(version)` with
//!   `version = count * 2 + cleared`, which grows with every change. `append` computes the next
//!   state from the current one (an in-memory cache, bounded, filled from ClickHouse `FINAL` on a
//!   miss) and stores with it a fingerprint of the batch's changes to the record: a batch whose
//!   fingerprint the record already carries was applied before, and changes nothing. The cache
//!   takes the new states only once the whole batch is stored; after a failure the touched
//!   records are forgotten and reloaded on the retry, so a retry finds either the state before
//!   the batch (and computes the same rows again) or the state after it (and skips).
//!
//! A failed batch must be retried before later batches of the same devices are appended, and one
//! process writes a database at a time (the record cache is not shared).
//!
//! Record ids are `device_id << 16 | code` (device ids up to 2^48), stable, so the API pages
//! through records by id as with the embedded store.

mod records;
mod rows;
mod schema;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::Duration;

use ::clickhouse::Client;
use ::clickhouse::sql::Identifier;
use async_trait::async_trait;
use fleetpulse_proto::{DeviceId, UnixMillis};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::*;
use records::{RecordCache, RecordChanges, RecordState};
use rows::{AlarmEventRow, AlarmRecordRow, DeliveryRow, ResourceRow, StatusRow};

pub use schema::CURRENT_VERSION as SCHEMA_VERSION;

/// Records whose current state is kept in memory between batches.
const RECORD_CACHE_CAPACITY: usize = 100_000;
/// Longest wait for one request (query or insert) before the operation fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Most ids in one `IN (...)` list (ClickHouse limits the query text to 256 KiB by default).
const MAX_IDS_PER_QUERY: usize = 2_000;

/// Where and as whom to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct ClickHouseConfig {
    /// Base URL of the HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// Database holding the tables; created if missing. ASCII letters, digits and `_`.
    pub database: String,
    /// User (ClickHouse's `default` if `None`).
    pub user: Option<String>,
    /// Password.
    pub password: Option<String>,
}

impl std::fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The ClickHouse event store; implements [`EventStore`].
pub struct ClickHouseEvents {
    client: Client,
    database: String,
    /// Current alarm record states; the lock also orders appends that change records.
    records: Mutex<RecordCache>,
}

impl std::fmt::Debug for ClickHouseEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseEvents").field("database", &self.database).finish_non_exhaustive()
    }
}

/// Connects, creates the database if missing and applies the schema migrations.
pub async fn connect(config: ClickHouseConfig) -> Result<ClickHouseEvents> {
    ClickHouseEvents::connect(config).await
}

fn backend(e: ::clickhouse::error::Error) -> StoreError {
    StoreError::Backend(format!("clickhouse: {e}"))
}

/// Runs a request with [`REQUEST_TIMEOUT`].
async fn timed<T>(what: &str, f: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(REQUEST_TIMEOUT, f)
        .await
        .map_err(|_| StoreError::Backend(format!("clickhouse: {what} did not finish within {REQUEST_TIMEOUT:?}")))?
}

/// `1,2,3` for an `IN (...)` list (integers only: nothing to escape).
fn id_list(ids: impl IntoIterator<Item = u64>) -> String {
    ids.into_iter().map(|id| id.to_string()).collect::<Vec<_>>().join(",")
}

/// The `AND ...` terms of an alarm filter, with a `?` for each value [`bind_alarm_filter`]
/// binds; `None` if the filter matches no record.
fn alarm_filter_terms(filter: &AlarmFilter) -> Result<Option<String>> {
    let Some(mut sql) = filter.enterprises_term()? else { return Ok(None) };
    if filter.enterprise.is_some() {
        sql.push_str(" AND enterprise_id = ?");
    }
    if filter.device.is_some() {
        sql.push_str(" AND device_id = ?");
    }
    if filter.code.is_some() {
        sql.push_str(" AND code = ?");
    }
    if let Some(status) = filter.status {
        // A literal from our own enum, not user text.
        sql.push_str(match status {
            AlarmStatus::Active => " AND status = 'active'",
            AlarmStatus::Acknowledged => " AND status = 'acknowledged'",
            AlarmStatus::Cleared => " AND status = 'cleared'",
        });
    }
    if filter.latest_from.is_some() {
        sql.push_str(" AND latest_at >= ?");
    }
    if filter.latest_to.is_some() {
        sql.push_str(" AND latest_at < ?");
    }
    match filter.severity_codes() {
        Some(codes) if codes.is_empty() => return Ok(None),
        Some(codes) => sql.push_str(&format!(" AND code IN ({})", id_list(codes.into_iter().map(u64::from)))),
        None => {}
    }
    Ok(Some(sql))
}

/// Binds the values of [`alarm_filter_terms`], in its order (the client formats and escapes
/// them into the query text: 18.16 has no server-side parameters).
fn bind_alarm_filter(mut query: ::clickhouse::query::Query, filter: &AlarmFilter) -> ::clickhouse::query::Query {
    if let Some(e) = filter.enterprise {
        query = query.bind(e.0);
    }
    if let Some(d) = filter.device {
        query = query.bind(d.0);
    }
    if let Some(c) = filter.code {
        query = query.bind(c.0);
    }
    if let Some(t) = filter.latest_from {
        query = query.bind(t.0);
    }
    if let Some(t) = filter.latest_to {
        query = query.bind(t.0);
    }
    query
}

impl ClickHouseEvents {
    /// Connects, creates the database if missing and applies the schema migrations.
    pub async fn connect(config: ClickHouseConfig) -> Result<ClickHouseEvents> {
        let valid =
            !config.database.is_empty() && config.database.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(StoreError::Backend(format!("invalid ClickHouse database name {:?}", config.database)));
        }
        let mut client = Client::default().with_url(&config.url).with_validation(false);
        if let Some(user) = &config.user {
            client = client.with_user(user);
        }
        if let Some(password) = &config.password {
            client = client.with_password(password);
        }
        timed("CREATE DATABASE", async {
            client
                .query("CREATE DATABASE IF NOT EXISTS ?")
                .bind(Identifier(&config.database))
                .execute()
                .await
                .map_err(|e| StoreError::Migration { version: 0, reason: e.to_string() })
        })
        .await?;
        let client = client.with_database(&config.database);
        timed("schema migration", schema::migrate(&client)).await?;
        Ok(ClickHouseEvents {
            client,
            database: config.database,
            records: Mutex::new(RecordCache::new(RECORD_CACHE_CAPACITY)),
        })
    }

    /// Several nodes write alarm records (issue 16): no cached record state; each change reads
    /// the current one from ClickHouse (`FINAL`) first.
    pub fn with_shared_records(self) -> ClickHouseEvents {
        ClickHouseEvents { records: Mutex::new(RecordCache::none()), ..self }
    }

    /// The database holding the tables.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Retention (STO-4): drops the partitions (days, UTC) of `table` that end at or before
    /// `cutoff`, i.e. whose every row is older than the cutoff day. Returns how many it dropped.
    /// `table` is one of `status_events`, `resource_reports`, `alarm_events`.
    pub async fn drop_partitions_older_than(&self, table: &str, cutoff: UnixMillis) -> Result<u32> {
        if !schema::PARTITIONED_TABLES.contains(&table) {
            return Err(StoreError::Backend(format!("{table:?} is not a partitioned ClickHouse event table")));
        }
        // The same clamping as the `at` column.
        let cutoff_s = u32::try_from(cutoff.0.div_euclid(1000).clamp(0, 4_291_747_199)).unwrap_or(u32::MAX);
        let partitions: Vec<String> = timed("listing partitions", async {
            self.client
                .query(
                    "SELECT DISTINCT partition_id FROM system.parts \
                     WHERE database = ? AND table = ? AND active \
                     AND partition_id < toString(toYYYYMMDD(toDateTime(?), 'UTC')) ORDER BY partition_id",
                )
                .bind(&self.database)
                .bind(table)
                .bind(cutoff_s)
                .fetch_all()
                .await
                .map_err(backend)
        })
        .await?;
        for partition in &partitions {
            timed("DROP PARTITION", async {
                self.client
                    .query("ALTER TABLE ? DROP PARTITION ID ?")
                    .bind(Identifier(table))
                    .bind(partition)
                    .execute()
                    .await
                    .map_err(backend)
            })
            .await?;
            tracing::info!(message = "Dropped ClickHouse partition.", table, partition = %partition);
        }
        Ok(u32::try_from(partitions.len()).unwrap_or(u32::MAX))
    }

    /// One `INSERT` of `rows` into `table` (nothing if there are none).
    async fn insert_rows<R>(&self, table: &str, rows: Vec<R>) -> Result<()>
    where
        R: ::clickhouse::RowOwned + ::clickhouse::RowWrite + Serialize,
    {
        if rows.is_empty() {
            return Ok(());
        }
        timed(table, async {
            let mut insert = self
                .client
                .insert::<R>(table)
                .await
                .map_err(backend)?
                .with_timeouts(Some(REQUEST_TIMEOUT), Some(REQUEST_TIMEOUT));
            for row in &rows {
                insert.write(row).await.map_err(backend)?;
            }
            insert.end().await.map_err(backend)
        })
        .await
    }

    /// Current states of the records not in the cache, from ClickHouse, into the cache.
    async fn load_missing(&self, cache: &mut RecordCache, groups: &[RecordChanges<'_>]) -> Result<()> {
        let missing: Vec<&RecordChanges<'_>> = groups.iter().filter(|g| cache.get(g.id).is_none()).collect();
        for chunk in missing.chunks(MAX_IDS_PER_QUERY) {
            let devices = id_list(chunk.iter().map(|g| g.device_id.0));
            let ids = id_list(chunk.iter().map(|g| g.id));
            // Key columns first so the primary key prunes; `id` pins (device, code).
            let sql =
                format!("SELECT ?fields FROM alarm_records FINAL WHERE device_id IN ({devices}) AND id IN ({ids})");
            let rows: Vec<AlarmRecordRow> =
                timed("loading alarm records", async { self.client.query(&sql).fetch_all().await.map_err(backend) })
                    .await?;
            for row in rows {
                cache.insert(row.into_state());
            }
        }
        Ok(())
    }

    /// The new states the batch's record changes produce (only those to write).
    async fn next_states(&self, cache: &mut RecordCache, groups: &[RecordChanges<'_>]) -> Result<Vec<RecordState>> {
        self.load_missing(cache, groups).await?;
        Ok(groups.iter().filter_map(|g| records::apply(cache.get(g.id), g)).collect())
    }

    /// Inserts the batch's rows: events (one insert per table, concurrently), the record
    /// states, and last the delivery marks.
    async fn write_batch(&self, batch: &EventBatch, states: &[RecordState]) -> Result<()> {
        let status = batch.status.iter().map(StatusRow::from_event).collect::<Result<Vec<_>>>()?;
        let resources = batch.resources.iter().map(ResourceRow::from_event).collect();
        let alarms = batch.alarms.iter().map(AlarmEventRow::from_event).collect();
        let records = states.iter().map(AlarmRecordRow::from_state).collect();
        tokio::try_join!(
            self.insert_rows("status_events", status),
            self.insert_rows("resource_reports", resources),
            self.insert_rows("alarm_events", alarms),
            self.insert_rows("alarm_records", records),
        )?;
        let marks = batch.delivery.iter().map(|(d, seq)| DeliveryRow { device_id: d.0, last_seq: *seq }).collect();
        self.insert_rows("delivery_marks", marks).await
    }
}

#[async_trait]
impl EventStore for ClickHouseEvents {
    async fn append(&self, batch: EventBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let groups = records::group(&batch)?;
        if groups.is_empty() {
            return self.write_batch(&batch, &[]).await;
        }
        let mut cache = self.records.lock().await;
        let states = self.next_states(&mut cache, &groups).await?;
        let outcome = self.write_batch(&batch, &states).await;
        match &outcome {
            Ok(()) => states.into_iter().for_each(|s| cache.insert(s)),
            // The records may or may not have been stored: reload them on the retry.
            Err(_) => groups.iter().for_each(|g| cache.remove(g.id)),
        }
        outcome
    }

    async fn last_seq(&self, device: DeviceId) -> Result<u64> {
        timed("last_seq", async {
            self.client
                .query("SELECT max(last_seq) FROM delivery_marks WHERE device_id = ?")
                .bind(device.0)
                .fetch_one::<u64>()
                .await
                .map_err(backend)
        })
        .await
    }

    async fn list_alarm_records(&self, filter: AlarmFilter, page: Page) -> Result<Vec<AlarmRecord>> {
        let Some(terms) = alarm_filter_terms(&filter)? else { return Ok(Vec::new()) };
        let sql = format!("SELECT ?fields FROM alarm_records FINAL WHERE id > ?{terms} ORDER BY id LIMIT ?");
        let query = bind_alarm_filter(self.client.query(&sql).bind(page.after), &filter).bind(page.limit);
        let rows: Vec<AlarmRecordRow> =
            timed("list_alarm_records", async { query.fetch_all().await.map_err(backend) }).await?;
        Ok(rows.into_iter().map(AlarmRecordRow::into_record).collect())
    }

    async fn latest_alarm_records(&self, filter: AlarmFilter, limit: u32) -> Result<Vec<AlarmRecord>> {
        let limit = limit.min(MAX_LATEST_ALARM_RECORDS);
        let Some(terms) = alarm_filter_terms(&filter)? else { return Ok(Vec::new()) };
        if limit == 0 {
            return Ok(Vec::new());
        }
        // `FINAL` first: the order and the filter see each record's newest state only.
        let sql =
            format!("SELECT ?fields FROM alarm_records FINAL WHERE 1{terms} ORDER BY latest_at DESC, id DESC LIMIT ?");
        let query = bind_alarm_filter(self.client.query(&sql), &filter).bind(limit);
        let rows: Vec<AlarmRecordRow> =
            timed("latest_alarm_records", async { query.fetch_all().await.map_err(backend) }).await?;
        Ok(rows.into_iter().map(AlarmRecordRow::into_record).collect())
    }

    async fn alarm_log(
        &self,
        device: DeviceId,
        code: fleetpulse_proto::AlarmTypeCode,
    ) -> Result<Option<(UnixMillis, Vec<u8>)>> {
        let rows: Vec<AlarmEventRow> = timed("alarm_log", async {
            self.client
                .query(
                    "SELECT ?fields FROM alarm_events FINAL WHERE device_id = ? AND code = ? AND log IS NOT NULL \
                     ORDER BY at_ms DESC LIMIT 1",
                )
                .bind(device.0)
                .bind(code.0)
                .fetch_all()
                .await
                .map_err(backend)
        })
        .await?;
        Ok(rows.into_iter().next().and_then(|r| r.log.map(|log| (UnixMillis(r.at_ms), log))))
    }

    async fn alarm_record(&self, id: u64) -> Result<Option<AlarmRecord>> {
        let rows: Vec<AlarmRecordRow> = timed("alarm_record", async {
            self.client
                .query("SELECT ?fields FROM alarm_records FINAL WHERE id = ? LIMIT 1")
                .bind(id)
                .fetch_all()
                .await
                .map_err(backend)
        })
        .await?;
        Ok(rows.into_iter().next().map(AlarmRecordRow::into_record))
    }

    async fn device_sequences(&self, devices: &[DeviceId]) -> Result<Vec<DeviceSequences>> {
        let mut found: std::collections::HashMap<u64, (u64, Vec<u64>)> = std::collections::HashMap::new();
        let mut distinct: Vec<u64> = devices.iter().map(|d| d.0).collect();
        distinct.sort_unstable();
        distinct.dedup();
        for chunk in distinct.chunks(MAX_IDS_PER_QUERY) {
            let ids = id_list(chunk.iter().copied());
            // FINAL: a re-inserted row is one row. Grouped by seq to send each number once.
            let sql = format!(
                "SELECT device_id, seq, count() FROM ( \
                 SELECT device_id, seq FROM status_events FINAL WHERE device_id IN ({ids}) \
                 UNION ALL SELECT device_id, seq FROM resource_reports FINAL WHERE device_id IN ({ids}) \
                 UNION ALL SELECT device_id, seq FROM alarm_events FINAL WHERE device_id IN ({ids}) AND seq > 0 \
                 ) GROUP BY device_id, seq ORDER BY device_id, seq"
            );
            let rows: Vec<(u64, u64, u64)> =
                timed("device_sequences", async { self.client.query(&sql).fetch_all().await.map_err(backend) }).await?;
            for (device, seq, count) in rows {
                let entry = found.entry(device).or_default();
                entry.0 += count;
                entry.1.push(seq);
            }
        }
        Ok(devices
            .iter()
            .map(|&device_id| match found.get(&device_id.0) {
                Some((rows, seqs)) => {
                    DeviceSequences { device_id, rows: *rows, ranges: to_ranges(seqs.iter().copied()) }
                }
                None => DeviceSequences { device_id, rows: 0, ranges: Vec::new() },
            })
            .collect())
    }

    async fn resource_history(
        &self,
        device: DeviceId,
        from: UnixMillis,
        to: UnixMillis,
        limit: u32,
    ) -> Result<Vec<ResourcePoint>> {
        let limit = limit.min(MAX_RESOURCE_HISTORY);
        if limit == 0 || from >= to {
            return Ok(Vec::new());
        }
        // The `at` bounds let ClickHouse skip the days' partitions outside the range.
        let rows: Vec<ResourceRow> = timed("resource_history", async {
            self.client
                .query(
                    "SELECT ?fields FROM resource_reports FINAL WHERE device_id = ? AND at_ms >= ? AND at_ms < ? \
                     AND at >= toDateTime(?) AND at <= toDateTime(?) ORDER BY seq DESC, at_ms DESC LIMIT ?",
                )
                .bind(device.0)
                .bind(from.0)
                .bind(to.0)
                .bind(from.0.div_euclid(1000).clamp(0, 4_291_747_199))
                .bind(to.0.div_euclid(1000).clamp(0, 4_291_747_199))
                .bind(limit)
                .fetch_all()
                .await
                .map_err(backend)
        })
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| ResourcePoint {
                at: UnixMillis(r.at_ms),
                sample: fleetpulse_proto::domain::ResourceSample {
                    cpu_centi_pct: r.cpu_centi_pct,
                    mem_used_bytes: r.mem_used,
                    mem_total_bytes: r.mem_total,
                },
            })
            .collect())
    }

    async fn event_counts(&self) -> Result<EventCounts> {
        let (status, resources, alarms, alarm_records) = timed("event_counts", async {
            self.client
                .query(
                    "SELECT (SELECT count() FROM status_events FINAL), (SELECT count() FROM resource_reports FINAL), \
                     (SELECT count() FROM alarm_events FINAL), (SELECT count() FROM alarm_records FINAL)",
                )
                .fetch_one::<(u64, u64, u64, u64)>()
                .await
                .map_err(backend)
        })
        .await?;
        Ok(EventCounts { status, resources, alarms, alarm_records })
    }

    async fn apply_retention(&self, cutoff: UnixMillis) -> Result<u64> {
        let mut dropped = 0u64;
        for table in schema::PARTITIONED_TABLES {
            dropped += u64::from(self.drop_partitions_older_than(table, cutoff).await?);
        }
        Ok(dropped)
    }
}
