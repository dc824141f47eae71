//! Profiles meet sites and groups (PRV-1..3): a profile deployed to a site (or a parent site)
//! or a group reaches the devices placed there, nearer sites and higher groups first; a
//! deployment cannot name another enterprise's site or group (404); a site or group with
//! profiles deployed to it is not deleted (409).

use axum::http::{Method, StatusCode};
use fleetpulse_proto::EnterpriseId;
use serde_json::{Value, json};

use super::sites::reporting_device;
use super::*;

/// The device's effective configuration as `key=value <- profile container` lines.
async fn effective(h: &Harness, token: &str, device: u64) -> Vec<String> {
    let config = h.get(&format!("/api/v1/devices/{device}/configuration"), token).await;
    assert_eq!(config.status, StatusCode::OK, "{}", config.text());
    super::profiles::effective_lines(&config.json())
}

async fn created(h: &Harness, token: &str, path: &str, body: Value) -> u64 {
    let reply = h.call(Method::POST, path, Some(token), Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{path}: {}", reply.text());
    reply.json()["id"].as_u64().expect("id")
}

async fn deploy(h: &Harness, token: &str, e: EnterpriseId, target: Value, profiles: &[u64]) -> Reply {
    let body = json!({"enterprise_id": e, "target": target, "profiles": profiles});
    h.call(Method::PUT, "/api/v1/profile-deployments", Some(token), Some(body)).await
}

#[tokio::test]
async fn profiles_deployed_to_sites_reach_the_devices_in_them() {
    let h = harness();
    let token = h.admin_token().await;
    let channel = stored_channel(&h, "C", None).await;
    let e = stored_enterprise(&h, "E", channel).await;
    let other = stored_enterprise(&h, "O", channel).await;
    let phone = reporting_device(&h, e, "001565000b01", "20.1.9.9", "10.33.24.7").await;

    let hq = json!({"enterprise_id": e, "name": "HQ",
                    "subnets": [{"public": "20.1.0.0/16", "private": ["10.0.0.0/8"]}]});
    let hq = created(&h, &token, "/api/v1/sites", hq).await;
    let floor = json!({"enterprise_id": e, "name": "Floor 2", "parent_id": hq,
                       "subnets": [{"public": "20.1.0.0/16", "private": ["10.33.24.0/24"]}]});
    let floor = created(&h, &token, "/api/v1/sites", floor).await;
    let foreign_site = created(&h, &token, "/api/v1/sites", json!({"enterprise_id": other, "name": "X"})).await;

    let profile = |name: &str, auto: &str| json!({"enterprise_id": e, "name": name, "parameters": {"call.autoAnswer.SIP": auto, "site.name": name}});
    let global = created(&h, &token, "/api/v1/profiles", profile("Global", "0")).await;
    let building = created(&h, &token, "/api/v1/profiles", profile("Building", "1")).await;
    let upstairs = created(
        &h,
        &token,
        "/api/v1/profiles",
        json!({"enterprise_id": e, "name": "Upstairs",
        "parameters": {"site.name": "Upstairs"}}),
    )
    .await;

    // The guide's example: a profile on the site beats the global one.
    assert_eq!(deploy(&h, &token, e, json!({"container": "global"}), &[global]).await.status, StatusCode::OK);
    assert_eq!(
        effective(&h, &token, phone).await,
        ["call.autoAnswer.SIP=0 <- Global global", "site.name=Global <- Global global"]
    );
    let on_hq = deploy(&h, &token, e, json!({"container": "site", "site_id": hq}), &[building]).await;
    assert_eq!(on_hq.status, StatusCode::OK, "{}", on_hq.text());
    // The device is in Floor 2, a child of HQ: the parent's profile reaches it...
    assert_eq!(
        effective(&h, &token, phone).await,
        ["call.autoAnswer.SIP=1 <- Building site", "site.name=Building <- Building site"]
    );
    // ...and the nearer site's wins where both set a key.
    assert_eq!(
        deploy(&h, &token, e, json!({"container": "site", "site_id": floor}), &[upstairs]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        effective(&h, &token, phone).await,
        ["call.autoAnswer.SIP=1 <- Building site", "site.name=Upstairs <- Upstairs site"]
    );

    // Another enterprise's site, or none at all: 404, and nothing deployed.
    deploy(&h, &token, e, json!({"container": "site", "site_id": foreign_site}), &[global])
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    deploy(&h, &token, e, json!({"container": "site", "site_id": 999_999}), &[global])
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");

    // A site with profiles deployed to it stays until its deployment is emptied.
    let refused = h.call(Method::DELETE, &format!("/api/v1/sites/{floor}"), Some(&token), None).await;
    refused.assert_error(StatusCode::CONFLICT, "conflict");
    assert!(refused.text().contains("Floor 2"), "{}", refused.text());
    assert_eq!(deploy(&h, &token, e, json!({"container": "site", "site_id": floor}), &[]).await.status, StatusCode::OK);
    let deleted = h.call(Method::DELETE, &format!("/api/v1/sites/{floor}"), Some(&token), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text());
    assert_eq!(
        effective(&h, &token, phone).await,
        ["call.autoAnswer.SIP=1 <- Building site", "site.name=Building <- Building site"],
        "the device is back in HQ"
    );
}

#[tokio::test]
async fn profiles_deployed_to_groups_follow_the_device_group_priority() {
    let h = harness();
    let token = h.admin_token().await;
    let channel = stored_channel(&h, "C", None).await;
    let e = stored_enterprise(&h, "E", channel).await;
    let other = stored_enterprise(&h, "O", channel).await;
    let phone = reporting_device(&h, e, "001565000c01", "20.1.9.9", "10.33.24.7").await;

    let desks = created(&h, &token, "/api/v1/groups", json!({"enterprise_id": e, "name": "Desks"})).await;
    let lobby = created(&h, &token, "/api/v1/groups", json!({"enterprise_id": e, "name": "Lobby"})).await;
    let foreign_group = created(&h, &token, "/api/v1/groups", json!({"enterprise_id": other, "name": "X"})).await;
    for group in [desks, lobby] {
        let added = h
            .call(
                Method::POST,
                &format!("/api/v1/groups/{group}/members"),
                Some(&token),
                Some(json!({"device_ids": [phone]})),
            )
            .await;
        assert_eq!(added.status, StatusCode::OK, "{}", added.text());
    }
    let profile = |name: &str| json!({"enterprise_id": e, "name": name, "parameters": {"ring.tone": name}});
    let quiet = created(&h, &token, "/api/v1/profiles", profile("Quiet")).await;
    let loud = created(&h, &token, "/api/v1/profiles", profile("Loud")).await;
    assert_eq!(
        deploy(&h, &token, e, json!({"container": "group", "group_id": desks}), &[quiet]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        deploy(&h, &token, e, json!({"container": "group", "group_id": lobby}), &[loud]).await.status,
        StatusCode::OK
    );

    // Desks came first, so it is the device's top group.
    assert_eq!(effective(&h, &token, phone).await, ["ring.tone=Quiet <- Quiet group"]);
    // "Set to top priority" on Lobby: its profile wins now.
    let top = h.call(Method::POST, &format!("/api/v1/groups/{lobby}/top-priority"), Some(&token), None).await;
    assert_eq!(top.status, StatusCode::OK, "{}", top.text());
    assert_eq!(effective(&h, &token, phone).await, ["ring.tone=Loud <- Loud group"]);

    // Another enterprise's group: 404.
    deploy(&h, &token, e, json!({"container": "group", "group_id": foreign_group}), &[quiet])
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    // A group with profiles deployed to it stays until its deployment is emptied.
    let refused = h.call(Method::DELETE, &format!("/api/v1/groups/{lobby}"), Some(&token), None).await;
    refused.assert_error(StatusCode::CONFLICT, "conflict");
    assert!(refused.text().contains("Lobby"), "{}", refused.text());
    assert_eq!(
        deploy(&h, &token, e, json!({"container": "group", "group_id": lobby}), &[]).await.status,
        StatusCode::OK
    );
    let deleted = h.call(Method::DELETE, &format!("/api/v1/groups/{lobby}"), Some(&token), None).await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.text());
    assert_eq!(effective(&h, &token, phone).await, ["ring.tone=Quiet <- Quiet group"]);
}
