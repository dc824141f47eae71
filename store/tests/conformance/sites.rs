//! Sites ([`SiteStore`]): the default sites, the tree and its refusals, devices matched when
//! they report and re-matched when sites change, counts by site and a device's site path.

use super::*;
use fleetpulse_proto::SiteId;

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

fn subnets(list: &[(&str, &[&str])]) -> Vec<SiteSubnet> {
    list.iter()
        .map(|(p, q)| SiteSubnet {
            public: p.parse().unwrap(),
            private: q.iter().map(|c| c.parse().unwrap()).collect(),
        })
        .collect()
}

fn new_site(e: EnterpriseId, name: &str, parent: Option<SiteId>, list: &[(&str, &[&str])]) -> NewSite {
    NewSite {
        enterprise_id: e,
        parent_id: parent,
        name: name.into(),
        description: format!("{name} site"),
        location: "Berlin".into(),
        subnets: subnets(list),
        at: UnixMillis(20),
    }
}

async fn report(s: &dyn EntityStore, device: DeviceId, public: &str, private: &str, at: i64) {
    let status = DeviceStatus {
        lines: vec![],
        call_status: CallStatus::Idle,
        firmware: "1.0".into(),
        public_ip: (!public.is_empty()).then(|| public.parse().unwrap()),
        private_ip: (!private.is_empty()).then(|| private.parse().unwrap()),
        uptime_s: 60,
        last_reboot: None,
    };
    s.update_device_snapshots(vec![DeviceSnapshotUpdate {
        device_id: device,
        online: Some(true),
        report: Some(DeviceReport { at: UnixMillis(at), status }),
    }])
    .await
    .unwrap();
}

async fn site_of(s: &dyn EntityStore, device: DeviceId) -> Option<SiteId> {
    s.device_site_path(device).await.unwrap().first().copied()
}

