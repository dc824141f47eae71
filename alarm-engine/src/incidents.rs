//! Site incidents (issue 18 item 3): the rule a strategy may carry, the site directory the shell
//! gives the engine, and the engine's bookkeeping of tracked sites and open incidents.
//!
//! A strategy with a [`SiteIncidentRule`] groups the alarms it selects by (site, alarm type):
//!
//! - each newly raised alarm of a device with a known site is *held* for the rule's window
//!   (`window_ms`) before its firing notification is planned in the strategy's groups;
//! - when, within one window, the alarms of one type on distinct devices of one site reach the
//!   rule's threshold (`min_devices`, and `min_fraction_pct` of the site's devices), an
//!   *incident* opens: the held alarms become its members and are never notified on their own;
//!   the strategy's receivers get one notification about the incident (counts and a sample of at
//!   most [`INCIDENT_SAMPLE`] devices);
//! - while it is open, a new alarm of that type on that site joins it without a notification;
//!   a member that clears is counted *back* (raised again, it is no longer back);
//! - once `resolve_fraction_pct` of its members are back, it resolves: the receivers get one
//!   resolution, and members still active are notified as ordinary alarms from then on;
//! - an alarm whose window passes without an incident is notified as today, only later by the
//!   window.
//!
//! Alarms a maintenance window holds back are not counted (they are expected); when the window
//! ends they are notified on their own. Strategies without a rule (and devices without a site)
//! are not affected at all.
//!
//! # Bounds
//!
//! Sites per enterprise ≤ [`MAX_SITES`], devices in an enterprise's directory ≤
//! [`MAX_DIRECTORY_DEVICES`]; tracked (strategy, site, type) keys with recent alarms ≤
//! [`MAX_TRACKS`] (beyond it, alarms are not grouped and notify as today); open incidents ≤
//! [`MAX_OPEN_INCIDENTS`]; members per incident ≤ [`MAX_MEMBERS`] (more joiners are counted
//! in `affected` but not listed).

use std::collections::{BTreeMap, HashMap, VecDeque};

use fleetpulse_proto::{AlarmTypeCode, DeviceId, EnterpriseId, SiteId, StrategyId, UnixMillis};

use crate::EngineError;
use crate::notify::GroupKey;

/// Most sites of one enterprise in the directory.
pub const MAX_SITES: usize = 2_000;
/// Most devices of one enterprise in the directory.
pub const MAX_DIRECTORY_DEVICES: usize = 200_000;
/// Most (strategy, site, alarm type) keys tracked at once (recent alarms or an open incident).
pub const MAX_TRACKS: usize = 20_000;
/// Most incidents open at once.
pub const MAX_OPEN_INCIDENTS: usize = 1_000;
/// Most members listed per incident.
pub const MAX_MEMBERS: usize = 10_000;
/// Most devices listed in an incident's notification.
pub const INCIDENT_SAMPLE: usize = 20;
/// Longest grouping window: one hour.
pub const MAX_WINDOW_MS: u64 = 3_600_000;

/// A strategy's site-incident thresholds (off when a strategy has none).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SiteIncidentRule {
    /// Fewest distinct devices (at least 2).
    pub min_devices: u32,
    /// Fewest devices as a percentage of the site's devices (0–100; 0: only `min_devices`).
    pub min_fraction_pct: u8,
    /// How long an alarm is held and counted (1 s to [`MAX_WINDOW_MS`]).
    pub window_ms: u64,
    /// Percentage of members back (1–100) at which the incident resolves.
    pub resolve_fraction_pct: u8,
}

impl SiteIncidentRule {
    /// Checks the bounds; the reason when out of them.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.min_devices < 2 {
            return Err("min_devices must be at least 2");
        }
        if self.min_fraction_pct > 100 {
            return Err("min_fraction_pct must be at most 100");
        }
        if !(1_000..=MAX_WINDOW_MS).contains(&self.window_ms) {
            return Err("window_ms must be from 1000 to 3600000");
        }
        if !(1..=100).contains(&self.resolve_fraction_pct) {
            return Err("resolve_fraction_pct must be from 1 to 100");
        }
        Ok(())
    }

    /// Devices needed to open an incident at a site of `site_devices` devices.
    pub fn open_threshold(&self, site_devices: u32) -> u32 {
        let fraction = (u64::from(site_devices) * u64::from(self.min_fraction_pct)).div_ceil(100);
        self.min_devices.max(u32::try_from(fraction).unwrap_or(u32::MAX))
    }

    /// Members back needed to resolve an incident of `affected` members (at least 1).
    pub fn resolve_threshold(&self, affected: u32) -> u32 {
        let n = (u64::from(affected) * u64::from(self.resolve_fraction_pct)).div_ceil(100);
        u32::try_from(n).unwrap_or(u32::MAX).max(1)
    }
}

