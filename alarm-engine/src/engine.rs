//! [`AlarmEngine`]: the deterministic alarm state machine (ALM-2, ALM-4, ALM-5 core, ALM-8).
//!
//! Inputs are `handle_*(now, ..)` calls, outputs are drained with [`AlarmEngine::poll_action`].
//! Each input first runs the timers due at `now`, then applies itself, then runs the timers it
//! made due (a strategy without grouping notifies in the same call). The engine's clock only moves
//! forward: a `now` earlier than one already seen is taken as the latest time seen for timers;
//! a device event still keeps its own time as the alarm's time (its activation, first and latest
//! times, threshold windows), so that alarm identities match the times the store recorded.
//!
//! # Lifecycle (ALM-2)
//!
//! Per (device, alarm type) an alarm is *active* from its first raise until it clears; it may be
//! *acknowledged* by an account in between (then no reminders are sent; further raises keep it
//! acknowledged). It clears by recovery (the device's own clear, back online for Offline, a
//! sample under the threshold for 401/402) or by an account's manual clear. A raise after the
//! clear starts a new *activation*, identified by its start time, so its notifications get new
//! keys. Cleared alarms leave no state behind.
//!
//! # Memory bounds
//!
//! - per active alarm: one entry (≈ 120 bytes + its description ≤ 1 KiB + 24 bytes per selecting
//!   (strategy, receiver));
//! - per device and metric: one 40-byte threshold state, only while a sample is above some limit
//!   or the derived alarm is active;
//! - per open group: ≈ 200 bytes + 24 bytes per unsent firing alarm + one item per unsent
//!   resolution + ≈ 64 bytes per reminder (one per sent, still active, unacknowledged alarm); a
//!   group exists only while it has something to send or a reminder scheduled;
//! - per enterprise: its strategies ([`MAX_STRATEGIES_PER_ENTERPRISE`] ×
//!   [`MAX_RECEIVERS_PER_STRATEGY`] receivers); each distinct receiver address is interned once
//!   for the engine's lifetime;
//! - the action queue holds what the inputs since the last drain produced: drain it after every
//!   input.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, VecDeque};

use fleetpulse_proto::alarm_types::OFFLINE;
use fleetpulse_proto::domain::{AlarmChange, AlarmChangeKind, DeviceAlarm, ResourceSample};
use fleetpulse_proto::{AccountId, AlarmTypeCode, DeviceId, EnterpriseId, UnixMillis};

use crate::incidents::IncidentBook;
use crate::notify::{
    AlarmRef, Group, GroupKey, IdempotencyKey, Notification, NotifiedAlarm, RepeatDue, RepeatKey, Stage, add,
};
use crate::strategy::{
    AlarmStrategy, MAX_RECEIVERS_PER_STRATEGY, MAX_STRATEGIES_PER_ENTERPRISE, NotifySettings, Receiver,
};
use crate::threshold::{Metric, MetricRules, ThresholdOutcome, ThresholdState};
use crate::windows::WindowBook;
use crate::{AlarmInput, DeviceEvent, DeviceInput, EngineError};

/// Description of the derived Offline alarm (the same text [`crate::evaluate`] uses).
const OFFLINE_DESCRIPTION: &str = "The device missed its heartbeats.";

/// What the engine knows about an active alarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlarmStatus {
    /// Start of this activation.
    pub first_at: UnixMillis,
    /// Latest raise.
    pub latest_at: UnixMillis,
    /// Raises during this activation.
    pub count: u32,
    /// Who acknowledged it and when.
    pub acknowledged: Option<(AccountId, UnixMillis)>,
}

/// Sizes of the engine's state, for metrics and for checking the memory bounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Active alarms.
    pub active_alarms: usize,
    /// Device-metric threshold states.
    pub threshold_states: usize,
    /// Open notification groups.
    pub open_groups: usize,
    /// Scheduled reminders (one per group of each sent, active, unacknowledged alarm).
    pub scheduled_repeats: usize,
    /// Open site incidents.
    pub open_incidents: usize,
}

