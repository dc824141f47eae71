//! The engine's side of site incidents (see [`crate::incidents`]): the site directory, holding
//! new alarms of strategies with a rule for their window, opening, joining and resolving
//! incidents, and their notifications.

use std::collections::BTreeMap;

use fleetpulse_proto::{AlarmTypeCode, DeviceId, EnterpriseId, SiteId, UnixMillis};

use super::{Action, AlarmEngine};
use crate::EngineError;
use crate::incidents::{
    Directory, Held, INCIDENT_SAMPLE, IncidentCounts, IncidentKey, IncidentNote, IncidentStep, MAX_MEMBERS,
    MAX_OPEN_INCIDENTS, MAX_TRACKS, Member, Open, SavedIncident, SiteDevices, SiteIncidentRule, TrackKey,
};
use crate::notify::{AlarmRef, GroupKey, IdempotencyKey, Notification, NotifiedAlarm, Stage, add};
use crate::strategy::StrategyId;

impl AlarmEngine {
    /// Replaces the site directory of `enterprise`: each site's devices (an empty list forgets
    /// the enterprise's sites). A device that moved site is grouped with its new site from now
    /// on; incidents it is a member of keep it.
    ///
    /// # Errors
    ///
    /// More than [`crate::incidents::MAX_SITES`] sites or
    /// [`crate::incidents::MAX_DIRECTORY_DEVICES`] devices; nothing changes.
    pub fn set_sites(&mut self, enterprise: EnterpriseId, sites: Vec<SiteDevices>) -> Result<(), EngineError> {
        if sites.is_empty() {
            self.incidents.directory.remove(&enterprise);
            return Ok(());
        }
        let directory = Directory::build(sites)?;
        self.incidents.directory.insert(enterprise, directory);
        Ok(())
    }

    /// The enterprises with an enabled strategy that has a site-incident rule (the shell keeps
    /// their site directories).
    pub fn incident_enterprises(&self) -> Vec<EnterpriseId> {
        let mut out: Vec<EnterpriseId> = self
            .enterprises
            .iter()
            .filter(|(_, c)| c.strategies.iter().any(|s| s.strategy.enabled && s.strategy.site_incident.is_some()))
            .map(|(&e, _)| e)
            .collect();
        out.sort_unstable();
        out
    }

    /// Incidents open now.
    pub fn open_incidents(&self) -> usize {
        self.incidents.open
    }

    /// Alarms held back while their incident window runs.
    pub fn incident_held(&self) -> usize {
        self.incidents.held.len()
    }

    /// The counts of an open incident of (strategy, site, type), if one is open.
    pub fn incident(
        &self,
        enterprise: EnterpriseId,
        strategy: StrategyId,
        site: SiteId,
        code: AlarmTypeCode,
    ) -> Option<IncidentCounts> {
        let key = TrackKey { enterprise, strategy, site, code };
        self.incidents.tracks.get(&key)?.open.as_ref().map(|o| o.counts)
    }

    /// The open incidents, to save across a restart.
    pub(super) fn saved_incidents(&self) -> Vec<SavedIncident> {
        let mut out: Vec<SavedIncident> = self
            .incidents
            .tracks
            .iter()
            .filter_map(|(key, track)| {
                let open = track.open.as_ref()?;
                Some(SavedIncident {
                    key: incident_key(key, open.opened_at),
                    counts: open.counts,
                    members: open.members.iter().map(|(&d, m)| (d, m.activation, m.back)).collect(),
                })
            })
            .collect();
        out.sort_by_key(|s| s.key);
        out
    }

    /// Puts back an incident that was open when the previous process stopped. Call it before
    /// the active alarms are restored (so that its members join it silently), then
    /// [`AlarmEngine::settle_incidents`] after them. An incident of a strategy without a rule
    /// now, or beyond the bounds, is left out.
    pub fn restore_incident(&mut self, saved: SavedIncident) {
        let k = saved.key;
        let key = TrackKey { enterprise: k.enterprise_id, strategy: k.strategy_id, site: k.site_id, code: k.code };
        if self.incident_rule(key.enterprise, key.strategy).is_none()
            || self.incidents.open >= MAX_OPEN_INCIDENTS
            || self.incidents.tracks.get(&key).is_some_and(|t| t.open.is_some())
            || (!self.incidents.tracks.contains_key(&key) && self.incidents.tracks.len() >= MAX_TRACKS)
        {
            return;
        }
        let members: BTreeMap<DeviceId, Member> = saved
            .members
            .into_iter()
            .take(MAX_MEMBERS)
            .map(|(d, activation, back)| (d, Member { activation, back }))
            .collect();
        for &device in members.keys() {
            self.incidents.add_member(key, device);
        }
        let open = Open { opened_at: k.opened_at, counts: saved.counts, members };
        self.incidents.tracks.entry(key).or_default().open = Some(open);
        self.incidents.open += 1;
    }

