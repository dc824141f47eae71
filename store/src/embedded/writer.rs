//! The single writer thread of the embedded store, with group commit.
//!
//! Every write is a [`WriteJob`] sent over a bounded channel (senders wait when it is full:
//! that is the store's backpressure). The thread takes every job that is waiting, up to a row
//! limit, applies them in one transaction, commits once (one fsync for the group), writes the
//! durable mark ([`super::durable`], fsynced off the path) and only then answers the jobs.
//!
//! A job whose statements fail is rolled back alone. Jobs rarely fail, so the group is first
//! applied without savepoints: a savepoint per job made SQLite copy every page a job touched
//! into a statement journal (spilled to a temporary file created and deleted at every commit),
//! 9 % of the server's CPU in a profile at 4,000 msg/s (issue 14). Only when a job fails is
//! that transaction rolled back and the group applied again with a savepoint per job (jobs may
//! be applied more than once; see [`WriteJob::apply`]).
//!
//! A commit that fails (disk full, I/O error) is retried briefly, then its jobs fail promptly
//! with [`StoreError::Unavailable`] and the store reports itself not writable until the
//! maintenance thread's probe commits with headroom: a full disk stops acknowledgements and
//! answers callers, without losing what was acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::durable::{self, MarkFile};
use crate::{Result, StoreError};

/// Commit attempts of a group while the store is writable (after the last, its jobs fail).
const ATTEMPTS_WHILE_WRITABLE: u32 = 3;

/// A unit of work for the writer. `apply` may run more than once if a commit is retried.
pub(super) trait WriteJob: Send {
    /// Rows this job writes, for the group's row limit.
    fn rows(&self) -> usize;
    /// Runs the job's statements (inside a savepoint).
    fn apply(&mut self, conn: &Connection) -> Result<()>;
    /// Answers the caller once the group's outcome is known.
    fn finish(self: Box<Self>, outcome: Result<()>);
}

/// A job made of a closure; its value is returned to the caller after commit.
pub(super) struct FnJob<T, F> {
    f: F,
    rows: usize,
    value: Option<T>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> FnJob<T, F>
where
    T: Send + 'static,
    F: FnMut(&Connection) -> Result<T> + Send + 'static,
{
    pub(super) fn boxed(rows: usize, f: F) -> (Box<dyn WriteJob>, oneshot::Receiver<Result<T>>) {
        let (reply, rx) = oneshot::channel();
        (Box::new(FnJob { f, rows, value: None, reply }), rx)
    }
}

impl<T, F> WriteJob for FnJob<T, F>
where
    T: Send + 'static,
    F: FnMut(&Connection) -> Result<T> + Send + 'static,
{
    fn rows(&self) -> usize {
        self.rows
    }

    fn apply(&mut self, conn: &Connection) -> Result<()> {
        self.value = Some((self.f)(conn)?);
        Ok(())
    }

    fn finish(self: Box<Self>, outcome: Result<()>) {
        let result = match (outcome, self.value) {
            (Ok(()), Some(v)) => Ok(v),
            (Ok(()), None) => Err(StoreError::Backend("write job finished without being applied".into())),
            (Err(e), _) => Err(e),
        };
        // The caller may have gone away (connection closed); nothing to do then.
        let _ = self.reply.send(result);
    }
}

/// Counters of the writer, read by metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Committed transactions.
    pub commits: AtomicU64,
    /// Jobs committed.
    pub jobs: AtomicU64,
    /// Rows committed.
    pub rows: AtomicU64,
    /// Failed commit attempts (disk full, I/O error).
    pub commit_failures: AtomicU64,
    /// Write jobs answered [`StoreError::Unavailable`] because their group could not commit.
    pub unavailable_jobs: AtomicU64,
    /// True since a commit failed (the store cannot write); cleared by the maintenance thread's
    /// probe, a commit with [`super::maintenance::PROBE_BYTES`] of headroom.
    pub unwritable: AtomicBool,
    /// Durable mark writes or syncs that failed (the commit itself was durable).
    pub mark_failures: Arc<AtomicU64>,
    /// Jobs rolled back alone because their statements failed.
    pub job_failures: AtomicU64,
}

pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) jobs: mpsc::Receiver<Box<dyn WriteJob>>,
    pub(super) max_rows_per_commit: usize,
    pub(super) stats: Arc<WriterStats>,
    pub(super) closing: Arc<AtomicBool>,
    pub(super) mark: MarkFile,
}

impl Writer {
    /// Runs until every sender is gone and the queue is drained.
    pub(super) fn run(mut self) {
        let mut group: Vec<Box<dyn WriteJob>> = Vec::new();
        while let Some(first) = self.jobs.blocking_recv() {
            let mut rows = first.rows();
            group.push(first);
            while rows < self.max_rows_per_commit {
                match self.jobs.try_recv() {
                    Ok(job) => {
                        rows += job.rows();
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            let outcomes = self.commit_with_retry(&mut group, rows);
            for (job, outcome) in group.drain(..).zip(outcomes) {
                job.finish(outcome);
            }
        }
        tracing::debug!(message = "Embedded store writer stopped.");
    }

    fn commit_with_retry(&mut self, group: &mut [Box<dyn WriteJob>], rows: usize) -> Vec<Result<()>> {
        let mut backoff = Duration::from_millis(20);
        let attempts = if self.stats.unwritable.load(Ordering::Relaxed) { 1 } else { ATTEMPTS_WHILE_WRITABLE };
        let mut last_error = String::new();
        for attempt in 1..=attempts {
            match commit_group(&mut self.conn, group, rows) {
                Ok((outcomes, held)) => {
                    if let Err(error) = self.mark.write(held) {
                        self.stats.mark_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(message = "Writing the durable mark failed; the commit itself is durable.", %error);
                    }
                    let failed = outcomes.iter().filter(|o| o.is_err()).count() as u64;
                    let unavailable = outcomes.iter().any(|o| matches!(o, Err(StoreError::Unavailable(_))));
                    self.stats.commits.fetch_add(1, Ordering::Relaxed);
                    self.stats.jobs.fetch_add(group.len() as u64, Ordering::Relaxed);
                    self.stats.rows.fetch_add(rows as u64, Ordering::Relaxed);
                    self.stats.job_failures.fetch_add(failed, Ordering::Relaxed);
                    // Only the maintenance thread's probe (which needs headroom) clears the
                    // flag: a small commit that fits on an almost full disk does not.
                    if unavailable {
                        self.stats.unwritable.store(true, Ordering::Relaxed);
                    }
                    return outcomes;
                }
                Err(error) => {
                    self.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                    last_error = error.to_string();
                    if attempt < attempts && !self.closing.load(Ordering::Relaxed) {
                        tracing::warn!(message = "Commit failed; retrying.", %error, backoff_ms = backoff.as_millis() as u64);
                        std::thread::sleep(backoff);
                        backoff *= 4;
                    }
                }
            }
        }
        if !self.stats.unwritable.swap(true, Ordering::Relaxed) {
            tracing::error!(
                message = "The embedded store cannot write; writes fail with storage_unavailable until a commit succeeds.",
                error = %last_error
            );
        }
        self.stats.unavailable_jobs.fetch_add(group.len() as u64, Ordering::Relaxed);
        group.iter().map(|_| Err(StoreError::Unavailable(last_error.clone()))).collect()
    }
}

/// One transaction over the group; a failing job is rolled back alone. `Err` only if the
/// transaction itself could not begin or commit.
/// Returns the jobs' outcomes and the durable totals the commit reached.
fn commit_group(
    conn: &mut Connection,
    group: &mut [Box<dyn WriteJob>],
    rows: usize,
) -> rusqlite::Result<(Vec<Result<()>>, durable::Durable)> {
    if let Some(held) = commit_all(conn, group, rows)? {
        return Ok((group.iter().map(|_| Ok(())).collect(), held));
    }
    commit_each(conn, group, rows)
}

/// The common case: every job applied in one transaction without savepoints. `None` (and the
/// transaction rolled back) as soon as one job fails.
fn commit_all(
    conn: &mut Connection,
    group: &mut [Box<dyn WriteJob>],
    rows: usize,
) -> rusqlite::Result<Option<durable::Durable>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for job in group.iter_mut() {
        if job.apply(&tx).is_err() {
            return Ok(None); // dropping `tx` rolls the whole group back
        }
    }
    let held = durable::bump(&tx, rows)?;
    tx.commit()?;
    Ok(Some(held))
}

/// After a failure: one savepoint per job, so that a failing job is rolled back alone.
fn commit_each(
    conn: &mut Connection,
    group: &mut [Box<dyn WriteJob>],
    rows: usize,
) -> rusqlite::Result<(Vec<Result<()>>, durable::Durable)> {
    let mut tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(group.len());
    for job in group.iter_mut() {
        let sp = tx.savepoint()?;
        match job.apply(&sp) {
            Ok(()) => {
                sp.commit()?;
                outcomes.push(Ok(()));
            }
            Err(e) => {
                drop(sp); // rolls back this job alone
                outcomes.push(Err(e));
            }
        }
    }
    let held = durable::bump(&tx, rows)?;
    tx.commit()?;
    Ok((outcomes, held))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job inserting `values` into `t`, then failing if `fail`.
    fn job(values: &'static [i64], fail: bool) -> (Box<dyn WriteJob>, oneshot::Receiver<Result<()>>) {
        FnJob::boxed(values.len(), move |c: &Connection| {
            for v in values {
                c.execute("INSERT INTO t (v) VALUES (?1)", [v])?;
            }
            if fail { Err(StoreError::InvalidInput("refused".into())) } else { Ok(()) }
        })
    }

    fn stored(conn: &Connection) -> Vec<i64> {
        let mut st = conn.prepare("SELECT v FROM t ORDER BY v").expect("prepare");
        st.query_map([], |r| r.get(0)).expect("query").collect::<rusqlite::Result<_>>().expect("rows")
    }

    #[test]
    fn a_job_failing_midway_is_rolled_back_alone_and_the_rest_commit_once() {
        let mut conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE t (v INTEGER NOT NULL)").expect("table");
        durable::ensure_table(&conn).expect("durable table");
        let (first, first_rx) = job(&[1, 2], false);
        // Its first insert succeeds before it fails: it must not stay.
        let (failing, failing_rx) = job(&[3], true);
        let (last, last_rx) = job(&[4], false);
        let mut group = vec![first, failing, last];
        let (outcomes, held) = commit_group(&mut conn, &mut group, 4).expect("commit");
        assert!(matches!(outcomes.as_slice(), [Ok(()), Err(StoreError::InvalidInput(_)), Ok(())]), "{outcomes:?}");
        assert_eq!(stored(&conn), vec![1, 2, 4]);
        // One commit counted, although the group was applied twice.
        assert_eq!(held, durable::Durable { commits: 1, rows: 4 });
        for (job, outcome) in group.into_iter().zip(outcomes) {
            job.finish(outcome);
        }
        assert!(first_rx.blocking_recv().expect("answered").is_ok());
        assert!(failing_rx.blocking_recv().expect("answered").is_err());
        assert!(last_rx.blocking_recv().expect("answered").is_ok());
    }

    #[test]
    fn a_group_without_failures_commits_every_job() {
        let mut conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE t (v INTEGER NOT NULL)").expect("table");
        durable::ensure_table(&conn).expect("durable table");
        let mut group: Vec<_> = [job(&[5], false), job(&[6, 7], false)].into_iter().map(|(j, _)| j).collect();
        let (outcomes, held) = commit_group(&mut conn, &mut group, 3).expect("commit");
        assert!(outcomes.iter().all(Result::is_ok));
        assert_eq!(stored(&conn), vec![5, 6, 7]);
        assert_eq!(held, durable::Durable { commits: 1, rows: 3 });
    }
}
