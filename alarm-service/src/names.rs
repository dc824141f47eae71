//! Display names of enterprises and devices for notification emails, cached (bounded) so that
//! a storm does not read the same rows again and again.

use std::collections::HashMap;

use fleetpulse_proto::{DeviceId, EnterpriseId, SiteId};
use fleetpulse_store::{Store, StoreError};

/// Most cached enterprise names and device labels before the caches start over.
const MAX_CACHED_NAMES: usize = 100_000;

/// Cached display names (bounded: a full cache starts over).
#[derive(Default)]
pub(crate) struct Names {
    enterprises: HashMap<EnterpriseId, String>,
    devices: HashMap<DeviceId, String>,
    sites: HashMap<SiteId, String>,
}

impl Names {
    pub(crate) async fn enterprise(&mut self, store: &Store, id: EnterpriseId) -> Result<String, StoreError> {
        if let Some(name) = self.enterprises.get(&id) {
            return Ok(name.clone());
        }
        let name = store.entities.enterprise(id).await?.map_or_else(|| format!("Enterprise {id}"), |e| e.name);
        if self.enterprises.len() >= MAX_CACHED_NAMES {
            self.enterprises.clear();
        }
        self.enterprises.insert(id, name.clone());
        Ok(name)
    }

    pub(crate) async fn site(&mut self, store: &Store, id: SiteId) -> Result<String, StoreError> {
        if let Some(name) = self.sites.get(&id) {
            return Ok(name.clone());
        }
        let name = store.entities.site(id).await?.map_or_else(|| format!("Site {id}"), |s| s.name);
        if self.sites.len() >= MAX_CACHED_NAMES {
            self.sites.clear();
        }
        self.sites.insert(id, name.clone());
        Ok(name)
    }

    pub(crate) async fn device(&mut self, store: &Store, id: DeviceId) -> Result<String, StoreError> {
        if let Some(label) = self.devices.get(&id) {
            return Ok(label.clone());
        }
        let label = match store.entities.device(id).await? {
            Some(d) if !d.name.is_empty() => d.name,
            Some(d) => d.mac.map(|m| m.to_string()).or(d.serial).unwrap_or_else(|| id.to_string()),
            None => id.to_string(),
        };
        if self.devices.len() >= MAX_CACHED_NAMES {
            self.devices.clear();
        }
        self.devices.insert(id, label.clone());
        Ok(label)
    }
}
