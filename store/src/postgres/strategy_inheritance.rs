//! Channel strategies and enterprises' choices on PostgreSQL ([`InheritedStrategyStore`]): rows
//! of `alarm_strategies` with a `channel_id`, settings and inheritance as JSON; choices in
//! `alarm_strategy_choices`.

use async_trait::async_trait;
use fleetpulse_proto::{ChannelId, EnterpriseId, StrategyId, UnixMillis};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{PgEntityStore, backend, db_id, row_id};
use crate::*;

const COLUMNS: &str = "s.id, s.channel_id, s.settings, s.inheritance, s.created_at, s.updated_at";

fn json_column<T: serde::de::DeserializeOwned>(r: &PgRow, column: &str) -> Result<T> {
    let text: String = r.try_get(column).map_err(backend)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Backend(format!("decoding a channel strategy: {e}")))
}

fn strategy_from_row(r: &PgRow) -> Result<ChannelStrategy> {
    Ok(ChannelStrategy {
        id: StrategyId(row_id(r.try_get("id").map_err(backend)?)),
        channel_id: ChannelId(row_id(r.try_get("channel_id").map_err(backend)?)),
        settings: json_column(r, "settings")?,
        inheritance: json_column(r, "inheritance")?,
        created_at: UnixMillis(r.try_get("created_at").map_err(backend)?),
        updated_at: UnixMillis(r.try_get("updated_at").map_err(backend)?),
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(format!("encoding a channel strategy: {e}")))
}

#[async_trait]
impl InheritedStrategyStore for PgEntityStore {
    async fn create_channel_strategy(
        &self,
        channel: ChannelId,
        settings: StrategySettings,
        inheritance: StrategyInheritance,
        at: UnixMillis,
    ) -> Result<ChannelStrategy> {
        let unknown = || StoreError::InvalidInput(format!("channel {} does not exist", channel.0));
        let c = db_id(channel.0).ok_or_else(unknown)?;
        // Inserted only when the channel exists: no row back means it does not.
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO alarm_strategies (channel_id, settings, inheritance, created_at, updated_at) \
             SELECT id, $2, $3, $4, $4 FROM channels WHERE id = $1 RETURNING id",
        )
        .bind(c)
        .bind(to_json(&settings)?)
        .bind(to_json(&inheritance)?)
        .bind(at.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        let id = id.ok_or_else(unknown)?;
        Ok(ChannelStrategy {
            id: StrategyId(row_id(id)),
            channel_id: channel,
            settings,
            inheritance,
            created_at: at,
            updated_at: at,
        })
    }

    async fn channel_strategy(&self, id: StrategyId) -> Result<Option<ChannelStrategy>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM alarm_strategies s WHERE s.id = $1 AND s.channel_id IS NOT NULL"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(strategy_from_row)
        .transpose()
    }

    async fn list_channel_strategies(&self, channel: ChannelId) -> Result<Vec<ChannelStrategy>> {
        let Some(c) = db_id(channel.0) else { return Ok(Vec::new()) };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM alarm_strategies s WHERE s.channel_id = $1 ORDER BY s.id"
        )))
        .bind(c)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(strategy_from_row)
        .collect()
    }

    async fn update_channel_strategy(
        &self,
        id: StrategyId,
        settings: StrategySettings,
        inheritance: StrategyInheritance,
        at: UnixMillis,
    ) -> Result<Option<ChannelStrategy>> {
        let Some(id) = db_id(id.0) else { return Ok(None) };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE alarm_strategies s SET settings = $2, inheritance = $3, updated_at = $4 \
             WHERE s.id = $1 AND s.channel_id IS NOT NULL RETURNING {COLUMNS}"
        )))
        .bind(id)
        .bind(to_json(&settings)?)
        .bind(to_json(&inheritance)?)
        .bind(at.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(strategy_from_row)
        .transpose()
    }

    async fn delete_channel_strategy(&self, id: StrategyId) -> Result<bool> {
        let Some(id) = db_id(id.0) else { return Ok(false) };
        // Choices about it go with it (ON DELETE CASCADE).
        let done = sqlx::query("DELETE FROM alarm_strategies WHERE id = $1 AND channel_id IS NOT NULL")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn strategies_above(&self, channel: ChannelId) -> Result<Vec<(u32, ChannelStrategy)>> {
        let Some(c) = db_id(channel.0) else { return Ok(Vec::new()) };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH RECURSIVE up (id, distance) AS ( \
                 SELECT id, 0 FROM channels WHERE id = $1 \
                 UNION ALL \
                 SELECT c.parent_id, up.distance + 1 FROM channels c JOIN up ON c.id = up.id \
                 WHERE c.parent_id IS NOT NULL AND up.distance < 1000 \
             ) \
             SELECT up.distance, {COLUMNS} FROM up JOIN alarm_strategies s ON s.channel_id = up.id \
             ORDER BY up.distance, s.id"
        )))
        .bind(c)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(|r| {
            let distance: i32 = r.try_get("distance").map_err(backend)?;
            Ok((u32::try_from(distance).unwrap_or_default(), strategy_from_row(r)?))
        })
        .collect()
    }

    async fn strategy_choices(&self, enterprise: EnterpriseId) -> Result<Vec<StrategyChoice>> {
        let Some(e) = db_id(enterprise.0) else { return Ok(Vec::new()) };
        sqlx::query(
            "SELECT strategy_id, replacement_id, at FROM alarm_strategy_choices \
             WHERE enterprise_id = $1 ORDER BY strategy_id",
        )
        .bind(e)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(|r| {
            let replacement: Option<i64> = r.try_get("replacement_id").map_err(backend)?;
            Ok(StrategyChoice {
                enterprise_id: enterprise,
                strategy_id: StrategyId(row_id(r.try_get("strategy_id").map_err(backend)?)),
                choice: replacement
                    .map_or(InheritedChoice::OptOut, |id| InheritedChoice::OverrideWith(StrategyId(row_id(id)))),
                at: UnixMillis(r.try_get("at").map_err(backend)?),
            })
        })
        .collect()
    }

    async fn set_strategy_choice(
        &self,
        enterprise: EnterpriseId,
        strategy: StrategyId,
        choice: Option<InheritedChoice>,
        at: UnixMillis,
    ) -> Result<()> {
        let out_of_range = || StoreError::InvalidInput("id out of range".into());
        let e = db_id(enterprise.0).ok_or_else(out_of_range)?;
        let s = db_id(strategy.0).ok_or_else(out_of_range)?;
        match choice {
            None => {
                sqlx::query("DELETE FROM alarm_strategy_choices WHERE enterprise_id = $1 AND strategy_id = $2")
                    .bind(e)
                    .bind(s)
                    .execute(&self.pool)
                    .await
                    .map_err(backend)?;
            }
            Some(choice) => {
                let replacement = match choice {
                    InheritedChoice::OptOut => None,
                    InheritedChoice::OverrideWith(id) => Some(db_id(id.0).ok_or_else(out_of_range)?),
                };
                sqlx::query(
                    "INSERT INTO alarm_strategy_choices (enterprise_id, strategy_id, replacement_id, at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (enterprise_id, strategy_id) \
                     DO UPDATE SET replacement_id = EXCLUDED.replacement_id, at = EXCLUDED.at",
                )
                .bind(e)
                .bind(s)
                .bind(replacement)
                .bind(at.0)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            }
        }
        Ok(())
    }
}
