//! The engine state that must survive a restart besides the active alarms (issue 18 item 6):
//! open threshold windows and planned, unsent resolutions. [`AlarmEngine::durable_state`] takes
//! it out (the shell saves it), `restore_*` put it back after the strategies and the active
//! alarms were restored.
//!
//! - A window is saved by its *limit* (not by the index of the limit in the enterprise's compiled
//!   rules, which is process-local), so after a restart a device that was above 90 % since 10:00
//!   still fires at 10:10, not 10 minutes after its first sample of the new process. A limit no
//!   strategy has any more is dropped. Whether the derived alarm is active is the store's alarm
//!   record's business ([`AlarmEngine::restore_alarm`]), not the saved state's.
//! - A resolution that was planned (its alarm cleared, it waits for its group's interval) is
//!   put back in its group with the same idempotency key, so it is sent once: the outbox leaves
//!   out a key an earlier process already queued. A resolution whose strategy or receiver is gone
//!   is dropped, as it would have been without the restart.

use fleetpulse_proto::{DeviceId, EnterpriseId, UnixMillis};

use super::AlarmEngine;
use crate::notify::{GroupKey, NotifiedAlarm};
use crate::strategy::{Receiver, StrategyId};
use crate::threshold::{Metric, ThresholdState};

/// The open threshold windows of one device and metric.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedWindows {
    /// The device.
    pub device_id: DeviceId,
    /// Its enterprise (whose rules the limits are).
    pub enterprise_id: EnterpriseId,
    /// The metric.
    pub metric: Metric,
    /// (limit in hundredths of a percent, start of the run of samples above it).
    pub windows: Vec<(u16, UnixMillis)>,
}

/// A resolution planned and not yet sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedResolution {
    /// The enterprise of the group.
    pub enterprise_id: EnterpriseId,
    /// The strategy of the group.
    pub strategy_id: StrategyId,
    /// Its receiver.
    pub receiver: Receiver,
    /// The resolved alarm, with its idempotency key.
    pub item: NotifiedAlarm,
}

/// What [`AlarmEngine::durable_state`] takes out, in a deterministic order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurableState {
    /// Open threshold windows, by device and metric.
    pub windows: Vec<SavedWindows>,
    /// Planned resolutions, by group and in their group's order.
    pub resolutions: Vec<SavedResolution>,
}

impl AlarmEngine {
    /// The open threshold windows and the planned, unsent resolutions.
    pub fn durable_state(&self) -> DurableState {
        let mut windows: Vec<SavedWindows> = Vec::new();
        for (&(device, metric), state) in &self.thresholds {
            // The enterprise whose compiled rules the windows belong to: generations are unique
            // per compilation. A state of an older generation is reset at its next sample.
            let owner = self.enterprises.iter().find(|(_, c)| {
                let rules = c.rules(metric);
                !rules.is_empty() && rules.generation == state.generation()
            });
            let Some((&enterprise, config)) = owner else { continue };
            let limits = config.rules(metric).limits();
            let open: Vec<(u16, UnixMillis)> =
                state.windows().filter_map(|(i, since)| limits.get(i).map(|&limit| (limit, since))).collect();
            if !open.is_empty() {
                windows.push(SavedWindows { device_id: device, enterprise_id: enterprise, metric, windows: open });
            }
        }
        windows.sort_by_key(|w| (w.device_id, w.metric));
        let mut groups: Vec<(&GroupKey, &Vec<NotifiedAlarm>)> =
            self.groups.iter().filter(|(_, g)| !g.resolved.is_empty()).map(|(k, g)| (k, &g.resolved)).collect();
        groups.sort_by_key(|(k, _)| (k.enterprise, k.strategy, k.receiver));
        let mut resolutions = Vec::new();
        for (key, items) in groups {
            let Some(receiver) = self.receivers.get(key.receiver as usize) else { continue };
            resolutions.extend(items.iter().map(|item| SavedResolution {
                enterprise_id: key.enterprise,
                strategy_id: key.strategy,
                receiver: receiver.clone(),
                item: item.clone(),
            }));
        }
        DurableState { windows, resolutions }
    }

    /// Puts back a device's open threshold windows (after [`AlarmEngine::restore_alarm`], so
    /// that an active derived alarm keeps its state). Limits the enterprise no longer has are
    /// dropped.
    pub fn restore_windows(&mut self, saved: SavedWindows) {
        let Some(config) = self.enterprises.get(&saved.enterprise_id) else { return };
        let rules = config.rules(saved.metric);
        if rules.is_empty() {
            return;
        }
        let key = (saved.device_id, saved.metric);
        let state = self.thresholds.entry(key).or_insert_with(|| ThresholdState::new(rules.generation));
        for (limit, since) in saved.windows {
            if let Some(index) = rules.limits().iter().position(|&l| l == limit) {
                state.restore_window(rules, index, since);
            }
        }
        if state.is_idle() {
            self.thresholds.remove(&key);
        }
    }

    /// Puts back a planned resolution (after the strategies were loaded): it goes out with its
    /// group, `group_interval` after `now` at the latest (a new group waits `group_wait`).
    pub fn restore_resolution(&mut self, now: UnixMillis, saved: SavedResolution) {
        let now = self.advance(now);
        let receiver = self.intern(&saved.receiver);
        let key = GroupKey { enterprise: saved.enterprise_id, strategy: saved.strategy_id, receiver };
        let Some(group) = self.open_group(key) else { return };
        if group.resolved.iter().any(|r| r.key == saved.item.key) {
            return;
        }
        group.resolved.push(saved.item);
        group.schedule_flush(now);
        self.reschedule(key);
        self.handle_timeout(now);
    }
}

