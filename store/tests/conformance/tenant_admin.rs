//! Tenant administration ([`TenantAdminStore`], TEN-1, TEN-5): deleted sub-accounts, tenant
//! freezes that unfreeze exactly what they froze, enterprise moves; and the RPS device list
//! ([`RpsStore`], DEV-1).

use super::*;
use fleetpulse_proto::RpsDeviceId;

fn channel(name: &str, parent: Option<ChannelId>) -> NewChannel {
    NewChannel {
        name: name.into(),
        parent_id: parent,
        allow_sub_channels: true,
        device_management: true,
        rps: true,
        contact: String::new(),
        email: String::new(),
        phone: String::new(),
        country: String::new(),
    }
}

async fn enterprise(s: &dyn EntityStore, name: &str, channel: Option<ChannelId>) -> Enterprise {
    let new = NewEnterprise {
        profile: Default::default(),
        name: name.into(),
        credential: format!("cred-{name}"),
        channel_id: channel,
    };
    s.create_enterprise(new).await.unwrap()
}

fn tenant_account(email: &str, channel: Option<ChannelId>, enterprise: Option<EnterpriseId>) -> NewAccount {
    let role = if channel.is_some() { Role::ChannelAdmin } else { Role::EnterpriseAdmin };
    NewAccount { role, channel_id: channel, enterprise_id: enterprise, ..platform_admin(email) }
}

fn session(hash: u8, account: AccountId, acting: Option<Acting>) -> Session {
    Session {
        acting,
        token_hash: TokenHash([hash; 32]),
        account_id: account,
        created_at: UnixMillis(10_000),
        expires_at: UnixMillis(i64::MAX),
        last_seen_at: UnixMillis(10_000),
    }
}

async fn frozen(s: &dyn EntityStore, ids: &[AccountId]) -> Vec<bool> {
    let mut out = Vec::new();
    for &id in ids {
        out.push(s.account(id).await.unwrap().expect("account").frozen);
    }
    out
}

/// A sub-account is deleted as a tombstone (its email free again, no sessions, never read);
/// full accounts are not deleted this way; the profile's default allows device management.
pub(crate) async fn sub_account_deletion(store: &Store) {
    let s = store.entities.as_ref();
    let parent = s.create_account(platform_admin("tadmin-parent@example.com")).await.unwrap();
    let permissions = Permissions { features: vec![Feature::Devices], data: DataPermission::All };
    let sub = NewAccount {
        parent_id: Some(parent.id),
        permissions: Some(permissions.clone()),
        ..platform_admin("tadmin-sub@example.com")
    };
    let sub = s.create_account(sub.clone()).await.unwrap();
    s.create_session(session(70, sub.id, None)).await.unwrap();
    assert!(!s.delete_sub_account(parent.id, UnixMillis(5)).await.unwrap(), "a full account is not a sub-account");
    assert!(s.delete_sub_account(sub.id, UnixMillis(5)).await.unwrap());
    assert!(!s.delete_sub_account(sub.id, UnixMillis(6)).await.unwrap(), "deleted once");
    assert!(!s.delete_sub_account(AccountId(u64::MAX), UnixMillis(6)).await.unwrap());
    assert_eq!(s.account(sub.id).await.unwrap(), None);
    assert_eq!(s.account_by_email("tadmin-sub@example.com").await.unwrap(), None);
    assert_eq!(s.session(TokenHash([70; 32]), UnixMillis(20_000)).await.unwrap(), None, "its sessions ended");
    let listed = s.list_accounts(AccountFilter { parent: Some(parent.id), ..Default::default() }, Page::first(10));
    assert!(listed.await.unwrap().is_empty());
    assert!(!s.set_account_frozen(sub.id, false).await.unwrap(), "a tombstone is not unfrozen");
    // The email is free again.
    let again = NewAccount {
        parent_id: Some(parent.id),
        permissions: Some(permissions),
        ..platform_admin("TADMIN-SUB@example.com")
    };
    let again = s.create_account(again).await.unwrap();
    assert_ne!(again.id, sub.id);
    assert!(EnterpriseProfile::default().device_management && !EnterpriseProfile::default().rps);
}

