//! Behaviour of the embedded store against a real SQLite file in a temp directory.

use super::events::{ALARM_LOG_SQL, DEVICE_SEQUENCES_SQL, RESOURCE_HISTORY_SQL, latest_alarm_records_sql};
use super::oplog::operation_log_sql;
use super::outbox::{due_outbox_sql, except_slots};
use super::*;
use fleetpulse_proto::domain::{AlarmChange, CallStatus, DeviceStatus, ResourceSample};
use fleetpulse_proto::domain::{AlarmChangeKind, DeviceKey};
use fleetpulse_proto::{AccountId, DeviceId, EnterpriseId, FileId, Mac, UnixMillis};
use rusqlite::params;

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir, EmbeddedConfig { fsync: false, ..EmbeddedConfig::default() }).expect("open store")
}

async fn enterprise(store: &EmbeddedStore, name: &str) -> Enterprise {
    store
        .create_enterprise(NewEnterprise {
            profile: Default::default(),
            name: name.into(),
            credential: format!("cred-{name}"),
            channel_id: None,
        })
        .await
        .expect("create enterprise")
}

fn new_device(e: EnterpriseId, mac: &str) -> NewDevice {
    NewDevice {
        enterprise_id: e,
        key: DeviceKey::Mac(Mac::parse(mac).expect("mac")),
        serial: None,
        model: "T54W".into(),
        firmware: "1.0".into(),
        at: UnixMillis(1),
    }
}

fn resource(d: DeviceId, e: EnterpriseId, seq: u64) -> ResourceEvent {
    ResourceEvent {
        device_id: d,
        enterprise_id: e,
        seq,
        at: UnixMillis(seq as i64),
        sample: ResourceSample { cpu_centi_pct: 100, mem_used_bytes: 1, mem_total_bytes: 2 },
    }
}

#[tokio::test]
async fn devices_are_auto_added_once_and_never_cross_enterprises() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let a = enterprise(&store, "a").await;
    let b = enterprise(&store, "b").await;
    let first = store.register_device(new_device(a.id, "001565000001")).await.expect("register");
    assert!(first.created);
    let again = store.register_device(new_device(a.id, "001565000001")).await.expect("again");
    assert_eq!((again.created, again.device.id), (false, first.device.id));
    let mut upgraded = new_device(a.id, "001565000001");
    upgraded.firmware = "2.0".into();
    let upgraded = store.register_device(upgraded).await.expect("firmware change");
    assert_eq!(upgraded.device.firmware, "2.0");
    assert!(matches!(store.register_device(new_device(b.id, "001565000001")).await, Err(StoreError::DeviceConflict)));
    assert_eq!(store.list_devices(Some(b.id), Page::first(10)).await.expect("list").len(), 0);
    assert_eq!(store.enterprise_by_credential("cred-b").await.expect("lookup").map(|e| e.id), Some(b.id));
}

#[tokio::test]
async fn appended_events_survive_reopen_with_marks_and_sequences() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_e, d) = {
        let store = open(dir.path());
        let e = enterprise(&store, "a").await;
        let d = store.register_device(new_device(e.id, "001565000002")).await.expect("register").device.id;
        let status = StatusEvent {
            device_id: d,
            enterprise_id: e.id,
            seq: 3,
            at: UnixMillis(3),
            status: DeviceStatus {
                lines: vec![],
                call_status: CallStatus::Idle,
                firmware: "1".into(),
                public_ip: Some("203.0.113.1".parse().expect("ip")),
                private_ip: None,
                uptime_s: 5,
                last_reboot: None,
            },
        };
        let batch = EventBatch {
            status: vec![status],
            resources: vec![resource(d, e.id, 1), resource(d, e.id, 2), resource(d, e.id, 2), resource(d, e.id, 7)],
            delivery: vec![(d, 7)],
            ..EventBatch::default()
        };
        store.append(batch).await.expect("append");
        // A lower mark never moves the delivery mark back.
        store.append(EventBatch { delivery: vec![(d, 4)], ..EventBatch::default() }).await.expect("append mark");
        (e, d)
    };
    let store = open(dir.path());
    assert_eq!(store.last_seq(d).await.expect("last seq"), 7);
    let seqs = store.device_sequences(&[d]).await.expect("sequences");
    assert_eq!(seqs.len(), 1);
    assert_eq!((seqs[0].rows, seqs[0].ranges.clone()), (5, vec![(1, 3), (7, 7)]));
    let counts = store.event_counts().await.expect("counts");
    assert_eq!((counts.status, counts.resources), (1, 4));
}

