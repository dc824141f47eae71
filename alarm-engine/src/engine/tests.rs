//! Data-driven tests of [`AlarmEngine`] on a virtual clock: a script of timed inputs in, the
//! rendered actions out, compared with one `check` helper.

use fleetpulse_proto::alarm_types::OFFLINE;
use fleetpulse_proto::domain::{AlarmChangeKind, DeviceAlarm, ResourceSample};
use fleetpulse_proto::{AccountId, AlarmTypeCode, DeviceId, EnterpriseId, Severity, UnixMillis};

use super::*;
use crate::strategy::{NotifySettings, StrategyId};
use crate::threshold::ThresholdRule;

const E: EnterpriseId = EnterpriseId(1);
const CRASH: u16 = 105;
const CALL_FAILED: u16 = 301;

/// One timed input of a script.
#[derive(Clone, Debug)]
enum In {
    /// Device reports a raise of a type.
    Raise(u64, u16),
    /// Device reports a clear of a type.
    Clear(u64, u16),
    Offline(u64),
    Online(u64),
    /// CPU sample in percent.
    Cpu(u64, u16),
    /// Memory sample: used, total bytes.
    Mem(u64, u64, u64),
    /// Acknowledge (device, code, account).
    Ack(u64, u16, u64),
    /// Manual clear (device, code, account).
    ManualClear(u64, u16, u64),
    /// Replace the enterprise's strategies.
    Configure(Vec<AlarmStrategy>),
}

fn strategy(id: u64, receivers: &[&str]) -> AlarmStrategy {
    AlarmStrategy {
        id: StrategyId(id),
        enterprise_id: E,
        name: format!("strategy {id}"),
        enabled: true,
        alarm_types: vec![],
        severities: vec![],
        receivers: receivers.iter().map(|r| Receiver::Email((*r).into())).collect(),
        notify: NotifySettings::default(),
        thresholds: vec![],
    }
}

fn with_notify(mut s: AlarmStrategy, group_wait_s: u64, group_interval_s: u64, repeat_s: u64) -> AlarmStrategy {
    s.notify = NotifySettings {
        group_wait_ms: group_wait_s * 1000,
        group_interval_ms: group_interval_s * 1000,
        repeat_interval_ms: repeat_s * 1000,
    };
    s
}

fn cpu_rule(above_pct: u16, for_s: u64) -> ThresholdRule {
    ThresholdRule { metric: Metric::Cpu, above_centi_pct: above_pct * 100, for_ms: for_s * 1000 }
}

fn device_alarm(code: u16, clear: bool) -> DeviceAlarm {
    DeviceAlarm {
        alarm_type: AlarmTypeCode(code).alarm_type().expect("known type"),
        clear,
        description: format!("alarm {code}"),
        log: None,
    }
}

fn seconds(t: UnixMillis) -> String {
    if t.0 % 1000 == 0 { format!("{}s", t.0 / 1000) } else { format!("{}ms", t.0) }
}

fn render(t: UnixMillis, action: &Action) -> String {
    let t = seconds(t);
    match action {
        Action::Record(c) => {
            let sign = if matches!(c.kind, AlarmChangeKind::Clear) { '-' } else { '+' };
            format!("{t} {sign}d{}/{}", c.device_id, c.code.0)
        }
        Action::Lifecycle { device_id, code, transition, .. } => match transition {
            Transition::Acknowledged { by } => format!("{t} ack d{device_id}/{} by {by}", code.0),
            Transition::Cleared { by: Some(by) } => format!("{t} cleared d{device_id}/{} by {by}", code.0),
            Transition::Cleared { by: None } => format!("{t} cleared d{device_id}/{}", code.0),
        },
        Action::Notify(n) => {
            let Receiver::Email(to) = &n.receiver;
            let stage = match n.stage {
                Stage::Firing => "firing",
                Stage::Repeat => "repeat",
                Stage::Resolved => "resolved",
            };
            let items: Vec<String> =
                n.items.iter().map(|i| format!("d{}/{}x{}", i.device_id, i.code.0, i.count)).collect();
            format!("{t} {to}/s{} {stage} {}", n.strategy_id, items.join(" "))
        }
        Action::Maintenance { device_id, code, window, .. } => format!("{t} window {window} d{device_id}/{}", code.0),
    }
}

