//! Device list, search and dashboard at 100,000 devices (DEV-1, DEV-2; SPEC §8: list calls
//! p99 ≤ 50 ms): the whole axum router called with `oneshot` over the embedded store, as a
//! platform admin and as a channel admin (its channel: 10 of the 100 enterprises).
//!
//! The fleet: 10 channels × 10 enterprises × 1,000 devices, 12 models, 60 % online, every
//! device with a status report (public/private IPs, SIP lines, report times spread over a day);
//! 5 device groups per enterprise (500 in all), every device in 2 of them (200,000 memberships).
//! `cargo bench -p fleetpulse-admin-api --bench device_list`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use criterion::{Criterion, criterion_group, criterion_main};
use fleetpulse_admin_api::{ApiConfig, ApiState, app, bootstrap_admin, hash_password};
use fleetpulse_ingest::LiveState;
use fleetpulse_proto::domain::{CallStatus, DeviceKey, DeviceStatus, SipLine, SipState};
use fleetpulse_proto::{ChannelId, Mac, UnixMillis};
use fleetpulse_store::embedded::EmbeddedConfig;
use fleetpulse_store::{
    DeviceReport, DeviceSnapshotUpdate, GroupTargets, NewAccount, NewChannel, NewDevice, NewEnterprise, NewGroup, Page,
    Role, Store,
};
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use tower::ServiceExt;

const DEVICES: u64 = 100_000;
const CHANNELS: u64 = 10;
const ENTERPRISES_PER_CHANNEL: u64 = 10;
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

struct Fleet {
    _dir: tempfile::TempDir,
    app: Router,
    platform: String,
    channel: String,
    /// A group of the channel admin's first enterprise (about 400 members).
    group: u64,
}

