//! Durable local spool in front of the event backend (SPEC STO-3): acknowledged batches survive
//! a crash of this process and any outage of ClickHouse.
//!
//! Every record is appended to a segment file and fsynced ([`Spool::append`], group commit)
//! before its id is returned; a drainer reads records in order ([`Spool::read_after`]), delivers
//! them, and acknowledges them ([`Spool::ack`]), which persists the ack cursor and deletes fully
//! acknowledged segments. Un-acked records are bounded by [`SpoolConfig::max_bytes`]: when the
//! spool is full, `append` waits (backpressure) instead of dropping anything.
//!
//! On disk, under [`SpoolConfig::dir`]:
//! - `spool-<first id, 20 digits>.seg`: append-only segments of records ([`format`]); a new
//!   segment starts when the current one would exceed [`SpoolConfig::segment_bytes`].
//! - `cursor`: the highest acknowledged id (u64 LE and its CRC-32), replaced atomically.
//! - `lock`: locked while a spool has the directory open.
//!
//! On open every segment is scanned: a torn tail (crash mid-write) is cut off, a corrupt record
//! anywhere is counted, logged and skipped by resynchronising on the next magic, and every valid
//! record around it survives.
//!
//! Disk use is at most `max_bytes` of un-acked records, plus the acked part of the oldest segment
//! (less than one segment) and corrupt bytes skipped on open.
//!
//! *Architecture invariant*: [`format`] does no I/O; `files` and `writer` are the only code that
//! touches the files.

pub mod format;

mod files;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use files::Segment;
pub use files::{SpoolCheck, check};
use format::HEADER_LEN;
use writer::{Active, AppendJob, SpoolWriter};

/// Appends waiting for the writer thread, at most (each has already reserved its bytes).
const WRITER_QUEUE: usize = 1024;

/// Settings of a [`Spool`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Directory of the segment files and the cursor; created if missing.
    pub dir: PathBuf,
    /// Bound on the bytes (headers included) of un-acked records: `append` waits beyond it.
    /// At least [`format::HEADER_LEN`]; default 1 GiB.
    pub max_bytes: u64,
    /// Size at which a new segment file is started; default 64 MiB.
    pub segment_bytes: u64,
    /// Whether appends and acks are fsynced (turn off only for tests and benchmarks).
    pub fsync: bool,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig { dir: PathBuf::from("spool"), max_bytes: 1 << 30, segment_bytes: 64 << 20, fsync: true }
    }
}

/// Errors of the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file of the spool could not be read or written (or the directory is in use by another
    /// spool: [`io::ErrorKind::WouldBlock`]).
    #[error("spool I/O: {0}")]
    Io(#[from] io::Error),
    /// A single record is larger than the spool can ever hold (`max_bytes` less the header, or
    /// the format's u32 length).
    #[error("record of {len} bytes is larger than the spool's maximum of {max}")]
    TooLarge {
        /// The record's length.
        len: usize,
        /// The largest record this spool accepts.
        max: usize,
    },
    /// The spool was closed.
    #[error("the spool is closed")]
    Closed,
}

/// Id of a spooled record: increases with every append, across restarts. Ids of acked records
/// are never reused; ids can have gaps (a failed write, a record lost to corruption).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId(pub u64);

/// Counters and gauges of a spool, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Records appended and not acked (across restarts).
    pub pending_records: u64,
    /// Their bytes on disk, headers included.
    pub pending_bytes: u64,
    /// Records appended since open.
    pub appended_records: u64,
    /// Records acked since open.
    pub acked_records: u64,
    /// Corrupt records skipped since open (one per corrupt region, found on open or on read).
    pub corrupt_records: u64,
    /// Torn or corrupt segment tails cut off on open.
    pub torn_tails: u64,
    /// Segment files.
    pub segments: u64,
}

