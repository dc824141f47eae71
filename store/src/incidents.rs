//! Site incidents (`IncidentStore`, issue 18 item 3): one row per incident the alarm engine
//! opened (named by its natural key: enterprise, strategy, site, alarm type, opening time), its
//! counts as they change, and one row per member alarm activation ("part of incident X").

use async_trait::async_trait;
use fleetpulse_proto::{AlarmTypeCode, DeviceId, EnterpriseId, IncidentId, SiteId, StrategyId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::{Page, Result};

/// Most members one [`IncidentUpdate`] carries (the engine lists at most 10,000 per incident).
pub const MAX_INCIDENT_UPDATE_MEMBERS: usize = 10_000;
/// Most incidents or members one listing returns.
pub const MAX_INCIDENT_PAGE: u32 = 500;
/// Most alarm activations [`IncidentStore::alarm_incidents`] reads at once.
pub const MAX_INCIDENT_ACTIVATIONS: usize = 1_000;

/// Site incidents and their members.
#[async_trait]
pub trait IncidentStore: Send + Sync + 'static {
    /// Applies one step of an incident: creates it at its first step (by its natural key),
    /// then sets its counts and resolution and upserts the members given. Its id.
    async fn record_incident(&self, update: IncidentUpdate) -> Result<IncidentId>;
    /// The incident with this id.
    async fn incident(&self, id: IncidentId) -> Result<Option<StoredIncident>>;
    /// The enterprise's incidents, newest first: ids below `page.after` when it is above 0; at
    /// most `page.limit` (≤ [`MAX_INCIDENT_PAGE`]).
    async fn list_incidents(&self, enterprise: EnterpriseId, page: Page) -> Result<Vec<StoredIncident>>;
    /// The incident's members by device id: ids above `page.after`; at most `page.limit`.
    async fn incident_members(&self, id: IncidentId, page: Page) -> Result<Vec<IncidentMember>>;
    /// The incidents these activations (device, type, first time) are members of, at most
    /// [`MAX_INCIDENT_ACTIVATIONS`] activations.
    async fn alarm_incidents(
        &self,
        activations: Vec<(DeviceId, AlarmTypeCode, UnixMillis)>,
    ) -> Result<Vec<AlarmIncident>>;
}

/// One step of an incident, as the alarm service writes it (and a dead letter keeps it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentUpdate {
    /// The enterprise.
    pub enterprise_id: EnterpriseId,
    /// The strategy whose rule opened it.
    pub strategy_id: StrategyId,
    /// The site.
    pub site_id: SiteId,
    /// The site's name (kept if the site is deleted later).
    pub site_name: String,
    /// The alarm type.
    pub code: AlarmTypeCode,
    /// When it opened.
    pub opened_at: UnixMillis,
    /// When this step happened.
    pub at: UnixMillis,
    /// Devices of the site when it opened.
    pub site_devices: u32,
    /// Devices whose alarm belonged to it.
    pub affected: u32,
    /// Of those, how many are back.
    pub back: u32,
    /// When it resolved.
    pub resolved_at: Option<UnixMillis>,
    /// Members added or changed by this step.
    pub members: Vec<IncidentMember>,
}

/// A stored incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StoredIncident {
    /// Its id.
    pub id: IncidentId,
    /// The enterprise.
    pub enterprise_id: EnterpriseId,
    /// The strategy whose rule opened it.
    pub strategy_id: StrategyId,
    /// The site.
    pub site_id: SiteId,
    /// The site's name when it opened.
    pub site_name: String,
    /// The alarm type.
    pub code: AlarmTypeCode,
    /// When it opened.
    pub opened_at: UnixMillis,
    /// Its last step.
    pub updated_at: UnixMillis,
    /// When it resolved; `None` while open.
    pub resolved_at: Option<UnixMillis>,
    /// Devices of the site when it opened.
    pub site_devices: u32,
    /// Devices whose alarm belonged to it.
    pub affected: u32,
    /// Of those, how many are back.
    pub back: u32,
}

/// A member of an incident: one alarm activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IncidentMember {
    /// The device.
    pub device_id: DeviceId,
    /// Start of its alarm's activation.
    pub first_at: UnixMillis,
    /// Whether its alarm cleared.
    pub back: bool,
}

/// An alarm activation and the incident it is part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AlarmIncident {
    /// The device.
    pub device_id: DeviceId,
    /// The alarm type.
    pub code: AlarmTypeCode,
    /// Start of the activation.
    pub first_at: UnixMillis,
    /// The incident.
    pub incident_id: IncidentId,
}

pub(crate) fn check_update(update: &IncidentUpdate) -> Result<()> {
    crate::check_bound("incident members", update.members.len(), MAX_INCIDENT_UPDATE_MEMBERS)?;
    if update.site_name.chars().count() > 256 {
        return Err(crate::StoreError::InvalidInput("site name over 256 characters".into()));
    }
    Ok(())
}

pub(crate) fn check_page(page: Page) -> Result<()> {
    crate::check_bound("incident page", page.limit as usize, MAX_INCIDENT_PAGE as usize)
}
