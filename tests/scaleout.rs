//! End-to-end on the scale-out store: `fleetpulse serve --store clickhouse` with real ClickHouse
//! and PostgreSQL servers started by the test, driven by the load tester.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Api, TestServer, metric, scaleout_config};
use fleetpulse_testkit::clickhouse::ClickHouseServer;
use fleetpulse_testkit::postgres::PostgresServer;

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
    assert!(report.acked >= 8_000, "acked {}", report.acked);
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
    let rss_at_outage = server.rss_kib();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let rss_after_outage = server.rss_kib();
    ch.restart();
    let report = run.await.unwrap().expect("load test");
    println!("{}", serde_json::to_string(&report).unwrap());
    println!("server RSS {rss_at_outage} KiB at the outage, {rss_after_outage} KiB 30 s later");
    // Acknowledgements went on during the outage: the spool took the batches.
    assert!(report.acked >= 40_000, "acked {}", report.acked);
    assert_eq!(report.verified.missing, 0, "acknowledged messages lost across a ClickHouse outage");
    assert_eq!(report.verified.duplicated, 0);
    assert!(
        rss_after_outage < rss_at_outage + 64 * 1024,
        "memory grew from {rss_at_outage} KiB to {rss_after_outage} KiB during the outage"
    );
}
