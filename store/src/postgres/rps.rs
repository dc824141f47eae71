//! The RPS device list on PostgreSQL ([`RpsStore`]); an import is one transaction that locks
//! the enterprise's row, so concurrent imports count the list's size right.

use async_trait::async_trait;
use fleetpulse_proto::domain::DeviceKey;
use fleetpulse_proto::{EnterpriseId, RpsDeviceId, UnixMillis};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{PgEntityStore, backend, db_id, row_id, unique_as};
use crate::rps::{rps_key, split_rps_key};
use crate::*;

macro_rules! rps_columns {
    () => {
        "id, enterprise_id, device_key, server_url, created_at, updated_at"
    };
}

fn rps_from_row(r: &PgRow) -> Result<RpsDevice> {
    let (mac, serial) = split_rps_key(&r.try_get::<String, _>("device_key").map_err(backend)?);
    Ok(RpsDevice {
        id: RpsDeviceId(row_id(r.try_get("id").map_err(backend)?)),
        enterprise_id: EnterpriseId(row_id(r.try_get("enterprise_id").map_err(backend)?)),
        mac,
        serial,
        server_url: r.try_get("server_url").map_err(backend)?,
        created_at: UnixMillis(r.try_get("created_at").map_err(backend)?),
        updated_at: UnixMillis(r.try_get("updated_at").map_err(backend)?),
    })
}

/// Locks the enterprise's row (refusing an unknown one) and counts its list.
async fn lock_and_count(tx: &mut sqlx::PgConnection, enterprise: EnterpriseId) -> Result<u64> {
    let id = db_id(enterprise.0);
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM enterprises WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
    check_exists("enterprise", enterprise.0, found.is_some())?;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM rps_devices WHERE enterprise_id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
    Ok(row_id(count))
}

fn check_room(count: u64) -> Result<()> {
    if count > MAX_RPS_DEVICES_PER_ENTERPRISE {
        return Err(StoreError::LimitExceeded(format!(
            "an enterprise has at most {MAX_RPS_DEVICES_PER_ENTERPRISE} RPS devices"
        )));
    }
    Ok(())
}

const INSERT_RPS: &str = concat!(
    "INSERT INTO rps_devices (enterprise_id, device_key, server_url, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $4) RETURNING ",
    rps_columns!()
);

#[async_trait]
impl RpsStore for PgEntityStore {
    async fn add_rps_device(&self, new: NewRpsDevice) -> Result<RpsDevice> {
        check_server_url(&new.server_url)?;
        let key = rps_key(&new.key)?;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        check_room(lock_and_count(&mut tx, new.enterprise_id).await? + 1)?;
        let row = sqlx::query(INSERT_RPS)
            .bind(db_id(new.enterprise_id.0))
            .bind(key)
            .bind(&new.server_url)
            .bind(new.at.0)
            .fetch_one(&mut *tx)
            .await
            .map_err(unique_as("RPS device"))?;
        tx.commit().await.map_err(backend)?;
        rps_from_row(&row)
    }

    async fn rps_device(&self, id: RpsDeviceId) -> Result<Option<RpsDevice>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(concat!("SELECT ", rps_columns!(), " FROM rps_devices WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(rps_from_row)
            .transpose()
    }

    async fn set_rps_server(&self, id: RpsDeviceId, server_url: String, at: UnixMillis) -> Result<Option<RpsDevice>> {
        check_server_url(&server_url)?;
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(concat!(
            "UPDATE rps_devices SET server_url = $2, updated_at = $3 WHERE id = $1 RETURNING ",
            rps_columns!()
        ))
        .bind(id)
        .bind(server_url)
        .bind(at.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(rps_from_row)
        .transpose()
    }

    async fn delete_rps_device(&self, id: RpsDeviceId) -> Result<bool> {
        let Some(id) = db_id(id.0) else { return Ok(false) };
        let done =
            sqlx::query("DELETE FROM rps_devices WHERE id = $1").bind(id).execute(&self.pool).await.map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_rps_devices(&self, filter: &RpsFilter, page: Page) -> Result<Vec<RpsDevice>> {
        filter.validate()?;
        let enterprises: Option<Vec<i64>> =
            filter.enterprises.as_ref().map(|e| e.iter().filter_map(|e| db_id(e.0)).collect());
        let q = search_needle(filter.q.as_deref())?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            rps_columns!(),
            " FROM rps_devices WHERE id > $1 AND ($2::bigint[] IS NULL OR enterprise_id = ANY($2)) \
             AND ($3::text IS NULL OR strpos(lower(device_key || ' ' || server_url), $3) > 0) \
             ORDER BY id LIMIT $4"
        ))
        .bind(i64::try_from(page.after).unwrap_or(i64::MAX))
        .bind(enterprises)
        .bind(q)
        .bind(i64::from(page.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(rps_from_row).collect()
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
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let mut count = lock_and_count(&mut tx, enterprise).await?;
        let e = db_id(enterprise.0);
        let mut outcomes = Vec::with_capacity(keyed.len());
        for (key, url) in &keyed {
            let found = sqlx::query("SELECT id, enterprise_id FROM rps_devices WHERE device_key = $1 FOR UPDATE")
                .bind(key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
            let outcome = match found {
                Some(row) => {
                    let id: i64 = row.try_get("id").map_err(backend)?;
                    let owner: i64 = row.try_get("enterprise_id").map_err(backend)?;
                    if Some(owner) == e {
                        sqlx::query("UPDATE rps_devices SET server_url = $2, updated_at = $3 WHERE id = $1")
                            .bind(id)
                            .bind(url)
                            .bind(at.0)
                            .execute(&mut *tx)
                            .await
                            .map_err(backend)?;
                        RpsImportOutcome::Updated(RpsDeviceId(row_id(id)))
                    } else {
                        RpsImportOutcome::Taken
                    }
                }
                None => {
                    count += 1;
                    check_room(count)?;
                    let row = sqlx::query(INSERT_RPS)
                        .bind(e)
                        .bind(key)
                        .bind(url)
                        .bind(at.0)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(unique_as("RPS device"))?;
                    RpsImportOutcome::Added(rps_from_row(&row)?.id)
                }
            };
            outcomes.push(outcome);
        }
        tx.commit().await.map_err(backend)?;
        Ok(outcomes)
    }

    async fn rps_server(&self, key: &DeviceKey) -> Result<Option<(EnterpriseId, String)>> {
        let key = rps_key(key)?;
        let row = sqlx::query("SELECT enterprise_id, server_url FROM rps_devices WHERE device_key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some((
            EnterpriseId(row_id(row.try_get("enterprise_id").map_err(backend)?)),
            row.try_get("server_url").map_err(backend)?,
        )))
    }
}
