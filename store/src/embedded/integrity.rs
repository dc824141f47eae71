//! Integrity of the embedded database: the check bounded in time at open, the full check
//! (`fleetpulse check`) and the salvage into a new file (`fleetpulse repair`).
//!
//! At open a database up to [`FULL_CHECK_AT_OPEN_BYTES`] (32 MiB) gets `PRAGMA integrity_check` (it also
//! compares every index with its table, which catches a changed unique value such as a MAC
//! address); a larger one gets `PRAGMA quick_check` (page structure and record formats, no
//! index comparison). Either is interrupted after [`OPEN_CHECK_BUDGET`]: the start then goes on
//! with a warning that only `fleetpulse check` covers the whole file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use super::{DB_FILE, durable};
use crate::{Result, StoreError};

/// Databases up to this size get the full `integrity_check` at open. Measured: 16.4 s for
/// `integrity_check` and 1.5 s for `quick_check` on a 129 MiB file (2 million resource rows,
/// two indexes) on the shared 2-core test machine, so about 4 s at this size.
pub const FULL_CHECK_AT_OPEN_BYTES: u64 = 32 << 20;

/// The longest the check at open may take before it is interrupted.
pub const OPEN_CHECK_BUDGET: Duration = Duration::from_secs(10);

/// Problems listed in a report (SQLite may find thousands on a badly damaged file).
const MAX_PROBLEMS: usize = 20;

/// Whether a SQLite error means the file itself is damaged.
pub(super) fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase))
}

/// The message of a damaged database: what and what to do.
pub fn damage_message(data_dir: &Path, problems: &[String]) -> String {
    let path = data_dir.join(DB_FILE);
    let shown = problems.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
    let more = problems.len().saturating_sub(5);
    let more = if more > 0 { format!(" (and {more} more)") } else { String::new() };
    format!(
        "the database file {} is damaged: {shown}{more}. The server will not serve damaged data. \
         Restore the data directory from a backup, or salvage what is readable into a new file with \
         `fleetpulse repair --data-dir {}` (it keeps the damaged files aside and reports what was lost); \
         `fleetpulse check --data-dir {}` lists every problem",
        path.display(),
        data_dir.display(),
        data_dir.display(),
    )
}

/// Runs an integrity pragma and returns its problems (empty if the answer was `ok`).
fn run_check(conn: &Connection, pragma: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!("PRAGMA {pragma}({MAX_PROBLEMS})"))?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut problems = Vec::new();
    for row in rows {
        let row = row?;
        if row != "ok" {
            problems.push(row);
        }
    }
    Ok(problems)
}

/// The check at open, bounded by [`OPEN_CHECK_BUDGET`]; `Err(Damaged)` on damage.
pub(super) fn check_at_open(conn: &Connection, data_dir: &Path) -> Result<()> {
    let size = std::fs::metadata(data_dir.join(DB_FILE)).map(|m| m.len()).unwrap_or(0);
    let pragma = if size <= FULL_CHECK_AT_OPEN_BYTES { "integrity_check" } else { "quick_check" };
    let started = Instant::now();
    let interrupt = conn.get_interrupt_handle();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let timer = std::thread::Builder::new().name("store-check-timer".into()).spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(OPEN_CHECK_BUDGET) {
            interrupt.interrupt();
        }
    })?;
    let outcome = run_check(conn, pragma);
    drop(done);
    let _ = timer.join();
    match outcome {
        Ok(problems) if problems.is_empty() => {
            tracing::info!(
                message = "Database checked.",
                check = pragma,
                bytes = size,
                ms = started.elapsed().as_millis() as u64
            );
            Ok(())
        }
        Ok(problems) => Err(StoreError::Damaged(damage_message(data_dir, &problems))),
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted) => {
            tracing::warn!(
                message = "The database check at open ran out of time; run `fleetpulse check` to check the whole file.",
                check = pragma,
                bytes = size,
                budget_s = OPEN_CHECK_BUDGET.as_secs()
            );
            Ok(())
        }
        Err(e) => Err(StoreError::Damaged(damage_message(data_dir, &[e.to_string()]))),
    }
}

/// The outcome of [`check`]: every problem found, empty if none.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Problems, one line each.
    pub problems: Vec<String>,
    /// What was checked, one line each.
    pub checked: Vec<String>,
}

