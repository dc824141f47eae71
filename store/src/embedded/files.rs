//! Uploaded files on the embedded store ([`FileStore`]): metadata in SQLite, content in
//! `<data_dir>/files/<id>`.
//!
//! # Order of writes, and what a crash leaves
//!
//! Storing a file takes four steps, each durable before the next (with `fsync` on):
//! 1. the content is copied, [`FILE_CHUNK`] at a time, to `files/tmp-…` (a name no row has);
//! 2. its row is committed with `complete = 0`: that draws the id and counts against the
//!    device's limit (so concurrent uploads cannot pass it together), but nothing reads a
//!    row that is not complete;
//! 3. the temporary file is renamed to `files/<id>` (and the directory synced);
//! 4. the row is marked `complete = 1`: only now is the file listed or read.
//!
//! Deleting removes the row first, then the content. Opening the store ([`recover`]) therefore
//! finds at most: temporary files (step 1 or 2 interrupted), rows not complete (2 or 3
//! interrupted) and content without a complete row (3 interrupted, or a deletion): it deletes
//! them all. No store is running while it does (only one process opens the data directory), so
//! no row it deletes is in the middle of being stored. A store call whose caller goes away
//! still finishes its steps (they run in a task of their own).

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use fleetpulse_proto::{CommandId, DeviceId, EnterpriseId, FileId, UnixMillis};
use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::mpsc;

use super::writer::WriteJob;
use super::{EmbeddedStore, db_after, write_on};
use crate::*;

/// The directory of file content inside the data directory.
pub(super) const FILES_DIR: &str = "files";

/// The prefix of content being copied in (step 1).
const TMP_PREFIX: &str = "tmp-";

/// The columns `file_from_row` reads, in its order.
const FILE_COLUMNS: &str = "id, device_id, enterprise_id, command_id, name, size, sha256, created_at, expires_at";

fn file_from_row(r: &Row<'_>) -> rusqlite::Result<StoredFile> {
    let sha256: Vec<u8> = r.get(6)?;
    Ok(StoredFile {
        id: FileId(r.get(0)?),
        device_id: DeviceId(r.get(1)?),
        enterprise_id: EnterpriseId(r.get(2)?),
        command_id: r.get::<_, Option<u64>>(3)?.map(CommandId),
        name: r.get(4)?,
        size: r.get(5)?,
        sha256: hex(&sha256),
        created_at: UnixMillis(r.get(7)?),
        expires_at: UnixMillis(r.get(8)?),
    })
}

/// The complete file with this id.
fn read_file(c: &Connection, id: FileId) -> Result<Option<StoredFile>> {
    let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
    Ok(c.prepare_cached(&format!("SELECT {FILE_COLUMNS} FROM files WHERE id = ?1 AND complete = 1"))?
        .query_row([id], file_from_row)
        .optional()?)
}

