//! Device groups through the API (PRV-2): create, edit, members by ids and by filter, another
//! enterprise's devices refused, top priority and reordering seen on the device detail, the
//! device list's group filter, default groups on auto-add, delete with what it removed, the
//! members' keyset pages, and every change in the operation log.

use axum::http::{Method, StatusCode};
use fleetpulse_proto::domain::DeviceKey;
use fleetpulse_proto::{DeviceId, EnterpriseId, Mac, UnixMillis};
use fleetpulse_store::NewDevice;
use serde_json::{Value, json};

use super::*;

async fn device(h: &Harness, e: EnterpriseId, n: u32) -> u64 {
    let new = NewDevice {
        enterprise_id: e,
        key: DeviceKey::Mac(Mac::parse(&format!("0015650c{n:04x}")).expect("mac")),
        serial: None,
        model: "T54W".into(),
        firmware: "1.0".into(),
        at: UnixMillis(1),
    };
    h.store.entities.register_device(new).await.expect("device").device.id.0
}

async fn send(h: &Harness, method: Method, uri: &str, token: &str, body: Option<Value>) -> Reply {
    h.call(method, uri, Some(token), body).await
}

async fn send_to(h: &Harness, method: Method, uri: String, token: &str, body: Value) -> Reply {
    h.call(method, &uri, Some(token), Some(body)).await
}

fn names(groups: &Value) -> Vec<String> {
    groups.as_array().expect("groups").iter().map(|g| g["name"].as_str().expect("name").to_owned()).collect()
}

