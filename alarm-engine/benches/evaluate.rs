//! Criterion bench of the alarm engine: inputs handled per second for a realistic mix.
//!
//! One enterprise with 10,000 devices and 3 strategies (everything to two receivers; critical
//! alarms plus a CPU threshold rule; Offline only plus a memory rule, without grouping). The
//! input stream, one input per virtual millisecond, is 60 % resource samples (a few devices run
//! hot), 25 % device alarm raises, 8 % device clears, 4 % offline and 3 % back online; due timers
//! run as a shell would run them, and every action is drained and dropped.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fleetpulse_alarm_engine::{
    Action, AlarmEngine, AlarmStrategy, Metric, NotifySettings, Receiver, StrategyId, ThresholdRule,
};
use fleetpulse_proto::alarm_types::OFFLINE;
use fleetpulse_proto::domain::{DeviceAlarm, ResourceSample};
use fleetpulse_proto::{ALARM_TYPES, DeviceId, EnterpriseId, Severity, UnixMillis};

const DEVICES: u64 = 10_000;
const STREAM: usize = 200_000;
const CHUNK: usize = 1_000;
const E: EnterpriseId = EnterpriseId(1);

#[derive(Debug)]
enum Input {
    Alarm(DeviceId, DeviceAlarm),
    Offline(DeviceId),
    Online(DeviceId),
    Sample(DeviceId, ResourceSample),
}

/// xorshift64*: a fixed, seedable stream so every run sees the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn strategies() -> Vec<AlarmStrategy> {
    let base = |id, receivers: &[&str]| AlarmStrategy {
        id: StrategyId(id),
        enterprise_id: E,
        name: format!("strategy {id}"),
        enabled: true,
        alarm_types: vec![],
        severities: vec![],
        receivers: receivers.iter().map(|r| Receiver::Email((*r).to_owned())).collect(),
        notify: NotifySettings::default(),
        thresholds: vec![],
        site_incident: None,
    };
    vec![
        base(1, &["ops@example.com", "noc@example.com"]),
        AlarmStrategy {
            severities: vec![Severity::Critical, Severity::Major],
            thresholds: vec![ThresholdRule { metric: Metric::Cpu, above_centi_pct: 9000, for_ms: 600_000 }],
            ..base(2, &["oncall@example.com"])
        },
        AlarmStrategy {
            alarm_types: vec![OFFLINE],
            notify: NotifySettings { group_wait_ms: 0, ..NotifySettings::default() },
            thresholds: vec![ThresholdRule { metric: Metric::Memory, above_centi_pct: 8500, for_ms: 300_000 }],
            ..base(3, &["facilities@example.com"])
        },
    ]
}

fn stream() -> Vec<Input> {
    let device_types: Vec<_> = ALARM_TYPES.iter().filter(|t| t.code.0 < 400 && t.code != OFFLINE).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..STREAM)
        .map(|_| {
            let device = DeviceId(rng.below(DEVICES));
            let alarm = |rng: &mut Rng, clear| DeviceAlarm {
                alarm_type: device_types[rng.below(device_types.len() as u64) as usize],
                clear,
                description: "reported by the device".into(),
                log: None,
            };
            match rng.below(100) {
                0..60 => {
                    // One device in 50 runs hot.
                    let hot = device.0.is_multiple_of(50);
                    let cpu = if hot { 9_000 + rng.below(1_000) } else { rng.below(6_000) };
                    let total = 1u64 << 30;
                    let used = if hot { total / 10 * 9 } else { total / 100 * rng.below(80) };
                    Input::Sample(
                        device,
                        ResourceSample { cpu_centi_pct: cpu as u16, mem_used_bytes: used, mem_total_bytes: total },
                    )
                }
                60..85 => Input::Alarm(device, alarm(&mut rng, false)),
                85..93 => Input::Alarm(device, alarm(&mut rng, true)),
                93..97 => Input::Offline(device),
                _ => Input::Online(device),
            }
        })
        .collect()
}

fn apply(engine: &mut AlarmEngine, now: UnixMillis, input: &Input) {
    match input {
        Input::Alarm(d, a) => engine.handle_device_alarm(now, *d, E, a),
        Input::Offline(d) => engine.handle_offline(now, *d, E),
        Input::Online(d) => engine.handle_online(now, *d, E),
        Input::Sample(d, s) => engine.handle_resource_sample(now, *d, E, s),
    }
}

fn evaluate(c: &mut Criterion) {
    let inputs = stream();
    let mut engine = AlarmEngine::new();
    engine.set_strategies(E, strategies()).expect("valid strategies");
    let mut now = 1_700_000_000_000i64;
    let mut next = 0usize;
    let mut out: Vec<Action> = Vec::new();
    let mut notifications = 0u64;

    let mut group = c.benchmark_group("alarm_engine");
    group.throughput(Throughput::Elements(CHUNK as u64));
    group.bench_function("evaluate", |b| {
        b.iter(|| {
            for _ in 0..CHUNK {
                now += 1;
                let at = UnixMillis(now);
                if engine.next_deadline().is_some_and(|d| d <= at) {
                    engine.handle_timeout(at);
                }
                apply(&mut engine, at, &inputs[next]);
                next = (next + 1) % inputs.len();
                engine.drain_actions(&mut out);
                notifications += out.iter().filter(|a| matches!(a, Action::Notify(_))).count() as u64;
                black_box(&out);
                out.clear();
            }
        })
    });
    group.finish();
    let stats = engine.stats();
    println!(
        "after {} virtual seconds: {notifications} notifications; {} active alarms, {} threshold states, \
         {} open groups, {} scheduled reminders",
        (now - 1_700_000_000_000) / 1000,
        stats.active_alarms,
        stats.threshold_states,
        stats.open_groups,
        stats.scheduled_repeats
    );
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
