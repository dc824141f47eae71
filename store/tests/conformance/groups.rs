//! Device groups ([`GroupStore`]): names unique per enterprise, ordered memberships by ids and
//! by filter, tenants kept apart, top priority, reordering, default groups on auto-add only,
//! deletes that say what they removed, and memberships following moves and deletes.

use fleetpulse_proto::GroupId;

use super::*;

async fn enterprise(s: &dyn EntityStore, name: &str) -> EnterpriseId {
    s.create_enterprise(NewEnterprise {
        profile: Default::default(),
        name: name.into(),
        credential: format!("cred-{name}"),
        channel_id: None,
    })
    .await
    .unwrap()
    .id
}

fn group(e: EnterpriseId, name: &str) -> NewGroup {
    NewGroup { enterprise_id: e, name: name.into(), description: format!("{name} devices"), at: UnixMillis(7) }
}

async fn device(s: &dyn EntityStore, e: EnterpriseId, n: u32) -> DeviceId {
    s.register_device(new_device(e, DeviceKey::Mac(mac(0x9a000 + n)))).await.unwrap().device.id
}

fn ids(list: &[GroupRef]) -> Vec<GroupId> {
    list.iter().map(|g| g.id).collect()
}

/// Groups, memberships, priorities and their bounds.
pub(crate) async fn groups(store: &Store) {
    let s = store.entities.as_ref();
    let (e1, e2) = (enterprise(s, "grp-1").await, enterprise(s, "grp-2").await);
    let a = s.create_group(group(e1, "Front desk")).await.unwrap();
    assert_eq!((a.enterprise_id, a.name.as_str(), a.members, a.default), (e1, "Front desk", 0, false));
    // Names are unique per enterprise, ASCII case ignored; another enterprise may reuse one.
    assert!(matches!(s.create_group(group(e1, "FRONT DESK")).await, Err(StoreError::AlreadyExists(_))));
    let other = s.create_group(group(e2, "Front desk")).await.unwrap();
    invalid(s.create_group(group(e1, "a|b")).await, "group name");
    invalid(s.create_group(group(EnterpriseId(999_999), "x")).await, "enterprise");
    let b = s.create_group(group(e1, "Lab")).await.unwrap();
    let c = s.create_group(group(e1, "Lobby")).await.unwrap();
    assert!(matches!(
        s.edit_group(b.id, GroupEdit { name: Some("lobby".into()), ..GroupEdit::default() }, UnixMillis(8)).await,
        Err(StoreError::AlreadyExists(_))
    ));
    let renamed = s
        .edit_group(b.id, GroupEdit { name: Some("Lab 2".into()), description: None }, UnixMillis(9))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (renamed.name.as_str(), renamed.description.as_str(), renamed.updated_at),
        ("Lab 2", "Lab devices", UnixMillis(9))
    );
    assert!(s.edit_group(GroupId(999_999), GroupEdit::default(), UnixMillis(9)).await.unwrap().is_none());
    let listed = s.list_groups(Some(vec![e1]), 0, 100).await.unwrap();
    assert_eq!(listed.iter().map(|g| g.id).collect::<Vec<_>>(), [a.id, b.id, c.id]);
    assert_eq!(s.list_groups(Some(vec![e1]), a.id.0, 1).await.unwrap()[0].id, b.id, "keyset pages");
    assert!(s.list_groups(None, 0, 1_000).await.unwrap().iter().any(|g| g.id == other.id));

    // Members by ids: appended at the end of each device's list; repeats and members unchanged.
    let d: Vec<DeviceId> = devices_of(s, e1, 4).await;
    let foreign = device(s, e2, 50).await;
    let added = s.add_group_members(a.id, GroupTargets::Devices(vec![d[0], d[1], d[0]])).await.unwrap().unwrap();
    assert_eq!(added, MemberChange { matched: 2, changed: 2, unchanged: 0, at_limit: 0 });
    let again = s.add_group_members(a.id, GroupTargets::Devices(vec![d[1], d[2]])).await.unwrap().unwrap();
    assert_eq!((again.changed, again.unchanged), (1, 1));
    // A group of e1 cannot take a device of e2 (nothing changes).
    invalid(s.add_group_members(a.id, GroupTargets::Devices(vec![d[3], foreign])).await, "not a device");
    assert!(s.device_groups(d[3]).await.unwrap().is_empty());
    assert!(s.add_group_members(GroupId(999_999), GroupTargets::Devices(vec![d[0]])).await.unwrap().is_none());
    // By filter: inside the group's enterprise only, whatever the query says.
    let everyone = DeviceQuery { enterprises: Some(vec![e1, e2]), ..DeviceQuery::default() };
    let by_filter = s.add_group_members(b.id, GroupTargets::Filter(Box::new(everyone))).await.unwrap().unwrap();
    assert_eq!((by_filter.matched, by_filter.changed), (4, 4));
    assert!(s.device_groups(foreign).await.unwrap().is_empty());
    s.add_group_members(c.id, GroupTargets::Devices(vec![d[0]])).await.unwrap().unwrap();
    assert_eq!(s.device_groups(d[0]).await.unwrap(), [a.id, b.id, c.id], "in the order joined");
    assert_eq!(s.group(a.id).await.unwrap().unwrap().members, 3);

    // Top priority: first for every member, the others keep their order; repeating is harmless.
    assert_eq!(s.set_group_top_priority(c.id).await.unwrap(), Some(1));
    assert_eq!(s.device_groups(d[0]).await.unwrap(), [c.id, a.id, b.id]);
    s.set_group_top_priority(b.id).await.unwrap().unwrap();
    s.set_group_top_priority(b.id).await.unwrap().unwrap();
    assert_eq!(s.device_groups(d[0]).await.unwrap(), [b.id, c.id, a.id]);
    assert_eq!(s.device_groups(d[1]).await.unwrap(), [b.id, a.id]);
    assert_eq!(s.device_groups(d[3]).await.unwrap(), [b.id]);

    // Reorder one device's list; refused lists change nothing.
    let set = s.set_device_groups(d[0], vec![a.id, b.id]).await.unwrap().unwrap();
    assert_eq!(
        set.iter().map(|g| (g.id, g.name.as_str())).collect::<Vec<_>>(),
        [(a.id, "Front desk"), (b.id, "Lab 2")]
    );
    invalid(s.set_device_groups(d[0], vec![a.id, a.id]).await, "twice");
    invalid(s.set_device_groups(d[0], vec![other.id]).await, "not a group of enterprise");
    assert_eq!(s.device_groups(d[0]).await.unwrap(), [a.id, b.id]);
    assert!(s.set_device_groups(DeviceId(999_999), vec![]).await.unwrap().is_none());
    let refs = s.group_refs_of(vec![d[0], d[1], foreign]).await.unwrap();
    assert_eq!(refs.len(), 2, "devices without groups are left out");
    assert_eq!((refs[0].0, ids(&refs[0].1)), (d[0], vec![a.id, b.id]));

    // The device list filters by group.
    let in_a = DeviceQuery { group: Some(a.id), ..DeviceQuery::default() };
    let page = s.query_devices(in_a, DevicePageRequest { cursor: None, limit: 10 }).await.unwrap();
    assert_eq!(page.total, 3);
    assert_eq!(ids(&page.items[0].groups).len(), 2, "list rows carry their groups");
    // The dashboard counts by group (a device in each of its groups), the most members first.
    let dash = s.device_dashboard(DeviceQuery { enterprises: Some(vec![e1]), ..DeviceQuery::default() }).await.unwrap();
    let count = |g: GroupId| dash.by_group.iter().find(|c| c.key.id == g).map(|c| (c.total, c.online));
    assert_eq!((count(a.id), count(b.id), count(c.id)), (Some((3, 0)), Some((4, 0)), None));
    assert_eq!(
        (dash.by_group[0].key.id, dash.by_group[0].key.name.as_str(), dash.groups_truncated),
        (b.id, "Lab 2", false)
    );
    let platform = s.device_dashboard(DeviceQuery::default()).await.unwrap();
    assert!(platform.by_group.is_empty(), "counted by group only for one enterprise");
    assert!(platform.total >= dash.total, "the other counts are kept");
    let summary = s.device_summary(d[0]).await.unwrap().unwrap();
    assert_eq!(ids(&summary.groups), [a.id, b.id], "the detail too, in priority order");

    // Remove by ids and by filter.
    let removed = s.remove_group_members(a.id, GroupTargets::Devices(vec![d[1], d[3]])).await.unwrap().unwrap();
    assert_eq!((removed.matched, removed.changed, removed.unchanged), (2, 1, 1));
    let q =
        DeviceQuery { enterprises: Some(vec![e1]), q: Some(mac(0x9a002).as_str().into()), ..DeviceQuery::default() };
    assert_eq!(s.remove_group_members(b.id, GroupTargets::Filter(Box::new(q))).await.unwrap().unwrap().changed, 1);
    assert_eq!(s.device_groups(d[2]).await.unwrap(), [a.id]);

    // Default groups: auto-added devices join them in order; added and imported ones do not.
    invalid(s.set_default_groups(e1, vec![other.id]).await, "not a group of enterprise");
    assert_eq!(ids(&s.set_default_groups(e1, vec![c.id, a.id]).await.unwrap()), [c.id, a.id]);
    assert_eq!(ids(&s.default_groups(e1).await.unwrap()), [c.id, a.id]);
    assert!(s.group(c.id).await.unwrap().unwrap().default);
    let auto = device(s, e1, 20).await;
    assert_eq!(s.device_groups(auto).await.unwrap(), [c.id, a.id]);
    let again = s.register_device(new_device(e1, DeviceKey::Mac(mac(0x9a000 + 20)))).await.unwrap();
    assert!(!again.created);
    assert_eq!(s.device_groups(auto).await.unwrap(), [c.id, a.id], "a known device is not re-added");
    let manual = NewInventoryDevice {
        enterprise_id: e1,
        mac: Some(mac(0x9a021)),
        serial: None,
        model: "T54W".into(),
        name: "manual".into(),
        attributes: Default::default(),
        at: UnixMillis(10),
    };
    let manual = s.add_device(manual).await.unwrap();
    assert!(s.device_groups(manual.id).await.unwrap().is_empty());
    assert!(device(s, e2, 21).await.0 > 0 && s.default_groups(e2).await.unwrap().is_empty());

    // The per-device bound: adds leave full devices out; lists beyond it are refused.
    let mut many = Vec::new();
    for i in 0..MAX_GROUPS_PER_DEVICE {
        many.push(s.create_group(group(e1, &format!("bulk {i}"))).await.unwrap().id);
    }
    s.set_device_groups(d[3], many.clone()).await.unwrap().unwrap();
    let full = s.add_group_members(a.id, GroupTargets::Devices(vec![d[3]])).await.unwrap().unwrap();
    assert_eq!((full.changed, full.at_limit), (0, 1));
    let mut over = many.clone();
    over.push(a.id);
    invalid(s.set_device_groups(d[3], over).await, "at most");

    // Delete says what it removed, default place included; the devices keep their other groups.
    let gone = s.delete_group(c.id).await.unwrap().unwrap();
    assert_eq!((gone.group.id, gone.memberships_removed, gone.was_default), (c.id, 1, true));
    assert_eq!(ids(&s.default_groups(e1).await.unwrap()), [a.id]);
    assert_eq!(s.device_groups(auto).await.unwrap(), [a.id]);
    assert!(s.group(c.id).await.unwrap().is_none());
    assert!(s.delete_group(c.id).await.unwrap().is_none());

    // A move drops the device's memberships (the groups belong to the old enterprise); a delete
    // takes them with the device.
    let to_e2 = DeviceEdit { enterprise_id: Some(e2), ..DeviceEdit::default() };
    s.edit_device(d[0], to_e2, UnixMillis(40)).await.unwrap().unwrap();
    assert!(s.device_groups(d[0]).await.unwrap().is_empty());
    let before = s.group(a.id).await.unwrap().unwrap().members;
    s.delete_device(auto).await.unwrap().unwrap();
    assert_eq!(s.group(a.id).await.unwrap().unwrap().members, before - 1);
}

