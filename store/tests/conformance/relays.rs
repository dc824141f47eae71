//! Relay grants ([`RelayStore`]): created with their scope and hashed credential, found by the
//! hash, renamed, rotated (the old hash no longer finds it), revoked once (then not rotated),
//! touched forward only, deleted once; bad names, unknown scopes and taken hashes refused.

use super::*;

pub(crate) async fn relays(store: &Store) {
    let s = store.entities.as_ref();
    let channel = s.create_channel(new_channel("relay-channel", None, true), UnixMillis(1)).await.unwrap();
    let new_enterprise = NewEnterprise {
        profile: Default::default(),
        name: "relay-e".into(),
        credential: "cred-relay-e".into(),
        channel_id: Some(channel.id),
    };
    let enterprise = s.create_enterprise(new_enterprise).await.unwrap();
    let new = |name: &str, scope: TenantRef, hash: u8| NewRelay {
        name: name.into(),
        scope,
        credential_hash: TokenHash([hash; 32]),
        created_by: AccountId(1),
        at: UnixMillis(100),
    };
    let lobby = s.create_relay(new(" lobby ", TenantRef::Enterprise(enterprise.id), 1)).await.unwrap();
    assert_eq!(lobby.name, "lobby", "trimmed");
    assert_eq!(lobby.scope, TenantRef::Enterprise(enterprise.id));
    assert_eq!((lobby.created_by, lobby.created_at), (AccountId(1), UnixMillis(100)));
    assert_eq!((lobby.rotated_at, lobby.revoked_at, lobby.last_seen_at), (None, None, None));
    let site = s.create_relay(new("site", TenantRef::Channel(channel.id), 2)).await.unwrap();
    assert!(site.id > lobby.id);
    assert_eq!(s.relay(site.id).await.unwrap().unwrap().scope, TenantRef::Channel(channel.id));
    assert_eq!(s.relay_by_credential(TokenHash([1; 32])).await.unwrap().map(|r| r.id), Some(lobby.id));
    assert_eq!(s.relay_by_credential(TokenHash([9; 32])).await.unwrap(), None);
    assert_eq!(s.list_relays().await.unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), [lobby.id, site.id]);

    // Refusals: a taken hash, an unknown scope, a bad name; nothing stored.
    match s.create_relay(new("dup", TenantRef::Enterprise(enterprise.id), 1)).await {
        Err(StoreError::AlreadyExists(what)) => assert_eq!(what, "relay credential"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    invalid(s.create_relay(new("x", TenantRef::Enterprise(EnterpriseId(999_999)), 3)).await, "enterprise");
    invalid(s.create_relay(new("x", TenantRef::Channel(ChannelId(999_999)), 3)).await, "channel");
    invalid(s.create_relay(new("  ", TenantRef::Channel(channel.id), 3)).await, "empty");
    invalid(s.rename_relay(lobby.id, "a\u{7}".into()).await, "control");
    assert_eq!(s.list_relays().await.unwrap().len(), 2);

    // Rename; rotate: the old hash no longer finds it, the new one does.
    assert_eq!(s.rename_relay(lobby.id, "front desk".into()).await.unwrap().unwrap().name, "front desk");
    assert_eq!(s.rename_relay(RelayId(u64::MAX), "x".into()).await.unwrap(), None);
    let rotated = s.rotate_relay(lobby.id, TokenHash([4; 32]), UnixMillis(200)).await.unwrap().unwrap();
    assert_eq!(rotated.rotated_at, Some(UnixMillis(200)));
    assert_eq!(s.relay_by_credential(TokenHash([1; 32])).await.unwrap(), None);
    assert_eq!(s.relay_by_credential(TokenHash([4; 32])).await.unwrap().map(|r| r.id), Some(lobby.id));
    assert!(matches!(
        s.rotate_relay(lobby.id, TokenHash([2; 32]), UnixMillis(201)).await,
        Err(StoreError::AlreadyExists("relay credential"))
    ));

    // Touch moves forward only.
    s.touch_relay(lobby.id, UnixMillis(500)).await.unwrap();
    s.touch_relay(lobby.id, UnixMillis(400)).await.unwrap();
    assert_eq!(s.relay(lobby.id).await.unwrap().unwrap().last_seen_at, Some(UnixMillis(500)));

    // Revoke once; a revoked grant is still found (the caller refuses it) but not rotated.
    let revoked = s.revoke_relay(lobby.id, UnixMillis(600)).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(UnixMillis(600)));
    assert_eq!(s.revoke_relay(lobby.id, UnixMillis(700)).await.unwrap(), None);
    let found = s.relay_by_credential(TokenHash([4; 32])).await.unwrap().unwrap();
    assert_eq!(found.revoked_at, Some(UnixMillis(600)));
    assert_eq!(s.rotate_relay(lobby.id, TokenHash([5; 32]), UnixMillis(800)).await.unwrap(), None);

    // Delete once.
    assert!(s.delete_relay(lobby.id).await.unwrap());
    assert!(!s.delete_relay(lobby.id).await.unwrap());
    assert_eq!(s.relay(lobby.id).await.unwrap(), None);
    assert_eq!(s.relay_by_credential(TokenHash([4; 32])).await.unwrap(), None);
    assert!(s.delete_relay(site.id).await.unwrap());
}