/// Freezing a channel freezes every account of its subtree and their enterprises (sessions
/// ended); unfreezing restores exactly those; accounts frozen by hand or by a sub-tenant's own
/// freeze stay frozen; enterprises move with their authorization reset.
pub(crate) async fn tenant_freezes(store: &Store) {
    let s = store.entities.as_ref();
    let top = s.create_channel(channel("Freeze Top", None), UnixMillis(1)).await.unwrap().id;
    let below = s.create_channel(channel("Freeze Below", Some(top)), UnixMillis(1)).await.unwrap().id;
    let other = s.create_channel(channel("Freeze Other", None), UnixMillis(1)).await.unwrap().id;
    let e_top = enterprise(s, "freeze-e-top", Some(top)).await.id;
    let e_below = enterprise(s, "freeze-e-below", Some(below)).await.id;
    let e_other = enterprise(s, "freeze-e-other", Some(other)).await.id;
    let mut ids = Vec::new();
    for (email, c, e) in [
        ("freeze-top@example.com", Some(top), None),
        ("freeze-below@example.com", Some(below), None),
        ("freeze-e-top@example.com", None, Some(e_top)),
        ("freeze-e-below@example.com", None, Some(e_below)),
        ("freeze-by-hand@example.com", None, Some(e_top)),
        ("freeze-other@example.com", Some(other), None),
        ("freeze-e-other@example.com", None, Some(e_other)),
    ] {
        ids.push(s.create_account(tenant_account(email, c, e)).await.unwrap().id);
    }
    for (i, &id) in ids.iter().enumerate() {
        s.create_session(session(80 + i as u8, id, None)).await.unwrap();
    }
    let by_hand = ids[4];
    assert!(s.set_account_frozen(by_hand, true).await.unwrap());

    // The sub-channel first: its two accounts.
    let below_freeze = s.freeze_tenant(TenantRef::Channel(below), ids[0], UnixMillis(7)).await.unwrap().unwrap();
    assert_eq!((below_freeze.accounts, below_freeze.frozen_by), (2, ids[0]));
    assert_eq!(s.tenant_freeze(TenantRef::Channel(below)).await.unwrap(), Some(below_freeze.clone()));
    // Then the top: the rest of its subtree; the other channel untouched.
    let top_freeze = s.freeze_tenant(TenantRef::Channel(top), AccountId(1), UnixMillis(8)).await.unwrap().unwrap();
    assert_eq!(top_freeze.accounts, 2, "top's admin and its enterprise's, not those frozen already");
    assert_eq!(frozen(s, &ids).await, [true, true, true, true, true, false, false]);
    for i in 0..5u8 {
        assert_eq!(s.session(TokenHash([80 + i; 32]), UnixMillis(20_000)).await.unwrap(), None, "session {i}");
    }
    assert!(s.session(TokenHash([85; 32]), UnixMillis(20_000)).await.unwrap().is_some(), "other channel's");
    assert_eq!(s.freeze_tenant(TenantRef::Channel(top), AccountId(1), UnixMillis(9)).await.unwrap(), None);
    let unknown = s.freeze_tenant(TenantRef::Enterprise(EnterpriseId(999_999)), AccountId(1), UnixMillis(9)).await;
    assert!(matches!(unknown, Err(StoreError::InvalidInput(_))), "{unknown:?}");

    // Unfreezing the top restores its two; the sub-channel's and the hand-frozen one stay.
    assert_eq!(s.unfreeze_tenant(TenantRef::Channel(top)).await.unwrap(), Some(2));
    assert_eq!(frozen(s, &ids).await, [false, true, false, true, true, false, false]);
    assert_eq!(s.unfreeze_tenant(TenantRef::Channel(top)).await.unwrap(), None, "not frozen any more");
    assert_eq!(s.tenant_freeze(TenantRef::Channel(top)).await.unwrap(), None);
    // One of the sub-channel's accounts unfrozen by hand is its own again.
    assert!(s.set_account_frozen(ids[3], false).await.unwrap());
    assert!(s.set_account_frozen(ids[3], true).await.unwrap());
    assert_eq!(s.unfreeze_tenant(TenantRef::Channel(below)).await.unwrap(), Some(1));
    assert_eq!(frozen(s, &ids).await, [false, false, false, true, true, false, false]);

    // An enterprise freeze covers only that enterprise's accounts.
    let e_freeze = s.freeze_tenant(TenantRef::Enterprise(e_other), AccountId(1), UnixMillis(10)).await.unwrap();
    assert_eq!(e_freeze.map(|f| f.accounts), Some(1));
    assert_eq!(frozen(s, &ids[5..]).await, [false, true]);
    assert_eq!(s.unfreeze_tenant(TenantRef::Enterprise(e_other)).await.unwrap(), Some(1));

    // Moving an enterprise: new channel, authorization reset, acting sessions ended.
    use ChannelAuthorization as A;
    s.set_channel_authorization(e_top, &[A::None], A::Accepted).await.unwrap().expect("accepted");
    s.create_session(session(95, ids[0], Some(Acting::Enterprise(e_top)))).await.unwrap();
    let moved = s.move_enterprise(e_top, Some(other)).await.unwrap().expect("moved");
    assert_eq!((moved.channel_id, moved.channel_authorization), (Some(other), A::None));
    assert_eq!(s.session(TokenHash([95; 32]), UnixMillis(20_000)).await.unwrap(), None);
    let bad = s.move_enterprise(e_top, Some(ChannelId(999_999))).await;
    assert!(matches!(bad, Err(StoreError::InvalidInput(_))), "{bad:?}");
    assert_eq!(s.move_enterprise(EnterpriseId(999_999), Some(top)).await.unwrap(), None);
    let to_platform = s.move_enterprise(e_top, None).await.unwrap().expect("moved");
    assert_eq!(to_platform.channel_id, None);
}

