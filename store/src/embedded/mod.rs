//! The embedded backend: one SQLite database (`fleetpulse.db`, WAL mode) under the data
//! directory, needing no other server (STO-1).
//!
//! Writes go through the single [`writer`] thread with group commit; reads use a small pool of
//! read-only connections on blocking threads. Entity and event tables live in one file so that
//! a batch of events and its delivery marks commit atomically.
//!
//! This file holds that plumbing and the row helpers the domain files share; each store trait is
//! implemented in a file of its own (`accounts.rs`, `account_security.rs`, `tenants.rs`,
//! `devices.rs`, `strategies.rs`, `outbox.rs`, `oplog.rs`, `commands.rs`, `files.rs`, `tasks.rs`,
//! `events.rs`).

mod account_security;
mod accounts;
mod audit;
mod commands;
mod dead_letters;
mod devices;
pub mod durable;
mod engine_state;
mod events;
mod files;
mod firmware;
mod groups;
mod incidents;
pub mod integrity;
mod inventory;
mod licences;
mod maintenance;
mod oplog;
mod orders;
mod outbox;
mod profiles;
mod relays;
mod rps;
mod schema;
mod sites;
mod strategies;
mod strategy_inheritance;
mod tasks;
mod tenant_admin;
mod tenants;
mod windows;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use fleetpulse_proto::EnterpriseId;
use fleetpulse_proto::ids::ChannelId;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use tokio::sync::{Semaphore, mpsc};

pub use schema::CURRENT_VERSION as SCHEMA_VERSION;
pub use writer::WriterStats;

use crate::*;
use devices::refresh_device_types;
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
    /// Start even if the database holds fewer commits than the durable mark says were
    /// acknowledged (the loss is logged and the mark lowered); `serve --accept-loss`.
    pub accept_loss: bool,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig { fsync: true, readers: 4, queue_depth: 1024, max_rows_per_commit: 50_000, accept_loss: false }
    }
}

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "fleetpulse.db";

/// The embedded store; implements both [`EntityStore`] and [`EventStore`].
#[derive(Debug)]
pub struct EmbeddedStore {
    jobs: mpsc::Sender<Box<dyn WriteJob>>,
    readers: Arc<ReadPool>,
    stats: Arc<WriterStats>,
    closing: Arc<AtomicBool>,
    /// Where file content lives (`<data_dir>/files`).
    files_dir: std::path::PathBuf,
    /// Where firmware image content lives (`<data_dir>/firmware`).
    firmware_dir: std::path::PathBuf,
    /// Whether file content is fsynced before its row completes (as [`EmbeddedConfig::fsync`]).
    fsync: bool,
    /// The compiled site matcher of each enterprise (`sites.rs`).
    site_matchers: Arc<crate::sites::MatcherCache>,
}

impl std::fmt::Debug for dyn WriteJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WriteJob({} rows)", self.rows())
    }
}

fn backend(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        // The storage, not the statement: the same call may succeed once it recovers.
        Some(C::DiskFull | C::SystemIoFailure | C::CannotOpen | C::ReadOnly | C::DatabaseCorrupt | C::NotADatabase) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        backend(e)
    }
}

/// WAL pages after which a commit checkpoints (`wal_autocheckpoint`).
pub const WAL_AUTOCHECKPOINT_PAGES: i64 = 2_000;
/// Size the WAL file is cut back to after a checkpoint (`journal_size_limit`).
pub const WAL_SIZE_LIMIT_BYTES: i64 = 8 << 20;

