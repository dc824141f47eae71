//! Site incidents on SQLite ([`IncidentStore`]): one row per incident, upserted by its natural
//! key, and one row per member activation.

use async_trait::async_trait;
use fleetpulse_proto::{AlarmTypeCode, DeviceId, EnterpriseId, IncidentId, SiteId, StrategyId, UnixMillis};
use rusqlite::{OptionalExtension, Row, params};

use super::EmbeddedStore;
use crate::*;

const INCIDENT_COLUMNS: &str = "id, enterprise_id, strategy_id, site_id, site_name, code, opened_at, updated_at, \
     resolved_at, site_devices, affected, back";

fn incident_from_row(r: &Row<'_>) -> rusqlite::Result<StoredIncident> {
    Ok(StoredIncident {
        id: IncidentId(r.get(0)?),
        enterprise_id: EnterpriseId(r.get(1)?),
        strategy_id: StrategyId(r.get(2)?),
        site_id: SiteId(r.get(3)?),
        site_name: r.get(4)?,
        code: AlarmTypeCode(r.get(5)?),
        opened_at: UnixMillis(r.get(6)?),
        updated_at: UnixMillis(r.get(7)?),
        resolved_at: r.get::<_, Option<i64>>(8)?.map(UnixMillis),
        site_devices: r.get(9)?,
        affected: r.get(10)?,
        back: r.get(11)?,
    })
}

#[async_trait]
impl IncidentStore for EmbeddedStore {
    async fn record_incident(&self, update: IncidentUpdate) -> Result<IncidentId> {
        check_update(&update)?;
        let rows = 1 + update.members.len();
        self.write(rows, move |c| {
            let u = &update;
            let id: u64 = c
                .prepare_cached(
                    "INSERT INTO alarm_incidents (enterprise_id, strategy_id, site_id, site_name, code, opened_at, \
                     updated_at, resolved_at, site_devices, affected, back) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                     ON CONFLICT (enterprise_id, strategy_id, site_id, code, opened_at) DO UPDATE SET \
                     updated_at = MAX(updated_at, excluded.updated_at), \
                     resolved_at = COALESCE(resolved_at, excluded.resolved_at), \
                     affected = excluded.affected, back = excluded.back \
                     RETURNING id",
                )?
                .query_row(
                    params![
                        u.enterprise_id.0,
                        u.strategy_id.0,
                        u.site_id.0,
                        u.site_name,
                        u.code.0,
                        u.opened_at.0,
                        u.at.0,
                        u.resolved_at.map(|t| t.0),
                        u.site_devices,
                        u.affected,
                        u.back,
                    ],
                    |r| r.get(0),
                )?;
            let mut st = c.prepare_cached(
                "INSERT INTO alarm_incident_members (incident_id, device_id, code, first_at, back) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (incident_id, device_id) DO UPDATE SET first_at = excluded.first_at, back = excluded.back",
            )?;
            for m in &u.members {
                st.execute(params![id, m.device_id.0, u.code.0, m.first_at.0, m.back])?;
            }
            Ok(IncidentId(id))
        })
        .await
    }

    async fn incident(&self, id: IncidentId) -> Result<Option<StoredIncident>> {
        self.read(move |c| {
            Ok(c.prepare_cached(&format!("SELECT {INCIDENT_COLUMNS} FROM alarm_incidents WHERE id = ?1"))?
                .query_row([id.0], incident_from_row)
                .optional()?)
        })
        .await
    }

    async fn list_incidents(&self, enterprise: EnterpriseId, page: Page) -> Result<Vec<StoredIncident>> {
        check_page(page)?;
        let before = if page.after == 0 { i64::MAX } else { i64::try_from(page.after).unwrap_or(i64::MAX) };
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {INCIDENT_COLUMNS} FROM alarm_incidents WHERE enterprise_id = ?1 AND id < ?2 \
                 ORDER BY id DESC LIMIT ?3"
            ))?;
            let rows = st.query_map(params![enterprise.0, before, page.limit], incident_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn incident_members(&self, id: IncidentId, page: Page) -> Result<Vec<IncidentMember>> {
        check_page(page)?;
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT device_id, first_at, back FROM alarm_incident_members \
                 WHERE incident_id = ?1 AND device_id > ?2 ORDER BY device_id LIMIT ?3",
            )?;
            let rows = st.query_map(params![id.0, page.after, page.limit], |r| {
                Ok(IncidentMember { device_id: DeviceId(r.get(0)?), first_at: UnixMillis(r.get(1)?), back: r.get(2)? })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn alarm_incidents(
        &self,
        activations: Vec<(DeviceId, AlarmTypeCode, UnixMillis)>,
    ) -> Result<Vec<AlarmIncident>> {
        check_bound("alarm activations", activations.len(), MAX_INCIDENT_ACTIVATIONS)?;
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT incident_id FROM alarm_incident_members WHERE device_id = ?1 AND code = ?2 AND first_at = ?3 \
                 ORDER BY incident_id",
            )?;
            let mut out = Vec::new();
            for (device_id, code, first_at) in activations {
                let ids = st.query_map(params![device_id.0, code.0, first_at.0], |r| r.get::<_, u64>(0))?;
                for id in ids {
                    out.push(AlarmIncident { device_id, code, first_at, incident_id: IncidentId(id?) });
                }
            }
            Ok(out)
        })
        .await
    }
}