#[tokio::test]
async fn alarm_records_aggregate_per_device_and_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let e = enterprise(&store, "a").await;
    let d = store.register_device(new_device(e.id, "001565000003")).await.expect("register").device.id;
    let change = |at, kind| AlarmChange {
        device_id: d,
        enterprise_id: e.id,
        code: fleetpulse_proto::alarm_types::OFFLINE,
        at: UnixMillis(at),
        kind,
    };
    let raise = |at, text: &str| change(at, AlarmChangeKind::Raise { description: text.into() });
    store
        .append(EventBatch { alarm_changes: vec![raise(10, "first"), raise(20, "second")], ..EventBatch::default() })
        .await
        .expect("raise");
    store
        .append(EventBatch { alarm_changes: vec![change(30, AlarmChangeKind::Clear)], ..EventBatch::default() })
        .await
        .expect("clear");
    let records = store
        .list_alarm_records(
            AlarmFilter { enterprise: Some(e.id), device: None, ..AlarmFilter::default() },
            Page::first(10),
        )
        .await
        .expect("list");
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(
        (r.first_at, r.latest_at, r.count, r.description.as_str()),
        (UnixMillis(10), UnixMillis(20), 2, "second")
    );
    assert_eq!((r.name, r.status, r.cleared_at), ("Offline", AlarmStatus::Cleared, Some(UnixMillis(30))));
    let other = store
        .list_alarm_records(
            AlarmFilter { enterprise: Some(EnterpriseId(999)), device: None, ..AlarmFilter::default() },
            Page::first(10),
        )
        .await;
    assert!(other.expect("list").is_empty());
}

#[tokio::test]
async fn a_failing_job_is_rolled_back_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open(dir.path()));
    let account = |email: &str| NewAccount {
        parent_id: None,
        permissions: None,
        email: email.into(),
        password_hash: "h".into(),
        role: Role::PlatformAdmin,
        channel_id: None,
        enterprise_id: None,
        must_change_password: false,
    };
    store.create_account(account("a@example.com")).await.expect("first");
    // Submit a duplicate and a good one concurrently so they likely share a group commit.
    let (dup, ok) =
        tokio::join!(store.create_account(account("A@example.com")), store.create_account(account("b@example.com")));
    assert!(matches!(dup, Err(StoreError::AlreadyExists("email"))));
    assert_eq!(ok.expect("second").email, "b@example.com");
    assert_eq!(store.count_accounts(Role::PlatformAdmin).await.expect("count"), 2);
}

/// SQLite's plan of the statement with these values, its steps joined by "; ".
fn query_plan(conn: &Connection, sql: &str, values: &[SqlValue]) -> String {
    let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).expect("explain");
    let rows = st
        .query_map(rusqlite::params_from_iter(values.iter()), |r| r.get::<_, String>(3))
        .expect("plan")
        .collect::<rusqlite::Result<Vec<_>>>()
        .expect("plan rows");
    rows.join("; ")
}

#[tokio::test]
async fn the_latest_alarms_feed_reads_an_index_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _store = open(dir.path());
    let conn = Connection::open(dir.path().join(DB_FILE)).expect("open");
    let plan = |filter: AlarmFilter| {
        let (sql, values) = latest_alarm_records_sql(&filter, 50).expect("valid").expect("a query");
        query_plan(&conn, &sql, &values)
    };
    let all = plan(AlarmFilter::default());
    assert!(all.contains("USING INDEX alarm_records_latest") && !all.contains("TEMP B-TREE"), "{all}");
    let active = plan(AlarmFilter { status: Some(AlarmStatus::Active), ..AlarmFilter::default() });
    assert!(active.contains("USING INDEX alarm_records_latest") && !active.contains("TEMP B-TREE"), "{active}");
    let one = plan(AlarmFilter { enterprise: Some(EnterpriseId(1)), ..AlarmFilter::default() });
    assert!(
        one.contains("USING INDEX alarm_records_enterprise (enterprise_id=?)") && !one.contains("TEMP B-TREE"),
        "{one}"
    );
    assert!(latest_alarm_records_sql(&AlarmFilter::default(), 0).expect("valid").is_none());
}

