//! Maintenance windows on PostgreSQL ([`WindowStore`]): settings kept as JSON, one mark row per
//! alarm activation, as in the embedded store.

use async_trait::async_trait;
use fleetpulse_proto::{AlarmTypeCode, DeviceId, EnterpriseId, UnixMillis, WindowId};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{PgEntityStore, backend, db_id, row_id};
use crate::*;

fn window_from_row(r: &PgRow) -> Result<StoredWindow> {
    let settings: String = r.try_get("settings").map_err(backend)?;
    Ok(StoredWindow {
        id: WindowId(row_id(r.try_get("id").map_err(backend)?)),
        enterprise_id: EnterpriseId(row_id(r.try_get("enterprise_id").map_err(backend)?)),
        settings: serde_json::from_str(&settings)
            .map_err(|e| StoreError::Backend(format!("decoding window settings: {e}")))?,
        created_at: UnixMillis(r.try_get("created_at").map_err(backend)?),
        updated_at: UnixMillis(r.try_get("updated_at").map_err(backend)?),
    })
}

fn mark_from_row(r: &PgRow) -> Result<WindowMark> {
    let state: String = r.try_get("state").map_err(backend)?;
    let code: i32 = r.try_get("code").map_err(backend)?;
    Ok(WindowMark {
        device_id: DeviceId(row_id(r.try_get("device_id").map_err(backend)?)),
        code: AlarmTypeCode(u16::try_from(code).map_err(|_| StoreError::Backend(format!("alarm code {code}")))?),
        first_at: UnixMillis(r.try_get("first_at").map_err(backend)?),
        enterprise_id: EnterpriseId(row_id(r.try_get("enterprise_id").map_err(backend)?)),
        window_id: WindowId(row_id(r.try_get("window_id").map_err(backend)?)),
        window_name: r.try_get("window_name").map_err(backend)?,
        state: WindowMarkState::parse(&state).ok_or_else(|| StoreError::Backend(format!("window mark {state:?}")))?,
        at: UnixMillis(r.try_get("at").map_err(backend)?),
        until: r.try_get::<Option<i64>, _>("until").map_err(backend)?.map(UnixMillis),
    })
}

fn settings_json(settings: &WindowSettings) -> Result<String> {
    serde_json::to_string(settings).map_err(|e| StoreError::Backend(format!("encoding window settings: {e}")))
}

fn out_of_range() -> StoreError {
    StoreError::Backend("id out of range".into())
}

#[async_trait]
impl WindowStore for PgEntityStore {
    async fn create_window(
        &self,
        enterprise: EnterpriseId,
        settings: WindowSettings,
        at: UnixMillis,
    ) -> Result<StoredWindow> {
        let e = db_id(enterprise.0).ok_or_else(out_of_range)?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO maintenance_windows (enterprise_id, settings, created_at, updated_at) \
             VALUES ($1, $2, $3, $3) RETURNING id",
        )
        .bind(e)
        .bind(settings_json(&settings)?)
        .bind(at.0)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        Ok(StoredWindow {
            id: WindowId(row_id(id)),
            enterprise_id: enterprise,
            settings,
            created_at: at,
            updated_at: at,
        })
    }

    async fn window(&self, id: WindowId) -> Result<Option<StoredWindow>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query("SELECT id, enterprise_id, settings, created_at, updated_at FROM maintenance_windows WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(window_from_row)
            .transpose()
    }

    async fn list_windows(&self, enterprise: EnterpriseId) -> Result<Vec<StoredWindow>> {
        let Some(e) = db_id(enterprise.0) else { return Ok(Vec::new()) };
        sqlx::query("SELECT id, enterprise_id, settings, created_at, updated_at FROM maintenance_windows WHERE enterprise_id = $1 ORDER BY id")
            .bind(e)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(window_from_row)
            .collect()
    }

    async fn update_window(
        &self,
        id: WindowId,
        settings: WindowSettings,
        at: UnixMillis,
    ) -> Result<Option<StoredWindow>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(
            "UPDATE maintenance_windows SET settings = $2, updated_at = $3 WHERE id = $1 RETURNING id, enterprise_id, settings, created_at, updated_at"
        )
        .bind(id)
        .bind(settings_json(&settings)?)
        .bind(at.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(window_from_row)
        .transpose()
    }

    async fn delete_window(&self, id: WindowId) -> Result<bool> {
        let Some(id) = db_id(id.0) else { return Ok(false) };
        let done = sqlx::query("DELETE FROM maintenance_windows WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_window_mark(&self, mark: WindowMark) -> Result<()> {
        let device = db_id(mark.device_id.0).ok_or_else(out_of_range)?;
        let enterprise = db_id(mark.enterprise_id.0).ok_or_else(out_of_range)?;
        let window = db_id(mark.window_id.0).ok_or_else(out_of_range)?;
        sqlx::query(
            "INSERT INTO alarm_window_marks (device_id, code, first_at, enterprise_id, window_id, window_name, state, at, until) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (device_id, code, first_at) DO UPDATE SET enterprise_id = EXCLUDED.enterprise_id, \
             window_id = EXCLUDED.window_id, window_name = EXCLUDED.window_name, state = EXCLUDED.state, \
             at = EXCLUDED.at, until = EXCLUDED.until"
        )
        .bind(device)
        .bind(i32::from(mark.code.0))
        .bind(mark.first_at.0)
        .bind(enterprise)
        .bind(window)
        .bind(&mark.window_name)
        .bind(mark.state.as_str())
        .bind(mark.at.0)
        .bind(mark.until.map(|u| u.0))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn window_marks(&self, activations: Vec<(DeviceId, AlarmTypeCode, UnixMillis)>) -> Result<Vec<WindowMark>> {
        if activations.len() > MAX_MARKS_READ {
            return Err(StoreError::InvalidInput(format!("at most {MAX_MARKS_READ} alarm activations at once")));
        }
        let activations: Vec<(i64, i32, i64)> =
            activations.into_iter().filter_map(|(d, c, t)| Some((db_id(d.0)?, i32::from(c.0), t.0))).collect();
        if activations.is_empty() {
            return Ok(Vec::new());
        }
        let devices: Vec<i64> = activations.iter().map(|a| a.0).collect();
        let codes: Vec<i32> = activations.iter().map(|a| a.1).collect();
        let firsts: Vec<i64> = activations.iter().map(|a| a.2).collect();
        sqlx::query(
            "SELECT device_id, code, first_at, enterprise_id, window_id, window_name, state, at, until FROM alarm_window_marks m \
             JOIN UNNEST($1::BIGINT[], $2::INTEGER[], $3::BIGINT[]) AS a (d, c, f) \
             ON m.device_id = a.d AND m.code = a.c AND m.first_at = a.f"
        )
        .bind(devices)
        .bind(codes)
        .bind(firsts)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(mark_from_row)
        .collect()
    }
}