async fn call(app: &Router, uri: &str, token: &str) -> serde_json::Value {
    let req = Request::get(uri).header(header::AUTHORIZATION, format!("Bearer {token}")).body(Body::empty()).unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, StatusCode::OK, "{uri}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

async fn login(app: &Router, email: &str, password: &str) -> String {
    let body = serde_json::json!({ "email": email, "password": password }).to_string();
    let req = Request::post("/api/v1/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["token"].as_str().expect("token").to_owned()
}

async fn fleet() -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_embedded(dir.path(), EmbeddedConfig { fsync: false, ..EmbeddedConfig::default() }).unwrap();
    let s = store.entities.clone();
    let mut enterprises = Vec::new();
    let mut first_channel = None;
    for c in 0..CHANNELS {
        let new = NewChannel {
            phone: String::new(),
            country: String::new(),
            name: format!("channel {c}"),
            parent_id: None,
            allow_sub_channels: true,
            device_management: true,
            rps: false,
            contact: String::new(),
            email: String::new(),
        };
        let channel: ChannelId = s.create_channel(new, UnixMillis(1)).await.unwrap().id;
        first_channel.get_or_insert(channel);
        for e in 0..ENTERPRISES_PER_CHANNEL {
            let new = NewEnterprise {
                profile: Default::default(),
                name: format!("enterprise {c}-{e}"),
                credential: format!("cred-{c}-{e}"),
                channel_id: Some(channel),
            };
            enterprises.push(s.create_enterprise(new).await.unwrap().id);
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    let mut ids = Vec::with_capacity(DEVICES as usize);
    for i in 0..DEVICES {
        let s = s.clone();
        let new = NewDevice {
            enterprise_id: enterprises[(i % enterprises.len() as u64) as usize],
            key: DeviceKey::Mac(Mac::parse(&format!("805e{i:08x}")).unwrap()),
            serial: Some(format!("SN{i:010}")),
            model: MODELS[(i % MODELS.len() as u64) as usize].into(),
            firmware: format!("{}.{}", 60 + i % 7, i % 3),
            at: UnixMillis(1_700_000_000_000 + i as i64),
        };
        tasks.spawn(async move { s.register_device(new).await.unwrap().device.id });
        if tasks.len() >= 512 {
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
                let line = |l: u8, registered| SipLine {
                    line: l,
                    account: format!("{}{l}", 1000 + i),
                    state: if registered { SipState::Registered } else { SipState::Unregistered },
                };
                let status = DeviceStatus {
                    lines: vec![line(1, !i.is_multiple_of(5)), line(2, !i.is_multiple_of(3))],
                    call_status: if i.is_multiple_of(9) { CallStatus::InCall } else { CallStatus::Idle },
                    firmware: String::new(),
                    public_ip: Some(format!("203.0.{}.{}", (i / 256) % 256, i % 256).parse().unwrap()),
                    private_ip: Some(format!("10.{}.{}.{}", i % 16, (i / 256) % 256, i % 256).parse().unwrap()),
                    uptime_s: i * 7,
                    last_reboot: Some(UnixMillis(1_700_000_000_000)),
                };
                DeviceSnapshotUpdate {
                    device_id: id,
                    online: Some(i % 5 < 3),
                    report: Some(DeviceReport {
                        at: UnixMillis(1_700_000_000_000 + ((i * 7_919) % 86_400_000) as i64),
                        status,
                    }),
                }
            })
            .collect();
        s.update_device_snapshots(updates).await.unwrap();
    }
    let mut first_group = None;
    for &e in &enterprises {
        let members = s.list_devices(Some(e), Page::first(1_000)).await.unwrap();
        for k in 0..5 {
            let new = NewGroup {
                enterprise_id: e,
                name: format!("group {k}"),
                description: String::new(),
                at: UnixMillis(1),
            };
            let g = s.create_group(new).await.unwrap().id;
            first_group.get_or_insert(g.0);
            let ids = members.iter().enumerate().filter(|(j, _)| j % 5 == k || (j + 1) % 5 == k).map(|(_, d)| d.id);
            s.add_group_members(g, GroupTargets::Devices(ids.collect())).await.unwrap();
        }
    }
    bootstrap_admin(&store, Some("bench@example.com".into()), Some("bench-password".into())).await.unwrap();
    s.create_account(NewAccount {
        parent_id: None,
        permissions: None,
        email: "channel@example.com".into(),
        password_hash: hash_password("bench-password").unwrap(),
        role: Role::ChannelAdmin,
        channel_id: first_channel,
        enterprise_id: None,
        must_change_password: false,
    })
    .await
    .unwrap();
    let state = ApiState {
        store,
        live: Arc::new(LiveState::new()),
        registry: Arc::new(Registry::default()),
        ready: Arc::new(AtomicBool::new(true)),
        config: ApiConfig { session_idle: Duration::from_secs(24 * 3600), ..ApiConfig::default() },
        alarms: None,
        downlink: Default::default(),
        sessions: Default::default(),
        cluster: None,
    };
    let app = app(state);
    let platform = login(&app, "bench@example.com", "bench-password").await;
    let channel = login(&app, "channel@example.com", "bench-password").await;
    Fleet { _dir: dir, app, platform, channel, group: first_group.expect("a group") }
}

/// The cursor after `rows` rows of the default order, walked 1,000 at a time.
async fn deep_cursor(app: &Router, token: &str, rows: u64) -> String {
    let mut cursor: Option<String> = None;
    for _ in 0..rows / 1_000 {
        let uri = match &cursor {
            Some(c) => format!("/api/v1/devices?limit=1000&cursor={c}"),
            None => "/api/v1/devices?limit=1000".to_owned(),
        };
        cursor = call(app, &uri, token).await["next_cursor"].as_str().map(str::to_owned);
    }
    cursor.expect("a deep cursor")
}

fn device_list(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let started = std::time::Instant::now();
    let f = rt.block_on(fleet());
    eprintln!("seeded {DEVICES} devices in {:?}", started.elapsed());
    let total = rt.block_on(call(&f.app, "/api/v1/devices?limit=1", &f.platform))["total"].as_u64();
    assert_eq!(total, Some(DEVICES));
    let mut group = c.benchmark_group("device_list_100k");
    group.sample_size(30).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    for (who, token, deep) in [("platform", &f.platform, 50_000), ("channel", &f.channel, 5_000)] {
        let cursor = rt.block_on(deep_cursor(&f.app, token, deep));
        let cases = [
            ("first_page", "/api/v1/devices?limit=50".to_owned()),
            ("online_and_model", "/api/v1/devices?online=true&model=T54W&limit=50".to_owned()),
            ("sorted_last_report_desc", "/api/v1/devices?sort=last_report_at&order=desc&limit=50".to_owned()),
            ("deep_page_cursor", format!("/api/v1/devices?limit=50&cursor={cursor}")),
            ("q_search", "/api/v1/devices?q=0001a2&limit=50".to_owned()),
            ("dashboard", "/api/v1/dashboard".to_owned()),
            ("group_filter", format!("/api/v1/devices?group={}&limit=50", f.group)),
            ("groups_list", "/api/v1/groups?limit=100".to_owned()),
        ];
        for (name, uri) in cases {
            group.bench_function(format!("{who}/{name}"), |b| b.iter(|| rt.block_on(call(&f.app, &uri, token))));
        }
    }
    group.finish();
}

criterion_group!(benches, device_list);
criterion_main!(benches);