/// A durable, bounded, ordered queue of byte records on local disk.
///
/// Cheap to clone: clones share the spool. The files are closed (and the directory unlocked)
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("dir", &self.inner.shared.dir).field("stats", &self.stats()).finish()
    }
}

/// The handle side: dropping it stops the writer thread.
#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    jobs: Option<mpsc::Sender<AppendJob>>,
    writer: Option<JoinHandle<()>>,
    /// The largest payload accepted.
    max_record: usize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has answered every queued append.
        self.jobs = None;
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!(message = "The spool writer thread panicked.");
        }
    }
}

/// What the handles and the writer thread share.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    fsync: bool,
    state: Mutex<State>,
    /// The highest durable id and whether the spool is closed, for waiting readers.
    progress: watch::Sender<Progress>,
    /// Free bytes of `max_bytes`: appends take their record's bytes, acks give them back.
    space: Arc<Semaphore>,
    /// Holds the directory lock.
    _lock: File,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state is consistent at every unlock; a panic elsewhere does not spoil it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Clone, Copy, Debug)]
struct Progress {
    durable_id: u64,
    closed: bool,
}

/// Where the last `read_after` stopped, so the next one continues without searching.
#[derive(Clone, Copy, Debug)]
struct ReadHint {
    /// Every record before the position has a lower id.
    next_id: u64,
    segment: u64,
    offset: u64,
}

/// The spool's bookkeeping.
#[derive(Debug)]
struct State {
    /// Segments, oldest first; only the first may hold acked records. Never empty once a record
    /// was written.
    segments: VecDeque<Segment>,
    /// Every id up to this one is acked (0: none).
    cursor: u64,
    /// Offset in the first segment of the first un-acked record (its length if there is none).
    head_offset: u64,
    /// Id of the first un-acked record.
    head_id: Option<u64>,
    /// The highest id durably written or acked; if above `cursor`, that record exists.
    durable_id: u64,
    pending_records: u64,
    pending_bytes: u64,
    /// Pending bytes above `max_bytes` found on open (the bound was lowered): acks pay it back
    /// before giving space to appenders.
    debt: u64,
    hint: Option<ReadHint>,
    closed: bool,
    appended_records: u64,
    acked_records: u64,
    corrupt_records: u64,
    torn_tails: u64,
}

impl State {
    /// Moves the head past corrupt regions and out of fully acked segments (keeping the newest
    /// segment). Returns the paths of segments to delete.
    fn normalize_head(&mut self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        while let Some(front) = self.segments.front() {
            self.head_offset = files::skip_holes(&front.holes, self.head_offset);
            if self.head_offset < front.len || self.segments.len() == 1 {
                break;
            }
            if let Some(done) = self.segments.pop_front() {
                removed.push(done.path);
            }
            self.head_offset = 0;
        }
        removed
    }

    fn position_of(&self, segment: u64) -> Option<usize> {
        self.segments.iter().position(|s| s.first_id == segment)
    }

    /// Where to start reading for the first record with id >= `target` (> `cursor`).
    fn read_plan(&self, target: u64) -> ReadPlan {
        let mut start = (0, self.head_offset);
        if self.head_id.is_some_and(|head| head < target) {
            // Any record before the hint, or in a segment before the one named <= target, has a
            // lower id than target: start from the latest such position.
            if let Some(hint) = self.hint.filter(|h| h.next_id <= target)
                && let Some(index) = self.position_of(hint.segment)
            {
                start = start.max((index, hint.offset));
            }
            if let Some(index) = self.segments.iter().rposition(|s| s.first_id <= target) {
                start = start.max((index, 0));
            }
        }
        ReadPlan {
            segments: self.segments.iter().skip(start.0).map(SegmentView::of).collect(),
            offset: start.1,
            target,
        }
    }
}

/// A reader's copy of a segment's durable extent.
#[derive(Debug)]
struct SegmentView {
    first_id: u64,
    file: Arc<File>,
    len: u64,
    holes: Arc<[std::ops::Range<u64>]>,
}