/// The full check (`fleetpulse check`): `integrity_check`, foreign keys and the durable mark.
/// Opens the database read-only; never changes it.
pub fn check(data_dir: &Path) -> Result<CheckReport> {
    let path = data_dir.join(DB_FILE);
    let mut report = CheckReport::default();
    if !path.exists() {
        report.problems.push(format!("{} does not exist", path.display()));
        return Ok(report);
    }
    let conn = match Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY) {
        Ok(c) => c,
        Err(e) => {
            report.problems.push(format!("cannot open {}: {e}", path.display()));
            return Ok(report);
        }
    };
    let started = Instant::now();
    match run_check(&conn, "integrity_check") {
        Ok(p) => report.problems.extend(p),
        Err(e) => report.problems.push(format!("integrity_check failed: {e}")),
    }
    report.checked.push(format!("integrity_check of {} in {} ms", path.display(), started.elapsed().as_millis()));
    match foreign_key_problems(&conn) {
        Ok(p) => report.problems.extend(p),
        Err(e) => report.problems.push(format!("foreign_key_check failed: {e}")),
    }
    report.checked.push("foreign keys".into());
    match (durable::in_database(&conn), durable::read_mark(data_dir)) {
        (Ok(db), Ok(Some(mark))) if mark.commits > db.commits => {
            report.problems.push(durable::loss_report(data_dir, mark, db));
        }
        (Ok(db), Ok(Some(_))) => {
            report.checked.push(format!("durable mark: the database holds {} commits", db.commits))
        }
        (Ok(_), Ok(None)) => report.checked.push("durable mark: none yet".into()),
        (_, Err(reason)) => report.problems.push(reason),
        (Err(e), _) => report.problems.push(format!("reading the commit counter: {e}")),
    }
    Ok(report)
}

fn foreign_key_problems(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("PRAGMA foreign_key_check")?;
    let rows =
        stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?, r.get::<_, String>(2)?)))?;
    let mut problems = Vec::new();
    for row in rows {
        let (table, rowid, parent) = row?;
        if problems.len() < MAX_PROBLEMS {
            problems.push(format!("{table} row {} refers to a missing {parent} row", rowid.unwrap_or(-1)));
        }
    }
    Ok(problems)
}

/// What [`repair`] salvaged, per table.
#[derive(Debug, Default)]
pub struct RepairReport {
    /// Where the damaged files were moved.
    pub damaged_copy: PathBuf,
    /// Per table: (name, rows copied, rows lost or `None` when the damaged table could not be
    /// counted).
    pub tables: Vec<(String, u64, Option<u64>)>,
    /// Tables or ranges that could not be read at all.
    pub notes: Vec<String>,
}

/// Rows copied per statement; a range that fails is retried row by row.
const REPAIR_CHUNK: i64 = 1_000;

/// Salvages what is readable into a new database (`fleetpulse repair`): the damaged database and
/// its WAL move aside to `fleetpulse.db.damaged-<unix seconds>`, a new file gets the current
/// schema, every table is copied range by range (row by row where a range fails; rows that break
/// a unique constraint are left out), and the durable mark is set to what the new file holds.
/// The server must not be running.
pub fn repair(data_dir: &Path) -> Result<RepairReport> {
    let path = data_dir.join(DB_FILE);
    if !path.exists() {
        return Err(StoreError::InvalidInput(format!("{} does not exist", path.display())));
    }
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let aside = data_dir.join(format!("{DB_FILE}.damaged-{stamp}"));
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        if from.exists() {
            std::fs::rename(&from, format!("{}{suffix}", aside.display()))?;
        }
    }
    let mut report = RepairReport { damaged_copy: aside.clone(), ..RepairReport::default() };
    let mut new = Connection::open(&path)?;
    new.pragma_update(None, "journal_mode", "WAL")?;
    super::schema::migrate(&mut new)?;
    durable::ensure_table(&new)?;
    new.pragma_update(None, "foreign_keys", "OFF")?;
    let aside_uri = aside.to_string_lossy().replace('\'', "''");
    new.execute_batch(&format!("ATTACH DATABASE '{aside_uri}' AS old"))?;
    let tables: Vec<String> = {
        let mut stmt = new.prepare(
            "SELECT name FROM main.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )?;
        stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?
    };
    for table in tables {
        match copy_table(&new, &table) {
            Ok((copied, lost)) => report.tables.push((table, copied, lost)),
            Err(e) => report.notes.push(format!("{table}: nothing could be read ({e})")),
        }
    }
    new.execute_batch("DETACH DATABASE old")?;
    durable::ensure_table(&new)?;
    let held = durable::in_database(&new)?;
    durable::MarkFile::open(data_dir, true)?.write(held)?;
    remove_dangling(&new, &mut report)?;
    new.pragma_update(None, "foreign_keys", "ON")?;
    new.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    Ok(report)
}

