//! End-to-end on the scale-out store: `fleetpulse serve --store clickhouse` with real ClickHouse
//! and PostgreSQL servers started by the test, driven by the load tester.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::alarms::{acked, alarm, device, emails, mail_config, strategy};
use common::{Api, RawDevice, TestServer, metric, scaleout_config};
use fleetpulse_proto::wire::{Message, ResourceReport};
use fleetpulse_testkit::clickhouse::ClickHouseServer;
use fleetpulse_testkit::postgres::PostgresServer;
use fleetpulse_testkit::smtp::SmtpServer;
use serde_json::json;

/// Heavy runs share two cores: one at a time.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_test_on_the_scaleout_store_misses_nothing() {
    let _heavy = HEAVY.lock().await;
    let (pg, ch) = (PostgresServer::start(), ClickHouseServer::start());
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, &scaleout_config(&pg, &ch, "e2e_basic"));
    let mut cfg = server.load_config(500, Duration::from_secs(10));
    cfg.rate_per_device = 2.0;
    cfg.heartbeat_interval_s = 5;
    let report = fleetpulse_loadtest::run(cfg).await.expect("load test");
    println!("{}", serde_json::to_string(&report).unwrap());
    assert_eq!(report.connections.established, 500);
    // Every frame sent is acknowledged and found; how many there are depends on the machine's
    // speed, which benchmarks measure, not this test.
    assert!(report.acked > 0, "acked {}", report.acked);
    assert_eq!(report.acked, report.sent);
    assert_eq!(report.verified.missing, 0);
    assert_eq!(report.verified.duplicated, 0);
    let metrics = Api::login(&server.api()).await.metrics().await;
    assert!(metric(&metrics, "fleetpulse_spool_drained_records_total") > 0.0, "{metrics}");
    assert_eq!(metric(&metrics, "fleetpulse_spool_pending_records"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clickhouse_outage_of_30_s_loses_nothing_and_memory_stays_bounded() {
    let _heavy = HEAVY.lock().await;
    let (pg, mut ch) = (PostgresServer::start(), ClickHouseServer::start());
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, &scaleout_config(&pg, &ch, "e2e_outage"));
    let mut cfg = server.load_config(300, Duration::from_secs(45));
    cfg.rate_per_device = 4.0;
    cfg.heartbeat_interval_s = 5;
    cfg.drain_timeout = Duration::from_secs(60);
    let run = tokio::spawn(fleetpulse_loadtest::run(cfg));
    tokio::time::sleep(Duration::from_secs(6)).await;
    ch.stop();
    let api = Api::login(&server.api()).await;
    let rows_at_outage = metric(&api.metrics().await, "fleetpulse_ingest_store_rows_total");
    let rss_at_outage = server.rss_kib();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let rss_after_outage = server.rss_kib();
    let rows_after_outage = metric(&api.metrics().await, "fleetpulse_ingest_store_rows_total");
    ch.restart();
    let report = run.await.unwrap().expect("load test");
    println!("{}", serde_json::to_string(&report).unwrap());
    println!("server RSS {rss_at_outage} KiB at the outage, {rss_after_outage} KiB 30 s later");
    // Appends, and with them acknowledgements, went on during the outage: the spool took the
    // batches (how many depends on the machine's speed, which this test does not judge).
    assert!(
        rows_after_outage > rows_at_outage,
        "no rows stored during the outage: {rows_at_outage} → {rows_after_outage}"
    );
    assert_eq!(report.verified.missing, 0, "acknowledged messages lost across a ClickHouse outage");
    assert_eq!(report.verified.duplicated, 0);
    assert!(
        rss_after_outage < rss_at_outage + 64 * 1024,
        "memory grew from {rss_at_outage} KiB to {rss_after_outage} KiB during the outage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_emails_on_the_scaleout_store_survive_a_restart_without_duplicates() {
    let _heavy = HEAVY.lock().await;
    let (pg, ch, smtp) = (PostgresServer::start(), ClickHouseServer::start(), SmtpServer::start());
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{}{}", scaleout_config(&pg, &ch, "e2e_alarms"), mail_config(&smtp, ""));
    let mut server = TestServer::start(dir.path(), None, &config);
    let ports = (server.quic_addr, server.http_addr);
    let api = Api::login(&server.api()).await;
    let (enterprise, credential) = api.enterprise("Scale Co").await;
    let rule = json!([{"metric": "cpu", "above_percent": 80.0, "for_minutes": 0}]);
    strategy(&api, enterprise, json!({"group_wait_ms": 1000, "thresholds": rule})).await;

    let mut first = device(&server, &credential, "0015650020a1").await;
    let mut second = device(&server, &credential, "0015650020a2").await;
    first.send(&[alarm(1, 105, true, "crash one")]).await;
    second.send(&[alarm(1, 105, true, "crash two")]).await;
    acked(&mut first, 1).await;
    acked(&mut second, 1).await;
    let got = emails(&smtp, 1, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].contains("Firing alarms for Scale Co: 2 alarms"), "{}", got[0]);

    // A threshold alarm: its record is written by the engine, through the spool into ClickHouse.
    let hot = ResourceReport { cpu_centi_pct: 9_500, mem_used_bytes: 1, mem_total_bytes: 4 };
    first.send(&[RawDevice::data(2, Message::ResourceReport(hot))]).await;
    acked(&mut first, 2).await;
    let got = emails(&smtp, 2, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 2);
    assert!(got[1].contains("High CPU usage"), "{}", got[1]);
    let path = format!("/api/v1/alarms?enterprise_id={enterprise}&status=active");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while api.get(&path).await["items"].as_array().unwrap().len() < 3 {
        assert!(std::time::Instant::now() < deadline, "three active records in ClickHouse");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // SIGKILL and restart: the active alarms come back from ClickHouse, the outbox from
    // PostgreSQL; nothing is sent twice.
    drop((first, second));
    server.kill9();
    let server = TestServer::start(dir.path(), Some(ports), &config);
    let api = Api::login(&server.api()).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(smtp.messages().len(), 2, "nothing sent twice after the restart");
    let metrics = api.metrics().await;
    assert_eq!(metric(&metrics, "fleetpulse_alarm_restored_total"), 3.0, "{metrics}");
    assert!(metric(&metrics, "fleetpulse_alarm_known_items_skipped_total") >= 3.0, "{metrics}");

    // The restored threshold alarm, cleared by hand, sends its resolution.
    let active = api.get(&format!("{path}&code=401")).await;
    let id = active["items"][0]["id"].as_u64().expect("the 401 record");
    api.post(&format!("/api/v1/alarms/{id}/clear"), json!({})).await;
    let got = emails(&smtp, 3, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 3);
    assert!(
        got[2].contains("Resolved alarms for Scale Co: 1 alarm") && got[2].contains("High CPU usage"),
        "{}",
        got[2]
    );
}
