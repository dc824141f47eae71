//! Relay grants through the API (issue 15): the credential answered once and stored only as its
//! SHA-256, rename, rotate, revoke, delete, who sees which grant, and the operation log.

use axum::http::{Method, StatusCode};
use fleetpulse_store::{RelayId, Role, TenantRef};
use serde_json::json;

use super::*;
use crate::hash_password;

async fn login_as(
    h: &Harness,
    email: &str,
    role: Role,
    channel: Option<fleetpulse_proto::ChannelId>,
    enterprise: Option<fleetpulse_proto::EnterpriseId>,
) -> String {
    let new = fleetpulse_store::NewAccount {
        parent_id: None,
        permissions: None,
        email: email.into(),
        password_hash: hash_password("tenant-password").expect("hash"),
        role,
        channel_id: channel,
        enterprise_id: enterprise,
        must_change_password: false,
    };
    h.store.entities.create_account(new).await.expect("account");
    h.login(email, "tenant-password").await.json()["token"].as_str().expect("token").to_owned()
}

#[tokio::test]
async fn a_relay_grant_is_created_rotated_revoked_and_deleted_with_its_credential_shown_once() {
    let h = harness();
    let token = h.admin_token().await;
    let a = stored_channel(&h, "A", None).await;
    let ea = stored_enterprise(&h, "EA", a).await;

    let created = h
        .call(
            Method::POST,
            "/api/v1/relays",
            Some(&token),
            Some(json!({"name": " lobby ", "scope": {"enterprise": ea}})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let body = created.json();
    let credential = body["credential"].as_str().expect("credential").to_owned();
    assert!(credential.starts_with("fpr_") && credential.len() == 68, "{credential}");
    assert_eq!((body["name"].as_str(), body["scope"].clone()), (Some("lobby"), json!({"enterprise": ea.0})));
    assert!(body["revoked_at"].is_null() && body["last_seen_at"].is_null(), "{body}");
    let id = body["id"].as_u64().expect("id");
    // Stored as its SHA-256 only; never answered again.
    let stored = h.store.entities.relay_by_credential(crate::secrets::token_hash(&credential)).await.unwrap();
    assert_eq!(stored.map(|r| r.id), Some(RelayId(id)));
    let shown = h.get(&format!("/api/v1/relays/{id}"), &token).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert!(shown.json().get("credential").is_none() && !shown.text().contains(&credential), "{}", shown.text());
    let listed = h.get("/api/v1/relays", &token).await;
    assert_eq!(item_ids(&listed), [id]);
    assert!(!listed.text().contains(&credential));

    let renamed =
        h.call(Method::PUT, &format!("/api/v1/relays/{id}"), Some(&token), Some(json!({"name": "front desk"}))).await;
    assert_eq!(renamed.json()["name"], "front desk", "{}", renamed.text());
    let bad = h.call(Method::PUT, &format!("/api/v1/relays/{id}"), Some(&token), Some(json!({"name": ""}))).await;
    bad.assert_error(StatusCode::BAD_REQUEST, "invalid_request");

    let rotated = h.call(Method::POST, &format!("/api/v1/relays/{id}/rotate"), Some(&token), None).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text());
    let new_credential = rotated.json()["credential"].as_str().expect("credential").to_owned();
    assert_ne!(new_credential, credential);
    assert!(rotated.json()["rotated_at"].is_i64(), "{}", rotated.text());
    let entities = &h.store.entities;
    assert_eq!(entities.relay_by_credential(crate::secrets::token_hash(&credential)).await.unwrap(), None);
    assert!(entities.relay_by_credential(crate::secrets::token_hash(&new_credential)).await.unwrap().is_some());

    let revoked = h.call(Method::POST, &format!("/api/v1/relays/{id}/revoke"), Some(&token), None).await;
    assert!(revoked.json()["revoked_at"].is_i64(), "{}", revoked.text());
    h.call(Method::POST, &format!("/api/v1/relays/{id}/revoke"), Some(&token), None)
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    h.call(Method::POST, &format!("/api/v1/relays/{id}/rotate"), Some(&token), None)
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");

    let deleted = h.call(Method::DELETE, &format!("/api/v1/relays/{id}"), Some(&token), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    h.get(&format!("/api/v1/relays/{id}"), &token).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    // Unknown scopes are not found; a malformed scope is refused.
    let unknown = json!({"name": "x", "scope": {"enterprise": 999_999}});
    h.call(Method::POST, "/api/v1/relays", Some(&token), Some(unknown))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    let unknown = json!({"name": "x", "scope": {"channel": 999_999}});
    h.call(Method::POST, "/api/v1/relays", Some(&token), Some(unknown))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    let malformed = json!({"name": "x", "scope": {"site": 1}});
    let reply = h.call(Method::POST, "/api/v1/relays", Some(&token), Some(malformed)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());

    // Every change is in the operation log, and no credential is.
    let log = h.get("/api/v1/operation-logs?limit=100", &token).await;
    let operations: Vec<String> = log.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| r["operation"].as_str().unwrap_or_default().to_owned())
        .collect();
    for op in [
        "POST /api/v1/relays",
        "PUT /api/v1/relays/{id}",
        "POST /api/v1/relays/{id}/rotate",
        "POST /api/v1/relays/{id}/revoke",
        "DELETE /api/v1/relays/{id}",
    ] {
        assert!(operations.iter().any(|o| o == op), "{op} missing from {operations:?}");
    }
    assert!(!log.text().contains(&credential) && !log.text().contains(&new_credential));
}

#[tokio::test]
async fn channel_and_enterprise_admins_manage_the_grants_of_their_scope_only() {
    let h = harness();
    let platform = h.admin_token().await;
    let a = stored_channel(&h, "A", None).await;
    let a1 = stored_channel(&h, "A1", Some(a)).await;
    let b = stored_channel(&h, "B", None).await;
    let ea = stored_enterprise(&h, "EA", a).await;
    let ea1 = stored_enterprise(&h, "EA1", a1).await;
    let eb = stored_enterprise(&h, "EB", b).await;
    let channel_a = login_as(&h, "relay-ca@example.com", Role::ChannelAdmin, Some(a), None).await;
    let enterprise_a = login_as(&h, "relay-ea@example.com", Role::EnterpriseAdmin, None, Some(ea)).await;
    let create = |token: &str, scope: TenantRef| {
        let body = json!({"name": "r", "scope": scope});
        let token = token.to_owned();
        let h = &h;
        async move { h.call(Method::POST, "/api/v1/relays", Some(&token), Some(body)).await }
    };
    let id = |r: &Reply| -> u64 {
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        r.json()["id"].as_u64().expect("id")
    };
    // A channel admin: its own channel, a sub-channel, an enterprise below; not channel B's.
    let own_channel = id(&create(&channel_a, TenantRef::Channel(a)).await);
    let sub_channel = id(&create(&channel_a, TenantRef::Channel(a1)).await);
    let below = id(&create(&channel_a, TenantRef::Enterprise(ea1)).await);
    create(&channel_a, TenantRef::Channel(b)).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    create(&channel_a, TenantRef::Enterprise(eb)).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    // An enterprise admin: its own enterprise only; no channel, not even its own.
    let own_enterprise = id(&create(&enterprise_a, TenantRef::Enterprise(ea)).await);
    create(&enterprise_a, TenantRef::Channel(a)).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    create(&enterprise_a, TenantRef::Enterprise(ea1)).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    // The platform: anything.
    let b_relay = id(&create(&platform, TenantRef::Channel(b)).await);

    assert_eq!(
        item_ids(&h.get("/api/v1/relays", &platform).await),
        [own_channel, sub_channel, below, own_enterprise, b_relay]
    );
    assert_eq!(item_ids(&h.get("/api/v1/relays", &channel_a).await), [own_channel, sub_channel, below, own_enterprise]);
    assert_eq!(item_ids(&h.get("/api/v1/relays", &enterprise_a).await), [own_enterprise]);
    // Out of scope reads and changes are 404, as if the grant did not exist.
    for (token, relay) in [(&channel_a, b_relay), (&enterprise_a, own_channel), (&enterprise_a, below)] {
        h.get(&format!("/api/v1/relays/{relay}"), token).await.assert_error(StatusCode::NOT_FOUND, "not_found");
        h.call(Method::POST, &format!("/api/v1/relays/{relay}/revoke"), Some(token), None)
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    assert!(h.store.entities.relay(RelayId(b_relay)).await.unwrap().expect("kept").revoked_at.is_none());
    // In scope: the enterprise admin revokes its own.
    let revoked =
        h.call(Method::POST, &format!("/api/v1/relays/{own_enterprise}/revoke"), Some(&enterprise_a), None).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text());
}