/// Removes the salvaged rows that refer to lost rows (a device whose enterprise was lost), until
/// none is left, counting them as lost with their table.
fn remove_dangling(conn: &Connection, report: &mut RepairReport) -> rusqlite::Result<()> {
    for _ in 0..16 {
        let dangling: Vec<(String, Option<i64>)> = {
            let mut stmt = conn.prepare("PRAGMA foreign_key_check")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?
        };
        if dangling.is_empty() {
            return Ok(());
        }
        for (table, rowid) in dangling {
            let removed = match rowid {
                Some(rowid) => conn.execute(&format!("DELETE FROM main.\"{table}\" WHERE rowid = ?1"), [rowid])? as u64,
                None => {
                    report.notes.push(format!("{table}: a row refers to a lost row and has no rowid to remove it by"));
                    return Ok(());
                }
            };
            match report.tables.iter_mut().find(|t| t.0 == table) {
                Some(t) => {
                    t.1 = t.1.saturating_sub(removed);
                    t.2 = t.2.map(|lost| lost + removed);
                }
                None => report.tables.push((table, 0, Some(removed))),
            }
        }
    }
    report.notes.push("rows referring to lost rows remain after 16 passes".into());
    Ok(())
}

/// Copies one table from `old` to `main`; returns (rows copied, rows lost if countable).
fn copy_table(conn: &Connection, table: &str) -> rusqlite::Result<(u64, Option<u64>)> {
    let columns = |schema: &str| -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}', '{schema}')"))?;
        stmt.query_map([], |r| r.get(0))?.collect()
    };
    let old_columns = columns("old")?;
    if old_columns.is_empty() {
        return Ok((0, Some(0)));
    }
    let shared: Vec<String> = columns("main")?.into_iter().filter(|c| old_columns.contains(c)).collect();
    let list = shared.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
    let insert = format!("INSERT OR IGNORE INTO main.\"{table}\" ({list}) SELECT {list} FROM old.\"{table}\"");
    if table == "durable_commits" {
        conn.execute(&format!("DELETE FROM main.\"{table}\""), [])?;
    }
    let total: Option<u64> = conn
        .query_row(&format!("SELECT count(*) FROM old.\"{table}\""), [], |r| r.get::<_, i64>(0))
        .ok()
        .map(|n| n as u64);
    let has_rowid = conn.prepare(&format!("SELECT rowid FROM old.\"{table}\" LIMIT 0")).is_ok();
    if !has_rowid {
        // WITHOUT ROWID tables: all or nothing.
        let copied = conn.execute(&insert, []).unwrap_or(0) as u64;
        return Ok((copied, total.map(|t| t.saturating_sub(copied))));
    }
    let (low, high): (Option<i64>, Option<i64>) =
        conn.query_row(&format!("SELECT min(rowid), max(rowid) FROM old.\"{table}\""), [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let (Some(low), Some(high)) = (low, high) else { return Ok((0, total)) };
    let mut copied = 0u64;
    let mut start = low;
    while start <= high {
        let end = start.saturating_add(REPAIR_CHUNK - 1).min(high);
        match conn.execute(&format!("{insert} WHERE rowid BETWEEN ?1 AND ?2"), [start, end]) {
            Ok(n) => copied += n as u64,
            Err(_) => {
                for rowid in start..=end {
                    copied += conn.execute(&format!("{insert} WHERE rowid = ?1"), [rowid]).unwrap_or(0) as u64;
                }
            }
        }
        if end == high {
            break;
        }
        start = end + 1;
    }
    Ok((copied, total.map(|t| t.saturating_sub(copied))))
}
