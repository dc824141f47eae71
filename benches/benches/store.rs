//! Embedded store writes: rows per second of `EventStore::append` with group commit, and the
//! cost of one commit shaped like those of the ingest hot path (`ingest_commit_*`).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fleetpulse_proto::domain::{
    AlarmChange, AlarmChangeKind, CallStatus, DeviceKey, DeviceStatus, ResourceSample, SipLine, SipState,
};
use fleetpulse_proto::{AccountId, AlarmTypeCode, DeviceId, EnterpriseId, Mac, UnixMillis};
use fleetpulse_store::embedded::EmbeddedConfig;
use fleetpulse_store::{AlarmEvent, EventBatch, NewDevice, NewEnterprise, ResourceEvent, StatusEvent, Store};

const ROWS: u64 = 10_000;

fn batch(enterprise: EnterpriseId, devices: &[DeviceId], start: u64) -> EventBatch {
    let resources = (0..ROWS)
        .map(|i| ResourceEvent {
            device_id: devices[(i as usize) % devices.len()],
            enterprise_id: enterprise,
            seq: start + i,
            at: UnixMillis(1_700_000_000_000 + i as i64),
            sample: ResourceSample { cpu_centi_pct: 4_200, mem_used_bytes: 1 << 28, mem_total_bytes: 1 << 30 },
        })
        .collect();
    let delivery = devices.iter().map(|d| (*d, start + ROWS)).collect();
    EventBatch { resources, delivery, ..EventBatch::default() }
}

fn store(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("embedded_append");
    group.throughput(Throughput::Elements(ROWS));
    group.sample_size(20);
    for fsync in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Store::open_embedded(dir.path(), EmbeddedConfig { fsync, ..EmbeddedConfig::default() }).expect("open");
        let (enterprise, devices) = rt.block_on(async {
            let e = store
                .entities
                .create_enterprise(NewEnterprise {
                    profile: Default::default(),
                    name: "bench".into(),
                    credential: "bench".into(),
                    channel_id: None,
                })
                .await
                .expect("enterprise");
            let mut devices = Vec::new();
            for i in 0..1000u32 {
                let mac = Mac::parse(&format!("0015650{i:05x}")).expect("mac");
                let d = store
                    .entities
                    .register_device(NewDevice {
                        enterprise_id: e.id,
                        key: DeviceKey::Mac(mac),
                        serial: None,
                        model: "T54W".into(),
                        firmware: "1".into(),
                        at: UnixMillis(0),
                    })
                    .await
                    .expect("device");
                devices.push(d.device.id);
            }
            (e.id, devices)
        });
        let mut next = 1u64;
        group.bench_function(if fsync { "resource_10k_rows_fsync" } else { "resource_10k_rows_no_fsync" }, |b| {
            b.iter_batched(
                || {
                    next += ROWS;
                    batch(enterprise, &devices, next)
                },
                |batch| rt.block_on(store.events.append(batch)).expect("append"),
                BatchSize::LargeInput,
            )
        });
        // One commit as the ingest path makes it under `scripts/perf.sh compare 1000 20` at
        // 40,000 msg/s: the frames of 5 devices' 20-frame flushes, in the load tester's mix
        // (status, resource and alarm reports 1 : 1 : 0.2, each alarm also bumping its record),
        // each device's rows after the ones it wrote before, the devices taken in turn.
        // The figure is CPU time (every thread of the process, the store's writer included), not
        // wall time: the time a commit waits for the disk is not the server's cost.
        let mut commit = 0u64;
        group.throughput(Throughput::Elements(INGEST_DEVICES * INGEST_FRAMES));
        group.bench_function(if fsync { "ingest_commit_fsync_cpu" } else { "ingest_commit_no_fsync_cpu" }, |b| {
            b.iter_custom(|iters| {
                let batches: Vec<EventBatch> = (0..iters)
                    .map(|_| {
                        commit += 1;
                        ingest_commit(enterprise, &devices, commit)
                    })
                    .collect();
                let start = process_cpu();
                for batch in batches {
                    rt.block_on(store.events.append(batch)).expect("append");
                }
                process_cpu().saturating_sub(start)
            })
        });
        group.throughput(Throughput::Elements(ROWS));
        if !fsync {
            // Alarm-record changes through the lifecycle rule: each batch raises, acknowledges or
            // clears one alarm type on each of the 1,000 devices, in turn.
            let mut round = 0u64;
            group.throughput(Throughput::Elements(devices.len() as u64));
            group.bench_function("alarm_changes_1k_no_fsync", |b| {
                b.iter_batched(
                    || {
                        round += 1;
                        alarm_changes(enterprise, &devices, round)
                    },
                    |batch| rt.block_on(store.events.append(batch)).expect("append"),
                    BatchSize::LargeInput,
                )
            });
            group.throughput(Throughput::Elements(ROWS));
        }
    }
    group.finish();
}

