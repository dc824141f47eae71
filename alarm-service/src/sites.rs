//! Site incidents in the alarm service: the engine's site directory (each device's site, each
//! site's device count) read from the store for the enterprises whose strategies have a
//! site-incident rule, and the store's form of the engine's incident steps.
//!
//! - The directory is read at start, when the enterprise's strategies change, and again every
//!   [`crate::windows::RESOLVE_EVERY`] (a device's site changes when its address does, in the
//!   ingest path, which tells nobody): a device that moved site is grouped with its new site
//!   within that time. At most [`MAX_DIRECTORY_DEVICES`] devices per enterprise are read (the
//!   rest are logged and not grouped); an enterprise whose rules are gone is forgotten.

use std::collections::{BTreeMap, BTreeSet};

use fleetpulse_alarm_engine::incidents::MAX_DIRECTORY_DEVICES;
use fleetpulse_alarm_engine::{AlarmEngine, IncidentCounts, IncidentKey, IncidentStep, SiteDevices};
use fleetpulse_proto::{DeviceId, EnterpriseId, SiteId, UnixMillis};
use fleetpulse_store::{
    DevicePageRequest, DeviceQuery, IncidentMember, IncidentUpdate, MAX_DEVICE_PAGE, Store, StoreError,
};

/// Which enterprises the engine has a site directory of.
#[derive(Debug, Default)]
pub(crate) struct SiteShell {
    resolved: BTreeSet<EnterpriseId>,
}

impl SiteShell {
    /// Reads the directories of every enterprise with a rule (and forgets those without).
    pub(crate) async fn resolve_all(&mut self, store: &Store, engine: &mut AlarmEngine) -> Result<(), StoreError> {
        let wanted: BTreeSet<EnterpriseId> = engine.incident_enterprises().into_iter().collect();
        for gone in self.resolved.difference(&wanted).copied().collect::<Vec<_>>() {
            let _ = engine.set_sites(gone, Vec::new());
            self.resolved.remove(&gone);
        }
        for enterprise in wanted {
            self.resolve(store, engine, enterprise).await?;
        }
        Ok(())
    }

    /// Reads one enterprise's directory, if it has a rule (else forgets it).
    pub(crate) async fn resolve(
        &mut self,
        store: &Store,
        engine: &mut AlarmEngine,
        enterprise: EnterpriseId,
    ) -> Result<(), StoreError> {
        if !engine.incident_enterprises().contains(&enterprise) {
            if self.resolved.remove(&enterprise) {
                let _ = engine.set_sites(enterprise, Vec::new());
            }
            return Ok(());
        }
        let sites = directory(store, enterprise).await?;
        match engine.set_sites(enterprise, sites) {
            Ok(()) => {
                self.resolved.insert(enterprise);
            }
            Err(error) => {
                tracing::error!(message = "Site directory refused; site incidents keep the previous one.", %enterprise, %error);
            }
        }
        Ok(())
    }
}

/// The enterprise's devices by site, at most [`MAX_DIRECTORY_DEVICES`].
async fn directory(store: &Store, enterprise: EnterpriseId) -> Result<Vec<SiteDevices>, StoreError> {
    let mut by_site: BTreeMap<SiteId, Vec<DeviceId>> = BTreeMap::new();
    let mut total = 0usize;
    let mut cursor = None;
    let query = DeviceQuery { enterprises: Some(vec![enterprise]), ..DeviceQuery::default() };
    loop {
        let page =
            store.entities.scan_devices(query.clone(), DevicePageRequest { cursor, limit: MAX_DEVICE_PAGE }).await?;
        for d in page.items {
            let Some(site) = d.site else { continue };
            if total == MAX_DIRECTORY_DEVICES {
                tracing::warn!(message = "Too many devices for site incidents; the rest are not grouped.", %enterprise, max = MAX_DIRECTORY_DEVICES);
                return Ok(into_sites(by_site));
            }
            total += 1;
            by_site.entry(site.id).or_default().push(d.device.id);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(into_sites(by_site)),
        }
    }
}

fn into_sites(by_site: BTreeMap<SiteId, Vec<DeviceId>>) -> Vec<SiteDevices> {
    by_site.into_iter().map(|(site, devices)| SiteDevices { site, devices }).collect()
}

/// The store's form of an engine incident step (the site's name is the caller's).
pub(crate) fn update(
    incident: &IncidentKey,
    at: UnixMillis,
    step: &IncidentStep,
    counts: IncidentCounts,
    site_name: String,
) -> IncidentUpdate {
    let member = |device_id, first_at, back| IncidentMember { device_id, first_at, back };
    let (members, resolved_at) = match step {
        IncidentStep::Opened { members } => (members.iter().map(|&(d, a)| member(d, a, false)).collect(), None),
        IncidentStep::Joined { device_id, activation } | IncidentStep::Again { device_id, activation } => {
            (vec![member(*device_id, *activation, false)], None)
        }
        IncidentStep::Back { device_id, activation } => (vec![member(*device_id, *activation, true)], None),
        IncidentStep::Resolved => (Vec::new(), Some(at)),
    };
    IncidentUpdate {
        enterprise_id: incident.enterprise_id,
        strategy_id: incident.strategy_id,
        site_id: incident.site_id,
        site_name,
        code: incident.code,
        opened_at: incident.opened_at,
        at,
        site_devices: counts.site_devices,
        affected: counts.affected,
        back: counts.back,
        resolved_at,
        members,
    }
}