/// The devices of one site, as the shell resolved them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteDevices {
    /// The site.
    pub site: SiteId,
    /// Its devices.
    pub devices: Vec<DeviceId>,
}

/// Names one incident: the store's natural key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IncidentKey {
    /// The enterprise.
    pub enterprise_id: EnterpriseId,
    /// The strategy whose rule opened it.
    pub strategy_id: StrategyId,
    /// The site.
    pub site_id: SiteId,
    /// The alarm type.
    pub code: AlarmTypeCode,
    /// When it opened.
    pub opened_at: UnixMillis,
}

/// What happened to an incident.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IncidentStep {
    /// It opened with these members (device, start of its alarm's activation).
    Opened {
        /// The members.
        members: Vec<(DeviceId, UnixMillis)>,
    },
    /// An alarm joined it.
    Joined {
        /// The device.
        device_id: DeviceId,
        /// Start of its alarm's activation.
        activation: UnixMillis,
    },
    /// A member's alarm cleared.
    Back {
        /// The device.
        device_id: DeviceId,
        /// Start of the activation that cleared.
        activation: UnixMillis,
    },
    /// A member's alarm was raised again (it is no longer back).
    Again {
        /// The device.
        device_id: DeviceId,
        /// Start of the new activation.
        activation: UnixMillis,
    },
    /// Enough members are back.
    Resolved,
}

/// The counts of an incident after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IncidentCounts {
    /// Devices of the site when it opened.
    pub site_devices: u32,
    /// Devices whose alarm belonged to it.
    pub affected: u32,
    /// Of those, how many are back.
    pub back: u32,
}

/// What an incident notification says (besides its sampled alarms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IncidentNote {
    /// The incident.
    pub key: IncidentKey,
    /// Its counts when notified.
    pub counts: IncidentCounts,
    /// When it resolved ([`crate::Stage::Resolved`] only).
    pub resolved_at: Option<UnixMillis>,
}

/// An open incident as saved across a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedIncident {
    /// The incident.
    pub key: IncidentKey,
    /// Its counts.
    pub counts: IncidentCounts,
    /// Members: device, activation, whether back.
    pub members: Vec<(DeviceId, UnixMillis, bool)>,
}

/// One enterprise's directory: each device's site and each site's size.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    pub(crate) site_of: HashMap<DeviceId, SiteId>,
    pub(crate) size: HashMap<SiteId, u32>,
}

impl Directory {
    pub(crate) fn build(sites: Vec<SiteDevices>) -> Result<Directory, EngineError> {
        if sites.len() > MAX_SITES {
            return Err(EngineError::InvalidSites { reason: "too many sites" });
        }
        let total: usize = sites.iter().map(|s| s.devices.len()).sum();
        if total > MAX_DIRECTORY_DEVICES {
            return Err(EngineError::InvalidSites { reason: "too many devices" });
        }
        let mut d = Directory::default();
        for s in sites {
            // A device listed under two sites counts in the last one.
            for device in s.devices {
                if let Some(old) = d.site_of.insert(device, s.site)
                    && let Some(n) = d.size.get_mut(&old)
                {
                    *n = n.saturating_sub(1);
                }
                *d.size.entry(s.site).or_insert(0) += 1;
            }
        }
        Ok(d)
    }
}

/// A (strategy, site, alarm type) key tracked for incidents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TrackKey {
    pub(crate) enterprise: EnterpriseId,
    pub(crate) strategy: StrategyId,
    pub(crate) site: SiteId,
    pub(crate) code: AlarmTypeCode,
}

/// A member of an open incident.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Member {
    pub(crate) activation: UnixMillis,
    pub(crate) back: bool,
}

/// An open incident.
#[derive(Debug)]
pub(crate) struct Open {
    pub(crate) opened_at: UnixMillis,
    pub(crate) counts: IncidentCounts,
    pub(crate) members: BTreeMap<DeviceId, Member>,
}

