//! The alarm engine's saved state on PostgreSQL ([`EngineStateStore`]): one JSON row.

use async_trait::async_trait;
use fleetpulse_proto::UnixMillis;

use super::{PgEntityStore, backend};
use crate::*;

#[async_trait]
impl EngineStateStore for PgEntityStore {
    async fn save_engine_state(&self, state: &SavedEngineState, at: UnixMillis) -> Result<()> {
        let json =
            serde_json::to_string(state).map_err(|e| StoreError::Backend(format!("encoding the engine state: {e}")))?;
        sqlx::query(
            "INSERT INTO alarm_engine_state (id, state, saved_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, saved_at = EXCLUDED.saved_at",
        )
        .bind(json)
        .bind(at.0)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn engine_state(&self) -> Result<Option<SavedEngineState>> {
        let json: Option<String> = sqlx::query_scalar("SELECT state FROM alarm_engine_state WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| StoreError::Backend(format!("decoding the engine state: {e}")))
        })
        .transpose()
    }
}