#[tokio::test]
async fn reads_by_device_walk_one_index_without_a_sort() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _store = open(dir.path());
    let conn = Connection::open(dir.path().join(DB_FILE)).expect("open");
    let values = |n: usize| (0..n).map(|i| Box::new(i as i64 + 1) as SqlValue).collect::<Vec<_>>();
    let sequences = query_plan(&conn, DEVICE_SEQUENCES_SQL, &values(1));
    assert!(
        sequences.contains("SEARCH device_events USING PRIMARY KEY (device_id=?)")
            && !sequences.contains("TEMP B-TREE"),
        "{sequences}"
    );
    let history = query_plan(&conn, RESOURCE_HISTORY_SQL, &values(4));
    assert!(
        history.contains("SEARCH d USING PRIMARY KEY (device_id=?)")
            && history.contains("SEARCH r USING INTEGER PRIMARY KEY (rowid=?)")
            && !history.contains("TEMP B-TREE"),
        "{history}"
    );
    let log = query_plan(&conn, ALARM_LOG_SQL, &values(2));
    assert!(
        log.contains("USING INDEX alarm_events_log (device_id=? AND code=?)") && !log.contains("TEMP B-TREE"),
        "{log}"
    );
}

/// Every event of every kind has its one entry in `device_events`, and only those: after appends
/// of each kind (offline alarms' seq 0 included) and after retention deletes some.
#[tokio::test]
async fn device_events_index_every_event_and_follow_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let e = enterprise(&store, "indexed").await;
    let d = store.register_device(new_device(e.id, "001565000031")).await.expect("device").device.id;
    let resource = |seq: u64, at: i64| ResourceEvent { at: UnixMillis(at), ..resource(d, e.id, seq) };
    let alarm = |seq: u64, at: i64, log: Option<Vec<u8>>| AlarmEvent {
        device_id: d,
        enterprise_id: e.id,
        seq,
        at: UnixMillis(at),
        code: fleetpulse_proto::AlarmTypeCode(101),
        clear: false,
        description: "x".into(),
        log,
    };
    let batch = EventBatch {
        resources: vec![resource(1, 10), resource(2, 20), resource(4, 40)],
        alarms: vec![alarm(3, 30, Some(b"old".to_vec())), alarm(0, 35, None), alarm(5, 50, Some(b"new".to_vec()))],
        delivery: vec![(d, 5)],
        ..EventBatch::default()
    };
    store.append(batch).await.expect("append");
    let conn = Connection::open(dir.path().join(DB_FILE)).expect("open");
    let unmatched = |conn: &Connection| -> (i64, i64) {
        let sql = "SELECT (SELECT count(*) FROM device_events), \
             (SELECT count(*) FROM device_events AS d WHERE NOT EXISTS ( \
                SELECT 1 FROM status_events WHERE d.kind = 0 AND id = d.row AND device_id = d.device_id AND seq = d.seq \
                UNION ALL SELECT 1 FROM resource_reports WHERE d.kind = 1 AND id = d.row AND device_id = d.device_id AND seq = d.seq \
                UNION ALL SELECT 1 FROM alarm_events WHERE d.kind = 2 AND id = d.row AND device_id = d.device_id AND seq = d.seq))";
        conn.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?))).expect("entries")
    };
    assert_eq!(unmatched(&conn), (6, 0), "one entry per event, each pointing at its row");
    let seqs = store.device_sequences(&[d]).await.expect("sequences");
    assert_eq!(
        (seqs[0].rows, seqs[0].ranges.clone()),
        (5, vec![(1, 5)]),
        "the offline alarm's seq 0 is not the device's"
    );
    let history = store.resource_history(d, UnixMillis(0), UnixMillis(100), 10).await.expect("history");
    assert_eq!(history.iter().map(|p| p.at.0).collect::<Vec<_>>(), [40, 20, 10]);
    let log = store.alarm_log(d, fleetpulse_proto::AlarmTypeCode(101)).await.expect("log");
    assert_eq!(log, Some((UnixMillis(50), b"new".to_vec())));

    assert_eq!(store.apply_retention(UnixMillis(32)).await.expect("retention"), 3);
    assert_eq!(unmatched(&conn), (3, 0), "retention took the deleted rows' entries with them");
    let seqs = store.device_sequences(&[d]).await.expect("sequences");
    assert_eq!((seqs[0].rows, seqs[0].ranges.clone()), (2, vec![(4, 5)]));
    let log = store.alarm_log(d, fleetpulse_proto::AlarmTypeCode(101)).await.expect("log");
    assert_eq!(log, Some((UnixMillis(50), b"new".to_vec())));
}

