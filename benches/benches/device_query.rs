//! `DeviceStore::query_devices` and `device_dashboard` at 100,000 devices on both entity
//! backends: the embedded SQLite store and PostgreSQL (a throwaway server from `testkit`). The
//! store calls alone, without HTTP (the API's numbers: `admin-api/benches/device_list.rs`).
//! `cargo bench -p fleetpulse-benches --bench device_query`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fleetpulse_proto::domain::{CallStatus, DeviceKey, DeviceStatus, SipLine, SipState};
use fleetpulse_proto::{EnterpriseId, Mac, UnixMillis};
use fleetpulse_store::embedded::{EmbeddedConfig, EmbeddedStore};
use fleetpulse_store::postgres::PgEntityStore;
use fleetpulse_store::{
    DevicePageRequest, DeviceQuery, DeviceReport, DeviceSnapshotUpdate, DeviceSortColumn, EntityStore, NewDevice,
    NewEnterprise,
};

const DEVICES: u64 = 100_000;
const ENTERPRISES: u64 = 100;
const MODELS: [&str; 12] = [
    "T54W",
    "T48S",
    "T46U",
    "VP59",
    "CP960",
    "W73P",
    "MP56",
    "UVC86",
    "CP900",
    "MeetingBar A30",
    "MVC940",
    "RoomPanel",
];

/// Fills the store: 100 enterprises × 1,000 devices with a report each, 60 % online. Returns
/// the first 10 enterprises (a channel's worth).
async fn seed(s: Arc<dyn EntityStore>) -> Vec<EnterpriseId> {
    let mut enterprises = Vec::new();
    for e in 0..ENTERPRISES {
        let new = NewEnterprise {
            profile: Default::default(),
            name: format!("e{e}"),
            credential: format!("cred-{e}"),
            channel_id: None,
        };
        enterprises.push(s.create_enterprise(new).await.unwrap().id);
    }
    let mut tasks = tokio::task::JoinSet::new();
    let mut ids = Vec::new();
    for i in 0..DEVICES {
        let s = s.clone();
        let new = NewDevice {
            enterprise_id: enterprises[(i % ENTERPRISES) as usize],
            key: DeviceKey::Mac(Mac::parse(&format!("805e{i:08x}")).unwrap()),
            serial: Some(format!("SN{i:010}")),
            model: MODELS[(i % MODELS.len() as u64) as usize].into(),
            firmware: format!("{}.{}", 60 + i % 7, i % 3),
            at: UnixMillis(1_700_000_000_000 + i as i64),
        };
        tasks.spawn(async move { s.register_device(new).await.unwrap().device.id });
        if tasks.len() >= 64 {
            ids.push(tasks.join_next().await.unwrap().unwrap());
        }
    }
    while let Some(id) = tasks.join_next().await {
        ids.push(id.unwrap());
    }
    ids.sort_unstable();
    for (n, chunk) in ids.chunks(1_000).enumerate() {
        let updates = chunk
            .iter()
            .enumerate()
            .map(|(k, &id)| {
                let i = (n * 1_000 + k) as u64;
                let status = DeviceStatus {
                    lines: vec![SipLine { line: 1, account: format!("{i}"), state: SipState::Registered }],
                    call_status: CallStatus::Idle,
                    firmware: String::new(),
                    public_ip: Some(format!("203.0.{}.{}", (i / 256) % 256, i % 256).parse().unwrap()),
                    private_ip: Some(format!("10.{}.{}.{}", i % 16, (i / 256) % 256, i % 256).parse().unwrap()),
                    uptime_s: i,
                    last_reboot: None,
                };
                let at = UnixMillis(1_700_000_000_000 + ((i * 7_919) % 86_400_000) as i64);
                DeviceSnapshotUpdate {
                    device_id: id,
                    online: Some(i % 5 < 3),
                    report: Some(DeviceReport { at, status }),
                }
            })
            .collect();
        s.update_device_snapshots(updates).await.unwrap();
    }
    enterprises.truncate(10);
    enterprises
}

fn device_query(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let embedded: Arc<dyn EntityStore> = Arc::new(
        EmbeddedStore::open(dir.path(), EmbeddedConfig { fsync: false, ..EmbeddedConfig::default() }).unwrap(),
    );
    let pg_server = fleetpulse_testkit::postgres::PostgresServer::shared();
    let url = pg_server.create_database("device_query_bench");
    let postgres: Arc<dyn EntityStore> = Arc::new(rt.block_on(PgEntityStore::connect(&url, 8)).unwrap());
    let mut group = c.benchmark_group("device_query_100k");
    group.sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    for (backend, store) in [("sqlite", embedded), ("postgres", postgres)] {
        let started = std::time::Instant::now();
        let channel = rt.block_on(seed(store.clone()));
        eprintln!("{backend}: seeded {DEVICES} devices in {:?}", started.elapsed());
        if backend == "postgres" {
            // Steady state: autovacuum would have analyzed the table after 100,000 inserts; without
            // statistics the planner's choices (and so the figures) vary from run to run.
            rt.block_on(async {
                let pool = sqlx::PgPool::connect(&url).await.unwrap();
                sqlx::query("VACUUM ANALYZE devices").execute(&pool).await.unwrap();
            });
        }
        let page = |cursor: Option<String>| DevicePageRequest { cursor, limit: 50 };
        let cases: Vec<(&str, DeviceQuery)> = vec![
            ("first_page", DeviceQuery::default()),
            (
                "online_and_model",
                DeviceQuery { online: Some(true), model: Some("T54W".into()), ..DeviceQuery::default() },
            ),
            (
                "sorted_last_report_desc",
                DeviceQuery { sort: DeviceSortColumn::LastReportAt, descending: true, ..DeviceQuery::default() },
            ),
            ("q_search", DeviceQuery { q: Some("0001a2".into()), ..DeviceQuery::default() }),
            ("channel_first_page", DeviceQuery { enterprises: Some(channel.clone()), ..DeviceQuery::default() }),
        ];
        for (name, query) in cases {
            let total = rt.block_on(store.query_devices(query.clone(), page(None))).unwrap().total;
            assert!(total > 0, "{backend}/{name}");
            group.bench_function(format!("{backend}/{name}"), |b| {
                b.iter(|| rt.block_on(store.query_devices(query.clone(), page(None))).unwrap())
            });
        }
        group.bench_function(format!("{backend}/dashboard"), |b| {
            b.iter(|| rt.block_on(store.device_dashboard(DeviceQuery::default())).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, device_query);
criterion_main!(benches);
