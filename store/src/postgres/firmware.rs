//! Firmware images on PostgreSQL ([`FirmwareStore`]): the row in `firmware_images`, the content
//! in `firmware_chunks` (one row per [`FILE_CHUNK`]), both inserted in one transaction, so an
//! image is visible (to every node) only once all of it is committed. An enterprise's uploads
//! are serialised by a transaction-scoped advisory lock, which keeps its image count true until
//! the insert commits; a deletion locks the image row and checks for pending upgrades in the
//! same transaction.

use async_trait::async_trait;
use fleetpulse_proto::commands::UPGRADE_FIRMWARE;
use fleetpulse_proto::{AccountId, CommandId, DeviceId, EnterpriseId, FirmwareId, UnixMillis};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::files::insert_chunks;
use super::{PgEntityStore, backend, db_id, row_id};
use crate::commands::PENDING_SQL;
use crate::files::hex;
use crate::*;

/// The columns `image_from_row` reads.
const COLUMNS: &str = "id, enterprise_id, model, version, name, size, sha256, uploaded_by, uploaded_at";

/// Serialises the uploads of enterprise `$1` until the transaction ends.
const LOCK_ENTERPRISE_FIRMWARE: &str = "SELECT pg_advisory_xact_lock(hashtextextended('fleetpulse.firmware', $1))";

fn image_from_row(r: &PgRow) -> Result<FirmwareImage> {
    let sha256: Vec<u8> = r.try_get("sha256").map_err(backend)?;
    Ok(FirmwareImage {
        id: FirmwareId(row_id(r.try_get("id").map_err(backend)?)),
        enterprise_id: EnterpriseId(row_id(r.try_get("enterprise_id").map_err(backend)?)),
        model: r.try_get("model").map_err(backend)?,
        version: r.try_get("version").map_err(backend)?,
        name: r.try_get("name").map_err(backend)?,
        size: row_id(r.try_get("size").map_err(backend)?),
        sha256: hex(&sha256),
        uploaded_by: AccountId(row_id(r.try_get("uploaded_by").map_err(backend)?)),
        uploaded_at: UnixMillis(r.try_get("uploaded_at").map_err(backend)?),
    })
}

#[async_trait]
impl FirmwareStore for PgEntityStore {
    async fn store_firmware(&self, image: NewFirmware, content: &std::path::Path) -> Result<FirmwareImage> {
        image.validate()?;
        let (Some(enterprise), Some(account)) = (db_id(image.enterprise_id.0), db_id(image.uploaded_by.0)) else {
            return Err(unknown_owner(&image));
        };
        let mut source = tokio::fs::File::open(content).await?;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query(LOCK_ENTERPRISE_FIRMWARE).bind(enterprise).execute(&mut *tx).await.map_err(backend)?;
        let owners: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM enterprises WHERE id = $1) + (SELECT count(*) FROM accounts WHERE id = $2)",
        )
        .bind(enterprise)
        .bind(account)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        if owners != 2 {
            return Err(unknown_owner(&image));
        }
        let held: i64 = sqlx::query_scalar("SELECT count(*) FROM firmware_images WHERE enterprise_id = $1")
            .bind(enterprise)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        if row_id(held) >= MAX_FIRMWARE_PER_ENTERPRISE {
            return Err(too_many_images(image.enterprise_id));
        }
        let size = i64::try_from(image.size).map_err(|_| wrong_size(image.size, u64::MAX))?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO firmware_images (enterprise_id, model, version, name, size, sha256, uploaded_by, uploaded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(enterprise)
        .bind(&image.model)
        .bind(&image.version)
        .bind(&image.name)
        .bind(size)
        .bind(image.sha256.as_slice())
        .bind(account)
        .bind(image.uploaded_at.0)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        let insert = "INSERT INTO firmware_chunks (image_id, idx, bytes) VALUES ($1, $2, $3)";
        insert_chunks(&mut tx, insert, id, &mut source, image.size).await?;
        tx.commit().await.map_err(backend)?;
        Ok(image.stored(FirmwareId(row_id(id))))
    }

    async fn firmware(&self, id: FirmwareId) -> Result<Option<FirmwareImage>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM firmware_images WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(image_from_row)
            .transpose()
    }

    async fn list_firmware(&self, enterprise: EnterpriseId, page: Page) -> Result<Vec<FirmwareImage>> {
        super::newest_first(
            &self.pool,
            COLUMNS,
            "firmware_images",
            "enterprise_id",
            enterprise.0,
            page,
            MAX_FIRMWARE_PAGE,
            image_from_row,
        )
        .await
    }

    async fn firmware_chunk(&self, id: FirmwareId, index: u64) -> Result<Option<Vec<u8>>> {
        let (Some(id), Ok(idx)) = (db_id(id.0), i32::try_from(index)) else { return Ok(None) };
        sqlx::query_scalar("SELECT bytes FROM firmware_chunks WHERE image_id = $1 AND idx = $2")
            .bind(id)
            .bind(idx)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)
    }

    async fn delete_firmware(&self, id: FirmwareId) -> Result<Option<FirmwareDeletion>> {
        let Some(db) = db_id(id.0) else { return Ok(None) };
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let enterprise: Option<i64> =
            sqlx::query_scalar("SELECT enterprise_id FROM firmware_images WHERE id = $1 FOR UPDATE")
                .bind(db)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        let Some(enterprise) = enterprise else { return Ok(None) };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, device_id FROM commands WHERE enterprise_id = $1 AND state IN {PENDING_SQL} \
             AND kind = '{UPGRADE_FIRMWARE}' AND (args::jsonb ->> 'image') = $2 ORDER BY id"
        )))
        .bind(enterprise)
        .bind(db.to_string())
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        if !rows.is_empty() {
            let upgrades = rows
                .iter()
                .take(MAX_NAMED_UPGRADES)
                .map(|r| {
                    Ok(PendingUpgrade {
                        command_id: CommandId(row_id(r.try_get("id").map_err(backend)?)),
                        device_id: DeviceId(row_id(r.try_get("device_id").map_err(backend)?)),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            return Ok(Some(FirmwareDeletion::InUse { pending: rows.len() as u64, upgrades }));
        }
        // The chunks go with their image (ON DELETE CASCADE).
        sqlx::query("DELETE FROM firmware_images WHERE id = $1").bind(db).execute(&mut *tx).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(FirmwareDeletion::Deleted))
    }
}
