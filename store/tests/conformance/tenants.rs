//! Channels and enterprises ([`TenantStore`]): the tree, profiles, searches, the channel
//! authorization, acting sessions, sub-accounts.

use super::*;

/// Tenants (TEN-1..4): the channel tree, enterprises in channels, tenant admin accounts.
pub(crate) async fn tenants(store: &Store) {
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

/// TEN-1, TEN-2, TEN-3, TEN-5: profiles, searches, edits, the channel authorization and acting
/// sessions, sub-accounts.
pub(crate) async fn tenant_profiles(store: &Store) {
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
