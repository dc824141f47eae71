//! The alarm engine's saved state on SQLite ([`EngineStateStore`]): one JSON row.

use async_trait::async_trait;
use fleetpulse_proto::UnixMillis;
use rusqlite::{OptionalExtension, params};

use super::EmbeddedStore;
use crate::*;

#[async_trait]
impl EngineStateStore for EmbeddedStore {
    async fn save_engine_state(&self, state: &SavedEngineState, at: UnixMillis) -> Result<()> {
        let json =
            serde_json::to_string(state).map_err(|e| StoreError::Backend(format!("encoding the engine state: {e}")))?;
        self.write(1, move |c| {
            c.prepare_cached(
                "INSERT INTO alarm_engine_state (id, state, saved_at) VALUES (1, ?1, ?2) \
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, saved_at = excluded.saved_at",
            )?
            .execute(params![json, at.0])?;
            Ok(())
        })
        .await
    }

    async fn engine_state(&self) -> Result<Option<SavedEngineState>> {
        let json: Option<String> = self
            .read(|c| {
                Ok(c.prepare_cached("SELECT state FROM alarm_engine_state WHERE id = 1")?
                    .query_row([], |r| r.get(0))
                    .optional()?)
            })
            .await?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| StoreError::Backend(format!("decoding the engine state: {e}")))
        })
        .transpose()
    }
}
