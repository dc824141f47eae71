//! The RPS device list on SQLite ([`RpsStore`]).

use async_trait::async_trait;
use fleetpulse_proto::domain::DeviceKey;
use fleetpulse_proto::{EnterpriseId, RpsDeviceId, UnixMillis};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{EmbeddedStore, SqlValue, backend, db_after, is_unique_violation, row_exists};
use crate::rps::{rps_key, split_rps_key};
use crate::*;

const RPS_COLUMNS: &str = "id, enterprise_id, device_key, server_url, created_at, updated_at";

fn rps_from_row(r: &Row<'_>) -> rusqlite::Result<RpsDevice> {
    let (mac, serial) = split_rps_key(&r.get::<_, String>(2)?);
    Ok(RpsDevice {
        id: RpsDeviceId(r.get(0)?),
        enterprise_id: EnterpriseId(r.get(1)?),
        mac,
        serial,
        server_url: r.get(3)?,
        created_at: UnixMillis(r.get(4)?),
        updated_at: UnixMillis(r.get(5)?),
    })
}

fn rps_by_id(c: &Connection, id: i64) -> Result<Option<RpsDevice>> {
    Ok(c.prepare_cached(&format!("SELECT {RPS_COLUMNS} FROM rps_devices WHERE id = ?1"))?
        .query_row([id], rps_from_row)
        .optional()?)
}

fn entries_of(c: &Connection, enterprise: u64) -> Result<u64> {
    Ok(c.prepare_cached("SELECT count(*) FROM rps_devices WHERE enterprise_id = ?1")?
        .query_row([db_after(enterprise)], |r| r.get(0))?)
}

fn check_room(count: u64) -> Result<()> {
    if count > MAX_RPS_DEVICES_PER_ENTERPRISE {
        return Err(StoreError::LimitExceeded(format!(
            "an enterprise has at most {MAX_RPS_DEVICES_PER_ENTERPRISE} RPS devices"
        )));
    }
    Ok(())
}

#[async_trait]
impl RpsStore for EmbeddedStore {
    async fn add_rps_device(&self, new: NewRpsDevice) -> Result<RpsDevice> {
        check_server_url(&new.server_url)?;
        let key = rps_key(&new.key)?;
        self.write(1, move |c| {
            let e = new.enterprise_id.0;
            check_exists("enterprise", e, row_exists(c, "enterprises", e)?)?;
            check_room(entries_of(c, e)? + 1)?;
            c.prepare_cached(
                "INSERT INTO rps_devices (enterprise_id, device_key, server_url, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?4)",
            )?
            .execute(params![db_after(e), key, new.server_url, new.at.0])
            .map_err(|e| if is_unique_violation(&e) { StoreError::AlreadyExists("RPS device") } else { backend(e) })?;
            rps_by_id(c, c.last_insert_rowid())?.ok_or_else(|| StoreError::Backend("inserted RPS row vanished".into()))
        })
        .await
    }

    async fn rps_device(&self, id: RpsDeviceId) -> Result<Option<RpsDevice>> {
        let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
        self.read(move |c| rps_by_id(c, id)).await
    }

    async fn set_rps_server(&self, id: RpsDeviceId, server_url: String, at: UnixMillis) -> Result<Option<RpsDevice>> {
        check_server_url(&server_url)?;
        let Ok(id) = i64::try_from(id.0) else { return Ok(None) };
        self.write(1, move |c| {
            c.prepare_cached("UPDATE rps_devices SET server_url = ?2, updated_at = ?3 WHERE id = ?1")?
                .execute(params![id, server_url, at.0])?;
            rps_by_id(c, id)
        })
        .await
    }

    async fn delete_rps_device(&self, id: RpsDeviceId) -> Result<bool> {
        let Ok(id) = i64::try_from(id.0) else { return Ok(false) };
        self.write(1, move |c| Ok(c.prepare_cached("DELETE FROM rps_devices WHERE id = ?1")?.execute([id])? > 0)).await
    }

    async fn list_rps_devices(&self, filter: &RpsFilter, page: Page) -> Result<Vec<RpsDevice>> {
        filter.validate()?;
        let mut terms = vec!["id > ?".to_owned()];
        let mut values: Vec<SqlValue> = vec![Box::new(db_after(page.after))];
        if let Some(enterprises) = &filter.enterprises {
            let ids: Vec<u64> = enterprises.iter().map(|e| e.0).collect();
            let ids = serde_json::to_string(&ids).map_err(|e| StoreError::Backend(format!("encoding ids: {e}")))?;
            terms.push("enterprise_id IN (SELECT value FROM json_each(?))".into());
            values.push(Box::new(ids));
        }
        if let Some(q) = search_needle(filter.q.as_deref())? {
            terms.push("instr(lower(device_key || ' ' || server_url), ?) > 0".into());
            values.push(Box::new(q));
        }
        values.push(Box::new(page.limit));
        let sql = format!("SELECT {RPS_COLUMNS} FROM rps_devices WHERE {} ORDER BY id LIMIT ?", terms.join(" AND "));
        self.read(move |c| {
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map(rusqlite::params_from_iter(values.iter()), rps_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn import_rps_devices(
        &self,
        enterprise: EnterpriseId,
        rows: Vec<(DeviceKey, String)>,
        at: UnixMillis,
    ) -> Result<Vec<RpsImportOutcome>> {
        check_bound("RPS import rows", rows.len(), MAX_RPS_IMPORT_ROWS)?;
        let mut keyed = Vec::with_capacity(rows.len());
        for (key, url) in rows {
            check_server_url(&url)?;
            keyed.push((rps_key(&key)?, url));
        }
        self.write(keyed.len().max(1), move |c| {
            let e = enterprise.0;
            check_exists("enterprise", e, row_exists(c, "enterprises", e)?)?;
            let mut count = entries_of(c, e)?;
            let mut outcomes = Vec::with_capacity(keyed.len());
            for (key, url) in &keyed {
                let found: Option<(i64, u64)> = c
                    .prepare_cached("SELECT id, enterprise_id FROM rps_devices WHERE device_key = ?1")?
                    .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                let outcome = match found {
                    Some((id, owner)) if owner == e => {
                        c.prepare_cached("UPDATE rps_devices SET server_url = ?2, updated_at = ?3 WHERE id = ?1")?
                            .execute(params![id, url, at.0])?;
                        RpsImportOutcome::Updated(RpsDeviceId(id as u64))
                    }
                    Some(_) => RpsImportOutcome::Taken,
                    None => {
                        count += 1;
                        check_room(count)?;
                        c.prepare_cached(
                            "INSERT INTO rps_devices (enterprise_id, device_key, server_url, created_at, updated_at) \
                             VALUES (?1, ?2, ?3, ?4, ?4)",
                        )?
                        .execute(params![db_after(e), key, url, at.0])?;
                        RpsImportOutcome::Added(RpsDeviceId(c.last_insert_rowid() as u64))
                    }
                };
                outcomes.push(outcome);
            }
            Ok(outcomes)
        })
        .await
    }

    async fn rps_server(&self, key: &DeviceKey) -> Result<Option<(EnterpriseId, String)>> {
        let key = rps_key(key)?;
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT enterprise_id, server_url FROM rps_devices WHERE device_key = ?1")?
                .query_row([key], |r| Ok((EnterpriseId(r.get(0)?), r.get(1)?)))
                .optional()?)
        })
        .await
    }
}