/// Moves the engine's actions into `out`, stamped with the virtual time `at`.
fn collect(engine: &mut AlarmEngine, at: UnixMillis, out: &mut Vec<(UnixMillis, Action)>) {
    while let Some(action) = engine.poll_action() {
        out.push((at, action));
    }
}

/// Fires every timer due up to `until`, at its deadline.
fn timers(engine: &mut AlarmEngine, until: UnixMillis, out: &mut Vec<(UnixMillis, Action)>) {
    while let Some(due) = engine.next_deadline().filter(|&d| d <= until) {
        engine.handle_timeout(due);
        collect(engine, due, out);
    }
}

/// Runs `script` (times in seconds) against an engine configured with `strategies`, firing
/// timers on the virtual clock up to `until` seconds; returns every action with its time.
fn run(strategies: &[AlarmStrategy], script: &[(i64, In)], until: i64) -> (AlarmEngine, Vec<(UnixMillis, Action)>) {
    let mut engine = AlarmEngine::new();
    engine.set_strategies(E, strategies.to_vec()).expect("valid strategies");
    let mut out = Vec::new();
    for (t, input) in script {
        let now = UnixMillis(t * 1000);
        timers(&mut engine, now, &mut out);
        let d = |id: &u64| DeviceId(*id);
        let result = match input {
            In::Raise(dev, code) => {
                engine.handle_device_alarm(now, d(dev), E, &device_alarm(*code, false));
                Ok(())
            }
            In::Clear(dev, code) => {
                engine.handle_device_alarm(now, d(dev), E, &device_alarm(*code, true));
                Ok(())
            }
            In::Offline(dev) => {
                engine.handle_offline(now, d(dev), E);
                Ok(())
            }
            In::Online(dev) => {
                engine.handle_online(now, d(dev), E);
                Ok(())
            }
            In::Cpu(dev, pct) => {
                let sample = ResourceSample { cpu_centi_pct: pct * 100, mem_used_bytes: 0, mem_total_bytes: 0 };
                engine.handle_resource_sample(now, d(dev), E, &sample);
                Ok(())
            }
            In::Mem(dev, used, total) => {
                let sample = ResourceSample { cpu_centi_pct: 0, mem_used_bytes: *used, mem_total_bytes: *total };
                engine.handle_resource_sample(now, d(dev), E, &sample);
                Ok(())
            }
            In::Ack(dev, code, by) => engine.handle_acknowledge(now, d(dev), AlarmTypeCode(*code), AccountId(*by)),
            In::ManualClear(dev, code, by) => {
                engine.handle_manual_clear(now, d(dev), AlarmTypeCode(*code), AccountId(*by))
            }
            In::Configure(strategies) => engine.set_strategies(E, strategies.clone()),
        };
        collect(&mut engine, now, &mut out);
        if let Err(error) = result {
            panic!("input {input:?} at {t}s failed: {error}");
        }
    }
    timers(&mut engine, UnixMillis(until * 1000), &mut out);
    (engine, out)
}

/// The one helper: runs a case and compares the rendered actions.
fn check(strategies: &[AlarmStrategy], script: &[(i64, In)], until: i64, want: &[&str]) {
    let (_, actions) = run(strategies, script, until);
    let got: Vec<String> = actions.iter().map(|(t, a)| render(*t, a)).collect();
    assert_eq!(got, want, "\nscript: {script:?}\ngot:\n{}", got.join("\n"));
}

#[test]
fn a_burst_is_grouped_into_one_notification() {
    let s = [strategy(1, &["a@x"])];
    use In::*;
    check(
        &s,
        &[(0, Raise(1, CRASH)), (2, Raise(2, CRASH)), (5, Offline(3)), (30, Raise(4, CRASH)), (100, Offline(5))],
        200,
        &[
            "0s +d1/105",
            "2s +d2/105",
            "5s +d3/109",
            "10s a@x/s1 firing d1/105x1 d2/105x1 d3/109x1",
            // Later alarms of the open group go out group_interval after its last notification.
            "30s +d4/105",
            "70s a@x/s1 firing d4/105x1",
            "100s +d5/109",
            "130s a@x/s1 firing d5/109x1",
        ],
    );
}

