//! Licences ([`LicenceStore`], ORD-3): the oldest devices up to the allowance are licensed once
//! an order has started; registrations, deletions and moves keep the rule without a re-rank;
//! orders starting, expiring and being cancelled re-rank; an unlicensed device gets no command.

use super::*;

const DAY: i64 = 86_400_000;

async fn enterprise(s: &dyn EntityStore, name: &str) -> EnterpriseId {
    let new = NewEnterprise {
        profile: Default::default(),
        name: name.into(),
        credential: format!("cred-{name}"),
        channel_id: None,
    };
    s.create_enterprise(new).await.unwrap().id
}

fn order(e: EnterpriseId, devices: u32, starts: i64, ends: i64, placed: i64) -> NewOrder {
    NewOrder {
        enterprise_id: e,
        seller_channel_id: None,
        package: "Standard".into(),
        max_devices: devices,
        duration_months: 1,
        effective_date: "2026-01-01".into(),
        starts_at: UnixMillis(starts),
        ends_at: UnixMillis(ends),
        amount: 0,
        created_by: AccountId(1),
        created_at: UnixMillis(placed),
    }
}

async fn statuses(s: &dyn EntityStore, devices: &[DeviceId]) -> Vec<&'static str> {
    let mut out = Vec::new();
    for &d in devices {
        out.push(s.device_licence(d).await.unwrap().expect("device").as_str());
    }
    out
}

pub(crate) async fn licences(store: &Store) {
    let s = &*store.entities;
    let e = enterprise(s, "licence-e").await;
    let other = enterprise(s, "licence-other").await;
    let mut devices = Vec::new();
    for n in 0..4 {
        devices.push(s.register_device(new_device(e, DeviceKey::Mac(mac(0xf1000 + n)))).await.unwrap().device.id);
    }
    assert_eq!(statuses(s, &devices).await, ["unknown"; 4], "no order yet");
    assert!(s.device_licence(DeviceId(9_999_999)).await.unwrap().is_none());

    // A pending order licenses nothing and takes nothing away.
    s.create_order(order(e, 2, 10 * DAY, 20 * DAY, 5 * DAY)).await.unwrap();
    assert_eq!(statuses(s, &devices).await, ["unknown"; 4]);
    assert_eq!(s.refresh_licences(UnixMillis(9 * DAY)).await.unwrap(), 0, "nothing due before the start");
    // It starts: the two oldest are licensed (allowance below the devices in use).
    // (Other suites' enterprises may be due as well.)
    assert!(s.refresh_licences(UnixMillis(10 * DAY)).await.unwrap() >= 1);
    assert_eq!(statuses(s, &devices).await, ["licensed", "licensed", "unlicensed", "unlicensed"]);
    let counts = s.licence_counts(e).await.unwrap();
    assert_eq!(counts, LicenceCounts { metered: true, allowance: 2, licensed: 2, unlicensed: 2 });
    assert_eq!(s.refresh_licences(UnixMillis(10 * DAY)).await.unwrap(), 0, "once per change");

    // An unlicensed device gets no command; a licensed one does.
    let command = |d: DeviceId| NewCommand {
        device_id: d,
        enterprise_id: e,
        kind: "reboot".into(),
        args: "{}".into(),
        deadline: UnixMillis(11 * DAY),
        issued_by: AccountId(1),
    };
    let answers =
        s.enqueue_commands(vec![command(devices[0]), command(devices[3])], UnixMillis(10 * DAY)).await.unwrap();
    assert!(answers[0].is_ok(), "{answers:?}");
    assert_eq!(answers[1].as_ref().err(), Some(&CommandRefusal::Unlicensed));

    // A new device is the newest: unlicensed while the allowance is used up. An overlapping
    // order placed active raises the allowance at once.
    devices.push(s.register_device(new_device(e, DeviceKey::Mac(mac(0xf1004)))).await.unwrap().device.id);
    assert_eq!(statuses(s, &devices).await[4], "unlicensed");
    s.create_order(order(e, 2, 5 * DAY, 15 * DAY, 12 * DAY)).await.unwrap();
    let now = UnixMillis(12 * DAY);
    s.refresh_licences(now).await.unwrap();
    assert_eq!(statuses(s, &devices).await, ["licensed", "licensed", "licensed", "licensed", "unlicensed"]);
    // Deleting a licensed device hands its licence to the oldest unlicensed one.
    s.delete_device(devices[1]).await.unwrap().expect("deleted");
    let left = [devices[0], devices[2], devices[3], devices[4]];
    assert_eq!(statuses(s, &left).await, ["licensed"; 4]);
    assert_eq!(s.licence_counts(e).await.unwrap().licensed, 4);
    // A new device while a licence is free takes it.
    s.delete_device(devices[4]).await.unwrap().expect("deleted");
    let newest = s.register_device(new_device(e, DeviceKey::Mac(mac(0xf1005)))).await.unwrap().device.id;
    assert_eq!(s.device_licence(newest).await.unwrap(), Some(LicenceStatus::Licensed));
    // Moving the oldest device away: the enterprise it leaves keeps four licensed devices at
    // most; the one it joins (never metered) shows it unknown.
    let moved = DeviceEdit { enterprise_id: Some(other), ..DeviceEdit::default() };
    s.edit_device(devices[0], moved, now).await.unwrap().expect("moved");
    assert_eq!(s.device_licence(devices[0]).await.unwrap(), Some(LicenceStatus::Unknown));
    assert_eq!(
        s.licence_counts(e).await.unwrap(),
        LicenceCounts { metered: true, allowance: 4, licensed: 3, unlicensed: 0 }
    );

    // Orders expire one after the other: 2 left at day 15, none at day 20 (still metered).
    s.refresh_licences(UnixMillis(15 * DAY)).await.unwrap();
    assert_eq!(
        s.licence_counts(e).await.unwrap(),
        LicenceCounts { metered: true, allowance: 2, licensed: 2, unlicensed: 1 }
    );
    s.refresh_licences(UnixMillis(20 * DAY)).await.unwrap();
    assert_eq!(
        s.licence_counts(e).await.unwrap(),
        LicenceCounts { metered: true, allowance: 0, licensed: 0, unlicensed: 3 }
    );

    // An enterprise whose only order is cancelled before it starts stays unknown.
    let d = s.register_device(new_device(other, DeviceKey::Mac(mac(0xf1010)))).await.unwrap().device.id;
    let o = s.create_order(order(other, 1, 30 * DAY, 40 * DAY, 20 * DAY)).await.unwrap();
    assert!(matches!(
        s.cancel_order(o.id, AccountId(1), UnixMillis(20 * DAY)).await.unwrap(),
        Some(OrderCancellation::Cancelled(_))
    ));
    s.refresh_licences(UnixMillis(30 * DAY)).await.unwrap();
    assert_eq!(statuses(s, &[d, devices[0]]).await, ["unknown", "unknown"]);
    assert_eq!(s.licence_counts(other).await.unwrap(), LicenceCounts::default());

    // The device list filters by status.
    let q =
        DeviceQuery { enterprises: Some(vec![e]), licence: Some(LicenceStatus::Unlicensed), ..DeviceQuery::default() };
    let page = s.query_devices(q, DevicePageRequest { cursor: None, limit: 10 }).await.unwrap();
    assert_eq!(page.total, 3);
}