fn open_connection(path: &Path, flags: OpenFlags, fsync: bool) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", if fsync { "FULL" } else { "NORMAL" })?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // 64 MiB page cache: index pages of recent devices stay hot between commits.
    conn.pragma_update(None, "cache_size", -65_536)?;
    // Checkpoint every 2,000 pages (8 MiB at 4 KiB pages) and cut the WAL file back to
    // 8 MiB after: a truncated or damaged WAL can only lose a little, and a full disk leaves
    // little to fold back (the maintenance thread also truncates it when idle).
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl EmbeddedStore {
    /// Opens (creating if needed) the database under `data_dir`, migrates it and starts the
    /// writer thread.
    pub fn open(data_dir: &Path, config: EmbeddedConfig) -> Result<EmbeddedStore> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join(DB_FILE);
        let mut conn = open_connection(&path, OpenFlags::default(), config.fsync).map_err(|e| {
            if integrity::is_damage(&e) {
                StoreError::Damaged(integrity::damage_message(data_dir, &[e.to_string()]))
            } else {
                StoreError::from(e)
            }
        })?;
        integrity::check_at_open(&conn, data_dir)?;
        schema::migrate(&mut conn)?;
        durable::ensure_table(&conn)?;
        let held = durable::verify(&conn, data_dir, config.accept_loss)?;
        // The writer's statement journals (a job's savepoint after a failure, see `writer`) stay
        // in memory: spilled, each was a temporary file created and deleted at every commit.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        let mark = durable::MarkFile::open(data_dir, config.fsync)?;
        mark.write(held)?;
        refresh_device_types(&conn)?;
        let files_dir = data_dir.join(files::FILES_DIR);
        files::recover(&conn, &files_dir, "files")?;
        let firmware_dir = data_dir.join(firmware::FIRMWARE_DIR);
        files::recover(&conn, &firmware_dir, "firmware_images")?;
        let readers = (0..config.readers.max(1))
            .map(|_| open_connection(&path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX, false))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let (tx, rx) = mpsc::channel(config.queue_depth.max(1));
        let stats = Arc::new(WriterStats::default());
        let mark = mark.background(stats.mark_failures.clone())?;
        let closing = Arc::new(AtomicBool::new(false));
        let writer = writer::Writer {
            conn,
            jobs: rx,
            max_rows_per_commit: config.max_rows_per_commit.max(1),
            stats: stats.clone(),
            closing: closing.clone(),
            mark,
        };
        std::thread::Builder::new().name("store-writer".into()).spawn(move || writer.run())?;
        let maintenance = maintenance::Maintenance {
            path: path.clone(),
            jobs: tx.downgrade(),
            stats: stats.clone(),
            closing: closing.clone(),
        };
        std::thread::Builder::new().name("store-maintenance".into()).spawn(move || maintenance.run())?;
        Ok(EmbeddedStore {
            jobs: tx,
            readers: Arc::new(ReadPool {
                permits: Arc::new(Semaphore::new(readers.len())),
                conns: Mutex::new(readers),
            }),
            stats,
            closing,
            files_dir,
            firmware_dir,
            fsync: config.fsync,
            site_matchers: Arc::default(),
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
        write_on(&self.jobs, rows, f).await
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

/// Runs a write job on the writer behind `jobs` (what [`EmbeddedStore::write`] does, for a task
/// that holds a clone of the sender instead of the store).
async fn write_on<T, F>(jobs: &mpsc::Sender<Box<dyn WriteJob>>, rows: usize, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnMut(&Connection) -> Result<T> + Send + 'static,
{
    let (job, done) = FnJob::boxed(rows, f);
    jobs.send(job).await.map_err(|_| StoreError::Closed)?;
    done.await.map_err(|_| StoreError::Closed)?
}

/// Read-only connections, each used by one blocking task at a time.
#[derive(Debug)]
struct ReadPool {
    permits: Arc<Semaphore>,
    conns: Mutex<Vec<Connection>>,
}

impl ReadPool {
    async fn run<T, F>(self: Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        // The permit moves into the blocking read and is released only after its connection is
        // back in the pool: a caller cancelled while the read runs must not free a permit whose
        // connection is still out.
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
        let conn = self
            .conns
            .lock()
            .map_err(|_| StoreError::Backend("reader pool poisoned".into()))?
            .pop()
            .expect("a permit guarantees a free connection");
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let result = f(&conn);
            if let Ok(mut conns) = pool.conns.lock() {
                conns.push(conn);
            }
            drop(permit);
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }
}

// ---- row helpers shared by the domain files ----

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

/// A value bound to a statement built at run time.
type SqlValue = Box<dyn rusqlite::ToSql + Send>;

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

#[cfg(test)]
mod tests;