pub async fn sites(store: &Store) {
    let s = store.entities.as_ref();
    let e = enterprise(s, "sites-a").await;
    let other = enterprise(s, "sites-b").await;

    // Every enterprise has Internet and Intranet.
    let defaults = s.list_sites(e).await.unwrap();
    let kinds: Vec<(SiteKind, &str)> = defaults.iter().map(|d| (d.kind, d.name.as_str())).collect();
    assert_eq!(kinds, [(SiteKind::Internet, "Internet"), (SiteKind::Intranet, "Intranet")]);
    let (internet, intranet) = (defaults[0].id, defaults[1].id);
    assert_eq!(s.list_sites(other).await.unwrap().len(), 2);

    // A device reporting before any site is made lands in Internet or Intranet.
    let d1 = s.register_device(new_device(e, DeviceKey::Mac(mac(0x5101)))).await.unwrap().device.id;
    let d2 = s.register_device(new_device(e, DeviceKey::Mac(mac(0x5102)))).await.unwrap().device.id;
    let d3 = s.register_device(new_device(e, DeviceKey::Mac(mac(0x5103)))).await.unwrap().device.id;
    assert_eq!(s.device_site_path(d1).await.unwrap(), Vec::<SiteId>::new(), "no report, no site");
    report(s, d1, "20.1.9.9", "10.33.24.7", 100).await;
    report(s, d2, "192.168.1.20", "", 100).await;
    report(s, d3, "20.1.9.9", "10.1.1.1", 100).await;
    assert_eq!(site_of(s, d1).await, Some(internet));
    assert_eq!(site_of(s, d2).await, Some(intranet));

    // Sites: HQ takes 20.1/16 behind 10/8, its floor the more specific private /24.
    let hq = s.create_site(new_site(e, "HQ", None, &[("20.1.0.0/16", &["10.0.0.0/8"])])).await.unwrap();
    assert_eq!((hq.kind, hq.location.as_str(), hq.subnets.len()), (SiteKind::Custom, "Berlin", 1));
    let floor =
        s.create_site(new_site(e, "HQ floor 2", Some(hq.id), &[("20.1.0.0/16", &["10.33.24.0/24"])])).await.unwrap();
    assert_eq!(s.device_site_path(d1).await.unwrap(), vec![floor.id, hq.id], "the device, then its ancestors");
    assert_eq!(site_of(s, d3).await, Some(hq.id));
    assert_eq!(s.device_site_path(d2).await.unwrap(), vec![intranet]);
    let summary = s.device_summary(d1).await.unwrap().unwrap();
    assert_eq!(summary.site, Some(SiteRef { id: floor.id, name: "HQ floor 2".into() }));
    let page = s
        .query_devices(
            DeviceQuery { enterprises: Some(vec![e]), ..DeviceQuery::default() },
            DevicePageRequest { cursor: None, limit: 100 },
        )
        .await
        .unwrap();
    let listed: Vec<Option<String>> = page.items.iter().map(|d| d.site.as_ref().map(|x| x.name.clone())).collect();
    assert_eq!(listed, [Some("HQ floor 2".to_owned()), Some("Intranet".to_owned()), Some("HQ".to_owned())]);

    // A new report with other addresses re-matches the device.
    report(s, d3, "20.1.9.9", "10.33.24.99", 200).await;
    assert_eq!(site_of(s, d3).await, Some(floor.id));
    report(s, d3, "8.8.8.8", "10.33.24.99", 300).await;
    assert_eq!(site_of(s, d3).await, Some(internet));

    // Refusals name the conflict; nothing changes.
    invalid(
        s.create_site(new_site(e, "Copy", None, &[("20.1.0.0/16", &["10.33.24.0/24"])])).await,
        "site \"HQ floor 2\"",
    );
    invalid(s.create_site(new_site(e, "HQ", None, &[])).await, "is taken by site \"HQ\"");
    invalid(s.create_site(new_site(e, "Orphan", Some(SiteId(hq.id.0 + 1_000)), &[])).await, "does not exist");
    let foreign = s.list_sites(other).await.unwrap()[1].id;
    invalid(s.create_site(new_site(e, "Foreign parent", Some(foreign), &[])).await, "does not exist");
    invalid(
        s.create_site(new_site(e, "Under Internet", Some(internet), &[])).await,
        "Internet site cannot have child sites",
    );
    invalid(
        s.update_site(
            internet,
            SiteEdit { subnets: Some(subnets(&[("1.0.0.0/8", &[])])), ..Default::default() },
            UnixMillis(30),
        )
        .await,
        "Internet site cannot be changed",
    );
    invalid(
        s.update_site(hq.id, SiteEdit { parent_id: Some(Some(floor.id)), ..Default::default() }, UnixMillis(30)).await,
        "own descendant",
    );
    invalid(s.delete_site(hq.id).await, "child sites: \"HQ floor 2\"");
    invalid(s.delete_site(internet).await, "cannot be deleted");
    invalid(s.delete_site(intranet).await, "cannot be deleted");
    // The same subnets are fine in another enterprise.
    s.create_site(new_site(other, "HQ", None, &[("20.1.0.0/16", &["10.0.0.0/8"])])).await.unwrap();

    // Editing subnets re-matches: the floor gives its /24 up, d1 falls back to HQ.
    let edited = s
        .update_site(
            floor.id,
            SiteEdit {
                subnets: Some(subnets(&[("20.1.0.0/16", &["10.44.0.0/16"])])),
                name: Some("Floor 2".into()),
                ..Default::default()
            },
            UnixMillis(40),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((edited.name.as_str(), edited.updated_at, edited.parent_id), ("Floor 2", UnixMillis(40), Some(hq.id)));
    assert_eq!(site_of(s, d1).await, Some(hq.id));
    assert_eq!(s.update_site(SiteId(u64::MAX), SiteEdit::default(), UnixMillis(40)).await.unwrap(), None);

    // Intranet can get subnets; internal devices matching them stay there.
    s.update_site(
        intranet,
        SiteEdit { subnets: Some(subnets(&[("192.168.0.0/16", &[])])), ..Default::default() },
        UnixMillis(41),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(site_of(s, d2).await, Some(intranet));

    // Counts by site: every site listed, the busiest first.
    let counts = s.site_device_counts(e).await.unwrap();
    assert_eq!(counts.len(), 4);
    let count = |id: SiteId| counts.iter().find(|c| c.site_id == id).map(|c| (c.total, c.online)).unwrap();
    assert_eq!(count(hq.id), (1, 1));
    assert_eq!(count(internet), (1, 1));
    assert_eq!(count(intranet), (1, 1));
    assert_eq!(count(floor.id), (0, 0));
    assert!(counts[0].total >= counts[3].total);

    // The subtree for the list filter.
    assert_eq!(s.site_subtree(hq.id).await.unwrap(), vec![hq.id, floor.id]);
    assert!(s.site_subtree(SiteId(u64::MAX)).await.unwrap().is_empty());
    // The device list's site filter.
    let in_sites = |sites: Vec<SiteId>| DeviceQuery { sites: Some(sites), ..DeviceQuery::default() };
    let page =
        s.query_devices(in_sites(vec![hq.id, floor.id]), DevicePageRequest { cursor: None, limit: 100 }).await.unwrap();
    assert_eq!((page.total, page.items[0].device.id), (1, d1));
    assert_eq!(s.device_dashboard(in_sites(vec![internet, intranet])).await.unwrap().total, 2);
    assert_eq!(
        s.query_devices(in_sites(vec![]), DevicePageRequest { cursor: None, limit: 100 }).await.unwrap().total,
        0
    );

    // Tree order: roots first, then by name.
    let names: Vec<String> = s.list_sites(e).await.unwrap().into_iter().map(|x| x.name).collect();
    assert_eq!(names, ["HQ", "Internet", "Intranet", "Floor 2"]);

    // Deleting: the leaf first; its devices move to the site they match without it.
    report(s, d3, "20.1.9.9", "10.44.1.1", 400).await;
    assert_eq!(site_of(s, d3).await, Some(floor.id));
    let below_hq = DeviceQuery { sites: Some(vec![hq.id]), ..DeviceQuery::default() };
    assert_eq!(s.device_dashboard(below_hq).await.unwrap().total, 2, "HQ and its floor");
    assert!(s.delete_site(floor.id).await.unwrap());
    assert_eq!(site_of(s, d3).await, Some(hq.id));
    assert!(s.delete_site(hq.id).await.unwrap());
    assert_eq!(site_of(s, d3).await, Some(internet));
    assert_eq!(site_of(s, d1).await, Some(internet));
    assert!(!s.delete_site(hq.id).await.unwrap());
    assert_eq!(s.site(hq.id).await.unwrap(), None);
    assert_eq!(s.list_sites(e).await.unwrap().len(), 2);
}

fn upsert(line: u64, name: &str, parent: Option<&str>, list: &[(&str, &[&str])]) -> SiteUpsert {
    SiteUpsert {
        line,
        name: name.into(),
        parent_name: parent.map(Into::into),
        description: format!("{name} imported"),
        location: "Lyon".into(),
        subnets: subnets(list),
    }
}

/// Import rows: in order in one transaction, parents by name among earlier rows, a refused row
/// alone, devices re-matched once at the end.
pub async fn site_upserts(store: &Store) {
    let s = store.entities.as_ref();
    let e = enterprise(s, "sites-import").await;
    let d1 = s.register_device(new_device(e, DeviceKey::Mac(mac(0x5201)))).await.unwrap().device.id;
    let d2 = s.register_device(new_device(e, DeviceKey::Mac(mac(0x5202)))).await.unwrap().device.id;
    report(s, d1, "30.1.2.3", "10.1.1.1", 100).await;
    report(s, d2, "30.2.2.3", "10.2.1.1", 100).await;
    let existing = s.create_site(new_site(e, "Paris", None, &[("30.9.0.0/16", &[])])).await.unwrap();

    let rows = vec![
        upsert(2, "Lyon", None, &[("30.1.0.0/16", &[])]),
        upsert(3, "Lyon annex", Some("Lyon"), &[("30.1.0.0/16", &["10.1.0.0/16"])]),
        upsert(4, "Nowhere", Some("Atlantis"), &[]),
        upsert(5, "Clash", None, &[("30.1.0.0/16", &["10.1.0.0/16"])]),
        upsert(6, "Paris", None, &[("30.2.0.0/16", &[])]),
        upsert(7, "Under Internet", Some("Internet"), &[]),
    ];
    let done = s.upsert_sites(e, rows, UnixMillis(50)).await.unwrap();
    assert_eq!(done.len(), 6);
    let SiteUpserted::Created(lyon) = &done[0] else { panic!("{:?}", done[0]) };
    let SiteUpserted::Created(annex) = &done[1] else { panic!("{:?}", done[1]) };
    assert_eq!((annex.parent_id, annex.location.as_str()), (Some(lyon.id), "Lyon"));
    let refused: Vec<(u64, &str)> = done
        .iter()
        .filter_map(|d| match d {
            SiteUpserted::Refused { line, column, .. } => Some((*line, *column)),
            _ => None,
        })
        .collect();
    assert_eq!(refused, [(4, "parent_name"), (5, "subnets"), (7, "site_name")]);
    let SiteUpserted::Refused { reason, .. } = &done[3] else { unreachable!() };
    assert!(reason.contains("Lyon annex"), "the conflicting site is named: {reason}");
    let SiteUpserted::Updated(paris) = &done[4] else { panic!("{:?}", done[4]) };
    assert_eq!((paris.id, paris.updated_at, paris.parent_id), (existing.id, UnixMillis(50), None));

    // Stored as answered; devices re-matched.
    assert_eq!(s.site(annex.id).await.unwrap().as_ref(), Some(annex));
    assert_eq!(s.site(paris.id).await.unwrap().as_ref(), Some(paris));
    assert_eq!(s.device_site_path(d1).await.unwrap(), vec![annex.id, lyon.id]);
    assert_eq!(site_of(s, d2).await, Some(existing.id));
    let names: Vec<String> = s.list_sites(e).await.unwrap().into_iter().map(|x| x.name).collect();
    assert_eq!(names, ["Internet", "Intranet", "Lyon", "Paris", "Lyon annex"]);

    // Nothing but refusals changes nothing; too many rows at once is refused whole.
    let done = s.upsert_sites(e, vec![upsert(2, "Lyon", Some("Atlantis"), &[])], UnixMillis(60)).await.unwrap();
    assert!(matches!(&done[..], [SiteUpserted::Refused { line: 2, column: "parent_name", .. }]), "{done:?}");
    assert_eq!(s.site(lyon.id).await.unwrap().as_ref(), Some(lyon));
    let many: Vec<SiteUpsert> =
        (0..=MAX_SITE_UPSERTS as u64).map(|i| upsert(i + 2, &format!("s{i}"), None, &[])).collect();
    assert!(matches!(s.upsert_sites(e, many, UnixMillis(70)).await, Err(StoreError::LimitExceeded(_))));
    assert_eq!(s.list_sites(e).await.unwrap().len(), 5);
}
