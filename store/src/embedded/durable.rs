//! The durable mark: an fsynced record, beside the database, of the last group commit the store
//! acknowledged, so that a start which finds less in the database (a lost or truncated WAL, a
//! restored older file) refuses instead of serving.
//!
//! Every group commit bumps a counter row in the database (`durable_commits`: commits and rows
//! so far) inside its transaction; once the commit is durable the writer overwrites the mark file
//! (`fleetpulse.db.mark`) with the same numbers before it answers anyone. At open the database
//! must hold at least the mark's commit count.
//!
//! The writer's commits fsync once (the WAL): the mark reaches the file (the page cache) before
//! anyone is answered, and a thread of its own fsyncs it right after, coalescing marks written
//! meanwhile ([`MarkFile::background`], issue 20: the second fsync was on every commit's path),
//! at most once per [`MARK_SYNC_INTERVAL`] (issue 14: an fsync per commit cost ≈ 4 % of the
//! server's CPU per message).
//! A process crash (kill -9, abort) loses nothing of the mark; a power loss can leave it behind
//! the database by the commits of the last mark fsync, never ahead of it (it is written after
//! the commit is durable), and a mark behind the database is accepted at open. What that costs:
//! a write-ahead log lost *together with* a power loss goes unnoticed for those last commits (the
//! commits themselves are fsynced in the WAL, so a power loss alone loses nothing).
//! `FLEETPULSE_MARK_SYNC=inline` puts the fsync back on the commit's path, only to measure it.
//!
//! | bytes  | field                                         |
//! |--------|-----------------------------------------------|
//! | 0..8   | magic `FPMARK01`                              |
//! | 8..16  | commits (u64 LE)                              |
//! | 16..24 | rows (u64 LE)                                 |
//! | 24..32 | FNV-1a 64 of bytes 0..24 (u64 LE)             |
//!
//! A mark whose checksum fails can only come from a crash in the middle of writing it (after
//! the commit it describes was durable), so it is logged and rewritten, not refused.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::{Result, StoreError};

/// File name of the mark, beside the database.
pub const MARK_FILE: &str = "fleetpulse.db.mark";

/// Shortest time from one fsync of the mark to the next: a power loss leaves the mark behind
/// by at most the commits of this long (plus one fsync), which open accepts.
pub const MARK_SYNC_INTERVAL: Duration = Duration::from_millis(10);

const MAGIC: &[u8; 8] = b"FPMARK01";
const LEN: usize = 32;

/// Commits and rows the store has made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Durable {
    /// Group commits so far.
    pub commits: u64,
    /// Rows committed so far (as the write jobs counted them).
    pub rows: u64,
}

/// Creates the counter row if the database has none, and the maintenance thread's probe table
/// (outside the migrations: both belong to the writer, not to a domain).
pub(super) fn ensure_table(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS durable_commits (
             id      INTEGER PRIMARY KEY CHECK (id = 1),
             commits INTEGER NOT NULL,
             rows    INTEGER NOT NULL
         );
         INSERT OR IGNORE INTO durable_commits (id, commits, rows) VALUES (1, 0, 0);
         CREATE TABLE IF NOT EXISTS write_probe (bytes BLOB NOT NULL);",
    )?;
    Ok(())
}

/// What the database holds.
pub(super) fn in_database(conn: &Connection) -> Result<Durable> {
    let (commits, rows): (i64, i64) =
        conn.query_row("SELECT commits, rows FROM durable_commits WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(Durable { commits: commits.max(0) as u64, rows: rows.max(0) as u64 })
}

/// Bumps the counter inside the group's transaction; returns the new totals.
pub(super) fn bump(conn: &Connection, rows: usize) -> rusqlite::Result<Durable> {
    let rows = i64::try_from(rows).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "UPDATE durable_commits SET commits = commits + 1, rows = rows + ?1 WHERE id = 1 RETURNING commits, rows",
    )?
    .query_row([rows], |r| {
        let (c, n): (i64, i64) = (r.get(0)?, r.get(1)?);
        Ok(Durable { commits: c.max(0) as u64, rows: n.max(0) as u64 })
    })
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn encode(d: Durable) -> [u8; LEN] {
    let mut buf = [0u8; LEN];
    buf[0..8].copy_from_slice(MAGIC);
    buf[8..16].copy_from_slice(&d.commits.to_le_bytes());
    buf[16..24].copy_from_slice(&d.rows.to_le_bytes());
    let sum = checksum(&buf[0..24]);
    buf[24..32].copy_from_slice(&sum.to_le_bytes());
    buf
}

fn decode(buf: &[u8]) -> Option<Durable> {
    if buf.len() != LEN || &buf[0..8] != MAGIC {
        return None;
    }
    let word = |r: std::ops::Range<usize>| u64::from_le_bytes(buf[r].try_into().expect("8 bytes"));
    (word(24..32) == checksum(&buf[0..24])).then(|| Durable { commits: word(8..16), rows: word(16..24) })
}

/// Reads the mark under `data_dir`: `Ok(None)` if there is none, `Err` with the reason if it
/// cannot be decoded.
pub fn read_mark(data_dir: &Path) -> std::result::Result<Option<Durable>, String> {
    match std::fs::read(data_dir.join(MARK_FILE)) {
        Ok(bytes) => decode(&bytes).map(Some).ok_or_else(|| "the durable mark file is torn or damaged".into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading the durable mark: {e}")),
    }
}

/// The open mark file the writer overwrites after each commit.
#[derive(Debug)]
pub(super) struct MarkFile {
    file: File,
    fsync: bool,
    /// Asks the mark's sync thread for one more fsync (capacity 1: a request still waiting covers
    /// every write made before the thread takes it). `None`: [`MarkFile::write`] syncs inline.
    syncer: Option<SyncSender<()>>,
}

impl MarkFile {
    pub(super) fn open(data_dir: &Path, fsync: bool) -> Result<MarkFile> {
        let path = data_dir.join(MARK_FILE);
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        Ok(MarkFile { file, fsync, syncer: None })
    }

    /// From now on [`MarkFile::write`] leaves the fsync to a thread of its own (see the module's
    /// documentation), which counts its failures in `failures` and syncs once more when the
    /// mark file is dropped. With fsync off, or `FLEETPULSE_MARK_SYNC=inline`, nothing changes.
    pub(super) fn background(mut self, failures: Arc<AtomicU64>) -> Result<MarkFile> {
        if !self.fsync || inline_requested() {
            return Ok(self);
        }
        let file = self.file.try_clone()?;
        let (tx, rx) = sync_channel::<()>(1);
        std::thread::Builder::new().name("store-mark-sync".into()).spawn(move || {
            let sync = || {
                if let Err(error) = file.sync_data() {
                    failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(message = "Syncing the durable mark failed; the commits themselves are durable.", %error);
                }
            };
            while rx.recv().is_ok() {
                let started = Instant::now();
                sync();
                // A mark written meanwhile waits in the channel for the next round.
                std::thread::sleep(MARK_SYNC_INTERVAL.saturating_sub(started.elapsed()));
            }
            sync();
        })?;
        self.syncer = Some(tx);
        Ok(self)
    }

    /// Overwrites the mark in place (32 bytes: no allocation on a full disk) and syncs it, or
    /// has it synced right after ([`MarkFile::background`]).
    pub(super) fn write(&self, d: Durable) -> std::io::Result<()> {
        self.file.write_all_at(&encode(d), 0)?;
        match &self.syncer {
            // Full: a request is still waiting, and its fsync comes after this write.
            Some(syncer) => match syncer.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) => Ok(()),
                Err(TrySendError::Disconnected(())) => self.file.sync_data(),
            },
            None if self.fsync => self.file.sync_data(),
            None => Ok(()),
        }
    }
}

