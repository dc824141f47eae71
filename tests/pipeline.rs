//! End-to-end: the real `fleetpulse` binary on loopback, driven by the load tester and by bare
//! device connections. Nothing acknowledged may be lost, also across SIGKILL.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Api, RawDevice, TestServer, metric};
use fleetpulse_proto::close_code;
use fleetpulse_proto::wire::{Downlink, Heartbeat, Message, ResourceReport};

/// Heavy runs share two cores: one at a time.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_devices_stream_and_nothing_acknowledged_is_missing() {
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "");
    let mut cfg = server.load_config(1000, Duration::from_secs(12));
    cfg.rate_per_device = 1.0;
    cfg.heartbeat_interval_s = 5;
    cfg.connect_rate = 500;
    let report = fleetpulse_loadtest::run(cfg).await.expect("load test");
    println!("{}", serde_json::to_string(&report).unwrap());
    assert_eq!(report.connections.established, 1000, "every device connected");
    assert!(report.acked >= 9_000, "acked {} of sent {}", report.acked, report.sent);
    assert_eq!(report.acked, report.sent, "everything sent was acknowledged after the drain");
    assert_eq!(report.verified.missing, 0);
    assert_eq!(report.verified.duplicated, 0);
    assert!(report.verified.stored > 0);

    let api = Api::login(&server.api()).await;
    let devices = api.get(&format!("/api/v1/devices?enterprise_id={}&limit=1000", report.enterprise_id)).await;
    let items = devices["items"].as_array().expect("items");
    assert_eq!(items.len(), 1000);
    assert!(items.iter().all(|d| d["live"]["last_seq"].as_u64().unwrap_or(0) > 0), "live state per device");
    let metrics = api.metrics().await;
    assert!(metric(&metrics, "fleetpulse_store_rows_total") >= report.verified.stored as f64, "{metrics}");
    assert_eq!(metric(&metrics, "fleetpulse_devices_connected"), 0.0, "the load tester closed its connections");
}

/// `--mac-prefix` names a fleet again: its devices reconnect as the devices the server knows
/// (none is added), their numbering continues after the server's `last_seq`, and nothing of
/// either run is missing or stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_named_again_reconnects_as_the_devices_the_server_knows() {
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "");
    let api = Api::login(&server.api()).await;
    let enterprise = api.post("/api/v1/enterprises", serde_json::json!({ "name": "known fleet" })).await;
    let (id, credential) = (enterprise["id"].as_u64().unwrap(), enterprise["credential"].as_str().unwrap().to_owned());
    let mut cfg = server.load_config(50, Duration::from_secs(3));
    cfg.rate_per_device = 4.0;
    cfg.credential = Some((id, credential));
    let first = fleetpulse_loadtest::run(cfg.clone()).await.expect("first run");
    let prefix = u32::from_str_radix(&first.mac_prefix, 16).expect("the report names the fleet's prefix");
    cfg.mac_prefix = Some(prefix);
    let again = fleetpulse_loadtest::run(cfg).await.expect("second run");
    println!("{}\n{}", serde_json::to_string(&first).unwrap(), serde_json::to_string(&again).unwrap());
    assert_eq!(again.mac_prefix, first.mac_prefix);
    for (run, report) in [("first", &first), ("second", &again)] {
        assert_eq!(report.connections.established, 50, "{run} run");
        assert!(report.acked > 100 && report.acked == report.sent, "{run} run: {} of {}", report.acked, report.sent);
        let verified = (report.verified.missing, report.verified.duplicated, report.errors);
        assert_eq!(verified, (0, 0, 0), "{run} run: missing, duplicated, errors");
    }
    let devices = api.get(&format!("/api/v1/devices?enterprise_id={id}&limit=100")).await;
    let items = devices["items"].as_array().expect("items");
    assert_eq!(items.len(), 50, "the second run added no device");
    let stored: u64 = items.iter().map(|d| d["live"]["last_seq"].as_u64().unwrap_or(0)).sum();
    assert!(stored >= first.sent + again.sent, "numbering continued: {stored} < {} + {}", first.sent, again.sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_then_restart_loses_nothing_acknowledged() {
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), None, "");
    let ports = (server.quic_addr, server.http_addr);
    let mut cfg = server.load_config(300, Duration::from_secs(16));
    cfg.rate_per_device = 4.0;
    cfg.heartbeat_interval_s = 5;
    cfg.drain_timeout = Duration::from_secs(40);
    let run = tokio::spawn(fleetpulse_loadtest::run(cfg));
    tokio::time::sleep(Duration::from_secs(5)).await;
    server.kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restarted = TestServer::start(dir.path(), Some(ports), "");
    let report = run.await.unwrap().expect("load test");
    println!("{}", serde_json::to_string(&report).unwrap());
    assert!(report.connections.reconnects >= 300, "devices reconnected: {}", report.connections.reconnects);
    assert!(report.acked > 1000);
    assert_eq!(report.verified.missing, 0, "acknowledged messages lost across SIGKILL");
    assert_eq!(report.verified.duplicated, 0, "resent messages stored twice");
    drop(restarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_rejected_and_counted_while_others_carry_on() {
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "");
    let mut cfg = server.load_config(50, Duration::from_secs(4));
    cfg.bad_credential_devices = 7;
    cfg.rate_per_device = 5.0;
    let report = fleetpulse_loadtest::run(cfg).await.expect("load test");
    assert_eq!(report.connections.rejected_connections, 7);
    assert_eq!(report.connections.established, 50);
    assert_eq!(report.verified.missing, 0);
    assert!(report.acked > 500);
    let api = Api::login(&server.api()).await;
    assert_eq!(metric(&api.metrics().await, "fleetpulse_ingest_auth_failures_total"), 7.0);
}