/// SQLite rewrites a row's entry in every index whose column an UPDATE assigns, changed or not, so
/// the statement every device report runs assigns no indexed column but the one that always
/// changes.
#[tokio::test]
async fn a_report_rewrites_no_device_index_but_the_last_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _store = open(dir.path());
    let conn = Connection::open(dir.path().join(DB_FILE)).expect("open");
    let set = super::devices::REPORT_SQL.split(" SET ").nth(1).and_then(|s| s.split(" WHERE ").next()).expect("SET");
    let assigned: Vec<&str> = set.split(',').map(|a| a.split('=').next().expect("column").trim()).collect();
    assert!(assigned.contains(&"sip_lines") && assigned.contains(&"last_report_at"), "{assigned:?}");
    // Every (index, column) of `devices`; an expression's column has no name and is left out.
    let indexed: Vec<(String, String)> = conn
        .prepare(
            "SELECT l.name, i.name FROM pragma_index_list('devices') AS l, pragma_index_info(l.name) AS i \
             WHERE i.name IS NOT NULL",
        )
        .expect("indexes")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("indexes")
        .collect::<rusqlite::Result<_>>()
        .expect("indexes");
    let rewritten: Vec<&(String, String)> = indexed.iter().filter(|(_, c)| assigned.contains(&c.as_str())).collect();
    assert_eq!(
        rewritten,
        [&("devices_sort_last_report".to_owned(), "last_report_at".to_owned())],
        "indexes a report rewrites"
    );
}

#[tokio::test]
async fn due_outbox_walks_the_due_index_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _store = open(dir.path());
    let conn = Connection::open(dir.path().join(DB_FILE)).expect("open");
    let plan = |slots: usize| {
        let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {}", due_outbox_sql(slots))).expect("explain");
        let receivers = (0..slots).map(|i| format!("r{i}@example.com"));
        let values: Vec<SqlValue> = [Box::new(1_000_i64) as SqlValue, Box::new(10_u32)]
            .into_iter()
            .chain(receivers.map(|r| Box::new(r) as SqlValue))
            .collect();
        let rows = st
            .query_map(rusqlite::params_from_iter(values.iter()), |r| r.get::<_, String>(3))
            .expect("plan")
            .collect::<rusqlite::Result<Vec<_>>>()
            .expect("plan rows");
        rows.join("; ")
    };
    for slots in [0, 8, MAX_OUTBOX_EXCEPT] {
        let plan = plan(slots);
        assert!(
            plan.contains("USING INDEX outbox_due (state=? AND next_attempt_at<?)") && !plan.contains("TEMP B-TREE"),
            "{slots} slots: {plan}"
        );
    }
    assert_eq!(
        [0, 1, 7, 8, 9, 300, 512, 513, 999, MAX_OUTBOX_EXCEPT].map(except_slots),
        [0, 8, 8, 8, 16, 512, 512, MAX_OUTBOX_EXCEPT, MAX_OUTBOX_EXCEPT, MAX_OUTBOX_EXCEPT]
    );
}

fn operation(at: i64) -> NewOperationLog {
    NewOperationLog {
        account_id: Some(AccountId(1)),
        account_email: "a@example.com".into(),
        acting_as: None,
        operation: "POST /api/v1/enterprises".into(),
        method: "POST".into(),
        path: "/api/v1/enterprises".into(),
        ip: "203.0.113.1".into(),
        at: UnixMillis(at),
        status: 201,
        outcome: OperationOutcome::Success,
    }
}

#[tokio::test]
async fn the_operation_log_refuses_updates_and_deletes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store.append_operation_logs(vec![operation(1), operation(2)]).await.expect("append");
    let before = store.list_operation_logs(OperationLogFilter::default(), Page::first(10)).await.expect("list");
    assert_eq!(before.len(), 2);
    let conn = Connection::open(dir.path().join(DB_FILE)).expect("open");
    conn.busy_timeout(std::time::Duration::from_secs(10)).expect("busy timeout");
    for sql in [
        "UPDATE operation_log SET status = 500",
        "UPDATE operation_log SET account_email = 'x' WHERE id = 1",
        "DELETE FROM operation_log WHERE id = 1",
        "DELETE FROM operation_log",
    ] {
        let error = conn.execute(sql, []).expect_err(sql).to_string();
        assert!(error.contains("operation log is append-only"), "{sql}: {error}");
    }
    // Not even through the store's own writer.
    let through_writer = store.write(1, |c| Ok(c.execute("DELETE FROM operation_log", [])?)).await;
    assert!(
        matches!(through_writer, Err(StoreError::Backend(ref e)) if e.contains("append-only")),
        "{through_writer:?}"
    );
    let after = store.list_operation_logs(OperationLogFilter::default(), Page::first(10)).await.expect("list");
    assert_eq!(after, before);
    // Appending still works.
    store.append_operation_logs(vec![operation(3)]).await.expect("append after refusals");
    assert_eq!(store.list_operation_logs(OperationLogFilter::default(), Page::first(10)).await.expect("list").len(), 3);
}

