//! Alarm strategies on SQLite ([`StrategyStore`]): settings kept as JSON.

use async_trait::async_trait;
use fleetpulse_proto::{EnterpriseId, UnixMillis};
use rusqlite::{OptionalExtension, Row, params};

use super::EmbeddedStore;
use crate::*;

fn strategy_from_row(r: &Row<'_>) -> rusqlite::Result<StoredStrategy> {
    let settings: String = r.get(2)?;
    Ok(StoredStrategy {
        id: fleetpulse_proto::StrategyId(r.get(0)?),
        enterprise_id: EnterpriseId(r.get(1)?),
        settings: serde_json::from_str(&settings)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e)))?,
        created_at: UnixMillis(r.get(3)?),
        updated_at: UnixMillis(r.get(4)?),
    })
}

fn settings_json(settings: &StrategySettings) -> Result<String> {
    serde_json::to_string(settings).map_err(|e| StoreError::Backend(format!("encoding strategy settings: {e}")))
}

const STRATEGY_COLUMNS: &str = "id, enterprise_id, settings, created_at, updated_at";

#[async_trait]
impl StrategyStore for EmbeddedStore {
    async fn create_strategy(
        &self,
        enterprise: EnterpriseId,
        settings: StrategySettings,
        at: UnixMillis,
    ) -> Result<StoredStrategy> {
        let json = settings_json(&settings)?;
        self.write(1, move |c| {
            c.prepare_cached(
                "INSERT INTO alarm_strategies (enterprise_id, settings, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
            )?
            .execute(params![enterprise.0, json, at.0])?;
            Ok(StoredStrategy {
                id: fleetpulse_proto::StrategyId(c.last_insert_rowid() as u64),
                enterprise_id: enterprise,
                settings: settings.clone(),
                created_at: at,
                updated_at: at,
            })
        })
        .await
    }

    async fn strategy(&self, id: fleetpulse_proto::StrategyId) -> Result<Option<StoredStrategy>> {
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {STRATEGY_COLUMNS} FROM alarm_strategies WHERE id = ?1 AND enterprise_id IS NOT NULL"
            ))?
            .query_row([id.0], strategy_from_row)
            .optional()?)
        })
        .await
    }

    async fn list_strategies(&self, enterprise: EnterpriseId) -> Result<Vec<StoredStrategy>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {STRATEGY_COLUMNS} FROM alarm_strategies WHERE enterprise_id = ?1 ORDER BY id"
            ))?;
            let rows = st.query_map([enterprise.0], strategy_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn update_strategy(
        &self,
        id: fleetpulse_proto::StrategyId,
        settings: StrategySettings,
        at: UnixMillis,
    ) -> Result<Option<StoredStrategy>> {
        let json = settings_json(&settings)?;
        self.write(1, move |c| {
            c.prepare_cached("UPDATE alarm_strategies SET settings = ?2, updated_at = ?3 WHERE id = ?1 AND enterprise_id IS NOT NULL")?
                .execute(params![id.0, json, at.0])?;
            Ok(c.prepare_cached(&format!("SELECT {STRATEGY_COLUMNS} FROM alarm_strategies WHERE id = ?1 AND enterprise_id IS NOT NULL"))?
                .query_row([id.0], strategy_from_row)
                .optional()?)
        })
        .await
    }

    async fn delete_strategy(&self, id: fleetpulse_proto::StrategyId) -> Result<bool> {
        self.write(1, move |c| {
            Ok(c.prepare_cached("DELETE FROM alarm_strategies WHERE id = ?1 AND enterprise_id IS NOT NULL")?
                .execute([id.0])?
                > 0)
        })
        .await
    }
}
