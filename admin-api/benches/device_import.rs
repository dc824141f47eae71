//! Device CSV import and export through the router on the embedded store (DEV-4; issue 12's
//! numbers: import of 10,000 rows ≤ 2 s and of 100,000 rows ≤ 15 s; export of 100,000 devices
//! ≥ 50,000 rows/s). A measured run, not criterion: each import is a one-off (a second run
//! would update instead of add). Prints the times; the export runs five times, with the median.
//! Then, in the same enterprise of 110,000 devices: a site CSV import of 2,000 rows (PRV-1; the
//! enterprise's devices re-matched once per chunk of rows) and the one-enterprise dashboard
//! with its counts by site and by group (DEV-2), five times each.
//! `cargo bench -p fleetpulse-admin-api --bench device_import`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fleetpulse_admin_api::{ApiConfig, ApiState, app, bootstrap_admin};
use fleetpulse_ingest::LiveState;
use fleetpulse_proto::UnixMillis;
use fleetpulse_store::embedded::EmbeddedConfig;
use fleetpulse_store::{DevicePageRequest, DeviceQuery, MAX_DEVICE_PAGE, NewEnterprise, NewGroup, Store};
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use tower::ServiceExt;

/// CPU seconds this process has used (user + system, from `/proc/self/stat` at 100 ticks per
/// second): on a machine shared with other builds, the CPU a run costs says more than its wall time.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