/// The RPS list: one entry per device key across enterprises, edits, deletion, searches, an
/// import that adds, updates and refuses rows one by one, and the redirect lookup.
pub(crate) async fn rps_devices(store: &Store) {
    let s = store.entities.as_ref();
    let a = enterprise(s, "rps-a", None).await.id;
    let b = enterprise(s, "rps-b", None).await.id;
    let new = |e: EnterpriseId, key: DeviceKey, url: &str| NewRpsDevice {
        enterprise_id: e,
        key,
        server_url: url.into(),
        at: UnixMillis(3),
    };
    let first = s.add_rps_device(new(a, DeviceKey::Mac(mac(0x501)), "https://dm.a.example/cfg")).await.unwrap();
    assert_eq!((first.mac.as_deref(), first.serial.as_deref()), (Some(mac(0x501).as_str()), None));
    let serial = s.add_rps_device(new(a, DeviceKey::Serial("RPS-SN-1".into()), "http://10.0.0.9")).await.unwrap();
    assert_eq!(serial.serial.as_deref(), Some("RPS-SN-1"));
    let taken = s.add_rps_device(new(b, DeviceKey::Mac(mac(0x501)), "https://b.example")).await;
    assert!(matches!(taken, Err(StoreError::AlreadyExists(_))), "{taken:?}");
    let bad = s.add_rps_device(new(b, DeviceKey::Mac(mac(0x502)), "ftp://b.example")).await;
    assert!(matches!(bad, Err(StoreError::InvalidInput(_))), "{bad:?}");
    let unknown = s.add_rps_device(new(EnterpriseId(999_999), DeviceKey::Mac(mac(0x503)), "https://x.example")).await;
    assert!(matches!(unknown, Err(StoreError::InvalidInput(_))), "{unknown:?}");

    let edited = s.set_rps_server(first.id, "https://dm2.a.example".into(), UnixMillis(4)).await.unwrap().unwrap();
    assert_eq!(
        (edited.server_url.as_str(), edited.updated_at, edited.created_at),
        ("https://dm2.a.example", UnixMillis(4), UnixMillis(3))
    );
    assert_eq!(s.set_rps_server(RpsDeviceId(999_999), "https://x.example".into(), UnixMillis(4)).await.unwrap(), None);
    assert_eq!(s.rps_device(first.id).await.unwrap(), Some(edited.clone()));
    assert_eq!(s.rps_server(&DeviceKey::Mac(mac(0x501))).await.unwrap(), Some((a, "https://dm2.a.example".to_owned())));
    assert_eq!(s.rps_server(&DeviceKey::Mac(mac(0x5ff))).await.unwrap(), None);

    // Import into B: one new, one of A's refused alone, one repeated (added, then updated).
    let rows = vec![
        (DeviceKey::Mac(mac(0x510)), "https://b.example/1".to_owned()),
        (DeviceKey::Serial("RPS-SN-1".into()), "https://b.example/stolen".to_owned()),
        (DeviceKey::Mac(mac(0x510)), "https://b.example/2".to_owned()),
    ];
    let outcomes = s.import_rps_devices(b, rows, UnixMillis(5)).await.unwrap();
    let RpsImportOutcome::Added(added) = outcomes[0] else { panic!("{outcomes:?}") };
    assert_eq!(outcomes[1..], [RpsImportOutcome::Taken, RpsImportOutcome::Updated(added)]);
    assert_eq!(s.rps_server(&DeviceKey::Serial("RPS-SN-1".into())).await.unwrap(), Some((a, "http://10.0.0.9".into())));
    assert_eq!(s.rps_server(&DeviceKey::Mac(mac(0x510))).await.unwrap(), Some((b, "https://b.example/2".into())));
    let bad_row = vec![(DeviceKey::Mac(mac(0x511)), "not a url".to_owned())];
    assert!(matches!(s.import_rps_devices(b, bad_row, UnixMillis(5)).await, Err(StoreError::InvalidInput(_))));
    assert_eq!(s.rps_server(&DeviceKey::Mac(mac(0x511))).await.unwrap(), None, "nothing of a refused import");

    // Listings: by enterprise, by search, in pages.
    let ids = |v: Vec<RpsDevice>| v.into_iter().map(|d| d.id).collect::<Vec<_>>();
    let of_a = RpsFilter { enterprises: Some(vec![a]), q: None };
    assert_eq!(ids(s.list_rps_devices(&of_a, Page::first(10)).await.unwrap()), [first.id, serial.id]);
    assert_eq!(ids(s.list_rps_devices(&of_a, Page::first(1)).await.unwrap()), [first.id]);
    let after = Page { after: first.id.0, limit: 10 };
    assert_eq!(ids(s.list_rps_devices(&of_a, after).await.unwrap()), [serial.id]);
    let search = RpsFilter { enterprises: Some(vec![a, b]), q: Some("DM2.A".into()) };
    assert_eq!(ids(s.list_rps_devices(&search, Page::first(10)).await.unwrap()), [first.id]);
    let none = RpsFilter { enterprises: Some(vec![]), q: None };
    assert!(s.list_rps_devices(&none, Page::first(10)).await.unwrap().is_empty());

    assert!(s.delete_rps_device(first.id).await.unwrap());
    assert!(!s.delete_rps_device(first.id).await.unwrap());
    assert_eq!(s.rps_server(&DeviceKey::Mac(mac(0x501))).await.unwrap(), None);
    // Freed, the key may go to another enterprise.
    s.add_rps_device(new(b, DeviceKey::Mac(mac(0x501)), "https://b.example")).await.unwrap();
}