/// Step 2: checks the file's owners and the device's limit, and inserts its row (not
/// complete). Answers its id.
fn insert_pending(c: &Connection, file: &NewFile) -> Result<FileId> {
    let device = i64::try_from(file.device_id.0).ok();
    let owner: Option<u64> = match device {
        Some(d) => c
            .prepare_cached("SELECT enterprise_id FROM devices WHERE id = ?1")?
            .query_row([d], |r| r.get(0))
            .optional()?,
        None => None,
    };
    if owner != Some(file.enterprise_id.0) {
        return Err(StoreError::InvalidInput(format!(
            "device {} is not a device of enterprise {}",
            file.device_id, file.enterprise_id
        )));
    }
    if let Some(command) = file.command_id {
        let of: Option<u64> = match i64::try_from(command.0) {
            Ok(id) => c
                .prepare_cached("SELECT device_id FROM commands WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?,
            Err(_) => None,
        };
        if of != Some(file.device_id.0) {
            return Err(StoreError::InvalidInput(format!(
                "command {command} is not a command of device {}",
                file.device_id
            )));
        }
    }
    let kept: u64 = c
        .prepare_cached("SELECT count(*) FROM files WHERE device_id = ?1 AND expires_at > ?2")?
        .query_row(params![device, file.created_at.0], |r| r.get(0))?;
    if kept >= MAX_FILES_PER_DEVICE {
        return Err(too_many_files(file.device_id));
    }
    c.prepare_cached(
        "INSERT INTO files (device_id, enterprise_id, command_id, name, size, sha256, created_at, expires_at, complete) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0)",
    )?
    .execute(params![
        device,
        file.enterprise_id.0,
        file.command_id.map(|id| id.0),
        file.name,
        file.size,
        file.sha256.as_slice(),
        file.created_at.0,
        file.expires_at.0
    ])?;
    Ok(FileId(u64::try_from(c.last_insert_rowid()).unwrap_or_default()))
}

/// A name for step 1 that no other copy in this or an earlier process uses.
fn temporary_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{TMP_PREFIX}{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Step 1: copies exactly `size` bytes of `content` to a new temporary file in `dir`, one
/// [`FILE_CHUNK`] at a time; answers its path. Nothing is left behind on failure.
pub(super) fn copy_in(content: &Path, dir: &Path, size: u64, fsync: bool) -> Result<PathBuf> {
    let source = std::fs::File::open(content)?;
    let tmp = dir.join(temporary_name());
    let mut out = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
    let copied = (|| -> Result<()> {
        // One more byte than declared is read, to tell a longer file.
        let mut source = source.take(size.saturating_add(1));
        let mut buf = vec![0; FILE_CHUNK];
        let mut total = 0u64;
        loop {
            let n = source.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > size {
                return Err(wrong_size(size, total));
            }
            out.write_all(&buf[..n])?;
        }
        if total != size {
            return Err(wrong_size(size, total));
        }
        if fsync {
            out.sync_all()?;
        }
        Ok(())
    })();
    match copied {
        Ok(()) => Ok(tmp),
        Err(e) => {
            remove_quietly(&tmp);
            Err(e)
        }
    }
}

/// Step 3: the temporary content becomes the content of file `id`.
pub(super) fn publish(tmp: &Path, dir: &Path, id: impl std::fmt::Display, fsync: bool) -> Result<()> {
    std::fs::rename(tmp, content_path(dir, id))?;
    if fsync {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

pub(super) fn content_path(dir: &Path, id: impl std::fmt::Display) -> PathBuf {
    dir.join(id.to_string())
}

/// Removes a file that may already be gone, logging any other failure (what is left is swept
/// by [`recover`] on the next open).
pub(super) fn remove_quietly(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(message = "Removing file content failed.", path = %path.display(), %error),
    }
}

/// Runs blocking file I/O off the runtime's threads.
pub(super) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Backend(format!("file task failed: {e}")))?
}

/// On open, before any write: deletes what an interrupted store or delete left behind (see the
/// module documentation), and creates `dir` if needed. `table` is the table of the rows whose
/// content `dir` holds (`files`, or `firmware_images` for `firmware/`).
pub(super) fn recover(c: &Connection, dir: &Path, table: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let abandoned = c.execute(&format!("DELETE FROM {table} WHERE complete = 0"), [])?;
    let mut swept = 0u64;
    let mut complete = c.prepare(&format!("SELECT 1 FROM {table} WHERE id = ?1 AND complete = 1"))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale = if name.starts_with(TMP_PREFIX) {
            true
        } else if let Ok(id) = name.parse::<i64>() {
            complete.query_row([id], |_| Ok(())).optional()?.is_none()
        } else {
            false
        };
        if stale {
            remove_quietly(&entry.path());
            swept += 1;
        }
    }
    if abandoned > 0 || swept > 0 {
        tracing::info!(
            message = "Removed files left incomplete by an earlier run.",
            table,
            rows = abandoned,
            files = swept
        );
    }
    Ok(())
}

/// Where the embedded store keeps one kind of content (device files, firmware images): the
/// writer, the directory beside the database, and whether to fsync.
pub(super) struct ContentDir {
    pub(super) jobs: mpsc::Sender<Box<dyn WriteJob>>,
    pub(super) dir: PathBuf,
    pub(super) fsync: bool,
}

