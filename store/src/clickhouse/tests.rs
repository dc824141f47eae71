//! Behaviour of the ClickHouse event store against a real server (the testkit's shared
//! `clickhouse-server`, one database per test).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use fleetpulse_proto::domain::{
    AlarmChange, AlarmChangeKind, CallStatus, DeviceStatus, ResourceSample, SipLine, SipState,
};
use fleetpulse_proto::{AlarmTypeCode, EnterpriseId};
use fleetpulse_testkit::clickhouse::ClickHouseServer;

use super::*;

static NEXT_DATABASE: AtomicU32 = AtomicU32::new(0);

fn config(url: String) -> ClickHouseConfig {
    let n = NEXT_DATABASE.fetch_add(1, Ordering::Relaxed);
    ClickHouseConfig {
        url,
        database: format!("fleetpulse_test_{}_{n}", std::process::id()),
        user: None,
        password: None,
    }
}

/// A store on a fresh database of the shared server.
async fn fresh() -> ClickHouseEvents {
    connect(config(ClickHouseServer::shared().url())).await.expect("connect to the shared ClickHouse")
}

/// Another store on the same database: same data, cold record cache.
async fn reopen(store: &ClickHouseEvents) -> ClickHouseEvents {
    let url = ClickHouseServer::shared().url();
    connect(ClickHouseConfig { url, database: store.database().to_owned(), user: None, password: None })
        .await
        .expect("reconnect")
}

const E: EnterpriseId = EnterpriseId(1);
const D: DeviceId = DeviceId(42);
/// 2024-01-02T03:04:05.678Z.
const T: i64 = 1_704_164_645_678;

fn status(d: DeviceId, seq: u64) -> StatusEvent {
    StatusEvent {
        device_id: d,
        enterprise_id: E,
        seq,
        at: UnixMillis(T + seq as i64),
        status: DeviceStatus {
            lines: vec![
                SipLine { line: 1, account: "1001@pbx".into(), state: SipState::Registered },
                SipLine { line: 2, account: "1002@pbx".into(), state: SipState::Unregistered },
            ],
            call_status: CallStatus::InCall,
            firmware: "66.86.0.15".into(),
            public_ip: Some("203.0.113.7".parse().expect("ip")),
            private_ip: Some("fd00::7".parse().expect("ip")),
            uptime_s: 3_600,
            last_reboot: Some(UnixMillis(T - 3_600_000)),
        },
    }
}

fn resource(d: DeviceId, seq: u64, at: i64) -> ResourceEvent {
    ResourceEvent {
        device_id: d,
        enterprise_id: E,
        seq,
        at: UnixMillis(at),
        sample: ResourceSample { cpu_centi_pct: 1234, mem_used_bytes: 512 << 20, mem_total_bytes: 1 << 30 },
    }
}

fn alarm(d: DeviceId, seq: u64, code: u16, log: Option<Vec<u8>>) -> AlarmEvent {
    AlarmEvent {
        device_id: d,
        enterprise_id: E,
        seq,
        at: UnixMillis(T + seq as i64),
        code: AlarmTypeCode(code),
        clear: false,
        description: format!("alarm {code}"),
        log,
    }
}

fn raise(d: DeviceId, code: u16, at: i64, description: &str) -> AlarmChange {
    AlarmChange {
        device_id: d,
        enterprise_id: E,
        code: AlarmTypeCode(code),
        at: UnixMillis(at),
        kind: AlarmChangeKind::Raise { description: description.into() },
    }
}

fn clear(d: DeviceId, code: u16, at: i64) -> AlarmChange {
    AlarmChange {
        device_id: d,
        enterprise_id: E,
        code: AlarmTypeCode(code),
        at: UnixMillis(at),
        kind: AlarmChangeKind::Clear,
    }
}

fn changes(changes: Vec<AlarmChange>, mark: Option<(DeviceId, u64)>) -> EventBatch {
    EventBatch { alarm_changes: changes, delivery: mark.into_iter().collect(), ..EventBatch::default() }
}

/// A batch with every kind of row, for device `D`, seqs 1..=4 plus a derived (seq 0) alarm.
fn full_batch() -> EventBatch {
    EventBatch {
        status: vec![status(D, 1)],
        resources: vec![resource(D, 2, T + 2)],
        alarms: vec![alarm(D, 3, 105, Some(vec![0, 159, 146, 150, 0xff, b'\n'])), alarm(D, 0, 109, None)],
        alarm_changes: vec![raise(D, 105, T + 3, "crash"), raise(D, 109, T + 4, "offline")],
        delivery: vec![(D, 3)],
    }
}

