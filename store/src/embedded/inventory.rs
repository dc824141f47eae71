//! The device inventory on SQLite ([`InventoryStore`]): devices added, edited, moved and
//! deleted (with their commands and files), bulk edits, import batches and import logs.

use async_trait::async_trait;
use fleetpulse_proto::catalog::DeviceType;
use fleetpulse_proto::{AccountId, DeviceId, EnterpriseId, FileId, Mac, UnixMillis};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::files::{blocking, content_path, remove_quietly};
use super::{EmbeddedStore, is_unique_violation, row_exists};
use crate::groups::{import_groups, resolve_group_names};
use crate::inventory::{
    Editable, RowPlan, apply_edit, check_bulk_edit, decode_attributes, encode_attributes, plan_row,
};
use crate::*;

/// The id of the next device: above every device and every deleted one (SQLite would reuse
/// the id of a deleted last row; see the migration of `device_id_high`).
pub(super) const NEXT_DEVICE_ID: &str =
    "(SELECT max((SELECT COALESCE(max(id), 0) FROM devices), (SELECT high FROM device_id_high)) + 1)";

const COLUMNS: &str = "id, enterprise_id, mac, serial, model, firmware, name, created_at, attributes";

fn device_from_row(r: &Row<'_>) -> rusqlite::Result<(Device, Attributes)> {
    let mac: Option<String> = r.get(2)?;
    let attributes: String = r.get(8)?;
    Ok((
        Device {
            id: DeviceId(r.get(0)?),
            enterprise_id: EnterpriseId(r.get(1)?),
            mac: mac.and_then(|m| Mac::parse(&m).ok()),
            serial: r.get(3)?,
            model: r.get(4)?,
            firmware: r.get(5)?,
            name: r.get(6)?,
            created_at: UnixMillis(r.get(7)?),
        },
        decode_attributes(&attributes),
    ))
}

fn by_id(c: &Connection, id: DeviceId) -> Result<Option<(Device, Attributes)>> {
    let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
    Ok(c.prepare_cached(&format!("SELECT {COLUMNS} FROM devices WHERE id = ?1"))?
        .query_row([id], device_from_row)
        .optional()?)
}

/// The device a MAC (else a serial without MAC) finds.
fn by_key(c: &Connection, mac: Option<&Mac>, serial: Option<&str>) -> Result<Option<(Device, Attributes)>> {
    if let Some(mac) = mac {
        return Ok(c
            .prepare_cached(&format!("SELECT {COLUMNS} FROM devices WHERE mac = ?1"))?
            .query_row([mac.as_str()], device_from_row)
            .optional()?);
    }
    let Some(serial) = serial else { return Ok(None) };
    Ok(c.prepare_cached(&format!("SELECT {COLUMNS} FROM devices WHERE serial = ?1 AND mac IS NULL"))?
        .query_row([serial], device_from_row)
        .optional()?)
}

fn editable(d: &Device, attributes: Attributes) -> Editable {
    Editable { enterprise_id: d.enterprise_id, name: d.name.clone(), model: d.model.clone(), attributes }
}

fn insert(c: &Connection, new: &NewInventoryDevice) -> Result<Device> {
    let attributes = encode_attributes(&new.attributes)?;
    let inserted = c
        .prepare_cached(&format!(
            "INSERT INTO devices (id, enterprise_id, mac, serial, model, firmware, name, created_at, device_type, \
             attributes) VALUES ({NEXT_DEVICE_ID}, ?1, ?2, ?3, ?4, '', ?5, ?6, ?7, ?8)"
        ))?
        .execute(params![
            new.enterprise_id.0,
            new.mac.as_ref().map(Mac::as_str),
            new.serial,
            new.model,
            new.name,
            new.at.0,
            DeviceType::of_model(&new.model).as_str(),
            attributes
        ]);
    match inserted {
        Err(e) if is_unique_violation(&e) => return Err(StoreError::AlreadyExists("device")),
        other => other?,
    };
    Ok(Device {
        id: DeviceId(c.last_insert_rowid() as u64),
        enterprise_id: new.enterprise_id,
        mac: new.mac,
        serial: new.serial.clone(),
        model: new.model.clone(),
        firmware: String::new(),
        name: new.name.clone(),
        created_at: new.at,
    })
}

