//! Site incidents on PostgreSQL ([`IncidentStore`]): as in the embedded store, one row per
//! incident upserted by its natural key and one per member activation.

use async_trait::async_trait;
use fleetpulse_proto::{AlarmTypeCode, DeviceId, EnterpriseId, IncidentId, SiteId, StrategyId, UnixMillis};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{PgEntityStore, backend, db_id, newest_first, row_id};
use crate::*;

const INCIDENT_COLUMNS: &str = "id, enterprise_id, strategy_id, site_id, site_name, code, opened_at, updated_at, \
     resolved_at, site_devices, affected, back";

fn count(r: &PgRow, column: &str) -> Result<u32> {
    let n: i64 = r.try_get(column).map_err(backend)?;
    u32::try_from(n).map_err(|_| StoreError::Backend(format!("{column} {n}")))
}

fn code_of(r: &PgRow) -> Result<AlarmTypeCode> {
    let code: i32 = r.try_get("code").map_err(backend)?;
    Ok(AlarmTypeCode(u16::try_from(code).map_err(|_| StoreError::Backend(format!("alarm code {code}")))?))
}

fn incident_from_row(r: &PgRow) -> Result<StoredIncident> {
    Ok(StoredIncident {
        id: IncidentId(row_id(r.try_get("id").map_err(backend)?)),
        enterprise_id: EnterpriseId(row_id(r.try_get("enterprise_id").map_err(backend)?)),
        strategy_id: StrategyId(row_id(r.try_get("strategy_id").map_err(backend)?)),
        site_id: SiteId(row_id(r.try_get("site_id").map_err(backend)?)),
        site_name: r.try_get("site_name").map_err(backend)?,
        code: code_of(r)?,
        opened_at: UnixMillis(r.try_get("opened_at").map_err(backend)?),
        updated_at: UnixMillis(r.try_get("updated_at").map_err(backend)?),
        resolved_at: r.try_get::<Option<i64>, _>("resolved_at").map_err(backend)?.map(UnixMillis),
        site_devices: count(r, "site_devices")?,
        affected: count(r, "affected")?,
        back: count(r, "back")?,
    })
}

fn out_of_range() -> StoreError {
    StoreError::Backend("id out of range".into())
}

#[async_trait]
impl IncidentStore for PgEntityStore {
    async fn record_incident(&self, u: IncidentUpdate) -> Result<IncidentId> {
        check_update(&u)?;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO alarm_incidents (enterprise_id, strategy_id, site_id, site_name, code, opened_at, \
             updated_at, resolved_at, site_devices, affected, back) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (enterprise_id, strategy_id, site_id, code, opened_at) DO UPDATE SET \
             updated_at = GREATEST(alarm_incidents.updated_at, EXCLUDED.updated_at), \
             resolved_at = COALESCE(alarm_incidents.resolved_at, EXCLUDED.resolved_at), \
             affected = EXCLUDED.affected, back = EXCLUDED.back \
             RETURNING id",
        )
        .bind(db_id(u.enterprise_id.0).ok_or_else(out_of_range)?)
        .bind(db_id(u.strategy_id.0).ok_or_else(out_of_range)?)
        .bind(db_id(u.site_id.0).ok_or_else(out_of_range)?)
        .bind(&u.site_name)
        .bind(i32::from(u.code.0))
        .bind(u.opened_at.0)
        .bind(u.at.0)
        .bind(u.resolved_at.map(|t| t.0))
        .bind(i64::from(u.site_devices))
        .bind(i64::from(u.affected))
        .bind(i64::from(u.back))
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        if !u.members.is_empty() {
            let devices: Vec<i64> = u.members.iter().filter_map(|m| db_id(m.device_id.0)).collect();
            let firsts: Vec<i64> =
                u.members.iter().filter(|m| db_id(m.device_id.0).is_some()).map(|m| m.first_at.0).collect();
            let backs: Vec<bool> =
                u.members.iter().filter(|m| db_id(m.device_id.0).is_some()).map(|m| m.back).collect();
            sqlx::query(
                "INSERT INTO alarm_incident_members (incident_id, device_id, code, first_at, back) \
                 SELECT $1, d, $2, f, b FROM UNNEST($3::BIGINT[], $4::BIGINT[], $5::BOOLEAN[]) AS m (d, f, b) \
                 ON CONFLICT (incident_id, device_id) DO UPDATE SET first_at = EXCLUDED.first_at, back = EXCLUDED.back",
            )
            .bind(id)
            .bind(i32::from(u.code.0))
            .bind(devices)
            .bind(firsts)
            .bind(backs)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(IncidentId(row_id(id)))
    }

