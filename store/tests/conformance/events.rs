//! The event half ([`EventStore`]): batches, alarm records and their lifecycle, the latest
//! alarms, retention.

use super::*;

pub(crate) async fn events(store: &Store) {
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

/// The latest alarms feed (ALM-6): newest occurrence first (ties by id, descending), at most the
/// limit (capped), filtered as `list_alarm_records`. Its times are later than any other case's,
/// so its records lead the unfiltered feed.
pub(crate) async fn latest_alarms(store: &Store) {
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
pub(crate) async fn lifecycle(store: &Store) {
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
pub(crate) async fn retention(store: &Store) {
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
