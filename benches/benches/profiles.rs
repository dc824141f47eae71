//! Profile resolution (PRV-3): the resultant configuration of 100,000 devices of one enterprise
//! (target ≤ 2 s), with 200 profiles of 40 parameters deployed to every container.

use std::collections::BTreeMap;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fleetpulse_proto::{DeviceId, EnterpriseId, FirmwareId, GroupId, Mac, ProfileId, SiteId, UnixMillis};
use fleetpulse_store::resolve::{DeviceFacts, ProfileSet};
use fleetpulse_store::{Deployment, DeploymentTarget, ProfileSettings, StoredProfile};

const DEVICES: u64 = 100_000;
const PROFILES: u64 = 200;

fn profiles() -> Vec<StoredProfile> {
    (0..PROFILES)
        .map(|p| {
            let mut parameters = BTreeMap::new();
            for k in 0..40 {
                // Profiles overlap on half their keys, so ranking decides.
                let key = if k % 2 == 0 { format!("feature.{k}.enabled") } else { format!("p{p}.setting.{k}") };
                let value = if k % 10 == 0 {
                    format!("https://prov.example.com/${{mac_address}}/{p}.cfg")
                } else {
                    format!("{p}-{k}")
                };
                parameters.insert(key, value);
            }
            let firmware = [(format!("M{}", p % 10), FirmwareId(p))].into_iter().collect();
            StoredProfile {
                id: ProfileId(p + 1),
                enterprise_id: EnterpriseId(1),
                settings: ProfileSettings {
                    name: format!("profile {p}"),
                    description: String::new(),
                    parameters,
                    firmware,
                },
                created_at: UnixMillis(0),
                updated_at: UnixMillis(0),
            }
        })
        .collect()
}

fn deployments() -> Vec<Deployment> {
    let d = |target, first: u64| Deployment {
        enterprise_id: EnterpriseId(1),
        target,
        profiles: (0..3).map(|i| ProfileId((first + i * 7) % PROFILES + 1)).collect(),
        updated_at: UnixMillis(0),
    };
    let mut out = vec![d(DeploymentTarget::Global, 0)];
    out.extend((0..10).map(|m| d(DeploymentTarget::Model { model: format!("M{m}") }, m + 10)));
    out.extend((0..100).map(|s| d(DeploymentTarget::Site { site_id: SiteId(s) }, s + 20)));
    out.extend((0..50).map(|g| d(DeploymentTarget::Group { group_id: GroupId(g) }, g + 30)));
    out.extend((0..1_000).map(|i| d(DeploymentTarget::Device { device_id: DeviceId(i * 100) }, i)));
    out
}

fn devices() -> Vec<DeviceFacts> {
    (0..DEVICES)
        .map(|i| DeviceFacts {
            id: DeviceId(i),
            mac: Mac::parse(&format!("0004f2{i:06x}")).ok(),
            serial: Some(format!("SN{i}")),
            model: format!("M{}", i % 10),
            name: format!("phone {i}"),
            attributes: BTreeMap::new(),
            sites: vec![SiteId(i % 100), SiteId((i % 100) / 10)],
            groups: vec![GroupId(i % 50), GroupId((i + 1) % 50)],
        })
        .collect()
}

fn resolve_all(c: &mut Criterion) {
    let set = ProfileSet::new(&profiles(), &deployments());
    let devices = devices();
    let mut group = c.benchmark_group("profiles");
    group.sample_size(10);
    group.throughput(Throughput::Elements(DEVICES));
    group.bench_function("resolve_100k_devices", |b| {
        b.iter(|| {
            let mut resolver = set.resolver();
            let mut keys = 0usize;
            for d in &devices {
                keys += std::hint::black_box(resolver.resolve(d)).parameters.len();
            }
            keys
        })
    });
    group.finish();
}

criterion_group!(benches, resolve_all);
criterion_main!(benches);