/// Steps 1 to 4 (see the module documentation) for any content kept as `<dir>/<id>`: `content`
/// (`size` bytes, already checked) copied to a temporary file, the row inserted pending by
/// `insert`, the file renamed to its id, the row marked complete in `table`; what can be undone
/// on a failure is undone now, the rest is swept on the next open ([`recover`]). The new id.
pub(super) async fn store_content<I>(
    to: ContentDir,
    size: u64,
    content: PathBuf,
    table: &'static str,
    insert: impl FnMut(&Connection) -> Result<I> + Send + 'static,
    raw: fn(I) -> u64,
) -> Result<I>
where
    I: Copy + std::fmt::Display + Send + 'static,
{
    let ContentDir { jobs, dir, fsync } = to;
    let tmp = {
        let dir = dir.clone();
        blocking(move || copy_in(&content, &dir, size, fsync)).await?
    };
    let id = match write_on(&jobs, 1, insert).await {
        Ok(id) => id,
        Err(e) => {
            remove_quietly(&tmp);
            return Err(e);
        }
    };
    let published = {
        let (tmp, dir) = (tmp.clone(), dir.clone());
        blocking(move || publish(&tmp, &dir, id, fsync)).await
    };
    let completed = match published {
        Ok(()) => {
            write_on(&jobs, 1, move |c| {
                c.prepare_cached(&format!("UPDATE {table} SET complete = 1 WHERE id = ?1"))?.execute([raw(id)])?;
                Ok(())
            })
            .await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = completed {
        remove_quietly(&tmp);
        remove_quietly(&content_path(&dir, id));
        let _ =
            write_on(&jobs, 1, move |c| Ok(c.execute(&format!("DELETE FROM {table} WHERE id = ?1"), [raw(id)])?)).await;
        return Err(e);
    }
    Ok(id)
}

/// Chunk `index` of the content at `path` (`size` bytes, `what` naming it in errors); `None`
/// past its end or when the content is gone (deleted since its row was read).
pub(super) async fn read_content_chunk(path: PathBuf, size: u64, index: u64, what: String) -> Result<Option<Vec<u8>>> {
    let Some((start, end)) = chunk_range(size, index) else { return Ok(None) };
    blocking(move || {
        let mut content = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        content.seek(std::io::SeekFrom::Start(start))?;
        let mut chunk = vec![0; usize::try_from(end - start).expect("a chunk is at most FILE_CHUNK bytes")];
        content
            .read_exact(&mut chunk)
            .map_err(|e| StoreError::Backend(format!("content of {what} is shorter than its {size} bytes: {e}")))?;
        Ok(Some(chunk))
    })
    .await
}

#[async_trait]
impl FileStore for EmbeddedStore {
    async fn store_file(&self, file: NewFile, content: &Path) -> Result<StoredFile> {
        file.validate()?;
        let to = ContentDir { jobs: self.jobs.clone(), dir: self.files_dir.clone(), fsync: self.fsync };
        let row = file.clone();
        let task =
            store_content(to, file.size, content.to_path_buf(), "files", move |c| insert_pending(c, &row), |id| id.0);
        let id =
            tokio::spawn(task).await.map_err(|e| StoreError::Backend(format!("file store task failed: {e}")))??;
        Ok(file.stored(id))
    }

    async fn file(&self, id: FileId) -> Result<Option<StoredFile>> {
        self.read(move |c| read_file(c, id)).await
    }

    async fn list_device_files(&self, device: DeviceId, page: Page) -> Result<Vec<StoredFile>> {
        let limit = page.limit.min(MAX_FILE_PAGE);
        let Ok(device) = i64::try_from(device.0) else { return Ok(Vec::new()) };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let before = if page.after == 0 { i64::MAX } else { db_after(page.after) };
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {FILE_COLUMNS} FROM files WHERE device_id = ?1 AND id < ?2 AND complete = 1 \
                 ORDER BY id DESC LIMIT ?3"
            ))?;
            let rows = st.query_map(params![device, before, limit], file_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn file_chunk(&self, id: FileId, index: u64) -> Result<Option<Vec<u8>>> {
        let Some(file) = self.file(id).await? else { return Ok(None) };
        read_content_chunk(content_path(&self.files_dir, id), file.size, index, format!("file {id}")).await
    }

    async fn delete_expired_files(&self, now: UnixMillis, limit: u32) -> Result<u64> {
        let limit = limit.min(MAX_FILE_DELETES);
        if limit == 0 {
            return Ok(0);
        }
        let ids: Vec<FileId> = self
            .write(limit as usize, move |c| {
                let mut st = c.prepare_cached(
                    "DELETE FROM files WHERE id IN (SELECT id FROM files WHERE expires_at <= ?1 AND complete = 1 \
                     ORDER BY expires_at, id LIMIT ?2) RETURNING id",
                )?;
                let ids = st.query_map(params![now.0, limit], |r| r.get(0).map(FileId))?;
                Ok(ids.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await?;
        let dir = self.files_dir.clone();
        let count = ids.len() as u64;
        blocking(move || {
            for id in ids {
                remove_quietly(&content_path(&dir, id));
            }
            Ok(())
        })
        .await?;
        Ok(count)
    }
}