/// A device that says Hello properly, for the protocol tests.
async fn good_device(server: &TestServer, credential: &str, mac: &str, interval: u32) -> RawDevice {
    let mut dev = RawDevice::connect(server).await;
    dev.send(&[RawDevice::hello(mac, credential, interval)]).await;
    match dev.next().await {
        Some(Downlink::Welcome(w)) => assert_eq!(w.last_seq, 0),
        other => panic!("expected Welcome, got {other:?}"),
    }
    dev
}

fn resource(seq: u64) -> fleetpulse_proto::wire::Uplink {
    RawDevice::data(
        seq,
        Message::ResourceReport(ResourceReport { cpu_centi_pct: 1234, mem_used_bytes: 1, mem_total_bytes: 2 }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_or_malformed_frames_close_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "");
    let api = Api::login(&server.api()).await;
    let (_, credential) = api.enterprise("frames").await;
    let mut good = good_device(&server, &credential, "00156500000a", 30).await;

    let mut big = good_device(&server, &credential, "00156500000b", 30).await;
    big.send_raw(&(10u32 << 20).to_le_bytes()).await;
    assert_eq!(big.closed_with().await, Some(u64::from(close_code::FRAME_TOO_LARGE)));

    let mut garbage = good_device(&server, &credential, "00156500000c", 30).await;
    let mut frame = 64u32.to_le_bytes().to_vec();
    frame.extend_from_slice(&[0xAB; 64]);
    garbage.send_raw(&frame).await;
    assert_eq!(garbage.closed_with().await, Some(u64::from(close_code::MALFORMED_FRAME)));

    // Data before Hello is a protocol violation.
    let mut early = RawDevice::connect(&server).await;
    early.send(&[resource(1)]).await;
    assert_eq!(early.closed_with().await, Some(u64::from(close_code::PROTOCOL_VIOLATION)));

    // The well-behaved device is unaffected: its frames are acknowledged, invalid content is
    // rejected alone, and a duplicate is acknowledged without being stored twice.
    let bad_cpu = RawDevice::data(
        2,
        Message::ResourceReport(ResourceReport { cpu_centi_pct: 20_000, mem_used_bytes: 1, mem_total_bytes: 2 }),
    );
    good.send(&[resource(1), bad_cpu, resource(3), resource(3)]).await;
    let mut acked = 0;
    let mut rejected = vec![];
    while acked < 3 {
        match good.next().await {
            Some(Downlink::Ack(a)) => acked = a.seq,
            Some(Downlink::Rejected(r)) => rejected.push(r.seq),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(rejected, vec![2]);
    let metrics = api.metrics().await;
    assert_eq!(metric(&metrics, "fleetpulse_ingest_duplicate_frames_total"), 1.0);
    assert!(metrics.contains("fleetpulse_ingest_connection_errors_total{reason=\"frame_too_large\"} 1"));
    assert!(metrics.contains("fleetpulse_ingest_connection_errors_total{reason=\"malformed_frame\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_devices_go_offline_raise_an_alarm_and_recover_on_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "[ingest]\nmissed_heartbeats = 1\n");
    let api = Api::login(&server.api()).await;
    let (enterprise, credential) = api.enterprise("offline").await;
    let mut dev = good_device(&server, &credential, "0015650000aa", 5).await;
    dev.send(&[RawDevice::data(1, Message::Heartbeat(Heartbeat { uptime_s: 1 }))]).await;
    assert!(matches!(dev.next().await, Some(Downlink::Ack(a)) if a.seq == 1));
    let device_id =
        api.get(&format!("/api/v1/devices?enterprise_id={enterprise}")).await["items"][0]["id"].as_u64().unwrap();
    assert_eq!(api.get(&format!("/api/v1/devices/{device_id}")).await["online"], true);

    // Silence: one missed 5 s interval makes it offline.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let view = api.get(&format!("/api/v1/devices/{device_id}")).await;
    assert_eq!(view["online"], false, "{view}");
    let alarms = api.get(&format!("/api/v1/alarms?device_id={device_id}")).await;
    assert_eq!(alarms["items"][0]["name"], "Offline");
    assert_eq!(alarms["items"][0]["status"], "active");

    // Reconnect: online again, the Offline alarm clears.
    drop(dev);
    let mut again = RawDevice::connect(&server).await;
    again.send(&[RawDevice::hello("0015650000aa", &credential, 5)]).await;
    assert!(matches!(again.next().await, Some(Downlink::Welcome(w)) if w.device_id == device_id));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(api.get(&format!("/api/v1/devices/{device_id}")).await["online"], true);
    let alarms = api.get(&format!("/api/v1/alarms?device_id={device_id}")).await;
    assert_eq!(alarms["items"][0]["status"], "cleared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_device_is_slowed_and_counted_while_others_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), None, "[ingest]\ndevice_rate = 100\ndevice_burst = 100\n");
    let api = Api::login(&server.api()).await;
    let (_, credential) = api.enterprise("flood").await;
    let mut flood = good_device(&server, &credential, "0015650000f1", 30).await;
    let mut calm = good_device(&server, &credential, "0015650000f2", 30).await;

    // 600 frames at once: six times the burst. They are all acknowledged, just not at once.
    let frames: Vec<_> = (1..=600).map(resource).collect();
    let started = std::time::Instant::now();
    flood.send(&frames).await;
    // Meanwhile the calm device is answered promptly.
    let calm_started = std::time::Instant::now();
    calm.send(&[resource(1)]).await;
    assert!(matches!(calm.next().await, Some(Downlink::Ack(a)) if a.seq == 1));
    let calm_latency = calm_started.elapsed();
    let mut acked = 0;
    while acked < 600 {
        match flood.next().await {
            Some(Downlink::Ack(a)) => acked = a.seq,
            other => panic!("unexpected {other:?}"),
        }
    }
    let flood_time = started.elapsed();
    assert!(flood_time >= Duration::from_secs(4), "600 frames at 100/s after a burst of 100: {flood_time:?}");
    assert!(calm_latency < Duration::from_secs(1), "the calm device waited {calm_latency:?}");
    let metrics = api.metrics().await;
    assert!(metric(&metrics, "fleetpulse_ingest_rate_limited_total{scope=\"device\"}") >= 1.0, "{metrics}");

    // SIGTERM: a clean exit.
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_reach_the_device_list_within_seconds() {
    use fleetpulse_proto::wire::{CallStatus, IpAddress, SipLine, SipState, StatusChange};
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, "");
    let api = Api::login(&server.api()).await;
    let (enterprise, credential) = api.enterprise("snapshots").await;
    let mut dev = good_device(&server, &credential, "0015650000c1", 30).await;
    let status = StatusChange {
        lines: vec![
            SipLine { line: 1, account: "1001@pbx".into(), state: SipState::Registered },
            SipLine { line: 2, account: "1002@pbx".into(), state: SipState::Unregistered },
        ],
        call_status: CallStatus::InCall,
        firmware: "96.86.0.100".into(),
        public_ip: Some(IpAddress::V4([203, 0, 113, 77])),
        private_ip: Some(IpAddress::V4([10, 1, 2, 3])),
        uptime_s: 4_242,
        last_reboot_ms: Some(1_700_000_000_000),
    };
    dev.send(&[
        RawDevice::data(1, Message::StatusChange(status)),
        RawDevice::data(2, Message::Heartbeat(Heartbeat { uptime_s: 1 })),
    ])
    .await;
    let mut acked = 0;
    while acked < 2 {
        match dev.next().await {
            Some(Downlink::Ack(a)) => acked = a.seq,
            other => panic!("unexpected {other:?}"),
        }
    }
    // The snapshot writer flushes at least every second.
    let query =
        format!("/api/v1/devices?enterprise_id={enterprise}&online=true&public_ip=203.0.113.&sip_status=partial");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let page = loop {
        let page = api.get(&query).await;
        if page["total"] == 1 || std::time::Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(page["total"], 1, "{page}");
    let item = &page["items"][0];
    assert_eq!(
        (&item["firmware"], &item["private_ip"], &item["call_status"]),
        (&serde_json::json!("96.86.0.100"), &serde_json::json!("10.1.2.3"), &serde_json::json!("in_call"))
    );
    let detail = api.get(&format!("/api/v1/devices/{}", item["id"])).await;
    assert_eq!(detail["status"]["sip_registration"][1]["state"], "unregistered", "{detail}");
    assert_eq!(detail["status"]["uptime_s"], 4_242);
    let metrics = api.metrics().await;
    assert!(metric(&metrics, "fleetpulse_ingest_snapshot_updates_total") >= 1.0, "{metrics}");
    let dashboard = api.get(&format!("/api/v1/dashboard?enterprise_id={enterprise}")).await;
    assert_eq!((&dashboard["total"], &dashboard["online"]), (&serde_json::json!(1), &serde_json::json!(1)));
}