#[derive(Debug)]
struct Route {
    group: GroupKey,
    /// Whether the firing notification went out to this group.
    sent: bool,
    /// When the next reminder to this group is due, if one is scheduled.
    reminder: Option<UnixMillis>,
}

#[derive(Debug)]
struct ActiveAlarm {
    enterprise: EnterpriseId,
    activation: UnixMillis,
    latest_at: UnixMillis,
    count: u32,
    description: String,
    acknowledged: Option<(AccountId, UnixMillis)>,
    routes: Vec<Route>,
    /// Number of the first reminder: 1, or for an alarm restored after a restart the number
    /// its age implies (so that reminder keys go on where the previous process stopped).
    first_reminder: u32,
}

/// An alarm that was active when the previous process stopped, as the store kept it: what
/// [`AlarmEngine::restore_alarm`] takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoredAlarm {
    /// The device.
    pub device_id: DeviceId,
    /// Its enterprise.
    pub enterprise_id: EnterpriseId,
    /// The alarm type.
    pub code: AlarmTypeCode,
    /// Start of the activation (the record's first time).
    pub first_at: UnixMillis,
    /// Latest raise.
    pub latest_at: UnixMillis,
    /// Raises during the activation.
    pub count: u32,
    /// Latest description.
    pub description: String,
    /// Who acknowledged it and when.
    pub acknowledged: Option<(AccountId, UnixMillis)>,
}

#[derive(Debug)]
struct CompiledStrategy {
    strategy: AlarmStrategy,
    /// Interned receivers, in the strategy's order.
    receivers: Vec<u32>,
}

#[derive(Debug)]
struct EnterpriseConfig {
    strategies: Vec<CompiledStrategy>,
    cpu: MetricRules,
    memory: MetricRules,
}

impl EnterpriseConfig {
    fn rules(&self, metric: Metric) -> &MetricRules {
        match metric {
            Metric::Cpu => &self.cpu,
            Metric::Memory => &self.memory,
        }
    }
}

/// The alarm engine: strategies in, inputs and time in, [`Action`]s out. Deterministic: the same
/// configuration, inputs and times produce the same actions.
#[derive(Debug)]
pub struct AlarmEngine {
    now: UnixMillis,
    enterprises: HashMap<EnterpriseId, EnterpriseConfig>,
    receivers: Vec<Receiver>,
    receiver_ids: HashMap<Receiver, u32>,
    alarms: HashMap<(DeviceId, AlarmTypeCode), ActiveAlarm>,
    thresholds: HashMap<(DeviceId, Metric), ThresholdState>,
    groups: HashMap<GroupKey, Group>,
    timers: BTreeSet<(UnixMillis, GroupKey)>,
    actions: VecDeque<Action>,
    generation: u32,
    windows: WindowBook,
    incidents: IncidentBook,
}

impl Default for AlarmEngine {
    fn default() -> Self {
        AlarmEngine::new()
    }
}

impl AlarmEngine {
    /// An engine with no strategies and no alarms.
    pub fn new() -> Self {
        AlarmEngine {
            now: UnixMillis(i64::MIN),
            enterprises: HashMap::new(),
            receivers: Vec::new(),
            receiver_ids: HashMap::new(),
            alarms: HashMap::new(),
            thresholds: HashMap::new(),
            groups: HashMap::new(),
            timers: BTreeSet::new(),
            actions: VecDeque::new(),
            generation: 0,
            windows: WindowBook::default(),
            incidents: IncidentBook::default(),
        }
    }

