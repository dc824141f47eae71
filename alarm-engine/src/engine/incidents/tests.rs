//! Data-driven tests of site incidents in the [`AlarmEngine`] on a virtual clock: a script of
//! timed inputs in, the rendered notifications and incident steps out, one `check` helper.

use fleetpulse_proto::alarm_types::OFFLINE;
use fleetpulse_proto::domain::DeviceAlarm;
use fleetpulse_proto::{AlarmTypeCode, DeviceId, EnterpriseId, SiteId, UnixMillis, WindowId};

use crate::engine::{Action, AlarmEngine, RestoredAlarm};
use crate::incidents::{IncidentStep, SiteDevices, SiteIncidentRule};
use crate::notify::Stage;
use crate::strategy::{AlarmStrategy, NotifySettings, Receiver, StrategyId};
use crate::windows::{MaintenanceWindow, WindowDevices, WindowSchedule};

const E: EnterpriseId = EnterpriseId(1);
/// Application crash.
const CRASH: u16 = 105;

#[derive(Clone, Debug)]
enum In {
    /// Devices `from..=to` go offline one per second from the step's time.
    OfflineEach(u64, u64),
    /// Devices `from..=to` come back one per second from the step's time.
    OnlineEach(u64, u64),
    Offline(u64),
    Online(u64),
    /// Device reports a crash.
    Crash(u64),
    /// Site 1 holds devices `from..=to` from now on (site 2 the rest of 41–80).
    MoveSite1(u64, u64),
    /// A maintenance window over the whole enterprise, from now until the given second.
    WindowUntil(i64),
    /// Save the durable state and go on in a new engine from it (as after a restart).
    Restart,
}

/// Strategy 1 to a@x with the rule; grouping 10 s.
fn with_rule(rule: Option<SiteIncidentRule>) -> AlarmStrategy {
    AlarmStrategy {
        id: StrategyId(1),
        enterprise_id: E,
        name: "sites".into(),
        enabled: true,
        alarm_types: vec![],
        severities: vec![],
        receivers: vec![Receiver::Email("a@x".into())],
        notify: NotifySettings { group_wait_ms: 10_000, group_interval_ms: 60_000, repeat_interval_ms: 100_000_000 },
        thresholds: vec![],
        site_incident: rule,
    }
}

/// At least `min` devices and 25 % of the site within 60 s; resolves at `resolve` % back.
fn rule(min: u32, resolve: u8) -> SiteIncidentRule {
    SiteIncidentRule { min_devices: min, min_fraction_pct: 25, window_ms: 60_000, resolve_fraction_pct: resolve }
}

/// Site 1: devices `site1` (1–40 at first); site 2: the rest of 41–80; 81 and above have no
/// site.
fn sites(site1: (u64, u64)) -> Vec<SiteDevices> {
    let in_site1 = |d: &u64| (site1.0..=site1.1).contains(d);
    vec![
        SiteDevices { site: SiteId(1), devices: (site1.0..=site1.1).map(DeviceId).collect() },
        SiteDevices { site: SiteId(2), devices: (41..=80).filter(|d| !in_site1(d)).map(DeviceId).collect() },
    ]
}

/// Renders device lists compactly: `d1-d10 d12`.
fn devices(ids: impl IntoIterator<Item = u64>) -> String {
    let mut ids: Vec<u64> = ids.into_iter().collect();
    ids.sort_unstable();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        out.push(if j > i { format!("d{}-d{}", ids[i], ids[j]) } else { format!("d{}", ids[i]) });
        i = j + 1;
    }
    out.join(" ")
}

