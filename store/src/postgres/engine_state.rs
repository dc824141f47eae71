//! The alarm engine's saved state on PostgreSQL ([`EngineStateStore`]): one JSON row per owner.

use async_trait::async_trait;
use fleetpulse_proto::UnixMillis;

use super::{PgEntityStore, backend};
use crate::*;

#[async_trait]
impl EngineStateStore for PgEntityStore {
    async fn save_engine_state(
        &self,
        owner: &EngineStateOwner,
        state: &SavedEngineState,
        at: UnixMillis,
    ) -> Result<()> {
        let json =
            serde_json::to_string(state).map_err(|e| StoreError::Backend(format!("encoding the engine state: {e}")))?;
        sqlx::query(
            "INSERT INTO alarm_engine_state (owner, state, saved_at) VALUES ($1, $2, $3) \
             ON CONFLICT (owner) DO UPDATE SET state = EXCLUDED.state, saved_at = EXCLUDED.saved_at",
        )
        .bind(owner.key())
        .bind(json)
        .bind(at.0)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn engine_state(&self, owner: &EngineStateOwner) -> Result<Option<SavedEngineState>> {
        let json: Option<String> = sqlx::query_scalar("SELECT state FROM alarm_engine_state WHERE owner = $1")
            .bind(owner.key())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| StoreError::Backend(format!("decoding the engine state: {e}")))
        })
        .transpose()
    }
}
