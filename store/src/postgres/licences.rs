//! Licences on PostgreSQL ([`LicenceStore`]): `rank` brings an enterprise's licence row and its
//! devices' statuses in line with its orders, inside the caller's transaction (placing and
//! cancelling an order, refreshing an enterprise whose `valid_until` has passed); the triggers of
//! the schema keep them on device registrations, deletions and moves.

use async_trait::async_trait;
use fleetpulse_proto::{DeviceId, EnterpriseId, UnixMillis};
use sqlx::PgConnection;

use super::{PgEntityStore, backend, db_id, row_id};
use crate::*;

/// Brings the licences of `enterprise` in line with its orders at `now` (see
/// [`crate::licence_state`]): the row written (or removed when no order is left), the devices
/// re-ranked (`fleetpulse_licence_rerank`). The caller holds the enterprise's row lock.
pub(super) async fn rank(c: &mut PgConnection, enterprise: i64, now: UnixMillis) -> Result<()> {
    let orders = super::orders::live_orders(&mut *c, enterprise).await?;
    if orders.is_empty() {
        sqlx::query("DELETE FROM enterprise_licences WHERE enterprise_id = $1")
            .bind(enterprise)
            .execute(&mut *c)
            .await
            .map_err(backend)?;
    } else {
        let state = licence_state(&orders, now);
        sqlx::query(
            "INSERT INTO enterprise_licences (enterprise_id, metered, allowance, licensed, valid_until) \
             VALUES ($1, $2, $3, 0, $4) ON CONFLICT (enterprise_id) DO UPDATE SET metered = excluded.metered, \
             allowance = excluded.allowance, valid_until = excluded.valid_until",
        )
        .bind(enterprise)
        .bind(state.metered)
        .bind(i64::try_from(state.allowance).unwrap_or(i64::MAX))
        .bind(state.valid_until.0)
        .execute(&mut *c)
        .await
        .map_err(backend)?;
    }
    sqlx::query("SELECT fleetpulse_licence_rerank($1)").bind(enterprise).execute(&mut *c).await.map_err(backend)?;
    Ok(())
}

#[async_trait]
impl LicenceStore for PgEntityStore {
    async fn refresh_licences(&self, now: UnixMillis) -> Result<u64> {
        let due: Vec<i64> = sqlx::query_scalar(
            "SELECT enterprise_id FROM enterprise_licences WHERE valid_until <= $1 ORDER BY valid_until LIMIT $2",
        )
        .bind(now.0)
        .bind(i64::from(MAX_LICENCE_REFRESH))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        for &e in &due {
            let mut tx = self.pool.begin().await.map_err(backend)?;
            sqlx::query("SELECT id FROM enterprises WHERE id = $1 FOR NO KEY UPDATE")
                .bind(e)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            rank(&mut tx, e, now).await?;
            tx.commit().await.map_err(backend)?;
        }
        Ok(due.len() as u64)
    }

    async fn device_licence(&self, device: DeviceId) -> Result<Option<LicenceStatus>> {
        let Some(device) = db_id(device.0) else { return Ok(None) };
        let s: Option<String> = sqlx::query_scalar("SELECT licence FROM devices WHERE id = $1")
            .bind(device)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Ok(s.map(|s| LicenceStatus::parse(&s)))
    }

    async fn licence_counts(&self, enterprise: EnterpriseId) -> Result<LicenceCounts> {
        let Some(enterprise) = db_id(enterprise.0) else { return Ok(LicenceCounts::default()) };
        let row: Option<(bool, i64, i64)> =
            sqlx::query_as("SELECT metered, allowance, licensed FROM enterprise_licences WHERE enterprise_id = $1")
                .bind(enterprise)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        let Some((metered, allowance, licensed)) = row else { return Ok(LicenceCounts::default()) };
        let unlicensed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM devices WHERE enterprise_id = $1 AND licence = 'unlicensed'")
                .bind(enterprise)
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?;
        Ok(LicenceCounts {
            metered,
            allowance: row_id(allowance),
            licensed: row_id(licensed),
            unlicensed: row_id(unlicensed),
        })
    }
}