fn import_row(line: u64, n: u32, groups: Option<&[&str]>) -> ImportRow {
    ImportRow {
        line,
        mac: Some(mac(0x9b000 + n)),
        serial: None,
        model: None,
        name: None,
        attributes: Default::default(),
        groups: groups.map(|g| g.iter().map(|s| (*s).to_owned()).collect()),
    }
}

/// CSV import rows set groups by name: new devices and overwrite take the list, merge appends
/// what is missing, create leaves existing devices alone; an unknown name fails its row only.
pub(crate) async fn group_imports(store: &Store) {
    let s = store.entities.as_ref();
    let e = enterprise(s, "grp-import").await;
    let g1 = s.create_group(group(e, "EPGroup1")).await.unwrap().id;
    let g2 = s.create_group(group(e, "EPGroup2")).await.unwrap().id;
    s.set_default_groups(e, vec![g2]).await.unwrap();
    let out = s
        .import_devices(
            e,
            ImportMode::Merge,
            vec![
                import_row(2, 1, Some(&["epgroup2", "EPGroup1"])),
                import_row(3, 2, Some(&["EPGroup1", "Missing"])),
                import_row(4, 3, None),
            ],
            UnixMillis(10),
        )
        .await
        .unwrap();
    let ImportOutcome::Created(d1) = out[0] else { panic!("created: {out:?}") };
    assert!(matches!(&out[1], ImportOutcome::Failed("endpoint_group", r) if r.contains("\"Missing\"")), "{out:?}");
    let ImportOutcome::Created(d3) = out[2] else { panic!("created: {out:?}") };
    assert_eq!(s.device_groups(d1).await.unwrap(), [g2, g1]);
    assert!(s.device_groups(d3).await.unwrap().is_empty(), "imports get no default groups");
    let mac2 =
        DeviceQuery { enterprises: Some(vec![e]), q: Some(mac(0x9b002).as_str().into()), ..DeviceQuery::default() };
    let page = s.query_devices(mac2, DevicePageRequest { cursor: None, limit: 10 }).await.unwrap();
    assert_eq!(page.total, 0, "a failed row adds nothing");

    let again = |mode, groups: Option<&'static [&'static str]>| {
        let rows = vec![import_row(2, 1, groups)];
        async move { s.import_devices(e, mode, rows, UnixMillis(11)).await.unwrap() }
    };
    again(ImportMode::Merge, Some(&["EPGroup1"])).await;
    assert_eq!(s.device_groups(d1).await.unwrap(), [g2, g1], "merge keeps the order and adds nothing twice");
    again(ImportMode::Create, Some(&[])).await;
    assert_eq!(s.device_groups(d1).await.unwrap(), [g2, g1], "create skips existing devices");
    again(ImportMode::Overwrite, None).await;
    assert_eq!(s.device_groups(d1).await.unwrap(), [g2, g1], "no column: groups untouched");
    again(ImportMode::Overwrite, Some(&["EPGroup1"])).await;
    assert_eq!(s.device_groups(d1).await.unwrap(), [g1]);
    again(ImportMode::Merge, Some(&[])).await;
    assert_eq!(s.device_groups(d1).await.unwrap(), [g1], "an empty cell merges nothing");
    again(ImportMode::Overwrite, Some(&[])).await;
    assert!(s.device_groups(d1).await.unwrap().is_empty(), "an empty cell overwrites with none");
}

async fn devices_of(s: &dyn EntityStore, e: EnterpriseId, n: u32) -> Vec<DeviceId> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(device(s, e, i).await);
    }
    out
}