async fn login(app: &Router) -> String {
    let body = serde_json::json!({ "email": "bench@example.com", "password": "bench-password" }).to_string();
    let req = Request::post("/api/v1/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["token"].as_str().expect("token").to_owned()
}

/// A CSV of `rows` devices from MAC number `first`: name, model, a group list and two attributes.
fn csv(first: u64, rows: u64) -> Vec<u8> {
    let mut out = b"mac_address,endpoint_type,endpoint_name,endpoint_group,reg.1.address,site\n".to_vec();
    for i in first..first + rows {
        out.extend(
            format!("{:012x},T54W,desk-{i},G1|G2,{},{}\n", 0x0015_6500_0000u64 + i, 1000 + i % 9000, i % 50).as_bytes(),
        );
    }
    out
}

async fn import(app: &Router, token: &str, enterprise: u64, body: Vec<u8>) -> (Duration, serde_json::Value) {
    let started = Instant::now();
    let req = Request::post(format!("/api/v1/device-imports?enterprise_id={enterprise}&mode=merge"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::from(body))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (started.elapsed(), serde_json::from_slice(&body).unwrap())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_embedded(dir.path(), EmbeddedConfig::default()).unwrap();
        bootstrap_admin(&store, Some("bench@example.com".into()), Some("bench-password".into())).await.unwrap();
        let e = store
            .entities
            .create_enterprise(NewEnterprise {
                name: "bench".into(),
                credential: "bench".into(),
                channel_id: None,
                profile: Default::default(),
            })
            .await
            .unwrap()
            .id;
        // The groups the rows name (an import creates none).
        for name in ["G1", "G2"] {
            let new = NewGroup { enterprise_id: e, name: name.into(), description: String::new(), at: UnixMillis(1) };
            store.entities.create_group(new).await.unwrap();
        }
        let entities = store.entities.clone();
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
        let token = login(&app).await;

        for (first, rows) in [(0, 10_000), (10_000, 100_000)] {
            let body = csv(first, rows);
            let bytes = body.len();
            let (took, log) = import(&app, &token, e.0, body).await;
            assert_eq!(log["created"], rows, "{log}");
            println!(
                "import of {rows} rows ({:.1} MiB): {:.2} s ({:.0} rows/s)",
                bytes as f64 / 1_048_576.0,
                took.as_secs_f64(),
                rows as f64 / took.as_secs_f64()
            );
        }

        // A site CSV import of 2,000 rows: 1,998 new sites (nine of ten under a parent named by
        // an earlier row) and two overwrites (Intranet and the first new site): the limit.
        let mut sites = b"site_name,subnets,parent_name,location_name\n".to_vec();
        for i in 0..1_998u32 {
            let parent = if i % 10 == 0 { String::new() } else { format!("site-{}", i - i % 10) };
            sites.extend(
                format!("site-{i},20.{}.{}.0/24>10.{}.0.0/16,{parent},Floor {}\n", i / 256, i % 256, i % 200, i % 7)
                    .as_bytes(),
            );
        }
        sites.extend(b"Intranet,192.168.0.0/16,,\nsite-0,21.0.0.0/16,,Moved\n");
        let started = Instant::now();
        let cpu = cpu_seconds();
        let req = Request::post(format!("/api/v1/sites/import?enterprise_id={}", e.0))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::from(sites))
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let report: serde_json::Value =
            serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
        let (took, cpu) = (started.elapsed(), cpu_seconds() - cpu);
        assert_eq!((report["created"].as_u64(), report["updated"].as_u64()), (Some(1_998), Some(2)), "{report}");
        println!(
            "site import of 2,000 rows into an enterprise of 110,000 devices: {:.2} s ({:.0} rows/s), {cpu:.2} CPU s",
            took.as_secs_f64(),
            2_000.0 / took.as_secs_f64()
        );

        // The one-enterprise dashboard (by site over 2,000 sites, by group over 220,000
        // memberships), five times.
        let mut times = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let req = Request::get(format!("/api/v1/dashboard?enterprise_id={}", e.0))
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap();
            let res = app.clone().oneshot(req).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            let body: serde_json::Value =
                serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
            times.push(started.elapsed().as_secs_f64());
            assert_eq!(body["total"], 110_000, "{body}");
            assert!(body["by_group"].as_array().is_some_and(|g| g.len() == 2), "{body}");
        }
        times.sort_by(f64::total_cmp);
        println!(
            "dashboard of one enterprise of 110,000 devices (by site, by group): median {:.1} ms (runs {:.1} to {:.1} ms)",
            times[2] * 1e3,
            times[0] * 1e3,
            times[4] * 1e3
        );

        // The export five times: each run and the median.
        let (mut rates, mut cpu_rates) = (Vec::new(), Vec::new());
        for run in 1..=5 {
            let started = Instant::now();
            let cpu = cpu_seconds();
            let req = Request::get(format!("/api/v1/devices/export?enterprise_id={}", e.0))
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap();
            let res = app.clone().oneshot(req).await.unwrap();
            let mut body = res.into_body();
            let (mut bytes, mut lines) = (0usize, 0usize);
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    bytes += data.len();
                    lines += data.iter().filter(|&&b| b == b'\n').count();
                }
            }
            let took = started.elapsed();
            let cpu = cpu_seconds() - cpu;
            let rows = lines - 1;
            assert_eq!(rows, 110_000);
            let rate = rows as f64 / took.as_secs_f64();
            println!(
                "export run {run} of {rows} devices ({:.1} MiB): {:.2} s ({rate:.0} rows/s), {cpu:.2} CPU s ({:.0} rows per CPU s)",
                bytes as f64 / 1_048_576.0,
                took.as_secs_f64(),
                rows as f64 / cpu,
            );
            rates.push(rate);
            cpu_rates.push(rows as f64 / cpu);
        }
        rates.sort_by(f64::total_cmp);
        cpu_rates.sort_by(f64::total_cmp);
        println!("export median: {:.0} rows/s, {:.0} rows per CPU s", rates[2], cpu_rates[2]);

        // What the count cost: every page of the export's query walked with the list's page
        // query (counting the matches each page) and without (scan_devices), three times each.
        let query = DeviceQuery { enterprises: Some(vec![e]), ..DeviceQuery::default() };
        for counted in [true, false] {
            let (mut times, mut cpus) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                let started = Instant::now();
                let cpu = cpu_seconds();
                let (mut cursor, mut rows) = (None, 0);
                loop {
                    let page = DevicePageRequest { cursor, limit: MAX_DEVICE_PAGE };
                    let found = if counted {
                        entities.query_devices(query.clone(), page).await.unwrap()
                    } else {
                        entities.scan_devices(query.clone(), page).await.unwrap()
                    };
                    rows += found.items.len();
                    cursor = found.next_cursor;
                    if cursor.is_none() {
                        break;
                    }
                }
                assert_eq!(rows, 110_000);
                times.push(started.elapsed().as_secs_f64());
                cpus.push(cpu_seconds() - cpu);
            }
            times.sort_by(f64::total_cmp);
            cpus.sort_by(f64::total_cmp);
            let what = if counted { "query_devices (with count)" } else { "scan_devices (no count)" };
            println!(
                "page walk, {what}: median {:.2} s ({:.0} rows/s), {:.2} CPU s ({:.0} rows per CPU s)",
                times[1],
                110_000.0 / times[1],
                cpus[1],
                110_000.0 / cpus[1]
            );
        }
    });
}