async fn record(store: &ClickHouseEvents, device: DeviceId, code: u16) -> Option<AlarmRecord> {
    let page = store
        .list_alarm_records(
            AlarmFilter { enterprise: None, device: Some(device), ..AlarmFilter::default() },
            Page::first(100),
        )
        .await
        .expect("list records");
    page.into_iter().find(|r| r.code == AlarmTypeCode(code))
}

#[tokio::test]
async fn every_kind_of_row_reads_back_as_written() {
    let store = fresh().await;
    let batch = full_batch();
    store.append(batch.clone()).await.expect("append");

    let status: Vec<StatusRow> =
        store.client.query("SELECT ?fields FROM status_events FINAL").fetch_all().await.expect("status rows");
    assert_eq!(status, vec![StatusRow::from_event(&batch.status[0]).expect("row")]);
    assert_eq!(status[0].sip_summary, "partial");
    assert_eq!(status[0].call_status, "in_call");
    let lines: Vec<SipLine> = serde_json::from_str(&status[0].lines).expect("lines are JSON");
    assert_eq!(lines, batch.status[0].status.lines);

    let resources: Vec<ResourceRow> =
        store.client.query("SELECT ?fields FROM resource_reports FINAL").fetch_all().await.expect("resource rows");
    assert_eq!(resources, vec![ResourceRow::from_event(&batch.resources[0])]);
    let at: u32 = store.client.query("SELECT toUInt32(at) FROM resource_reports").fetch_one().await.expect("at");
    assert_eq!(i64::from(at), (T + 2) / 1000, "the partitioning time is derived from at_ms");

    let alarms: Vec<AlarmEventRow> = store
        .client
        .query("SELECT ?fields FROM alarm_events FINAL ORDER BY seq DESC")
        .fetch_all()
        .await
        .expect("alarm rows");
    assert_eq!(alarms, batch.alarms.iter().map(AlarmEventRow::from_event).collect::<Vec<_>>(), "log bytes kept");

    assert_eq!(
        store.event_counts().await.expect("counts"),
        EventCounts { status: 1, resources: 1, alarms: 2, alarm_records: 2 }
    );
    assert_eq!(store.last_seq(D).await.expect("mark"), 3);
    let seqs = store.device_sequences(&[D, DeviceId(7)]).await.expect("sequences");
    assert_eq!(
        seqs,
        vec![
            DeviceSequences { device_id: D, rows: 3, ranges: vec![(1, 3)] },
            DeviceSequences { device_id: DeviceId(7), rows: 0, ranges: vec![] },
        ]
    );
    let crash = record(&store, D, 105).await.expect("record of 105");
    assert_eq!(crash.id, (42 << 16) | 105);
    assert_eq!((crash.name, crash.count, crash.status), ("Application crash", 1, AlarmStatus::Active));
}

#[tokio::test]
async fn alarm_records_aggregate_raises_and_clears_like_the_embedded_store() {
    let store = fresh().await;
    store.append(changes(vec![raise(D, 102, 10, "first")], Some((D, 1)))).await.expect("raise");
    store.append(changes(vec![raise(D, 102, 5, "second")], Some((D, 2)))).await.expect("raise again");
    let r = record(&store, D, 102).await.expect("record");
    assert_eq!((r.count, r.first_at, r.latest_at), (2, UnixMillis(10), UnixMillis(10)), "latest_at is the max");
    assert_eq!((r.description.as_str(), r.status, r.cleared_at), ("second", AlarmStatus::Active, None));

    store.append(changes(vec![clear(D, 102, 20)], Some((D, 3)))).await.expect("clear");
    store.append(changes(vec![clear(D, 102, 30)], Some((D, 4)))).await.expect("clear a cleared record");
    let r = record(&store, D, 102).await.expect("record");
    assert_eq!((r.count, r.status, r.cleared_at), (2, AlarmStatus::Cleared, Some(UnixMillis(20))));

    // A clear without a record creates nothing.
    store.append(changes(vec![clear(D, 301, 20)], None)).await.expect("clear of nothing");
    assert!(record(&store, D, 301).await.is_none());

    // A cold cache continues from the stored state.
    let cold = reopen(&store).await;
    cold.append(changes(vec![raise(D, 102, 40, "third")], Some((D, 5)))).await.expect("raise after clear");
    let r = record(&cold, D, 102).await.expect("record");
    assert_eq!((r.count, r.latest_at, r.status, r.cleared_at), (3, UnixMillis(40), AlarmStatus::Active, None));
    assert_eq!(r.first_at, UnixMillis(10));
    assert_eq!(cold.event_counts().await.expect("counts").alarm_records, 1);
}