/// Deletes the device's files (rows) and answers their ids, whose content the caller removes
/// after the commit.
fn delete_files(c: &Connection, id: i64) -> Result<Vec<FileId>> {
    let mut st = c.prepare_cached("DELETE FROM files WHERE device_id = ?1 RETURNING id")?;
    let ids = st.query_map([id], |r| r.get(0).map(FileId))?;
    Ok(ids.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Writes an edited device; on a move, cancels its pending commands and deletes its files.
fn write_edit(c: &Connection, d: &Device, next: &Editable, now: UnixMillis) -> Result<Vec<FileId>> {
    let id = i64::try_from(d.id.0).map_err(|_| StoreError::InvalidInput("device id beyond i64".into()))?;
    let mut removed = Vec::new();
    if next.enterprise_id != d.enterprise_id {
        check_exists("enterprise", next.enterprise_id.0, row_exists(c, "enterprises", next.enterprise_id.0)?)?;
        c.prepare_cached(&format!(
            "UPDATE commands SET state = 'cancelled', finished_at = ?2, reason = ?3 WHERE device_id = ?1 AND state IN {}",
            crate::commands::PENDING_SQL
        ))?
        .execute(params![id, now.0, crate::inventory::MOVED_REASON])?;
        removed = delete_files(c, id)?;
        super::groups::leave_all_groups(c, d.id)?;
    }
    c.prepare_cached(
        "UPDATE devices SET site_id = CASE WHEN enterprise_id = ?2 THEN site_id END, enterprise_id = ?2, name = ?3, \
         model = ?4, device_type = ?5, attributes = ?6 WHERE id = ?1",
    )?
    .execute(params![
        id,
        next.enterprise_id.0,
        next.name,
        next.model,
        DeviceType::of_model(&next.model).as_str(),
        encode_attributes(&next.attributes)?
    ])?;
    Ok(removed)
}

impl EmbeddedStore {
    /// Removes the content of deleted files (after their rows are gone).
    async fn remove_contents(&self, ids: Vec<FileId>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let dir = self.files_dir.clone();
        blocking(move || {
            for id in ids {
                remove_quietly(&content_path(&dir, id));
            }
            Ok(())
        })
        .await
    }
}

fn import_from_row(r: &Row<'_>) -> rusqlite::Result<DeviceImport> {
    let mode: String = r.get(3)?;
    let state: String = r.get(4)?;
    Ok(DeviceImport {
        id: r.get(0)?,
        enterprise_id: EnterpriseId(r.get(1)?),
        account_id: AccountId(r.get(2)?),
        mode: ImportMode::parse(&mode).unwrap_or(ImportMode::Create),
        state: ImportState::parse(&state),
        started_at: UnixMillis(r.get(5)?),
        finished_at: r.get::<_, Option<i64>>(6)?.map(UnixMillis),
        counts: ImportCounts {
            rows: r.get(7)?,
            created: r.get(8)?,
            updated: r.get(9)?,
            skipped: r.get(10)?,
            failed: r.get(11)?,
        },
        errors_kept: r.get(12)?,
        note: r.get(13)?,
    })
}

const IMPORT_COLUMNS: &str = "id, enterprise_id, account_id, mode, state, started_at, finished_at, rows, created, \
     updated, skipped, failed, errors_kept, note";

#[async_trait]
impl InventoryStore for EmbeddedStore {
    async fn add_device(&self, new: NewInventoryDevice) -> Result<Device> {
        new.validate()?;
        self.write(1, move |c| {
            check_exists("enterprise", new.enterprise_id.0, row_exists(c, "enterprises", new.enterprise_id.0)?)?;
            // The unique indexes (MAC; serial without MAC) refuse a taken key.
            insert(c, &new)
        })
        .await
    }

    async fn device_attributes(&self, id: DeviceId) -> Result<Option<Attributes>> {
        self.read(move |c| Ok(by_id(c, id)?.map(|(_, a)| a))).await
    }

    async fn edit_device(&self, id: DeviceId, edit: DeviceEdit, now: UnixMillis) -> Result<Option<Device>> {
        edit.validate()?;
        let done = self
            .write(1, move |c| {
                let Some((d, attributes)) = by_id(c, id)? else { return Ok(None) };
                let next = apply_edit(editable(&d, attributes), &edit)?;
                let removed = write_edit(c, &d, &next, now)?;
                let device = Device { enterprise_id: next.enterprise_id, name: next.name, model: next.model, ..d };
                Ok(Some((device, removed)))
            })
            .await?;
        let Some((device, removed)) = done else { return Ok(None) };
        self.remove_contents(removed).await?;
        Ok(Some(device))
    }

    async fn bulk_edit_devices(&self, query: DeviceQuery, edit: DeviceEdit, now: UnixMillis) -> Result<u64> {
        check_bulk_edit(&query, &edit)?;
        if query.matches_nothing() {
            return Ok(0);
        }
        let removed = self
            .write(MAX_BULK_EDIT as usize, move |c| {
                let built = crate::device_sql::ids_sql(&query, MAX_BULK_EDIT + 1, crate::device_sql::Dialect::Sqlite);
                let ids: Vec<i64> = c
                    .prepare(&built.sql)?
                    .query_map(rusqlite::params_from_iter(super::devices::sqlite_args(built.args)), |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                if ids.len() as u64 > MAX_BULK_EDIT {
                    return Err(StoreError::LimitExceeded(format!(
                        "the filter matches more than {MAX_BULK_EDIT} devices; narrow it"
                    )));
                }
                let mut removed = Vec::new();
                for id in &ids {
                    let Some((d, attributes)) = by_id(c, DeviceId(*id as u64))? else { continue };
                    let next = apply_edit(editable(&d, attributes), &edit)
                        .map_err(|e| StoreError::InvalidInput(format!("device {}: {e}", d.id)))?;
                    removed.extend(write_edit(c, &d, &next, now)?);
                }
                Ok((ids.len() as u64, removed))
            })
            .await?;
        self.remove_contents(removed.1).await?;
        Ok(removed.0)
    }

    async fn delete_device(&self, id: DeviceId) -> Result<Option<Device>> {
        let done = self
            .write(1, move |c| {
                let Some((d, _)) = by_id(c, id)? else { return Ok(None) };
                let raw = i64::try_from(id.0).map_err(|_| StoreError::InvalidInput("device id beyond i64".into()))?;
                let removed = delete_files(c, raw)?;
                c.prepare_cached("DELETE FROM commands WHERE device_id = ?1")?.execute([raw])?;
                c.prepare_cached("DELETE FROM devices WHERE id = ?1")?.execute([raw])?;
                c.prepare_cached("UPDATE device_id_high SET high = max(high, ?1)")?.execute([raw])?;
                Ok(Some((d, removed)))
            })
            .await?;
        let Some((device, removed)) = done else { return Ok(None) };
        self.remove_contents(removed).await?;
        Ok(Some(device))
    }

    async fn import_devices(
        &self,
        enterprise: EnterpriseId,
        mode: ImportMode,
        rows: Vec<ImportRow>,
        at: UnixMillis,
    ) -> Result<Vec<ImportOutcome>> {
        check_bound("import rows", rows.len(), MAX_IMPORT_BATCH)?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        self.write(rows.len(), move |c| {
            check_exists("enterprise", enterprise.0, row_exists(c, "enterprises", enterprise.0)?)?;
            let names = if rows.iter().any(|r| r.groups.as_ref().is_some_and(|g| !g.is_empty())) {
                super::groups::group_names(c, enterprise)?
            } else {
                Default::default()
            };
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let wanted = match row.groups.as_deref().map(|n| resolve_group_names(n, &names)).transpose() {
                    Ok(w) => w,
                    Err(reason) => {
                        out.push(ImportOutcome::Failed("endpoint_group", reason));
                        continue;
                    }
                };
                let existing = by_key(c, row.mac.as_ref(), row.serial.as_deref())?;
                let found = existing.as_ref().map(|(d, _)| d.clone());
                let plan = plan_row(enterprise, mode, row, existing.map(|(d, a)| (d.id, editable(&d, a))));
                out.push(match plan {
                    RowPlan::Insert => {
                        let new = NewInventoryDevice {
                            enterprise_id: enterprise,
                            mac: row.mac,
                            serial: row.serial.clone(),
                            model: row.model.clone().unwrap_or_default(),
                            name: row.name.clone().unwrap_or_default(),
                            attributes: row.attributes.clone(),
                            at,
                        };
                        match (new.validate(), import_groups(mode, None, wanted.as_deref())) {
                            (Err(e), _) => ImportOutcome::Failed("", e.to_string()),
                            (_, Err(reason)) => ImportOutcome::Failed("endpoint_group", reason),
                            (Ok(()), Ok(groups)) => match insert(c, &new) {
                                Ok(d) => {
                                    if let Some(groups) = groups {
                                        super::groups::write_groups(c, d.id, &groups)?;
                                    }
                                    ImportOutcome::Created(d.id)
                                }
                                Err(e) => ImportOutcome::Failed("", e.to_string()),
                            },
                        }
                    }
                    RowPlan::Update(id, next) => match found {
                        Some(d) => {
                            let current = super::groups::groups_of(c, id)?;
                            match import_groups(mode, Some(&current), wanted.as_deref()) {
                                Err(reason) => ImportOutcome::Failed("endpoint_group", reason),
                                Ok(groups) => {
                                    write_edit(c, &d, &next, at)?;
                                    if let Some(groups) = groups {
                                        super::groups::write_groups(c, id, &groups)?;
                                    }
                                    ImportOutcome::Updated(id)
                                }
                            }
                        }
                        None => ImportOutcome::Failed("", "the device vanished".into()),
                    },
                    RowPlan::Skip(id) => ImportOutcome::Skipped(id),
                    RowPlan::Fail(column, reason) => ImportOutcome::Failed(column, reason),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn create_device_import(
        &self,
        enterprise: EnterpriseId,
        account: AccountId,
        mode: ImportMode,
        at: UnixMillis,
    ) -> Result<DeviceImport> {
        self.write(1, move |c| {
            check_exists("enterprise", enterprise.0, row_exists(c, "enterprises", enterprise.0)?)?;
            check_exists("account", account.0, row_exists(c, "accounts", account.0)?)?;
            c.prepare_cached(
                "INSERT INTO device_imports (enterprise_id, account_id, mode, state, started_at) \
                 VALUES (?1, ?2, ?3, 'running', ?4)",
            )?
            .execute(params![enterprise.0, account.0, mode.as_str(), at.0])?;
            Ok(DeviceImport {
                id: c.last_insert_rowid() as u64,
                enterprise_id: enterprise,
                account_id: account,
                mode,
                state: ImportState::Running,
                started_at: at,
                finished_at: None,
                counts: ImportCounts::default(),
                errors_kept: 0,
                note: None,
            })
        })
        .await
    }

    async fn record_device_import(&self, id: u64, counts: ImportCounts, errors: Vec<ImportRowError>) -> Result<()> {
        let Ok(id) = i64::try_from(id) else { return Ok(()) };
        check_bound("import errors", errors.len(), MAX_IMPORT_BATCH * 2)?;
        self.write(errors.len().max(1), move |c| {
            let kept: i64 = c
                .prepare_cached("SELECT errors_kept FROM device_imports WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?
                .ok_or_else(|| StoreError::InvalidInput(format!("import {id} does not exist")))?;
            let room = usize::try_from((MAX_IMPORT_ERRORS as i64 - kept).max(0)).unwrap_or(0);
            let mut insert = c.prepare_cached(
                "INSERT OR IGNORE INTO device_import_errors (import_id, line, col, reason) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut added = 0i64;
            for e in errors.iter().take(room) {
                added += insert.execute(params![id, e.line as i64, e.column, e.reason])? as i64;
            }
            c.prepare_cached(
                "UPDATE device_imports SET rows = rows + ?2, created = created + ?3, updated = updated + ?4, \
                 skipped = skipped + ?5, failed = failed + ?6, errors_kept = errors_kept + ?7 WHERE id = ?1",
            )?
            .execute(params![
                id,
                counts.rows as i64,
                counts.created as i64,
                counts.updated as i64,
                counts.skipped as i64,
                counts.failed as i64,
                added
            ])?;
            Ok(())
        })
        .await
    }

    async fn finish_device_import(
        &self,
        id: u64,
        state: ImportState,
        note: Option<String>,
        at: UnixMillis,
    ) -> Result<()> {
        let Ok(id) = i64::try_from(id) else { return Ok(()) };
        let note = note.map(|n| n.chars().take(MAX_IMPORT_REASON).collect::<String>());
        self.write(1, move |c| {
            c.prepare_cached("UPDATE device_imports SET state = ?2, note = ?3, finished_at = ?4 WHERE id = ?1")?
                .execute(params![id, state.as_str(), note, at.0])?;
            Ok(())
        })
        .await
    }

    async fn device_import(&self, id: u64) -> Result<Option<DeviceImport>> {
        let Ok(id) = i64::try_from(id) else { return Ok(None) };
        self.read(move |c| {
            Ok(c.prepare_cached(&format!("SELECT {IMPORT_COLUMNS} FROM device_imports WHERE id = ?1"))?
                .query_row([id], import_from_row)
                .optional()?)
        })
        .await
    }

    async fn device_import_errors(&self, id: u64, after_line: u64, limit: u32) -> Result<Vec<ImportRowError>> {
        let (Ok(id), Ok(after)) = (i64::try_from(id), i64::try_from(after_line)) else { return Ok(Vec::new()) };
        let limit = limit.min(1_000);
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT line, col, reason FROM device_import_errors WHERE import_id = ?1 AND line > ?2 \
                 ORDER BY line LIMIT ?3",
            )?;
            let rows = st.query_map(params![id, after, limit], |r| {
                Ok(ImportRowError { line: r.get::<_, i64>(0)? as u64, column: r.get(1)?, reason: r.get(2)? })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn list_device_imports(
        &self,
        enterprises: Option<Vec<EnterpriseId>>,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<DeviceImport>> {
        let limit = limit.clamp(1, MAX_IMPORT_PAGE);
        if let Some(list) = &enterprises {
            check_bound("enterprises", list.len(), MAX_DEVICE_FILTER_IDS)?;
            if list.is_empty() {
                return Ok(Vec::new());
            }
        }
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        self.read(move |c| {
            let (sql, mut args): (String, Vec<i64>) = match &enterprises {
                Some(list) => (
                    format!(
                        "SELECT {IMPORT_COLUMNS} FROM device_imports WHERE enterprise_id IN ({}) AND id < ? \
                         ORDER BY id DESC LIMIT ?",
                        vec!["?"; list.len()].join(", ")
                    ),
                    list.iter().map(|e| e.0 as i64).collect(),
                ),
                None => (
                    format!("SELECT {IMPORT_COLUMNS} FROM device_imports WHERE id < ? ORDER BY id DESC LIMIT ?"),
                    Vec::new(),
                ),
            };
            args.push(before);
            args.push(i64::from(limit));
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map(rusqlite::params_from_iter(args), import_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn abort_running_device_imports(&self, note: String, at: UnixMillis) -> Result<u64> {
        let note: String = note.chars().take(MAX_IMPORT_REASON).collect();
        self.write(1, move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE device_imports SET state = 'aborted', note = ?1, finished_at = ?2 WHERE state = 'running'",
                )?
                .execute(params![note, at.0])?;
            Ok(n as u64)
        })
        .await
    }
}
