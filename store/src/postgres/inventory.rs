//! The device inventory on PostgreSQL ([`InventoryStore`]): devices added, edited, moved and
//! deleted (with their commands and files, chunks by cascade), bulk edits, import batches in
//! one transaction (inserts race-free by `ON CONFLICT DO NOTHING`) and import logs.

use async_trait::async_trait;
use fleetpulse_proto::catalog::DeviceType;
use fleetpulse_proto::{AccountId, DeviceId, EnterpriseId, Mac, UnixMillis};
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Postgres, Row, Transaction};

use super::{PgEntityStore, backend, db_id, row_id};
use crate::groups::{import_groups, resolve_group_names};
use crate::inventory::{
    Editable, RowPlan, apply_edit, check_bulk_edit, decode_attributes, encode_attributes, plan_row,
};
use crate::*;

const COLUMNS: &str = "id, enterprise_id, mac, serial, model, firmware, name, created_at, attributes";

fn device_from_row(r: &PgRow) -> Result<(Device, Attributes)> {
    let mac: Option<String> = r.try_get("mac").map_err(backend)?;
    let attributes: String = r.try_get("attributes").map_err(backend)?;
    Ok((
        Device {
            id: DeviceId(row_id(r.try_get("id").map_err(backend)?)),
            enterprise_id: EnterpriseId(row_id(r.try_get("enterprise_id").map_err(backend)?)),
            mac: mac.and_then(|m| Mac::parse(&m).ok()),
            serial: r.try_get("serial").map_err(backend)?,
            model: r.try_get("model").map_err(backend)?,
            firmware: r.try_get("firmware").map_err(backend)?,
            name: r.try_get("name").map_err(backend)?,
            created_at: UnixMillis(r.try_get("created_at").map_err(backend)?),
        },
        decode_attributes(&attributes),
    ))
}

/// The device row, locked for the transaction.
async fn by_id(c: &mut PgConnection, id: DeviceId) -> Result<Option<(Device, Attributes)>> {
    let Some(id) = db_id(id.0) else { return Ok(None) };
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM devices WHERE id = $1 FOR UPDATE")))
        .bind(id)
        .fetch_optional(&mut *c)
        .await
        .map_err(backend)?;
    row.as_ref().map(device_from_row).transpose()
}

/// The device a MAC (else a serial without MAC) finds, locked.
async fn by_key(c: &mut PgConnection, mac: Option<&Mac>, serial: Option<&str>) -> Result<Option<(Device, Attributes)>> {
    let row = if let Some(mac) = mac {
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM devices WHERE mac = $1 FOR UPDATE")))
            .bind(mac.as_str())
            .fetch_optional(&mut *c)
            .await
    } else if let Some(serial) = serial {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM devices WHERE serial = $1 AND mac IS NULL FOR UPDATE"
        )))
        .bind(serial)
        .fetch_optional(&mut *c)
        .await
    } else {
        return Ok(None);
    };
    row.map_err(backend)?.as_ref().map(device_from_row).transpose()
}

fn editable(d: &Device, attributes: Attributes) -> Editable {
    Editable { enterprise_id: d.enterprise_id, name: d.name.clone(), model: d.model.clone(), attributes }
}

async fn enterprise_exists(c: &mut PgConnection, e: EnterpriseId) -> Result<bool> {
    let Some(id) = db_id(e.0) else { return Ok(false) };
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM enterprises WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *c)
        .await
        .map_err(backend)?;
    Ok(found.is_some())
}

/// Inserts the device; `None` if its key is taken (any unique index).
async fn insert(c: &mut PgConnection, new: &NewInventoryDevice) -> Result<Option<Device>> {
    let enterprise = db_id(new.enterprise_id.0).ok_or_else(|| StoreError::InvalidInput("enterprise id".into()))?;
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO devices (enterprise_id, mac, serial, model, firmware, name, created_at, device_type, attributes) \
         VALUES ($1, $2, $3, $4, '', $5, $6, $7, $8) ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(enterprise)
    .bind(new.mac.as_ref().map(Mac::as_str))
    .bind(&new.serial)
    .bind(&new.model)
    .bind(&new.name)
    .bind(new.at.0)
    .bind(DeviceType::of_model(&new.model).as_str())
    .bind(encode_attributes(&new.attributes)?)
    .fetch_optional(&mut *c)
    .await
    .map_err(backend)?;
    Ok(id.map(|id| Device {
        id: DeviceId(row_id(id)),
        enterprise_id: new.enterprise_id,
        mac: new.mac,
        serial: new.serial.clone(),
        model: new.model.clone(),
        firmware: String::new(),
        name: new.name.clone(),
        created_at: new.at,
    }))
}