#[tokio::test]
async fn a_batch_appended_again_is_not_counted_twice() {
    let store = fresh().await;
    let batch = full_batch();
    store.append(batch.clone()).await.expect("append");
    let counts = store.event_counts().await.expect("counts");
    let seqs = store.device_sequences(&[D]).await.expect("sequences");

    // The retry of a batch whose outcome was unknown: same process, then a restarted one.
    store.append(batch.clone()).await.expect("append again");
    reopen(&store).await.append(batch.clone()).await.expect("append again, cold cache");
    assert_eq!(store.event_counts().await.expect("counts"), counts);
    assert_eq!(store.device_sequences(&[D]).await.expect("sequences"), seqs);
    assert_eq!(seqs[0].rows, 3);
    assert_eq!(record(&store, D, 105).await.expect("record").count, 1);
    assert_eq!(record(&store, D, 109).await.expect("record").count, 1);
    // Raw (unmerged) rows are there twice or more: FINAL does the deduplication.
    let raw: u64 = store.client.query("SELECT count() FROM resource_reports").fetch_one().await.expect("raw");
    assert!(raw >= 2, "expected duplicate raw rows, got {raw}");

    // A batch that failed after its records were stored (the later inserts failed): the retry
    // finds the new states and skips them.
    let next = EventBatch {
        resources: vec![resource(D, 4, T + 4)],
        alarm_changes: vec![raise(D, 105, T + 5, "crash again"), clear(D, 109, T + 5)],
        delivery: vec![(D, 4)],
        ..EventBatch::default()
    };
    {
        let groups = records::group(&next).expect("group");
        let mut cache = store.records.lock().await;
        let states = store.next_states(&mut cache, &groups).await.expect("states");
        let rows = states.iter().map(AlarmRecordRow::from_state).collect();
        store.insert_rows("alarm_records", rows).await.expect("records only");
        groups.iter().for_each(|g| cache.remove(g.id));
    }
    store.append(next.clone()).await.expect("retry");
    let crash = record(&store, D, 105).await.expect("record");
    assert_eq!((crash.count, crash.description.as_str()), (2, "crash again"));
    assert_eq!(record(&store, D, 109).await.expect("record").status, AlarmStatus::Cleared);
    assert_eq!(store.device_sequences(&[D]).await.expect("sequences")[0].ranges, vec![(1, 4)]);
    assert_eq!(store.last_seq(D).await.expect("mark"), 4);
}

#[tokio::test]
async fn last_seq_is_the_highest_mark_ever_appended() {
    let store = fresh().await;
    assert_eq!(store.last_seq(D).await.expect("none"), 0);
    store.append(changes(vec![], Some((D, 5)))).await.expect("mark 5");
    store.append(changes(vec![], Some((D, 3)))).await.expect("mark 3");
    assert_eq!(store.last_seq(D).await.expect("max"), 5);
    store.append(EventBatch { delivery: vec![(D, 9), (DeviceId(43), 2)], ..EventBatch::default() }).await.expect("9");
    assert_eq!(store.last_seq(D).await.expect("max"), 9);
    assert_eq!(store.last_seq(DeviceId(43)).await.expect("other"), 2);
    assert_eq!(store.last_seq(DeviceId(44)).await.expect("unknown"), 0);
}

#[tokio::test]
async fn alarm_records_page_by_id_with_filters() {
    let store = fresh().await;
    let other = EnterpriseId(2);
    let mut batch = changes(vec![], None);
    for (d, code) in [(1, 101), (1, 202), (2, 101), (2, 105), (3, 301)] {
        batch.alarm_changes.push(raise(DeviceId(d), code, T, "x"));
    }
    batch.alarm_changes.push(AlarmChange { enterprise_id: other, ..raise(DeviceId(9), 101, T, "elsewhere") });
    store.append(batch).await.expect("append");

    let mut ids = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .list_alarm_records(
                AlarmFilter { enterprise: Some(E), device: None, ..AlarmFilter::default() },
                Page { after, limit: 2 },
            )
            .await
            .expect("page");
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = last.id;
        ids.extend(page.iter().map(|r| (r.device_id.0, r.code.0)));
    }
    assert_eq!(ids, vec![(1, 101), (1, 202), (2, 101), (2, 105), (3, 301)]);

    let all = store.list_alarm_records(AlarmFilter::default(), Page::first(100)).await.expect("all");
    assert_eq!(all.len(), 6);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "ordered by id");
    let device2 = AlarmFilter { enterprise: Some(E), device: Some(DeviceId(2)), ..AlarmFilter::default() };
    let records = store.list_alarm_records(device2, Page::first(100)).await.expect("device 2");
    assert_eq!(records.iter().map(|r| r.code.0).collect::<Vec<_>>(), vec![101, 105]);
    let elsewhere = AlarmFilter { enterprise: Some(other), device: None, ..AlarmFilter::default() };
    assert_eq!(store.list_alarm_records(elsewhere, Page::first(100)).await.expect("other").len(), 1);
    assert!(store.list_alarm_records(AlarmFilter::default(), Page::first(0)).await.expect("limit 0").is_empty());
}

