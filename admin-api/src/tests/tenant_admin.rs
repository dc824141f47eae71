//! Tenancy through the router (TEN-1, TEN-5, DEV-1, issue 17): an enterprise created with a
//! master administrator gets its admin account and the email; the device-management and RPS
//! permissions gate what the enterprise can do; sub-accounts edited and deleted; whole tenants
//! frozen and unfrozen exactly; the RPS list and its redirect lookup; an enterprise moved between
//! channels with live orders.

use axum::http::{Method, StatusCode};
use fleetpulse_mailer::AccountEmail;
use fleetpulse_proto::domain::DeviceKey;
use fleetpulse_proto::{AccountId, ChannelId, EnterpriseId, Mac, UnixMillis};
use fleetpulse_store::{NewAccount, NewDevice, Role};
use serde_json::{Value, json};

use super::*;
use crate::hash_password;

async fn login_as(h: &Harness, email: &str, role: Role, channel: Option<ChannelId>, e: Option<EnterpriseId>) -> String {
    let new = NewAccount {
        parent_id: None,
        permissions: None,
        email: email.into(),
        password_hash: hash_password("tenant-password").expect("hash"),
        role,
        channel_id: channel,
        enterprise_id: e,
        must_change_password: false,
    };
    h.store.entities.create_account(new).await.expect("account");
    token_of(&h.login(email, "tenant-password").await)
}

fn token_of(reply: &Reply) -> String {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()["token"].as_str().expect("token").to_owned()
}

async fn device(h: &Harness, e: EnterpriseId, n: u32) -> u64 {
    let new = NewDevice {
        enterprise_id: e,
        key: DeviceKey::Mac(Mac::parse(&format!("0015650{n:05x}")).expect("mac")),
        serial: None,
        model: "T54W".into(),
        firmware: "1.0".into(),
        at: UnixMillis(1),
    };
    h.store.entities.register_device(new).await.expect("device").device.id.0
}

async fn account_id(h: &Harness, email: &str) -> Option<AccountId> {
    h.store.entities.account_by_email(email).await.expect("read").map(|a| a.id)
}

