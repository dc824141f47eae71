//! The first case, run before all others (it counts accounts and pages through every enterprise):
//! accounts, sessions, enterprises and devices at their simplest.

use super::*;

pub(crate) async fn entities(store: &Store) {
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
