//! The embedded backend: one SQLite database (`fleetpulse.db`, WAL mode) under the data
//! directory, needing no other server (STO-1).
//!
//! Writes go through the single [`writer`] thread with group commit; reads use a small pool of
//! read-only connections on blocking threads. Entity and event tables live in one file so that
//! a batch of events and its delivery marks commit atomically.

mod account_security;
mod schema;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use fleetpulse_proto::catalog::DeviceType;
use fleetpulse_proto::domain::{AlarmChange, DeviceKey};
use fleetpulse_proto::ids::ChannelId;
use fleetpulse_proto::{AccountId, AlarmTypeCode, DeviceId, EnterpriseId, Mac, Severity, UnixMillis};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use tokio::sync::{Semaphore, mpsc};

pub use schema::CURRENT_VERSION as SCHEMA_VERSION;
pub use writer::WriterStats;

use crate::*;
use writer::{FnJob, WriteJob};

/// Settings of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// `synchronous=FULL` (fsync every commit: survives power loss) instead of `NORMAL`
    /// (survives a process crash only). Group commit keeps FULL affordable; default true.
    pub fsync: bool,
    /// Read-only connections in the pool.
    pub readers: usize,
    /// Write jobs that may wait for the writer before senders are held back.
    pub queue_depth: usize,
    /// Rows after which the writer stops adding jobs to a group and commits.
    pub max_rows_per_commit: usize,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig { fsync: true, readers: 4, queue_depth: 1024, max_rows_per_commit: 50_000 }
    }
}

/// Item keys per lookup of [`EntityStore::outbox_known_items`] (far below SQLite's limit of
/// 32766 variables per statement).
const ITEM_KEYS_PER_QUERY: usize = 500;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "fleetpulse.db";

/// The embedded store; implements both [`EntityStore`] and [`EventStore`].
#[derive(Debug)]
pub struct EmbeddedStore {
    jobs: mpsc::Sender<Box<dyn WriteJob>>,
    readers: Arc<ReadPool>,
    stats: Arc<WriterStats>,
    closing: Arc<AtomicBool>,
}

impl std::fmt::Debug for dyn WriteJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WriteJob({} rows)", self.rows())
    }
}

/// Records one attempt's outcome on a pending outbox message (id, state, next attempt, error,
/// time); a message that is no longer pending does not change.
const RECORD_OUTBOX_ATTEMPT: &str = "UPDATE outbox SET state = ?2, attempts = attempts + 1, next_attempt_at = ?3, \
     last_error = ?4, sent_at = CASE WHEN ?2 = 'sent' THEN ?5 ELSE sent_at END WHERE id = ?1 AND state = 'pending'";

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        backend(e)
    }
}

fn open_connection(path: &Path, flags: OpenFlags, fsync: bool) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", if fsync { "FULL" } else { "NORMAL" })?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // 64 MiB page cache: index pages of recent devices stay hot between commits.
    conn.pragma_update(None, "cache_size", -65_536)?;
    // Checkpoint less often (the WAL grows to ~40 MiB between checkpoints).
    conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl EmbeddedStore {
    /// Opens (creating if needed) the database under `data_dir`, migrates it and starts the
    /// writer thread.
    pub fn open(data_dir: &Path, config: EmbeddedConfig) -> Result<EmbeddedStore> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join(DB_FILE);
        let mut conn = open_connection(&path, OpenFlags::default(), config.fsync)?;
        schema::migrate(&mut conn)?;
        refresh_device_types(&conn)?;
        let readers = (0..config.readers.max(1))
            .map(|_| open_connection(&path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX, false))
            .collect::<Result<Vec<_>>>()?;
        let (tx, rx) = mpsc::channel(config.queue_depth.max(1));
        let stats = Arc::new(WriterStats::default());
        let closing = Arc::new(AtomicBool::new(false));
        let writer = writer::Writer {
            conn,
            jobs: rx,
            max_rows_per_commit: config.max_rows_per_commit.max(1),
            stats: stats.clone(),
            closing: closing.clone(),
        };
        std::thread::Builder::new().name("store-writer".into()).spawn(move || writer.run())?;
        Ok(EmbeddedStore {
            jobs: tx,
            readers: Arc::new(ReadPool { permits: Semaphore::new(readers.len()), conns: Mutex::new(readers) }),
            stats,
            closing,
        })
    }

    /// Counters of the writer thread.
    pub fn writer_stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Jobs waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }

    /// Makes the writer give up retrying failed commits (used on shutdown).
    pub fn begin_close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    async fn write<T, F>(&self, rows: usize, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T> + Send + 'static,
    {
        let (job, done) = FnJob::boxed(rows, f);
        self.submit(job).await?;
        done.await.map_err(|_| StoreError::Closed)?
    }

    async fn submit(&self, job: Box<dyn WriteJob>) -> Result<()> {
        self.jobs.send(job).await.map_err(|_| StoreError::Closed)
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.readers.clone().run(f).await
    }
}

/// Read-only connections, each used by one blocking task at a time.
#[derive(Debug)]
struct ReadPool {
    permits: Semaphore,
    conns: Mutex<Vec<Connection>>,
}

impl ReadPool {
    async fn run<T, F>(self: Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let permit = self.permits.acquire().await.map_err(|_| StoreError::Closed)?;
        let conn = self
            .conns
            .lock()
            .map_err(|_| StoreError::Backend("reader pool poisoned".into()))?
            .pop()
            .expect("a permit guarantees a free connection");
        let pool = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            let result = f(&conn);
            if let Ok(mut conns) = pool.conns.lock() {
                conns.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?;
        drop(permit);
        result
    }
}

// ---- row mapping ----

/// The columns `account_from_row` reads, in its order.
const ACCOUNT_COLUMNS: &str = "id, email, password_hash, role, created_at, failed_logins, locked_until, totp_secret, \
     totp_last_step, channel_id, enterprise_id, frozen, must_change_password, parent_id, permissions";

fn account_from_row(r: &Row<'_>) -> rusqlite::Result<Account> {
    let role: String = r.get(3)?;
    // An unknown role is an error, never some default role: that could grant too much.
    let role = Role::parse(&role).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            3,
            rusqlite::types::Type::Text,
            format!("unknown role {role:?}").into(),
        )
    })?;
    Ok(Account {
        id: AccountId(r.get(0)?),
        email: r.get(1)?,
        password_hash: r.get(2)?,
        role,
        channel_id: r.get::<_, Option<u64>>(9)?.map(ChannelId),
        enterprise_id: r.get::<_, Option<u64>>(10)?.map(EnterpriseId),
        created_at: UnixMillis(r.get(4)?),
        failed_logins: r.get(5)?,
        locked_until: r.get::<_, Option<i64>>(6)?.map(UnixMillis),
        totp_secret: r.get(7)?,
        totp_last_step: r.get::<_, Option<i64>>(8)?.map(|s| u64::try_from(s).unwrap_or_default()),
        frozen: r.get(11)?,
        must_change_password: r.get(12)?,
        parent_id: r.get::<_, Option<u64>>(13)?.map(AccountId),
        permissions: r.get::<_, Option<String>>(14)?.map(|p| json_column(14, &p, Permissions::decode)).transpose()?,
    })
}

/// A JSON column decoded, or a conversion error naming the column (never a default: a profile
/// or permissions read wrong could show or grant the wrong thing).
fn json_column<T>(
    index: usize,
    text: &str,
    decode: impl FnOnce(&str) -> std::result::Result<T, serde_json::Error>,
) -> rusqlite::Result<T> {
    decode(text).map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, e.into()))
}

/// Ids as one JSON array for `json_each` (one statement whatever their number); ids no row can
/// have (above `i64::MAX`) are left out.
fn json_ids(ids: impl Iterator<Item = u64>) -> Result<String> {
    let ids: Vec<i64> = ids.filter_map(|id| i64::try_from(id).ok()).collect();
    serde_json::to_string(&ids).map_err(|e| StoreError::Backend(format!("encoding ids: {e}")))
}