    async fn incident(&self, id: IncidentId) -> Result<Option<StoredIncident>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {INCIDENT_COLUMNS} FROM alarm_incidents WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(incident_from_row)
            .transpose()
    }

    async fn list_incidents(&self, enterprise: EnterpriseId, page: Page) -> Result<Vec<StoredIncident>> {
        check_page(page)?;
        newest_first(
            &self.pool,
            INCIDENT_COLUMNS,
            "alarm_incidents",
            "enterprise_id",
            enterprise.0,
            page,
            MAX_INCIDENT_PAGE,
            incident_from_row,
        )
        .await
    }

    async fn incident_members(&self, id: IncidentId, page: Page) -> Result<Vec<IncidentMember>> {
        check_page(page)?;
        let Some(id) = db_id(id.0) else { return Ok(Vec::new()) };
        let after = db_id(page.after).unwrap_or(i64::MAX);
        sqlx::query(
            "SELECT device_id, first_at, back FROM alarm_incident_members \
             WHERE incident_id = $1 AND device_id > $2 ORDER BY device_id LIMIT $3",
        )
        .bind(id)
        .bind(after)
        .bind(i64::from(page.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(|r| {
            Ok(IncidentMember {
                device_id: DeviceId(row_id(r.try_get("device_id").map_err(backend)?)),
                first_at: UnixMillis(r.try_get("first_at").map_err(backend)?),
                back: r.try_get("back").map_err(backend)?,
            })
        })
        .collect()
    }

    async fn alarm_incidents(
        &self,
        activations: Vec<(DeviceId, AlarmTypeCode, UnixMillis)>,
    ) -> Result<Vec<AlarmIncident>> {
        check_bound("alarm activations", activations.len(), MAX_INCIDENT_ACTIVATIONS)?;
        let activations: Vec<(i64, i32, i64)> =
            activations.into_iter().filter_map(|(d, c, t)| Some((db_id(d.0)?, i32::from(c.0), t.0))).collect();
        if activations.is_empty() {
            return Ok(Vec::new());
        }
        let devices: Vec<i64> = activations.iter().map(|a| a.0).collect();
        let codes: Vec<i32> = activations.iter().map(|a| a.1).collect();
        let firsts: Vec<i64> = activations.iter().map(|a| a.2).collect();
        sqlx::query(
            "SELECT m.device_id, m.code, m.first_at, m.incident_id FROM alarm_incident_members m \
             JOIN UNNEST($1::BIGINT[], $2::INTEGER[], $3::BIGINT[]) AS a (d, c, f) \
             ON m.device_id = a.d AND m.code = a.c AND m.first_at = a.f ORDER BY m.device_id, m.code, m.first_at, m.incident_id",
        )
        .bind(devices)
        .bind(codes)
        .bind(firsts)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(|r| {
            Ok(AlarmIncident {
                device_id: DeviceId(row_id(r.try_get("device_id").map_err(backend)?)),
                code: code_of(r)?,
                first_at: UnixMillis(r.try_get("first_at").map_err(backend)?),
                incident_id: IncidentId(row_id(r.try_get("incident_id").map_err(backend)?)),
            })
        })
        .collect()
    }
}