/// Recent alarms of one key and its open incident, if any.
#[derive(Debug, Default)]
pub(crate) struct Track {
    /// (seen, device, activation), oldest first.
    pub(crate) recent: VecDeque<(UnixMillis, DeviceId, UnixMillis)>,
    pub(crate) open: Option<Open>,
}

/// An alarm held back for one strategy while its window runs.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) activation: UnixMillis,
    pub(crate) site: SiteId,
    pub(crate) window_ms: u64,
    pub(crate) groups: Vec<GroupKey>,
}

/// Key of a held alarm: due time first.
pub(crate) type HeldKey = (UnixMillis, DeviceId, AlarmTypeCode, StrategyId);

/// The engine's incident state.
#[derive(Debug, Default)]
pub(crate) struct IncidentBook {
    pub(crate) directory: HashMap<EnterpriseId, Directory>,
    pub(crate) tracks: HashMap<TrackKey, Track>,
    pub(crate) held: BTreeMap<HeldKey, Held>,
    /// Open incidents each (device, type) is a member of.
    pub(crate) member_of: HashMap<(DeviceId, AlarmTypeCode), Vec<TrackKey>>,
    pub(crate) open: usize,
}

impl IncidentBook {
    pub(crate) fn site_of(&self, enterprise: EnterpriseId, device: DeviceId) -> Option<(SiteId, u32)> {
        let d = self.directory.get(&enterprise)?;
        let site = *d.site_of.get(&device)?;
        Some((site, d.size.get(&site).copied().unwrap_or(0)))
    }

    pub(crate) fn next_deadline(&self) -> Option<UnixMillis> {
        self.held.keys().next().map(|k| k.0)
    }

    pub(crate) fn add_member(&mut self, key: TrackKey, device: DeviceId) {
        let list = self.member_of.entry((device, key.code)).or_default();
        if !list.contains(&key) {
            list.push(key);
        }
    }

    pub(crate) fn remove_member(&mut self, key: TrackKey, device: DeviceId) {
        if let Some(list) = self.member_of.get_mut(&(device, key.code)) {
            list.retain(|k| *k != key);
            if list.is_empty() {
                self.member_of.remove(&(device, key.code));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(min_devices: u32, min_fraction_pct: u8, resolve_fraction_pct: u8) -> SiteIncidentRule {
        SiteIncidentRule { min_devices, min_fraction_pct, window_ms: 60_000, resolve_fraction_pct }
    }

    #[test]
    fn incident_thresholds_round_up() {
        for (r, site, want_open) in
            [(rule(5, 0, 50), 40, 5), (rule(5, 50, 50), 40, 20), (rule(2, 33, 50), 10, 4), (rule(3, 100, 50), 0, 3)]
        {
            assert_eq!(r.open_threshold(site), want_open, "{r:?} {site}");
        }
        for (r, affected, want) in [(rule(2, 0, 50), 30, 15), (rule(2, 0, 90), 31, 28), (rule(2, 0, 1), 1, 1)] {
            assert_eq!(r.resolve_threshold(affected), want, "{r:?} {affected}");
        }
    }

    #[test]
    fn incident_rules_are_bounded() {
        assert!(rule(2, 0, 50).check().is_ok());
        assert!(rule(1, 0, 50).check().is_err());
        assert!(rule(2, 101, 50).check().is_err());
        assert!(rule(2, 0, 0).check().is_err());
        assert!(SiteIncidentRule { window_ms: 999, ..rule(2, 0, 50) }.check().is_err());
        assert!(SiteIncidentRule { window_ms: MAX_WINDOW_MS + 1, ..rule(2, 0, 50) }.check().is_err());
    }

    #[test]
    fn incident_directory_counts_each_device_once() {
        let d = Directory::build(vec![
            SiteDevices { site: SiteId(1), devices: vec![DeviceId(1), DeviceId(2)] },
            SiteDevices { site: SiteId(2), devices: vec![DeviceId(2), DeviceId(3)] },
        ])
        .expect("within bounds");
        assert_eq!(d.size.get(&SiteId(1)), Some(&1));
        assert_eq!(d.size.get(&SiteId(2)), Some(&2));
        assert_eq!(d.site_of.get(&DeviceId(2)), Some(&SiteId(2)));
        let many = vec![SiteDevices { site: SiteId(1), devices: vec![] }; MAX_SITES + 1];
        assert!(Directory::build(many).is_err());
    }
}