/// Writes an edited device; on a move, cancels its pending commands and deletes its files.
async fn write_edit(c: &mut PgConnection, d: &Device, next: &Editable, now: UnixMillis) -> Result<()> {
    let id = db_id(d.id.0).ok_or_else(|| StoreError::InvalidInput("device id beyond i64".into()))?;
    if next.enterprise_id != d.enterprise_id {
        check_exists("enterprise", next.enterprise_id.0, enterprise_exists(c, next.enterprise_id).await?)?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE commands SET state = 'cancelled', finished_at = $2, reason = $3 WHERE device_id = $1 AND state IN {}",
            crate::commands::PENDING_SQL
        )))
        .bind(id)
        .bind(now.0)
        .bind(crate::inventory::MOVED_REASON)
        .execute(&mut *c)
        .await
        .map_err(backend)?;
        sqlx::query("DELETE FROM files WHERE device_id = $1").bind(id).execute(&mut *c).await.map_err(backend)?;
        super::groups::leave_all_groups(c, d.enterprise_id, d.id).await?;
    }
    sqlx::query(
        "UPDATE devices SET site_id = CASE WHEN enterprise_id = $2 THEN site_id END, enterprise_id = $2, name = $3, \
         model = $4, device_type = $5, attributes = $6 WHERE id = $1",
    )
    .bind(id)
    .bind(db_id(next.enterprise_id.0).unwrap_or(i64::MAX))
    .bind(&next.name)
    .bind(&next.model)
    .bind(DeviceType::of_model(&next.model).as_str())
    .bind(encode_attributes(&next.attributes)?)
    .execute(&mut *c)
    .await
    .map_err(backend)?;
    Ok(())
}

fn import_from_row(r: &PgRow) -> Result<DeviceImport> {
    let get = |name: &str| r.try_get::<i64, _>(name).map_err(backend);
    let count = |name: &str| get(name).map(|v| u64::try_from(v).unwrap_or(0));
    let mode: String = r.try_get("mode").map_err(backend)?;
    let state: String = r.try_get("state").map_err(backend)?;
    Ok(DeviceImport {
        id: row_id(get("id")?),
        enterprise_id: EnterpriseId(row_id(get("enterprise_id")?)),
        account_id: AccountId(row_id(get("account_id")?)),
        mode: ImportMode::parse(&mode).unwrap_or(ImportMode::Create),
        state: ImportState::parse(&state),
        started_at: UnixMillis(get("started_at")?),
        finished_at: r.try_get::<Option<i64>, _>("finished_at").map_err(backend)?.map(UnixMillis),
        counts: ImportCounts {
            rows: count("rows")?,
            created: count("created")?,
            updated: count("updated")?,
            skipped: count("skipped")?,
            failed: count("failed")?,
        },
        errors_kept: count("errors_kept")?,
        note: r.try_get("note").map_err(backend)?,
    })
}

impl PgEntityStore {
    async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(backend)
    }
}

#[async_trait]
impl InventoryStore for PgEntityStore {
    async fn add_device(&self, new: NewInventoryDevice) -> Result<Device> {
        new.validate()?;
        let mut tx = self.begin().await?;
        check_exists("enterprise", new.enterprise_id.0, enterprise_exists(&mut tx, new.enterprise_id).await?)?;
        let device = insert(&mut tx, &new).await?.ok_or(StoreError::AlreadyExists("device"))?;
        tx.commit().await.map_err(backend)?;
        Ok(device)
    }

    async fn device_attributes(&self, id: DeviceId) -> Result<Option<Attributes>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        let found: Option<String> = sqlx::query_scalar("SELECT attributes FROM devices WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Ok(found.as_deref().map(decode_attributes))
    }