/// CPU time of every thread of this process so far, from `/proc/self/task/*/schedstat` (its
/// first field is the thread's time on a CPU, in nanoseconds).
fn process_cpu() -> std::time::Duration {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let path = task.expect("task").path().join("schedstat");
        // A thread that ended between the listing and the read has nothing left to count.
        if let Ok(stat) = std::fs::read_to_string(path) {
            ns += stat.split_whitespace().next().and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    std::time::Duration::from_nanos(ns)
}

/// Devices in one ingest-shaped commit, and frames each.
const INGEST_DEVICES: u64 = 5;
const INGEST_FRAMES: u64 = 20;

/// The `commit`th ingest-shaped batch: `INGEST_FRAMES` frames from each of `INGEST_DEVICES`
/// devices. Of every 11 frames, 5 are status reports, 5 resource reports and 1 an alarm; the
/// seqs of a device continue from its previous batch.
fn ingest_commit(enterprise: EnterpriseId, devices: &[DeviceId], commit: u64) -> EventBatch {
    let mut batch = EventBatch::default();
    let at = UnixMillis(1_700_000_000_000 + commit as i64);
    for d in 0..INGEST_DEVICES {
        let slot = (commit * INGEST_DEVICES + d) as usize;
        let device_id = devices[slot % devices.len()];
        // Each device's seqs start at 2^40, above those the resource bench wrote for it, and go
        // on by INGEST_FRAMES each time the device's turn comes round again.
        let first = (1 << 40) + (slot / devices.len()) as u64 * INGEST_FRAMES;
        for seq in first..first + INGEST_FRAMES {
            match seq % 11 {
                0..=4 => batch.status.push(StatusEvent {
                    device_id,
                    enterprise_id: enterprise,
                    seq,
                    at,
                    status: DeviceStatus {
                        lines: vec![SipLine {
                            line: 1,
                            account: format!("{:07}@loadtest.invalid", device_id.0),
                            state: SipState::Registered,
                        }],
                        call_status: CallStatus::Idle,
                        firmware: "151.86.0.15".into(),
                        public_ip: Some([203, 0, 113, 133].into()),
                        private_ip: Some([10, 214, 237, 181].into()),
                        uptime_s: 1_739_464 + seq,
                        last_reboot: Some(UnixMillis(1_794_927_987_250)),
                    },
                }),
                5..=9 => batch.resources.push(ResourceEvent {
                    device_id,
                    enterprise_id: enterprise,
                    seq,
                    at,
                    sample: ResourceSample { cpu_centi_pct: 4_200, mem_used_bytes: 1 << 28, mem_total_bytes: 1 << 30 },
                }),
                _ => {
                    batch.alarms.push(AlarmEvent {
                        device_id,
                        enterprise_id: enterprise,
                        seq,
                        at,
                        code: AlarmTypeCode(102),
                        clear: false,
                        description: "loadtest: registration failed".into(),
                        log: None,
                    });
                    batch.alarm_changes.push(AlarmChange {
                        device_id,
                        enterprise_id: enterprise,
                        code: AlarmTypeCode(102),
                        at,
                        kind: AlarmChangeKind::Raise { description: "loadtest: registration failed".into() },
                    });
                }
            }
        }
        batch.delivery.push((device_id, first + INGEST_FRAMES - 1));
    }
    batch
}

/// One alarm-record change per device: raise, acknowledge, raise again, clear, by `round`.
fn alarm_changes(enterprise: EnterpriseId, devices: &[DeviceId], round: u64) -> EventBatch {
    let kind = match round % 4 {
        0 => AlarmChangeKind::Raise { description: "registration failed".into() },
        1 => AlarmChangeKind::Acknowledge { by: AccountId(1) },
        2 => AlarmChangeKind::Raise { description: "registration failed again".into() },
        _ => AlarmChangeKind::Clear,
    };
    let alarm_changes = devices
        .iter()
        .map(|d| AlarmChange {
            device_id: *d,
            enterprise_id: enterprise,
            code: AlarmTypeCode(102),
            at: UnixMillis(1_700_000_000_000 + round as i64),
            kind: kind.clone(),
        })
        .collect();
    EventBatch { alarm_changes, ..EventBatch::default() }
}

criterion_group!(benches, store);
criterion_main!(benches);
