//! The embedded store's maintenance thread: keeps the WAL small and finds out when a store that
//! could not write can write again.
//!
//! Every [`TICK`]: while the store is not writable it sends the writer a probe job that writes
//! and deletes [`PROBE_BYTES`] in one commit (it succeeds once that much space is back, which
//! clears the flag: readiness does not flap on a disk that has room for tiny commits only) and tries
//! `wal_checkpoint(TRUNCATE)` (a WAL that outgrew the disk is folded back and cut to zero bytes
//! once the database file can take its pages); while writable, a WAL that has seen commits is
//! checkpointed and truncated once the store has been quiet (at most
//! [`QUIET_COMMITS_PER_TICK`] commits a second) for [`IDLE_CHECKPOINT_AFTER`]. Size is bounded by
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
/// Quiet time before the WAL is checkpointed and truncated (also the least time between two
/// such checkpoints).
pub const IDLE_CHECKPOINT_AFTER: Duration = Duration::from_secs(5);
/// Commits per tick that still count as quiet (the scheduler, the outbox and the alarm engine
/// write a little all the time).
const QUIET_COMMITS_PER_TICK: u64 = 5;
/// Bytes the probe writes (and deletes in the same commit): the headroom a store that could not
/// write must have again before it reports itself writable.
pub const PROBE_BYTES: i64 = 1 << 20;
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
        let mut quiet_since = Instant::now();
        let mut last_checkpoint = Instant::now();
        let mut dirty = false;
        loop {
            std::thread::sleep(TICK);
            if self.closing.load(Ordering::Relaxed) {
                return;
            }
            let Some(jobs) = self.jobs.upgrade() else { return };
            let commits = self.stats.commits.load(Ordering::Relaxed);
            let delta = commits.wrapping_sub(last_commits);
            last_commits = commits;
            dirty |= delta > 0;
            if delta > QUIET_COMMITS_PER_TICK {
                quiet_since = Instant::now();
            }
            if self.stats.unwritable.load(Ordering::Relaxed) {
                checkpoint(&conn);
                dirty = true;
                let (probe, answer) = FnJob::boxed(0, |c: &Connection| {
                    c.execute("INSERT INTO write_probe (bytes) VALUES (zeroblob(?1))", [PROBE_BYTES])?;
                    c.execute("DELETE FROM write_probe", [])?;
                    Ok(())
                });
                drop(jobs);
                let Some(jobs) = self.jobs.upgrade() else { return };
                if jobs.try_send(probe).is_err() {
                    continue; // a full queue: try again next tick
                }
                drop(jobs);
                if let Ok(Ok(())) = answer.blocking_recv() {
                    self.stats.unwritable.store(false, Ordering::Relaxed);
                    tracing::warn!(message = "The embedded store can write again.");
                }
            } else if dirty
                && quiet_since.elapsed() >= IDLE_CHECKPOINT_AFTER
                && last_checkpoint.elapsed() >= IDLE_CHECKPOINT_AFTER
            {
                last_checkpoint = Instant::now();
                dirty = !checkpoint(&conn);
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