#[test]
fn raises_of_an_active_alarm_count_and_do_not_notify_again() {
    use In::*;
    check(
        &[strategy(1, &["a@x"])],
        &[(0, Raise(1, CRASH)), (3, Raise(1, CRASH)), (20, Raise(1, CRASH))],
        60,
        &["0s +d1/105", "3s +d1/105", "10s a@x/s1 firing d1/105x2", "20s +d1/105"],
    );
}

#[test]
fn group_wait_zero_sends_each_alarm_at_once() {
    use In::*;
    check(
        &[with_notify(strategy(1, &["a@x"]), 0, 60, 100)],
        &[(0, Raise(1, CRASH)), (0, Raise(2, CRASH)), (50, Online(9)), (60, Clear(1, CRASH))],
        150,
        &[
            "0s +d1/105",
            "0s a@x/s1 firing d1/105x1",
            "0s +d2/105",
            "0s a@x/s1 firing d2/105x1",
            "50s -d9/109",
            "60s -d1/105",
            "60s cleared d1/105",
            "60s a@x/s1 resolved d1/105x1",
            "100s a@x/s1 repeat d2/105x1",
        ],
    );
}

#[test]
fn still_active_alarms_repeat_until_acknowledged() {
    let s = [with_notify(strategy(1, &["a@x"]), 10, 60, 100)];
    use In::*;
    check(
        &s,
        &[(0, Raise(1, CRASH)), (5, Raise(2, CRASH))],
        330,
        &[
            "0s +d1/105",
            "5s +d2/105",
            "10s a@x/s1 firing d1/105x1 d2/105x1",
            "110s a@x/s1 repeat d1/105x1 d2/105x1",
            "210s a@x/s1 repeat d1/105x1 d2/105x1",
            "310s a@x/s1 repeat d1/105x1 d2/105x1",
        ],
    );
    check(
        &s,
        &[(0, Raise(1, CRASH)), (5, Raise(2, CRASH)), (150, Ack(2, CRASH, 7)), (160, Ack(2, CRASH, 8))],
        330,
        &[
            "0s +d1/105",
            "5s +d2/105",
            "10s a@x/s1 firing d1/105x1 d2/105x1",
            "110s a@x/s1 repeat d1/105x1 d2/105x1",
            "150s ack d2/105 by 7",
            "210s a@x/s1 repeat d1/105x1",
            "310s a@x/s1 repeat d1/105x1",
        ],
    );
    // Acknowledged before the first notification: it is sent once, never repeated.
    check(
        &s,
        &[(0, Raise(1, CRASH)), (5, Ack(1, CRASH, 7))],
        330,
        &["0s +d1/105", "5s ack d1/105 by 7", "10s a@x/s1 firing d1/105x1"],
    );
}

#[test]
fn strategies_select_by_enabled_type_and_severity() {
    use In::*;
    let script = [(0, Raise(1, CRASH)), (0, Raise(1, CALL_FAILED)), (0, Offline(2))];
    let records = ["0s +d1/105", "0s +d1/301", "0s +d2/109"];
    let disabled = AlarmStrategy { enabled: false, ..strategy(1, &["a@x"]) };
    check(&[disabled], &script, 100, &records);
    let other_type = AlarmStrategy { alarm_types: vec![AlarmTypeCode(101)], ..strategy(1, &["a@x"]) };
    check(&[other_type], &script, 100, &records);
    let other_severity = AlarmStrategy { severities: vec![Severity::Major], ..strategy(1, &["a@x"]) };
    check(&[other_severity], &script, 100, &records);
    let no_receivers = strategy(1, &[]);
    check(&[no_receivers], &script, 100, &records);

    let offline_only = AlarmStrategy { alarm_types: vec![OFFLINE], ..strategy(1, &["a@x"]) };
    let minor_only = AlarmStrategy { severities: vec![Severity::Minor], ..strategy(2, &["b@x", "a@x", "b@x"]) };
    check(
        &[offline_only, minor_only],
        &script,
        100,
        &[
            "0s +d1/105",
            "0s +d1/301",
            "0s +d2/109",
            "10s a@x/s1 firing d2/109x1",
            // Each (strategy, receiver) is its own group; a receiver listed twice gets one message.
            "10s a@x/s2 firing d1/301x1",
            "10s b@x/s2 firing d1/301x1",
        ],
    );
}

