//! Data-driven tests of maintenance windows in the [`AlarmEngine`] on a virtual clock: a script
//! of timed inputs in, the rendered actions out, one `check` helper.

use fleetpulse_proto::alarm_types::OFFLINE;
use fleetpulse_proto::domain::{AlarmChangeKind, DeviceAlarm};
use fleetpulse_proto::{AccountId, AlarmTypeCode, DeviceId, EnterpriseId, TaskId, UnixMillis, WindowId};

use crate::engine::{Action, AlarmEngine, Transition};
use crate::notify::Stage;
use crate::strategy::{AlarmStrategy, NotifySettings, Receiver, StrategyId};
use crate::windows::{MaintenanceStep, MaintenanceWindow, WindowDevices, WindowEnd, WindowSchedule};

const E: EnterpriseId = EnterpriseId(1);
/// Device reboot (Major).
const REBOOT: u16 = 202;
/// Application crash (Critical).
const CRASH: u16 = 105;

#[derive(Clone, Debug)]
enum In {
    Raise(u64, u16),
    Clear(u64, u16),
    Offline(u64),
    Online(u64),
    Ack(u64, u16),
    TaskStarts(u64),
    TaskEnds(u64),
    Windows(Vec<MaintenanceWindow>),
}

/// Every alarm to a@x, grouped for 10 s, reminders after 1000 s.
fn strategy() -> AlarmStrategy {
    AlarmStrategy {
        id: StrategyId(1),
        enterprise_id: E,
        name: "all".into(),
        enabled: true,
        alarm_types: vec![],
        severities: vec![],
        receivers: vec![Receiver::Email("a@x".into())],
        notify: NotifySettings { group_wait_ms: 10_000, group_interval_ms: 60_000, repeat_interval_ms: 1_000_000 },
        thresholds: vec![],
    }
}

/// Window `id` from `start` to `end` seconds over the whole enterprise and every type.
fn once(id: u64, start: i64, end: i64) -> MaintenanceWindow {
    MaintenanceWindow {
        id: WindowId(id),
        enterprise_id: E,
        enabled: true,
        devices: WindowDevices::Enterprise,
        alarm_types: vec![],
        schedule: WindowSchedule::Once { start: UnixMillis(start * 1000), end: UnixMillis(end * 1000) },
    }
}

fn while_task(id: u64, task: u64) -> MaintenanceWindow {
    MaintenanceWindow { schedule: WindowSchedule::WhileTask(TaskId(task)), ..once(id, 0, 1) }
}

fn only(mut w: MaintenanceWindow, devices: &[u64], types: &[u16]) -> MaintenanceWindow {
    if !devices.is_empty() {
        w.devices = WindowDevices::Listed(devices.iter().map(|&d| DeviceId(d)).collect());
    }
    w.alarm_types = types.iter().map(|&c| AlarmTypeCode(c)).collect();
    w
}

fn seconds(t: UnixMillis) -> String {
    format!("{}s", t.0 / 1000)
}

fn render(t: UnixMillis, action: &Action) -> String {
    let t = seconds(t);
    match action {
        Action::Record(c) => {
            let sign = if matches!(c.kind, AlarmChangeKind::Clear) { '-' } else { '+' };
            format!("{t} {sign}d{}/{}", c.device_id, c.code.0)
        }
        Action::Lifecycle { device_id, code, transition, .. } => match transition {
            Transition::Acknowledged { .. } => format!("{t} ack d{device_id}/{}", code.0),
            Transition::Cleared { .. } => format!("{t} cleared d{device_id}/{}", code.0),
        },
        Action::Notify(n) => {
            let stage = match n.stage {
                Stage::Firing => "firing",
                Stage::Repeat => "repeat",
                Stage::Resolved => "resolved",
            };
            let items: Vec<String> = n.items.iter().map(|i| format!("d{}/{}", i.device_id, i.code.0)).collect();
            format!("{t} {stage} {}", items.join(" "))
        }
        Action::Maintenance { device_id, code, window, step, .. } => {
            let step = match step {
                MaintenanceStep::Suppressed { until: WindowEnd::At(end) } => format!("held until {}", seconds(*end)),
                MaintenanceStep::Suppressed { until: WindowEnd::TaskFinishes } => "held while the task runs".into(),
                MaintenanceStep::Released => "released".into(),
                MaintenanceStep::Dropped => "dropped (acknowledged)".into(),
            };
            format!("{t} window {window} d{device_id}/{} {step}", code.0)
        }
    }
}

