//! The single writer thread of the embedded store, with group commit.
//!
//! Every write is a [`WriteJob`] sent over a bounded channel (senders wait when it is full:
//! that is the store's backpressure). The thread takes every job that is waiting, up to a row
//! limit, applies each inside its own savepoint of one transaction, commits once (one fsync for
//! the group) and only then answers the jobs. A job whose statements fail is rolled back alone;
//! a commit that fails is retried with backoff, so a full disk stops acknowledgements instead of
//! losing them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::{Result, StoreError};

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
    /// Failed commit attempts (each retried).
    pub commit_failures: AtomicU64,
    /// Jobs rolled back alone because their statements failed.
    pub job_failures: AtomicU64,
}

pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) jobs: mpsc::Receiver<Box<dyn WriteJob>>,
    pub(super) max_rows_per_commit: usize,
    pub(super) stats: Arc<WriterStats>,
    pub(super) closing: Arc<AtomicBool>,
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
        let mut backoff = Duration::from_millis(10);
        loop {
            match commit_group(&mut self.conn, group) {
                Ok(outcomes) => {
                    let failed = outcomes.iter().filter(|o| o.is_err()).count() as u64;
                    self.stats.commits.fetch_add(1, Ordering::Relaxed);
                    self.stats.jobs.fetch_add(group.len() as u64, Ordering::Relaxed);
                    self.stats.rows.fetch_add(rows as u64, Ordering::Relaxed);
                    self.stats.job_failures.fetch_add(failed, Ordering::Relaxed);
                    return outcomes;
                }
                Err(error) => {
                    self.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                    if self.closing.load(Ordering::Relaxed) {
                        tracing::error!(message = "Commit failed while closing; giving up.", %error);
                        return group.iter().map(|_| Err(StoreError::Backend(error.to_string()))).collect();
                    }
                    tracing::error!(message = "Commit failed; retrying.", %error, backoff_ms = backoff.as_millis() as u64);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// One transaction over the group, one savepoint per job. `Err` only if the transaction itself
/// could not begin or commit.
fn commit_group(conn: &mut Connection, group: &mut [Box<dyn WriteJob>]) -> rusqlite::Result<Vec<Result<()>>> {
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
    tx.commit()?;
    Ok(outcomes)
}