#[test]
fn back_online_clears_offline_and_sends_resolved() {
    use In::*;
    let s = [strategy(1, &["a@x"])];
    check(
        &s,
        &[(0, Offline(1)), (100, Online(1))],
        20_000,
        &[
            "0s +d1/109",
            "10s a@x/s1 firing d1/109x1",
            "100s -d1/109",
            "100s cleared d1/109",
            "100s a@x/s1 resolved d1/109x1",
        ],
    );
    // Resolved inside the group interval waits for it; a cleared alarm is never repeated.
    check(
        &s,
        &[(0, Offline(1)), (30, Online(1))],
        20_000,
        &[
            "0s +d1/109",
            "10s a@x/s1 firing d1/109x1",
            "30s -d1/109",
            "30s cleared d1/109",
            "70s a@x/s1 resolved d1/109x1",
        ],
    );
    // Cleared before the group was sent: neither firing nor resolved.
    check(&s, &[(0, Offline(1)), (5, Online(1))], 100, &["0s +d1/109", "5s -d1/109", "5s cleared d1/109"]);
    // A device's own clear of a type that is not active only updates the record.
    check(&s, &[(0, Clear(1, CRASH))], 100, &["0s -d1/105"]);
}

#[test]
fn manual_clear_records_who() {
    use In::*;
    check(
        &[strategy(1, &["a@x"])],
        &[(0, Raise(1, CRASH)), (20, Ack(1, CRASH, 7)), (25, ManualClear(1, CRASH, 8)), (40, Raise(1, CRASH))],
        200,
        &[
            "0s +d1/105",
            "10s a@x/s1 firing d1/105x1",
            "20s ack d1/105 by 7",
            "25s -d1/105",
            "25s cleared d1/105 by 8",
            // The acknowledgement left the group nothing to send, so it closed: the resolution
            // opens a new group (group_wait), and so does the new activation after it was sent.
            "35s a@x/s1 resolved d1/105x1",
            "40s +d1/105",
            "50s a@x/s1 firing d1/105x1",
        ],
    );
}

#[test]
fn acknowledge_and_clear_need_an_active_alarm() {
    let mut engine = AlarmEngine::new();
    let not_active = Err(EngineError::NotActive { device: DeviceId(1), code: AlarmTypeCode(CRASH) });
    assert_eq!(engine.handle_acknowledge(UnixMillis(0), DeviceId(1), AlarmTypeCode(CRASH), AccountId(7)), not_active);
    assert_eq!(engine.handle_manual_clear(UnixMillis(0), DeviceId(1), AlarmTypeCode(CRASH), AccountId(7)), not_active);
    assert_eq!(engine.poll_action(), None);
}

#[test]
fn cpu_threshold_fires_after_the_duration_and_resets_below() {
    use In::*;
    let s = [AlarmStrategy { thresholds: vec![cpu_rule(90, 600)], ..strategy(1, &["a@x"]) }];
    check(
        &s,
        &[(0, Cpu(1, 95)), (300, Cpu(1, 95)), (600, Cpu(1, 91)), (900, Cpu(1, 99)), (1000, Cpu(1, 90))],
        2000,
        &[
            "600s +d1/401",
            "610s a@x/s1 firing d1/401x1",
            "1000s -d1/401",
            "1000s cleared d1/401",
            "1000s a@x/s1 resolved d1/401x1",
        ],
    );
    // A sample at or below the limit restarts the window.
    check(&s, &[(0, Cpu(1, 95)), (300, Cpu(1, 90)), (600, Cpu(1, 95)), (900, Cpu(1, 95))], 2000, &[]);
    check(
        &s,
        &[(0, Cpu(1, 95)), (300, Cpu(1, 50)), (600, Cpu(1, 95)), (1200, Cpu(1, 95)), (1300, Cpu(2, 100))],
        1300,
        &["1200s +d1/401", "1210s a@x/s1 firing d1/401x1"],
    );
    // A manual clear restarts the window: the alarm comes back only after a full duration.
    check(
        &s,
        &[(0, Cpu(1, 95)), (600, Cpu(1, 95)), (700, ManualClear(1, 401, 7)), (800, Cpu(1, 95)), (1400, Cpu(1, 95))],
        1500,
        &[
            "600s +d1/401",
            "610s a@x/s1 firing d1/401x1",
            "700s -d1/401",
            "700s cleared d1/401 by 7",
            "700s a@x/s1 resolved d1/401x1",
            "1400s +d1/401",
            // The group closed after the resolution: a new one waits group_wait.
            "1410s a@x/s1 firing d1/401x1",
        ],
    );
    // A disabled strategy's rules do not apply; removing the rules clears an active alarm.
    let disabled = AlarmStrategy { enabled: false, ..s[0].clone() };
    check(&[disabled], &[(0, Cpu(1, 95)), (600, Cpu(1, 95))], 700, &[]);
    check(
        &s,
        &[(0, Cpu(1, 95)), (600, Cpu(1, 95)), (605, Configure(vec![])), (700, Cpu(1, 95))],
        800,
        &["600s +d1/401", "700s -d1/401", "700s cleared d1/401"],
    );
}