fn alarm(code: u16, clear: bool) -> DeviceAlarm {
    DeviceAlarm {
        alarm_type: AlarmTypeCode(code).alarm_type().expect("known type"),
        clear,
        description: String::new(),
        log: None,
    }
}

fn drain(engine: &mut AlarmEngine, at: UnixMillis, out: &mut Vec<String>) {
    while let Some(action) = engine.poll_action() {
        out.push(render(at, &action));
    }
}

/// Runs `script` (seconds) with [`strategy`] and `windows` configured at 0 s, firing timers at
/// their deadlines up to `until`, and compares the rendered actions with `want`.
fn check(windows: &[MaintenanceWindow], script: &[(i64, In)], until: i64, want: &[&str]) {
    let mut engine = AlarmEngine::new();
    engine.set_strategies(E, vec![strategy()]).expect("valid strategy");
    engine.set_windows(UnixMillis(0), E, windows.to_vec()).expect("valid windows");
    let mut out = Vec::new();
    let timers = |engine: &mut AlarmEngine, until: UnixMillis, out: &mut Vec<String>| {
        while let Some(due) = engine.next_deadline().filter(|&d| d <= until) {
            engine.handle_timeout(due);
            drain(engine, due, out);
        }
    };
    for (t, input) in script {
        let now = UnixMillis(t * 1000);
        timers(&mut engine, now, &mut out);
        let d = |id: &u64| DeviceId(*id);
        match input {
            In::Raise(dev, code) => engine.handle_device_alarm(now, d(dev), E, &alarm(*code, false)),
            In::Clear(dev, code) => engine.handle_device_alarm(now, d(dev), E, &alarm(*code, true)),
            In::Offline(dev) => engine.handle_offline(now, d(dev), E),
            In::Online(dev) => engine.handle_online(now, d(dev), E),
            In::Ack(dev, code) => {
                engine.handle_acknowledge(now, d(dev), AlarmTypeCode(*code), AccountId(9)).expect("active alarm");
            }
            In::TaskStarts(task) => engine.handle_task_running(now, TaskId(*task), true),
            In::TaskEnds(task) => engine.handle_task_running(now, TaskId(*task), false),
            In::Windows(windows) => engine.set_windows(now, E, windows.clone()).expect("valid windows"),
        }
        drain(&mut engine, now, &mut out);
    }
    timers(&mut engine, UnixMillis(until * 1000), &mut out);
    assert_eq!(out, want, "\nscript: {script:?}\ngot:\n{}", out.join("\n"));
    assert_eq!(engine.held_alarms(), 0, "no hold is left behind");
}

#[test]
fn alarms_raised_in_a_window_are_notified_at_its_end_if_still_active() {
    use In::*;
    check(
        &[once(7, 100, 200)],
        &[
            (50, Raise(1, CRASH)),
            (120, Raise(2, REBOOT)),
            (130, Offline(3)),
            (150, Clear(2, REBOOT)),
            (210, Raise(4, CRASH)),
        ],
        400,
        &[
            "50s +d1/105",
            "60s firing d1/105",
            "120s +d2/202",
            "120s window 7 d2/202 held until 200s",
            "130s +d3/109",
            "130s window 7 d3/109 held until 200s",
            // Cleared inside the window: never notified, neither firing nor resolved.
            "150s -d2/202",
            "150s cleared d2/202",
            // Still broken at the end: notified then, through the group's usual timers.
            "200s window 7 d3/109 released",
            "200s firing d3/109",
            "210s +d4/105",
            "260s firing d4/105",
        ],
    );
}

