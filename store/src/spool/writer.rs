//! The spool's single writer thread, with group commit.
//!
//! Appenders send [`AppendJob`]s over a bounded channel (after reserving their bytes of the
//! spool's space). The thread takes every job that is waiting (up to a batch limit), gives them
//! consecutive ids, writes them with one `write` per segment touched, fsyncs once, publishes the
//! new records to the shared state and only then answers the appenders: an id is only ever handed
//! out for a durable record.
//!
//! A failed write or fsync fails the whole batch: its records are cut off again where possible,
//! the segment is abandoned (the next batch starts a new one, so nothing is written after bytes of
//! unknown state) and the ids are not reused.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::files::{self, Segment};
use super::format;
use super::{RecordId, Shared, SpoolError};

/// Most bytes written in one group commit (a single larger record is written alone).
const MAX_BATCH_BYTES: u64 = 8 << 20;
/// Most records written in one group commit.
const MAX_BATCH_RECORDS: usize = 4096;

/// One record to append, with the space reserved for it and where to answer.
#[derive(Debug)]
pub(super) struct AppendJob {
    /// The record's payload.
    pub payload: Vec<u8>,
    /// The record's bytes of the spool's space; forgotten once the record is durable (an ack
    /// gives them back), released if it fails.
    pub permit: OwnedSemaphorePermit,
    /// Where the record's id (or the failure) goes.
    pub reply: oneshot::Sender<Result<RecordId, SpoolError>>,
}

/// The segment being appended to.
#[derive(Debug)]
pub(super) struct Active {
    first_id: u64,
    path: PathBuf,
    file: File,
    read: Arc<File>,
    /// Bytes written or about to be written.
    len: u64,
    /// Bytes known durable (and published).
    durable_len: u64,
    /// Whether the shared state knows this segment.
    published: bool,
}

impl Active {
    /// Continues appending to a segment recovered on open.
    pub(super) fn resume(segment: &Segment) -> io::Result<Active> {
        let file = OpenOptions::new().append(true).open(&segment.path)?;
        Ok(Active {
            first_id: segment.first_id,
            path: segment.path.clone(),
            file,
            read: segment.file.clone(),
            len: segment.len,
            durable_len: segment.len,
            published: true,
        })
    }

    fn create(shared: &Shared, first_id: u64) -> io::Result<Active> {
        let path = files::segment_path(&shared.dir, first_id);
        let file = OpenOptions::new().append(true).create_new(true).open(&path)?;
        let read = Arc::new(File::open(&path)?);
        Ok(Active { first_id, path, file, read, len: 0, durable_len: 0, published: false })
    }

    /// Undoes the bytes written since the last durable point, as far as possible.
    fn roll_back(&self) {
        let result =
            if self.published { self.file.set_len(self.durable_len) } else { std::fs::remove_file(&self.path) };
        if let Err(error) = result {
            // Recovery cuts the garbage off on the next open; until then nobody reads it.
            tracing::warn!(
                message = "Could not roll back a failed spool write.",
                segment = %self.path.display(),
                %error,
            );
        }
    }
}

/// The writer: owns the active segment and the next id.
#[derive(Debug)]
pub(super) struct SpoolWriter {
    shared: Arc<Shared>,
    segment_bytes: u64,
    next_id: u64,
    active: Option<Active>,
}

impl SpoolWriter {
    /// A writer giving out ids from `next_id`, appending to `active` if there is one.
    pub(super) fn new(shared: Arc<Shared>, segment_bytes: u64, next_id: u64, active: Option<Active>) -> SpoolWriter {
        SpoolWriter { shared, segment_bytes, next_id, active }
    }

    /// Runs until every sender is gone.
    pub(super) fn run(mut self, mut jobs: mpsc::Receiver<AppendJob>) {
        while let Some(first) = jobs.blocking_recv() {
            let mut bytes = format::encoded_len(first.payload.len());
            let mut batch = vec![first];
            while bytes < MAX_BATCH_BYTES && batch.len() < MAX_BATCH_RECORDS {
                let Ok(job) = jobs.try_recv() else { break };
                bytes += format::encoded_len(job.payload.len());
                batch.push(job);
            }
            self.commit(batch);
        }
    }