#[test]
fn memory_threshold_uses_the_used_share() {
    use In::*;
    let rule = ThresholdRule { metric: Metric::Memory, above_centi_pct: 8000, for_ms: 0 };
    let s = [AlarmStrategy { thresholds: vec![rule], ..with_notify(strategy(1, &["a@x"]), 0, 60, 3600) }];
    check(
        &s,
        &[(0, Mem(1, 80, 100)), (10, Mem(1, 81, 100)), (20, Mem(1, 1, 0)), (30, Mem(1, 4, 5))],
        100,
        &[
            "10s +d1/402",
            "10s a@x/s1 firing d1/402x1",
            "30s -d1/402",
            "30s cleared d1/402",
            "30s a@x/s1 resolved d1/402x1",
        ],
    );
}

#[test]
fn removed_strategies_send_nothing_more() {
    use In::*;
    let s = strategy(1, &["a@x"]);
    check(
        std::slice::from_ref(&s),
        &[(0, Raise(1, CRASH)), (5, Configure(vec![])), (6, Configure(vec![s.clone()])), (20, Raise(2, CRASH))],
        100,
        &["0s +d1/105", "20s +d2/105", "30s a@x/s1 firing d2/105x1"],
    );
}

#[test]
fn keys_are_deterministic_and_new_per_activation() {
    use In::*;
    let s = [with_notify(strategy(1, &["a@x", "b@x"]), 10, 60, 100)];
    let script =
        [(0, Raise(1, CRASH)), (1, Offline(2)), (50, Clear(1, CRASH)), (60, Raise(1, CRASH)), (200, Online(2))];
    let (_, first) = run(&s, &script, 400);
    let (_, second) = run(&s, &script, 400);
    assert_eq!(first, second);

    let item_keys: Vec<(String, IdempotencyKey)> = first
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Notify(n) => Some(n),
            _ => None,
        })
        .flat_map(|n| {
            n.items
                .iter()
                .map(move |i| (format!("{:?} {:?} d{} {:?}", n.receiver, n.stage, i.device_id, i.first_at), i.key))
        })
        .collect();
    let mut distinct: Vec<IdempotencyKey> = item_keys.iter().map(|(_, k)| *k).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), item_keys.len(), "every item of every notification has its own key: {item_keys:#?}");
    // Both activations of d1/105 were sent as firing, under different keys.
    let firing_d1: Vec<_> = item_keys.iter().filter(|(what, _)| what.starts_with("Email(\"a@x\") Firing d1")).collect();
    assert_eq!(firing_d1.len(), 2, "{item_keys:#?}");

    // A digest's key is derived from its items' keys; a single item's notification has its key.
    for (_, action) in &first {
        if let Action::Notify(n) = action {
            assert_eq!(n.key, IdempotencyKey::digest(&n.items));
            if let [one] = n.items.as_slice() {
                assert_eq!(n.key, one.key);
            }
        }
    }
}