    /// After a restart: members of restored incidents whose alarm is no longer active (it
    /// cleared while no process ran) are counted back, and incidents with enough back resolve.
    pub fn settle_incidents(&mut self, now: UnixMillis) {
        let now = self.begin(now);
        let mut gone = Vec::new();
        for (key, track) in &self.incidents.tracks {
            let Some(open) = &track.open else { continue };
            for (&device, m) in &open.members {
                let active = self.alarms.get(&(device, key.code)).is_some_and(|a| a.activation == m.activation);
                if !m.back && !active {
                    gone.push((*key, device));
                }
            }
        }
        for (key, device) in gone {
            self.member_back(now, key, device);
        }
        self.handle_timeout(now);
    }

    /// The site-incident rule of an enabled strategy, if it has one.
    fn incident_rule(&self, enterprise: EnterpriseId, strategy: StrategyId) -> Option<SiteIncidentRule> {
        self.enterprises
            .get(&enterprise)?
            .strategies
            .iter()
            .find(|s| s.strategy.id == strategy && s.strategy.enabled)?
            .strategy
            .site_incident
    }

    /// Queues the firing notification of a new activation in `groups`; the groups of strategies
    /// with a site-incident rule (for a device with a known site) instead join an open incident,
    /// open one, or hold the alarm for the rule's window.
    pub(super) fn queue_or_group(
        &mut self,
        at: UnixMillis,
        enterprise: EnterpriseId,
        alarm: AlarmRef,
        groups: &[GroupKey],
    ) {
        let site = self.incidents.site_of(enterprise, alarm.device);
        let mut plain = Vec::new();
        let mut grouped: Vec<(StrategyId, SiteIncidentRule, Vec<GroupKey>)> = Vec::new();
        for &g in groups {
            match (site, self.incident_rule(g.enterprise, g.strategy)) {
                (Some(_), Some(rule)) => match grouped.iter_mut().find(|(s, _, _)| *s == g.strategy) {
                    Some((_, _, gs)) => gs.push(g),
                    None => grouped.push((g.strategy, rule, vec![g])),
                },
                _ => plain.push(g),
            }
        }
        if !plain.is_empty() {
            self.queue_firing(alarm, &plain);
        }
        let Some((site, size)) = site else { return };
        for (strategy, rule, gs) in grouped {
            let key = TrackKey { enterprise, strategy, site, code: alarm.code };
            self.group_alarm(at, key, size, rule, alarm, gs);
        }
    }

    fn group_alarm(
        &mut self,
        at: UnixMillis,
        key: TrackKey,
        site_devices: u32,
        rule: SiteIncidentRule,
        alarm: AlarmRef,
        groups: Vec<GroupKey>,
    ) {
        // An activation older than now was taken over after a restart: it may have been
        // notified already, so it takes its place again in an incident it was a member of, and
        // is otherwise planned as before (the outbox leaves out what was queued).
        let fresh = alarm.activation == at;
        if self.join_open(at, key, alarm, fresh) {
            return;
        }
        if !fresh {
            self.queue_firing(alarm, &groups);
            return;
        }
        if !self.incidents.tracks.contains_key(&key) && self.incidents.tracks.len() >= MAX_TRACKS {
            self.queue_firing(alarm, &groups);
            return;
        }
        let window_start = UnixMillis(at.0.saturating_sub(i64::try_from(rule.window_ms).unwrap_or(i64::MAX)));
        let track = self.incidents.tracks.entry(key).or_default();
        while track.recent.front().is_some_and(|&(seen, _, _)| seen <= window_start) {
            track.recent.pop_front();
        }
        if track.recent.len() >= MAX_MEMBERS {
            track.recent.pop_front();
        }
        track.recent.push_back((at, alarm.device, alarm.activation));
        // Distinct devices whose recent alarm is still the active one.
        let alarms = &self.alarms;
        let live: BTreeMap<DeviceId, (UnixMillis, UnixMillis)> = track
            .recent
            .iter()
            .filter(|&&(_, d, act)| alarms.get(&(d, key.code)).is_some_and(|a| a.activation == act))
            .map(|&(seen, d, act)| (d, (seen, act)))
            .collect();
        let reached = u32::try_from(live.len()).unwrap_or(u32::MAX) >= rule.open_threshold(site_devices);
        if !reached || self.incidents.open >= MAX_OPEN_INCIDENTS {
            let due = add(at, rule.window_ms);
            let held = Held { activation: alarm.activation, site: key.site, window_ms: rule.window_ms, groups };
            self.incidents.held.insert((due, alarm.device, alarm.code, key.strategy), held);
            return;
        }
        track.recent.clear();
        let mut members = BTreeMap::new();
        for (&device, &(seen, activation)) in &live {
            self.incidents.held.remove(&(add(seen, rule.window_ms), device, key.code, key.strategy));
            members.insert(device, Member { activation, back: false });
        }
        for &device in members.keys() {
            self.incidents.add_member(key, device);
        }
        let affected = u32::try_from(members.len()).unwrap_or(u32::MAX);
        let counts = IncidentCounts { site_devices, affected, back: 0 };
        let step = IncidentStep::Opened { members: members.iter().map(|(&d, m)| (d, m.activation)).collect() };
        let open = Open { opened_at: at, counts, members };
        self.incidents.open += 1;
        self.push_incident(at, &key, &open, step);
        self.notify_incident(at, &key, &open, Stage::Firing);
        if let Some(track) = self.incidents.tracks.get_mut(&key) {
            track.open = Some(open);
        }
    }