/// Adds the term of a "channel in … OR enterprise in …" filter and its two values when either list
/// is given (`column` holds the enterprise: `enterprise_id` of accounts, `id` of enterprises);
/// each list at most `max` ids.
fn push_tenant_term(
    terms: &mut Vec<String>,
    values: &mut Vec<SqlValue>,
    column: &str,
    (channels, enterprises): (Option<&[ChannelId]>, Option<&[EnterpriseId]>),
    max: usize,
) -> Result<()> {
    if channels.is_none() && enterprises.is_none() {
        return Ok(());
    }
    let (channels, enterprises) = (channels.unwrap_or_default(), enterprises.unwrap_or_default());
    check_bound("channel ids", channels.len(), max)?;
    check_bound("enterprise ids", enterprises.len(), max)?;
    terms.push(format!(
        "(channel_id IN (SELECT value FROM json_each(?)) OR {column} IN (SELECT value FROM json_each(?)))"
    ));
    values.push(Box::new(json_ids(channels.iter().map(|c| c.0))?));
    values.push(Box::new(json_ids(enterprises.iter().map(|e| e.0))?));
    Ok(())
}

/// The query of [`EntityStore::list_accounts`] and its values.
fn account_filter_sql(filter: &AccountFilter, page: Page) -> Result<(String, Vec<SqlValue>)> {
    let mut terms: Vec<String> = Vec::new();
    let mut values: Vec<SqlValue> = Vec::new();
    let tenants = (filter.channels.as_deref(), filter.enterprises.as_deref());
    push_tenant_term(&mut terms, &mut values, "enterprise_id", tenants, MAX_ACCOUNT_FILTER)?;
    if let Some(parent) = filter.parent {
        terms.push("parent_id = ?".into());
        values.push(Box::new(db_after(parent.0)));
    }
    if let Some(q) = search_needle(filter.q.as_deref())? {
        terms.push(
            "(instr(lower(email), ?) > 0 \
             OR id IN (SELECT account_id FROM account_settings WHERE instr(contact_search, ?) > 0))"
                .into(),
        );
        values.push(Box::new(q.clone()));
        values.push(Box::new(q));
    }
    terms.push("id > ?".into());
    values.push(Box::new(db_after(page.after)));
    values.push(Box::new(page.limit));
    Ok((format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE {} ORDER BY id LIMIT ?", terms.join(" AND ")), values))
}

/// The columns `operation_log_from_row` reads, in its order.
const OPERATION_LOG_COLUMNS: &str =
    "id, account_id, account_email, acting_as, operation, method, path, ip, at, status, outcome";

fn operation_log_from_row(r: &Row<'_>) -> rusqlite::Result<OperationLog> {
    let outcome: String = r.get(10)?;
    let entry = NewOperationLog {
        account_id: r.get::<_, Option<u64>>(1)?.map(AccountId),
        account_email: r.get(2)?,
        acting_as: r.get::<_, Option<u64>>(3)?.map(EnterpriseId),
        operation: r.get(4)?,
        method: r.get(5)?,
        path: r.get(6)?,
        ip: r.get(7)?,
        at: UnixMillis(r.get(8)?),
        status: r.get(9)?,
        outcome: OperationOutcome::parse(&outcome).unwrap_or(OperationOutcome::Failure),
    };
    Ok(OperationLog { id: r.get(0)?, entry })
}

/// The query of [`EntityStore::list_operation_logs`] and its values, or `None` if it returns
/// nothing (a zero limit, a filter no row can match). Only the filters given become terms, so that the planner can pick the
/// index that fits; every index of the table ends in the rowid (`id`), so a page of one account,
/// enterprise or operation type is read in order without sorting the matching rows.
fn operation_log_sql(filter: &OperationLogFilter, page: Page) -> Option<(String, Vec<SqlValue>)> {
    let limit = page.limit.min(MAX_OPERATION_LOG_PAGE);
    if limit == 0 || filter.matches_nothing() {
        return None;
    }
    let mut terms: Vec<&str> = Vec::new();
    let mut values: Vec<SqlValue> = Vec::new();
    if let Some(a) = filter.account_id {
        terms.push("account_id = ?");
        values.push(Box::new(i64::try_from(a.0).ok()?));
    }
    if let Some(e) = filter.enterprise {
        terms.push("acting_as = ?");
        values.push(Box::new(i64::try_from(e.0).ok()?));
    }
    if let Some(op) = &filter.operation {
        terms.push("operation = ?");
        values.push(Box::new(op.clone()));
    }
    if let Some(t) = filter.from {
        terms.push("at >= ?");
        values.push(Box::new(t.0));
    }
    if let Some(t) = filter.to {
        terms.push("at < ?");
        values.push(Box::new(t.0));
    }
    if let Some(within) = &filter.within {
        terms.push("(account_id IN (SELECT value FROM json_each(?)) OR acting_as IN (SELECT value FROM json_each(?)))");
        values.push(Box::new(json_ids(within.accounts.iter().map(|a| a.0)).ok()?));
        values.push(Box::new(json_ids(within.enterprises.iter().map(|e| e.0)).ok()?));
    }
    if page.after > 0 {
        // Every id is below one beyond `i64::MAX`.
        terms.push("id < ?");
        values.push(Box::new(i64::try_from(page.after).unwrap_or(i64::MAX)));
    }
    values.push(Box::new(limit));
    let clause = if terms.is_empty() { String::new() } else { format!(" WHERE {}", terms.join(" AND ")) };
    Some((format!("SELECT {OPERATION_LOG_COLUMNS} FROM operation_log{clause} ORDER BY id DESC LIMIT ?"), values))
}

/// The columns `enterprise_from_row` reads, in its order.
const ENTERPRISE_COLUMNS: &str = "id, name, credential, created_at, channel_id, profile, channel_authorization";

fn enterprise_from_row(r: &Row<'_>) -> rusqlite::Result<Enterprise> {
    Ok(Enterprise {
        id: EnterpriseId(r.get(0)?),
        name: r.get(1)?,
        credential: r.get(2)?,
        created_at: UnixMillis(r.get(3)?),
        channel_id: r.get::<_, Option<u64>>(4)?.map(ChannelId),
        profile: json_column(5, &r.get::<_, String>(5)?, |t| serde_json::from_str(t))?,
        channel_authorization: {
            let a: String = r.get(6)?;
            ChannelAuthorization::parse(&a).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    6,
                    rusqlite::types::Type::Text,
                    format!("unknown channel authorization {a:?}").into(),
                )
            })?
        },
    })
}

/// The columns `channel_from_row` reads, in its order.
const CHANNEL_COLUMNS: &str =
    "id, name, parent_id, allow_sub_channels, device_management, rps, contact, email, created_at, phone, country";

fn channel_from_row(r: &Row<'_>) -> rusqlite::Result<Channel> {
    Ok(Channel {
        id: ChannelId(r.get(0)?),
        name: r.get(1)?,
        parent_id: r.get::<_, Option<u64>>(2)?.map(ChannelId),
        allow_sub_channels: r.get(3)?,
        device_management: r.get(4)?,
        rps: r.get(5)?,
        contact: r.get(6)?,
        email: r.get(7)?,
        created_at: UnixMillis(r.get(8)?),
        phone: r.get(9)?,
        country: r.get(10)?,
    })
}

/// A page cursor as the database compares it: every id is at most `i64::MAX`.
fn db_after(after: u64) -> i64 {
    i64::try_from(after).unwrap_or(i64::MAX)
}

/// Whether a row with this id exists in `table` (a fixed table name, never input).
fn row_exists(c: &Connection, table: &str, id: u64) -> Result<bool> {
    let Ok(id) = i64::try_from(id) else { return Ok(false) };
    Ok(c.prepare_cached(&format!("SELECT 1 FROM {table} WHERE id = ?1"))?
        .query_row([id], |_| Ok(()))
        .optional()?
        .is_some())
}

const DEVICE_COLUMNS: &str = "id, enterprise_id, mac, serial, model, firmware, name, created_at";

fn device_from_row(r: &Row<'_>) -> rusqlite::Result<Device> {
    let mac: Option<String> = r.get(2)?;
    Ok(Device {
        id: DeviceId(r.get(0)?),
        enterprise_id: EnterpriseId(r.get(1)?),
        mac: mac.and_then(|m| Mac::parse(&m).ok()),
        serial: r.get(3)?,
        model: r.get(4)?,
        firmware: r.get(5)?,
        name: r.get(6)?,
        created_at: UnixMillis(r.get(7)?),
    })
}

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
        status: match status.as_str() {
            "active" => AlarmStatus::Active,
            "acknowledged" => AlarmStatus::Acknowledged,
            _ => AlarmStatus::Cleared,
        },
        cleared_at: r.get::<_, Option<i64>>(8)?.map(UnixMillis),
        cleared_by: r.get::<_, Option<u64>>(10)?.map(AccountId),
        acknowledged_at: r.get::<_, Option<i64>>(11)?.map(UnixMillis),
        acknowledged_by: r.get::<_, Option<u64>>(12)?.map(AccountId),
    })
}