#[test]
fn state_is_released_when_alarms_clear() {
    use In::*;
    let s = [AlarmStrategy { thresholds: vec![cpu_rule(90, 0)], ..with_notify(strategy(1, &["a@x"]), 10, 60, 100) }];
    let script = [
        (0, Offline(1)),
        (0, Raise(2, CRASH)),
        (0, Cpu(3, 95)),
        (0, Cpu(4, 50)),
        (100, Online(1)),
        (100, Clear(2, CRASH)),
        (100, Cpu(3, 10)),
    ];
    let (engine, _) = run(&s, &script, 1000);
    assert_eq!(engine.stats(), EngineStats::default());
    assert_eq!(engine.next_deadline(), None);
}

#[test]
fn time_never_goes_backwards() {
    use In::*;
    // The second raise claims an earlier time; the engine treats it as the latest time seen.
    check(
        &[strategy(1, &["a@x"])],
        &[(100, Raise(1, CRASH)), (50, Raise(2, CRASH))],
        200,
        &["100s +d1/105", "50s +d2/105", "110s a@x/s1 firing d1/105x1 d2/105x1"],
    );
}

#[test]
fn invalid_strategies_are_refused() {
    let base = || strategy(1, &["a@x"]);
    let cases: Vec<(Vec<AlarmStrategy>, EngineError)> = vec![
        (
            vec![AlarmStrategy { enterprise_id: EnterpriseId(2), ..base() }],
            EngineError::WrongEnterprise { strategy: StrategyId(1), enterprise: EnterpriseId(2) },
        ),
        (vec![base(), base()], EngineError::DuplicateStrategy(StrategyId(1))),
        (vec![with_notify(base(), 10, 0, 10)], EngineError::ZeroInterval { strategy: StrategyId(1) }),
        (vec![with_notify(base(), 10, 10, 0)], EngineError::ZeroInterval { strategy: StrategyId(1) }),
        (
            vec![AlarmStrategy { thresholds: vec![cpu_rule(100, 0)], ..base() }],
            EngineError::ThresholdOutOfRange { strategy: StrategyId(1), above_centi_pct: 10_000 },
        ),
        (
            vec![AlarmStrategy { thresholds: (50..55).map(|p| cpu_rule(p, 0)).collect(), ..base() }],
            EngineError::TooManyThresholds { metric: Metric::Cpu, max_limits: 4, max_rules: 16 },
        ),
        (
            (0..65).map(|i| strategy(i, &[])).collect(),
            EngineError::TooManyStrategies { max: MAX_STRATEGIES_PER_ENTERPRISE },
        ),
    ];
    for (strategies, want) in cases {
        assert_eq!(AlarmEngine::new().set_strategies(E, strategies), Err(want.clone()), "{want}");
    }
}

/// The item keys of every notification in `actions`, with the stage.
fn item_keys(actions: &[(UnixMillis, Action)]) -> Vec<(i64, Stage, IdempotencyKey)> {
    let mut keys = Vec::new();
    for (t, a) in actions {
        if let Action::Notify(n) = a {
            keys.extend(n.items.iter().map(|i| (t.0 / 1000, n.stage, i.key)));
        }
    }
    keys
}

#[test]
fn a_restored_alarm_keeps_its_keys_and_reminder_numbers() {
    let s = [with_notify(strategy(1, &["a@x"]), 10, 60, 100)];
    // The original process: firing at 10 s, reminders 1, 2, 3 at 110, 210, 310 s.
    let (_, original) = run(&s, &[(0, In::Raise(1, CRASH))], 350);
    let original = item_keys(&original);
    assert_eq!(
        original.iter().map(|k| (k.0, k.1)).collect::<Vec<_>>(),
        [(10, Stage::Firing), (110, Stage::Repeat), (210, Stage::Repeat), (310, Stage::Repeat)]
    );

    // A new process restores the alarm at 250 s from its record.
    let mut engine = AlarmEngine::new();
    engine.set_strategies(E, s.to_vec()).expect("valid strategies");
    let restored = RestoredAlarm {
        device_id: DeviceId(1),
        enterprise_id: E,
        code: AlarmTypeCode(CRASH),
        first_at: UnixMillis(0),
        latest_at: UnixMillis(0),
        count: 1,
        description: "alarm 105".into(),
        acknowledged: None,
    };
    engine.restore_alarm(UnixMillis(250_000), restored.clone());
    engine.restore_alarm(UnixMillis(250_000), restored); // a second restore changes nothing
    let mut out = Vec::new();
    collect(&mut engine, UnixMillis(250_000), &mut out);
    timers(&mut engine, UnixMillis(360_000), &mut out);
    let after = item_keys(&out);
    // Firing is planned again under the same key (the outbox leaves it out if it was queued);
    // the next reminder is number 3, the one the original sent at 310 s.
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!((after[0].0, after[0].1, after[0].2), (260, Stage::Firing, original[0].2));
    assert_eq!((after[1].0, after[1].1, after[1].2), (360, Stage::Repeat, original[3].2));
    let status = engine.alarm_status(DeviceId(1), AlarmTypeCode(CRASH)).expect("active");
    assert_eq!((status.first_at, status.count), (UnixMillis(0), 1));
}

