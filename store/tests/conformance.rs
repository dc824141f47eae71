//! One conformance suite for the store API, run against every backend: the embedded SQLite
//! store and the scale-out store (PostgreSQL entities, ClickHouse events behind the spool), both
//! on real servers started by the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use fleetpulse_proto::alarm_types::OFFLINE;
use fleetpulse_proto::domain::{
    AlarmChange, AlarmChangeKind, CallStatus, DeviceKey, DeviceStatus, ResourceSample, SipLine, SipState,
};
use fleetpulse_proto::ids::ChannelId;
use fleetpulse_proto::{AccountId, DeviceId, EnterpriseId, Mac, UnixMillis};
use fleetpulse_store::*;

/// Reads in the scale-out store lag the spool by the drain time: poll until `check` passes.
async fn eventually<T, F, Fut>(what: &str, mut read: F, check: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
    T: std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let value = read().await.expect(what);
        if check(&value) {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{what}: still {value:?} after 10 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn mac(n: u32) -> Mac {
    Mac::parse(&format!("0015650{n:05x}")).unwrap()
}

/// A full platform-admin account with this email (password hash "phc").
fn platform_admin(email: &str) -> NewAccount {
    NewAccount {
        email: email.into(),
        password_hash: "phc".into(),
        role: Role::PlatformAdmin,
        channel_id: None,
        enterprise_id: None,
        must_change_password: false,
        parent_id: None,
        permissions: None,
    }
}

fn new_device(e: EnterpriseId, key: DeviceKey) -> NewDevice {
    NewDevice { enterprise_id: e, key, serial: None, model: "T54W".into(), firmware: "1.0".into(), at: UnixMillis(5) }
}

async fn entities(store: &Store) {
    let s = &store.entities;
    // Accounts: unique email, case-insensitive lookup.
    let account = s
        .create_account(NewAccount {
            parent_id: None,
            permissions: None,
            email: "Admin@Example.com".into(),
            password_hash: "phc".into(),
            role: Role::PlatformAdmin,
            channel_id: None,
            enterprise_id: None,
            must_change_password: false,
        })
        .await
        .unwrap();
    let dup = s.create_account(NewAccount {
        parent_id: None,
        permissions: None,
        email: "admin@example.com".into(),
        password_hash: "x".into(),
        role: Role::PlatformAdmin,
        channel_id: None,
        enterprise_id: None,
        must_change_password: false,
    });
    assert!(matches!(dup.await, Err(StoreError::AlreadyExists("email"))));
    assert_eq!(s.account_by_email("ADMIN@example.com").await.unwrap().map(|a| a.id), Some(account.id));
    assert_eq!(s.account(account.id).await.unwrap().map(|a| a.password_hash), Some("phc".into()));
    assert_eq!(s.account(AccountId(999_999)).await.unwrap(), None);
    assert_eq!(s.count_accounts(Role::PlatformAdmin).await.unwrap(), 1);

    // Sessions expire by time.
    let session = |hash: u8, expires| Session {
        acting: None,
        token_hash: TokenHash([hash; 32]),
        account_id: account.id,
        created_at: UnixMillis(1_000),
        expires_at: UnixMillis(expires),
        last_seen_at: UnixMillis(1_000),
    };
    s.create_session(session(1, 5_000)).await.unwrap();
    assert!(s.session(TokenHash([1; 32]), UnixMillis(4_999)).await.unwrap().is_some());
    assert!(s.session(TokenHash([1; 32]), UnixMillis(5_000)).await.unwrap().is_none());
    assert!(s.session(TokenHash([2; 32]), UnixMillis(1)).await.unwrap().is_none());

    // Enterprises: unique credentials, lookup, keyset pagination.
    let mut ids = Vec::new();
    for i in 0..5 {
        let e = s
            .create_enterprise(NewEnterprise {
                profile: Default::default(),
                name: format!("e{i}"),
                credential: format!("cred-{i}"),
                channel_id: None,
            })
            .await
            .unwrap();
        ids.push(e.id);
    }
    let dup = s
        .create_enterprise(NewEnterprise {
            profile: Default::default(),
            name: "x".into(),
            credential: "cred-0".into(),
            channel_id: None,
        })
        .await;
    assert!(matches!(dup, Err(StoreError::AlreadyExists("credential"))));
    assert_eq!(s.enterprise_by_credential("cred-3").await.unwrap().map(|e| e.id), Some(ids[3]));
    assert_eq!(s.enterprise_by_credential("nope").await.unwrap(), None);
    assert_eq!(s.enterprise(ids[1]).await.unwrap().map(|e| e.name), Some("e1".into()));
    let first = s.list_enterprises(Page::first(2)).await.unwrap();
    let next = s.list_enterprises(Page { after: first[1].id.0, limit: 10 }).await.unwrap();
    assert_eq!(first.iter().chain(&next).map(|e| e.id).collect::<Vec<_>>(), ids);

    // Devices: auto-add once, update firmware, conflicts across enterprises, serial-only keys.
    let (a, b) = (ids[0], ids[1]);
    let d1 = s.register_device(new_device(a, DeviceKey::Mac(mac(1)))).await.unwrap();
    assert!(d1.created);
    assert_eq!(d1.device.mac, Some(mac(1)));
    let again = s.register_device(new_device(a, DeviceKey::Mac(mac(1)))).await.unwrap();
    assert_eq!((again.created, again.device.id), (false, d1.device.id));
    let mut upgraded = new_device(a, DeviceKey::Mac(mac(1)));
    upgraded.firmware = "2.0".into();
    assert_eq!(s.register_device(upgraded).await.unwrap().device.firmware, "2.0");
    assert_eq!(s.device(d1.device.id).await.unwrap().map(|d| d.firmware), Some("2.0".into()));
    assert!(matches!(s.register_device(new_device(b, DeviceKey::Mac(mac(1)))).await, Err(StoreError::DeviceConflict)));
    let sn = s.register_device(new_device(a, DeviceKey::Serial("SN-1".into()))).await.unwrap();
    assert!(sn.created);
    assert_eq!(sn.device.serial.as_deref(), Some("SN-1"));
    assert!(matches!(
        s.register_device(new_device(b, DeviceKey::Serial("SN-1".into()))).await,
        Err(StoreError::DeviceConflict)
    ));
    let d2 = s.register_device(new_device(b, DeviceKey::Mac(mac(2)))).await.unwrap();
    let in_a: Vec<_> = s.list_devices(Some(a), Page::first(10)).await.unwrap().iter().map(|d| d.id).collect();
    assert_eq!(in_a, vec![d1.device.id, sn.device.id]);
    let all = s.list_devices(None, Page::first(10)).await.unwrap();
    assert_eq!(all.len(), 3);
    let after = s.list_devices(None, Page { after: d1.device.id.0, limit: 1 }).await.unwrap();
    assert_eq!(after.iter().map(|d| d.id).collect::<Vec<_>>(), vec![sn.device.id]);
    assert_eq!(s.device(DeviceId(d2.device.id.0 + 1_000)).await.unwrap(), None);
}

async fn events(store: &Store) {
    let e = store
        .entities
        .create_enterprise(NewEnterprise {
            profile: Default::default(),
            name: "ev".into(),
            credential: "ev".into(),
            channel_id: None,
        })
        .await
        .unwrap();
    let d = store.entities.register_device(new_device(e.id, DeviceKey::Mac(mac(10)))).await.unwrap().device.id;
    let other = store.entities.register_device(new_device(e.id, DeviceKey::Mac(mac(11)))).await.unwrap().device.id;
    let ev = &store.events;
    assert_eq!(ev.last_seq(d).await.unwrap(), 0);

    let status = StatusEvent {
        device_id: d,
        enterprise_id: e.id,
        seq: 1,
        at: UnixMillis(1_700_000_000_001),
        status: DeviceStatus {
            lines: vec![],
            call_status: CallStatus::InCall,
            firmware: "2.0".into(),
            public_ip: Some("203.0.113.9".parse().unwrap()),
            private_ip: None,
            uptime_s: 9,
            last_reboot: Some(UnixMillis(1_699_999_000_000)),
        },
    };
    let resource = |seq| ResourceEvent {
        device_id: d,
        enterprise_id: e.id,
        seq,
        at: UnixMillis(1_700_000_000_000 + seq as i64),
        sample: ResourceSample { cpu_centi_pct: 5_000, mem_used_bytes: 1, mem_total_bytes: 2 },
    };
    let alarm = AlarmEvent {
        device_id: d,
        enterprise_id: e.id,
        seq: 5,
        at: UnixMillis(1_700_000_000_005),
        code: fleetpulse_proto::AlarmTypeCode(105),
        clear: false,
        description: "crash".into(),
        log: Some(vec![1, 2, 3]),
    };
    let change = |at, kind| AlarmChange { device_id: d, enterprise_id: e.id, code: OFFLINE, at: UnixMillis(at), kind };
    let raise = |at, text: &str| change(at, AlarmChangeKind::Raise { description: text.into() });
    ev.append(EventBatch {
        status: vec![status],
        resources: vec![resource(2), resource(3)],
        alarms: vec![alarm],
        alarm_changes: vec![raise(1_700_000_000_010, "first"), raise(1_700_000_000_020, "second")],
        delivery: vec![(d, 5)],
    })
    .await
    .unwrap();
    assert_eq!(ev.last_seq(d).await.unwrap(), 5, "the delivery mark is visible as soon as append returns");
    ev.append(EventBatch { resources: vec![resource(7)], delivery: vec![(d, 7)], ..EventBatch::default() })
        .await
        .unwrap();
    ev.append(EventBatch { delivery: vec![(d, 6)], ..EventBatch::default() }).await.unwrap();
    assert_eq!(ev.last_seq(d).await.unwrap(), 7, "marks never move back");

    let both = [d, other];
    let seqs = eventually("device sequences", || ev.device_sequences(&both), |s| s.iter().any(|s| s.rows == 5)).await;
    let mine = seqs.iter().find(|s| s.device_id == d).unwrap();
    assert_eq!((mine.rows, mine.ranges.clone()), (5, vec![(1, 3), (5, 5), (7, 7)]));
    assert!(seqs.iter().filter(|s| s.device_id == other).all(|s| s.rows == 0));
    let stored = store.stored_sequences(e.id, Page::first(10)).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!((stored[0].mac, stored[0].rows), (Some(mac(10)), 5));

    let filter = AlarmFilter { enterprise: Some(e.id), device: None, ..AlarmFilter::default() };
    let records =
        eventually("alarm records", || ev.list_alarm_records(filter.clone(), Page::first(10)), |r| r.len() == 1).await;
    let r = &records[0];
    assert_eq!((r.count, r.description.as_str(), r.status), (2, "second", AlarmStatus::Active));
    assert_eq!((r.first_at, r.latest_at), (UnixMillis(1_700_000_000_010), UnixMillis(1_700_000_000_020)));
    assert_eq!((r.name, r.device_id), ("Offline", d));
    ev.append(EventBatch {
        alarm_changes: vec![change(1_700_000_000_030, AlarmChangeKind::Clear)],
        ..EventBatch::default()
    })
    .await
    .unwrap();
    let records = eventually(
        "cleared alarm",
        || ev.list_alarm_records(filter.clone(), Page::first(10)),
        |r| r.first().is_some_and(|r| r.status == AlarmStatus::Cleared),
    )
    .await;
    assert_eq!(records[0].cleared_at, Some(UnixMillis(1_700_000_000_030)));
    let only = |f: AlarmFilter| async move { ev.list_alarm_records(f, Page::first(10)).await.unwrap().len() };
    let base = AlarmFilter { enterprise: Some(e.id), ..AlarmFilter::default() };
    assert_eq!(only(AlarmFilter { code: Some(OFFLINE), ..base.clone() }).await, 1);
    assert_eq!(only(AlarmFilter { code: Some(fleetpulse_proto::AlarmTypeCode(105)), ..base.clone() }).await, 0);
    assert_eq!(only(AlarmFilter { severity: Some(fleetpulse_proto::Severity::Critical), ..base.clone() }).await, 1);
    assert_eq!(only(AlarmFilter { severity: Some(fleetpulse_proto::Severity::Minor), ..base.clone() }).await, 0);
    assert_eq!(only(AlarmFilter { status: Some(AlarmStatus::Cleared), ..base.clone() }).await, 1);
    assert_eq!(only(AlarmFilter { status: Some(AlarmStatus::Active), ..base.clone() }).await, 0);
    assert_eq!(only(AlarmFilter { latest_from: Some(UnixMillis(1_700_000_000_020)), ..base.clone() }).await, 1);
    assert_eq!(only(AlarmFilter { latest_to: Some(UnixMillis(1_700_000_000_020)), ..base.clone() }).await, 0);
    // A set of enterprises (a channel's subtree): bounded; an empty set matches nothing.
    let among = |ids: Vec<EnterpriseId>| AlarmFilter { enterprises: Some(ids), ..AlarmFilter::default() };
    assert_eq!(only(among(vec![EnterpriseId(999_998), e.id])).await, 1);
    assert_eq!(only(among(vec![EnterpriseId(999_998)])).await, 0);
    assert_eq!(only(among(vec![])).await, 0);
    assert_eq!(ev.latest_alarm_records(among(vec![e.id]), 10).await.unwrap().len(), 1);
    assert!(ev.latest_alarm_records(among(vec![]), 10).await.unwrap().is_empty());
    let too_many = among((0..=MAX_ENTERPRISE_CHANNEL_FILTER as u64).map(EnterpriseId).collect());
    assert!(matches!(ev.list_alarm_records(too_many, Page::first(1)).await, Err(StoreError::InvalidInput(_))));
    assert_eq!(ev.alarm_record(records[0].id).await.unwrap().map(|r| r.device_id), Some(d));
    assert_eq!(ev.alarm_record(records[0].id + 12_345).await.unwrap(), None);
    let by_device = ev
        .list_alarm_records(
            AlarmFilter { enterprise: None, device: Some(other), ..AlarmFilter::default() },
            Page::first(10),
        )
        .await;
    assert!(by_device.unwrap().is_empty());
    let crash = fleetpulse_proto::AlarmTypeCode(105);
    let log = eventually("alarm log", || ev.alarm_log(d, crash), Option::is_some).await;
    assert_eq!(log, Some((UnixMillis(1_700_000_000_005), vec![1, 2, 3])));
    assert_eq!(ev.alarm_log(d, fleetpulse_proto::AlarmTypeCode(301)).await.unwrap(), None);
    let counts = eventually("event counts", || ev.event_counts(), |c| c.resources == 3).await;
    assert_eq!((counts.status, counts.resources, counts.alarms, counts.alarm_records), (1, 3, 1, 1));
}

/// The durable notification outbox (ALM-5): one message per idempotency key, due messages in
/// order, attempts recorded; only pending messages change.
async fn outbox(store: &Store) {
    let s = &store.entities;
    let message = |key: &str, not_before| NewOutboxMessage {
        key: key.into(),
        enterprise_id: EnterpriseId(1),
        receiver: "noc@example.com".into(),
        payload: format!("{{\"key\":\"{key}\"}}"),
        not_before: UnixMillis(not_before),
        item_keys: Vec::new(),
    };
    assert!(s.enqueue_outbox(message("k1", 100), UnixMillis(50)).await.unwrap());
    assert!(s.enqueue_outbox(message("k2", 200), UnixMillis(60)).await.unwrap());
    assert!(!s.enqueue_outbox(message("k1", 10), UnixMillis(70)).await.unwrap(), "same key: ignored");
    assert!(s.due_outbox(UnixMillis(99), 10).await.unwrap().is_empty());
    let due = s.due_outbox(UnixMillis(250), 10).await.unwrap();
    assert_eq!(due.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(), ["k1", "k2"]);
    let first = &due[0];
    assert_eq!(
        (first.state, first.attempts, first.created_at, first.payload.as_str()),
        (OutboxState::Pending, 0, UnixMillis(50), "{\"key\":\"k1\"}")
    );
    // A transient failure: pending again later, the attempt counted.
    let retry = s.record_outbox_attempt(
        first.id,
        OutboxState::Pending,
        UnixMillis(260),
        UnixMillis(1_000),
        Some("451 try again".into()),
    );
    let retry = retry.await.unwrap().unwrap();
    assert_eq!((retry.state, retry.attempts, retry.next_attempt_at), (OutboxState::Pending, 1, UnixMillis(1_000)));
    assert_eq!(retry.last_error.as_deref(), Some("451 try again"));
    assert_eq!(s.due_outbox(UnixMillis(300), 10).await.unwrap().len(), 1, "k1 waits for its retry");
    let sent = s
        .record_outbox_attempt(first.id, OutboxState::Sent, UnixMillis(1_010), UnixMillis(1_010), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((sent.state, sent.attempts, sent.sent_at), (OutboxState::Sent, 2, Some(UnixMillis(1_010))));
    // A sent message does not change again (a late duplicate outcome is ignored).
    let late =
        s.record_outbox_attempt(first.id, OutboxState::Failed, UnixMillis(1_020), UnixMillis(1_020), Some("x".into()));
    assert_eq!(late.await.unwrap().map(|m| (m.state, m.attempts)), Some((OutboxState::Sent, 2)));
    let failed = s.record_outbox_attempt(
        due[1].id,
        OutboxState::Failed,
        UnixMillis(1_030),
        UnixMillis(1_030),
        Some("550 rejected".into()),
    );
    assert_eq!(failed.await.unwrap().map(|m| m.state), Some(OutboxState::Failed));
    assert!(s.due_outbox(UnixMillis(10_000), 10).await.unwrap().is_empty());
    assert_eq!(
        s.record_outbox_attempt(999_999, OutboxState::Sent, UnixMillis(1), UnixMillis(1), None).await.unwrap(),
        None
    );

    // Several outcomes in one call (a digest, or a pass of the worker).
    assert!(s.enqueue_outbox(message("k3", 100), UnixMillis(80)).await.unwrap());
    assert!(s.enqueue_outbox(message("k4", 100), UnixMillis(90)).await.unwrap());
    let due = s.due_outbox(UnixMillis(10_000), 10).await.unwrap();
    assert_eq!(due.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(), ["k3", "k4"]);
    let attempt = |id, outcome, next: i64| OutboxAttempt {
        id,
        outcome,
        at: UnixMillis(10_000),
        next_attempt_at: UnixMillis(next),
        error: None,
    };
    let attempts = vec![
        attempt(due[0].id, OutboxState::Sent, 10_000),
        attempt(due[1].id, OutboxState::Pending, 20_000),
        attempt(first.id, OutboxState::Pending, 0), // already sent: unchanged
        attempt(999_999, OutboxState::Sent, 0),     // unknown: ignored
    ];
    s.record_outbox_attempts(attempts).await.unwrap();
    let due = s.due_outbox(UnixMillis(19_999), 10).await.unwrap();
    assert!(due.is_empty(), "k3 sent, k4 waits: {due:?}");
    let due = s.due_outbox(UnixMillis(20_000), 10).await.unwrap();
    assert_eq!(due.iter().map(|m| (m.key.as_str(), m.attempts)).collect::<Vec<_>>(), [("k4", 1)]);
    let too_many = vec![attempt(due[0].id, OutboxState::Sent, 0); fleetpulse_store::MAX_OUTBOX_BATCH + 1];
    assert!(s.record_outbox_attempts(too_many).await.is_err());
    assert_eq!(s.due_outbox(UnixMillis(20_000), 10).await.unwrap().len(), 1, "an over-long call changes nothing");
    s.record_outbox_attempts(vec![attempt(due[0].id, OutboxState::Sent, 0)]).await.unwrap();
    assert!(s.due_outbox(UnixMillis(i64::MAX), 10).await.unwrap().is_empty());
}

/// Item keys of outbox messages (exactly-once notification items): recorded with a newly queued
/// message, reported by `outbox_known_items`; batches queue per message in one transaction.
/// Runs after `outbox`, which leaves nothing due and queued `k1`.
async fn outbox_items(store: &Store) {
    let s = &store.entities;
    let message = |key: &str, items: &[&str]| NewOutboxMessage {
        key: key.into(),
        enterprise_id: EnterpriseId(1),
        receiver: "noc@example.com".into(),
        payload: format!("payload of {key}"),
        not_before: UnixMillis(20_000),
        item_keys: items.iter().map(|&i| i.to_owned()).collect(),
    };
    let strings = |keys: &[&str]| keys.iter().map(|&k| k.to_owned()).collect::<Vec<String>>();
    let known = |keys: Vec<String>| async move {
        let mut known = s.outbox_known_items(&keys).await.unwrap();
        known.sort();
        known
    };
    let due_keys = || async {
        s.due_outbox(UnixMillis(30_000), 5_000).await.unwrap().into_iter().map(|m| m.key).collect::<Vec<_>>()
    };

    assert!(known(strings(&["a1", "a2"])).await.is_empty(), "nothing recorded yet");
    assert!(s.enqueue_outbox(message("m1", &["a1", "a2"]), UnixMillis(20_000)).await.unwrap());
    assert_eq!(known(strings(&["x", "a2", "y", "a1", "a2"])).await, ["a1", "a2"], "known and unknown keys mixed");
    // A message whose key was queued before changes nothing: its item keys are not recorded.
    assert!(!s.enqueue_outbox(message("m1", &["a3"]), UnixMillis(20_001)).await.unwrap());
    assert!(known(strings(&["a3"])).await.is_empty());
    assert!(s.outbox_known_items(&[]).await.unwrap().is_empty());

    // A batch: a duplicate key inside it, a key queued earlier (by `outbox` and above), an item
    // key shared inside the batch and one recorded before.
    let batch = vec![
        message("c2", &["i1", "i2"]),
        message("c2", &["i9"]),
        message("k1", &["i8"]),
        message("c1", &["i2", "i3"]),
        message("m1", &["i7"]),
        message("c3", &["a1", "i4"]),
    ];
    let queued = s.enqueue_outbox_batch(batch, UnixMillis(20_002)).await.unwrap();
    assert_eq!(queued, [true, false, false, true, false, true]);
    assert_eq!(
        known(strings(&["i1", "i2", "i3", "i4", "i7", "i8", "i9", "a1", "a3"])).await,
        ["a1", "i1", "i2", "i3", "i4"]
    );
    // Equally due messages of a batch come in batch order; the first of a duplicate key stays.
    let due = s.due_outbox(UnixMillis(30_000), 100).await.unwrap();
    assert_eq!(due.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(), ["m1", "c2", "c1", "c3"]);
    assert_eq!((due[1].payload.as_str(), due[1].created_at), ("payload of c2", UnixMillis(20_002)));
    assert!(s.enqueue_outbox_batch(Vec::new(), UnixMillis(20_003)).await.unwrap().is_empty());

    // Over the limit: an error, and nothing of the batch is queued or recorded.
    let too_many: Vec<_> =
        (0..=MAX_OUTBOX_BATCH).map(|i| message(&format!("big-{i}"), &[format!("big-item-{i}").as_str()])).collect();
    let refused = s.enqueue_outbox_batch(too_many, UnixMillis(20_004)).await;
    assert!(matches!(refused, Err(StoreError::InvalidInput(_))), "{refused:?}");
    assert_eq!(due_keys().await, ["m1", "c2", "c1", "c3"]);
    assert!(known(vec!["big-item-0".into(), format!("big-item-{MAX_OUTBOX_BATCH}")]).await.is_empty());

    // A batch failing part-way (an enterprise id no backend can store) changes nothing either.
    let mut unstorable = message("atomic-2", &["atomic-item-2"]);
    unstorable.enterprise_id = EnterpriseId(u64::MAX);
    let failed = s.enqueue_outbox_batch(vec![message("atomic-1", &["atomic-item-1"]), unstorable], UnixMillis(20_004));
    assert!(failed.await.is_err());
    assert_eq!(due_keys().await, ["m1", "c2", "c1", "c3"]);
    assert!(known(strings(&["atomic-item-1", "atomic-item-2"])).await.is_empty());

    // The largest batch and the largest lookup (several chunks on SQLite) are served whole.
    let full: Vec<_> = (0..MAX_OUTBOX_BATCH)
        .map(|i| message(&format!("full-{i:04}"), &[format!("full-item-{i:04}").as_str()]))
        .collect();
    let queued = s.enqueue_outbox_batch(full, UnixMillis(20_005)).await.unwrap();
    assert!(queued.len() == MAX_OUTBOX_BATCH && queued.iter().all(|&q| q));
    let mut lookup: Vec<String> = (0..MAX_OUTBOX_ITEM_QUERY - 3).map(|i| format!("unknown-{i}")).collect();
    lookup.extend(strings(&["full-item-0999", "i3", "full-item-0000"]));
    assert_eq!(known(lookup).await, ["full-item-0000", "full-item-0999", "i3"]);
    let too_many: Vec<String> = (0..=MAX_OUTBOX_ITEM_QUERY).map(|i| format!("i{i}")).collect();
    assert!(matches!(s.outbox_known_items(&too_many).await, Err(StoreError::InvalidInput(_))));
    assert_eq!(due_keys().await.len(), 4 + MAX_OUTBOX_BATCH);
}

/// Due messages leaving out some receivers (those over their rate limit): the others in the
/// order of `due_outbox`, the limit applied to what is left. Runs after `outbox_items`, which
/// leaves a backlog of 1,004 messages to `noc@example.com` due from 20,000 on.
async fn outbox_except(store: &Store) {
    let s = &store.entities;
    let message = |key: &str, receiver: &str, not_before| NewOutboxMessage {
        key: key.into(),
        enterprise_id: EnterpriseId(1),
        receiver: format!("{receiver}@example.com"),
        payload: format!("payload of {key}"),
        not_before: UnixMillis(not_before),
        item_keys: Vec::new(),
    };
    // Queued out of time order; x2/x3 and x6/x7 share a time (queue order breaks the tie).
    let batch = vec![
        message("x5", "b", 10_003),
        message("x1", "a", 10_000),
        message("x6", "c", 10_004),
        message("x2", "b", 10_001),
        message("x7", "a", 10_004),
        message("x3", "c", 10_001),
        message("x4", "a", 10_002),
        message("x8", "b", 14_000),
        message("x9", "c", 25_000),
    ];
    assert!(s.enqueue_outbox_batch(batch, UnixMillis(9_000)).await.unwrap().iter().all(|&q| q));
    let receivers = |names: &[&str]| names.iter().map(|n| format!("{n}@example.com")).collect::<Vec<String>>();
    let now = UnixMillis(12_000);
    let except = |limit: u32, names: Vec<String>| async move {
        let due = s.due_outbox_except(now, limit, &names).await.unwrap();
        due.into_iter().map(|m| m.key).collect::<Vec<_>>()
    };

    let all = s.due_outbox(now, 100).await.unwrap();
    assert_eq!(all.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(), ["x1", "x2", "x3", "x4", "x5", "x6", "x7"]);
    assert_eq!(s.due_outbox_except(now, 100, &[]).await.unwrap(), all, "leaving out none is due_outbox");
    assert_eq!(s.due_outbox_except(now, 3, &[]).await.unwrap(), s.due_outbox(now, 3).await.unwrap());
    assert_eq!(except(100, receivers(&["a"])).await, ["x2", "x3", "x5", "x6"]);
    assert_eq!(except(100, receivers(&["b", "c"])).await, ["x1", "x4", "x7"]);
    assert_eq!(except(100, receivers(&["c", "b", "c"])).await, ["x1", "x4", "x7"], "repeated receivers");
    assert!(except(100, receivers(&["a", "b", "c"])).await.is_empty());
    assert_eq!(except(100, receivers(&["nobody"])).await, ["x1", "x2", "x3", "x4", "x5", "x6", "x7"]);
    assert_eq!(except(100, vec!["A@example.com".into()]).await.len(), 7, "receivers compare exactly");
    // The limit applies after leaving receivers out.
    assert_eq!(except(2, receivers(&["a"])).await, ["x2", "x3"]);
    assert_eq!(except(2, receivers(&["b", "c"])).await, ["x1", "x4"]);
    assert!(except(0, receivers(&["a"])).await.is_empty());

    // The longest list: every receiver counts, wherever it is in the list.
    let mut full: Vec<String> = (0..MAX_OUTBOX_EXCEPT - 2).map(|i| format!("filler-{i:04}@example.com")).collect();
    full.insert(0, "a@example.com".into());
    full.insert(MAX_OUTBOX_EXCEPT / 2, "c@example.com".into());
    assert_eq!(full.len(), MAX_OUTBOX_EXCEPT);
    assert_eq!(except(100, full.clone()).await, ["x2", "x5"]);
    // Over the bound: an error.
    full.push("b@example.com".into());
    let refused = s.due_outbox_except(now, 100, &full).await;
    assert!(matches!(refused, Err(StoreError::InvalidInput(_))), "{refused:?}");

    // Only pending messages: a sent one is gone whatever is left out.
    let x4 = all.iter().find(|m| m.key == "x4").unwrap().id;
    s.record_outbox_attempt(x4, OutboxState::Sent, UnixMillis(12_001), UnixMillis(12_001), None).await.unwrap();
    assert_eq!(except(100, receivers(&["b", "c"])).await, ["x1", "x7"]);

    // The starvation this serves: a backlog (to noc@) fills every batch and hides x9 behind it;
    // leaving its receiver out reaches the others.
    let later = UnixMillis(30_000);
    let due = s.due_outbox(later, 20).await.unwrap();
    assert_eq!(
        due.iter().map(|m| m.key.as_str()).take(8).collect::<Vec<_>>(),
        ["x1", "x2", "x3", "x5", "x6", "x7", "x8", "m1"]
    );
    assert!(due.iter().all(|m| m.key != "x9"));
    let noc = receivers(&["noc"]);
    let others = s.due_outbox_except(later, 20, &noc).await.unwrap();
    assert_eq!(
        others.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(),
        ["x1", "x2", "x3", "x5", "x6", "x7", "x8", "x9"]
    );
    let backlog = s.due_outbox_except(later, 5_000, &receivers(&["a", "b", "c"])).await.unwrap();
    assert_eq!(backlog.len(), 4 + MAX_OUTBOX_BATCH);
    assert!(backlog.iter().all(|m| m.receiver == "noc@example.com"));
    assert!(backlog.windows(2).all(|w| (w[0].next_attempt_at, w[0].id) < (w[1].next_attempt_at, w[1].id)));
}

/// The latest alarms feed (ALM-6): newest occurrence first (ties by id, descending), at most the
/// limit (capped), filtered as `list_alarm_records`. Its times are later than any other case's,
/// so its records lead the unfiltered feed.
async fn latest_alarms(store: &Store) {
    let ev = &store.events;
    let e = store.entities.create_enterprise(NewEnterprise {
        profile: Default::default(),
        name: "bell".into(),
        credential: "bell".into(),
        channel_id: None,
    });
    let e = e.await.unwrap();
    let other = store.entities.create_enterprise(NewEnterprise {
        profile: Default::default(),
        name: "bell2".into(),
        credential: "bell2".into(),
        channel_id: None,
    });
    let other = other.await.unwrap();
    let d1 = store.entities.register_device(new_device(e.id, DeviceKey::Mac(mac(40)))).await.unwrap().device.id;
    let d2 = store.entities.register_device(new_device(e.id, DeviceKey::Mac(mac(41)))).await.unwrap().device.id;
    let d3 = store.entities.register_device(new_device(other.id, DeviceKey::Mac(mac(42)))).await.unwrap().device.id;
    const T: i64 = 1_800_000_000_000;
    let raise = |d: DeviceId, enterprise: EnterpriseId, code: u16, at: i64, text: &str| AlarmChange {
        device_id: d,
        enterprise_id: enterprise,
        code: fleetpulse_proto::AlarmTypeCode(code),
        at: UnixMillis(T + at),
        kind: AlarmChangeKind::Raise { description: text.into() },
    };
    let changes = vec![
        raise(d1, e.id, 101, 10, "d1-101"),
        raise(d1, e.id, 105, 30, "d1-105"),
        raise(d2, e.id, 101, 20, "d2-101"),
        raise(d2, e.id, 105, 30, "d2-105"),
        raise(d3, other.id, 101, 25, "d3-101"),
        // A later raise moves a record to the front of the feed.
        raise(d1, e.id, 101, 40, "d1-101 again"),
    ];
    ev.append(EventBatch { alarm_changes: changes, ..EventBatch::default() }).await.unwrap();
    let mine = AlarmFilter { enterprise: Some(e.id), ..AlarmFilter::default() };
    let feed = eventually("latest alarms", || ev.latest_alarm_records(mine.clone(), 10), |r| r.len() == 4).await;
    // Two records share the time of their latest occurrence: the higher id comes first.
    let id_of = |device| feed.iter().find(|r| r.device_id == device && r.code.0 == 105).unwrap().id;
    let tie = if id_of(d1) > id_of(d2) { ["d1-105", "d2-105"] } else { ["d2-105", "d1-105"] };
    let descriptions = |records: &[AlarmRecord]| records.iter().map(|r| r.description.clone()).collect::<Vec<_>>();
    assert_eq!(descriptions(&feed), ["d1-101 again", tie[0], tie[1], "d2-101"]);
    assert!(feed.windows(2).all(|w| (w[0].latest_at, w[0].id) > (w[1].latest_at, w[1].id)));
    assert_eq!((feed[0].count, feed[0].latest_at, feed[0].first_at), (2, UnixMillis(T + 40), UnixMillis(T + 10)));
    assert!(feed.iter().all(|r| r.enterprise_id == e.id));

    // The limit, and the filters of `list_alarm_records`.
    assert_eq!(descriptions(&ev.latest_alarm_records(mine.clone(), 2).await.unwrap()), ["d1-101 again", tie[0]]);
    assert!(ev.latest_alarm_records(mine.clone(), 0).await.unwrap().is_empty());
    let theirs = ev.latest_alarm_records(AlarmFilter { enterprise: Some(other.id), ..mine.clone() }, 10).await.unwrap();
    assert_eq!(descriptions(&theirs), ["d3-101"]);
    let by_device = ev.latest_alarm_records(AlarmFilter { device: Some(d2), ..mine.clone() }, 10).await.unwrap();
    assert_eq!(descriptions(&by_device), ["d2-105", "d2-101"]);
    let crashes = AlarmFilter { code: Some(fleetpulse_proto::AlarmTypeCode(105)), ..mine.clone() };
    assert_eq!(descriptions(&ev.latest_alarm_records(crashes, 10).await.unwrap()), tie);
    let older = AlarmFilter { latest_to: Some(UnixMillis(T + 30)), ..mine.clone() };
    assert_eq!(descriptions(&ev.latest_alarm_records(older, 10).await.unwrap()), ["d2-101"]);
    let none = AlarmFilter { enterprise: Some(EnterpriseId(999_999)), ..AlarmFilter::default() };
    assert!(ev.latest_alarm_records(none, 10).await.unwrap().is_empty());

    // Unfiltered: every enterprise, these records first (the other cases' are older).
    let all = ev.latest_alarm_records(AlarmFilter::default(), 10).await.unwrap();
    assert_eq!(descriptions(&all[..5]), ["d1-101 again", tie[0], tie[1], "d3-101", "d2-101"]);
    assert!(all.len() > 5, "the other cases' records follow");
    assert!(all.windows(2).all(|w| (w[0].latest_at, w[0].id) > (w[1].latest_at, w[1].id)));

    // A later raise stored apart from the first state of the record: still one record.
    let again = raise(d2, e.id, 101, 50, "d2-101 again");
    ev.append(EventBatch { alarm_changes: vec![again], ..EventBatch::default() }).await.unwrap();
    let moved = |r: &Vec<AlarmRecord>| r.first().is_some_and(|r| r.description == "d2-101 again");
    let feed = eventually("raised again", || ev.latest_alarm_records(mine.clone(), 10), moved).await;
    assert_eq!(descriptions(&feed), ["d2-101 again", "d1-101 again", tie[0], tie[1]]);
    assert_eq!((feed[0].count, feed[0].latest_at), (2, UnixMillis(T + 50)));

    // The cap: never more than MAX_LATEST_ALARM_RECORDS, even when asked for more.
    let crowd = store.entities.create_enterprise(NewEnterprise {
        profile: Default::default(),
        name: "crowd".into(),
        credential: "crowd".into(),
        channel_id: None,
    });
    let crowd = crowd.await.unwrap();
    let d = store.entities.register_device(new_device(crowd.id, DeviceKey::Mac(mac(43)))).await.unwrap().device.id;
    let many = MAX_LATEST_ALARM_RECORDS as u16 + 20;
    let changes = (1..=many).map(|code| raise(d, crowd.id, code, i64::from(code), "many")).collect();
    ev.append(EventBatch { alarm_changes: changes, ..EventBatch::default() }).await.unwrap();
    let crowded = AlarmFilter { enterprise: Some(crowd.id), ..AlarmFilter::default() };
    let page = Page::first(1_000);
    eventually("many records", || ev.list_alarm_records(crowded.clone(), page), |r| r.len() == usize::from(many)).await;
    let capped = ev.latest_alarm_records(crowded.clone(), 1_000).await.unwrap();
    assert_eq!(capped.len(), MAX_LATEST_ALARM_RECORDS as usize);
    assert_eq!((capped[0].code.0, capped[capped.len() - 1].code.0), (many, many - MAX_LATEST_ALARM_RECORDS as u16 + 1));
}

/// Alarm lifecycle (ALM-2): active → acknowledged → cleared with who and when; a raise keeps an
/// acknowledgement, a raise after a clear starts a new activation.
async fn lifecycle(store: &Store) {
    let e = store
        .entities
        .create_enterprise(NewEnterprise {
            profile: Default::default(),
            name: "lc".into(),
            credential: "lc".into(),
            channel_id: None,
        })
        .await
        .unwrap();
    let d = store.entities.register_device(new_device(e.id, DeviceKey::Mac(mac(30)))).await.unwrap().device.id;
    let (alice, bob) = (AccountId(7), AccountId(8));
    let code = fleetpulse_proto::AlarmTypeCode(301);
    let change = |at, kind| AlarmChange { device_id: d, enterprise_id: e.id, code, at: UnixMillis(at), kind };
    let apply =
        |kind, at| store.events.append(EventBatch { alarm_changes: vec![change(at, kind)], ..EventBatch::default() });
    let filter = AlarmFilter { device: Some(d), ..AlarmFilter::default() };
    let read = || {
        let filter = filter.clone();
        async move { store.events.list_alarm_records(filter, Page::first(10)).await.map(|mut r| r.pop()) }
    };
    let status_is = |want: AlarmStatus, count: u64| {
        move |r: &Option<AlarmRecord>| r.as_ref().is_some_and(|r| r.status == want && r.count == count)
    };

    apply(AlarmChangeKind::Raise { description: "a".into() }, 100).await.unwrap();
    apply(AlarmChangeKind::Acknowledge { by: alice }, 110).await.unwrap();
    let r = eventually("acknowledged", read, status_is(AlarmStatus::Acknowledged, 1)).await.unwrap();
    assert_eq!((r.acknowledged_at, r.acknowledged_by), (Some(UnixMillis(110)), Some(alice)));
    // A second acknowledgement changes nothing; a raise keeps the acknowledgement.
    apply(AlarmChangeKind::Acknowledge { by: bob }, 115).await.unwrap();
    apply(AlarmChangeKind::Raise { description: "b".into() }, 120).await.unwrap();
    let r = eventually("raised again", read, status_is(AlarmStatus::Acknowledged, 2)).await.unwrap();
    assert_eq!((r.acknowledged_by, r.description.as_str()), (Some(alice), "b"));
    apply(AlarmChangeKind::ManualClear { by: bob }, 130).await.unwrap();
    let r = eventually("cleared by hand", read, status_is(AlarmStatus::Cleared, 2)).await.unwrap();
    assert_eq!((r.cleared_at, r.cleared_by), (Some(UnixMillis(130)), Some(bob)));
    // Acknowledging a cleared alarm changes nothing; a raise starts a new, unacknowledged activation.
    apply(AlarmChangeKind::Acknowledge { by: alice }, 135).await.unwrap();
    apply(AlarmChangeKind::Raise { description: "c".into() }, 140).await.unwrap();
    let r = eventually("new activation", read, status_is(AlarmStatus::Active, 3)).await.unwrap();
    assert_eq!((r.acknowledged_at, r.acknowledged_by, r.cleared_at, r.cleared_by), (None, None, None, None));
    apply(AlarmChangeKind::Clear, 150).await.unwrap();
    let r = eventually("recovered", read, status_is(AlarmStatus::Cleared, 3)).await.unwrap();
    assert_eq!((r.cleared_at, r.cleared_by), (Some(UnixMillis(150)), None));
    let acked = AlarmFilter { status: Some(AlarmStatus::Acknowledged), ..filter };
    assert!(store.events.list_alarm_records(acked, Page::first(10)).await.unwrap().is_empty());
}

/// Retention removes old telemetry (at day granularity at least) and keeps recent rows.
async fn retention(store: &Store) {
    let e = store
        .entities
        .create_enterprise(NewEnterprise {
            profile: Default::default(),
            name: "ret".into(),
            credential: "ret".into(),
            channel_id: None,
        })
        .await
        .unwrap();
    let d = store.entities.register_device(new_device(e.id, DeviceKey::Mac(mac(20)))).await.unwrap().device.id;
    const DAY: i64 = 86_400_000;
    let now = UnixMillis::now().0;
    let at = |age_days: i64, seq| ResourceEvent {
        device_id: d,
        enterprise_id: e.id,
        seq,
        at: UnixMillis(now - age_days * DAY),
        sample: ResourceSample { cpu_centi_pct: 1, mem_used_bytes: 1, mem_total_bytes: 1 },
    };
    let batch =
        EventBatch { resources: vec![at(40, 1), at(35, 2), at(0, 3)], delivery: vec![(d, 3)], ..EventBatch::default() };
    store.events.append(batch).await.unwrap();
    let ids = [d];
    eventually("retention rows", || store.events.device_sequences(&ids), |s| s[0].rows == 3).await;
    assert!(store.events.apply_retention(UnixMillis(now - 30 * DAY)).await.unwrap() > 0);
    let left = store.events.device_sequences(&[d]).await.unwrap();
    assert_eq!((left[0].rows, left[0].ranges.clone()), (1, vec![(3, 3)]));
}

/// Alarm strategies (ALM-3): create, read, list per enterprise, update, delete.
async fn strategies(store: &Store) {
    let s = &store.entities;
    let a = s
        .create_enterprise(NewEnterprise {
            profile: Default::default(),
            name: "sa".into(),
            credential: "sa".into(),
            channel_id: None,
        })
        .await
        .unwrap();
    let b = s
        .create_enterprise(NewEnterprise {
            profile: Default::default(),
            name: "sb".into(),
            credential: "sb".into(),
            channel_id: None,
        })
        .await
        .unwrap();
    let settings = |name: &str| StrategySettings {
        name: name.into(),
        enabled: true,
        alarm_types: vec![fleetpulse_proto::AlarmTypeCode(109), fleetpulse_proto::AlarmTypeCode(401)],
        severities: vec![fleetpulse_proto::Severity::Critical],
        receivers: vec!["ops@example.com".into()],
        group_wait_ms: 10_000,
        group_interval_ms: 60_000,
        repeat_interval_ms: 14_400_000,
        thresholds: vec![StoredThreshold { metric: ThresholdMetric::Cpu, above_centi_pct: 9_000, for_ms: 600_000 }],
    };
    let first = s.create_strategy(a.id, settings("night shift"), UnixMillis(10)).await.unwrap();
    let second = s.create_strategy(a.id, settings("day shift"), UnixMillis(11)).await.unwrap();
    let other = s.create_strategy(b.id, settings("other"), UnixMillis(12)).await.unwrap();
    assert_eq!(s.strategy(first.id).await.unwrap(), Some(first.clone()));
    let listed: Vec<_> = s.list_strategies(a.id).await.unwrap().into_iter().map(|x| x.id).collect();
    assert_eq!(listed, vec![first.id, second.id], "only the enterprise's own strategies, by id");
    let mut changed = settings("night shift");
    changed.enabled = false;
    changed.receivers.push("noc@example.com".into());
    let updated = s.update_strategy(first.id, changed.clone(), UnixMillis(20)).await.unwrap().unwrap();
    assert_eq!((updated.settings, updated.created_at, updated.updated_at), (changed, UnixMillis(10), UnixMillis(20)));
    assert!(s.delete_strategy(second.id).await.unwrap());
    assert!(!s.delete_strategy(second.id).await.unwrap());
    assert_eq!(s.strategy(second.id).await.unwrap(), None);
    assert_eq!(s.update_strategy(second.id, settings("x"), UnixMillis(30)).await.unwrap(), None);
    assert_eq!(s.list_strategies(b.id).await.unwrap(), vec![other]);
}

/// The operation log (LOG-1): batches appended whole, rows read back exactly, newest first,
/// keyset pages going back in time, filters by time, operation type, account and enterprise;
/// bounded batches, fields and pages.
async fn operation_log(store: &Store) {
    let s = &store.entities;
    const T: i64 = 1_700_000_000_000;
    let (alice, bob) = (AccountId(7), AccountId(8));
    let (acme, globex) = (EnterpriseId(70), EnterpriseId(80));
    let row = |account: Option<AccountId>, acting_as: Option<EnterpriseId>, op: &str, at: i64, status: u16| {
        let (method, template) = op.split_once(' ').unwrap();
        NewOperationLog {
            account_id: account,
            account_email: match account {
                Some(AccountId(7)) => "alice@example.com".into(),
                Some(_) => "bob@example.com".into(),
                None => "nobody@example.com".into(),
            },
            acting_as,
            operation: op.into(),
            method: method.into(),
            path: template.replace("{id}", &at.to_string()),
            ip: if at % 2 == 0 { "203.0.113.7".into() } else { "2001:db8::1".into() },
            at: UnixMillis(T + at),
            status,
            outcome: if status < 400 { OperationOutcome::Success } else { OperationOutcome::Failure },
        }
    };
    const CREATE: &str = "POST /api/v1/enterprises";
    const UPDATE: &str = "PUT /api/v1/strategies/{id}";
    const LOGIN: &str = "POST /api/v1/login";
    s.append_operation_logs(Vec::new()).await.unwrap();
    assert!(s.list_operation_logs(OperationLogFilter::default(), Page::first(10)).await.unwrap().is_empty());
    let first = vec![
        row(Some(alice), None, CREATE, 10, 201),
        row(None, None, LOGIN, 20, 401),
        row(Some(alice), Some(acme), UPDATE, 30, 200),
    ];
    let second = vec![
        row(Some(bob), Some(globex), UPDATE, 40, 404),
        row(Some(bob), Some(acme), CREATE, 50, 201),
        row(Some(alice), Some(acme), UPDATE, 60, 200),
    ];
    s.append_operation_logs(first.clone()).await.unwrap();
    s.append_operation_logs(second.clone()).await.unwrap();
    let all = s.list_operation_logs(OperationLogFilter::default(), Page::first(100)).await.unwrap();
    // Newest first: the batches' rows in reverse, every field as given.
    let appended: Vec<NewOperationLog> = first.iter().chain(&second).rev().cloned().collect();
    let stored: Vec<NewOperationLog> = all.iter().map(|r| r.entry.clone()).collect();
    assert_eq!(stored, appended);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "ids descend");
    assert_eq!((all[5].entry.path.as_str(), all[5].entry.method.as_str()), ("/api/v1/enterprises", "POST"));
    assert_eq!(
        (all[0].entry.path.as_str(), all[4].entry.outcome),
        ("/api/v1/strategies/60", OperationOutcome::Failure)
    );

    // Keyset pages: ids below the cursor, newest first.
    let mut paged = Vec::new();
    let mut page = Page::first(4);
    // Bounded: a cursor that does not move on must fail the case, not hang it.
    for _ in 0..=all.len() {
        let rows = s.list_operation_logs(OperationLogFilter::default(), page).await.unwrap();
        assert!(rows.len() <= 4);
        let Some(last) = rows.last() else { break };
        page.after = last.id;
        paged.extend(rows);
    }
    assert_eq!(paged, all);
    let below = s.list_operation_logs(OperationLogFilter::default(), Page { after: all[1].id, limit: 2 }).await;
    assert_eq!(below.unwrap(), all[2..4].to_vec());
    let beyond = Page { after: u64::MAX, limit: 100 };
    assert_eq!(s.list_operation_logs(OperationLogFilter::default(), beyond).await.unwrap(), all);
    assert!(s.list_operation_logs(OperationLogFilter::default(), Page::first(0)).await.unwrap().is_empty());

    // Filters, alone and together; each in the newest-first order.
    let ats = |filter: OperationLogFilter| async move {
        let rows = s.list_operation_logs(filter, Page::first(100)).await.unwrap();
        rows.iter().map(|r| r.entry.at.0 - T).collect::<Vec<_>>()
    };
    let f = OperationLogFilter::default;
    assert_eq!(ats(OperationLogFilter { from: Some(UnixMillis(T + 30)), ..f() }).await, [60, 50, 40, 30]);
    assert_eq!(ats(OperationLogFilter { to: Some(UnixMillis(T + 30)), ..f() }).await, [20, 10]);
    let window = OperationLogFilter { from: Some(UnixMillis(T + 20)), to: Some(UnixMillis(T + 50)), ..f() };
    assert_eq!(ats(window.clone()).await, [40, 30, 20]);
    assert_eq!(ats(OperationLogFilter { operation: Some(UPDATE.into()), ..f() }).await, [60, 40, 30]);
    assert_eq!(ats(OperationLogFilter { operation: Some("PUT /api/v1/strategies".into()), ..f() }).await, [0; 0]);
    let impossible = "o".repeat(MAX_OPERATION_LOG_OPERATION + 1);
    assert_eq!(ats(OperationLogFilter { operation: Some(impossible), ..f() }).await, [0; 0]);
    assert_eq!(ats(OperationLogFilter { operation: Some("PUT\0/".into()), ..f() }).await, [0; 0]);
    assert_eq!(ats(OperationLogFilter { account_id: Some(alice), ..f() }).await, [60, 30, 10]);
    assert_eq!(ats(OperationLogFilter { account_id: Some(AccountId(u64::MAX)), ..f() }).await, [0; 0]);
    assert_eq!(ats(OperationLogFilter { enterprise: Some(acme), ..f() }).await, [60, 50, 30]);
    assert_eq!(ats(OperationLogFilter { enterprise: Some(EnterpriseId(u64::MAX)), ..f() }).await, [0; 0]);
    let alice_updates = OperationLogFilter { account_id: Some(alice), operation: Some(UPDATE.into()), ..f() };
    assert_eq!(ats(alice_updates.clone()).await, [60, 30]);
    assert_eq!(ats(OperationLogFilter { enterprise: Some(acme), ..window }).await, [30]);
    // A tenant's view: its accounts' rows or rows acting inside its enterprises.
    let within = |accounts: Vec<AccountId>, enterprises: Vec<EnterpriseId>| OperationLogFilter {
        within: Some(OperationLogScope { accounts, enterprises }),
        ..f()
    };
    assert_eq!(ats(within(vec![alice], vec![])).await, [60, 30, 10]);
    assert_eq!(ats(within(vec![], vec![acme])).await, [60, 50, 30]);
    assert_eq!(ats(within(vec![alice], vec![acme])).await, [60, 50, 30, 10]);
    assert_eq!(ats(within(vec![], vec![])).await, [0; 0]);
    let crowd = within((0..=MAX_ACCOUNT_FILTER as u64).map(AccountId).collect(), vec![]);
    assert!(matches!(s.list_operation_logs(crowd, Page::first(1)).await, Err(StoreError::InvalidInput(_))));
    let page = s.list_operation_logs(alice_updates, Page { after: all[0].id, limit: 10 }).await.unwrap();
    assert_eq!(page.iter().map(|r| r.entry.at.0 - T).collect::<Vec<_>>(), [30], "filters and the cursor together");

    // Bounds: each field at its limit is kept, one byte more refuses the whole batch.
    let mut longest = row(Some(bob), None, CREATE, 70, 201);
    longest.account_email = "e".repeat(MAX_OPERATION_LOG_EMAIL);
    longest.operation = "o".repeat(MAX_OPERATION_LOG_OPERATION);
    longest.method = "m".repeat(MAX_OPERATION_LOG_METHOD);
    longest.path = "p".repeat(MAX_OPERATION_LOG_PATH);
    longest.ip = "i".repeat(MAX_OPERATION_LOG_IP);
    let too_long: [fn(&mut NewOperationLog); 7] = [
        |r| r.account_email.push('x'),
        |r| r.operation.push('x'),
        |r| r.method.push('x'),
        |r| r.path.push('x'),
        |r| r.ip.push('x'),
        |r| r.path = "/nul\0".into(),
        |r| r.acting_as = Some(EnterpriseId(u64::MAX)),
    ];
    for (i, spoil) in too_long.iter().enumerate() {
        let mut bad = longest.clone();
        spoil(&mut bad);
        let batch = vec![row(Some(bob), None, CREATE, 71, 201), bad];
        let refused = s.append_operation_logs(batch).await;
        assert!(matches!(refused, Err(StoreError::InvalidInput(_))), "field {i}: {refused:?}");
    }
    let too_many = vec![row(Some(bob), None, CREATE, 72, 201); MAX_OPERATION_LOG_BATCH + 1];
    assert!(matches!(s.append_operation_logs(too_many).await, Err(StoreError::InvalidInput(_))));
    assert_eq!(s.list_operation_logs(OperationLogFilter::default(), Page::first(100)).await.unwrap(), all);
    s.append_operation_logs(vec![longest.clone()]).await.unwrap();
    let newest = s.list_operation_logs(OperationLogFilter::default(), Page::first(1)).await.unwrap();
    assert_eq!(
        (newest[0].entry.path.len(), newest[0].entry.account_email.len()),
        (MAX_OPERATION_LOG_PATH, MAX_OPERATION_LOG_EMAIL)
    );
    assert!(newest[0].id > all[0].id);

    // The largest batch is appended whole; a page never holds more than the cap.
    let full: Vec<_> = (0..MAX_OPERATION_LOG_BATCH as i64).map(|i| row(Some(bob), None, LOGIN, 100 + i, 200)).collect();
    s.append_operation_logs(full).await.unwrap();
    let huge = s.list_operation_logs(OperationLogFilter::default(), Page::first(u32::MAX)).await.unwrap();
    assert_eq!(huge.len(), MAX_OPERATION_LOG_PAGE as usize);
    assert_eq!((huge[0].entry.at, huge[999].entry.at), (UnixMillis(T + 1_099), UnixMillis(T + 100)));
    let rest = s.list_operation_logs(OperationLogFilter::default(), Page { after: huge[999].id, limit: 100 }).await;
    assert_eq!(rest.unwrap()[1..], all[..]);
}

/// Login protection (ACC-2): `max_failures` wrong passwords lock the account for `lock_for_ms`
/// and start the count again; a success forgets the count and the lock; failures counted at
/// once each count.
async fn login_protection(store: &Store) {
    let s = &store.entities;
    let new = |email: &str| platform_admin(email);
    let account = s.create_account(new("locked@example.com")).await.unwrap();
    let other = s.create_account(new("bystander@example.com")).await.unwrap();
    assert_eq!((account.failed_logins, account.locked_until), (0, None));
    assert_eq!(s.account(account.id).await.unwrap(), Some(account.clone()));
    const NOW: i64 = 1_700_000_000_000;
    const LOCK: u64 = 300_000;
    let fail = |at: i64| s.record_login_failure(account.id, UnixMillis(at), 10, LOCK);
    for n in 1..=9 {
        let a = fail(NOW + n).await.unwrap().unwrap();
        assert_eq!((a.failed_logins, a.locked_until), (n as u32, None), "failure {n}");
        assert!(!a.is_locked(UnixMillis(NOW + n)));
    }
    let locked = fail(NOW + 10).await.unwrap().unwrap();
    let until = UnixMillis(NOW + 10 + LOCK as i64);
    assert_eq!((locked.failed_logins, locked.locked_until), (0, Some(until)), "the 10th locks and resets");
    assert!(locked.is_locked(UnixMillis(NOW + 10)) && locked.is_locked(UnixMillis(until.0 - 1)));
    assert!(!locked.is_locked(until));
    assert_eq!(s.account(account.id).await.unwrap(), Some(locked.clone()));
    assert_eq!(s.account_by_email("LOCKED@example.com").await.unwrap(), Some(locked.clone()));
    let bystander = s.account(other.id).await.unwrap().unwrap();
    assert_eq!((bystander.failed_logins, bystander.locked_until), (0, None), "other accounts are untouched");
    // Counting goes on from 0; the lock stays until it runs out or a success lifts it.
    let again = fail(NOW + 20).await.unwrap().unwrap();
    assert_eq!((again.failed_logins, again.locked_until), (1, Some(until)));
    s.record_login_success(account.id).await.unwrap();
    let cleared = s.account(account.id).await.unwrap().unwrap();
    assert_eq!((cleared.failed_logins, cleared.locked_until), (0, None));
    assert_eq!(
        (cleared.email, cleared.password_hash, cleared.created_at),
        (account.email, account.password_hash, account.created_at)
    );

    // Unknown accounts: nothing to count or clear.
    assert_eq!(s.record_login_failure(AccountId(999_999), UnixMillis(NOW), 10, LOCK).await.unwrap(), None);
    assert_eq!(s.record_login_failure(AccountId(u64::MAX), UnixMillis(NOW), 10, LOCK).await.unwrap(), None);
    s.record_login_success(AccountId(999_999)).await.unwrap();
    s.record_login_success(AccountId(u64::MAX)).await.unwrap();
    // Bounds: at least one failure; a lock beyond the end of time ends there.
    let zero = s.record_login_failure(other.id, UnixMillis(NOW), 0, LOCK).await;
    assert!(matches!(zero, Err(StoreError::InvalidInput(_))), "{zero:?}");
    let huge = s.record_login_failure(other.id, UnixMillis(NOW), MAX_LOGIN_FAILURE_THRESHOLD + 1, LOCK).await;
    assert!(matches!(huge, Err(StoreError::InvalidInput(_))), "{huge:?}");
    let forever = s.record_login_failure(other.id, UnixMillis(NOW), 1, u64::MAX).await.unwrap().unwrap();
    assert_eq!((forever.failed_logins, forever.locked_until), (0, Some(UnixMillis(i64::MAX))));
    s.record_login_success(other.id).await.unwrap();

    // Concurrent failures each count exactly once: 25 at once with a limit of 10 lock twice
    // and leave 5 counted; the answers are the counts 1..=10 (10 as 0), twice, then 1..=5.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..25 {
        let entities = store.entities.clone();
        tasks.spawn(async move { entities.record_login_failure(account.id, UnixMillis(NOW + 100), 10, LOCK).await });
    }
    let mut counts: Vec<u32> = tasks.join_all().await.into_iter().map(|a| a.unwrap().unwrap().failed_logins).collect();
    counts.sort_unstable();
    let mut expected: Vec<u32> = (0..10).chain(0..10).chain(1..=5).collect();
    expected.sort_unstable();
    assert_eq!(counts, expected);
    let after = s.account(account.id).await.unwrap().unwrap();
    assert_eq!((after.failed_logins, after.locked_until), (5, Some(UnixMillis(NOW + 100 + LOCK as i64))));
}

/// Session activity and logout (ACC-2): `last_seen_at` is stored as given and only moves
/// forward; logout deletes one session, or all of an account's.
async fn session_lifecycle(store: &Store) {
    let s = &store.entities;
    let new = |email: &str| platform_admin(email);
    let alice = s.create_account(new("sessions-alice@example.com")).await.unwrap();
    let bob = s.create_account(new("sessions-bob@example.com")).await.unwrap();
    let session = |hash: u8, account: AccountId| Session {
        acting: None,
        token_hash: TokenHash([hash; 32]),
        account_id: account,
        created_at: UnixMillis(10_000),
        expires_at: UnixMillis(1_000_000),
        last_seen_at: UnixMillis(10_500),
    };
    let read = |hash: u8| s.session(TokenHash([hash; 32]), UnixMillis(20_000));
    for (hash, account) in [(40, alice.id), (41, alice.id), (42, bob.id)] {
        s.create_session(session(hash, account)).await.unwrap();
    }
    assert_eq!(read(40).await.unwrap(), Some(session(40, alice.id)), "last_seen_at is stored as given");

    // Touching moves last_seen_at forward only, and only of that session.
    s.touch_session(TokenHash([40; 32]), UnixMillis(12_000)).await.unwrap();
    assert_eq!(read(40).await.unwrap().unwrap().last_seen_at, UnixMillis(12_000));
    s.touch_session(TokenHash([40; 32]), UnixMillis(11_000)).await.unwrap();
    assert_eq!(read(40).await.unwrap().unwrap().last_seen_at, UnixMillis(12_000), "never back");
    s.touch_session(TokenHash([40; 32]), UnixMillis(12_000)).await.unwrap();
    assert_eq!(read(40).await.unwrap().unwrap().last_seen_at, UnixMillis(12_000));
    assert_eq!(read(41).await.unwrap(), Some(session(41, alice.id)), "other sessions are untouched");
    s.touch_session(TokenHash([49; 32]), UnixMillis(12_000)).await.unwrap();
    assert_eq!(read(49).await.unwrap(), None, "touching an unknown session creates none");

    // Logout deletes the one session, once.
    assert!(s.delete_session(TokenHash([40; 32])).await.unwrap());
    assert_eq!(read(40).await.unwrap(), None);
    assert!(!s.delete_session(TokenHash([40; 32])).await.unwrap());
    assert!(read(41).await.unwrap().is_some());

    // Deleting an account's sessions leaves other accounts' sessions.
    s.create_session(session(43, alice.id)).await.unwrap();
    assert_eq!(s.delete_account_sessions(alice.id).await.unwrap(), 2);
    assert_eq!((read(41).await.unwrap(), read(43).await.unwrap()), (None, None));
    assert_eq!(read(42).await.unwrap(), Some(session(42, bob.id)));
    assert_eq!(s.delete_account_sessions(alice.id).await.unwrap(), 0);
    assert_eq!(s.delete_account_sessions(AccountId(999_999)).await.unwrap(), 0);
    assert_eq!(s.delete_account_sessions(AccountId(u64::MAX)).await.unwrap(), 0);
    assert_eq!(s.delete_account_sessions(bob.id).await.unwrap(), 1);
    assert_eq!(read(42).await.unwrap(), None);
}

/// TOTP state (ACC-3): the secret round-trips and is never printed; a step is accepted once
/// and only above the last one, atomically.
async fn totp(store: &Store) {
    let s = &store.entities;
    let new = |email: &str| platform_admin(email);
    let account = s.create_account(new("totp@example.com")).await.unwrap();
    let other = s.create_account(new("totp-other@example.com")).await.unwrap();
    assert_eq!((account.totp_secret, account.totp_last_step), (None, None));
    assert_eq!(s.account(account.id).await.unwrap(), Some(account.clone()));
    let state = |id: AccountId| async move {
        let a = s.account(id).await.unwrap().unwrap();
        (a.totp_secret, a.totp_last_step)
    };

    const SECRET: [u8; 20] = [0xAB; 20];
    assert!(s.set_totp(account.id, Some(SECRET)).await.unwrap());
    assert_eq!(state(account.id).await, (Some(SECRET), None));
    let read = s.account_by_email("TOTP@example.com").await.unwrap().unwrap();
    assert_eq!(read.totp_secret, Some(SECRET));
    let printed = format!("{read:?}");
    assert!(!printed.contains("171") && !printed.contains("ab") && !printed.contains("AB"), "{printed}");

    // Steps: 5 once, then neither 5 again nor 4; 6 after it.
    assert!(s.record_totp_step(account.id, 5).await.unwrap());
    assert_eq!(state(account.id).await, (Some(SECRET), Some(5)));
    assert!(!s.record_totp_step(account.id, 5).await.unwrap(), "replay");
    assert!(!s.record_totp_step(account.id, 4).await.unwrap(), "older step");
    assert_eq!(state(account.id).await, (Some(SECRET), Some(5)));
    assert!(s.record_totp_step(account.id, 6).await.unwrap());
    assert_eq!(state(account.id).await, (Some(SECRET), Some(6)));
    assert_eq!(state(other.id).await, (None, None), "other accounts are untouched");

    // Bounds: steps up to i64::MAX.
    let huge = s.record_totp_step(account.id, i64::MAX as u64 + 1).await;
    assert!(matches!(huge, Err(StoreError::InvalidInput(_))), "{huge:?}");
    assert_eq!(state(account.id).await, (Some(SECRET), Some(6)));
    assert!(s.record_totp_step(account.id, i64::MAX as u64).await.unwrap());
    assert!(!s.record_totp_step(account.id, i64::MAX as u64).await.unwrap());
    assert_eq!(state(account.id).await, (Some(SECRET), Some(i64::MAX as u64)));

    // A new secret forgets the last step; clearing removes the secret.
    let renewed = [7; 20];
    assert!(s.set_totp(account.id, Some(renewed)).await.unwrap());
    assert_eq!(state(account.id).await, (Some(renewed), None));
    assert!(s.record_totp_step(account.id, 1).await.unwrap());
    assert!(s.set_totp(account.id, None).await.unwrap());
    assert_eq!(state(account.id).await, (None, None));
    let cleared = s.account(account.id).await.unwrap().unwrap();
    assert_eq!((cleared.email, cleared.password_hash), (account.email.clone(), account.password_hash.clone()));

    // Unknown accounts.
    for unknown in [AccountId(999_999), AccountId(u64::MAX)] {
        assert!(!s.set_totp(unknown, Some(SECRET)).await.unwrap());
        assert!(!s.set_totp(unknown, None).await.unwrap());
        assert!(!s.record_totp_step(unknown, 5).await.unwrap());
    }

    // Concurrent attempts at the same step: exactly one is accepted.
    assert!(s.set_totp(other.id, Some(SECRET)).await.unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let entities = store.entities.clone();
        tasks.spawn(async move { entities.record_totp_step(other.id, 100).await });
    }
    let accepted = tasks.join_all().await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(accepted, 1);
    assert_eq!(state(other.id).await, (Some(SECRET), Some(100)));
}

fn new_channel(name: &str, parent_id: Option<ChannelId>, allow_sub_channels: bool) -> NewChannel {
    NewChannel {
        phone: String::new(),
        country: String::new(),
        name: name.into(),
        parent_id,
        allow_sub_channels,
        device_management: true,
        rps: false,
        contact: "Ann".into(),
        email: format!("{name}@example.com"),
    }
}

fn invalid<T: std::fmt::Debug>(result: Result<T>, needle: &str) {
    match result {
        Err(StoreError::InvalidInput(message)) => assert!(message.contains(needle), "{message:?} lacks {needle:?}"),
        other => panic!("expected InvalidInput({needle:?}), got {other:?}"),
    }
}

/// Tenants (TEN-1..4): the channel tree, enterprises in channels, tenant admin accounts.
async fn tenants(store: &Store) {
    let s = &store.entities;
    let ids = |channels: Vec<Channel>| channels.into_iter().map(|c| c.id).collect::<Vec<_>>();

    // The tree: two top-level channels, sub-channels only where the parent allows them.
    let top = s.create_channel(new_channel("top", None, true), UnixMillis(10)).await.unwrap();
    assert_eq!((top.parent_id, top.created_at, top.name.as_str()), (None, UnixMillis(10), "top"));
    assert_eq!(s.channel(top.id).await.unwrap(), Some(top.clone()));
    let sibling = s.create_channel(new_channel("sibling", None, false), UnixMillis(11)).await.unwrap();
    let sub = s.create_channel(new_channel("sub", Some(top.id), true), UnixMillis(12)).await.unwrap();
    assert_eq!(sub.parent_id, Some(top.id));
    let leaf = s.create_channel(new_channel("leaf", Some(sub.id), false), UnixMillis(13)).await.unwrap();
    let mut flags = new_channel("sub2", Some(top.id), false);
    (flags.device_management, flags.rps) = (false, true);
    let sub2 = s.create_channel(flags, UnixMillis(14)).await.unwrap();
    let stored = s.channel(sub2.id).await.unwrap().unwrap();
    assert_eq!(stored, sub2);
    assert_eq!(
        (stored.allow_sub_channels, stored.device_management, stored.rps, stored.contact.as_str()),
        (false, false, true, "Ann")
    );
    assert_eq!(stored.email, "sub2@example.com");

    // Refused: under a channel that forbids sub-channels, under an unknown parent, bad names.
    invalid(
        s.create_channel(new_channel("x", Some(leaf.id), true), UnixMillis(15)).await,
        "does not allow sub-channels",
    );
    invalid(
        s.create_channel(new_channel("x", Some(sibling.id), true), UnixMillis(15)).await,
        "does not allow sub-channels",
    );
    let unknown = ChannelId(sub2.id.0 + 1_000);
    invalid(s.create_channel(new_channel("x", Some(unknown), true), UnixMillis(15)).await, "does not exist");
    invalid(
        s.create_channel(new_channel("x", Some(ChannelId(u64::MAX)), true), UnixMillis(15)).await,
        "does not exist",
    );
    invalid(s.create_channel(new_channel("", None, true), UnixMillis(15)).await, "channel name");
    invalid(s.create_channel(new_channel(&"n".repeat(201), None, true), UnixMillis(15)).await, "channel name");
    // The bound counts characters, not bytes.
    let wide = s.create_channel(new_channel(&"é".repeat(200), None, false), UnixMillis(16)).await.unwrap();
    assert_eq!(s.channel(wide.id).await.unwrap().map(|c| c.name.chars().count()), Some(200));
    assert_eq!(s.channel(unknown).await.unwrap(), None);
    assert_eq!(s.channel(ChannelId(u64::MAX)).await.unwrap(), None);
    // Nothing was created by the refused calls.
    let all = vec![top.id, sibling.id, sub.id, leaf.id, sub2.id, wide.id];
    assert_eq!(ids(s.list_channels(None, Page::first(100)).await.unwrap()), all);
    assert_eq!(ids(s.list_channels(None, Page { after: sub.id.0, limit: 2 }).await.unwrap()), vec![leaf.id, sub2.id]);

    // A subtree: strict descendants only, never the root, a sibling or another tree.
    assert_eq!(ids(s.list_channels(Some(top.id), Page::first(100)).await.unwrap()), vec![sub.id, leaf.id, sub2.id]);
    assert_eq!(ids(s.list_channels(Some(top.id), Page::first(2)).await.unwrap()), vec![sub.id, leaf.id]);
    assert_eq!(ids(s.list_channels(Some(top.id), Page { after: sub.id.0, limit: 1 }).await.unwrap()), vec![leaf.id]);
    assert_eq!(ids(s.list_channels(Some(top.id), Page { after: sub2.id.0, limit: 10 }).await.unwrap()), vec![]);
    assert_eq!(ids(s.list_channels(Some(sub.id), Page::first(100)).await.unwrap()), vec![leaf.id]);
    assert_eq!(ids(s.list_channels(Some(leaf.id), Page::first(100)).await.unwrap()), vec![]);
    assert_eq!(ids(s.list_channels(Some(sibling.id), Page::first(100)).await.unwrap()), vec![]);
    assert_eq!(ids(s.list_channels(Some(unknown), Page::first(100)).await.unwrap()), vec![]);
    assert_eq!(s.channel_subtree(top.id).await.unwrap(), vec![top.id, sub.id, leaf.id, sub2.id]);
    assert_eq!(s.channel_subtree(sub.id).await.unwrap(), vec![sub.id, leaf.id]);
    assert_eq!(s.channel_subtree(sibling.id).await.unwrap(), vec![sibling.id]);
    assert_eq!(s.channel_subtree(unknown).await.unwrap(), vec![]);
    assert_eq!(s.channel_subtree(ChannelId(u64::MAX)).await.unwrap(), vec![]);

    // Enterprises in channels.
    let enterprise = |name: &str, channel_id| NewEnterprise {
        profile: Default::default(),
        name: name.into(),
        credential: format!("t-{name}"),
        channel_id,
    };
    let e_top = s.create_enterprise(enterprise("e-top", Some(top.id))).await.unwrap();
    assert_eq!(e_top.channel_id, Some(top.id));
    let e_leaf = s.create_enterprise(enterprise("e-leaf", Some(leaf.id))).await.unwrap();
    let e_sibling = s.create_enterprise(enterprise("e-sibling", Some(sibling.id))).await.unwrap();
    let e_none = s.create_enterprise(enterprise("e-none", None)).await.unwrap();
    assert_eq!(e_none.channel_id, None);
    invalid(s.create_enterprise(enterprise("e-unknown", Some(unknown))).await, "does not exist");
    invalid(s.create_enterprise(enterprise("e-huge", Some(ChannelId(u64::MAX)))).await, "does not exist");
    assert_eq!(s.enterprise_by_credential("t-e-unknown").await.unwrap(), None);
    assert_eq!(s.enterprise(e_leaf.id).await.unwrap(), Some(e_leaf.clone()));
    assert_eq!(s.enterprise_by_credential("t-e-leaf").await.unwrap().and_then(|e| e.channel_id), Some(leaf.id));
    let eids = |es: Vec<Enterprise>| es.into_iter().map(|e| e.id).collect::<Vec<_>>();
    let top_tree = s.channel_subtree(top.id).await.unwrap();
    let in_top = s.list_enterprises_in(Some(&top_tree), Page::first(100)).await.unwrap();
    assert_eq!(in_top, vec![e_top.clone(), e_leaf.clone()]);
    assert_eq!(eids(s.list_enterprises_in(Some(&top_tree), Page::first(1)).await.unwrap()), vec![e_top.id]);
    let next = Page { after: e_top.id.0, limit: 10 };
    assert_eq!(eids(s.list_enterprises_in(Some(&top_tree), next).await.unwrap()), vec![e_leaf.id]);
    let sub_tree = s.channel_subtree(sub.id).await.unwrap();
    assert_eq!(eids(s.list_enterprises_in(Some(&sub_tree), Page::first(100)).await.unwrap()), vec![e_leaf.id]);
    let odd = [sibling.id, ChannelId(u64::MAX), sibling.id];
    assert_eq!(eids(s.list_enterprises_in(Some(&odd), Page::first(100)).await.unwrap()), vec![e_sibling.id]);
    assert_eq!(eids(s.list_enterprises_in(Some(&[]), Page::first(100)).await.unwrap()), vec![]);
    assert_eq!(eids(s.list_enterprises_in(Some(&[sub2.id]), Page::first(100)).await.unwrap()), vec![]);
    let from_top = Page { after: e_top.id.0 - 1, limit: 100 };
    let everything = vec![e_top.id, e_leaf.id, e_sibling.id, e_none.id];
    assert_eq!(eids(s.list_enterprises_in(None, from_top).await.unwrap()), everything);
    assert_eq!(eids(s.list_enterprises(from_top).await.unwrap()), everything);
    let too_many = vec![top.id; MAX_ENTERPRISE_CHANNEL_FILTER + 1];
    invalid(s.list_enterprises_in(Some(&too_many), Page::first(1)).await, "channel ids");
    let most = vec![top.id; MAX_ENTERPRISE_CHANNEL_FILTER];
    assert_eq!(eids(s.list_enterprises_in(Some(&most), Page::first(100)).await.unwrap()), vec![e_top.id]);

    // Tenant admin accounts: the role decides which tenant an account has, and it must exist.
    let account = |email: &str, role, channel_id, enterprise_id| NewAccount {
        parent_id: None,
        permissions: None,
        email: email.into(),
        password_hash: "phc".into(),
        role,
        channel_id,
        enterprise_id,
        must_change_password: false,
    };
    let channel_admin =
        s.create_account(account("ch@example.com", Role::ChannelAdmin, Some(sub.id), None)).await.unwrap();
    assert_eq!(
        (channel_admin.role, channel_admin.channel_id, channel_admin.enterprise_id),
        (Role::ChannelAdmin, Some(sub.id), None)
    );
    let read = s.account(channel_admin.id).await.unwrap().unwrap();
    assert_eq!(read, channel_admin);
    let enterprise_admin =
        s.create_account(account("ent@example.com", Role::EnterpriseAdmin, None, Some(e_leaf.id))).await.unwrap();
    let read = s.account_by_email("ENT@example.com").await.unwrap().unwrap();
    assert_eq!(read, enterprise_admin);
    assert_eq!((read.role, read.channel_id, read.enterprise_id), (Role::EnterpriseAdmin, None, Some(e_leaf.id)));
    let refused = [
        account("r1@example.com", Role::PlatformAdmin, Some(top.id), None),
        account("r2@example.com", Role::PlatformAdmin, None, Some(e_top.id)),
        account("r3@example.com", Role::ChannelAdmin, None, None),
        account("r4@example.com", Role::ChannelAdmin, Some(top.id), Some(e_top.id)),
        account("r5@example.com", Role::EnterpriseAdmin, None, None),
        account("r6@example.com", Role::EnterpriseAdmin, Some(top.id), Some(e_top.id)),
        account("r7@example.com", Role::EnterpriseAdmin, Some(top.id), None),
        account("r8@example.com", Role::ChannelAdmin, None, Some(e_top.id)),
    ];
    for new in refused {
        let email = new.email.clone();
        invalid(s.create_account(new).await, "account has");
        assert_eq!(s.account_by_email(&email).await.unwrap(), None, "{email}");
    }
    invalid(
        s.create_account(account("r9@example.com", Role::ChannelAdmin, Some(unknown), None)).await,
        "does not exist",
    );
    let unknown_enterprise = EnterpriseId(e_none.id.0 + 1_000);
    invalid(
        s.create_account(account("r10@example.com", Role::EnterpriseAdmin, None, Some(unknown_enterprise))).await,
        "does not exist",
    );
    invalid(
        s.create_account(account("r11@example.com", Role::EnterpriseAdmin, None, Some(EnterpriseId(u64::MAX)))).await,
        "does not exist",
    );
    for email in ["r9@example.com", "r10@example.com", "r11@example.com"] {
        assert_eq!(s.account_by_email(email).await.unwrap(), None, "{email}");
    }
    assert_eq!(s.count_accounts(Role::ChannelAdmin).await.unwrap(), 1);
    assert_eq!(s.count_accounts(Role::EnterpriseAdmin).await.unwrap(), 1);
    for role in [Role::PlatformAdmin, Role::ChannelAdmin, Role::EnterpriseAdmin] {
        assert_eq!(Role::parse(role.as_str()), Some(role));
    }
    assert_eq!(Role::parse("root"), None);

    // Listing accounts (TEN-2): all of them, or those of the given channels or enterprises.
    let ids = |accounts: Vec<Account>| accounts.into_iter().map(|a| a.id).collect::<Vec<_>>();
    let all = ids(s.list_accounts(AccountFilter::default(), Page::first(10_000)).await.unwrap());
    assert!(all.windows(2).all(|w| w[0] < w[1]), "{all:?}");
    assert!(all.contains(&channel_admin.id) && all.contains(&enterprise_admin.id), "{all:?}");
    let after_first = ids(s.list_accounts(AccountFilter::default(), Page { after: all[0].0, limit: 1 }).await.unwrap());
    assert_eq!(after_first, vec![all[1]]);
    let filter = |channels: Option<Vec<ChannelId>>, enterprises: Option<Vec<EnterpriseId>>| AccountFilter {
        channels,
        enterprises,
        ..AccountFilter::default()
    };
    let listed = |f: AccountFilter| async move { ids(s.list_accounts(f, Page::first(100)).await.unwrap()) };
    assert_eq!(listed(filter(Some(sub_tree.clone()), None)).await, vec![channel_admin.id]);
    assert_eq!(listed(filter(None, Some(vec![e_leaf.id]))).await, vec![enterprise_admin.id]);
    let both = filter(Some(vec![sub.id]), Some(vec![e_leaf.id, EnterpriseId(u64::MAX)]));
    assert_eq!(listed(both.clone()).await, vec![channel_admin.id, enterprise_admin.id]);
    let page = Page { after: channel_admin.id.0, limit: 100 };
    assert_eq!(ids(s.list_accounts(both, page).await.unwrap()), vec![enterprise_admin.id]);
    assert_eq!(listed(filter(Some(vec![top.id]), Some(vec![e_top.id]))).await, vec![]);
    assert_eq!(listed(filter(Some(vec![]), None)).await, vec![]);
    assert_eq!(listed(filter(None, Some(vec![]))).await, vec![]);
    invalid(
        s.list_accounts(filter(Some(vec![top.id; MAX_ACCOUNT_FILTER + 1]), None), Page::first(1)).await,
        "channel ids",
    );
    invalid(
        s.list_accounts(filter(None, Some(vec![e_top.id; MAX_ACCOUNT_FILTER + 1])), Page::first(1)).await,
        "enterprise ids",
    );

    // Freezing (TEN-2) sets the flag and ends the account's sessions; unfreezing clears it.
    assert!(!enterprise_admin.frozen);
    let session = |n: u8, account: AccountId| Session {
        acting: None,
        token_hash: TokenHash([n; 32]),
        account_id: account,
        created_at: UnixMillis(1_000),
        expires_at: UnixMillis(i64::MAX),
        last_seen_at: UnixMillis(1_000),
    };
    s.create_session(session(201, enterprise_admin.id)).await.unwrap();
    s.create_session(session(202, enterprise_admin.id)).await.unwrap();
    s.create_session(session(203, channel_admin.id)).await.unwrap();
    assert!(s.set_account_frozen(enterprise_admin.id, true).await.unwrap());
    assert!(s.account(enterprise_admin.id).await.unwrap().unwrap().frozen);
    assert!(s.account_by_email("ent@example.com").await.unwrap().unwrap().frozen);
    for n in [201, 202] {
        assert_eq!(s.session(TokenHash([n; 32]), UnixMillis(2_000)).await.unwrap(), None);
    }
    assert!(s.session(TokenHash([203; 32]), UnixMillis(2_000)).await.unwrap().is_some());
    assert!(!s.account(channel_admin.id).await.unwrap().unwrap().frozen);
    assert!(s.set_account_frozen(enterprise_admin.id, false).await.unwrap());
    assert!(!s.account(enterprise_admin.id).await.unwrap().unwrap().frozen);
    s.create_session(session(204, enterprise_admin.id)).await.unwrap();
    assert!(s.set_account_frozen(enterprise_admin.id, false).await.unwrap());
    assert!(s.session(TokenHash([204; 32]), UnixMillis(2_000)).await.unwrap().is_some(), "unfreezing keeps sessions");
    let unknown_account = AccountId(all.last().unwrap().0 + 1_000);
    assert!(!s.set_account_frozen(unknown_account, true).await.unwrap());
    assert!(!s.set_account_frozen(AccountId(u64::MAX), true).await.unwrap());
    assert!(s.delete_account_sessions(enterprise_admin.id).await.unwrap() == 1);
    assert!(s.delete_account_sessions(channel_admin.id).await.unwrap() == 1);
}

/// Forced password change (ACC-2): the flag is stored as created, and `set_password` replaces
/// the hash and the flag of that account only.
async fn password_change(store: &Store) {
    let s = &store.entities;
    let new = |email: &str, must_change_password| NewAccount {
        parent_id: None,
        permissions: None,
        email: email.into(),
        password_hash: "old-phc".into(),
        role: Role::PlatformAdmin,
        channel_id: None,
        enterprise_id: None,
        must_change_password,
    };
    let forced = s.create_account(new("pw-forced@example.com", true)).await.unwrap();
    let free = s.create_account(new("pw-free@example.com", false)).await.unwrap();
    assert!(forced.must_change_password);
    assert!(!free.must_change_password);
    assert!(s.account(forced.id).await.unwrap().unwrap().must_change_password);
    assert!(s.account_by_email("pw-forced@example.com").await.unwrap().unwrap().must_change_password);
    assert!(!s.account(free.id).await.unwrap().unwrap().must_change_password);

    assert!(s.set_password(forced.id, "new-phc".into(), false).await.unwrap());
    let after = s.account(forced.id).await.unwrap().unwrap();
    assert_eq!((after.password_hash.as_str(), after.must_change_password), ("new-phc", false));
    let untouched = s.account(free.id).await.unwrap().unwrap();
    assert_eq!((untouched.password_hash.as_str(), untouched.must_change_password), ("old-phc", false));

    // An administrator can force a change again.
    assert!(s.set_password(free.id, "reset-phc".into(), true).await.unwrap());
    let reset = s.account(free.id).await.unwrap().unwrap();
    assert_eq!((reset.password_hash.as_str(), reset.must_change_password), ("reset-phc", true));

    assert!(!s.set_password(AccountId(999_999), "x".into(), false).await.unwrap());
    assert!(!s.set_password(AccountId(u64::MAX), "x".into(), false).await.unwrap());
}

/// TEN-1, TEN-2, TEN-3, TEN-5: profiles, searches, edits, the channel authorization and acting
/// sessions, sub-accounts.
async fn tenant_profiles(store: &Store) {
    let s = &store.entities;
    let channel = |name: &str, contact: &str| NewChannel {
        name: name.into(),
        parent_id: None,
        allow_sub_channels: true,
        device_management: true,
        rps: false,
        contact: contact.into(),
        email: format!("{}@channels.example", name.to_lowercase().replace(' ', "-")),
        phone: "+49 30 1234".into(),
        country: "DE".into(),
    };
    let north = s.create_channel(channel("Profile North", "Jürgen Müller"), UnixMillis(1)).await.unwrap();
    assert_eq!((north.phone.as_str(), north.country.as_str()), ("+49 30 1234", "DE"));
    let south = s.create_channel(channel("Profile South", "Ana"), UnixMillis(2)).await.unwrap();
    let bad = NewChannel { country: "Germany".into(), ..channel("Bad", "x") };
    assert!(matches!(s.create_channel(bad, UnixMillis(3)).await, Err(StoreError::InvalidInput(_))));
    let found = |cs: Vec<Channel>| cs.into_iter().map(|c| c.id).collect::<Vec<_>>();
    // Case-insensitive substring over name, contact and email, Unicode included.
    assert_eq!(found(s.search_channels(None, Some("MÜLLER"), Page::first(100)).await.unwrap()), vec![north.id]);
    assert_eq!(found(s.search_channels(None, Some("profile s"), Page::first(100)).await.unwrap()), vec![south.id]);
    assert_eq!(
        found(s.search_channels(None, Some("@CHANNELS.example"), Page::first(100)).await.unwrap())
            .into_iter()
            .filter(|c| [north.id, south.id].contains(c))
            .count(),
        2
    );
    assert!(matches!(
        s.search_channels(None, Some(&"x".repeat(MAX_SEARCH_CHARS + 1)), Page::first(1)).await,
        Err(StoreError::InvalidInput(_))
    ));
    let update = ChannelUpdate {
        name: "Profile Nord".into(),
        allow_sub_channels: false,
        device_management: false,
        rps: true,
        contact: "Erika".into(),
        email: "nord@channels.example".into(),
        phone: "".into(),
        country: "AT".into(),
    };
    let edited = s.update_channel(north.id, update.clone()).await.unwrap().unwrap();
    assert_eq!((edited.name.as_str(), edited.rps, edited.country.as_str()), ("Profile Nord", true, "AT"));
    assert_eq!(edited.parent_id, north.parent_id);
    assert_eq!(s.channel(north.id).await.unwrap(), Some(edited.clone()));
    assert!(found(s.search_channels(None, Some("müller"), Page::first(100)).await.unwrap()).is_empty());
    assert_eq!(found(s.search_channels(None, Some("erika"), Page::first(100)).await.unwrap()), vec![north.id]);
    assert_eq!(s.update_channel(ChannelId(999_999), update.clone()).await.unwrap(), None);
    let bad = ChannelUpdate { name: String::new(), ..update };
    assert!(matches!(s.update_channel(north.id, bad).await, Err(StoreError::InvalidInput(_))));

    // Enterprises: the profile round-trips; search over name, emails and contact.
    let profile = EnterpriseProfile {
        device_management: true,
        rps: true,
        master_admin_email: "Boss@Zeta.example".into(),
        register_email: "register@zeta.example".into(),
        country: "FR".into(),
        time_zone: "Europe/Paris".into(),
        temperature_unit: TemperatureUnit::Fahrenheit,
        contact: "Zoé Durand".into(),
        phone: "+33 1 23".into(),
    };
    let zeta = s
        .create_enterprise(NewEnterprise {
            name: "Zeta Widgets".into(),
            credential: "profile-zeta".into(),
            channel_id: Some(north.id),
            profile: profile.clone(),
        })
        .await
        .unwrap();
    assert_eq!(zeta.profile, profile);
    assert_eq!(zeta.channel_authorization, ChannelAuthorization::None);
    assert_eq!(s.enterprise(zeta.id).await.unwrap(), Some(zeta.clone()));
    let omega = s
        .create_enterprise(NewEnterprise {
            name: "Omega".into(),
            credential: "profile-omega".into(),
            channel_id: Some(south.id),
            profile: EnterpriseProfile::default(),
        })
        .await
        .unwrap();
    let invalid = NewEnterprise {
        name: "Bad".into(),
        credential: "profile-bad".into(),
        channel_id: None,
        profile: EnterpriseProfile { time_zone: "not a zone".into(), ..EnterpriseProfile::default() },
    };
    assert!(matches!(s.create_enterprise(invalid).await, Err(StoreError::InvalidInput(_))));
    let search = |channels: Option<Vec<ChannelId>>, ids: Option<Vec<EnterpriseId>>, q: &str| {
        let filter = EnterpriseFilter { channels, ids, q: Some(q.into()) };
        async move {
            s.search_enterprises(filter, Page::first(100)).await.unwrap().into_iter().map(|e| e.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(search(None, None, "zoé").await, vec![zeta.id]);
    assert_eq!(search(None, None, "BOSS@zeta").await, vec![zeta.id]);
    assert_eq!(search(None, None, "register@").await, vec![zeta.id]);
    assert_eq!(search(None, None, "OMEGA").await, vec![omega.id]);
    // Channels OR ids, then the search.
    assert_eq!(search(Some(vec![north.id]), Some(vec![omega.id]), "").await, vec![zeta.id, omega.id]);
    assert_eq!(search(Some(vec![south.id]), None, "").await, vec![omega.id]);
    assert_eq!(search(Some(vec![]), Some(vec![zeta.id]), "widgets").await, vec![zeta.id]);
    assert_eq!(search(Some(vec![]), Some(vec![]), "").await, Vec::<EnterpriseId>::new());
    assert_eq!(search(Some(vec![south.id]), None, "zeta").await, Vec::<EnterpriseId>::new());
    let edited_profile = EnterpriseProfile { contact: "Yann".into(), ..profile };
    let edited = s.update_enterprise(zeta.id, "Zeta SA".into(), edited_profile.clone()).await.unwrap().unwrap();
    assert_eq!((edited.name.as_str(), &edited.profile), ("Zeta SA", &edited_profile));
    assert_eq!(edited.credential, zeta.credential);
    assert_eq!(search(None, None, "zoé").await, Vec::<EnterpriseId>::new());
    assert_eq!(search(None, None, "yann").await, vec![zeta.id]);
    assert_eq!(
        s.update_enterprise(EnterpriseId(999_999), "x".into(), EnterpriseProfile::default()).await.unwrap(),
        None
    );
    let bad = EnterpriseProfile { country: "fr".into(), ..EnterpriseProfile::default() };
    assert!(matches!(s.update_enterprise(zeta.id, "x".into(), bad).await, Err(StoreError::InvalidInput(_))));

    // TEN-3: the authorization moves only from the states given; leaving "accepted" ends the
    // sessions acting inside the enterprise (and no others).
    use ChannelAuthorization as A;
    assert_eq!(s.set_channel_authorization(zeta.id, &[A::Pending], A::Accepted).await.unwrap(), None);
    let pending = s.set_channel_authorization(zeta.id, &[A::None, A::Rejected], A::Pending).await.unwrap().unwrap();
    assert_eq!(pending.channel_authorization, A::Pending);
    let accepted = s.set_channel_authorization(zeta.id, &[A::Pending], A::Accepted).await.unwrap().unwrap();
    assert_eq!(accepted.channel_authorization, A::Accepted);
    assert_eq!(s.set_channel_authorization(EnterpriseId(999_999), &[A::None], A::Pending).await.unwrap(), None);
    let channel_admin = s
        .create_account(NewAccount {
            email: "acting@north.example".into(),
            password_hash: "phc".into(),
            role: Role::ChannelAdmin,
            channel_id: Some(north.id),
            enterprise_id: None,
            must_change_password: false,
            parent_id: None,
            permissions: None,
        })
        .await
        .unwrap();
    let session = |byte: u8, acting: Option<Acting>| Session {
        token_hash: TokenHash([byte; 32]),
        account_id: channel_admin.id,
        created_at: UnixMillis::now(),
        expires_at: UnixMillis(UnixMillis::now().0 + 3_600_000),
        last_seen_at: UnixMillis::now(),
        acting,
    };
    let (plain, inside, sub) = (
        session(71, None),
        session(72, Some(Acting::Enterprise(zeta.id))),
        session(73, Some(Acting::Channel(south.id))),
    );
    for sess in [&plain, &inside, &sub] {
        s.create_session(sess.clone()).await.unwrap();
    }
    let now = UnixMillis::now();
    assert_eq!(
        s.session(inside.token_hash, now).await.unwrap().and_then(|x| x.acting),
        Some(Acting::Enterprise(zeta.id))
    );
    assert_eq!(s.session(sub.token_hash, now).await.unwrap().and_then(|x| x.acting), Some(Acting::Channel(south.id)));
    let revoked = s.set_channel_authorization(zeta.id, &[A::Accepted], A::None).await.unwrap().unwrap();
    assert_eq!(revoked.channel_authorization, A::None);
    assert_eq!(s.session(inside.token_hash, now).await.unwrap(), None);
    assert!(s.session(plain.token_hash, now).await.unwrap().is_some());
    assert!(s.session(sub.token_hash, now).await.unwrap().is_some());

    // TEN-5: sub-accounts have their parent's role and tenant, do not nest, and list by parent.
    let perms = Permissions {
        features: vec![Feature::Alarms, Feature::Devices],
        data: DataPermission::Only { channels: vec![], enterprises: vec![zeta.id] },
    };
    let sub_account = |email: &str, parent: AccountId, channel: ChannelId| NewAccount {
        email: email.into(),
        password_hash: "phc".into(),
        role: Role::ChannelAdmin,
        channel_id: Some(channel),
        enterprise_id: None,
        must_change_password: true,
        parent_id: Some(parent),
        permissions: Some(perms.clone()),
    };
    let child = s.create_account(sub_account("Helper.One@north.example", channel_admin.id, north.id)).await.unwrap();
    assert_eq!((child.parent_id, child.permissions.as_ref()), (Some(channel_admin.id), Some(&perms)));
    assert_eq!(s.account(child.id).await.unwrap().and_then(|a| a.permissions), Some(perms.clone()));
    for refused in [
        sub_account("x1@north.example", channel_admin.id, south.id),
        sub_account("x2@north.example", child.id, north.id),
        sub_account("x3@north.example", AccountId(999_999), north.id),
        NewAccount { permissions: None, ..sub_account("x4@north.example", channel_admin.id, north.id) },
    ] {
        assert!(matches!(s.create_account(refused).await, Err(StoreError::InvalidInput(_))));
    }
    let listed = |filter: AccountFilter| async move {
        s.list_accounts(filter, Page::first(100)).await.unwrap().into_iter().map(|a| a.id).collect::<Vec<_>>()
    };
    assert_eq!(
        listed(AccountFilter { parent: Some(channel_admin.id), ..AccountFilter::default() }).await,
        vec![child.id]
    );
    assert_eq!(
        listed(AccountFilter { q: Some("HELPER.one".into()), ..AccountFilter::default() }).await,
        vec![child.id]
    );
    let in_north =
        AccountFilter { channels: Some(vec![north.id]), q: Some("north.example".into()), ..AccountFilter::default() };
    assert_eq!(listed(in_north).await, vec![channel_admin.id, child.id]);
    let wider = Permissions { features: Feature::ALL.to_vec(), data: DataPermission::All };
    assert!(s.set_account_permissions(child.id, wider.clone()).await.unwrap());
    assert_eq!(s.account(child.id).await.unwrap().and_then(|a| a.permissions), Some(wider.clone()));
    // A full account has no permissions to replace.
    assert!(!s.set_account_permissions(channel_admin.id, wider.clone()).await.unwrap());
    assert_eq!(s.account(channel_admin.id).await.unwrap().and_then(|a| a.permissions), None);
    assert!(!s.set_account_permissions(AccountId(999_999), wider).await.unwrap());
}

fn status(lines: &[SipState], ip: &str, private: &str, firmware: &str, call: CallStatus) -> DeviceStatus {
    DeviceStatus {
        lines: lines
            .iter()
            .enumerate()
            .map(|(i, &state)| SipLine { line: i as u8 + 1, account: format!("10{i}"), state })
            .collect(),
        call_status: call,
        firmware: firmware.into(),
        public_ip: (!ip.is_empty()).then(|| ip.parse().unwrap()),
        private_ip: (!private.is_empty()).then(|| private.parse().unwrap()),
        uptime_s: 3_600,
        last_reboot: Some(UnixMillis(1_000)),
    }
}

fn report(device: DeviceId, at: i64, status: DeviceStatus) -> DeviceSnapshotUpdate {
    DeviceSnapshotUpdate { device_id: device, online: None, report: Some(DeviceReport { at: UnixMillis(at), status }) }
}

fn presence(device: DeviceId, online: bool) -> DeviceSnapshotUpdate {
    DeviceSnapshotUpdate { device_id: device, online: Some(online), report: None }
}

/// Every page of the query, `limit` rows at a time, following the cursors.
async fn all_pages(s: &dyn EntityStore, query: &DeviceQuery, limit: u32) -> (Vec<DeviceSummary>, u64) {
    let (mut rows, mut cursor, mut total) = (Vec::new(), None, None);
    for _ in 0..100 {
        let page = s.query_devices(query.clone(), DevicePageRequest { cursor: cursor.clone(), limit }).await.unwrap();
        assert!(page.items.len() <= limit as usize);
        assert!(total.is_none_or(|t| t == page.total), "the total is the same on every page");
        total = Some(page.total);
        rows.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return (rows, total.unwrap()),
        }
    }
    panic!("more than 100 pages");
}

fn sort_key(d: &DeviceSummary, column: DeviceSortColumn) -> (String, i64) {
    let text = |s: &str| (s.to_owned(), 0);
    match column {
        DeviceSortColumn::Mac => text(d.device.mac.map(|m| m.as_str().to_owned()).unwrap_or_default().as_str()),
        DeviceSortColumn::Name => text(&d.device.name),
        DeviceSortColumn::Model => text(&d.device.model),
        DeviceSortColumn::Firmware => text(&d.device.firmware),
        DeviceSortColumn::PublicIp => text(d.snapshot.public_ip.as_deref().unwrap_or("")),
        DeviceSortColumn::PrivateIp => text(d.snapshot.private_ip.as_deref().unwrap_or("")),
        DeviceSortColumn::Online => (String::new(), i64::from(d.snapshot.online)),
        DeviceSortColumn::LastReportAt => (String::new(), d.snapshot.last_report_at.map_or(0, |t| t.0)),
        DeviceSortColumn::Enterprise => (String::new(), d.device.enterprise_id.0 as i64),
        DeviceSortColumn::Created => (String::new(), d.device.created_at.0),
    }
}

/// Device snapshots (update_device_snapshots) and device lists (query_devices): every filter,
/// every sort in both directions, paged by cursor, the total, and the bounds.
async fn device_lists(store: &Store) {
    use fleetpulse_proto::catalog::DeviceType;
    use fleetpulse_proto::domain::{SipState::*, SipSummary};
    let s = &*store.entities;
    let a = s.create_channel(new_channel("A", None, true), UnixMillis(1)).await.unwrap().id;
    let a1 = s.create_channel(new_channel("A1", Some(a), true), UnixMillis(1)).await.unwrap().id;
    let b = s.create_channel(new_channel("B", None, true), UnixMillis(1)).await.unwrap().id;
    let enterprise = |name: &str, channel: Option<ChannelId>| NewEnterprise {
        profile: Default::default(),
        name: name.into(),
        credential: format!("dl-{name}"),
        channel_id: channel,
    };
    let ea = s.create_enterprise(enterprise("EA", Some(a))).await.unwrap().id;
    let ea1 = s.create_enterprise(enterprise("EA1", Some(a1))).await.unwrap().id;
    let eb = s.create_enterprise(enterprise("EB", Some(b))).await.unwrap().id;
    let models = ["T54W", "SIP-T48S", "UVC86", "MeetingBar A30", "RoomPanel", "Fridge", "T54W", "VP59", "CP900"];
    let owners = [ea, ea, ea1, ea1, eb, eb, eb, ea, ea1];
    let mut ids = Vec::new();
    for (i, (model, owner)) in models.iter().zip(owners).enumerate() {
        let key = if i == 5 { DeviceKey::Serial("SN-Fridge-5".into()) } else { DeviceKey::Mac(mac(0xd00 + i as u32)) };
        let new = NewDevice {
            enterprise_id: owner,
            key,
            serial: Some(format!("SN-{i}")),
            model: (*model).into(),
            firmware: "1.0".into(),
            at: UnixMillis(100 + (i as i64 % 4)),
        };
        ids.push(s.register_device(new).await.unwrap().device.id);
    }
    let summary = |id: DeviceId| async move { s.device_summary(id).await.unwrap().unwrap() };
    let fresh = summary(ids[0]).await;
    assert_eq!(fresh.snapshot.device_type, DeviceType::Phone);
    assert_eq!((fresh.snapshot.online, fresh.snapshot.sip_status), (false, SipSummary::Unknown));
    assert_eq!((fresh.snapshot.last_report_at, fresh.snapshot.public_ip.clone()), (None, None));
    assert_eq!((fresh.enterprise_name.as_str(), fresh.channel_id), ("EA", Some(a)));
    assert_eq!(summary(ids[2]).await.snapshot.device_type, DeviceType::Usb);
    assert_eq!(summary(ids[3]).await.snapshot.device_type, DeviceType::RoomSystem);
    assert_eq!(summary(ids[4]).await.snapshot.device_type, DeviceType::Workspace);
    assert_eq!(summary(ids[5]).await.snapshot.device_type, DeviceType::Other);
    assert_eq!(summary(ids[8]).await.snapshot.device_type, DeviceType::Usb);
    assert!(s.device_summary(DeviceId(999_999)).await.unwrap().is_none());
    assert!(s.device_summary(DeviceId(u64::MAX)).await.unwrap().is_none());

    // Snapshots: reports (latest wins, an older one is ignored), presence, merged in a batch.
    let mut updates = vec![
        report(ids[0], 5_000, status(&[Registered, Registered], "203.0.113.7", "10.0.0.7", "2.0", CallStatus::InCall)),
        presence(ids[0], true),
        report(ids[1], 6_000, status(&[Registered, Unregistered], "203.0.113.80", "10.0.1.8", "", CallStatus::Idle)),
        presence(ids[1], true),
        report(ids[2], 7_000, status(&[Unregistered], "198.51.100.2", "192.168.1.2", "1.5", CallStatus::Idle)),
        report(ids[3], 8_000, status(&[], "2001:db8::3", "fd00::3", "3.1", CallStatus::Idle)),
        presence(ids[3], true),
        presence(ids[4], true),
        report(ids[7], 9_000, status(&[Registered], "203.0.113.9", "10.0.0.9", "2.0", CallStatus::Idle)),
    ];
    // A later update of device 4 in the same batch wins.
    updates.push(presence(ids[4], false));
    s.update_device_snapshots(updates).await.unwrap();
    // An older report is ignored; presence alone leaves the report.
    s.update_device_snapshots(vec![report(
        ids[0],
        4_000,
        status(&[Unregistered], "1.1.1.1", "1.1.1.1", "0.1", CallStatus::Idle),
    )])
    .await
    .unwrap();
    // Unknown devices are skipped.
    let presences = vec![presence(ids[7], true), presence(DeviceId(999_999), true), presence(DeviceId(u64::MAX), true)];
    s.update_device_snapshots(presences).await.unwrap();
    let d0 = summary(ids[0]).await;
    assert_eq!(d0.device.firmware, "2.0", "firmware follows reports");
    assert!(d0.snapshot.online);
    assert_eq!(d0.snapshot.sip_status, SipSummary::Registered);
    assert_eq!(d0.snapshot.call_status, Some(CallStatus::InCall));
    assert_eq!(d0.snapshot.public_ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(d0.snapshot.private_ip.as_deref(), Some("10.0.0.7"));
    assert_eq!(d0.snapshot.last_report_at, Some(UnixMillis(5_000)));
    assert_eq!((d0.snapshot.uptime_s, d0.snapshot.last_reboot), (Some(3_600), Some(UnixMillis(1_000))));
    assert_eq!(d0.snapshot.lines.len(), 2);
    assert_eq!(d0.snapshot.lines[1].account, "101");
    let d1 = summary(ids[1]).await;
    assert_eq!(d1.device.firmware, "1.0", "an empty reported firmware keeps the stored one");
    assert_eq!(d1.snapshot.sip_status, SipSummary::Partial);
    assert!(!summary(ids[4]).await.snapshot.online);
    assert_eq!(summary(ids[3]).await.snapshot.public_ip.as_deref(), Some("2001:db8::3"));
    let too_many: Vec<_> = (0..=MAX_SNAPSHOT_BATCH as u64).map(|i| presence(DeviceId(i + 1), true)).collect();
    invalid(s.update_device_snapshots(too_many).await, "snapshot updates");
    s.update_device_snapshots(Vec::new()).await.unwrap();

    // Filters: each against the rows read back.
    let everything = all_pages(s, &DeviceQuery::default(), 1_000).await.0;
    let mine: Vec<DeviceSummary> = everything.into_iter().filter(|d| ids.contains(&d.device.id)).collect();
    assert_eq!(mine.len(), ids.len());
    // Other tests' devices stay out: the query is scoped to this test's enterprises.
    let scoped = |q: DeviceQuery| DeviceQuery { enterprises: q.enterprises.clone().or(Some(vec![ea, ea1, eb])), ..q };
    let check = |name: &'static str, q: DeviceQuery, want: Box<dyn Fn(&DeviceSummary) -> bool>| {
        let mine = mine.clone();
        async move {
            let (rows, total) = all_pages(s, &scoped(q), 2).await;
            let got: Vec<DeviceId> = rows.iter().map(|d| d.device.id).collect();
            let expected: Vec<DeviceId> = mine.iter().filter(|d| want(d)).map(|d| d.device.id).collect();
            assert_eq!(got, expected, "filter {name}");
            assert_eq!(total, expected.len() as u64, "total of {name}");
        }
    };
    check("all", DeviceQuery::default(), Box::new(|_| true)).await;
    check(
        "enterprise",
        DeviceQuery { enterprises: Some(vec![ea1]), ..DeviceQuery::default() },
        Box::new(move |d| d.device.enterprise_id == ea1),
    )
    .await;
    let q = DeviceQuery { channels: Some(vec![a1, b]), ..DeviceQuery::default() };
    check("channels", q, Box::new(move |d| d.device.enterprise_id == ea1 || d.device.enterprise_id == eb)).await;
    let q = DeviceQuery { device_type: Some(DeviceType::Usb), ..DeviceQuery::default() };
    check("type", q, Box::new(|d| d.snapshot.device_type == DeviceType::Usb)).await;
    check("online", DeviceQuery { online: Some(true), ..DeviceQuery::default() }, Box::new(|d| d.snapshot.online))
        .await;
    check("offline", DeviceQuery { online: Some(false), ..DeviceQuery::default() }, Box::new(|d| !d.snapshot.online))
        .await;
    let q = DeviceQuery { sip_status: Some(SipSummary::Partial), ..DeviceQuery::default() };
    check("sip", q, Box::new(|d| d.snapshot.sip_status == SipSummary::Partial)).await;
    let q = DeviceQuery { model: Some("T54W".into()), ..DeviceQuery::default() };
    check("model", q, Box::new(|d| d.device.model == "T54W")).await;
    let q = DeviceQuery { firmware: Some("2.0".into()), ..DeviceQuery::default() };
    check("firmware", q, Box::new(|d| d.device.firmware == "2.0")).await;
    let q = DeviceQuery { public_ip: Some("203.0.113.".into()), ..DeviceQuery::default() };
    check("public ip", q, Box::new(|d| d.snapshot.public_ip.as_deref().is_some_and(|ip| ip.starts_with("203.0.113."))))
        .await;
    let q = DeviceQuery { private_ip: Some("FD00:".into()), ..DeviceQuery::default() };
    check("private ip, case-insensitive", q, Box::new(|d| d.snapshot.private_ip.as_deref() == Some("fd00::3"))).await;
    let q = DeviceQuery {
        reported_from: Some(UnixMillis(6_000)),
        reported_to: Some(UnixMillis(9_000)),
        ..DeviceQuery::default()
    };
    check("report time", q, Box::new(|d| d.snapshot.last_report_at.is_some_and(|t| (6_000..9_000).contains(&t.0))))
        .await;
    let q = DeviceQuery { q: Some("MEETING".into()), ..DeviceQuery::default() };
    check("q model", q, Box::new(|d| d.device.model.contains("Meeting"))).await;
    let q = DeviceQuery { q: Some("sn-fridge".into()), ..DeviceQuery::default() };
    check("q serial", q, Box::new(|d| d.device.serial.as_deref() == Some("SN-Fridge-5"))).await;
    let q = DeviceQuery { q: Some(mac(0xd02).as_str()[6..].to_owned()), ..DeviceQuery::default() };
    check("q mac", q, Box::new(|d| d.device.mac == Some(mac(0xd02)))).await;
    for (wildcard, name) in [("%", "q % is literal"), ("_", "q _ is literal"), ("\\", "q \\ is literal")] {
        let q = DeviceQuery { q: Some(wildcard.into()), ..DeviceQuery::default() };
        let holds = move |d: &DeviceSummary| {
            let mac = d.device.mac.map(|m| m.as_str().to_owned()).unwrap_or_default();
            let serial = d.device.serial.clone().unwrap_or_default();
            [mac, d.device.name.clone(), serial, d.device.model.clone()]
                .iter()
                .any(|f| f.to_lowercase().contains(wildcard))
        };
        check(name, q, Box::new(holds)).await;
    }
    let q = DeviceQuery { online: Some(true), model: Some("T54W".into()), ..DeviceQuery::default() };
    check("combined", q, Box::new(|d| d.snapshot.online && d.device.model == "T54W")).await;
    let none = s
        .query_devices(
            DeviceQuery { enterprises: Some(vec![]), ..DeviceQuery::default() },
            DevicePageRequest { cursor: None, limit: 10 },
        )
        .await
        .unwrap();
    assert_eq!((none.items.len(), none.total, none.next_cursor), (0, 0, None));

    // Sorts: every column, both directions, two rows a page.
    for column in DeviceSortColumn::ALL {
        for descending in [false, true] {
            let q = scoped(DeviceQuery { sort: column, descending, ..DeviceQuery::default() });
            let (rows, total) = all_pages(s, &q, 2).await;
            let mut expected = mine.clone();
            expected.sort_by_key(|x| (sort_key(x, column), x.device.id));
            if descending {
                expected.reverse();
            }
            let got: Vec<DeviceId> = rows.iter().map(|d| d.device.id).collect();
            let want: Vec<DeviceId> = expected.iter().map(|d| d.device.id).collect();
            assert_eq!(got, want, "sort {column:?} descending {descending}");
            assert_eq!(total, ids.len() as u64);
        }
    }

    // Bounds and cursors.
    let page =
        |q: DeviceQuery, cursor: Option<String>, limit: u32| s.query_devices(q, DevicePageRequest { cursor, limit });
    invalid(page(DeviceQuery::default(), None, 0).await, "page limit");
    invalid(page(DeviceQuery::default(), None, MAX_DEVICE_PAGE + 1).await, "page limit");
    invalid(page(DeviceQuery::default(), Some("garbage".into()), 10).await, "malformed cursor");
    invalid(page(DeviceQuery::default(), Some("c1zz".into()), 10).await, "malformed cursor");
    let by_name = DeviceQuery { sort: DeviceSortColumn::Name, ..DeviceQuery::default() };
    let first = page(by_name.clone(), None, 1).await.unwrap();
    let cursor = first.next_cursor.clone().unwrap();
    invalid(page(DeviceQuery::default(), Some(cursor.clone()), 10).await, "another sort");
    invalid(page(DeviceQuery { descending: true, ..by_name.clone() }, Some(cursor), 10).await, "another sort");
    let many: Vec<EnterpriseId> = (1..=MAX_DEVICE_FILTER_IDS as u64 + 1).map(EnterpriseId).collect();
    invalid(page(DeviceQuery { enterprises: Some(many), ..DeviceQuery::default() }, None, 10).await, "enterprise ids");
    let at_bound: Vec<EnterpriseId> = (1..=MAX_DEVICE_FILTER_IDS as u64).map(EnterpriseId).collect();
    let wide = page(DeviceQuery { enterprises: Some(at_bound), ..DeviceQuery::default() }, None, 10).await.unwrap();
    assert!(wide.total >= ids.len() as u64);
    invalid(page(DeviceQuery { public_ip: Some("10.%".into()), ..DeviceQuery::default() }, None, 10).await, "prefix");
    invalid(
        page(DeviceQuery { q: Some("x".repeat(MAX_DEVICE_FILTER_TEXT + 1)), ..DeviceQuery::default() }, None, 10).await,
        "q filter",
    );
    invalid(page(DeviceQuery { model: Some("a\0b".into()), ..DeviceQuery::default() }, None, 10).await, "NUL");
    invalid(page(DeviceQuery { q: Some("a\u{1f}b".into()), ..DeviceQuery::default() }, None, 10).await, "control");

    // Dashboard: totals, by type, by model (most common first), under the same filters.
    let dash = s.device_dashboard(scoped(DeviceQuery::default())).await.unwrap();
    assert_eq!(dash.total, ids.len() as u64);
    assert_eq!(dash.online, mine.iter().filter(|d| d.snapshot.online).count() as u64);
    let types: Vec<(DeviceType, u64)> = dash.by_type.iter().map(|c| (c.key, c.total)).collect();
    assert_eq!(
        types,
        [
            (DeviceType::Phone, 4),
            (DeviceType::Usb, 2),
            (DeviceType::RoomSystem, 1),
            (DeviceType::Workspace, 1),
            (DeviceType::Other, 1)
        ]
    );
    assert_eq!((dash.by_model[0].key.as_str(), dash.by_model[0].total), ("T54W", 2));
    assert_eq!(dash.by_model.len(), 8);
    assert!(!dash.models_truncated);
    let phones = s
        .device_dashboard(scoped(DeviceQuery { device_type: Some(DeviceType::Phone), ..DeviceQuery::default() }))
        .await
        .unwrap();
    assert_eq!((phones.total, phones.by_type.len()), (4, 1));
    let online_phones = phones.by_type[0].online;
    assert_eq!(
        online_phones,
        mine.iter().filter(|d| d.snapshot.online && d.snapshot.device_type == DeviceType::Phone).count() as u64
    );
    let empty = s.device_dashboard(DeviceQuery { enterprises: Some(vec![]), ..DeviceQuery::default() }).await.unwrap();
    assert_eq!((empty.total, empty.by_type.len(), empty.by_model.len()), (0, 0, 0));
    invalid(s.device_dashboard(DeviceQuery { private_ip: Some("x".into()), ..DeviceQuery::default() }).await, "prefix");

    // CPU/memory history: newest first, in [from, to), bounded.
    let sample = |cpu: u16| ResourceSample { cpu_centi_pct: cpu, mem_used_bytes: 1, mem_total_bytes: 2 };
    let resources: Vec<ResourceEvent> = (1..=6u64)
        .map(|seq| ResourceEvent {
            device_id: ids[0],
            enterprise_id: ea,
            seq,
            at: UnixMillis(100_000 + seq as i64),
            sample: sample(seq as u16 * 100),
        })
        .chain(std::iter::once(ResourceEvent {
            device_id: ids[1],
            enterprise_id: ea,
            seq: 1,
            at: UnixMillis(100_003),
            sample: sample(1),
        }))
        .collect();
    let delivery = vec![(ids[0], 6), (ids[1], 1)];
    store.events.append(EventBatch { resources, delivery, ..EventBatch::default() }).await.unwrap();
    let history = eventually(
        "resource history",
        || store.events.resource_history(ids[0], UnixMillis(100_002), UnixMillis(100_006), 10),
        |h| h.len() == 4,
    )
    .await;
    let at: Vec<i64> = history.iter().map(|p| p.at.0).collect();
    assert_eq!(at, [100_005, 100_004, 100_003, 100_002]);
    assert_eq!(history[0].sample, sample(500));
    let limited = store.events.resource_history(ids[0], UnixMillis(0), UnixMillis(i64::MAX), 2).await.unwrap();
    assert_eq!(limited.iter().map(|p| p.at.0).collect::<Vec<_>>(), [100_006, 100_005]);
    assert!(store.events.resource_history(ids[0], UnixMillis(5), UnixMillis(5), 10).await.unwrap().is_empty());
    assert!(store.events.resource_history(ids[0], UnixMillis(0), UnixMillis(i64::MAX), 0).await.unwrap().is_empty());
    assert!(
        store
            .events
            .resource_history(DeviceId(u64::MAX), UnixMillis(0), UnixMillis(i64::MAX), 5)
            .await
            .unwrap()
            .is_empty()
    );

    // A restart: every device offline until it connects again.
    assert!(s.mark_devices_offline().await.unwrap() >= 3);
    let q = DeviceQuery { online: Some(true), ..scoped(DeviceQuery::default()) };
    assert_eq!(page(q, None, 10).await.unwrap().total, 0);
}

/// Saved device search labels and chosen columns (DEV-1): per account, bounded, unique names.
async fn device_labels(store: &Store) {
    let s = &*store.entities;
    let account = |email: &str| platform_admin(email);
    let me = s.create_account(account("labels-me@example.com")).await.unwrap().id;
    let other = s.create_account(account("labels-other@example.com")).await.unwrap().id;
    let label =
        |account, name: &str| NewDeviceLabel { account_id: account, name: name.into(), filter: "online=true".into() };
    let first = s.create_device_label(label(me, "Online"), UnixMillis(7)).await.unwrap();
    assert_eq!(
        (first.account_id, first.name.as_str(), first.filter.as_str(), first.created_at),
        (me, "Online", "online=true", UnixMillis(7))
    );
    assert!(matches!(
        s.create_device_label(label(me, "Online"), UnixMillis(8)).await,
        Err(StoreError::AlreadyExists("label name"))
    ));
    let theirs = s.create_device_label(label(other, "Online"), UnixMillis(8)).await.unwrap();
    for i in 1..MAX_DEVICE_LABELS {
        s.create_device_label(label(me, &format!("label {i}")), UnixMillis(9)).await.unwrap();
    }
    invalid(s.create_device_label(label(me, "one too many"), UnixMillis(9)).await, "at most 50 labels");
    let mine = s.list_device_labels(me).await.unwrap();
    assert_eq!(mine.len(), MAX_DEVICE_LABELS);
    assert_eq!(mine[0], first);
    assert!(mine.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(s.list_device_labels(other).await.unwrap(), std::slice::from_ref(&theirs));
    assert!(!s.delete_device_label(me, theirs.id).await.unwrap(), "another account's label is not mine to delete");
    assert!(s.delete_device_label(me, first.id).await.unwrap());
    assert!(!s.delete_device_label(me, first.id).await.unwrap());
    assert!(!s.delete_device_label(me, u64::MAX).await.unwrap());
    s.create_device_label(label(me, "Online"), UnixMillis(10)).await.unwrap();
    invalid(s.create_device_label(label(me, ""), UnixMillis(10)).await, "label name");
    invalid(
        s.create_device_label(label(me, &"x".repeat(MAX_DEVICE_LABEL_NAME + 1)), UnixMillis(10)).await,
        "label name",
    );
    let long = NewDeviceLabel { account_id: other, name: "long".into(), filter: "q=".repeat(MAX_DEVICE_LABEL_FILTER) };
    invalid(s.create_device_label(long, UnixMillis(10)).await, "label filter");
    invalid(s.create_device_label(label(AccountId(999_999), "x"), UnixMillis(10)).await, "does not exist");
    invalid(s.create_device_label(label(AccountId(u64::MAX), "x"), UnixMillis(10)).await, "does not exist");

    assert_eq!(s.device_columns(me).await.unwrap(), None);
    let columns: Vec<String> = ["mac", "model", "online"].map(String::from).to_vec();
    s.set_device_columns(me, columns.clone()).await.unwrap();
    assert_eq!(s.device_columns(me).await.unwrap(), Some(columns));
    s.set_device_columns(me, vec!["name".into()]).await.unwrap();
    assert_eq!(s.device_columns(me).await.unwrap(), Some(vec!["name".to_owned()]));
    assert_eq!(s.device_columns(other).await.unwrap(), None);
    invalid(s.set_device_columns(me, vec!["x".into(); MAX_DEVICE_COLUMNS + 1]).await, "columns");
    invalid(s.set_device_columns(me, vec!["x".repeat(MAX_DEVICE_COLUMN_NAME + 1)]).await, "column name");
    invalid(s.set_device_columns(AccountId(999_999), vec![]).await, "does not exist");
}

async fn suite(store: Store) {
    entities(&store).await;
    password_change(&store).await;
    login_protection(&store).await;
    session_lifecycle(&store).await;
    totp(&store).await;
    operation_log(&store).await;
    strategies(&store).await;
    outbox(&store).await;
    outbox_items(&store).await;
    outbox_except(&store).await;
    events(&store).await;
    lifecycle(&store).await;
    latest_alarms(&store).await;
    retention(&store).await;
    tenants(&store).await;
    tenant_profiles(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let config = embedded::EmbeddedConfig { fsync: false, ..embedded::EmbeddedConfig::default() };
    suite(Store::open_embedded(dir.path(), config).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaleout_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let pg = fleetpulse_testkit::postgres::PostgresServer::shared();
    let ch = fleetpulse_testkit::clickhouse::ClickHouseServer::shared();
    let config = ScaleOutConfig {
        postgres_url: pg.create_database("conformance"),
        clickhouse: clickhouse::ClickHouseConfig {
            url: ch.url(),
            database: "conformance".into(),
            user: None,
            password: None,
        },
        spool: spool::SpoolConfig { dir: dir.path().join("spool"), ..spool::SpoolConfig::default() },
    };
    suite(Store::open_scaleout(config).await.unwrap()).await;
}

/// Account self-service (ACC-3..5): settings, single-use reset tokens, login code challenges.
async fn account_self_service(s: &dyn EntityStore) {
    let account = s.create_account(platform_admin("self-service@example.com")).await.unwrap();
    let missing = AccountId(999_999);

    // Settings: defaults until saved, validated, replaced whole.
    assert_eq!(s.account_settings(account.id).await.unwrap(), Some(AccountSettings::default()));
    assert_eq!(s.account_settings(missing).await.unwrap(), None);
    let settings = AccountSettings {
        contact_name: "Ada".into(),
        phone: "+1 (555) 010-0199".into(),
        country: "Iceland".into(),
        login_protection: LoginProtection::Email,
    };
    assert!(s.set_account_settings(account.id, settings.clone()).await.unwrap());
    assert_eq!(s.account_settings(account.id).await.unwrap(), Some(settings.clone()));
    let changed = AccountSettings { phone: String::new(), login_protection: LoginProtection::None, ..settings };
    assert!(s.set_account_settings(account.id, changed.clone()).await.unwrap());
    assert_eq!(s.account_settings(account.id).await.unwrap(), Some(changed.clone()));
    assert!(!s.set_account_settings(missing, changed.clone()).await.unwrap());
    let bad = AccountSettings { phone: "not a phone".into(), ..changed.clone() };
    invalid(s.set_account_settings(account.id, bad).await, "phone");
    assert_eq!(s.account_settings(account.id).await.unwrap(), Some(changed.clone()), "nothing changed");
    // TEN-2: accounts are found by their contact name too, ignoring case (Unicode included).
    let renamed = AccountSettings { contact_name: "Zoë Ångström".into(), ..changed };
    assert!(s.set_account_settings(account.id, renamed).await.unwrap());
    let found = |q: &str| {
        let filter = AccountFilter { q: Some(q.into()), ..AccountFilter::default() };
        async move { s.list_accounts(filter, Page::first(100)).await.unwrap().into_iter().map(|a| a.id).collect::<Vec<_>>() }
    };
    assert_eq!(found("ÅNGSTRÖM").await, vec![account.id]);
    assert_eq!(found("self-service@").await, vec![account.id]);
    assert!(found("Ada").await.is_empty(), "the old contact name is gone");

    // Reset tokens: single use, expire, one live token per account.
    let reset = |hash: u8, created: i64| PasswordReset {
        token_hash: TokenHash([hash; 32]),
        account_id: account.id,
        created_at: UnixMillis(created),
        expires_at: UnixMillis(created + 600_000),
    };
    s.create_password_reset(reset(1, 1_000)).await.unwrap();
    assert_eq!(s.consume_password_reset(TokenHash([1; 32]), UnixMillis(2_000)).await.unwrap(), Some(account.id));
    assert_eq!(s.consume_password_reset(TokenHash([1; 32]), UnixMillis(2_001)).await.unwrap(), None, "used");
    s.create_password_reset(reset(2, 3_000)).await.unwrap();
    assert_eq!(s.consume_password_reset(TokenHash([2; 32]), UnixMillis(603_000)).await.unwrap(), None, "expired");
    s.create_password_reset(reset(3, 4_000)).await.unwrap();
    s.create_password_reset(reset(4, 5_000)).await.unwrap();
    assert_eq!(s.consume_password_reset(TokenHash([3; 32]), UnixMillis(6_000)).await.unwrap(), None, "replaced");
    assert_eq!(s.consume_password_reset(TokenHash([9; 32]), UnixMillis(6_000)).await.unwrap(), None, "unknown");
    assert_eq!(s.consume_password_reset(TokenHash([4; 32]), UnixMillis(6_000)).await.unwrap(), Some(account.id));
    invalid(s.create_password_reset(PasswordReset { account_id: missing, ..reset(5, 7_000) }).await, "account");

    // Challenges: attempts counted up to the bound, single use, expire, one live per account.
    let challenge = |hash: u8, created: i64| LoginChallenge {
        id_hash: TokenHash([hash; 32]),
        account_id: account.id,
        code_hash: TokenHash([0xc0; 32]),
        created_at: UnixMillis(created),
        expires_at: UnixMillis(created + 600_000),
        attempts: 7,
    };
    s.create_login_challenge(challenge(1, 1_000)).await.unwrap();
    for n in 1..=3 {
        let claimed = s.claim_login_challenge_attempt(TokenHash([1; 32]), UnixMillis(2_000), 3).await.unwrap();
        let claimed = claimed.expect("live");
        assert_eq!((claimed.account_id, claimed.code_hash, claimed.attempts), (account.id, TokenHash([0xc0; 32]), n));
    }
    assert_eq!(s.claim_login_challenge_attempt(TokenHash([1; 32]), UnixMillis(2_000), 3).await.unwrap(), None);
    invalid(s.claim_login_challenge_attempt(TokenHash([1; 32]), UnixMillis(2_000), 0).await, "max_attempts");
    s.create_login_challenge(challenge(2, 3_000)).await.unwrap();
    assert!(s.claim_login_challenge_attempt(TokenHash([2; 32]), UnixMillis(4_000), 5).await.unwrap().is_some());
    assert!(s.finish_login_challenge(TokenHash([2; 32]), UnixMillis(4_000)).await.unwrap());
    assert!(!s.finish_login_challenge(TokenHash([2; 32]), UnixMillis(4_000)).await.unwrap(), "single use");
    assert_eq!(s.claim_login_challenge_attempt(TokenHash([2; 32]), UnixMillis(4_000), 5).await.unwrap(), None);
    s.create_login_challenge(challenge(3, 5_000)).await.unwrap();
    assert_eq!(s.claim_login_challenge_attempt(TokenHash([3; 32]), UnixMillis(605_000), 5).await.unwrap(), None);
    assert!(!s.finish_login_challenge(TokenHash([3; 32]), UnixMillis(605_000)).await.unwrap(), "expired");
    s.create_login_challenge(challenge(4, 6_000)).await.unwrap();
    s.create_login_challenge(challenge(5, 7_000)).await.unwrap();
    assert_eq!(s.claim_login_challenge_attempt(TokenHash([4; 32]), UnixMillis(8_000), 5).await.unwrap(), None);
    assert!(s.claim_login_challenge_attempt(TokenHash([5; 32]), UnixMillis(8_000), 5).await.unwrap().is_some());
    invalid(s.create_login_challenge(LoginChallenge { account_id: missing, ..challenge(6, 9_000) }).await, "account");

    // Outbox payloads are redacted only once no longer pending.
    let message = NewOutboxMessage {
        key: "account-email-redaction".into(),
        enterprise_id: EnterpriseId(0),
        receiver: "self-service@example.com".into(),
        payload: "secret".into(),
        not_before: UnixMillis(0),
        item_keys: Vec::new(),
    };
    assert!(s.enqueue_outbox(message, UnixMillis(1)).await.unwrap());
    let id = s.due_outbox(UnixMillis(10), 1000).await.unwrap().into_iter().find(|m| m.payload == "secret").unwrap().id;
    assert!(!s.redact_outbox_payload(id, "redacted".into()).await.unwrap(), "still pending");
    s.record_outbox_attempt(id, OutboxState::Sent, UnixMillis(20), UnixMillis(20), None).await.unwrap();
    assert!(s.redact_outbox_payload(id, "redacted".into()).await.unwrap());
    assert!(!s.redact_outbox_payload(u64::MAX, "redacted".into()).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_account_self_service_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let config = embedded::EmbeddedConfig { fsync: false, ..embedded::EmbeddedConfig::default() };
    let store = Store::open_embedded(dir.path(), config).unwrap();
    account_self_service(store.entities.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_account_self_service_conforms() {
    let pg = fleetpulse_testkit::postgres::PostgresServer::shared();
    let store = postgres::PgEntityStore::connect(&pg.create_database("account_self_service"), 4).await.unwrap();
    account_self_service(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_device_lists_conform() {
    let dir = tempfile::tempdir().unwrap();
    let config = embedded::EmbeddedConfig { fsync: false, ..embedded::EmbeddedConfig::default() };
    let store = Store::open_embedded(dir.path(), config).unwrap();
    device_lists(&store).await;
    device_labels(&store).await;
}

/// The scale-out store of a test of its own (one PostgreSQL and one ClickHouse database).
async fn scaleout(name: &str, dir: &std::path::Path) -> Store {
    let pg = fleetpulse_testkit::postgres::PostgresServer::shared();
    let ch = fleetpulse_testkit::clickhouse::ClickHouseServer::shared();
    let config = ScaleOutConfig {
        postgres_url: pg.create_database(name),
        clickhouse: clickhouse::ClickHouseConfig { url: ch.url(), database: name.into(), user: None, password: None },
        spool: spool::SpoolConfig { dir: dir.join("spool"), ..spool::SpoolConfig::default() },
    };
    Store::open_scaleout(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaleout_device_lists_conform() {
    let dir = tempfile::tempdir().unwrap();
    let store = scaleout("device_lists", dir.path()).await;
    device_lists(&store).await;
    device_labels(&store).await;
}