#[tokio::test]
async fn groups_are_managed_and_devices_keep_an_ordered_list() {
    let h = harness();
    let admin = h.admin_token().await;
    let channel = stored_channel(&h, "C", None).await;
    let e = stored_enterprise(&h, "E", channel).await;
    let other = stored_enterprise(&h, "O", channel).await;
    let d: Vec<u64> = [device(&h, e, 1).await, device(&h, e, 2).await, device(&h, e, 3).await].into();
    let foreign = device(&h, other, 9).await;

    let create = |name: &str| json!({"enterprise_id": e, "name": name, "description": "for tests"});
    let desks = send(&h, Method::POST, "/api/v1/groups", &admin, Some(create("Desks"))).await;
    assert_eq!(desks.status, StatusCode::CREATED, "{}", desks.text());
    let desks = desks.json()["id"].as_u64().expect("id");
    send(&h, Method::POST, "/api/v1/groups", &admin, Some(create("desks")))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    send(&h, Method::POST, "/api/v1/groups", &admin, Some(create("a|b")))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let lab =
        send(&h, Method::POST, "/api/v1/groups", &admin, Some(create("Lab"))).await.json()["id"].as_u64().expect("id");
    let renamed =
        send(&h, Method::PATCH, &format!("/api/v1/groups/{lab}"), &admin, Some(json!({"name": "Lab (east)"}))).await;
    assert_eq!(renamed.json()["name"], "Lab (east)", "{}", renamed.text());

    // Members by ids (another enterprise's device refused, nothing changed) and by filter.
    let add = |g: u64, body: Value| send_to(&h, Method::POST, format!("/api/v1/groups/{g}/members"), &admin, body);
    let refused = add(desks, json!({"device_ids": [d[0], foreign]})).await;
    refused.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(refused.text().contains(&format!("device {foreign}")), "{}", refused.text());
    let added = add(desks, json!({"device_ids": [d[0], d[1]]})).await;
    assert_eq!(added.json(), json!({"matched": 2, "changed": 2, "unchanged": 0, "at_limit": 0}));
    let by_filter = add(lab, json!({"filter": {"enterprise_id": e}})).await;
    assert_eq!(by_filter.json()["changed"], 3, "{}", by_filter.text());
    add(lab, json!({"device_ids": [d[0]], "filter": {}}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let listed = h.get(&format!("/api/v1/groups?enterprise_id={}", e.0), &admin).await;
    let counts: Vec<(u64, u64)> = listed.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|g| (g["id"].as_u64().expect("id"), g["members"].as_u64().expect("members")))
        .collect();
    assert_eq!(counts, [(desks, 2), (lab, 3)]);

    // The device detail and list rows show the groups in priority order.
    let groups_of = |id: u64| {
        let h = &h;
        let admin = &admin;
        async move { names(&h.get(&format!("/api/v1/devices/{id}"), admin).await.json()["groups"]) }
    };
    assert_eq!(groups_of(d[0]).await, ["Desks", "Lab (east)"]);
    let top = send(&h, Method::POST, &format!("/api/v1/groups/{lab}/top-priority"), &admin, None).await;
    assert_eq!(top.status, StatusCode::OK, "{}", top.text());
    assert_eq!(groups_of(d[0]).await, ["Lab (east)", "Desks"]);
    let put = |id: u64, body: Value| send_to(&h, Method::PUT, format!("/api/v1/devices/{id}/groups"), &admin, body);
    let reordered = put(d[0], json!({"group_ids": [desks, lab]})).await;
    assert_eq!(names(&reordered.json()["groups"]), ["Desks", "Lab (east)"], "{}", reordered.text());
    put(foreign, json!({"group_ids": [desks]})).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let listed = h.get(&format!("/api/v1/devices?group={lab}&sort=mac"), &admin).await.json();
    assert_eq!(listed["total"], 3);
    assert_eq!(names(&listed["items"][0]["groups"]), ["Desks", "Lab (east)"]);
    assert_eq!(h.get(&format!("/api/v1/devices?group={desks}"), &admin).await.json()["total"], 2);
    let dash = h.get(&format!("/api/v1/dashboard?enterprise_id={}", e.0), &admin).await.json();
    let by_group: Vec<(String, u64)> = dash["by_group"]
        .as_array()
        .expect("by_group")
        .iter()
        .map(|c| (c["key"]["name"].as_str().expect("name").to_owned(), c["total"].as_u64().expect("total")))
        .collect();
    assert_eq!(by_group, [("Lab (east)".to_owned(), 3), ("Desks".to_owned(), 2)], "{dash}");

    // Members along the keyset cursor.
    let first = h.get(&format!("/api/v1/groups/{lab}/members?limit=2"), &admin).await.json();
    let cursor = first["next_cursor"].as_str().expect("a next page").to_owned();
    let second = h.get(&format!("/api/v1/groups/{lab}/members?limit=2&cursor={cursor}"), &admin).await.json();
    assert_eq!((first["items"].as_array().map(Vec::len), second["items"].as_array().map(Vec::len)), (Some(2), Some(1)));

    // Default groups: a device that adds itself joins them; a foreign group is refused.
    let defaults = format!("/api/v1/default-groups?enterprise_id={}", e.0);
    let set = send(&h, Method::PUT, &defaults, &admin, Some(json!({"group_ids": [lab, desks]}))).await;
    assert_eq!(names(&set.json()["groups"]), ["Lab (east)", "Desks"], "{}", set.text());
    let o_group = send(&h, Method::POST, "/api/v1/groups", &admin, Some(json!({"enterprise_id": other, "name": "O"})))
        .await
        .json()["id"]
        .as_u64()
        .expect("id");
    send(&h, Method::PUT, &defaults, &admin, Some(json!({"group_ids": [o_group]})))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let auto = device(&h, e, 4).await;
    assert_eq!(groups_of(auto).await, ["Lab (east)", "Desks"]);
    let ids = h.store.entities.device_groups(DeviceId(auto)).await.expect("groups");
    assert_eq!(ids.iter().map(|g| g.0).collect::<Vec<_>>(), [lab, desks], "the profiles' contract");

    // Remove members; delete says what it removed.
    let removed = send(
        &h,
        Method::POST,
        &format!("/api/v1/groups/{desks}/members/remove"),
        &admin,
        Some(json!({"device_ids": [d[1]]})),
    )
    .await;
    assert_eq!(removed.json()["changed"], 1, "{}", removed.text());
    let gone = send(&h, Method::DELETE, &format!("/api/v1/groups/{lab}"), &admin, None).await.json();
    assert_eq!((gone["memberships_removed"].clone(), gone["was_default"].clone()), (json!(4), json!(true)), "{gone}");
    h.get(&format!("/api/v1/groups/{lab}"), &admin).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(names(&h.get(&defaults, &admin).await.json()["groups"]), ["Desks"]);
    assert_eq!(groups_of(d[0]).await, ["Desks"]);

    // Every change is in the operation log.
    let ops = h.get("/api/v1/operation-logs?limit=100", &admin).await.json();
    let paths: Vec<&str> = ops["items"].as_array().expect("items").iter().filter_map(|r| r["path"].as_str()).collect();
    for want in [
        "/api/v1/groups".to_owned(),
        format!("/api/v1/groups/{lab}"),
        format!("/api/v1/groups/{desks}/members"),
        format!("/api/v1/groups/{desks}/members/remove"),
        format!("/api/v1/groups/{lab}/top-priority"),
        format!("/api/v1/devices/{}/groups", d[0]),
        "/api/v1/default-groups".to_owned(),
    ] {
        assert!(paths.contains(&want.as_str()), "{want} in the operation log: {paths:?}");
    }
}

#[tokio::test]
async fn a_tenant_lists_only_its_own_groups() {
    let h = harness();
    let admin = h.admin_token().await;
    let a = stored_channel(&h, "A", None).await;
    let b = stored_channel(&h, "B", None).await;
    let ea = stored_enterprise(&h, "EA", a).await;
    let eb = stored_enterprise(&h, "EB", b).await;
    for (e, name) in [(ea, "mine"), (eb, "theirs")] {
        let reply =
            send(&h, Method::POST, "/api/v1/groups", &admin, Some(json!({"enterprise_id": e, "name": name}))).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    }
    let new = fleetpulse_store::NewAccount {
        parent_id: None,
        permissions: None,
        email: "ea@example.com".into(),
        password_hash: crate::hash_password("tenant-password").expect("hash"),
        role: fleetpulse_store::Role::EnterpriseAdmin,
        channel_id: None,
        enterprise_id: Some(ea),
        must_change_password: false,
    };
    h.store.entities.create_account(new).await.expect("account");
    let token = h.login("ea@example.com", "tenant-password").await.json()["token"].as_str().expect("token").to_owned();
    let listed = h.get("/api/v1/groups", &token).await.json();
    assert_eq!(names(&listed["items"]), ["mine"], "{listed}");
    // Its own enterprise is implied when creating and for the default groups.
    let made = send(&h, Method::POST, "/api/v1/groups", &token, Some(json!({"name": "second"}))).await;
    assert_eq!(made.json()["enterprise_id"], ea.0, "{}", made.text());
    assert_eq!(h.get("/api/v1/default-groups", &token).await.json()["enterprise_id"], ea.0);
}