    /// Replaces the strategies of `enterprise` (an empty list removes them).
    ///
    /// Alarms already active keep the (strategy, receiver) routes they got when they fired, as long
    /// as those are still configured and enabled; routes that are gone lose their unsent and future
    /// notifications. New strategies apply to alarms that fire from now on. Threshold windows
    /// restart only for a metric whose set of limits changed.
    pub fn set_strategies(
        &mut self,
        enterprise: EnterpriseId,
        strategies: Vec<AlarmStrategy>,
    ) -> Result<(), EngineError> {
        if strategies.len() > MAX_STRATEGIES_PER_ENTERPRISE {
            return Err(EngineError::TooManyStrategies { max: MAX_STRATEGIES_PER_ENTERPRISE });
        }
        for (i, s) in strategies.iter().enumerate() {
            if s.enterprise_id != enterprise {
                return Err(EngineError::WrongEnterprise { strategy: s.id, enterprise: s.enterprise_id });
            }
            if strategies[..i].iter().any(|o| o.id == s.id) {
                return Err(EngineError::DuplicateStrategy(s.id));
            }
            if s.receivers.len() > MAX_RECEIVERS_PER_STRATEGY {
                return Err(EngineError::TooManyReceivers { strategy: s.id, max: MAX_RECEIVERS_PER_STRATEGY });
            }
            if s.notify.group_interval_ms == 0 || s.notify.repeat_interval_ms == 0 {
                return Err(EngineError::ZeroInterval { strategy: s.id });
            }
            if let Some(Err(reason)) = s.site_incident.map(|r| r.check()) {
                return Err(EngineError::InvalidIncidentRule { strategy: s.id, reason });
            }
            if let Some(rule) = s.thresholds.iter().find(|r| r.above_centi_pct >= 10_000) {
                return Err(EngineError::ThresholdOutOfRange { strategy: s.id, above_centi_pct: rule.above_centi_pct });
            }
        }
        let previous = self.enterprises.get(&enterprise);
        let enabled_rules = || strategies.iter().filter(|s| s.enabled).flat_map(|s| &s.thresholds);
        let next = self.generation.wrapping_add(1);
        let cpu = MetricRules::compile(Metric::Cpu, enabled_rules(), previous.map(|p| &p.cpu), next)?;
        let memory = MetricRules::compile(Metric::Memory, enabled_rules(), previous.map(|p| &p.memory), next)?;
        self.generation = next;

        let strategies: Vec<CompiledStrategy> = strategies
            .into_iter()
            .map(|strategy| {
                let receivers = strategy.receivers.iter().map(|r| self.intern(r)).collect();
                CompiledStrategy { strategy, receivers }
            })
            .collect();
        let config = EnterpriseConfig { strategies, cpu, memory };

        // Keep the groups still configured (with their new settings), drop the others.
        let mut dropped = Vec::new();
        self.groups.retain(|key, group| {
            if key.enterprise != enterprise {
                return true;
            }
            match settings_of(&config, key) {
                Some(settings) => {
                    group.settings = settings;
                    true
                }
                None => {
                    dropped.extend(group.deadline.map(|d| (d, *key)));
                    false
                }
            }
        });
        for timer in dropped {
            self.timers.remove(&timer);
        }
        if config.strategies.is_empty() {
            self.enterprises.remove(&enterprise);
        } else {
            self.enterprises.insert(enterprise, config);
        }
        Ok(())
    }

    /// Applies one [`AlarmInput`] (the same inputs [`crate::evaluate`] takes).
    pub fn handle_input(&mut self, now: UnixMillis, device: DeviceId, enterprise: EnterpriseId, input: AlarmInput<'_>) {
        match input {
            AlarmInput::Reported(alarm) => self.handle_device_alarm(now, device, enterprise, alarm),
            AlarmInput::WentOffline => self.handle_offline(now, device, enterprise),
            AlarmInput::BackOnline => self.handle_online(now, device, enterprise),
        }
    }

    /// A device reported an alarm: raise (count + 1) or clear its type.
    pub fn handle_device_alarm(
        &mut self,
        now: UnixMillis,
        device: DeviceId,
        enterprise: EnterpriseId,
        alarm: &DeviceAlarm,
    ) {
        let clock = self.begin(now);
        let code = alarm.alarm_type.code;
        if alarm.clear {
            self.clear(now, device, enterprise, code, None);
        } else {
            self.raise(now, device, enterprise, code, alarm.description.clone());
        }
        self.handle_timeout(clock);
    }