    fn commit(&mut self, batch: Vec<AppendJob>) {
        let first_id = self.next_id;
        let mut sealed = Vec::new();
        let result = self.write(&batch, &mut sealed);
        self.next_id = first_id + batch.len() as u64;
        match result {
            Ok(bytes) => {
                self.publish(first_id, &batch, bytes, &mut sealed);
                for (i, job) in batch.into_iter().enumerate() {
                    job.permit.forget();
                    let _ = job.reply.send(Ok(RecordId(first_id + i as u64)));
                }
            }
            Err(error) => {
                tracing::error!(message = "Writing to the spool failed.", records = batch.len(), %error);
                for segment in sealed.iter().chain(self.active.as_ref()) {
                    segment.roll_back();
                }
                self.active = None;
                for job in batch {
                    // Dropping the permit gives its bytes back.
                    let _ = job.reply.send(Err(SpoolError::Io(io::Error::new(error.kind(), error.to_string()))));
                }
            }
        }
    }

    /// Writes and syncs the batch; returns its bytes. Segments left behind go to `sealed`.
    fn write(&mut self, batch: &[AppendJob], sealed: &mut Vec<Active>) -> io::Result<u64> {
        let mut buf = Vec::new();
        let mut bytes = 0;
        let mut created = false;
        for (i, job) in batch.iter().enumerate() {
            let id = self.next_id + i as u64;
            let size = format::encoded_len(job.payload.len());
            let rotate = match &self.active {
                None => true,
                Some(active) => active.len > 0 && active.len + size > self.segment_bytes,
            };
            if rotate {
                if let Some(mut old) = self.active.take() {
                    let written = old.file.write_all(&buf);
                    buf.clear();
                    // Kept for syncing, or for rolling back if the write failed.
                    sealed.push(old);
                    written?;
                }
                self.active = Some(Active::create(&self.shared, id)?);
                created = true;
            }
            format::encode(id, &job.payload, &mut buf)
                .map_err(|_| io::Error::other("record longer than the format allows"))?;
            let active = self.active.as_mut().expect("a segment was opened above");
            active.len += size;
            bytes += size;
        }
        let active = self.active.as_mut().expect("a batch has at least one record, which opened a segment");
        active.file.write_all(&buf)?;
        if self.shared.fsync {
            for segment in sealed.iter().chain(self.active.as_ref()) {
                segment.file.sync_data()?;
            }
            if created {
                files::sync_dir(&self.shared.dir)?;
            }
        }
        Ok(bytes)
    }

    /// Makes the durable batch visible: segment lengths, new segments, counters, readers.
    fn publish(&mut self, first_id: u64, batch: &[AppendJob], bytes: u64, sealed: &mut [Active]) {
        let last_id = first_id + batch.len() as u64 - 1;
        let removed = {
            let mut st = self.shared.state();
            for segment in sealed.iter_mut().chain(self.active.as_mut()) {
                if segment.published {
                    if let Some(known) = st.segments.iter_mut().rev().find(|s| s.first_id == segment.first_id) {
                        known.len = segment.len;
                    }
                } else {
                    st.segments.push_back(Segment {
                        first_id: segment.first_id,
                        path: segment.path.clone(),
                        file: segment.read.clone(),
                        len: segment.len,
                        holes: Arc::new([]),
                    });
                    segment.published = true;
                }
                segment.durable_len = segment.len;
            }
            st.durable_id = last_id;
            st.pending_records += batch.len() as u64;
            st.pending_bytes += bytes;
            st.appended_records += batch.len() as u64;
            if st.head_id.is_none() {
                st.head_id = Some(first_id);
            }
            st.normalize_head()
        };
        super::remove_segments(removed);
        self.shared.progress.send_modify(|p| p.durable_id = last_id);
    }
}