#[test]
fn a_rollout_window_lasts_while_its_task_runs() {
    use In::*;
    // Reboots of the rollout's devices 1 and 2 are held while task 5 runs; device 2 stays
    // offline after the rollout and is notified when the task finishes; device 3 is not in it.
    check(
        &[only(while_task(7, 5), &[1, 2], &[REBOOT, OFFLINE.0])],
        &[
            (0, Raise(1, REBOOT)),
            (100, TaskStarts(5)),
            (110, Raise(1, REBOOT)),
            (111, Offline(2)),
            (112, Raise(3, REBOOT)),
            (113, Raise(2, CRASH)),
            (150, Clear(1, REBOOT)),
            (300, TaskEnds(5)),
            (320, Offline(1)),
        ],
        400,
        &[
            // Before the task runs, the window is not active.
            "0s +d1/202",
            "10s firing d1/202",
            "110s +d1/202",
            "111s +d2/109",
            "111s window 7 d2/109 held while the task runs",
            "112s +d3/202",
            "112s firing d3/202",
            "113s +d2/105",
            // d1/202 had fired before the window: its resolution goes out as usual.
            "150s -d1/202",
            "150s cleared d1/202",
            "172s firing d2/105",
            "172s resolved d1/202",
            "300s window 7 d2/109 released",
            "300s firing d2/109",
            "320s +d1/109",
            "360s firing d1/109",
        ],
    );
}

#[test]
fn an_acknowledged_alarm_is_not_notified_at_the_end() {
    use In::*;
    check(
        &[once(7, 0, 100)],
        &[(10, Raise(1, CRASH)), (20, Ack(1, CRASH))],
        300,
        &[
            "10s +d1/105",
            "10s window 7 d1/105 held until 100s",
            "20s ack d1/105",
            "100s window 7 d1/105 dropped (acknowledged)",
        ],
    );
}

#[test]
fn overlapping_windows_hold_until_the_last_one_ends() {
    use In::*;
    // Window 8 covers crashes only, from 150 s to 300 s: the crash held by 7 is taken over.
    check(
        &[once(7, 0, 200), only(once(8, 150, 300), &[], &[CRASH])],
        &[(10, Raise(1, CRASH)), (20, Raise(2, REBOOT))],
        400,
        &[
            "10s +d1/105",
            "10s window 7 d1/105 held until 200s",
            "20s +d2/202",
            "20s window 7 d2/202 held until 200s",
            "200s window 8 d1/105 held until 300s",
            "200s window 7 d2/202 released",
            "210s firing d2/202",
            "300s window 8 d1/105 released",
            "300s firing d1/105",
        ],
    );
}

#[test]
fn editing_or_deleting_a_window_lets_go_of_what_it_no_longer_holds() {
    use In::*;
    check(
        &[once(7, 0, 1000)],
        &[
            (10, Raise(1, CRASH)),
            (20, Raise(2, REBOOT)),
            // Narrowed to reboots: the crash is let go of at once.
            (50, Windows(vec![only(once(7, 0, 1000), &[], &[REBOOT])])),
            // Deleted: the reboot too.
            (100, Windows(vec![])),
        ],
        400,
        &[
            "10s +d1/105",
            "10s window 7 d1/105 held until 1000s",
            "20s +d2/202",
            "20s window 7 d2/202 held until 1000s",
            "50s window 7 d1/105 released",
            "50s window 7 d2/202 held until 1000s",
            "60s firing d1/105",
            "100s window 7 d2/202 released",
            "120s firing d2/202",
        ],
    );
}

#[test]
fn a_window_outside_its_scope_or_disabled_holds_nothing() {
    use In::*;
    let mut disabled = once(8, 0, 1000);
    disabled.enabled = false;
    check(
        &[only(once(7, 0, 1000), &[2], &[]), disabled],
        &[(10, Raise(1, CRASH)), (10, Online(1))],
        100,
        &["10s +d1/105", "10s -d1/109", "20s firing d1/105"],
    );
}