    /// The offline detector found the device's heartbeats missing: raise Offline.
    pub fn handle_offline(&mut self, now: UnixMillis, device: DeviceId, enterprise: EnterpriseId) {
        let clock = self.begin(now);
        self.raise(now, device, enterprise, OFFLINE, OFFLINE_DESCRIPTION.into());
        self.handle_timeout(clock);
    }

    /// The device is back online: its Offline alarm clears.
    pub fn handle_online(&mut self, now: UnixMillis, device: DeviceId, enterprise: EnterpriseId) {
        let clock = self.begin(now);
        self.clear(now, device, enterprise, OFFLINE, None);
        self.handle_timeout(clock);
    }

    /// A CPU/memory sample: evaluates the enterprise's threshold rules (see [`crate::threshold`]).
    pub fn handle_resource_sample(
        &mut self,
        now: UnixMillis,
        device: DeviceId,
        enterprise: EnterpriseId,
        sample: &ResourceSample,
    ) {
        let clock = self.begin(now);
        let no_rules = MetricRules::default();
        for metric in Metric::ALL {
            // A sample without a value for the metric (memory total 0) tells nothing about it.
            let Some(value) = metric.value(sample) else { continue };
            // Without rules (strategies removed or disabled) an active threshold alarm clears.
            let rules = self.enterprises.get(&enterprise).map_or(&no_rules, |c| c.rules(metric));
            let outcome = match self.thresholds.entry((device, metric)) {
                Entry::Occupied(mut e) => {
                    let outcome = e.get_mut().observe(rules, now, value);
                    if e.get().is_idle() {
                        e.remove();
                    }
                    outcome
                }
                Entry::Vacant(v) if !rules.is_empty() => {
                    let mut state = ThresholdState::new(rules.generation);
                    let outcome = state.observe(rules, now, value);
                    if !state.is_idle() {
                        v.insert(state);
                    }
                    outcome
                }
                Entry::Vacant(_) => ThresholdOutcome::Unchanged,
            };
            match outcome {
                ThresholdOutcome::Unchanged => {}
                ThresholdOutcome::Raise(rule) => {
                    self.raise(now, device, enterprise, metric.alarm_code(), rule.describe(value));
                }
                ThresholdOutcome::Clear => self.clear(now, device, enterprise, metric.alarm_code(), None),
            }
        }
        self.handle_timeout(clock);
    }

    /// An account acknowledged an active alarm: it is no longer repeated. Acknowledging an
    /// acknowledged alarm changes nothing.
    pub fn handle_acknowledge(
        &mut self,
        now: UnixMillis,
        device: DeviceId,
        code: AlarmTypeCode,
        by: AccountId,
    ) -> Result<(), EngineError> {
        let now = self.begin(now);
        let alarm = self.alarms.get_mut(&(device, code)).ok_or(EngineError::NotActive { device, code })?;
        if alarm.acknowledged.is_none() {
            alarm.acknowledged = Some((by, now));
            let enterprise_id = alarm.enterprise;
            let reminders: Vec<(GroupKey, UnixMillis)> =
                alarm.routes.iter_mut().filter_map(|r| Some((r.group, r.reminder.take()?))).collect();
            self.actions.push_back(Action::Lifecycle {
                device_id: device,
                enterprise_id,
                code,
                at: now,
                transition: Transition::Acknowledged { by },
            });
            for (key, due) in reminders {
                self.cancel_reminder(key, (due, device, code));
            }
        }
        self.handle_timeout(now);
        Ok(())
    }

