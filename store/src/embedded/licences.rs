//! Licences on the embedded store ([`LicenceStore`]): `rank` brings an enterprise's licence row
//! and its devices' statuses in line with its orders (called in the transactions that place and
//! cancel orders, and for enterprises whose `valid_until` has passed); the triggers of the
//! schema keep them on device registrations, deletions and moves.

use async_trait::async_trait;
use fleetpulse_proto::{DeviceId, EnterpriseId, UnixMillis};
use rusqlite::{Connection, OptionalExtension, params};

use super::EmbeddedStore;
use crate::*;

/// Re-ranks the enterprise's devices (the oldest `allowance` licensed).
const RERANK: &str = "UPDATE devices SET licence = CASE \
     WHEN NOT EXISTS (SELECT 1 FROM enterprise_licences WHERE enterprise_id = ?1 AND metered = 1) THEN 'unknown' \
     WHEN id IN (SELECT id FROM devices WHERE enterprise_id = ?1 ORDER BY id \
         LIMIT coalesce((SELECT allowance FROM enterprise_licences WHERE enterprise_id = ?1), 0)) \
     THEN 'licensed' ELSE 'unlicensed' END \
     WHERE enterprise_id = ?1";

/// Recounts the enterprise's licensed devices.
const RECOUNT: &str = "UPDATE enterprise_licences SET licensed = \
     (SELECT count(*) FROM devices WHERE enterprise_id = ?1 AND licence = 'licensed') WHERE enterprise_id = ?1";

/// Brings the licences of `enterprise` in line with its orders at `now` (see
/// [`crate::licence_state`]): the row written (or removed when no order is left), the devices
/// re-ranked. One scan of the enterprise's devices, only when its orders change.
pub(super) fn rank(c: &Connection, enterprise: i64, now: UnixMillis) -> Result<()> {
    let orders = super::orders::live_orders(c, enterprise)?;
    if orders.is_empty() {
        c.prepare_cached("DELETE FROM enterprise_licences WHERE enterprise_id = ?1")?.execute([enterprise])?;
    } else {
        let state = licence_state(&orders, now);
        c.prepare_cached(
            "INSERT INTO enterprise_licences (enterprise_id, metered, allowance, licensed, valid_until) \
             VALUES (?1, ?2, ?3, 0, ?4) ON CONFLICT (enterprise_id) DO UPDATE SET metered = excluded.metered, \
             allowance = excluded.allowance, valid_until = excluded.valid_until",
        )?
        .execute(params![
            enterprise,
            state.metered,
            i64::try_from(state.allowance).unwrap_or(i64::MAX),
            state.valid_until.0
        ])?;
    }
    c.prepare_cached(RERANK)?.execute([enterprise])?;
    c.prepare_cached(RECOUNT)?.execute([enterprise])?;
    Ok(())
}

#[async_trait]
impl LicenceStore for EmbeddedStore {
    async fn refresh_licences(&self, now: UnixMillis) -> Result<u64> {
        let due: Vec<i64> = self
            .read(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT enterprise_id FROM enterprise_licences WHERE valid_until <= ?1 ORDER BY valid_until LIMIT ?2",
                )?;
                let rows = st.query_map(params![now.0, MAX_LICENCE_REFRESH], |r| r.get(0))?;
                Ok(rows.collect::<rusqlite::Result<Vec<i64>>>()?)
            })
            .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let n = due.len() as u64;
        self.write(due.len(), move |c| {
            for &e in &due {
                rank(c, e, now)?;
            }
            Ok(())
        })
        .await?;
        Ok(n)
    }

    async fn device_licence(&self, device: DeviceId) -> Result<Option<LicenceStatus>> {
        let Ok(device) = i64::try_from(device.0) else { return Ok(None) };
        self.read(move |c| {
            let s: Option<String> = c
                .prepare_cached("SELECT licence FROM devices WHERE id = ?1")?
                .query_row([device], |r| r.get(0))
                .optional()?;
            Ok(s.map(|s| LicenceStatus::parse(&s)))
        })
        .await
    }

    async fn licence_counts(&self, enterprise: EnterpriseId) -> Result<LicenceCounts> {
        let Ok(enterprise) = i64::try_from(enterprise.0) else { return Ok(LicenceCounts::default()) };
        self.read(move |c| {
            let row: Option<(bool, i64, i64)> = c
                .prepare_cached(
                    "SELECT metered, allowance, licensed FROM enterprise_licences WHERE enterprise_id = ?1",
                )?
                .query_row([enterprise], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            let Some((metered, allowance, licensed)) = row else { return Ok(LicenceCounts::default()) };
            let unlicensed: i64 = c
                .prepare_cached("SELECT count(*) FROM devices WHERE enterprise_id = ?1 AND licence = 'unlicensed'")?
                .query_row([enterprise], |r| r.get(0))?;
            let n = |v: i64| u64::try_from(v).unwrap_or_default();
            Ok(LicenceCounts { metered, allowance: n(allowance), licensed: n(licensed), unlicensed: n(unlicensed) })
        })
        .await
    }
}