impl SegmentView {
    fn of(segment: &Segment) -> SegmentView {
        SegmentView {
            first_id: segment.first_id,
            file: segment.file.clone(),
            len: segment.len,
            holes: segment.holes.clone(),
        }
    }
}

/// A read to do without holding the state lock.
#[derive(Debug)]
struct ReadPlan {
    /// From the segment to start in to the newest.
    segments: Vec<SegmentView>,
    /// Start offset in the first of them.
    offset: u64,
    /// Records with lower ids are skipped.
    target: u64,
}

/// What a read found.
#[derive(Debug)]
struct ReadOutcome {
    records: Vec<(RecordId, Vec<u8>)>,
    /// Where to continue: all records before have an id below `hint.next_id`.
    hint: Option<ReadHint>,
    corrupt: u64,
}

impl ReadPlan {
    fn read(self, max_records: usize, max_bytes: usize) -> io::Result<ReadOutcome> {
        let max_records = max_records.max(1);
        let mut records = Vec::new();
        let mut bytes = 0usize;
        let mut corrupt = 0;
        let mut last_seen = None;
        let mut index = 0;
        let mut offset = self.offset;
        while let Some(segment) = self.segments.get(index) {
            offset = files::skip_holes(&segment.holes, offset);
            if offset >= segment.len {
                if index + 1 == self.segments.len() {
                    break;
                }
                index += 1;
                offset = 0;
                continue;
            }
            let header = files::read_header(&segment.file, segment.len, offset)?;
            if header.id < self.target {
                offset += header.record_len();
                continue;
            }
            let len = header.len as usize;
            if records.len() >= max_records || (!records.is_empty() && bytes.saturating_add(len) > max_bytes) {
                break;
            }
            // The length was bounded by the segment's durable bytes in read_header.
            let mut payload = vec![0; len];
            files::read_exact_at(&segment.file, &mut payload, offset + HEADER_LEN as u64)?;
            last_seen = Some(header.id);
            offset += header.record_len();
            if !header.matches(&payload) {
                corrupt += 1;
                tracing::error!(
                    message = "Skipping a spool record whose checksum no longer matches.",
                    record = header.id,
                    segment = segment.first_id,
                    offset = offset - header.record_len(),
                );
                continue;
            }
            bytes += len;
            records.push((RecordId(header.id), payload));
        }
        let hint = match (last_seen, self.segments.get(index)) {
            (Some(id), Some(segment)) => {
                Some(ReadHint { next_id: id.saturating_add(1), segment: segment.first_id, offset })
            }
            _ => None,
        };
        Ok(ReadOutcome { records, hint, corrupt })
    }
}

/// Deletes the files of segments that are no longer needed (readers keep their open handles).
fn remove_segments(paths: Vec<PathBuf>) {
    for path in paths {
        if let Err(error) = std::fs::remove_file(&path)
            && error.kind() != io::ErrorKind::NotFound
        {
            // Harmless: on the next open its records are all acked and it is deleted then.
            tracing::warn!(message = "Could not delete an acked spool segment.", segment = %path.display(), %error);
        }
    }
}

