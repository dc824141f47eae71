//! Uploaded files on PostgreSQL ([`FileStore`]): the row in `files`, the content in
//! `file_chunks` (one row per [`FILE_CHUNK`]), both inserted in one transaction, so a file is
//! visible (to every node) only once all of it is committed. A device's uploads are serialised by
//! a transaction-scoped advisory lock on the device, which keeps its file count true until the
//! insert commits.

use async_trait::async_trait;
use fleetpulse_proto::{CommandId, DeviceId, EnterpriseId, FileId, UnixMillis};
use sqlx::Row;
use sqlx::postgres::PgRow;
use tokio::io::AsyncReadExt;

use super::{PgEntityStore, backend, db_id, row_id};
use crate::*;

/// The columns `file_from_row` reads.
const FILE_COLUMNS: &str = "id, device_id, enterprise_id, command_id, name, size, sha256, created_at, expires_at";

/// Serialises the uploads of device `$1` until the transaction ends (the advisory lock key is
/// the device id in a namespace of its own, so it meets no other lock of the database).
const LOCK_DEVICE_FILES: &str = "SELECT pg_advisory_xact_lock(hashtextextended('fleetpulse.files', $1))";

fn file_from_row(r: &PgRow) -> Result<StoredFile> {
    let command: Option<i64> = r.try_get("command_id").map_err(backend)?;
    let sha256: Vec<u8> = r.try_get("sha256").map_err(backend)?;
    Ok(StoredFile {
        id: FileId(row_id(r.try_get("id").map_err(backend)?)),
        device_id: DeviceId(row_id(r.try_get("device_id").map_err(backend)?)),
        enterprise_id: EnterpriseId(row_id(r.try_get("enterprise_id").map_err(backend)?)),
        command_id: command.map(|c| CommandId(row_id(c))),
        name: r.try_get("name").map_err(backend)?,
        size: row_id(r.try_get("size").map_err(backend)?),
        sha256: hex(&sha256),
        created_at: UnixMillis(r.try_get("created_at").map_err(backend)?),
        expires_at: UnixMillis(r.try_get("expires_at").map_err(backend)?),
    })
}

/// Reads from `source` until `buf` is full or the source ends; answers how many bytes.
pub(super) async fn read_full(source: &mut (impl AsyncReadExt + Unpin), buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = source.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Writes `source`, which must hold exactly `size` bytes, as the chunk rows of `id` with
/// `insert` (`INSERT INTO <x>_chunks (<owner>, idx, bytes) VALUES ($1, $2, $3)`) inside the
/// caller's transaction: one chunk in memory at a time, and one more byte than declared is
/// read, to tell a longer file ([`wrong_size`] either way).
pub(super) async fn insert_chunks(
    tx: &mut sqlx::PgConnection,
    insert: &'static str,
    id: i64,
    source: &mut (impl AsyncReadExt + Unpin),
    size: u64,
) -> Result<()> {
    let mut buf = vec![0; FILE_CHUNK];
    let mut total = 0u64;
    for idx in 0i32.. {
        let n = read_full(source, &mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > size {
            return Err(wrong_size(size, total));
        }
        sqlx::query(insert).bind(id).bind(idx).bind(&buf[..n]).execute(&mut *tx).await.map_err(backend)?;
    }
    if total != size {
        return Err(wrong_size(size, total));
    }
    Ok(())
}

#[async_trait]
impl FileStore for PgEntityStore {
    async fn store_file(&self, file: NewFile, content: &std::path::Path) -> Result<StoredFile> {
        file.validate()?;
        let not_in_enterprise = || {
            StoreError::InvalidInput(format!(
                "device {} is not a device of enterprise {}",
                file.device_id, file.enterprise_id
            ))
        };
        let device = db_id(file.device_id.0).ok_or_else(not_in_enterprise)?;
        let mut source = tokio::fs::File::open(content).await?;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query(LOCK_DEVICE_FILES).bind(device).execute(&mut *tx).await.map_err(backend)?;
        let owner: Option<i64> = sqlx::query_scalar("SELECT enterprise_id FROM devices WHERE id = $1")
            .bind(device)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        if owner.map(row_id) != Some(file.enterprise_id.0) {
            return Err(not_in_enterprise());
        }
        let command = match file.command_id {
            Some(command) => {
                let of: Option<i64> = match db_id(command.0) {
                    Some(id) => sqlx::query_scalar("SELECT device_id FROM commands WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(backend)?,
                    None => None,
                };
                if of != Some(device) {
                    return Err(StoreError::InvalidInput(format!(
                        "command {command} is not a command of device {}",
                        file.device_id
                    )));
                }
                db_id(command.0)
            }
            None => None,
        };
        let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM files WHERE device_id = $1 AND expires_at > $2")
            .bind(device)
            .bind(file.created_at.0)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        if row_id(kept) >= MAX_FILES_PER_DEVICE {
            return Err(too_many_files(file.device_id));
        }
        let size = i64::try_from(file.size).map_err(|_| wrong_size(file.size, u64::MAX))?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO files (device_id, enterprise_id, command_id, name, size, sha256, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(device)
        .bind(owner)
        .bind(command)
        .bind(&file.name)
        .bind(size)
        .bind(file.sha256.as_slice())
        .bind(file.created_at.0)
        .bind(file.expires_at.0)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        let insert = "INSERT INTO file_chunks (file_id, idx, bytes) VALUES ($1, $2, $3)";
        insert_chunks(&mut tx, insert, id, &mut source, file.size).await?;
        tx.commit().await.map_err(backend)?;
        Ok(file.stored(FileId(row_id(id))))
    }

    async fn file(&self, id: FileId) -> Result<Option<StoredFile>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {FILE_COLUMNS} FROM files WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(file_from_row)
            .transpose()
    }

    async fn list_device_files(&self, device: DeviceId, page: Page) -> Result<Vec<StoredFile>> {
        super::newest_first(
            &self.pool,
            FILE_COLUMNS,
            "files",
            "device_id",
            device.0,
            page,
            MAX_FILE_PAGE,
            file_from_row,
        )
        .await
    }

    async fn file_chunk(&self, id: FileId, index: u64) -> Result<Option<Vec<u8>>> {
        let (Some(id), Ok(idx)) = (db_id(id.0), i32::try_from(index)) else { return Ok(None) };
        sqlx::query_scalar("SELECT bytes FROM file_chunks WHERE file_id = $1 AND idx = $2")
            .bind(id)
            .bind(idx)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)
    }

    async fn delete_expired_files(&self, now: UnixMillis, limit: u32) -> Result<u64> {
        let limit = limit.min(MAX_FILE_DELETES);
        if limit == 0 {
            return Ok(0);
        }
        // The chunks go with their file (ON DELETE CASCADE), in the same statement.
        let done = sqlx::query(
            "DELETE FROM files WHERE id IN (SELECT id FROM files WHERE expires_at <= $1 \
             ORDER BY expires_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(now.0)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected())
    }
}