/// `FLEETPULSE_MARK_SYNC=inline` (read once): the mark is fsynced on the commit's path, as before
/// issue 20's third round, only to measure the difference.
fn inline_requested() -> bool {
    static INLINE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *INLINE.get_or_init(|| std::env::var("FLEETPULSE_MARK_SYNC").is_ok_and(|v| v == "inline"))
}

/// Compares the database with the mark at open. With `accept_loss` a database behind its mark
/// is accepted (logged) and the mark lowered to it.
pub(super) fn verify(conn: &Connection, data_dir: &Path, accept_loss: bool) -> Result<Durable> {
    let db = in_database(conn)?;
    match read_mark(data_dir) {
        Ok(None) => {}
        Ok(Some(mark)) if mark.commits <= db.commits => {}
        Ok(Some(mark)) => {
            let report = loss_report(data_dir, mark, db);
            if !accept_loss {
                return Err(StoreError::DataLost(report));
            }
            tracing::error!(message = "Starting with acknowledged data lost (--accept-loss).", report = %report);
        }
        Err(reason) => {
            tracing::warn!(message = "The durable mark is unreadable; it is rewritten from the database.", %reason);
        }
    }
    Ok(db)
}

/// The message of a database behind its mark.
pub fn loss_report(data_dir: &Path, mark: Durable, db: Durable) -> String {
    let db_path: PathBuf = data_dir.join(super::DB_FILE);
    format!(
        "acknowledged data was lost: the store acknowledged {} group commits ({} rows) but {} holds only {} \
         ({} rows): {} commits and about {} rows are missing, most likely because its write-ahead log \
         ({}-wal) was truncated, damaged or deleted, or an older copy of the file was restored. \
         Restore the data directory from a backup taken after the loss, or accept the loss: \
         `fleetpulse repair --data-dir {}` (salvages what is readable and keeps the damaged files aside) \
         or `fleetpulse serve --accept-loss`",
        mark.commits,
        mark.rows,
        db_path.display(),
        db.commits,
        db.rows,
        mark.commits - db.commits,
        mark.rows.saturating_sub(db.rows),
        db_path.display(),
        data_dir.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_and_torn_marks_are_refused() {
        let d = Durable { commits: 7, rows: 1234 };
        assert_eq!(decode(&encode(d)), Some(d));
        let mut torn = encode(d);
        torn[12] ^= 1;
        assert_eq!(decode(&torn), None);
        assert_eq!(decode(&encode(d)[..20]), None);
    }

    #[test]
    fn a_database_behind_its_mark_is_refused_unless_the_loss_is_accepted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = Connection::open(dir.path().join(super::super::DB_FILE)).expect("open");
        ensure_table(&conn).expect("table");
        let mark = MarkFile::open(dir.path(), false).expect("mark");
        let tx = conn.unchecked_transaction().expect("tx");
        let d = bump(&tx, 5).expect("bump");
        tx.commit().expect("commit");
        mark.write(d).expect("write");
        assert_eq!(verify(&conn, dir.path(), false).expect("in step"), d);
        mark.write(Durable { commits: 9, rows: 50 }).expect("write ahead");
        match verify(&conn, dir.path(), false) {
            Err(StoreError::DataLost(m)) => assert!(m.contains("8 commits and about 45 rows are missing"), "{m}"),
            other => panic!("expected DataLost, got {other:?}"),
        }
        assert_eq!(verify(&conn, dir.path(), true).expect("accepted"), d);
    }
}
