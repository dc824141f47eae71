//! Devices ([`DeviceStore`]): snapshots, lists with every filter and sort, saved labels and columns.

use super::*;

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
        let scanned = s.scan_devices(query.clone(), DevicePageRequest { cursor: cursor.clone(), limit }).await.unwrap();
        assert_eq!(
            (&scanned.items, &scanned.next_cursor),
            (&page.items, &page.next_cursor),
            "a scan reads the same page"
        );
        assert_eq!(scanned.total, 0, "a scan does not count");
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
pub(crate) async fn device_lists(store: &Store) {
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
pub(crate) async fn device_labels(store: &Store) {
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