    /// Adds the alarm to the open incident of `key`, if there is one: a new member, a member
    /// raised again, or (after a restart) a member taking its place again silently.
    fn join_open(&mut self, at: UnixMillis, key: TrackKey, alarm: AlarmRef, fresh: bool) -> bool {
        let Some(open) = self.incidents.tracks.get_mut(&key).and_then(|t| t.open.as_mut()) else { return false };
        let step = match open.members.get_mut(&alarm.device) {
            Some(m) if m.activation == alarm.activation => return true,
            _ if !fresh => return false,
            Some(m) => {
                if m.back {
                    open.counts.back = open.counts.back.saturating_sub(1);
                }
                *m = Member { activation: alarm.activation, back: false };
                IncidentStep::Again { device_id: alarm.device, activation: alarm.activation }
            }
            None => {
                if open.members.len() < MAX_MEMBERS {
                    open.members.insert(alarm.device, Member { activation: alarm.activation, back: false });
                }
                open.counts.affected = open.counts.affected.saturating_add(1);
                IncidentStep::Joined { device_id: alarm.device, activation: alarm.activation }
            }
        };
        self.incidents.add_member(key, alarm.device);
        if let Some(open) = self.incidents.tracks.get(&key).and_then(|t| t.open.as_ref()) {
            let action = incident_action(at, &key, open, step);
            self.actions.push_back(action);
        }
        true
    }

    /// Lets go of the alarms whose window passed without an incident: notified as today.
    pub(super) fn release_held(&mut self, now: UnixMillis) {
        while let Some(entry) = self.incidents.held.first_entry().filter(|e| e.key().0 <= now) {
            let ((_, device, code, strategy), held) = entry.remove_entry();
            let key = TrackKey {
                enterprise: held.groups.first().map_or(EnterpriseId(0), |g| g.enterprise),
                strategy,
                site: held.site,
                code,
            };
            if let Some(track) = self.incidents.tracks.get_mut(&key) {
                let window_start = UnixMillis(now.0.saturating_sub(i64::try_from(held.window_ms).unwrap_or(i64::MAX)));
                while track.recent.front().is_some_and(|&(seen, _, _)| seen <= window_start) {
                    track.recent.pop_front();
                }
                if track.recent.is_empty() && track.open.is_none() {
                    self.incidents.tracks.remove(&key);
                }
            }
            if self.alarms.get(&(device, code)).is_some_and(|a| a.activation == held.activation) {
                self.queue_firing(AlarmRef { device, code, activation: held.activation }, &held.groups);
            }
        }
    }

    /// An alarm cleared: counted back in the incidents it is a member of.
    pub(super) fn incident_member_cleared(&mut self, now: UnixMillis, device: DeviceId, code: AlarmTypeCode) {
        let Some(keys) = self.incidents.member_of.get(&(device, code)).cloned() else { return };
        for key in keys {
            self.member_back(now, key, device);
        }
    }