#[tokio::test]
async fn an_enterprise_with_a_master_administrator_gets_its_admin_account_and_the_email() {
    let h = harness();
    let platform = h.admin_token().await;
    let a = stored_channel(&h, "A", None).await;
    let body = json!({"name": "Zeta", "channel_id": a, "master_admin_email": "boss@zeta.example",
                      "register_email": "office@zeta.example"});
    let created = h.call(Method::POST, "/api/v1/enterprises", Some(&platform), Some(body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let e = created.json();
    let admin = &e["admin_account"];
    assert_eq!(
        (admin["email"].as_str(), admin["role"].as_str()),
        (Some("boss@zeta.example"), Some("enterprise_admin"))
    );
    assert_eq!(admin["enterprise_id"], e["id"]);
    assert_eq!(e["device_management"], true, "on unless the channel says otherwise");
    let emails = super::account::account_emails(&h, "boss@zeta.example").await;
    let password = match emails.as_slice() {
        [AccountEmail::AccountCreated { login_email, role, temporary_password: Some(pw) }] => {
            assert_eq!((login_email.as_str(), role.as_str()), ("boss@zeta.example", "enterprise_admin"));
            pw.clone()
        }
        other => panic!("one account email, got {other:?}"),
    };
    assert!(super::account::account_emails(&h, "office@zeta.example").await.is_empty(), "the master admin's only");
    // The emailed password logs in, and must be changed first.
    let token = token_of(&h.login("boss@zeta.example", &password).await);
    h.get("/api/v1/devices", &token).await.assert_error(StatusCode::FORBIDDEN, "password_change_required");

    // The same email again: 409, and no enterprise is stored.
    let again = json!({"name": "Zeta 2", "channel_id": a, "master_admin_email": "boss@zeta.example"});
    h.call(Method::POST, "/api/v1/enterprises", Some(&platform), Some(again))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    let listed = h.get("/api/v1/enterprises?q=Zeta%202", &platform).await;
    assert!(item_ids(&listed).is_empty(), "{}", listed.text());
    // Only a register email: the account logs in with it. Neither: no account.
    let register = json!({"name": "Eta", "channel_id": a, "register_email": "eta@eta.example"});
    let created = h.call(Method::POST, "/api/v1/enterprises", Some(&platform), Some(register)).await;
    assert_eq!(created.json()["admin_account"]["email"], "eta@eta.example", "{}", created.text());
    let bare = h.call(Method::POST, "/api/v1/enterprises", Some(&platform), Some(json!({"name": "Theta"}))).await;
    assert_eq!(bare.status, StatusCode::CREATED, "{}", bare.text());
    assert_eq!(bare.json()["admin_account"], Value::Null);
}

#[tokio::test]
async fn device_management_off_refuses_device_actions_and_keeps_the_lists() {
    let h = harness();
    let platform = h.admin_token().await;
    let a = stored_channel(&h, "A", None).await;
    let e = stored_enterprise(&h, "E", a).await;
    let admin = login_as(&h, "e@example.com", Role::EnterpriseAdmin, None, Some(e)).await;
    let d = device(&h, e, 1).await;
    let off = h
        .call(
            Method::PUT,
            &format!("/api/v1/enterprises/{e}"),
            Some(&platform),
            Some(json!({"device_management": false})),
        )
        .await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.text());
    // The enterprise cannot turn it back on itself.
    let on = json!({"device_management": true});
    h.call(Method::PUT, &format!("/api/v1/enterprises/{e}"), Some(&admin), Some(on.clone()))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");

    let command = h
        .call(Method::POST, &format!("/api/v1/devices/{d}/commands"), Some(&admin), Some(json!({"kind": "reboot"})))
        .await;
    command.assert_error(StatusCode::FORBIDDEN, "permission_disabled");
    assert!(command.text().contains("device management"), "{}", command.text());
    let bulk = h
        .call(Method::POST, "/api/v1/commands", Some(&admin), Some(json!({"kind": "reboot", "device_ids": [d]})))
        .await;
    assert_eq!(bulk.status, StatusCode::OK, "{}", bulk.text());
    assert_eq!(bulk.json()["queued"], 0);
    assert_eq!(bulk.json()["results"][0]["error"]["code"], "permission_disabled", "{}", bulk.text());
    let task =
        json!({"kind": "reboot", "targets": {"device_ids": [d]}, "schedule": {"kind": "daily", "time": "03:00"}});
    h.call(Method::POST, "/api/v1/tasks", Some(&admin), Some(task.clone()))
        .await
        .assert_error(StatusCode::FORBIDDEN, "permission_disabled");
    h.call(Method::POST, &format!("/api/v1/devices/{d}/provision"), Some(&admin), None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "permission_disabled");
    // Its devices are still listed and shown.
    assert_eq!(item_ids(&h.get("/api/v1/devices", &admin).await), [d]);
    assert_eq!(h.get(&format!("/api/v1/devices/{d}"), &admin).await.status, StatusCode::OK);
    let device = fleetpulse_proto::DeviceId(d);
    assert!(h.store.entities.list_device_commands(device, fleetpulse_store::Page::first(10)).await.unwrap().is_empty());

    // On again (by the platform): the same requests go through.
    assert_eq!(
        h.call(Method::PUT, &format!("/api/v1/enterprises/{e}"), Some(&platform), Some(on)).await.status,
        StatusCode::OK
    );
    let command = h
        .call(Method::POST, &format!("/api/v1/devices/{d}/commands"), Some(&admin), Some(json!({"kind": "reboot"})))
        .await;
    assert_eq!(command.status, StatusCode::CREATED, "{}", command.text());
    assert_eq!(h.call(Method::POST, "/api/v1/tasks", Some(&admin), Some(task)).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn sub_accounts_are_edited_and_deleted_and_their_sessions_end() {
    let h = harness();
    let _platform = h.admin_token().await;
    let a = stored_channel(&h, "A", None).await;
    let ea = stored_enterprise(&h, "EA", a).await;
    let eb = stored_enterprise(&h, "EB", stored_channel(&h, "B", None).await).await;
    let admin = login_as(&h, "a@example.com", Role::ChannelAdmin, Some(a), None).await;
    let other = login_as(&h, "a2@example.com", Role::ChannelAdmin, Some(a), None).await;
    let body =
        json!({"email": "helper@example.com", "password": "helper-password", "features": ["devices"], "data": "all"});
    let sub = h.call(Method::POST, "/api/v1/sub-accounts", Some(&admin), Some(body)).await;
    assert_eq!(sub.status, StatusCode::CREATED, "{}", sub.text());
    let id = sub.json()["id"].as_u64().expect("id");
    h.store.entities.set_password(AccountId(id), hash_password("helper-password").expect("hash"), false).await.unwrap();
    let helper = token_of(&h.login("helper@example.com", "helper-password").await);
    let uri = format!("/api/v1/sub-accounts/{id}");

    // Edit: name, features, data scope; the given fields only.
    let edit = json!({"contact_name": "Hal Helper", "features": ["devices", "alarms"], "data": {"only": {"enterprises": [ea]}}});
    let edited = h.call(Method::PUT, &uri, Some(&admin), Some(edit)).await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.text());
    let v = edited.json();
    assert_eq!(v["contact_name"], "Hal Helper");
    assert_eq!(
        v["permissions"],
        json!({"features": ["devices", "alarms"], "data": {"only": {"channels": [], "enterprises": [ea]}}})
    );
    let name_only = h.call(Method::PUT, &uri, Some(&admin), Some(json!({"contact_name": "Hal"}))).await;
    assert_eq!(name_only.json()["permissions"]["features"], json!(["devices", "alarms"]), "{}", name_only.text());
    assert_eq!(item_ids(&h.get("/api/v1/enterprises", &helper).await), [ea.0], "the new scope applies at once");
    // Data permissions beyond the caller's scope, another account's sub-account, a bad name.
    let foreign = json!({"data": {"only": {"enterprises": [eb]}}});
    h.call(Method::PUT, &uri, Some(&admin), Some(foreign)).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    h.call(Method::PUT, &uri, Some(&other), Some(json!({"contact_name": "x"})))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    h.call(Method::DELETE, &uri, Some(&other), None).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    h.call(Method::PUT, &uri, Some(&admin), Some(json!({"contact_name": "a\u{7}"})))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    h.call(Method::DELETE, &uri, Some(&helper), None).await.assert_error(StatusCode::FORBIDDEN, "forbidden");

    // Delete: its session ends at once, it cannot log in, its email is free again.
    let deleted = h.call(Method::DELETE, &uri, Some(&admin), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text());
    h.get("/api/v1/enterprises", &helper).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(h.login("helper@example.com", "helper-password").await.status, StatusCode::UNAUTHORIZED);
    h.get(&uri, &admin).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    h.call(Method::DELETE, &uri, Some(&admin), None).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    assert!(item_ids(&h.get("/api/v1/sub-accounts", &admin).await).is_empty());
    let reuse = json!({"email": "helper@example.com", "features": [], "data": "all"});
    assert_eq!(
        h.call(Method::POST, "/api/v1/sub-accounts", Some(&admin), Some(reuse)).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_frozen_tenant_unfreezes_exactly_what_its_freeze_froze() {
    let h = harness();
    let platform = h.admin_token().await;
    let a = stored_channel(&h, "A", None).await;
    let a1 = stored_channel(&h, "A1", Some(a)).await;
    let ea1 = stored_enterprise(&h, "EA1", a1).await;
    let a_admin = login_as(&h, "a@example.com", Role::ChannelAdmin, Some(a), None).await;
    let a1_admin = login_as(&h, "a1@example.com", Role::ChannelAdmin, Some(a1), None).await;
    let ea1_admin = login_as(&h, "ea1@example.com", Role::EnterpriseAdmin, None, Some(ea1)).await;
    login_as(&h, "ea1-frozen@example.com", Role::EnterpriseAdmin, None, Some(ea1)).await;
    let by_hand = account_id(&h, "ea1-frozen@example.com").await.expect("account");
    let frozen = h.call(Method::POST, &format!("/api/v1/accounts/{by_hand}/freeze"), Some(&a_admin), None).await;
    assert_eq!(frozen.status, StatusCode::OK, "{}", frozen.text());

    // A channel cannot freeze its own channel; it freezes the one below it.
    h.call(Method::POST, &format!("/api/v1/channels/{a}/freeze"), Some(&a_admin), None)
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    h.call(Method::POST, &format!("/api/v1/channels/{a1}/freeze"), Some(&ea1_admin), None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let freeze = h.call(Method::POST, &format!("/api/v1/channels/{a1}/freeze"), Some(&a_admin), None).await;
    assert_eq!(freeze.status, StatusCode::OK, "{}", freeze.text());
    assert_eq!(freeze.json()["accounts"], 2, "A1's admin and EA1's, not the one frozen by hand");
    assert_eq!(freeze.json()["tenant"], json!({"channel": a1.0}));
    for token in [&a1_admin, &ea1_admin] {
        h.get("/api/v1/enterprises", token).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(h.login("ea1@example.com", "tenant-password").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.get("/api/v1/enterprises", &a_admin).await.status, StatusCode::OK, "the parent is not frozen");
    let state = h.get(&format!("/api/v1/channels/{a1}/freeze"), &a_admin).await;
    assert_eq!(state.status, StatusCode::OK, "{}", state.text());
    h.call(Method::POST, &format!("/api/v1/channels/{a1}/freeze"), Some(&a_admin), None)
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");

    // Unfrozen: those two log in again; the one frozen by hand stays frozen.
    let unfrozen = h.call(Method::POST, &format!("/api/v1/channels/{a1}/unfreeze"), Some(&a_admin), None).await;
    assert_eq!(unfrozen.status, StatusCode::OK, "{}", unfrozen.text());
    assert_eq!(unfrozen.json()["accounts"], 2);
    assert_eq!(h.login("ea1@example.com", "tenant-password").await.status, StatusCode::OK);
    assert_eq!(h.login("a1@example.com", "tenant-password").await.status, StatusCode::OK);
    assert_eq!(h.login("ea1-frozen@example.com", "tenant-password").await.status, StatusCode::UNAUTHORIZED);
    h.get(&format!("/api/v1/channels/{a1}/freeze"), &a_admin).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    h.call(Method::POST, &format!("/api/v1/channels/{a1}/unfreeze"), Some(&a_admin), None)
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");

    // An enterprise freeze: only its accounts.
    let freeze = h.call(Method::POST, &format!("/api/v1/enterprises/{ea1}/freeze"), Some(&platform), None).await;
    assert_eq!(freeze.json()["accounts"], 1, "{}", freeze.text());
    assert_eq!(h.login("ea1@example.com", "tenant-password").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.login("a1@example.com", "tenant-password").await.status, StatusCode::OK);
    let unfrozen = h.call(Method::POST, &format!("/api/v1/enterprises/{ea1}/unfreeze"), Some(&platform), None).await;
    assert_eq!(unfrozen.json()["accounts"], 1, "{}", unfrozen.text());
}

#[tokio::test]
async fn the_rps_list_serves_the_redirect_while_the_permission_is_on() {
    let h = harness();
    let platform = h.admin_token().await;
    let a = stored_channel(&h, "A", None).await;
    let e = stored_enterprise(&h, "E", a).await;
    let other = stored_enterprise(&h, "Other", a).await;
    let admin = login_as(&h, "e@example.com", Role::EnterpriseAdmin, None, Some(e)).await;
    let channel = login_as(&h, "a@example.com", Role::ChannelAdmin, Some(a), None).await;
    let entry = json!({"mac": "00:15:65:AA:00:01", "server_url": "https://dm.e.example/cfg"});
    // RPS is off by default: no list.
    h.call(Method::POST, "/api/v1/rps-devices", Some(&admin), Some(entry.clone()))
        .await
        .assert_error(StatusCode::FORBIDDEN, "permission_disabled");
    h.get(&format!("/api/v1/rps-devices?enterprise_id={e}"), &admin)
        .await
        .assert_error(StatusCode::FORBIDDEN, "permission_disabled");
    for id in [e, other] {
        let on = h
            .call(Method::PUT, &format!("/api/v1/enterprises/{id}"), Some(&platform), Some(json!({"rps": true})))
            .await;
        assert_eq!(on.status, StatusCode::OK, "{}", on.text());
    }
    let added = h.call(Method::POST, "/api/v1/rps-devices", Some(&admin), Some(entry.clone())).await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.text());
    let id = added.json()["id"].as_u64().expect("id");
    assert_eq!(
        (added.json()["mac"].as_str(), added.json()["enterprise_id"].as_u64()),
        (Some("001565aa0001"), Some(e.0))
    );
    // The device is in one list only: again, or in another enterprise's, is 409.
    h.call(Method::POST, "/api/v1/rps-devices", Some(&admin), Some(entry))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    let elsewhere = json!({"enterprise_id": other, "mac": "001565aa0001", "server_url": "https://other.example"});
    h.call(Method::POST, "/api/v1/rps-devices", Some(&channel), Some(elsewhere))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    let bad = json!({"serial": "SN 1", "server_url": "ftp://x"});
    h.call(Method::POST, "/api/v1/rps-devices", Some(&admin), Some(bad))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");

    // The device asks without logging in: only the URL; an unknown device is 404.
    let ask = |q: &str| {
        let uri = format!("/api/v1/rps/redirect?{q}");
        let h = &h;
        async move { h.call(Method::GET, &uri, None, None).await }
    };
    let answer = ask("mac=001565AA0001").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json(), json!({"server_url": "https://dm.e.example/cfg"}));
    ask("mac=001565aa0999").await.assert_error(StatusCode::NOT_FOUND, "not_found");
    ask("mac=nonsense").await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    // Edited by the channel (no acting needed), then the lookup follows.
    let edit = json!({"server_url": "https://dm2.e.example"});
    let edited = h.call(Method::PUT, &format!("/api/v1/rps-devices/{id}"), Some(&channel), Some(edit)).await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.text());
    assert_eq!(ask("mac=00-15-65-aa-00-01").await.json()["server_url"], "https://dm2.e.example");

    // CSV import with the device import's columns: added, updated, refused rows reported.
    let csv = "mac_address;server_url;endpoint_name\n001565aa0002;https://a.example;desk\n\
               001565aa0001;https://dm3.e.example;\nzz;https://b.example;\n001565aa0003;gopher://x;\n";
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/rps-devices/import?enterprise_id={e}"))
        .header(header::AUTHORIZATION, format!("Bearer {channel}"))
        .header(header::CONTENT_TYPE, "text/csv")
        .body(Body::from(csv))
        .expect("request");
    let report = h.send(req).await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.text());
    let r = report.json();
    assert_eq!(
        (r["rows"].as_u64(), r["added"].as_u64(), r["updated"].as_u64(), r["failed"].as_u64()),
        (Some(4), Some(1), Some(1), Some(2)),
        "{r}"
    );
    assert_eq!(r["errors"][0]["line"], 4);
    assert_eq!((r["errors"][1]["line"].as_u64(), r["errors"][1]["column"].as_str()), (Some(5), Some("server_url")));
    assert_eq!(ask("mac=001565aa0001").await.json()["server_url"], "https://dm3.e.example");
    let listed = h.get(&format!("/api/v1/rps-devices?enterprise_id={e}&q=A.EXAMPLE"), &admin).await;
    assert_eq!(listed.json()["items"].as_array().map(Vec::len), Some(1), "{}", listed.text());

    // Another channel sees none of it; RPS off: no list, and the lookup is 404.
    let b = stored_channel(&h, "B", None).await;
    let stranger = login_as(&h, "b@example.com", Role::ChannelAdmin, Some(b), None).await;
    h.get(&format!("/api/v1/rps-devices/{id}"), &stranger).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    assert!(item_ids(&h.get("/api/v1/rps-devices", &stranger).await).is_empty());
    let off =
        h.call(Method::PUT, &format!("/api/v1/enterprises/{e}"), Some(&platform), Some(json!({"rps": false}))).await;
    assert_eq!(off.status, StatusCode::OK);
    ask("mac=001565aa0002").await.assert_error(StatusCode::NOT_FOUND, "not_found");
    h.get(&format!("/api/v1/rps-devices/{id}"), &admin)
        .await
        .assert_error(StatusCode::FORBIDDEN, "permission_disabled");

    // Lookups are rate-limited per device (10 a minute).
    let on =
        h.call(Method::PUT, &format!("/api/v1/enterprises/{e}"), Some(&platform), Some(json!({"rps": true}))).await;
    assert_eq!(on.status, StatusCode::OK);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(ask("serial=NEVER-SEEN").await.status);
    }
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    let limited = ask("serial=NEVER-SEEN").await;
    limited.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(limited.headers.contains_key(header::RETRY_AFTER));
    let deleted = h.call(Method::DELETE, &format!("/api/v1/rps-devices/{id}"), Some(&admin), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text());
}

#[tokio::test]
async fn an_enterprise_moved_between_channels_takes_its_live_orders_and_licences_along() {
    let h = harness();
    let platform = h.admin_token().await;
    let top = stored_channel(&h, "Top", None).await;
    let x = stored_channel(&h, "X", Some(top)).await;
    let y = stored_channel(&h, "Y", Some(top)).await;
    let e = stored_enterprise(&h, "Moving", x).await;
    let top_admin = login_as(&h, "top@example.com", Role::ChannelAdmin, Some(top), None).await;
    let x_admin = login_as(&h, "x@example.com", Role::ChannelAdmin, Some(x), None).await;
    let y_admin = login_as(&h, "y@example.com", Role::ChannelAdmin, Some(y), None).await;
    let devices = [device(&h, e, 1).await, device(&h, e, 2).await, device(&h, e, 3).await];
    let now = jiff::Timestamp::from_millisecond(h.clock.now().0).expect("now").to_string();
    let today: jiff::civil::Date = now[..10].parse().expect("today (UTC)");
    let order = |devices: u32, date: jiff::civil::Date| {
        json!({"enterprise_id": e, "package": "Standard", "max_devices": devices, "duration_months": 12,
               "effective_date": date.to_string(), "amount": 1000})
    };
    let active = h.call(Method::POST, "/api/v1/orders", Some(&x_admin), Some(order(2, today))).await;
    assert_eq!(active.status, StatusCode::CREATED, "{}", active.text());
    let later = today.checked_add(jiff::Span::new().days(30)).expect("date");
    let pending = h.call(Method::POST, "/api/v1/orders", Some(&x_admin), Some(order(5, later))).await;
    assert_eq!(pending.status, StatusCode::CREATED, "{}", pending.text());
    let (active, pending) = (active.json()["id"].as_u64().expect("id"), pending.json()["id"].as_u64().expect("id"));
    let licences = |token: String| {
        let h = &h;
        async move {
            let d = h.get(&format!("/api/v1/dashboard?enterprise_id={e}"), &token).await;
            assert_eq!(d.status, StatusCode::OK, "{}", d.text());
            d.json()["licences"].clone()
        }
    };
    let before = licences(platform.clone()).await;
    assert_eq!(before, json!({"metered": true, "allowance": 2, "licensed": 2, "unlicensed": 1}));
    let status_of = |id: u64| {
        let h = &h;
        let platform = platform.clone();
        async move { h.get(&format!("/api/v1/devices/{id}"), &platform).await.json()["status"]["licence_status"].clone() }
    };
    let statuses_before = [status_of(devices[0]).await, status_of(devices[1]).await, status_of(devices[2]).await];

    // X may not move it out of its subtree (Y is its sibling); the parent channel may.
    let to_y = json!({"channel_id": y});
    h.call(Method::POST, &format!("/api/v1/enterprises/{e}/move"), Some(&x_admin), Some(to_y.clone()))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    h.call(Method::POST, &format!("/api/v1/enterprises/{e}/move"), Some(&y_admin), Some(to_y.clone()))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    let moved = h.call(Method::POST, &format!("/api/v1/enterprises/{e}/move"), Some(&top_admin), Some(to_y)).await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.text());
    assert_eq!(
        (moved.json()["channel_id"].as_u64(), moved.json()["channel_authorization"].as_str()),
        (Some(y.0), Some("none"))
    );

    // The orders went along: Y sees them (seller still X), X no longer does.
    let seen = h.get(&format!("/api/v1/orders/{active}"), &y_admin).await;
    assert_eq!(seen.status, StatusCode::OK, "{}", seen.text());
    assert_eq!(
        (seen.json()["status"].as_str(), seen.json()["seller_channel_id"].as_u64()),
        (Some("active"), Some(x.0))
    );
    h.get(&format!("/api/v1/orders/{active}"), &x_admin).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    h.get(&format!("/api/v1/enterprises/{e}"), &x_admin).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    h.call(Method::POST, &format!("/api/v1/orders/{pending}/cancel"), Some(&x_admin), None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    // The allowance and every licence are as before.
    assert_eq!(licences(y_admin.clone()).await, before);
    let statuses_after = [status_of(devices[0]).await, status_of(devices[1]).await, status_of(devices[2]).await];
    assert_eq!(statuses_after, statuses_before);
    // The new channel manages the pending order: it may cancel it (the active one stays).
    let cancelled = h.call(Method::POST, &format!("/api/v1/orders/{pending}/cancel"), Some(&y_admin), None).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text());
    h.call(Method::POST, &format!("/api/v1/orders/{active}/cancel"), Some(&y_admin), None)
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    // Under the platform directly: the platform only.
    let up = json!({"channel_id": null});
    h.call(Method::POST, &format!("/api/v1/enterprises/{e}/move"), Some(&top_admin), Some(up.clone()))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let up = h.call(Method::POST, &format!("/api/v1/enterprises/{e}/move"), Some(&platform), Some(up)).await;
    assert_eq!(up.json()["channel_id"], Value::Null, "{}", up.text());
}