impl Spool {
    /// Opens the spool in `config.dir` (created if missing): locks the directory, recovers every
    /// segment (cutting torn tails, skipping corrupt records) and starts the writer thread.
    ///
    /// Blocks while it scans the segments: call it before serving, or from a blocking task.
    pub fn open(config: SpoolConfig) -> Result<Spool, SpoolError> {
        if config.max_bytes < HEADER_LEN as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("spool max_bytes must be at least {HEADER_LEN}"),
            )
            .into());
        }
        if !config.dir.is_dir() {
            std::fs::create_dir_all(&config.dir)?;
            if config.fsync
                && let Some(parent) = config.dir.parent().filter(|p| !p.as_os_str().is_empty())
            {
                files::sync_dir(parent)?;
            }
        }
        let lock = files::lock_dir(&config.dir)?;
        let rec = files::recover(&config.dir, config.fsync)?;

        let max_bytes = usize::try_from(config.max_bytes).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
        let max_record = max_bytes.min(u32::MAX as usize) - HEADER_LEN;
        let pending = usize::try_from(rec.pending_bytes).unwrap_or(usize::MAX);
        let space = Arc::new(Semaphore::new(max_bytes.saturating_sub(pending)));
        let debt = rec.pending_bytes.saturating_sub(max_bytes as u64);
        let durable_id = rec.last_id.max(rec.cursor);
        // Never hand out an id at or below one that was acked, written, or named a segment.
        let next_id = durable_id.max(rec.max_segment_name.saturating_sub(1)) + 1;
        let active = rec.segments.back().map(Active::resume).transpose()?;

        tracing::info!(
            message = "Spool opened.",
            dir = %config.dir.display(),
            segments = rec.segments.len(),
            pending_records = rec.pending_records,
            pending_bytes = rec.pending_bytes,
            corrupt_records = rec.corrupt,
            torn_tails = rec.torn,
        );
        let state = State {
            segments: rec.segments,
            cursor: rec.cursor,
            head_offset: rec.head_offset,
            head_id: rec.head_id,
            durable_id,
            pending_records: rec.pending_records,
            pending_bytes: rec.pending_bytes,
            debt,
            hint: None,
            closed: false,
            appended_records: 0,
            acked_records: 0,
            corrupt_records: rec.corrupt,
            torn_tails: rec.torn,
        };
        let shared = Arc::new(Shared {
            dir: config.dir,
            fsync: config.fsync,
            state: Mutex::new(state),
            progress: watch::Sender::new(Progress { durable_id, closed: false }),
            space,
            _lock: lock,
        });
        let (jobs, queue) = mpsc::channel(WRITER_QUEUE);
        let writer = SpoolWriter::new(shared.clone(), config.segment_bytes, next_id, active);
        let writer = std::thread::Builder::new().name("spool-writer".into()).spawn(move || writer.run(queue))?;
        Ok(Spool { inner: Arc::new(Inner { shared, jobs: Some(jobs), writer: Some(writer), max_record }) })
    }

    /// Appends a record; returns its id once it is durable (fsynced, shared with the appends
    /// waiting at the same time). Waits while the un-acked bytes plus this record's would exceed
    /// `max_bytes`; appends are served in order.
    ///
    /// If the future is dropped after the record was handed to the writer, the record is still
    /// written (and delivered): the spool is at-least-once.
    pub async fn append(&self, record: Vec<u8>) -> Result<RecordId, SpoolError> {
        let max = self.inner.max_record;
        if record.len() > max {
            return Err(SpoolError::TooLarge { len: record.len(), max });
        }
        let bytes =
            u32::try_from(HEADER_LEN + record.len()).map_err(|_| SpoolError::TooLarge { len: record.len(), max })?;
        let permit = self.inner.shared.space.clone().acquire_many_owned(bytes).await.map_err(|_| SpoolError::Closed)?;
        let jobs = self.inner.jobs.as_ref().ok_or(SpoolError::Closed)?;
        let (reply, answer) = oneshot::channel();
        jobs.send(AppendJob { payload: record, permit, reply }).await.map_err(|_| SpoolError::Closed)?;
        answer.await.map_err(|_| SpoolError::Closed)?
    }

    /// Records after `after` (None: from the oldest un-acked one), in order, up to `max_records`
    /// and `max_bytes` of payload, but at least one; waits until there is one. Acked records are
    /// never returned.
    pub async fn read_after(
        &self,
        after: Option<RecordId>,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<(RecordId, Vec<u8>)>, SpoolError> {
        let shared = &self.inner.shared;
        let mut progress = shared.progress.subscribe();
        let mut after = after.map_or(0, |id| id.0);
        loop {
            let (plan, target) = {
                let st = shared.state();
                if st.closed {
                    return Err(SpoolError::Closed);
                }
                let target = after.max(st.cursor).saturating_add(1);
                ((st.durable_id >= target).then(|| st.read_plan(target)), target)
            };
            let Some(plan) = plan else {
                progress.wait_for(|p| p.closed || p.durable_id >= target).await.map_err(|_| SpoolError::Closed)?;
                continue;
            };
            let outcome = tokio::task::spawn_blocking(move || plan.read(max_records, max_bytes))
                .await
                .map_err(|e| io::Error::other(format!("spool read task failed: {e}")))??;
            let mut st = shared.state();
            st.corrupt_records += outcome.corrupt;
            if outcome.hint.is_some() {
                st.hint = outcome.hint;
            }
            if !outcome.records.is_empty() {
                return Ok(outcome.records);
            }
            // Everything up to the durable end was skipped as corrupt: wait for newer records.
            after = outcome.hint.map_or(target, |h| h.next_id - 1).max(target);
        }
    }

    /// Acknowledges every record up to `upto` (ids above the last durable one are ignored):
    /// persists the cursor (fsynced), deletes segments whose records are all acked and gives
    /// their space back to waiting appenders. Acking an already acked id does nothing.
    ///
    /// Blocks for an fsync; works after [`close`](Spool::close) too.
    pub fn ack(&self, upto: RecordId) -> Result<(), SpoolError> {
        let shared = &self.inner.shared;
        let mut st = shared.state();
        let upto = upto.0.min(st.durable_id);
        if upto <= st.cursor {
            return Ok(());
        }
        // Walk the headers from the head to the first record above `upto`.
        let (mut index, mut offset) = (0, st.head_offset);
        let (mut records, mut bytes) = (0u64, 0u64);
        let mut head_id = None;
        while let Some(segment) = st.segments.get(index) {
            offset = files::skip_holes(&segment.holes, offset);
            if offset >= segment.len {
                if index + 1 == st.segments.len() {
                    break;
                }
                index += 1;
                offset = 0;
                continue;
            }
            let header = files::read_header(&segment.file, segment.len, offset)?;
            if header.id > upto {
                head_id = Some(header.id);
                break;
            }
            records += 1;
            bytes += header.record_len();
            offset += header.record_len();
        }
        files::write_cursor(&shared.dir, upto, shared.fsync)?;

        st.cursor = upto;
        let mut removed: Vec<PathBuf> = st.segments.drain(..index).map(|s| s.path).collect();
        st.head_offset = offset;
        st.head_id = head_id;
        removed.extend(st.normalize_head());
        st.pending_records = st.pending_records.saturating_sub(records);
        st.pending_bytes = st.pending_bytes.saturating_sub(bytes);
        st.acked_records += records;
        let paid = bytes.min(st.debt);
        st.debt -= paid;
        drop(st);
        shared.space.add_permits(usize::try_from(bytes - paid).unwrap_or(usize::MAX));
        remove_segments(removed);
        Ok(())
    }

    /// Id of the oldest un-acked record, if any.
    pub fn first_unacked(&self) -> Option<RecordId> {
        self.inner.shared.state().head_id.map(RecordId)
    }

    /// Current counters.
    pub fn stats(&self) -> SpoolStats {
        let st = self.inner.shared.state();
        SpoolStats {
            pending_records: st.pending_records,
            pending_bytes: st.pending_bytes,
            appended_records: st.appended_records,
            acked_records: st.acked_records,
            corrupt_records: st.corrupt_records,
            torn_tails: st.torn_tails,
            segments: st.segments.len() as u64,
        }
    }

    /// Closes the spool: waiting and later appends and reads fail with [`SpoolError::Closed`].
    /// Appends already handed to the writer still complete; acks still work.
    pub fn close(&self) {
        let shared = &self.inner.shared;
        shared.state().closed = true;
        shared.space.close();
        shared.progress.send_modify(|p| p.closed = true);
    }
}