fn render(at: UnixMillis, action: &Action) -> Option<String> {
    let t = format!("{}s", at.0 / 1000);
    Some(match action {
        Action::Notify(n) => {
            let stage = match n.stage {
                Stage::Firing => "firing",
                Stage::Repeat => "repeat",
                Stage::Resolved => "resolved",
            };
            let to = n.receiver.key();
            let listed = devices(n.items.iter().map(|i| i.device_id.0));
            match &n.incident {
                Some(note) => format!(
                    "{t} {to} incident {stage} site {} {}/{} back {} [{listed}]",
                    note.key.site_id, note.counts.affected, note.counts.site_devices, note.counts.back
                ),
                None => format!("{t} {to} {stage} {listed}"),
            }
        }
        Action::Incident { incident, step, counts, .. } => {
            let step = match step {
                IncidentStep::Opened { members } => format!("opened {}", devices(members.iter().map(|m| m.0.0))),
                IncidentStep::Joined { device_id, .. } => format!("joined d{device_id}"),
                IncidentStep::Back { device_id, .. } => format!("back d{device_id}"),
                IncidentStep::Again { device_id, .. } => format!("again d{device_id}"),
                IncidentStep::Resolved => "resolved".into(),
            };
            format!(
                "{t} site {} {step} ({}/{} back {})",
                incident.site_id, counts.affected, counts.site_devices, counts.back
            )
        }
        Action::Record(_) | Action::Lifecycle { .. } | Action::Maintenance { .. } => return None,
    })
}

fn drain(engine: &mut AlarmEngine, at: UnixMillis, out: &mut Vec<String>) {
    while let Some(action) = engine.poll_action() {
        out.extend(render(at, &action));
    }
}

fn timers(engine: &mut AlarmEngine, until: UnixMillis, out: &mut Vec<String>) {
    while let Some(due) = engine.next_deadline().filter(|&d| d <= until) {
        engine.handle_timeout(due);
        drain(engine, due, out);
    }
}

fn crash() -> DeviceAlarm {
    DeviceAlarm {
        alarm_type: AlarmTypeCode(CRASH).alarm_type().expect("known type"),
        clear: false,
        description: "crash".into(),
        log: None,
    }
}

/// An engine restarted from `before`: strategies and sites as configured, open incidents put
/// back, then the active alarms, then the incidents settled.
fn restarted(before: &AlarmEngine, strategies: &[AlarmStrategy], site1: (u64, u64), now: UnixMillis) -> AlarmEngine {
    let state = before.durable_state();
    let mut after = AlarmEngine::new();
    after.set_strategies(E, strategies.to_vec()).expect("valid strategies");
    after.set_sites(E, sites(site1)).expect("valid sites");
    for incident in state.incidents {
        after.restore_incident(incident);
    }
    let mut active: Vec<(DeviceId, u16)> = (1..=200)
        .flat_map(|d| [(DeviceId(d), OFFLINE.0), (DeviceId(d), CRASH)])
        .filter(|&(d, c)| before.alarm_status(d, AlarmTypeCode(c)).is_some())
        .collect();
    active.sort_unstable();
    for (device, code) in active {
        let status = before.alarm_status(device, AlarmTypeCode(code)).expect("active");
        after.restore_alarm(
            now,
            RestoredAlarm {
                device_id: device,
                enterprise_id: E,
                code: AlarmTypeCode(code),
                first_at: status.first_at,
                latest_at: status.latest_at,
                count: status.count,
                description: String::new(),
                acknowledged: status.acknowledged,
            },
        );
    }
    after.settle_incidents(now);
    after
}

/// Runs `script` (seconds) with `strategies` and the sites configured at 0 s, firing timers at
/// their deadlines up to `until`, and compares the rendered notifications and incident steps.
fn check(strategies: &[AlarmStrategy], script: &[(i64, In)], until: i64, want: &[&str]) {
    let mut engine = AlarmEngine::new();
    engine.set_strategies(E, strategies.to_vec()).expect("valid strategies");
    engine.set_sites(E, sites((1, 40))).expect("valid sites");
    let mut site1 = (1, 40);
    let mut out = Vec::new();
    for (t, input) in script {
        let now = UnixMillis(t * 1000);
        timers(&mut engine, now, &mut out);
        let each = |engine: &mut AlarmEngine, out: &mut Vec<String>, from: u64, to: u64, offline: bool| {
            for (i, d) in (from..=to).enumerate() {
                let at = UnixMillis(now.0 + i as i64 * 1000);
                timers(engine, at, out);
                if offline {
                    engine.handle_offline(at, DeviceId(d), E);
                } else {
                    engine.handle_online(at, DeviceId(d), E);
                }
                drain(engine, at, out);
            }
        };
        match input {
            In::OfflineEach(from, to) => each(&mut engine, &mut out, *from, *to, true),
            In::OnlineEach(from, to) => each(&mut engine, &mut out, *from, *to, false),
            In::Offline(d) => engine.handle_offline(now, DeviceId(*d), E),
            In::Online(d) => engine.handle_online(now, DeviceId(*d), E),
            In::Crash(d) => engine.handle_device_alarm(now, DeviceId(*d), E, &crash()),
            In::MoveSite1(from, to) => {
                site1 = (*from, *to);
                engine.set_sites(E, sites(site1)).expect("valid sites");
            }
            In::WindowUntil(end) => {
                let window = MaintenanceWindow {
                    id: WindowId(7),
                    enterprise_id: E,
                    enabled: true,
                    devices: WindowDevices::Enterprise,
                    alarm_types: vec![],
                    schedule: WindowSchedule::Once { start: now, end: UnixMillis(end * 1000) },
                };
                engine.set_windows(now, E, vec![window]).expect("valid window");
            }
            In::Restart => {
                engine = restarted(&engine, strategies, site1, now);
                out.push(format!("{t}s restarted"));
            }
        }
        drain(&mut engine, now, &mut out);
    }
    timers(&mut engine, UnixMillis(until * 1000), &mut out);
    assert_eq!(out, want, "\nscript: {script:?}\ngot:\n{}", out.join("\n"));
}