    /// An account cleared an active alarm by hand. For a threshold alarm the windows restart: a
    /// condition that persists is raised again once a rule holds for its whole duration.
    pub fn handle_manual_clear(
        &mut self,
        now: UnixMillis,
        device: DeviceId,
        code: AlarmTypeCode,
        by: AccountId,
    ) -> Result<(), EngineError> {
        let now = self.begin(now);
        let enterprise = self.alarms.get(&(device, code)).ok_or(EngineError::NotActive { device, code })?.enterprise;
        self.clear(now, device, enterprise, code, Some(by));
        if let Some(metric) = Metric::ALL.into_iter().find(|m| m.alarm_code() == code) {
            self.thresholds.remove(&(device, metric));
        }
        self.handle_timeout(now);
        Ok(())
    }

    /// Takes over an alarm that was active when the previous process stopped (from the store's
    /// alarm records), so that it is repeated, resolved and acknowledged like one raised here.
    ///
    /// Its firing notification is planned again: the engine cannot know whether the previous
    /// process queued it, so the shell leaves out items whose idempotency key is already in the
    /// outbox (keys depend only on the activation, so they are the same). Reminders are numbered
    /// from the alarm's age (`1 + age / repeat_interval`), so a reminder queued before the
    /// restart is recognised by its key too. A threshold alarm (401/402) is taken as holding:
    /// the next sample under every limit clears it. An alarm already known is left alone.
    pub fn restore_alarm(&mut self, now: UnixMillis, alarm: RestoredAlarm) {
        let now = self.begin(now);
        let RestoredAlarm { device_id: device, enterprise_id: enterprise, code, .. } = alarm;
        if self.alarms.contains_key(&(device, code)) {
            return;
        }
        let routes = self.routes_for(enterprise, code);
        let keys: Vec<GroupKey> = routes.iter().map(|r| r.group).collect();
        let age = u64::try_from(now.0.saturating_sub(alarm.first_at.0)).unwrap_or(0);
        let first_reminder = keys
            .iter()
            .filter_map(|k| self.enterprises.get(&enterprise).and_then(|c| settings_of(c, k)))
            .map(|s| 1 + age / s.repeat_interval_ms.max(1))
            .min()
            .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX));
        if let Some(metric) = Metric::ALL.into_iter().find(|m| m.alarm_code() == code) {
            let generation = self.enterprises.get(&enterprise).map_or(0, |c| c.rules(metric).generation);
            self.thresholds.insert((device, metric), ThresholdState::restored_active(generation));
        }
        self.alarms.insert(
            (device, code),
            ActiveAlarm {
                enterprise,
                activation: alarm.first_at,
                latest_at: alarm.latest_at,
                count: alarm.count.max(1),
                description: alarm.description,
                acknowledged: alarm.acknowledged,
                routes,
                first_reminder,
            },
        );
        self.fire_or_hold(now, enterprise, AlarmRef { device, code, activation: alarm.first_at }, &keys);
        self.handle_timeout(now);
    }

    /// Applies one owned [`DeviceEvent`] (what the ingest shards send).
    pub fn handle_event(&mut self, event: &DeviceEvent) {
        let DeviceEvent { device_id, enterprise_id, at, ref input } = *event;
        match input {
            DeviceInput::Alarm(alarm) => self.handle_device_alarm(at, device_id, enterprise_id, alarm),
            DeviceInput::Offline => self.handle_offline(at, device_id, enterprise_id),
            DeviceInput::Online => self.handle_online(at, device_id, enterprise_id),
            DeviceInput::Resources(sample) => self.handle_resource_sample(at, device_id, enterprise_id, sample),
        }
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: UnixMillis) {
        let now = self.advance(now);
        self.release_ended_windows(now);
        self.release_held(now);
        while let Some(&(due, key)) = self.timers.first() {
            if due > now {
                break;
            }
            self.fire_group(now, key);
        }
    }

    /// The earliest time [`AlarmEngine::handle_timeout`] has work (possibly nothing to send, when
    /// every alarm of a due group cleared before its flush). Never later than needed.
    pub fn next_deadline(&self) -> Option<UnixMillis> {
        let groups = self.timers.first().map(|&(due, _)| due);
        [groups, self.windows.next_deadline(), self.incidents.next_deadline()].into_iter().flatten().min()
    }

    /// The next action, oldest first.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Moves every pending action into `out`.
    pub fn drain_actions(&mut self, out: &mut Vec<Action>) {
        out.extend(self.actions.drain(..));
    }

    /// The state of an active alarm, if (device, code) is active.
    pub fn alarm_status(&self, device: DeviceId, code: AlarmTypeCode) -> Option<AlarmStatus> {
        self.alarms.get(&(device, code)).map(|a| AlarmStatus {
            first_at: a.activation,
            latest_at: a.latest_at,
            count: a.count,
            acknowledged: a.acknowledged,
        })
    }

    /// Sizes of the engine's state.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            active_alarms: self.alarms.len(),
            threshold_states: self.thresholds.len(),
            open_groups: self.groups.len(),
            scheduled_repeats: self.groups.values().map(|g| g.repeats.len()).sum(),
            open_incidents: self.incidents.open,
        }
    }

    fn advance(&mut self, now: UnixMillis) -> UnixMillis {
        self.now = self.now.max(now);
        self.now
    }

    /// Advances the clock and runs timers already due, before an input is applied.
    fn begin(&mut self, now: UnixMillis) -> UnixMillis {
        let now = self.advance(now);
        self.handle_timeout(now);
        now
    }

    fn intern(&mut self, receiver: &Receiver) -> u32 {
        if let Some(&id) = self.receiver_ids.get(receiver) {
            return id;
        }
        let id = u32::try_from(self.receivers.len()).expect("fewer than 2^32 distinct receivers are configured");
        self.receivers.push(receiver.clone());
        self.receiver_ids.insert(receiver.clone(), id);
        id
    }

    fn raise(
        &mut self,
        now: UnixMillis,
        device: DeviceId,
        enterprise: EnterpriseId,
        code: AlarmTypeCode,
        description: String,
    ) {
        let change = AlarmChange {
            device_id: device,
            enterprise_id: enterprise,
            code,
            at: now,
            kind: AlarmChangeKind::Raise { description: description.clone() },
        };
        self.actions.push_back(Action::Record(change));
        match self.alarms.entry((device, code)) {
            Entry::Occupied(mut e) => {
                let alarm = e.get_mut();
                alarm.latest_at = now;
                alarm.count = alarm.count.saturating_add(1);
                alarm.description = description;
            }
            Entry::Vacant(_) => {
                let routes = self.routes_for(enterprise, code);
                let keys: Vec<GroupKey> = routes.iter().map(|r| r.group).collect();
                self.alarms.insert(
                    (device, code),
                    ActiveAlarm {
                        enterprise,
                        activation: now,
                        latest_at: now,
                        count: 1,
                        description,
                        acknowledged: None,
                        routes,
                        first_reminder: 1,
                    },
                );
                self.fire_or_hold(now, enterprise, AlarmRef { device, code, activation: now }, &keys);
            }
        }
    }

    /// The (strategy, receiver) groups an alarm of `code` in `enterprise` is routed to now.
    fn routes_for(&self, enterprise: EnterpriseId, code: AlarmTypeCode) -> Vec<Route> {
        let mut routes = Vec::new();
        if let (Some(config), Some(ty)) = (self.enterprises.get(&enterprise), code.alarm_type()) {
            for s in config.strategies.iter().filter(|s| s.strategy.selects(code, ty.severity)) {
                for &receiver in &s.receivers {
                    let group = GroupKey { enterprise, strategy: s.strategy.id, receiver };
                    // A receiver listed twice in one strategy is notified once.
                    if !routes.iter().any(|r: &Route| r.group == group) {
                        routes.push(Route { group, sent: false, reminder: None });
                    }
                }
            }
        }
        routes
    }

    /// Queues the firing notification of `alarm` in each of `groups`.
    fn queue_firing(&mut self, alarm: AlarmRef, groups: &[GroupKey]) {
        let clock = self.now;
        for &key in groups {
            let Some(group) = self.open_group(key) else { continue };
            group.pending.push(alarm);
            group.schedule_flush(clock);
            self.reschedule(key);
        }
    }

    fn clear(
        &mut self,
        now: UnixMillis,
        device: DeviceId,
        enterprise: EnterpriseId,
        code: AlarmTypeCode,
        by: Option<AccountId>,
    ) {
        let change =
            AlarmChange { device_id: device, enterprise_id: enterprise, code, at: now, kind: AlarmChangeKind::Clear };
        self.actions.push_back(Action::Record(change));
        let Some(alarm) = self.alarms.remove(&(device, code)) else { return };
        self.windows.release(device, code);
        self.actions.push_back(Action::Lifecycle {
            device_id: device,
            enterprise_id: alarm.enterprise,
            code,
            at: now,
            transition: Transition::Cleared { by },
        });
        let alarm_ref = AlarmRef { device, code, activation: alarm.activation };
        let clock = self.now;
        for route in alarm.routes.iter().filter(|r| r.sent) {
            let key = route.group;
            let Some(receiver) = self.receivers.get(key.receiver as usize).cloned() else { continue };
            let Some(group) = self.open_group(key) else { continue };
            group.resolved.push(NotifiedAlarm {
                device_id: device,
                code,
                first_at: alarm.activation,
                latest_at: alarm.latest_at,
                count: alarm.count,
                description: alarm.description.clone(),
                resolved_at: Some(now),
                key: IdempotencyKey::item(&key, &receiver, &alarm_ref, Stage::Resolved, 0),
            });
            group.schedule_flush(clock);
            self.reschedule(key);
        }
        // After the resolutions are queued, so that their group stays open (group_interval applies).
        for route in &alarm.routes {
            if let Some(due) = route.reminder {
                self.cancel_reminder(route.group, (due, device, code));
            }
        }
        self.incident_member_cleared(now, device, code);
    }

    /// The group for `key`, opened if needed, if (strategy, receiver) is still configured.
    fn open_group(&mut self, key: GroupKey) -> Option<&mut Group> {
        let settings = settings_of(self.enterprises.get(&key.enterprise)?, &key)?;
        Some(self.groups.entry(key).or_insert_with(|| Group::new(settings)))
    }

    /// Removes a scheduled reminder; closes the group if that left it empty.
    fn cancel_reminder(&mut self, key: GroupKey, reminder: RepeatKey) {
        let Some(group) = self.groups.get_mut(&key) else { return };
        group.repeats.remove(&reminder);
        if group.is_empty() {
            if let Some(due) = group.deadline {
                self.timers.remove(&(due, key));
            }
            self.groups.remove(&key);
        } else {
            self.reschedule(key);
        }
    }

    /// Re-registers the group's deadline in the timer set after it changed.
    fn reschedule(&mut self, key: GroupKey) {
        let Some(group) = self.groups.get_mut(&key) else { return };
        let next = group.next_deadline();
        if next == group.deadline {
            return;
        }
        if let Some(old) = group.deadline {
            self.timers.remove(&(old, key));
        }
        if let Some(new) = next {
            self.timers.insert((new, key));
        }
        group.deadline = next;
    }

    /// Sends what the group has due at `now`: firing, then reminders, then resolved.
    fn fire_group(&mut self, now: UnixMillis, key: GroupKey) {
        let Some(mut group) = self.groups.remove(&key) else {
            self.timers.retain(|&(_, k)| k != key);
            return;
        };
        if let Some(old) = group.deadline.take() {
            self.timers.remove(&(old, key));
        }
        let Some(receiver) = self.receivers.get(key.receiver as usize).cloned() else { return };
        let repeat_ms = group.settings.repeat_interval_ms;
        let mut firing = Vec::new();
        let mut resolved = Vec::new();
        if group.flush_at.is_some_and(|at| at <= now) {
            group.flush_at = None;
            for alarm_ref in std::mem::take(&mut group.pending) {
                let Some(alarm) = self.alarms.get_mut(&(alarm_ref.device, alarm_ref.code)) else { continue };
                if alarm.activation != alarm_ref.activation {
                    continue;
                }
                let Some(route) = alarm.routes.iter_mut().find(|r| r.group == key && !r.sent) else { continue };
                route.sent = true;
                if alarm.acknowledged.is_none() {
                    let due = add(now, repeat_ms);
                    route.reminder = Some(due);
                    let repeat = RepeatDue { activation: alarm_ref.activation, number: alarm.first_reminder };
                    group.repeats.insert((due, alarm_ref.device, alarm_ref.code), repeat);
                }
                let item_key = IdempotencyKey::item(&key, &receiver, &alarm_ref, Stage::Firing, 0);
                firing.push(item(alarm, &alarm_ref, item_key));
            }
            resolved = std::mem::take(&mut group.resolved);
        }
        let mut reminders = Vec::new();
        while let Some(entry) = group.repeats.first_entry().filter(|e| e.key().0 <= now) {
            let ((_, device, code), due) = entry.remove_entry();
            // Clears and acknowledgements remove reminders, so the alarm is active and unacknowledged.
            let Some(alarm) = self.alarms.get_mut(&(device, code)) else { continue };
            let Some(route) = alarm.routes.iter_mut().find(|r| r.group == key) else { continue };
            let alarm_ref = AlarmRef { device, code, activation: due.activation };
            let item_key = IdempotencyKey::item(&key, &receiver, &alarm_ref, Stage::Repeat, due.number);
            let next = add(now, repeat_ms);
            route.reminder = Some(next);
            group.repeats.insert((next, device, code), RepeatDue { number: due.number.saturating_add(1), ..due });
            reminders.push(item(alarm, &alarm_ref, item_key));
        }
        let grouping = group.grouping();
        let mut sent = false;
        for (stage, items) in [(Stage::Firing, firing), (Stage::Repeat, reminders), (Stage::Resolved, resolved)] {
            if items.is_empty() {
                continue;
            }
            sent = true;
            if grouping {
                self.notify(&key, &receiver, stage, items);
            } else {
                for one in items {
                    self.notify(&key, &receiver, stage, vec![one]);
                }
            }
        }
        if sent {
            group.last_sent = Some(now);
        }
        if !group.is_empty() {
            self.groups.insert(key, group);
            self.reschedule(key);
        }
    }

    fn notify(&mut self, group: &GroupKey, receiver: &Receiver, stage: Stage, items: Vec<NotifiedAlarm>) {
        self.actions.push_back(Action::Notify(Notification {
            receiver: receiver.clone(),
            enterprise_id: group.enterprise,
            strategy_id: group.strategy,
            stage,
            key: IdempotencyKey::digest(&items),
            items,
            incident: None,
        }));
    }
}

fn item(alarm: &ActiveAlarm, alarm_ref: &AlarmRef, key: IdempotencyKey) -> NotifiedAlarm {
    NotifiedAlarm {
        device_id: alarm_ref.device,
        code: alarm_ref.code,
        first_at: alarm.activation,
        latest_at: alarm.latest_at,
        count: alarm.count,
        description: alarm.description.clone(),
        resolved_at: None,
        key,
    }
}

/// The settings of the group's strategy if it still exists, is enabled and has the receiver.
fn settings_of(config: &EnterpriseConfig, key: &GroupKey) -> Option<NotifySettings> {
    config
        .strategies
        .iter()
        .find(|s| s.strategy.id == key.strategy)
        .filter(|s| s.strategy.enabled && s.receivers.contains(&key.receiver))
        .map(|s| s.strategy.notify)
}

mod action;
mod durable;

pub use action::{Action, Transition};
pub use durable::{DurableState, SavedResolution, SavedWindows};

mod incidents;
#[cfg(test)]
mod tests;
mod windows;