    async fn edit_device(&self, id: DeviceId, edit: DeviceEdit, now: UnixMillis) -> Result<Option<Device>> {
        edit.validate()?;
        let mut tx = self.begin().await?;
        let Some((d, attributes)) = by_id(&mut tx, id).await? else { return Ok(None) };
        let next = apply_edit(editable(&d, attributes), &edit)?;
        write_edit(&mut tx, &d, &next, now).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(Device { enterprise_id: next.enterprise_id, name: next.name, model: next.model, ..d }))
    }

    async fn bulk_edit_devices(&self, query: DeviceQuery, edit: DeviceEdit, now: UnixMillis) -> Result<u64> {
        check_bulk_edit(&query, &edit)?;
        if query.matches_nothing() {
            return Ok(0);
        }
        let built = crate::device_sql::ids_sql(&query, MAX_BULK_EDIT + 1, crate::device_sql::Dialect::Postgres);
        let mut tx = self.begin().await?;
        let rows = super::devices::pg_query(built).fetch_all(&mut *tx).await.map_err(backend)?;
        if rows.len() as u64 > MAX_BULK_EDIT {
            return Err(StoreError::LimitExceeded(format!(
                "the filter matches more than {MAX_BULK_EDIT} devices; narrow it"
            )));
        }
        let mut changed = 0;
        for r in rows {
            let id: i64 = r.try_get(0).map_err(backend)?;
            let Some((d, attributes)) = by_id(&mut tx, DeviceId(row_id(id))).await? else { continue };
            let next = apply_edit(editable(&d, attributes), &edit)
                .map_err(|e| StoreError::InvalidInput(format!("device {}: {e}", d.id)))?;
            write_edit(&mut tx, &d, &next, now).await?;
            changed += 1;
        }
        tx.commit().await.map_err(backend)?;
        Ok(changed)
    }

    async fn delete_device(&self, id: DeviceId) -> Result<Option<Device>> {
        let mut tx = self.begin().await?;
        let Some((d, _)) = by_id(&mut tx, id).await? else { return Ok(None) };
        let raw = db_id(id.0).unwrap_or(i64::MAX);
        for sql in [
            "DELETE FROM files WHERE device_id = $1",
            "DELETE FROM commands WHERE device_id = $1",
            "DELETE FROM devices WHERE id = $1",
        ] {
            sqlx::query(sql).bind(raw).execute(&mut *tx).await.map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(Some(d))
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
        let mut tx = self.begin().await?;
        check_exists("enterprise", enterprise.0, enterprise_exists(&mut tx, enterprise).await?)?;
        let names = if rows.iter().any(|r| r.groups.is_some()) {
            super::groups::lock_groups(&mut tx, enterprise).await?;
            super::groups::group_names(&mut tx, enterprise).await?
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
            let existing = by_key(&mut tx, row.mac.as_ref(), row.serial.as_deref()).await?;
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
                        (Ok(()), Ok(groups)) => match insert(&mut tx, &new).await? {
                            Some(d) => {
                                if let Some(groups) = groups {
                                    super::groups::write_groups(&mut tx, d.id, &groups).await?;
                                }
                                ImportOutcome::Created(d.id)
                            }
                            None => ImportOutcome::Failed("", "the device was added concurrently".into()),
                        },
                    }
                }
                RowPlan::Update(id, next) => match found {
                    Some(d) => {
                        let current = super::groups::groups_of(&mut tx, id).await?;
                        match import_groups(mode, Some(&current), wanted.as_deref()) {
                            Err(reason) => ImportOutcome::Failed("endpoint_group", reason),
                            Ok(groups) => {
                                write_edit(&mut tx, &d, &next, at).await?;
                                if let Some(groups) = groups {
                                    super::groups::write_groups(&mut tx, id, &groups).await?;
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
        tx.commit().await.map_err(backend)?;
        Ok(out)
    }

    async fn create_device_import(
        &self,
        enterprise: EnterpriseId,
        account: AccountId,
        mode: ImportMode,
        at: UnixMillis,
    ) -> Result<DeviceImport> {
        let (Some(e), Some(a)) = (db_id(enterprise.0), db_id(account.0)) else {
            return Err(StoreError::InvalidInput("enterprise or account id beyond i64".into()));
        };
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO device_imports (enterprise_id, account_id, mode, state, started_at) \
             SELECT $1, $2, $3, 'running', $4 WHERE EXISTS (SELECT 1 FROM enterprises WHERE id = $1) \
             AND EXISTS (SELECT 1 FROM accounts WHERE id = $2) RETURNING id",
        )
        .bind(e)
        .bind(a)
        .bind(mode.as_str())
        .bind(at.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        let id = id.ok_or_else(|| StoreError::InvalidInput("the enterprise or the account does not exist".into()))?;
        Ok(DeviceImport {
            id: row_id(id),
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
    }

    async fn record_device_import(&self, id: u64, counts: ImportCounts, errors: Vec<ImportRowError>) -> Result<()> {
        let Some(id) = db_id(id) else { return Ok(()) };
        check_bound("import errors", errors.len(), MAX_IMPORT_BATCH * 2)?;
        let mut tx = self.begin().await?;
        let kept: Option<i64> = sqlx::query_scalar("SELECT errors_kept FROM device_imports WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        let kept = kept.ok_or_else(|| StoreError::InvalidInput(format!("import {id} does not exist")))?;
        let room = usize::try_from((MAX_IMPORT_ERRORS as i64 - kept).max(0)).unwrap_or(0);
        let kept_now: Vec<&ImportRowError> = errors.iter().take(room).collect();
        let lines: Vec<i64> = kept_now.iter().map(|e| i64::try_from(e.line).unwrap_or(i64::MAX)).collect();
        let cols: Vec<&str> = kept_now.iter().map(|e| e.column.as_str()).collect();
        let reasons: Vec<&str> = kept_now.iter().map(|e| e.reason.as_str()).collect();
        let added = sqlx::query(
            "INSERT INTO device_import_errors (import_id, line, col, reason) \
             SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(lines)
        .bind(cols)
        .bind(reasons)
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        sqlx::query(
            "UPDATE device_imports SET rows = rows + $2, created = created + $3, updated = updated + $4, \
             skipped = skipped + $5, failed = failed + $6, errors_kept = errors_kept + $7 WHERE id = $1",
        )
        .bind(id)
        .bind(n(counts.rows))
        .bind(n(counts.created))
        .bind(n(counts.updated))
        .bind(n(counts.skipped))
        .bind(n(counts.failed))
        .bind(n(added))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn finish_device_import(
        &self,
        id: u64,
        state: ImportState,
        note: Option<String>,
        at: UnixMillis,
    ) -> Result<()> {
        let Some(id) = db_id(id) else { return Ok(()) };
        let note = note.map(|n| n.chars().take(MAX_IMPORT_REASON).collect::<String>());
        sqlx::query("UPDATE device_imports SET state = $2, note = $3, finished_at = $4 WHERE id = $1")
            .bind(id)
            .bind(state.as_str())
            .bind(note)
            .bind(at.0)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn device_import(&self, id: u64) -> Result<Option<DeviceImport>> {
        let Some(id) = db_id(id) else { return Ok(None) };
        let row = sqlx::query("SELECT * FROM device_imports WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(import_from_row).transpose()
    }

    async fn device_import_errors(&self, id: u64, after_line: u64, limit: u32) -> Result<Vec<ImportRowError>> {
        let (Some(id), Some(after)) = (db_id(id), db_id(after_line)) else { return Ok(Vec::new()) };
        let rows = sqlx::query(
            "SELECT line, col, reason FROM device_import_errors WHERE import_id = $1 AND line > $2 ORDER BY line LIMIT $3",
        )
        .bind(id)
        .bind(after)
        .bind(i64::from(limit.min(1_000)))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|r| {
                Ok(ImportRowError {
                    line: row_id(r.try_get("line").map_err(backend)?),
                    column: r.try_get("col").map_err(backend)?,
                    reason: r.try_get("reason").map_err(backend)?,
                })
            })
            .collect()
    }

    async fn list_device_imports(
        &self,
        enterprises: Option<Vec<EnterpriseId>>,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<DeviceImport>> {
        let limit = limit.clamp(1, MAX_IMPORT_PAGE);
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let rows = match enterprises {
            Some(list) => {
                check_bound("enterprises", list.len(), MAX_DEVICE_FILTER_IDS)?;
                let ids: Vec<i64> = list.iter().filter_map(|e| db_id(e.0)).collect();
                sqlx::query(
                    "SELECT * FROM device_imports WHERE enterprise_id = ANY($1) AND id < $2 ORDER BY id DESC LIMIT $3",
                )
                .bind(ids)
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query("SELECT * FROM device_imports WHERE id < $1 ORDER BY id DESC LIMIT $2")
                    .bind(before)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(backend)?;
        rows.iter().map(import_from_row).collect()
    }

    async fn abort_running_device_imports(&self, note: String, at: UnixMillis) -> Result<u64> {
        let note: String = note.chars().take(MAX_IMPORT_REASON).collect();
        let done = sqlx::query(
            "UPDATE device_imports SET state = 'aborted', note = $1, finished_at = $2 WHERE state = 'running'",
        )
        .bind(note)
        .bind(at.0)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected())
    }
}
