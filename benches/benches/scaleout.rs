//! The scale-out store against a real ClickHouse 18.16 started for the run:
//! - `clickhouse_insert`: the same 10,000 resource rows inserted by the raw `clickhouse` crate and
//!   by fleetpulse's writer (`ClickHouseEvents::append`), in the same run (their ratio is the
//!   SPEC's "writer vs raw client" figure);
//! - `spool_append`: a 10,000-row batch made durable in the spool (encode + write + fsync);
//! - after criterion (only with `--bench`): acknowledged → visible latency through the spool and
//!   the drainer, and the drain rate of a backlog.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use fleetpulse_proto::domain::ResourceSample;
use fleetpulse_proto::{DeviceId, EnterpriseId, UnixMillis};
use fleetpulse_store::clickhouse::{ClickHouseConfig, ClickHouseEvents};
use fleetpulse_store::scaleout::SpooledEvents;
use fleetpulse_store::spool::{Spool, SpoolConfig};
use fleetpulse_store::{EventBatch, EventStore, ResourceEvent};
use fleetpulse_testkit::clickhouse::ClickHouseServer;

const ROWS: u64 = 10_000;

#[derive(clickhouse::Row, serde::Serialize)]
struct RawResourceRow {
    enterprise_id: u64,
    device_id: u64,
    seq: u64,
    at_ms: i64,
    cpu_centi_pct: u16,
    mem_used: u64,
    mem_total: u64,
}

fn events(device: u64, start: u64, rows: u64) -> Vec<ResourceEvent> {
    (0..rows)
        .map(|i| ResourceEvent {
            device_id: DeviceId(device + i % 1000),
            enterprise_id: EnterpriseId(1),
            seq: start + i,
            at: UnixMillis(1_700_000_000_000 + (start + i) as i64),
            sample: ResourceSample { cpu_centi_pct: 4_200, mem_used_bytes: 1 << 28, mem_total_bytes: 1 << 30 },
        })
        .collect()
}

fn config(server: &ClickHouseServer, database: &str) -> ClickHouseConfig {
    ClickHouseConfig { url: server.url(), database: database.into(), user: None, password: None }
}

fn insert(c: &mut Criterion, rt: &tokio::runtime::Runtime, server: &ClickHouseServer) {
    let store = rt.block_on(ClickHouseEvents::connect(config(server, "bench_writer"))).expect("schema");
    let raw_schema = rt.block_on(ClickHouseEvents::connect(config(server, "bench_raw"))).expect("schema");
    drop(raw_schema);
    let raw = clickhouse::Client::default().with_url(server.url()).with_database("bench_raw").with_validation(false);
    let mut group = c.benchmark_group("clickhouse_insert");
    group.throughput(Throughput::Elements(ROWS));
    group.sample_size(20);
    let mut next = 1u64;
    group.bench_function("raw_client_10k_rows", |b| {
        b.iter(|| {
            next += ROWS;
            let rows = events(1, next, ROWS);
            rt.block_on(async {
                let mut insert = raw.insert::<RawResourceRow>("resource_reports").await.expect("insert");
                for e in &rows {
                    insert
                        .write(&RawResourceRow {
                            enterprise_id: e.enterprise_id.0,
                            device_id: e.device_id.0,
                            seq: e.seq,
                            at_ms: e.at.0,
                            cpu_centi_pct: e.sample.cpu_centi_pct,
                            mem_used: e.sample.mem_used_bytes,
                            mem_total: e.sample.mem_total_bytes,
                        })
                        .await
                        .expect("write");
                }
                insert.end().await.expect("end");
            })
        })
    });
    group.bench_function("fleetpulse_writer_10k_rows", |b| {
        b.iter(|| {
            next += ROWS;
            let batch = EventBatch { resources: events(1, next, ROWS), ..EventBatch::default() };
            rt.block_on(store.append(batch)).expect("append")
        })
    });
    group.finish();
}

fn spool_append(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(SpoolConfig { dir: dir.path().into(), ..SpoolConfig::default() }).expect("spool");
    let mut group = c.benchmark_group("spool_append");
    group.throughput(Throughput::Elements(ROWS));
    group.sample_size(20);
    let mut next = 1u64;
    group.bench_function("batch_10k_rows_fsync", |b| {
        b.iter(|| {
            next += ROWS;
            let batch = EventBatch { resources: events(1, next, ROWS), ..EventBatch::default() };
            let bytes = serde_json::to_vec(&batch).expect("encode");
            let id = rt.block_on(spool.append(bytes)).expect("append");
            spool.ack(id).expect("ack");
        })
    });
    group.finish();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Acknowledged (spooled) → visible in ClickHouse, and the drain rate of a backlog.
fn visibility(rt: &tokio::runtime::Runtime, server: &ClickHouseServer, samples: usize, backlog: u64) {
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = Arc::new(ClickHouseEvents::connect(config(server, "bench_visible")).await.expect("schema"));
        let spool = Spool::open(SpoolConfig { dir: dir.path().into(), ..SpoolConfig::default() }).expect("spool");
        let events_store = SpooledEvents::start(inner.clone(), spool).await.expect("spooled");
        let device = DeviceId(7);
        let mut latencies = Vec::with_capacity(samples);
        for i in 0..samples as u64 {
            let batch = EventBatch {
                resources: events(7, 1 + i * 100, 100)
                    .into_iter()
                    .map(|e| ResourceEvent { device_id: device, ..e })
                    .collect(),
                delivery: vec![(device, (i + 1) * 100)],
                ..EventBatch::default()
            };
            events_store.append(batch).await.expect("append");
            let acked = Instant::now();
            let want = (i + 1) * 100;
            loop {
                let seqs = inner.device_sequences(&[device]).await.expect("read");
                if seqs.first().is_some_and(|s| s.rows >= want) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            latencies.push(acked.elapsed());
        }
        latencies.sort();
        println!(
            "ack_to_visible: samples {samples}, p50 {:?}, p99 {:?}, max {:?}",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies[latencies.len() - 1]
        );

        // Backlog drain: spool `backlog` batches of 10k rows while the drainer works, then time until all are visible.
        let started = Instant::now();
        for b in 0..backlog {
            let batch = EventBatch { resources: events(10_000, 1_000_000 + b * ROWS, ROWS), ..EventBatch::default() };
            events_store.append(batch).await.expect("append");
        }
        let spooled = started.elapsed();
        while events_store.spool().stats().pending_records > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let drained = started.elapsed();
        let rows = (backlog * ROWS) as f64;
        println!(
            "spool: {rows} rows spooled at {:.0} rows/s; backlog drained to ClickHouse at {:.0} rows/s",
            rows / spooled.as_secs_f64(),
            rows / drained.as_secs_f64()
        );
    });
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = ClickHouseServer::start();
    let mut c = Criterion::default().configure_from_args();
    insert(&mut c, &rt, &server);
    spool_append(&mut c, &rt);
    c.final_summary();
    // Under `cargo test` (no --bench) this runs once, briefly, as a smoke test.
    visibility(&rt, &server, if benching { 200 } else { 3 }, if benching { 50 } else { 2 });
}
