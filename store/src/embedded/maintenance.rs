//! The embedded store's maintenance thread: keeps the WAL small and finds out when a store that
//! could not write can write again.
//!
//! Every [`TICK`]: while the store is not writable it sends the writer an empty probe job (its
//! group commit succeeds as soon as space returns, which clears the flag) and tries
//! `wal_checkpoint(TRUNCATE)` (a WAL that outgrew the disk is folded back and cut to zero bytes
//! once the database file can take its pages); while writable, a WAL that has seen commits and
//! then [`IDLE_CHECKPOINT_AFTER`] without any is checkpointed and truncated. Size is bounded by
//! `wal_autocheckpoint` and `journal_size_limit` on the writer's connection.
//!
//! The checkpoint connection waits at most [`CHECKPOINT_BUSY`] for locks, so a checkpoint never
//! holds the writer back for longer.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::mpsc;

use super::writer::{FnJob, WriteJob, WriterStats};

/// How often the thread looks.
const TICK: Duration = Duration::from_secs(1);
/// Quiet time after the last commit before the WAL is checkpointed and truncated.
pub const IDLE_CHECKPOINT_AFTER: Duration = Duration::from_secs(5);
/// The longest a checkpoint waits for the writer or readers.
const CHECKPOINT_BUSY: Duration = Duration::from_millis(200);

pub(super) struct Maintenance {
    pub(super) path: PathBuf,
    pub(super) jobs: mpsc::WeakSender<Box<dyn WriteJob>>,
    pub(super) stats: Arc<WriterStats>,
    pub(super) closing: Arc<AtomicBool>,
}

impl Maintenance {
    /// Runs until the store closes (every sender gone or `closing` set).
    pub(super) fn run(self) {
        let conn = match Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_WRITE) {
            Ok(c) => c,
            Err(error) => {
                tracing::error!(message = "The store maintenance thread cannot open the database; no idle checkpoints.", %error);
                return;
            }
        };
        if let Err(error) = conn.busy_timeout(CHECKPOINT_BUSY) {
            tracing::warn!(message = "Setting the checkpoint busy timeout failed.", %error);
        }
        let mut last_commits = self.stats.commits.load(Ordering::Relaxed);
        let mut last_change = Instant::now();
        let mut dirty = false;
        loop {
            std::thread::sleep(TICK);
            if self.closing.load(Ordering::Relaxed) {
                return;
            }
            let Some(jobs) = self.jobs.upgrade() else { return };
            let commits = self.stats.commits.load(Ordering::Relaxed);
            if commits != last_commits {
                last_commits = commits;
                last_change = Instant::now();
                dirty = true;
            }
            if self.stats.unwritable.load(Ordering::Relaxed) {
                checkpoint(&conn);
                let (probe, _answer) = FnJob::boxed(0, |_: &Connection| Ok(()));
                // A full queue already holds jobs that probe the store.
                let _ = jobs.try_send(probe);
                dirty = true;
            } else if dirty && last_change.elapsed() >= IDLE_CHECKPOINT_AFTER && checkpoint(&conn) {
                dirty = false;
            }
        }
    }
}

/// `PRAGMA wal_checkpoint(TRUNCATE)`; true if it completed (not busy).
fn checkpoint(conn: &Connection) -> bool {
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)) {
        Ok(busy) => busy == 0,
        Err(error) => {
            tracing::debug!(message = "Checkpoint failed; retried later.", %error);
            false
        }
    }
}