#[test]
fn incident_below_threshold_notifies_alarms_as_today() {
    use In::*;
    // 25 % of 40 is 10 devices; 9 offline within the window are notified on their own, after
    // the window (60 s) and the group wait (10 s).
    check(&[with_rule(Some(rule(5, 80)))], &[(0, OfflineEach(1, 9))], 200, &["70s a@x firing d1-d9"]);
}

#[test]
fn incident_without_a_rule_changes_nothing() {
    use In::*;
    check(&[with_rule(None)], &[(0, OfflineEach(1, 30))], 200, &["10s a@x firing d1-d10", "70s a@x firing d11-d30"]);
}

#[test]
fn incident_opens_once_late_joiners_and_returns_are_counted_and_it_resolves_once() {
    use In::*;
    let mut want = vec![
        // The 10th device within 60 s opens the incident: one notification, a sample of 20.
        "9s site 1 opened d1-d10 (10/40 back 0)".to_owned(),
        "9s a@x incident firing site 1 10/40 back 0 [d1-d10]".to_owned(),
    ];
    want.extend((11..=30).map(|d| format!("{}s site 1 joined d{d} ({d}/40 back 0)", d - 1)));
    // 80 % of 30 = 24 back resolve it.
    want.extend((1..=24).map(|d| format!("{}s site 1 back d{d} (30/40 back {d})", 99 + d)));
    want.push("123s site 1 resolved (30/40 back 24)".into());
    want.push("123s a@x incident resolved site 1 30/40 back 24 [d1-d20]".into());
    // Those still offline are notified as alarms from then on.
    want.push("133s a@x firing d25-d30".into());
    check(
        &[with_rule(Some(rule(5, 80)))],
        &[(0, OfflineEach(1, 30)), (100, OnlineEach(1, 24))],
        300,
        &want.iter().map(String::as_str).collect::<Vec<_>>(),
    );
}

#[test]
fn incident_member_offline_again_is_no_longer_back() {
    use In::*;
    check(
        &[with_rule(Some(SiteIncidentRule { min_fraction_pct: 0, ..rule(3, 100) }))],
        &[(0, OfflineEach(1, 3)), (100, Online(1)), (110, Offline(1)), (120, OnlineEach(1, 3))],
        300,
        &[
            "2s site 1 opened d1-d3 (3/40 back 0)",
            "2s a@x incident firing site 1 3/40 back 0 [d1-d3]",
            "100s site 1 back d1 (3/40 back 1)",
            "110s site 1 again d1 (3/40 back 0)",
            "120s site 1 back d1 (3/40 back 1)",
            "121s site 1 back d2 (3/40 back 2)",
            "122s site 1 back d3 (3/40 back 3)",
            "122s site 1 resolved (3/40 back 3)",
            "122s a@x incident resolved site 1 3/40 back 3 [d1-d3]",
        ],
    );
}