#[tokio::test]
async fn retention_drops_only_partitions_older_than_the_cutoff() {
    let store = fresh().await;
    const DAY: i64 = 86_400_000;
    // 2020-01-01, 2020-01-02 (two rows), 2020-01-03, all UTC noon.
    let noon = 1_577_880_000_000;
    let batch = EventBatch {
        resources: vec![
            resource(D, 1, noon),
            resource(D, 2, noon + DAY),
            resource(D, 3, noon + DAY + 1),
            resource(D, 4, noon + 2 * DAY),
        ],
        alarms: vec![alarm(D, 5, 101, None)],
        ..EventBatch::default()
    };
    store.append(batch).await.expect("append");

    // A cutoff inside 2020-01-02 keeps that day: only 2020-01-01 ends before it.
    let cutoff = UnixMillis(noon + DAY);
    assert_eq!(store.drop_partitions_older_than("resource_reports", cutoff).await.expect("drop"), 1);
    assert_eq!(store.device_sequences(&[D]).await.expect("seqs")[0].ranges, vec![(2, 5)]);
    assert_eq!(store.drop_partitions_older_than("resource_reports", cutoff).await.expect("again"), 0);
    // The alarm (2024) is untouched by a cutoff in 2020, and other tables are not affected.
    assert_eq!(store.drop_partitions_older_than("alarm_events", cutoff).await.expect("alarms"), 0);
    assert_eq!(store.event_counts().await.expect("counts").alarms, 1);
    assert!(store.drop_partitions_older_than("delivery_marks", cutoff).await.is_err());
    assert!(store.drop_partitions_older_than("x; DROP DATABASE y", cutoff).await.is_err());
}

#[tokio::test]
async fn migrations_apply_once_and_refuse_newer_databases() {
    let store = fresh().await;
    let again = reopen(&store).await;
    let versions: Vec<u32> =
        again.client.query("SELECT version FROM schema_version FINAL").fetch_all().await.expect("versions");
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    again
        .client
        .query("INSERT INTO schema_version (version, applied_at) VALUES (?, now())")
        .bind(SCHEMA_VERSION + 1)
        .execute()
        .await
        .expect("bump");
    let url = ClickHouseServer::shared().url();
    let newer =
        connect(ClickHouseConfig { url, database: store.database().to_owned(), user: None, password: None }).await;
    assert!(matches!(newer, Err(StoreError::Migration { .. })), "{newer:?}");
    let bad = connect(ClickHouseConfig { database: "a-b".into(), ..config(String::new()) }).await;
    assert!(bad.is_err());
}

#[tokio::test]
async fn appends_fail_while_the_server_is_down_and_resume_after_restart() {
    let mut server = ClickHouseServer::start();
    let store = connect(config(server.url())).await.expect("connect");
    store.append(full_batch()).await.expect("append");
    server.stop();
    let next = EventBatch {
        resources: vec![resource(D, 4, T + 4)],
        alarm_changes: vec![raise(D, 105, T + 5, "again")],
        delivery: vec![(D, 4)],
        ..EventBatch::default()
    };
    assert!(store.append(next.clone()).await.is_err(), "append with the server down");
    assert!(store.last_seq(D).await.is_err());
    server.restart();
    store.append(next).await.expect("retry after restart");
    assert_eq!(store.last_seq(D).await.expect("mark"), 4);
    assert_eq!(record(&store, D, 105).await.expect("record").count, 2);
    assert_eq!(store.device_sequences(&[D]).await.expect("seqs")[0].ranges, vec![(1, 4)]);
}

/// Not a benchmark with assertions: prints the insert rate of 10k-row resource batches.
#[tokio::test]
async fn resource_batch_throughput() {
    let store = fresh().await;
    const BATCHES: u64 = 10;
    const ROWS: u64 = 10_000;
    let batches: Vec<EventBatch> = (0..BATCHES)
        .map(|b| EventBatch {
            resources: (0..ROWS)
                .map(|i| {
                    let device = DeviceId(1 + i % 1_000);
                    let seq = b * ROWS + i + 1;
                    resource(device, seq, T + seq as i64)
                })
                .collect(),
            delivery: (0..1_000).map(|d| (DeviceId(1 + d), (b + 1) * ROWS)).collect(),
            ..EventBatch::default()
        })
        .collect();
    let started = Instant::now();
    for batch in batches {
        store.append(batch).await.expect("append");
    }
    let elapsed = started.elapsed();
    let rows = BATCHES * ROWS;
    println!(
        "clickhouse: appended {rows} resource rows in {BATCHES} batches of {ROWS} in {elapsed:?}: {:.0} rows/s",
        rows as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(store.event_counts().await.expect("counts").resources, rows);
}
