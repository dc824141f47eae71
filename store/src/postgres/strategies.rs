//! Alarm strategies on PostgreSQL ([`StrategyStore`]): settings kept as JSON.

use async_trait::async_trait;
use fleetpulse_proto::{EnterpriseId, UnixMillis};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{PgEntityStore, backend, db_id, row_id};
use crate::*;

fn strategy_from_row(r: &PgRow) -> Result<StoredStrategy> {
    let settings: String = r.try_get("settings").map_err(backend)?;
    Ok(StoredStrategy {
        id: fleetpulse_proto::StrategyId(row_id(r.try_get("id").map_err(backend)?)),
        enterprise_id: EnterpriseId(row_id(r.try_get("enterprise_id").map_err(backend)?)),
        settings: serde_json::from_str(&settings)
            .map_err(|e| StoreError::Backend(format!("decoding strategy settings: {e}")))?,
        created_at: UnixMillis(r.try_get("created_at").map_err(backend)?),
        updated_at: UnixMillis(r.try_get("updated_at").map_err(backend)?),
    })
}

fn settings_json(settings: &StrategySettings) -> Result<String> {
    serde_json::to_string(settings).map_err(|e| StoreError::Backend(format!("encoding strategy settings: {e}")))
}

#[async_trait]
impl StrategyStore for PgEntityStore {
    async fn create_strategy(
        &self,
        enterprise: EnterpriseId,
        settings: StrategySettings,
        at: UnixMillis,
    ) -> Result<StoredStrategy> {
        let e = db_id(enterprise.0).ok_or_else(|| StoreError::Backend("enterprise id out of range".into()))?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO alarm_strategies (enterprise_id, settings, created_at, updated_at) \
             VALUES ($1, $2, $3, $3) RETURNING id",
        )
        .bind(e)
        .bind(settings_json(&settings)?)
        .bind(at.0)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        Ok(StoredStrategy {
            id: fleetpulse_proto::StrategyId(row_id(id)),
            enterprise_id: enterprise,
            settings,
            created_at: at,
            updated_at: at,
        })
    }

    async fn strategy(&self, id: fleetpulse_proto::StrategyId) -> Result<Option<StoredStrategy>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query("SELECT id, enterprise_id, settings, created_at, updated_at FROM alarm_strategies WHERE id = $1 AND enterprise_id IS NOT NULL")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(strategy_from_row)
            .transpose()
    }

    async fn list_strategies(&self, enterprise: EnterpriseId) -> Result<Vec<StoredStrategy>> {
        let Some(e) = db_id(enterprise.0) else { return Ok(Vec::new()) };
        sqlx::query("SELECT id, enterprise_id, settings, created_at, updated_at FROM alarm_strategies WHERE enterprise_id = $1 ORDER BY id")
            .bind(e)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(strategy_from_row)
            .collect()
    }

    async fn update_strategy(
        &self,
        id: fleetpulse_proto::StrategyId,
        settings: StrategySettings,
        at: UnixMillis,
    ) -> Result<Option<StoredStrategy>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(
            "UPDATE alarm_strategies SET settings = $2, updated_at = $3 WHERE id = $1 AND enterprise_id IS NOT NULL \
             RETURNING id, enterprise_id, settings, created_at, updated_at",
        )
        .bind(id)
        .bind(settings_json(&settings)?)
        .bind(at.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(strategy_from_row)
        .transpose()
    }

    async fn delete_strategy(&self, id: fleetpulse_proto::StrategyId) -> Result<bool> {
        let Some(id) = db_id(id.0) else { return Ok(false) };
        let done = sqlx::query("DELETE FROM alarm_strategies WHERE id = $1 AND enterprise_id IS NOT NULL")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }
}