/// The columns `alarm_record_from_row` reads, in its order.
const ALARM_RECORD_COLUMNS: &str = "id, device_id, enterprise_id, code, first_at, latest_at, count, description, \
     cleared_at, status, cleared_by, acknowledged_at, acknowledged_by";

/// A value bound to a statement built at run time.
type SqlValue = Box<dyn rusqlite::ToSql + Send>;

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
fn latest_alarm_records_sql(filter: &AlarmFilter, limit: u32) -> Result<Option<(String, Vec<SqlValue>)>> {
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

fn strategy_from_row(r: &Row<'_>) -> rusqlite::Result<StoredStrategy> {
    let settings: String = r.get(2)?;
    Ok(StoredStrategy {
        id: fleetpulse_proto::StrategyId(r.get(0)?),
        enterprise_id: EnterpriseId(r.get(1)?),
        settings: serde_json::from_str(&settings)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e)))?,
        created_at: UnixMillis(r.get(3)?),
        updated_at: UnixMillis(r.get(4)?),
    })
}

/// Receiver slots of the [`EntityStore::due_outbox_except`] statement for `count` receivers:
/// none for none, else the next power of two (at least 8, at most [`MAX_OUTBOX_EXCEPT`]), so
/// that a handful of cached statements serve every list.
fn except_slots(count: usize) -> usize {
    if count == 0 { 0 } else { count.next_power_of_two().clamp(8, MAX_OUTBOX_EXCEPT) }
}

/// The query of [`EntityStore::due_outbox_except`] with `slots` receivers left out: `?1` is the
/// time, `?2` the limit, `?3`… the receivers. Walks `outbox_due` (state, next_attempt_at, and
/// the rowid `id` last) in order, so neither the order nor the limit sorts the due messages.
fn due_outbox_sql(slots: usize) -> String {
    let except = if slots == 0 {
        String::new()
    } else {
        let placeholders = (3..3 + slots).map(|i| format!("?{i}")).collect::<Vec<_>>().join(",");
        format!(" AND receiver NOT IN ({placeholders})")
    };
    format!(
        "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?1{except} \
         ORDER BY next_attempt_at, id LIMIT ?2"
    )
}

const OUTBOX_COLUMNS: &str =
    "id, key, enterprise_id, receiver, payload, state, attempts, next_attempt_at, last_error, created_at, sent_at";

fn outbox_from_row(r: &Row<'_>) -> rusqlite::Result<OutboxMessage> {
    let state: String = r.get(5)?;
    Ok(OutboxMessage {
        id: r.get(0)?,
        key: r.get(1)?,
        enterprise_id: EnterpriseId(r.get(2)?),
        receiver: r.get(3)?,
        payload: r.get(4)?,
        state: OutboxState::parse(&state).unwrap_or(OutboxState::Failed),
        attempts: r.get(6)?,
        next_attempt_at: UnixMillis(r.get(7)?),
        last_error: r.get(8)?,
        created_at: UnixMillis(r.get(9)?),
        sent_at: r.get::<_, Option<i64>>(10)?.map(UnixMillis),
    })
}

fn settings_json(settings: &StrategySettings) -> Result<String> {
    serde_json::to_string(settings).map_err(|e| StoreError::Backend(format!("encoding strategy settings: {e}")))
}

const STRATEGY_COLUMNS: &str = "id, enterprise_id, settings, created_at, updated_at";

