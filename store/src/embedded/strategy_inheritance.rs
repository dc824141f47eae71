//! Channel strategies and enterprises' choices on SQLite ([`InheritedStrategyStore`]): rows of
//! `alarm_strategies` with a `channel_id`, settings and inheritance as JSON; choices in
//! `alarm_strategy_choices`.

use async_trait::async_trait;
use fleetpulse_proto::{ChannelId, EnterpriseId, StrategyId, UnixMillis};
use rusqlite::{OptionalExtension, Row, params};

use super::EmbeddedStore;
use crate::*;

const COLUMNS: &str = "id, channel_id, settings, inheritance, created_at, updated_at";

fn json_column<T: serde::de::DeserializeOwned>(r: &Row<'_>, i: usize) -> rusqlite::Result<T> {
    let text: String = r.get(i)?;
    serde_json::from_str(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
}

fn strategy_from_row(r: &Row<'_>) -> rusqlite::Result<ChannelStrategy> {
    Ok(ChannelStrategy {
        id: StrategyId(r.get(0)?),
        channel_id: ChannelId(r.get(1)?),
        settings: json_column(r, 2)?,
        inheritance: json_column(r, 3)?,
        created_at: UnixMillis(r.get(4)?),
        updated_at: UnixMillis(r.get(5)?),
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(format!("encoding a channel strategy: {e}")))
}

#[async_trait]
impl InheritedStrategyStore for EmbeddedStore {
    async fn create_channel_strategy(
        &self,
        channel: ChannelId,
        settings: StrategySettings,
        inheritance: StrategyInheritance,
        at: UnixMillis,
    ) -> Result<ChannelStrategy> {
        let (settings_json, inheritance_json) = (to_json(&settings)?, to_json(&inheritance)?);
        self.write(1, move |c| {
            let exists = c
                .prepare_cached("SELECT 1 FROM channels WHERE id = ?1")?
                .query_row([channel.0], |_| Ok(()))
                .optional()?
                .is_some();
            if !exists {
                return Err(StoreError::InvalidInput(format!("channel {} does not exist", channel.0)));
            }
            c.prepare_cached(
                "INSERT INTO alarm_strategies (channel_id, settings, inheritance, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?4)",
            )?
            .execute(params![channel.0, settings_json, inheritance_json, at.0])?;
            Ok(ChannelStrategy {
                id: StrategyId(c.last_insert_rowid() as u64),
                channel_id: channel,
                settings: settings.clone(),
                inheritance,
                created_at: at,
                updated_at: at,
            })
        })
        .await
    }

    async fn channel_strategy(&self, id: StrategyId) -> Result<Option<ChannelStrategy>> {
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM alarm_strategies WHERE id = ?1 AND channel_id IS NOT NULL"
            ))?
            .query_row([id.0], strategy_from_row)
            .optional()?)
        })
        .await
    }

    async fn list_channel_strategies(&self, channel: ChannelId) -> Result<Vec<ChannelStrategy>> {
        self.read(move |c| {
            let mut st =
                c.prepare_cached(&format!("SELECT {COLUMNS} FROM alarm_strategies WHERE channel_id = ?1 ORDER BY id"))?;
            let rows = st.query_map([channel.0], strategy_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn update_channel_strategy(
        &self,
        id: StrategyId,
        settings: StrategySettings,
        inheritance: StrategyInheritance,
        at: UnixMillis,
    ) -> Result<Option<ChannelStrategy>> {
        let (settings_json, inheritance_json) = (to_json(&settings)?, to_json(&inheritance)?);
        self.write(1, move |c| {
            c.prepare_cached(
                "UPDATE alarm_strategies SET settings = ?2, inheritance = ?3, updated_at = ?4 \
                 WHERE id = ?1 AND channel_id IS NOT NULL",
            )?
            .execute(params![id.0, settings_json, inheritance_json, at.0])?;
            Ok(c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM alarm_strategies WHERE id = ?1 AND channel_id IS NOT NULL"
            ))?
            .query_row([id.0], strategy_from_row)
            .optional()?)
        })
        .await
    }

    async fn delete_channel_strategy(&self, id: StrategyId) -> Result<bool> {
        // Choices about it go with it (ON DELETE CASCADE).
        self.write(1, move |c| {
            Ok(c.prepare_cached("DELETE FROM alarm_strategies WHERE id = ?1 AND channel_id IS NOT NULL")?
                .execute([id.0])?
                > 0)
        })
        .await
    }

    async fn strategies_above(&self, channel: ChannelId) -> Result<Vec<(u32, ChannelStrategy)>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "WITH RECURSIVE up(id, distance) AS ( \
                     SELECT id, 0 FROM channels WHERE id = ?1 \
                     UNION ALL \
                     SELECT c.parent_id, up.distance + 1 FROM channels c JOIN up ON c.id = up.id \
                     WHERE c.parent_id IS NOT NULL AND up.distance < 1000 \
                 ) \
                 SELECT up.distance, {} FROM up JOIN alarm_strategies s ON s.channel_id = up.id \
                 ORDER BY up.distance, s.id",
                COLUMNS.split(", ").map(|col| format!("s.{col}")).collect::<Vec<_>>().join(", ")
            ))?;
            let rows = st.query_map([channel.0], |r| {
                let distance: u32 = r.get(0)?;
                let strategy = ChannelStrategy {
                    id: StrategyId(r.get(1)?),
                    channel_id: ChannelId(r.get(2)?),
                    settings: json_column(r, 3)?,
                    inheritance: json_column(r, 4)?,
                    created_at: UnixMillis(r.get(5)?),
                    updated_at: UnixMillis(r.get(6)?),
                };
                Ok((distance, strategy))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn strategy_choices(&self, enterprise: EnterpriseId) -> Result<Vec<StrategyChoice>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT strategy_id, replacement_id, at FROM alarm_strategy_choices \
                 WHERE enterprise_id = ?1 ORDER BY strategy_id",
            )?;
            let rows = st.query_map([enterprise.0], |r| {
                let replacement: Option<u64> = r.get(1)?;
                Ok(StrategyChoice {
                    enterprise_id: enterprise,
                    strategy_id: StrategyId(r.get(0)?),
                    choice: replacement
                        .map_or(InheritedChoice::OptOut, |id| InheritedChoice::OverrideWith(StrategyId(id))),
                    at: UnixMillis(r.get(2)?),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn set_strategy_choice(
        &self,
        enterprise: EnterpriseId,
        strategy: StrategyId,
        choice: Option<InheritedChoice>,
        at: UnixMillis,
    ) -> Result<()> {
        self.write(1, move |c| {
            match choice {
                None => {
                    c.prepare_cached(
                        "DELETE FROM alarm_strategy_choices WHERE enterprise_id = ?1 AND strategy_id = ?2",
                    )?
                    .execute(params![enterprise.0, strategy.0])?;
                }
                Some(choice) => {
                    let replacement = match choice {
                        InheritedChoice::OptOut => None,
                        InheritedChoice::OverrideWith(id) => Some(id.0),
                    };
                    c.prepare_cached(
                        "INSERT INTO alarm_strategy_choices (enterprise_id, strategy_id, replacement_id, at) \
                         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (enterprise_id, strategy_id) \
                         DO UPDATE SET replacement_id = excluded.replacement_id, at = excluded.at",
                    )?
                    .execute(params![enterprise.0, strategy.0, replacement, at.0])?;
                }
            }
            Ok(())
        })
        .await
    }
}