#[test]
fn incident_needs_the_devices_within_one_window() {
    use In::*;
    // One device every 61 s: never 2 within 60 s. Each is notified after its window (no
    // grouping here: at once).
    let mut s = with_rule(Some(SiteIncidentRule { min_fraction_pct: 0, ..rule(2, 80) }));
    s.notify.group_wait_ms = 0;
    let script: Vec<(i64, In)> = (1..=12).map(|d| ((d as i64 - 1) * 61, Offline(d))).collect();
    let want: Vec<String> = (1..=12).map(|d| format!("{}s a@x firing d{d}", (d - 1) * 61 + 60)).collect();
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    check(&[s], &script, 2_000, &want);
}

#[test]
fn incident_sites_do_not_mix() {
    use In::*;
    // 6 at site 1 and 6 at site 2 (at least 5 and 10 %): two incidents; 6 without a site are
    // notified as today.
    let r = SiteIncidentRule { min_fraction_pct: 10, ..rule(5, 80) };
    check(
        &[with_rule(Some(r))],
        &[
            (0, OfflineEach(1, 3)),
            (3, OfflineEach(41, 43)),
            (6, OfflineEach(4, 5)),
            (8, OfflineEach(44, 46)),
            (11, OfflineEach(81, 86)),
        ],
        200,
        &[
            "7s site 1 opened d1-d5 (5/40 back 0)",
            "7s a@x incident firing site 1 5/40 back 0 [d1-d5]",
            "9s site 2 opened d41-d45 (5/40 back 0)",
            "9s a@x incident firing site 2 5/40 back 0 [d41-d45]",
            "10s site 2 joined d46 (6/40 back 0)",
            "21s a@x firing d81-d86",
        ],
    );
}

#[test]
fn incident_types_do_not_mix() {
    use In::*;
    let r = SiteIncidentRule { min_fraction_pct: 0, ..rule(3, 80) };
    check(
        &[with_rule(Some(r))],
        &[(0, Offline(1)), (1, Crash(2)), (2, Offline(3)), (3, Crash(4)), (4, Offline(5))],
        200,
        &[
            "4s site 1 opened d1 d3 d5 (3/40 back 0)",
            "4s a@x incident firing site 1 3/40 back 0 [d1 d3 d5]",
            "71s a@x firing d2 d4",
        ],
    );
}

#[test]
fn incident_other_strategies_still_notify_each_alarm() {
    use In::*;
    let plain = AlarmStrategy { id: StrategyId(2), receivers: vec![Receiver::Email("b@x".into())], ..with_rule(None) };
    let r = SiteIncidentRule { min_fraction_pct: 0, ..rule(3, 80) };
    check(
        &[with_rule(Some(r)), plain],
        &[(0, OfflineEach(1, 3))],
        200,
        &[
            "2s site 1 opened d1-d3 (3/40 back 0)",
            "2s a@x incident firing site 1 3/40 back 0 [d1-d3]",
            "10s b@x firing d1-d3",
        ],
    );
}

#[test]
fn incident_alarms_held_by_a_maintenance_window_are_not_counted() {
    use In::*;
    // Suppressed alarms are expected: no incident; when the window ends they are notified
    // on their own (as every held alarm).
    check(
        &[with_rule(Some(rule(5, 80)))],
        &[(0, WindowUntil(100)), (0, OfflineEach(1, 30))],
        300,
        &["110s a@x firing d1-d30"],
    );
}

#[test]
fn incident_follows_a_device_that_moved_site() {
    use In::*;
    let r = SiteIncidentRule { min_fraction_pct: 0, ..rule(3, 80) };
    // Devices 41 and 42 move to site 1 (now 42 devices): counted with device 1 there.
    check(
        &[with_rule(Some(r))],
        &[(0, MoveSite1(1, 42)), (1, Offline(41)), (2, Offline(42)), (3, Offline(1))],
        200,
        &["3s site 1 opened d1 d41-d42 (3/42 back 0)", "3s a@x incident firing site 1 3/42 back 0 [d1 d41-d42]"],
    );
}