    fn member_back(&mut self, now: UnixMillis, key: TrackKey, device: DeviceId) {
        let Some(open) = self.incidents.tracks.get_mut(&key).and_then(|t| t.open.as_mut()) else { return };
        let Some(m) = open.members.get_mut(&device) else { return };
        if m.back {
            return;
        }
        m.back = true;
        let activation = m.activation;
        open.counts.back = open.counts.back.saturating_add(1);
        let counts = open.counts;
        if let Some(open) = self.incidents.tracks.get(&key).and_then(|t| t.open.as_ref()) {
            let action = incident_action(now, &key, open, IncidentStep::Back { device_id: device, activation });
            self.actions.push_back(action);
        }
        // A strategy that lost its rule resolves its incidents at their next member back.
        let done = self
            .incident_rule(key.enterprise, key.strategy)
            .is_none_or(|r| counts.back >= r.resolve_threshold(counts.affected));
        if done {
            self.resolve_incident(now, key);
        }
    }

    /// Enough members are back: one resolution to the receivers; members still active are
    /// notified as ordinary alarms from now on.
    fn resolve_incident(&mut self, now: UnixMillis, key: TrackKey) {
        let Some(track) = self.incidents.tracks.get_mut(&key) else { return };
        let Some(open) = track.open.take() else { return };
        if track.recent.is_empty() {
            self.incidents.tracks.remove(&key);
        }
        self.incidents.open = self.incidents.open.saturating_sub(1);
        for &device in open.members.keys() {
            self.incidents.remove_member(key, device);
        }
        self.push_incident(now, &key, &open, IncidentStep::Resolved);
        self.notify_incident(now, &key, &open, Stage::Resolved);
        for (&device, m) in open.members.iter().filter(|(_, m)| !m.back) {
            let Some(alarm) = self.alarms.get(&(device, key.code)) else { continue };
            if alarm.activation != m.activation {
                continue;
            }
            let groups: Vec<GroupKey> =
                alarm.routes.iter().filter(|r| r.group.strategy == key.strategy && !r.sent).map(|r| r.group).collect();
            self.queue_firing(AlarmRef { device, code: key.code, activation: m.activation }, &groups);
        }
    }

    fn push_incident(&mut self, at: UnixMillis, key: &TrackKey, open: &Open, step: IncidentStep) {
        self.actions.push_back(incident_action(at, key, open, step));
    }

    /// One notification per receiver of the strategy: the counts and a sample of the members.
    fn notify_incident(&mut self, at: UnixMillis, key: &TrackKey, open: &Open, stage: Stage) {
        let Some(strategy) = self
            .enterprises
            .get(&key.enterprise)
            .and_then(|c| c.strategies.iter().find(|s| s.strategy.id == key.strategy && s.strategy.enabled))
        else {
            return;
        };
        let mut receivers = strategy.receivers.clone();
        receivers.dedup();
        let incident = incident_key(key, open.opened_at);
        let note =
            IncidentNote { key: incident, counts: open.counts, resolved_at: (stage == Stage::Resolved).then_some(at) };
        for r in receivers {
            let Some(receiver) = self.receivers.get(r as usize).cloned() else { continue };
            let group = GroupKey { enterprise: key.enterprise, strategy: key.strategy, receiver: r };
            let items: Vec<NotifiedAlarm> = open
                .members
                .iter()
                .take(INCIDENT_SAMPLE)
                .map(|(&device, m)| {
                    let alarm = self.alarms.get(&(device, key.code)).filter(|a| a.activation == m.activation);
                    NotifiedAlarm {
                        device_id: device,
                        code: key.code,
                        first_at: m.activation,
                        latest_at: alarm.map_or(m.activation, |a| a.latest_at),
                        count: alarm.map_or(1, |a| a.count),
                        description: alarm.map(|a| a.description.clone()).unwrap_or_default(),
                        resolved_at: m.back.then_some(at),
                        key: IdempotencyKey::incident_item(&group, &receiver, &incident, device, stage),
                    }
                })
                .collect();
            self.actions.push_back(Action::Notify(Notification {
                receiver,
                enterprise_id: key.enterprise,
                strategy_id: key.strategy,
                stage,
                key: IdempotencyKey::digest(&items),
                items,
                incident: Some(note),
            }));
        }
    }
}

fn incident_key(key: &TrackKey, opened_at: UnixMillis) -> IncidentKey {
    IncidentKey {
        enterprise_id: key.enterprise,
        strategy_id: key.strategy,
        site_id: key.site,
        code: key.code,
        opened_at,
    }
}

fn incident_action(at: UnixMillis, key: &TrackKey, open: &Open, step: IncidentStep) -> Action {
    Action::Incident { incident: incident_key(key, open.opened_at), at, step, counts: open.counts }
}

#[cfg(test)]
mod tests;
