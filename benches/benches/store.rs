//! Embedded store writes: rows per second of `EventStore::append` with group commit.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fleetpulse_proto::domain::{AlarmChange, AlarmChangeKind, DeviceKey, ResourceSample};
use fleetpulse_proto::{AccountId, AlarmTypeCode, DeviceId, EnterpriseId, Mac, UnixMillis};
use fleetpulse_store::embedded::EmbeddedConfig;
use fleetpulse_store::{EventBatch, NewDevice, NewEnterprise, ResourceEvent, Store};

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