#[test]
fn incident_survives_a_restart() {
    use In::*;
    let r = SiteIncidentRule { min_fraction_pct: 0, ..rule(3, 100) };
    check(
        &[with_rule(Some(r))],
        &[
            (0, OfflineEach(1, 4)),
            (50, Online(4)),
            (100, Restart),
            (110, Offline(5)),
            (120, OnlineEach(1, 3)),
            (130, Online(5)),
        ],
        300,
        &[
            "2s site 1 opened d1-d3 (3/40 back 0)",
            "2s a@x incident firing site 1 3/40 back 0 [d1-d3]",
            "3s site 1 joined d4 (4/40 back 0)",
            "50s site 1 back d4 (4/40 back 1)",
            // Restored: its members are not notified on their own, nothing is sent again.
            "100s restarted",
            "110s site 1 joined d5 (5/40 back 1)",
            "120s site 1 back d1 (5/40 back 2)",
            "121s site 1 back d2 (5/40 back 3)",
            "122s site 1 back d3 (5/40 back 4)",
            "130s site 1 back d5 (5/40 back 5)",
            "130s site 1 resolved (5/40 back 5)",
            "130s a@x incident resolved site 1 5/40 back 5 [d1-d5]",
        ],
    );
}

#[test]
fn incident_restart_does_not_group_alarms_notified_before_it() {
    use In::*;
    let r = SiteIncidentRule { min_fraction_pct: 0, ..rule(3, 100) };
    check(
        &[with_rule(Some(r))],
        &[(0, Offline(1)), (70, Offline(2)), (140, Offline(3)), (300, Restart)],
        400,
        &[
            "70s a@x firing d1",
            "130s a@x firing d2",
            "200s a@x firing d3",
            "300s restarted",
            // Planned again as after any restart (the outbox leaves out what it has), not as an
            // incident of three.
            "310s a@x firing d1-d3",
        ],
    );
}

#[test]
fn incident_member_that_cleared_while_down_is_counted_back_at_restart() {
    let r = SiteIncidentRule { min_fraction_pct: 0, ..rule(3, 50) };
    let s = [with_rule(Some(r))];
    let mut before = AlarmEngine::new();
    before.set_strategies(E, s.to_vec()).expect("valid");
    before.set_sites(E, sites((1, 40))).expect("valid");
    for d in 1..=4 {
        before.handle_offline(UnixMillis(d as i64 * 1000), DeviceId(d), E);
    }
    let state = before.durable_state();
    assert_eq!(state.incidents.len(), 1);
    // Devices 1 and 2 came back while no process ran: only 3 and 4 are active in the store.
    let mut after = AlarmEngine::new();
    after.set_strategies(E, s.to_vec()).expect("valid");
    after.set_sites(E, sites((1, 40))).expect("valid");
    for incident in state.incidents {
        after.restore_incident(incident);
    }
    for d in 3..=4 {
        let at = UnixMillis(d as i64 * 1000);
        let alarm = RestoredAlarm {
            device_id: DeviceId(d),
            enterprise_id: E,
            code: OFFLINE,
            first_at: at,
            latest_at: at,
            count: 1,
            description: String::new(),
            acknowledged: None,
        };
        after.restore_alarm(UnixMillis(20_000), alarm);
    }
    after.settle_incidents(UnixMillis(20_000));
    let mut out = Vec::new();
    drain(&mut after, UnixMillis(20_000), &mut out);
    timers(&mut after, UnixMillis(100_000), &mut out);
    assert_eq!(
        out,
        [
            "20s site 1 back d1 (4/40 back 1)",
            "20s site 1 back d2 (4/40 back 2)",
            "20s site 1 resolved (4/40 back 2)",
            "20s a@x incident resolved site 1 4/40 back 2 [d1-d4]",
            "30s a@x firing d3-d4",
        ]
    );
}

#[test]
fn incident_state_is_bounded_and_released() {
    let r = SiteIncidentRule { min_fraction_pct: 0, ..rule(3, 100) };
    let mut engine = AlarmEngine::new();
    engine.set_strategies(E, vec![with_rule(Some(r))]).expect("valid");
    engine.set_sites(E, sites((1, 40))).expect("valid");
    engine.handle_offline(UnixMillis(0), DeviceId(1), E);
    assert_eq!(engine.incident_held(), 1);
    engine.handle_timeout(UnixMillis(60_000));
    assert_eq!(engine.incident_held(), 0, "released after its window");
    assert!(engine.incidents.tracks.is_empty(), "no track left without recent alarms");
    let bad = SiteIncidentRule { min_devices: 1, ..r };
    assert!(engine.set_strategies(E, vec![with_rule(Some(bad))]).is_err());
    let too_many = vec![SiteDevices { site: SiteId(1), devices: vec![] }; crate::incidents::MAX_SITES + 1];
    assert!(engine.set_sites(E, too_many).is_err());
}