#[cfg(test)]
mod tests {
    use fleetpulse_proto::domain::{AlarmChangeKind, ResourceSample};
    use fleetpulse_proto::{DeviceId, EnterpriseId, UnixMillis};

    use crate::strategy::{AlarmStrategy, NotifySettings, Receiver, StrategyId};
    use crate::threshold::{Metric, ThresholdRule};
    use crate::{Action, AlarmEngine, Stage};

    const E: EnterpriseId = EnterpriseId(3);
    const MIN: i64 = 60_000;

    fn strategy(rules: Vec<ThresholdRule>, group_wait_ms: u64) -> AlarmStrategy {
        AlarmStrategy {
            id: StrategyId(1),
            enterprise_id: E,
            name: "s".into(),
            enabled: true,
            alarm_types: vec![],
            severities: vec![],
            receivers: vec![Receiver::Email("noc@example.com".into())],
            notify: NotifySettings { group_wait_ms, group_interval_ms: 60_000, repeat_interval_ms: 3_600_000 },
            thresholds: rules,
        }
    }

    fn cpu(engine: &mut AlarmEngine, at: i64, pct: u16) {
        let sample = ResourceSample { cpu_centi_pct: pct * 100, mem_used_bytes: 0, mem_total_bytes: 0 };
        engine.handle_resource_sample(UnixMillis(at), DeviceId(1), E, &sample);
    }

    /// Renders what an engine did since the last call: `raise CODE` / `clear CODE` /
    /// `notify STAGE n`.
    fn drain(engine: &mut AlarmEngine) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(action) = engine.poll_action() {
            out.push(match action {
                Action::Record(c) => {
                    format!("{} {}", if c.kind == AlarmChangeKind::Clear { "clear" } else { "raise" }, c.code.0)
                }
                Action::Lifecycle { .. } | Action::Maintenance { .. } => continue,
                Action::Notify(n) => format!("notify {:?} {}", n.stage, n.items.len()),
            });
        }
        out
    }

    /// An engine restarted from `before`'s durable state with the same strategy.
    fn restarted(before: &AlarmEngine, strategy: AlarmStrategy, at: i64) -> AlarmEngine {
        let state = before.durable_state();
        let mut after = AlarmEngine::new();
        after.set_strategies(E, vec![strategy]).expect("valid");
        for w in state.windows {
            after.restore_windows(w);
        }
        for r in state.resolutions {
            after.restore_resolution(UnixMillis(at), r);
        }
        after
    }

    #[test]
    fn a_threshold_window_survives_a_restart() {
        let rule = ThresholdRule { metric: Metric::Cpu, above_centi_pct: 9000, for_ms: 10 * MIN as u64 };
        let s = strategy(vec![rule], 0);
        let mut before = AlarmEngine::new();
        before.set_strategies(E, vec![s.clone()]).expect("valid");
        cpu(&mut before, 0, 95);
        cpu(&mut before, 5 * MIN, 96);
        assert_eq!(drain(&mut before), Vec::<String>::new());
        let saved = before.durable_state();
        assert_eq!(saved.windows.len(), 1);
        assert_eq!(saved.windows[0].windows, vec![(9000, UnixMillis(0))]);

        // The restarted engine fires at 10 minutes after the first sample, as the old one would.
        let mut after = restarted(&before, s.clone(), 6 * MIN);
        cpu(&mut after, 10 * MIN, 97);
        assert_eq!(drain(&mut after), ["raise 401", "notify Firing 1"]);
        // Without the saved state it would not have.
        let mut forgetful = AlarmEngine::new();
        forgetful.set_strategies(E, vec![s.clone()]).expect("valid");
        cpu(&mut forgetful, 10 * MIN, 97);
        assert_eq!(drain(&mut forgetful), Vec::<String>::new());

        // A limit the strategies no longer have is dropped.
        let other = ThresholdRule { above_centi_pct: 8000, ..rule };
        let mut changed = restarted(&before, strategy(vec![other], 0), 6 * MIN);
        assert!(changed.durable_state().windows.is_empty());
        cpu(&mut changed, 10 * MIN, 97);
        assert_eq!(drain(&mut changed), Vec::<String>::new());
    }

    #[test]
    fn a_planned_resolution_survives_a_restart_with_its_key() {
        let s = strategy(vec![], 1_000);
        let mut before = AlarmEngine::new();
        before.set_strategies(E, vec![s.clone()]).expect("valid");
        before.handle_offline(UnixMillis(0), DeviceId(1), E);
        before.handle_timeout(UnixMillis(1_000));
        assert_eq!(drain(&mut before), ["raise 109", "notify Firing 1"]);
        before.handle_online(UnixMillis(2_000), DeviceId(1), E);
        assert_eq!(drain(&mut before), ["clear 109"], "the resolution waits for the group interval");
        let saved = before.durable_state();
        assert_eq!(saved.resolutions.len(), 1);
        let key = saved.resolutions[0].item.key;

        // The restarted engine's group is new: it waits the group wait, then sends it once.
        let mut after = restarted(&before, s, 3_000);
        assert_eq!(drain(&mut after), Vec::<String>::new());
        after.handle_timeout(UnixMillis(4_000));
        let mut sent = Vec::new();
        while let Some(action) = after.poll_action() {
            if let Action::Notify(n) = action {
                sent.push((n.stage, n.items.iter().map(|i| i.key).collect::<Vec<_>>(), n.items[0].device_id));
            }
        }
        assert_eq!(sent, vec![(Stage::Resolved, vec![key], DeviceId(1))], "once, with the same key");
        assert!(after.durable_state().resolutions.is_empty());
    }
}
