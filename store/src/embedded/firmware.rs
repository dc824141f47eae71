//! Firmware images on the embedded store ([`FirmwareStore`]): rows in SQLite, content in
//! `<data_dir>/firmware/<id>`, written in the order of `embedded/files.rs` (content to a
//! temporary file, row not complete, rename, row complete) and swept the same way on open.

use std::path::Path;

use async_trait::async_trait;
use fleetpulse_proto::commands::UPGRADE_FIRMWARE;
use fleetpulse_proto::{AccountId, CommandId, DeviceId, EnterpriseId, FirmwareId, UnixMillis};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::files::{ContentDir, blocking, content_path, read_content_chunk, remove_quietly, store_content};
use super::{EmbeddedStore, db_after};
use crate::commands::PENDING_SQL;
use crate::files::hex;
use crate::*;

/// The directory of image content inside the data directory.
pub(super) const FIRMWARE_DIR: &str = "firmware";

/// The columns `image_from_row` reads, in its order.
const COLUMNS: &str = "id, enterprise_id, model, version, name, size, sha256, uploaded_by, uploaded_at";

fn image_from_row(r: &Row<'_>) -> rusqlite::Result<FirmwareImage> {
    let sha256: Vec<u8> = r.get(6)?;
    Ok(FirmwareImage {
        id: FirmwareId(r.get(0)?),
        enterprise_id: EnterpriseId(r.get(1)?),
        model: r.get(2)?,
        version: r.get(3)?,
        name: r.get(4)?,
        size: r.get(5)?,
        sha256: hex(&sha256),
        uploaded_by: AccountId(r.get(7)?),
        uploaded_at: UnixMillis(r.get(8)?),
    })
}

fn read_image(c: &Connection, id: FirmwareId) -> Result<Option<FirmwareImage>> {
    let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
    Ok(c.prepare_cached(&format!("SELECT {COLUMNS} FROM firmware_images WHERE id = ?1 AND complete = 1"))?
        .query_row([id], image_from_row)
        .optional()?)
}

/// Checks the owners and the enterprise's bound and inserts the row (not complete).
fn insert_pending(c: &Connection, image: &NewFirmware) -> Result<FirmwareId> {
    let (Ok(enterprise), Ok(account)) = (i64::try_from(image.enterprise_id.0), i64::try_from(image.uploaded_by.0))
    else {
        return Err(unknown_owner(image));
    };
    let owners: u64 = c
        .prepare_cached(
            "SELECT (SELECT count(*) FROM enterprises WHERE id = ?1) + (SELECT count(*) FROM accounts WHERE id = ?2)",
        )?
        .query_row(params![enterprise, account], |r| r.get(0))?;
    if owners != 2 {
        return Err(unknown_owner(image));
    }
    let held: u64 = c
        .prepare_cached("SELECT count(*) FROM firmware_images WHERE enterprise_id = ?1")?
        .query_row([enterprise], |r| r.get(0))?;
    if held >= MAX_FIRMWARE_PER_ENTERPRISE {
        return Err(too_many_images(image.enterprise_id));
    }
    c.prepare_cached(
        "INSERT INTO firmware_images (enterprise_id, model, version, name, size, sha256, uploaded_by, uploaded_at, complete) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0)",
    )?
    .execute(params![
        enterprise,
        image.model,
        image.version,
        image.name,
        image.size,
        image.sha256.as_slice(),
        account,
        image.uploaded_at.0
    ])?;
    Ok(FirmwareId(u64::try_from(c.last_insert_rowid()).unwrap_or_default()))
}

/// The pending upgrades to image `id` of `enterprise`: how many, and the first
/// [`MAX_NAMED_UPGRADES`].
pub(super) fn pending_upgrades(c: &Connection, enterprise: i64, id: i64) -> Result<(u64, Vec<PendingUpgrade>)> {
    let mut st = c.prepare_cached(&format!(
        "SELECT id, device_id FROM commands WHERE enterprise_id = ?1 AND state IN {PENDING_SQL} \
         AND kind = '{UPGRADE_FIRMWARE}' AND json_extract(args, '$.image') = ?2 ORDER BY id"
    ))?;
    let rows = st.query_map(params![enterprise, id], |r| {
        Ok(PendingUpgrade { command_id: CommandId(r.get(0)?), device_id: DeviceId(r.get(1)?) })
    })?;
    let (mut count, mut named) = (0u64, Vec::new());
    for row in rows {
        let row = row?;
        count += 1;
        if named.len() < MAX_NAMED_UPGRADES {
            named.push(row);
        }
    }
    Ok((count, named))
}

#[async_trait]
impl FirmwareStore for EmbeddedStore {
    async fn store_firmware(&self, image: NewFirmware, content: &Path) -> Result<FirmwareImage> {
        image.validate()?;
        let to = ContentDir { jobs: self.jobs.clone(), dir: self.firmware_dir.clone(), fsync: self.fsync };
        let row = image.clone();
        let insert = move |c: &Connection| insert_pending(c, &row);
        let task = store_content(to, image.size, content.to_path_buf(), "firmware_images", insert, |id| id.0);
        let id =
            tokio::spawn(task).await.map_err(|e| StoreError::Backend(format!("firmware store task failed: {e}")))??;
        Ok(image.stored(id))
    }

    async fn firmware(&self, id: FirmwareId) -> Result<Option<FirmwareImage>> {
        self.read(move |c| read_image(c, id)).await
    }

    async fn list_firmware(&self, enterprise: EnterpriseId, page: Page) -> Result<Vec<FirmwareImage>> {
        let limit = page.limit.min(MAX_FIRMWARE_PAGE);
        let Ok(enterprise) = i64::try_from(enterprise.0) else { return Ok(Vec::new()) };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let before = if page.after == 0 { i64::MAX } else { db_after(page.after) };
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM firmware_images WHERE enterprise_id = ?1 AND id < ?2 AND complete = 1 \
                 ORDER BY id DESC LIMIT ?3"
            ))?;
            let rows = st.query_map(params![enterprise, before, limit], image_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn firmware_chunk(&self, id: FirmwareId, index: u64) -> Result<Option<Vec<u8>>> {
        let Some(image) = self.firmware(id).await? else { return Ok(None) };
        read_content_chunk(content_path(&self.firmware_dir, id), image.size, index, format!("firmware {id}")).await
    }

    async fn delete_firmware(&self, id: FirmwareId) -> Result<Option<FirmwareDeletion>> {
        let Ok(db) = i64::try_from(id.0) else { return Ok(None) };
        let outcome = self
            .write(1, move |c| {
                let Some(image) = read_image(c, id)? else { return Ok(None) };
                let enterprise = i64::try_from(image.enterprise_id.0).unwrap_or_default();
                let (pending, upgrades) = pending_upgrades(c, enterprise, db)?;
                if pending > 0 {
                    return Ok(Some(FirmwareDeletion::InUse { pending, upgrades }));
                }
                c.prepare_cached("DELETE FROM firmware_images WHERE id = ?1")?.execute([db])?;
                Ok(Some(FirmwareDeletion::Deleted))
            })
            .await?;
        if outcome == Some(FirmwareDeletion::Deleted) {
            let path = content_path(&self.firmware_dir, id);
            blocking(move || {
                remove_quietly(&path);
                Ok(())
            })
            .await?;
        }
        Ok(outcome)
    }
}