fn find_device(c: &Connection, key: &DeviceKey) -> rusqlite::Result<Option<Device>> {
    match key {
        DeviceKey::Mac(mac) => c
            .prepare_cached(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE mac = ?1"))?
            .query_row([mac.as_str()], device_from_row)
            .optional(),
        DeviceKey::Serial(sn) => c
            .prepare_cached(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE serial = ?1 AND mac IS NULL"))?
            .query_row([sn], device_from_row)
            .optional(),
    }
}

fn register_device(c: &Connection, new: &NewDevice) -> Result<RegisteredDevice> {
    if let Some(mut device) = find_device(c, &new.key)? {
        if device.enterprise_id != new.enterprise_id {
            return Err(StoreError::DeviceConflict);
        }
        if device.model != new.model || device.firmware != new.firmware {
            c.prepare_cached("UPDATE devices SET model = ?2, firmware = ?3, device_type = ?4 WHERE id = ?1")?
                .execute(params![device.id.0, new.model, new.firmware, DeviceType::of_model(&new.model).as_str()])?;
            device.model.clone_from(&new.model);
            device.firmware.clone_from(&new.firmware);
        }
        return Ok(RegisteredDevice { device, created: false });
    }
    let mac = match &new.key {
        DeviceKey::Mac(m) => Some(*m),
        DeviceKey::Serial(_) => None,
    };
    let serial = match &new.key {
        DeviceKey::Serial(s) => Some(s.clone()),
        DeviceKey::Mac(_) => new.serial.clone(),
    };
    c.prepare_cached(
        "INSERT INTO devices (enterprise_id, mac, serial, model, firmware, created_at, device_type) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        new.enterprise_id.0,
        mac.as_ref().map(Mac::as_str),
        serial,
        new.model,
        new.firmware,
        new.at.0,
        DeviceType::of_model(&new.model).as_str()
    ])?;
    Ok(RegisteredDevice {
        device: Device {
            id: DeviceId(c.last_insert_rowid() as u64),
            enterprise_id: new.enterprise_id,
            mac,
            serial,
            model: new.model.clone(),
            firmware: new.firmware.clone(),
            name: String::new(),
            created_at: new.at,
        },
        created: true,
    })
}

/// Sets every device's type from the catalog ([`DeviceType::of_model`]): run on open, so that
/// rows from before the snapshot migration, and rows of models a newer catalog knows, get the
/// type of this build. Reads the distinct (model, type) pairs, updates only those that differ.
fn refresh_device_types(c: &Connection) -> Result<()> {
    let pairs: Vec<(String, String)> = c
        .prepare("SELECT DISTINCT model, device_type FROM devices")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (model, stored) in pairs {
        let want = DeviceType::of_model(&model).as_str();
        if stored != want {
            c.execute(
                "UPDATE devices SET device_type = ?2 WHERE model = ?1 AND device_type = ?3",
                params![model, want, stored],
            )?;
        }
    }
    Ok(())
}

/// Applies snapshot updates (distinct devices) inside the writer's transaction.
fn apply_snapshot_updates(c: &Connection, updates: &[DeviceSnapshotUpdate]) -> Result<()> {
    let mut online = c.prepare_cached("UPDATE devices SET online = ?2 WHERE id = ?1")?;
    let mut report = c.prepare_cached(
        "UPDATE devices SET firmware = CASE WHEN ?2 = '' THEN firmware ELSE ?2 END, public_ip = ?3, private_ip = ?4, \
         sip_status = ?5, call_status = ?6, last_report_at = ?7, uptime_s = ?8, last_reboot = ?9, sip_lines = ?10 \
         WHERE id = ?1 AND last_report_at <= ?7",
    )?;
    for u in updates {
        let Ok(id) = i64::try_from(u.device_id.0) else { continue };
        if let Some(o) = u.online {
            online.execute(params![id, o])?;
        }
        if let Some(r) = &u.report {
            let s = &r.status;
            let lines = serde_json::to_string(&s.lines).map_err(|e| StoreError::Backend(e.to_string()))?;
            report.execute(params![
                id,
                s.firmware,
                s.public_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                s.private_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                crate::device_sql::sip_name(s.sip_summary()),
                crate::device_sql::call_name(s.call_status),
                r.at.0,
                i64::try_from(s.uptime_s).unwrap_or(i64::MAX),
                s.last_reboot.map(|t| t.0),
                lines,
            ])?;
        }
    }
    Ok(())
}

/// Reads a row of [`crate::device_sql::SUMMARY_COLUMNS`].
fn summary_from_row(r: &Row<'_>) -> rusqlite::Result<DeviceSummary> {
    let device = device_from_row(r)?;
    let device_type: String = r.get(10)?;
    let call: Option<String> = r.get(13)?;
    let public_ip: String = r.get(14)?;
    let private_ip: String = r.get(15)?;
    let last_report_at: i64 = r.get(16)?;
    let uptime: Option<i64> = r.get(17)?;
    let lines: String = r.get(19)?;
    let sip: String = r.get(12)?;
    Ok(DeviceSummary {
        device,
        enterprise_name: r.get(8)?,
        channel_id: r.get::<_, Option<u64>>(9)?.map(ChannelId),
        snapshot: DeviceSnapshot {
            device_type: DeviceType::parse(&device_type).unwrap_or(DeviceType::Other),
            online: r.get(11)?,
            sip_status: crate::device_sql::parse_sip(&sip),
            call_status: call.as_deref().and_then(crate::device_sql::parse_call),
            public_ip: (!public_ip.is_empty()).then_some(public_ip),
            private_ip: (!private_ip.is_empty()).then_some(private_ip),
            last_report_at: (last_report_at > 0).then_some(UnixMillis(last_report_at)),
            uptime_s: uptime.and_then(|u| u64::try_from(u).ok()),
            last_reboot: r.get::<_, Option<i64>>(18)?.map(UnixMillis),
            lines: serde_json::from_str(&lines).unwrap_or_default(),
        },
    })
}

/// Binds the arguments of a shared device query to SQLite values.
fn sqlite_args(args: Vec<crate::device_sql::Arg>) -> Vec<SqlValue> {
    use crate::device_sql::Arg;
    args.into_iter()
        .map(|a| -> SqlValue {
            match a {
                Arg::Int(i) => Box::new(i),
                Arg::Text(t) => Box::new(t),
                Arg::Ids(ids) => Box::new(serde_json::Value::from(ids).to_string()),
            }
        })
        .collect()
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn append_batch(c: &Connection, b: &EventBatch) -> Result<()> {
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
            "SELECT first_at, latest_at, count, description, status, cleared_at, cleared_by, acknowledged_at, \
             acknowledged_by FROM alarm_records WHERE device_id = ?1 AND code = ?2",
        )?
        .query_row(params![ch.device_id.0, ch.code.0], |r| {
            let status: String = r.get(4)?;
            let lifecycle = AlarmLifecycle {
                first_at: UnixMillis(r.get(0)?),
                latest_at: UnixMillis(r.get(1)?),
                count: r.get(2)?,
                description: r.get(3)?,
                status: AlarmStatus::Active,
                cleared_at: r.get::<_, Option<i64>>(5)?.map(UnixMillis),
                cleared_by: r.get::<_, Option<u64>>(6)?.map(AccountId),
                acknowledged_at: r.get::<_, Option<i64>>(7)?.map(UnixMillis),
                acknowledged_by: r.get::<_, Option<u64>>(8)?.map(AccountId),
            };
            Ok((lifecycle, status))
        })
        .optional()?;
    let current = match row {
        None => None,
        Some((lifecycle, status)) => Some(AlarmLifecycle {
            status: AlarmStatus::parse(&status)
                .ok_or_else(|| StoreError::Backend(format!("unknown alarm status {status:?}")))?,
            ..lifecycle
        }),
    };
    let Ok(next) = AlarmLifecycle::apply(current.as_ref(), ch.at, &ch.kind) else { return Ok(()) };
    c.prepare_cached(
        "INSERT INTO alarm_records (device_id, enterprise_id, code, first_at, latest_at, count, description, status, \
         cleared_at, cleared_by, acknowledged_at, acknowledged_by) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
         ON CONFLICT (device_id, code) DO UPDATE SET first_at = excluded.first_at, latest_at = excluded.latest_at, \
         count = excluded.count, description = excluded.description, status = excluded.status, \
         cleared_at = excluded.cleared_at, cleared_by = excluded.cleared_by, \
         acknowledged_at = excluded.acknowledged_at, acknowledged_by = excluded.acknowledged_by",
    )?
    .execute(params![
        ch.device_id.0,
        ch.enterprise_id.0,
        ch.code.0,
        next.first_at.0,
        next.latest_at.0,
        next.count,
        next.description,
        next.status.as_str(),
        next.cleared_at.map(|t| t.0),
        next.cleared_by.map(|a| a.0),
        next.acknowledged_at.map(|t| t.0),
        next.acknowledged_by.map(|a| a.0),
    ])?;
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
impl EntityStore for EmbeddedStore {
    async fn create_account(&self, new: NewAccount) -> Result<Account> {
        new.validate_tenant()?;
        let now = UnixMillis::now();
        self.write(1, move |c| {
            if let Some(channel) = new.channel_id {
                check_exists("channel", channel.0, row_exists(c, "channels", channel.0)?)?;
            }
            if let Some(enterprise) = new.enterprise_id {
                check_exists("enterprise", enterprise.0, row_exists(c, "enterprises", enterprise.0)?)?;
            }
            if let Some(parent) = new.parent_id {
                let found = c
                    .prepare_cached(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"))?
                    .query_row([db_after(parent.0)], account_from_row)
                    .optional()?;
                check_sub_account_parent(&new, found.as_ref())?;
            }
            let permissions = new.permissions.as_ref().map(Permissions::encode).transpose()?;
            c.prepare_cached(
                "INSERT INTO accounts (email, password_hash, role, created_at, channel_id, enterprise_id, \
                 must_change_password, parent_id, permissions) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                new.email,
                new.password_hash,
                new.role.as_str(),
                now.0,
                new.channel_id.map(|ch| ch.0),
                new.enterprise_id.map(|e| e.0),
                new.must_change_password,
                new.parent_id.map(|p| p.0),
                permissions
            ])
            .map_err(|e| if is_unique_violation(&e) { StoreError::AlreadyExists("email") } else { backend(e) })?;
            Ok(Account {
                id: AccountId(c.last_insert_rowid() as u64),
                email: new.email.clone(),
                password_hash: new.password_hash.clone(),
                role: new.role,
                channel_id: new.channel_id,
                enterprise_id: new.enterprise_id,
                created_at: now,
                failed_logins: 0,
                locked_until: None,
                totp_secret: None,
                totp_last_step: None,
                frozen: false,
                must_change_password: new.must_change_password,
                parent_id: new.parent_id,
                permissions: new.permissions.clone(),
            })
        })
        .await
    }

    async fn account_by_email(&self, email: &str) -> Result<Option<Account>> {
        let email = email.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE email = ?1"))?
                .query_row([email], account_from_row)
                .optional()?)
        })
        .await
    }

    async fn account(&self, id: AccountId) -> Result<Option<Account>> {
        self.read(move |c| {
            Ok(c.prepare_cached(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"))?
                .query_row([id.0], account_from_row)
                .optional()?)
        })
        .await
    }

    async fn list_accounts(&self, filter: AccountFilter, page: Page) -> Result<Vec<Account>> {
        let (sql, values) = account_filter_sql(&filter, page)?;
        self.read(move |c| {
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map(rusqlite::params_from_iter(values.iter()), account_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn set_account_permissions(&self, account: AccountId, permissions: Permissions) -> Result<bool> {
        let Ok(account) = i64::try_from(account.0) else { return Ok(false) };
        let permissions = permissions.normalized()?.encode()?;
        self.write(1, move |c| {
            Ok(c.prepare_cached("UPDATE accounts SET permissions = ?2 WHERE id = ?1 AND permissions IS NOT NULL")?
                .execute(params![account, permissions])?
                > 0)
        })
        .await
    }

    async fn set_account_frozen(&self, account: AccountId, frozen: bool) -> Result<bool> {
        let Ok(account) = i64::try_from(account.0) else { return Ok(false) };
        // One write job: the flag and the deletion of the sessions commit together.
        self.write(1, move |c| {
            let found =
                c.prepare_cached("UPDATE accounts SET frozen = ?2 WHERE id = ?1")?.execute(params![account, frozen])?
                    > 0;
            if found && frozen {
                c.prepare_cached("DELETE FROM sessions WHERE account_id = ?1")?.execute([account])?;
            }
            Ok(found)
        })
        .await
    }

    async fn set_password(&self, account: AccountId, password_hash: String, must_change: bool) -> Result<bool> {
        let Ok(account) = i64::try_from(account.0) else { return Ok(false) };
        self.write(1, move |c| {
            Ok(c.prepare_cached("UPDATE accounts SET password_hash = ?2, must_change_password = ?3 WHERE id = ?1")?
                .execute(params![account, password_hash, must_change])?
                > 0)
        })
        .await
    }

    async fn count_accounts(&self, role: Role) -> Result<u64> {
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT count(*) FROM accounts WHERE role = ?1")?
                .query_row([role.as_str()], |r| r.get(0))?)
        })
        .await
    }

    async fn create_session(&self, s: Session) -> Result<()> {
        self.write(1, move |c| {
            c.prepare_cached("DELETE FROM sessions WHERE expires_at < ?1")?.execute([s.created_at.0])?;
            c.prepare_cached(
                "INSERT INTO sessions (token_hash, account_id, created_at, expires_at, last_seen_at, \
                 acting_enterprise_id, acting_channel_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                &s.token_hash.0[..],
                s.account_id.0,
                s.created_at.0,
                s.expires_at.0,
                s.last_seen_at.0,
                match s.acting {
                    Some(Acting::Enterprise(e)) => Some(e.0),
                    _ => None,
                },
                match s.acting {
                    Some(Acting::Channel(ch)) => Some(ch.0),
                    _ => None,
                },
            ])?;
            Ok(())
        })
        .await
    }

    async fn session(&self, token_hash: TokenHash, now: UnixMillis) -> Result<Option<Session>> {
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT account_id, created_at, expires_at, last_seen_at, acting_enterprise_id, acting_channel_id \
                 FROM sessions WHERE token_hash = ?1 AND expires_at > ?2",
            )?
            .query_row(params![&token_hash.0[..], now.0], |r| {
                Ok(Session {
                    token_hash,
                    account_id: AccountId(r.get(0)?),
                    created_at: UnixMillis(r.get(1)?),
                    expires_at: UnixMillis(r.get(2)?),
                    last_seen_at: UnixMillis(r.get(3)?),
                    acting: match (r.get::<_, Option<u64>>(4)?, r.get::<_, Option<u64>>(5)?) {
                        (Some(e), _) => Some(Acting::Enterprise(EnterpriseId(e))),
                        (None, Some(ch)) => Some(Acting::Channel(ChannelId(ch))),
                        (None, None) => None,
                    },
                })
            })
            .optional()?)
        })
        .await
    }

    async fn touch_session(&self, token_hash: TokenHash, now: UnixMillis) -> Result<()> {
        self.write(1, move |c| {
            c.prepare_cached("UPDATE sessions SET last_seen_at = ?2 WHERE token_hash = ?1 AND last_seen_at < ?2")?
                .execute(params![&token_hash.0[..], now.0])?;
            Ok(())
        })
        .await
    }

    async fn delete_session(&self, token_hash: TokenHash) -> Result<bool> {
        self.write(1, move |c| {
            Ok(c.prepare_cached("DELETE FROM sessions WHERE token_hash = ?1")?.execute([&token_hash.0[..]])? > 0)
        })
        .await
    }

    async fn delete_account_sessions(&self, account: AccountId) -> Result<u64> {
        let Ok(account) = i64::try_from(account.0) else { return Ok(0) };
        self.write(1, move |c| {
            let deleted = c.prepare_cached("DELETE FROM sessions WHERE account_id = ?1")?.execute([account])?;
            Ok(deleted as u64)
        })
        .await
    }

    async fn set_totp(&self, account: AccountId, secret: Option<[u8; 20]>) -> Result<bool> {
        let Ok(account) = i64::try_from(account.0) else { return Ok(false) };
        self.write(1, move |c| {
            let secret: Option<&[u8]> = secret.as_ref().map(|s| &s[..]);
            Ok(c.prepare_cached("UPDATE accounts SET totp_secret = ?2, totp_last_step = NULL WHERE id = ?1")?
                .execute(params![account, secret])?
                > 0)
        })
        .await
    }

    async fn record_totp_step(&self, account: AccountId, step: u64) -> Result<bool> {
        let step = totp_step(step)?;
        let Ok(account) = i64::try_from(account.0) else { return Ok(false) };
        // One conditional statement: of concurrent attempts at the same step, one updates.
        self.write(1, move |c| {
            Ok(c.prepare_cached(
                "UPDATE accounts SET totp_last_step = ?2 \
                 WHERE id = ?1 AND (totp_last_step IS NULL OR totp_last_step < ?2)",
            )?
            .execute([account, step])?
                > 0)
        })
        .await
    }

    async fn create_enterprise(&self, new: NewEnterprise) -> Result<Enterprise> {
        new.profile.validate()?;
        let now = UnixMillis::now();
        let profile = encode_profile(&new.profile)?;
        let search = enterprise_search_text(&new.name, &new.profile);
        self.write(1, move |c| {
            if let Some(channel) = new.channel_id {
                check_exists("channel", channel.0, row_exists(c, "channels", channel.0)?)?;
            }
            c.prepare_cached(
                "INSERT INTO enterprises (name, credential, created_at, channel_id, profile, search_text) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![new.name, new.credential, now.0, new.channel_id.map(|ch| ch.0), profile, search])
            .map_err(|e| if is_unique_violation(&e) { StoreError::AlreadyExists("credential") } else { backend(e) })?;
            Ok(Enterprise {
                id: EnterpriseId(c.last_insert_rowid() as u64),
                name: new.name.clone(),
                credential: new.credential.clone(),
                channel_id: new.channel_id,
                created_at: now,
                profile: new.profile.clone(),
                channel_authorization: ChannelAuthorization::None,
            })
        })
        .await
    }

    async fn update_enterprise(
        &self,
        id: EnterpriseId,
        name: String,
        profile: EnterpriseProfile,
    ) -> Result<Option<Enterprise>> {
        profile.validate()?;
        let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
        let search = enterprise_search_text(&name, &profile);
        let encoded = encode_profile(&profile)?;
        self.write(1, move |c| {
            c.prepare_cached("UPDATE enterprises SET name = ?2, profile = ?3, search_text = ?4 WHERE id = ?1")?
                .execute(params![id, name, encoded, search])?;
            Ok(c.prepare_cached(&format!("SELECT {ENTERPRISE_COLUMNS} FROM enterprises WHERE id = ?1"))?
                .query_row([id], enterprise_from_row)
                .optional()?)
        })
        .await
    }

    async fn set_channel_authorization(
        &self,
        id: EnterpriseId,
        from: &[ChannelAuthorization],
        to: ChannelAuthorization,
    ) -> Result<Option<Enterprise>> {
        let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
        let from: Vec<&'static str> = from.iter().map(|a| a.as_str()).collect();
        let from = serde_json::to_string(&from).map_err(|e| StoreError::Backend(format!("encoding states: {e}")))?;
        self.write(1, move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE enterprises SET channel_authorization = ?2 \
                     WHERE id = ?1 AND channel_authorization IN (SELECT value FROM json_each(?3))",
                )?
                .execute(params![id, to.as_str(), from])?
                > 0;
            if !changed {
                return Ok(None);
            }
            if to != ChannelAuthorization::Accepted {
                c.prepare_cached("DELETE FROM sessions WHERE acting_enterprise_id = ?1")?.execute([id])?;
            }
            Ok(c.prepare_cached(&format!("SELECT {ENTERPRISE_COLUMNS} FROM enterprises WHERE id = ?1"))?
                .query_row([id], enterprise_from_row)
                .optional()?)
        })
        .await
    }

    async fn enterprise(&self, id: EnterpriseId) -> Result<Option<Enterprise>> {
        self.read(move |c| {
            Ok(c.prepare_cached(&format!("SELECT {ENTERPRISE_COLUMNS} FROM enterprises WHERE id = ?1"))?
                .query_row([id.0], enterprise_from_row)
                .optional()?)
        })
        .await
    }

    async fn enterprise_by_credential(&self, credential: &str) -> Result<Option<Enterprise>> {
        let credential = credential.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(&format!("SELECT {ENTERPRISE_COLUMNS} FROM enterprises WHERE credential = ?1"))?
                .query_row([credential], enterprise_from_row)
                .optional()?)
        })
        .await
    }

    async fn search_enterprises(&self, filter: EnterpriseFilter, page: Page) -> Result<Vec<Enterprise>> {
        let mut terms: Vec<String> = Vec::new();
        let mut values: Vec<SqlValue> = Vec::new();
        let tenants = (filter.channels.as_deref(), filter.ids.as_deref());
        push_tenant_term(&mut terms, &mut values, "id", tenants, MAX_ENTERPRISE_CHANNEL_FILTER)?;
        if let Some(q) = search_needle(filter.q.as_deref())? {
            terms.push("instr(search_text, ?) > 0".into());
            values.push(Box::new(q));
        }
        terms.push("id > ?".into());
        values.push(Box::new(db_after(page.after)));
        values.push(Box::new(page.limit));
        let sql =
            format!("SELECT {ENTERPRISE_COLUMNS} FROM enterprises WHERE {} ORDER BY id LIMIT ?", terms.join(" AND "));
        self.read(move |c| {
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map(rusqlite::params_from_iter(values.iter()), enterprise_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn create_channel(&self, new: NewChannel, now: UnixMillis) -> Result<Channel> {
        new.validate()?;
        self.write(1, move |c| {
            if let Some(parent) = new.parent_id {
                let allows: Option<bool> = match i64::try_from(parent.0) {
                    Ok(id) => c
                        .prepare_cached("SELECT allow_sub_channels FROM channels WHERE id = ?1")?
                        .query_row([id], |r| r.get(0))
                        .optional()?,
                    Err(_) => None,
                };
                check_parent_channel(parent, allows)?;
            }
            c.prepare_cached(
                "INSERT INTO channels \
                 (name, parent_id, allow_sub_channels, device_management, rps, contact, email, created_at, \
                 phone, country, search_text) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                new.name,
                new.parent_id.map(|p| p.0),
                new.allow_sub_channels,
                new.device_management,
                new.rps,
                new.contact,
                new.email,
                now.0,
                new.phone,
                new.country,
                channel_search_text(&new.name, &new.contact, &new.email),
            ])?;
            Ok(Channel {
                id: ChannelId(c.last_insert_rowid() as u64),
                name: new.name.clone(),
                parent_id: new.parent_id,
                allow_sub_channels: new.allow_sub_channels,
                device_management: new.device_management,
                rps: new.rps,
                contact: new.contact.clone(),
                email: new.email.clone(),
                phone: new.phone.clone(),
                country: new.country.clone(),
                created_at: now,
            })
        })
        .await
    }

    async fn channel(&self, id: ChannelId) -> Result<Option<Channel>> {
        let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
        self.read(move |c| {
            Ok(c.prepare_cached(&format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE id = ?1"))?
                .query_row([id], channel_from_row)
                .optional()?)
        })
        .await
    }

    async fn search_channels(&self, within: Option<ChannelId>, q: Option<&str>, page: Page) -> Result<Vec<Channel>> {
        let after = db_after(page.after);
        let within = match within.map(|w| i64::try_from(w.0)) {
            None => None,
            Some(Ok(w)) => Some(w),
            Some(Err(_)) => return Ok(Vec::new()),
        };
        // An empty needle is in every text.
        let q = search_needle(q)?.unwrap_or_default();
        self.read(move |c| {
            let rows = match within {
                None => c
                    .prepare_cached(&format!(
                        "SELECT {CHANNEL_COLUMNS} FROM channels WHERE id > ?1 AND instr(search_text, ?3) > 0 \
                         ORDER BY id LIMIT ?2"
                    ))?
                    .query_map(params![after, page.limit, q], channel_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
                Some(root) => c
                    .prepare_cached(&format!(
                        "WITH RECURSIVE sub(id) AS (\
                         SELECT id FROM channels WHERE parent_id = ?1 \
                         UNION ALL SELECT c.id FROM channels c JOIN sub ON c.parent_id = sub.id) \
                         SELECT {CHANNEL_COLUMNS} FROM channels \
                         WHERE id IN (SELECT id FROM sub) AND id > ?2 AND instr(search_text, ?4) > 0 \
                         ORDER BY id LIMIT ?3"
                    ))?
                    .query_map(params![root, after, page.limit, q], channel_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
            };
            Ok(rows)
        })
        .await
    }

    async fn update_channel(&self, id: ChannelId, u: ChannelUpdate) -> Result<Option<Channel>> {
        u.validate()?;
        let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
        self.write(1, move |c| {
            c.prepare_cached(
                "UPDATE channels SET name = ?2, allow_sub_channels = ?3, device_management = ?4, rps = ?5, \
                 contact = ?6, email = ?7, phone = ?8, country = ?9, search_text = ?10 WHERE id = ?1",
            )?
            .execute(params![
                id,
                u.name,
                u.allow_sub_channels,
                u.device_management,
                u.rps,
                u.contact,
                u.email,
                u.phone,
                u.country,
                channel_search_text(&u.name, &u.contact, &u.email),
            ])?;
            Ok(c.prepare_cached(&format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE id = ?1"))?
                .query_row([id], channel_from_row)
                .optional()?)
        })
        .await
    }

    async fn channel_subtree(&self, root: ChannelId) -> Result<Vec<ChannelId>> {
        let Ok(id) = i64::try_from(root.0) else { return Ok(Vec::new()) };
        let ids = self
            .read(move |c| {
                // No ORDER BY: the walk stops after the bound instead of visiting the whole tree.
                let mut st = c.prepare_cached(
                    "WITH RECURSIVE sub(id) AS (\
                     SELECT id FROM channels WHERE id = ?1 \
                     UNION ALL SELECT c.id FROM channels c JOIN sub ON c.parent_id = sub.id) \
                     SELECT id FROM sub LIMIT ?2",
                )?;
                let rows =
                    st.query_map(params![id, MAX_CHANNEL_SUBTREE as i64 + 1], |r| r.get::<_, u64>(0).map(ChannelId))?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await?;
        bounded_subtree(root, ids)
    }

    async fn register_device(&self, new: NewDevice) -> Result<RegisteredDevice> {
        // Fast path without a write: the device exists, unchanged, in this enterprise.
        let lookup = new.clone();
        let existing = self.read(move |c| Ok(find_device(c, &lookup.key)?)).await?;
        if let Some(device) = existing {
            if device.enterprise_id != new.enterprise_id {
                return Err(StoreError::DeviceConflict);
            }
            if device.model == new.model && device.firmware == new.firmware {
                return Ok(RegisteredDevice { device, created: false });
            }
        }
        self.write(1, move |c| register_device(c, &new)).await
    }

    async fn device(&self, id: DeviceId) -> Result<Option<Device>> {
        self.read(move |c| {
            Ok(c.prepare_cached(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1"))?
                .query_row([id.0], device_from_row)
                .optional()?)
        })
        .await
    }

    async fn list_devices(&self, enterprise: Option<EnterpriseId>, page: Page) -> Result<Vec<Device>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE (?1 IS NULL OR enterprise_id = ?1) AND id > ?2 ORDER BY id LIMIT ?3"
            ))?;
            let rows = st.query_map(params![enterprise.map(|e| e.0), page.after, page.limit], device_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn update_device_snapshots(&self, updates: Vec<DeviceSnapshotUpdate>) -> Result<()> {
        check_bound("snapshot updates", updates.len(), MAX_SNAPSHOT_BATCH)?;
        if updates.is_empty() {
            return Ok(());
        }
        let updates = coalesce_snapshot_updates(updates);
        self.write(updates.len(), move |c| apply_snapshot_updates(c, &updates)).await
    }

    async fn mark_devices_offline(&self) -> Result<u64> {
        self.write(1, |c| Ok(c.execute("UPDATE devices SET online = 0 WHERE online = 1", [])? as u64)).await
    }

    async fn query_devices(&self, query: DeviceQuery, page: DevicePageRequest) -> Result<DevicePage> {
        let Some(cursor) = prepare_device_query(&query, &page)? else {
            return Ok(DevicePage { items: Vec::new(), next_cursor: None, total: 0 });
        };
        self.read(move |c| {
            use crate::device_sql::{Dialect, count_sql, page_sql};
            let count = count_sql(&query, Dialect::Sqlite);
            let total: i64 = c
                .prepare_cached(&count.sql)?
                .query_row(rusqlite::params_from_iter(sqlite_args(count.args)), |r| r.get(0))?;
            let built = page_sql(&query, cursor.as_ref(), page.limit, Dialect::Sqlite);
            let mut st = c.prepare_cached(&built.sql)?;
            let items = st
                .query_map(rusqlite::params_from_iter(sqlite_args(built.args)), summary_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(finish_device_page(items, &query, page.limit, u64::try_from(total).unwrap_or(0)))
        })
        .await
    }

    async fn device_dashboard(&self, query: DeviceQuery) -> Result<DeviceDashboard> {
        query.validate()?;
        if query.matches_nothing() {
            return Ok(DeviceDashboard::from_groups(Vec::new(), Vec::new()));
        }
        self.read(move |c| {
            use crate::device_sql::{Dialect, by_model_sql, by_type_sql};
            let groups = |built: crate::device_sql::Built| -> Result<Vec<(String, i64, i64)>> {
                let mut st = c.prepare_cached(&built.sql)?;
                let rows = st.query_map(rusqlite::params_from_iter(sqlite_args(built.args)), |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            };
            let types = groups(by_type_sql(&query, Dialect::Sqlite))?;
            let models = groups(by_model_sql(&query, MAX_DASHBOARD_MODELS + 1, Dialect::Sqlite))?;
            Ok(DeviceDashboard::from_groups(types, models))
        })
        .await
    }

    async fn create_device_label(&self, new: NewDeviceLabel, now: UnixMillis) -> Result<DeviceLabel> {
        new.validate()?;
        let Ok(account) = i64::try_from(new.account_id.0) else {
            return Err(StoreError::InvalidInput(format!("account {} does not exist", new.account_id)));
        };
        // The single writer serialises the count and the insert.
        self.write(1, move |c| {
            check_exists("account", new.account_id.0, row_exists(c, "accounts", new.account_id.0)?)?;
            let count: i64 = c
                .prepare_cached("SELECT count(*) FROM device_labels WHERE account_id = ?1")?
                .query_row([account], |r| r.get(0))?;
            if usize::try_from(count).unwrap_or(usize::MAX) >= MAX_DEVICE_LABELS {
                return Err(StoreError::InvalidInput(format!("an account has at most {MAX_DEVICE_LABELS} labels")));
            }
            let inserted = c
                .prepare_cached(
                    "INSERT INTO device_labels (account_id, name, filter, created_at) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![account, new.name, new.filter, now.0]);
            match inserted {
                Err(e) if is_unique_violation(&e) => return Err(StoreError::AlreadyExists("label name")),
                other => other?,
            };
            Ok(DeviceLabel {
                id: c.last_insert_rowid() as u64,
                account_id: new.account_id,
                name: new.name.clone(),
                filter: new.filter.clone(),
                created_at: now,
            })
        })
        .await
    }

    async fn list_device_labels(&self, account: AccountId) -> Result<Vec<DeviceLabel>> {
        let Ok(id) = i64::try_from(account.0) else { return Ok(Vec::new()) };
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, account_id, name, filter, created_at FROM device_labels WHERE account_id = ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = st.query_map(params![id, MAX_DEVICE_LABELS as i64], |r| {
                Ok(DeviceLabel {
                    id: r.get(0)?,
                    account_id: AccountId(r.get(1)?),
                    name: r.get(2)?,
                    filter: r.get(3)?,
                    created_at: UnixMillis(r.get(4)?),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn delete_device_label(&self, account: AccountId, id: u64) -> Result<bool> {
        let (Ok(account), Ok(id)) = (i64::try_from(account.0), i64::try_from(id)) else { return Ok(false) };
        self.write(1, move |c| {
            Ok(c.prepare_cached("DELETE FROM device_labels WHERE id = ?1 AND account_id = ?2")?
                .execute([id, account])?
                > 0)
        })
        .await
    }

    async fn device_columns(&self, account: AccountId) -> Result<Option<Vec<String>>> {
        let Ok(account) = i64::try_from(account.0) else { return Ok(None) };
        let stored: Option<String> = self
            .read(move |c| {
                Ok(c.prepare_cached("SELECT columns FROM device_columns WHERE account_id = ?1")?
                    .query_row([account], |r| r.get(0))
                    .optional()?)
            })
            .await?;
        stored
            .map(|s| serde_json::from_str(&s).map_err(|e| StoreError::Backend(format!("stored device columns: {e}"))))
            .transpose()
    }

    async fn set_device_columns(&self, account: AccountId, columns: Vec<String>) -> Result<()> {
        check_device_columns(&columns)?;
        let json = serde_json::to_string(&columns).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.write(1, move |c| {
            check_exists("account", account.0, row_exists(c, "accounts", account.0)?)?;
            c.prepare_cached(
                "INSERT INTO device_columns (account_id, columns) VALUES (?1, ?2) \
                 ON CONFLICT (account_id) DO UPDATE SET columns = excluded.columns",
            )?
            .execute(params![account.0, json])?;
            Ok(())
        })
        .await
    }

    async fn device_summary(&self, id: DeviceId) -> Result<Option<DeviceSummary>> {
        let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {} FROM devices d JOIN enterprises e ON e.id = d.enterprise_id WHERE d.id = ?1",
                crate::device_sql::SUMMARY_COLUMNS
            ))?
            .query_row([id], summary_from_row)
            .optional()?)
        })
        .await
    }

    async fn create_strategy(
        &self,
        enterprise: EnterpriseId,
        settings: StrategySettings,
        at: UnixMillis,
    ) -> Result<StoredStrategy> {
        let json = settings_json(&settings)?;
        self.write(1, move |c| {
            c.prepare_cached(
                "INSERT INTO alarm_strategies (enterprise_id, settings, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
            )?
            .execute(params![enterprise.0, json, at.0])?;
            Ok(StoredStrategy {
                id: fleetpulse_proto::StrategyId(c.last_insert_rowid() as u64),
                enterprise_id: enterprise,
                settings: settings.clone(),
                created_at: at,
                updated_at: at,
            })
        })
        .await
    }

    async fn strategy(&self, id: fleetpulse_proto::StrategyId) -> Result<Option<StoredStrategy>> {
        self.read(move |c| {
            Ok(c.prepare_cached(&format!("SELECT {STRATEGY_COLUMNS} FROM alarm_strategies WHERE id = ?1"))?
                .query_row([id.0], strategy_from_row)
                .optional()?)
        })
        .await
    }

    async fn list_strategies(&self, enterprise: EnterpriseId) -> Result<Vec<StoredStrategy>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {STRATEGY_COLUMNS} FROM alarm_strategies WHERE enterprise_id = ?1 ORDER BY id"
            ))?;
            let rows = st.query_map([enterprise.0], strategy_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn update_strategy(
        &self,
        id: fleetpulse_proto::StrategyId,
        settings: StrategySettings,
        at: UnixMillis,
    ) -> Result<Option<StoredStrategy>> {
        let json = settings_json(&settings)?;
        self.write(1, move |c| {
            c.prepare_cached("UPDATE alarm_strategies SET settings = ?2, updated_at = ?3 WHERE id = ?1")?
                .execute(params![id.0, json, at.0])?;
            Ok(c.prepare_cached(&format!("SELECT {STRATEGY_COLUMNS} FROM alarm_strategies WHERE id = ?1"))?
                .query_row([id.0], strategy_from_row)
                .optional()?)
        })
        .await
    }

    async fn delete_strategy(&self, id: fleetpulse_proto::StrategyId) -> Result<bool> {
        self.write(1, move |c| Ok(c.prepare_cached("DELETE FROM alarm_strategies WHERE id = ?1")?.execute([id.0])? > 0))
            .await
    }

    async fn enqueue_outbox_batch(&self, messages: Vec<NewOutboxMessage>, now: UnixMillis) -> Result<Vec<bool>> {
        check_bound("outbox messages", messages.len(), MAX_OUTBOX_BATCH)?;
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let rows = messages.iter().map(|m| 1 + m.item_keys.len()).sum();
        // One write job: one savepoint of one commit, so the batch is applied whole or not at all.
        self.write(rows, move |c| {
            let mut message = c.prepare_cached(
                "INSERT INTO outbox (key, enterprise_id, receiver, payload, state, next_attempt_at, created_at) \
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6) ON CONFLICT (key) DO NOTHING",
            )?;
            let mut item = c.prepare_cached(
                "INSERT INTO outbox_items (item_key, message_id) VALUES (?1, ?2) ON CONFLICT (item_key) DO NOTHING",
            )?;
            let mut queued = Vec::with_capacity(messages.len());
            for m in &messages {
                let added =
                    message.execute(params![m.key, m.enterprise_id.0, m.receiver, m.payload, m.not_before.0, now.0])?
                        > 0;
                if added {
                    let id = c.last_insert_rowid();
                    for key in &m.item_keys {
                        item.execute(params![key, id])?;
                    }
                }
                queued.push(added);
            }
            Ok(queued)
        })
        .await
    }

    async fn outbox_known_items(&self, keys: &[String]) -> Result<Vec<String>> {
        check_bound("outbox item keys", keys.len(), MAX_OUTBOX_ITEM_QUERY)?;
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.read(move |c| {
            let placeholders = vec!["?"; ITEM_KEYS_PER_QUERY].join(",");
            let mut st =
                c.prepare_cached(&format!("SELECT item_key FROM outbox_items WHERE item_key IN ({placeholders})"))?;
            let mut known = Vec::new();
            for chunk in keys.chunks(ITEM_KEYS_PER_QUERY) {
                let Some(last) = chunk.last() else { continue };
                // A short chunk repeats its last key, so that every chunk uses the one statement.
                let padded = chunk.iter().chain(std::iter::repeat(last)).take(ITEM_KEYS_PER_QUERY);
                let rows = st.query_map(rusqlite::params_from_iter(padded), |r| r.get::<_, String>(0))?;
                for key in rows {
                    known.push(key?);
                }
            }
            Ok(known)
        })
        .await
    }

    async fn due_outbox_except(&self, now: UnixMillis, limit: u32, except: &[String]) -> Result<Vec<OutboxMessage>> {
        check_bound("excepted outbox receivers", except.len(), MAX_OUTBOX_EXCEPT)?;
        let slots = except_slots(except.len());
        let except = except.to_vec();
        self.read(move |c| {
            let mut st = c.prepare_cached(&due_outbox_sql(slots))?;
            let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(2 + slots);
            values.push(&now.0);
            values.push(&limit);
            if let Some(last) = except.last() {
                // Short lists repeat their last receiver to fill the statement's slots.
                values.extend(
                    except.iter().chain(std::iter::repeat(last)).take(slots).map(|r| r as &dyn rusqlite::ToSql),
                );
            }
            let rows = st.query_map(&*values, outbox_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn record_outbox_attempts(&self, attempts: Vec<OutboxAttempt>) -> Result<()> {
        check_bound("outbox attempts", attempts.len(), MAX_OUTBOX_BATCH)?;
        if attempts.is_empty() {
            return Ok(());
        }
        self.write(attempts.len(), move |c| {
            let mut st = c.prepare_cached(RECORD_OUTBOX_ATTEMPT)?;
            for a in &attempts {
                st.execute(params![a.id, a.outcome.as_str(), a.next_attempt_at.0, a.error, a.at.0])?;
            }
            Ok(())
        })
        .await
    }

    async fn record_outbox_attempt(
        &self,
        id: u64,
        outcome: OutboxState,
        at: UnixMillis,
        next_attempt_at: UnixMillis,
        error: Option<String>,
    ) -> Result<Option<OutboxMessage>> {
        self.write(1, move |c| {
            c.prepare_cached(RECORD_OUTBOX_ATTEMPT)?.execute(params![
                id,
                outcome.as_str(),
                next_attempt_at.0,
                error,
                at.0
            ])?;
            Ok(c.prepare_cached(&format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = ?1"))?
                .query_row([id], outbox_from_row)
                .optional()?)
        })
        .await
    }

    async fn append_operation_logs(&self, rows: Vec<NewOperationLog>) -> Result<()> {
        check_bound("operation log rows", rows.len(), MAX_OPERATION_LOG_BATCH)?;
        rows.iter().try_for_each(NewOperationLog::validate)?;
        if rows.is_empty() {
            return Ok(());
        }
        // One write job: one savepoint of one commit, so the batch is appended whole or not at all.
        self.write(rows.len(), move |c| {
            let mut st = c.prepare_cached(
                "INSERT INTO operation_log (account_id, account_email, acting_as, operation, method, path, ip, at, \
                 status, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for row in &rows {
                st.execute(params![
                    row.account_id.map(|a| a.0),
                    row.account_email,
                    row.acting_as.map(|e| e.0),
                    row.operation,
                    row.method,
                    row.path,
                    row.ip,
                    row.at.0,
                    row.status,
                    row.outcome.as_str(),
                ])?;
            }
            Ok(())
        })
        .await
    }

    async fn list_operation_logs(&self, filter: OperationLogFilter, page: Page) -> Result<Vec<OperationLog>> {
        if let Some(within) = &filter.within {
            within.check()?;
        }
        let Some((sql, values)) = operation_log_sql(&filter, page) else { return Ok(Vec::new()) };
        self.read(move |c| {
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map(rusqlite::params_from_iter(values.iter()), operation_log_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn record_login_failure(
        &self,
        account: AccountId,
        now: UnixMillis,
        max_failures: u32,
        lock_for_ms: u64,
    ) -> Result<Option<Account>> {
        let until = login_lock_until(now, max_failures, lock_for_ms)?;
        let Ok(account) = i64::try_from(account.0) else { return Ok(None) };
        // One statement in one write job: the single writer serialises concurrent failures, and
        // the `SET` expressions all read the row as it was before this update.
        self.write(1, move |c| {
            Ok(c.prepare_cached(&format!(
                "UPDATE accounts SET \
                 failed_logins = CASE WHEN failed_logins + 1 >= ?2 THEN 0 ELSE failed_logins + 1 END, \
                 locked_until = CASE WHEN failed_logins + 1 >= ?2 THEN ?3 ELSE locked_until END \
                 WHERE id = ?1 RETURNING {ACCOUNT_COLUMNS}"
            ))?
            .query_row(params![account, max_failures, until.0], account_from_row)
            .optional()?)
        })
        .await
    }

    async fn record_login_success(&self, account: AccountId) -> Result<()> {
        let Ok(account) = i64::try_from(account.0) else { return Ok(()) };
        self.write(1, move |c| {
            c.prepare_cached(
                "UPDATE accounts SET failed_logins = 0, locked_until = NULL \
                 WHERE id = ?1 AND (failed_logins <> 0 OR locked_until IS NOT NULL)",
            )?
            .execute([account])?;
            Ok(())
        })
        .await
    }

    // Account self-service (ACC-3..5): in `account_security.rs`.

    async fn account_settings(&self, account: AccountId) -> Result<Option<AccountSettings>> {
        self.account_settings_impl(account).await
    }

    async fn set_account_settings(&self, account: AccountId, settings: AccountSettings) -> Result<bool> {
        self.set_account_settings_impl(account, settings).await
    }

    async fn create_password_reset(&self, reset: PasswordReset) -> Result<()> {
        self.create_password_reset_impl(reset).await
    }

    async fn consume_password_reset(&self, token_hash: TokenHash, now: UnixMillis) -> Result<Option<AccountId>> {
        self.consume_password_reset_impl(token_hash, now).await
    }

    async fn create_login_challenge(&self, challenge: LoginChallenge) -> Result<()> {
        self.create_login_challenge_impl(challenge).await
    }

    async fn claim_login_challenge_attempt(
        &self,
        id_hash: TokenHash,
        now: UnixMillis,
        max_attempts: u32,
    ) -> Result<Option<LoginChallenge>> {
        self.claim_login_challenge_attempt_impl(id_hash, now, max_attempts).await
    }

    async fn finish_login_challenge(&self, id_hash: TokenHash, now: UnixMillis) -> Result<bool> {
        self.finish_login_challenge_impl(id_hash, now).await
    }

    async fn redact_outbox_payload(&self, id: u64, payload: String) -> Result<bool> {
        self.redact_outbox_payload_impl(id, payload).await
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
            Ok(c.prepare_cached(
                "SELECT at, log FROM alarm_events WHERE device_id = ?1 AND code = ?2 AND log IS NOT NULL \
                 ORDER BY at DESC LIMIT 1",
            )?
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
            let mut seqs = c.prepare_cached(
                "SELECT seq FROM status_events WHERE device_id = ?1 \
                 UNION ALL SELECT seq FROM resource_reports WHERE device_id = ?1 \
                 UNION ALL SELECT seq FROM alarm_events WHERE device_id = ?1 AND seq > 0 ORDER BY 1",
            )?;
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
            // Walks the (device_id, seq) index backwards: newest first without a sort.
            let mut st = c.prepare_cached(
                "SELECT at, cpu_centi_pct, mem_used, mem_total FROM resource_reports \
                 WHERE device_id = ?1 AND at >= ?2 AND at < ?3 ORDER BY seq DESC LIMIT ?4",
            )?;
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
            counter("fleetpulse_store_commit_failures", "Failed commit attempts (each retried)", &st.commit_failures),
            counter("fleetpulse_store_job_failures", "Write jobs rolled back alone", &st.job_failures),
        ]
    }

    async fn apply_retention(&self, cutoff: UnixMillis) -> Result<u64> {
        self.write(1, move |c| {
            let mut removed = 0u64;
            for table in ["status_events", "resource_reports", "alarm_events"] {
                removed += c.execute(&format!("DELETE FROM {table} WHERE at < ?1"), [cutoff.0])? as u64;
            }
            Ok(removed)
        })
        .await
    }
}

#[cfg(test)]
mod tests;