#[tokio::test]
async fn operation_log_pages_read_an_index_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _store = open(dir.path());
    let conn = Connection::open(dir.path().join(DB_FILE)).expect("open");
    let plan = |filter: OperationLogFilter| {
        let (sql, values) = operation_log_sql(&filter, Page { after: 100, limit: 50 }).expect("a query");
        query_plan(&conn, &sql, &values)
    };
    let all = plan(OperationLogFilter::default());
    assert!(all.contains("INTEGER PRIMARY KEY") && !all.contains("TEMP B-TREE"), "{all}");
    let mine = plan(OperationLogFilter { account_id: Some(AccountId(1)), ..OperationLogFilter::default() });
    assert!(mine.contains("USING INDEX operation_log_account (account_id=? AND id<?)"), "{mine}");
    assert!(!mine.contains("TEMP B-TREE"), "{mine}");
    let theirs = plan(OperationLogFilter { enterprise: Some(EnterpriseId(1)), ..OperationLogFilter::default() });
    assert!(theirs.contains("USING INDEX operation_log_acting_as") && !theirs.contains("TEMP B-TREE"), "{theirs}");
    let kind = plan(OperationLogFilter { operation: Some("POST /x".into()), ..OperationLogFilter::default() });
    assert!(kind.contains("USING INDEX operation_log_operation") && !kind.contains("TEMP B-TREE"), "{kind}");
    assert!(operation_log_sql(&OperationLogFilter::default(), Page::first(0)).is_none());
    let beyond = OperationLogFilter { account_id: Some(AccountId(u64::MAX)), ..OperationLogFilter::default() };
    assert!(operation_log_sql(&beyond, Page::first(10)).is_none());
}

#[tokio::test]
async fn pending_commands_are_found_along_their_partial_indexes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _store = open(dir.path());
    let conn = Connection::open(dir.path().join(DB_FILE)).expect("open");
    for (sql, index) in super::commands::pending_statements() {
        let values: Vec<SqlValue> = vec![Box::new("[1]"), Box::new(2_i64), Box::new(3_i64)];
        let count = conn.prepare(&sql).expect("statement").parameter_count();
        let plan = query_plan(&conn, &sql, &values[..count]);
        let uses = |how: &str| plan.contains(&format!("USING {how}{index}"));
        assert!((uses("INDEX ") || uses("COVERING INDEX ")) && !plan.contains("SCAN commands"), "{sql}: {plan}");
    }
}

/// Issue 11's budget: at most 256 bytes of storage (table row and index entries) per queued
/// command, measured with `dbstat` over 10,000 queued commands of 100 devices.
#[tokio::test]
async fn a_queued_command_takes_at_most_256_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let e = enterprise(&store, "cmd").await;
    let account = store
        .create_account(NewAccount {
            email: "ops@example.com".into(),
            password_hash: "phc".into(),
            role: Role::PlatformAdmin,
            channel_id: None,
            enterprise_id: None,
            must_change_password: false,
            parent_id: None,
            permissions: None,
        })
        .await
        .expect("account");
    let mut batch = Vec::new();
    for d in 0..100 {
        let device = store.register_device(new_device(e.id, &format!("0015650{d:05x}"))).await.expect("device");
        for i in 0..100 {
            batch.push(NewCommand {
                device_id: device.device.id,
                enterprise_id: e.id,
                kind: if i % 2 == 0 { "reboot".into() } else { "ping".into() },
                args: if i % 2 == 0 { "{}".into() } else { r#"{"target":"192.168.1.1","count":4}"#.into() },
                deadline: UnixMillis(1_767_225_600_000 + 86_400_000),
                issued_by: account.id,
            });
        }
    }
    let queued = store.enqueue_commands(batch, UnixMillis(1_767_225_600_000)).await.expect("enqueue");
    assert!(queued.iter().all(Result::is_ok));
    let conn = Connection::open(dir.path().join(DB_FILE)).expect("open");
    let bytes: i64 = conn
        .query_row(
            "SELECT sum(pgsize) FROM dbstat WHERE name = 'commands' OR name LIKE 'commands\\_%' ESCAPE '\\'",
            [],
            |r| r.get(0),
        )
        .expect("dbstat");
    let per_command = bytes / 10_000;
    println!("storage per queued command: {per_command} bytes ({bytes} bytes for 10,000)");
    assert!(per_command <= 256, "{per_command} bytes per queued command");
}