#[test]
fn a_restored_threshold_alarm_clears_on_the_next_low_sample() {
    let s = [AlarmStrategy { thresholds: vec![cpu_rule(90, 60)], ..with_notify(strategy(1, &["a@x"]), 0, 60, 3600) }];
    let mut engine = AlarmEngine::new();
    engine.set_strategies(E, s.to_vec()).expect("valid strategies");
    engine.restore_alarm(
        UnixMillis(1_000),
        RestoredAlarm {
            device_id: DeviceId(4),
            enterprise_id: E,
            code: crate::HIGH_CPU,
            first_at: UnixMillis(0),
            latest_at: UnixMillis(0),
            count: 1,
            description: "CPU above 90 %".into(),
            acknowledged: Some((AccountId(3), UnixMillis(500))),
        },
    );
    let mut out = Vec::new();
    collect(&mut engine, UnixMillis(1_000), &mut out);
    let sample = ResourceSample { cpu_centi_pct: 1_000, mem_used_bytes: 0, mem_total_bytes: 0 };
    engine.handle_resource_sample(UnixMillis(2_000), DeviceId(4), E, &sample);
    collect(&mut engine, UnixMillis(2_000), &mut out);
    let got: Vec<String> = out.iter().map(|(t, a)| render(*t, a)).collect();
    assert_eq!(got, ["1s a@x/s1 firing d4/401x1", "2s -d4/401", "2s cleared d4/401", "2s a@x/s1 resolved d4/401x1"]);
    assert_eq!(engine.stats(), EngineStats::default());
}

#[test]
fn an_event_keeps_its_own_time_when_the_clock_is_ahead() {
    // Device 1's event moved the clock to 5 s; device 2's raise of 3 s and its clear and raise
    // again at 3.001 s and 3.002 s are two activations with their own times and keys.
    let s = [with_notify(strategy(1, &["a@x"]), 0, 1, 3600)];
    let mut engine = AlarmEngine::new();
    engine.set_strategies(E, s.to_vec()).expect("valid strategies");
    engine.handle_device_alarm(UnixMillis(5_000), DeviceId(1), E, &device_alarm(CRASH, false));
    engine.handle_device_alarm(UnixMillis(3_000), DeviceId(2), E, &device_alarm(CRASH, false));
    engine.handle_device_alarm(UnixMillis(3_001), DeviceId(2), E, &device_alarm(CRASH, true));
    engine.handle_device_alarm(UnixMillis(3_002), DeviceId(2), E, &device_alarm(CRASH, false));
    let mut firing = Vec::new();
    while let Some(action) = engine.poll_action() {
        if let Action::Notify(n) = action
            && n.stage == Stage::Firing
        {
            firing.extend(n.items.iter().map(|i| (i.device_id.0, i.first_at.0, i.key)));
        }
    }
    assert_eq!(firing.iter().map(|f| (f.0, f.1)).collect::<Vec<_>>(), [(1, 5_000), (2, 3_000), (2, 3_002)]);
    assert_ne!(firing[1].2, firing[2].2, "two activations, two keys");
    let status = engine.alarm_status(DeviceId(2), AlarmTypeCode(CRASH)).expect("active");
    assert_eq!((status.first_at, status.latest_at), (UnixMillis(3_002), UnixMillis(3_002)));
}