/// The files directory's entries, sorted.
fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join(files::FILES_DIR))
        .expect("files dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The crash story of `files.rs`: a stored file is `files/<id>` and nothing else; what an
/// interrupted store or delete leaves (temporary content, a row not complete and its content,
/// content without a row) is swept on open, and a complete file survives.
#[tokio::test]
async fn opening_sweeps_what_an_interrupted_upload_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let upload = dir.path().join("upload");
    std::fs::write(&upload, b"hello").expect("write upload");
    let (kept, pending) = {
        let store = open(dir.path());
        let e = enterprise(&store, "files").await;
        let d = store.register_device(new_device(e.id, "001565000001")).await.expect("device").device.id;
        let file = NewFile {
            device_id: d,
            enterprise_id: e.id,
            command_id: None,
            name: "a.txt".into(),
            size: 5,
            sha256: [1; 32],
            created_at: UnixMillis(1),
            expires_at: UnixMillis(1_000),
        };
        let kept = store.store_file(file.clone(), &upload).await.expect("store");
        assert_eq!(file_names(dir.path()), [kept.id.0.to_string()], "no temporary file is left");
        // A row not complete (step 2 done, step 4 not), as a crash leaves it.
        let pending = store
            .write(1, move |c| {
                c.execute(
                    "INSERT INTO files (device_id, enterprise_id, name, size, sha256, created_at, expires_at, complete) \
                     VALUES (?1, ?2, 'b.txt', 5, zeroblob(32), 1, 1000, 0)",
                    params![d.0, e.id.0],
                )?;
                Ok(FileId(u64::try_from(c.last_insert_rowid()).unwrap_or_default()))
            })
            .await
            .expect("pending row");
        assert_eq!(store.file(pending).await.expect("read"), None, "an incomplete file is never answered");
        assert!(store.list_device_files(d, Page::first(10)).await.expect("list").iter().all(|f| f.id != pending));
        (kept, pending)
    };
    let files_dir = dir.path().join(files::FILES_DIR);
    for name in [pending.0.to_string(), "999999".into(), "tmp-1-2-3".into(), "notes".into()] {
        std::fs::write(files_dir.join(name), b"left").expect("leftover");
    }
    let store = open(dir.path());
    assert_eq!(file_names(dir.path()), [kept.id.0.to_string(), "notes".into()], "only foreign names are kept");
    assert_eq!(store.file(kept.id).await.expect("read"), Some(kept.clone()));
    assert_eq!(store.file_chunk(kept.id, 0).await.expect("chunk"), Some(b"hello".to_vec()));
    let rows = store
        .read(|c| Ok(c.query_row("SELECT count(*) FROM files", [], |r| r.get::<_, i64>(0))?))
        .await
        .expect("count");
    assert_eq!(rows, 1, "the incomplete row is gone");
}

#[tokio::test]
async fn a_cancelled_read_keeps_its_reader_until_the_read_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    // A read cancelled by its caller while SQLite still runs it: its connection is out of the
    // pool for another 200 ms.
    let slow = store.read(|_| {
        std::thread::sleep(std::time::Duration::from_millis(200));
        Ok(())
    });
    assert!(tokio::time::timeout(std::time::Duration::from_millis(20), slow).await.is_err());
    // As many reads as there are readers: the last must wait for the slow one, not find the pool
    // empty.
    assert_eq!(EmbeddedConfig::default().readers, 4);
    let (a, b, c, d) =
        tokio::join!(store.read(|_| Ok(1)), store.read(|_| Ok(2)), store.read(|_| Ok(3)), store.read(|_| Ok(4)));
    assert_eq!((a.expect("a"), b.expect("b"), c.expect("c"), d.expect("d")), (1, 2, 3, 4));
}
