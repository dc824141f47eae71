//! Orders and statements (ORD-1, ORD-2) through the router: selling down the channel tree,
//! effective dates at local midnight in the enterprise's zone, refusals of past dates and
//! overflowing numbers, cancellation only before the start, order emails in the outbox, the
//! operation log, searches, statement totals and the CSV exports.

use axum::http::{Method, StatusCode};
use fleetpulse_proto::{ChannelId, EnterpriseId, UnixMillis};
use fleetpulse_store::{EnterpriseProfile, NewAccount, NewChannel, NewEnterprise, Role};
use serde_json::{Value, json};

use super::*;
use crate::hash_password;

/// 23:30 UTC on 10 March 2026: already 11 March in Tokyo.
const NOW: &str = "2026-03-10T23:30:00Z";

fn ms(rfc3339: &str) -> i64 {
    rfc3339.parse::<jiff::Timestamp>().expect("instant").as_millisecond()
}

async fn channel(h: &Harness, name: &str, parent: Option<ChannelId>) -> ChannelId {
    let new = NewChannel {
        name: name.into(),
        parent_id: parent,
        allow_sub_channels: true,
        device_management: true,
        rps: false,
        contact: String::new(),
        email: format!("sales@{}.test", name.to_lowercase()),
        phone: String::new(),
        country: String::new(),
    };
    h.store.entities.create_channel(new, UnixMillis(1)).await.expect("channel").id
}

async fn enterprise(h: &Harness, name: &str, channel: ChannelId, zone: &str) -> EnterpriseId {
    let profile = EnterpriseProfile {
        master_admin_email: format!("boss@{}.test", name.to_lowercase()),
        time_zone: zone.into(),
        ..EnterpriseProfile::default()
    };
    let new =
        NewEnterprise { name: name.into(), credential: format!("cred-{name}"), channel_id: Some(channel), profile };
    h.store.entities.create_enterprise(new).await.expect("enterprise").id
}

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
    h.login(email, "tenant-password").await.json()["token"].as_str().expect("token").to_owned()
}

fn order(e: EnterpriseId, devices: u32, date: &str) -> Value {
    json!({"enterprise_id": e, "package": "Standard", "max_devices": devices, "duration_months": 12,
           "effective_date": date, "amount": 12_000})
}

struct World {
    h: Harness,
    platform: String,
    a_admin: String,
    ea_admin: String,
    a: ChannelId,
    ea: EnterpriseId,
    ea1: EnterpriseId,
    eb: EnterpriseId,
}

async fn world() -> World {
    let h = harness();
    h.clock.set(UnixMillis(ms(NOW)));
    let platform = h.admin_token().await;
    let a = channel(&h, "A", None).await;
    let a1 = channel(&h, "A1", Some(a)).await;
    let b = channel(&h, "B", None).await;
    let ea = enterprise(&h, "EA", a, "Asia/Tokyo").await;
    let ea1 = enterprise(&h, "EA1", a1, "America/New_York").await;
    let eb = enterprise(&h, "EB", b, "").await;
    let a_admin = login_as(&h, "a@example.com", Role::ChannelAdmin, Some(a), None).await;
    let ea_admin = login_as(&h, "ea@example.com", Role::EnterpriseAdmin, None, Some(ea)).await;
    World { h, platform, a_admin, ea_admin, a, ea, ea1, eb }
}

impl World {
    async fn place(&self, token: &str, body: Value) -> Reply {
        self.h.call(Method::POST, "/api/v1/orders", Some(token), Some(body)).await
    }
}

#[tokio::test]
async fn channels_sell_down_their_tree_from_local_midnight() {
    let w = world().await;
    // Today in Tokyo is 11 March: the order is active at once, from 15:00 UTC on 10 March.
    let placed = w.place(&w.a_admin, order(w.ea, 10, "2026-03-11")).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.text());
    let o = placed.json();
    assert_eq!(o["status"], "active");
    assert_eq!(o["starts_at"], ms("2026-03-10T15:00:00Z"));
    assert_eq!(o["ends_at"], ms("2027-03-10T15:00:00Z"));
    assert_eq!((o["seller_channel_id"].as_u64(), o["enterprise_name"].as_str()), (Some(w.a.0), Some("EA")));
    // Yesterday in Tokyo is refused; New York's today (10 March) is accepted for EA1, a
    // sub-channel's enterprise.
    let past = w.place(&w.a_admin, order(w.ea, 10, "2026-03-10")).await;
    past.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(past.text().contains("in the past"), "{}", past.text());
    let sub = w.place(&w.a_admin, order(w.ea1, 5, "2026-03-10")).await;
    assert_eq!(sub.status, StatusCode::CREATED, "{}", sub.text());
    assert_eq!(sub.json()["starts_at"], ms("2026-03-10T04:00:00Z"));
    // Another channel's enterprise is not found; an enterprise admin buys nothing itself.
    w.place(&w.a_admin, order(w.eb, 1, "2026-03-20")).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    w.place(&w.ea_admin, order(w.ea, 1, "2026-03-20")).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    // Overlapping orders add up while both are active.
    let second = w.place(&w.platform, order(w.ea, 7, "2026-04-01")).await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.text());
    assert_eq!(second.json()["seller_channel_id"], Value::Null, "sold by the platform");
    let allowance = |t: &str| w.h.store.entities.allowance(w.ea, UnixMillis(ms(t)));
    assert_eq!(allowance("2026-03-20T00:00:00Z").await.unwrap(), 10);
    assert_eq!(allowance("2026-04-02T00:00:00Z").await.unwrap(), 17);
    assert_eq!(allowance("2027-03-20T00:00:00Z").await.unwrap(), 7);

    // Order emails: the enterprise's master admin and the managing channel, once each.
    let due = w.h.store.entities.due_outbox(UnixMillis(ms("2030-01-01T00:00:00Z")), 100).await.unwrap();
    let mut receivers: Vec<&str> = due.iter().map(|m| m.receiver.as_str()).collect();
    receivers.sort_unstable();
    assert_eq!(
        receivers,
        ["boss@ea.test", "boss@ea.test", "boss@ea1.test", "sales@a.test", "sales@a.test", "sales@a1.test"]
    );
    assert!(due.iter().all(|m| m.payload.contains("\"type\":\"order\"")), "{:?}", due[0].payload);

    // The operation log has the sale.
    let log = w.h.get("/api/v1/operation-logs", &w.platform).await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.text());
    let rows = log.json()["items"].as_array().expect("items").clone();
    assert!(
        rows.iter().any(|r| r["path"] == "/api/v1/orders" && r["method"] == "POST" && r["status"] == 201),
        "{rows:?}"
    );
}

#[tokio::test]
async fn orders_are_cancelled_only_before_they_take_effect() {
    let w = world().await;
    let active = w.place(&w.a_admin, order(w.ea, 10, "2026-03-11")).await.json();
    let pending = w.place(&w.a_admin, order(w.ea, 10, "2026-03-12")).await.json();
    let uri = |o: &Value| format!("/api/v1/orders/{}/cancel", o["id"]);
    let refused = w.h.call(Method::POST, &uri(&active), Some(&w.a_admin), None).await;
    refused.assert_error(StatusCode::CONFLICT, "conflict");
    assert!(refused.text().contains("took effect"), "{}", refused.text());
    w.h.call(Method::POST, &uri(&pending), Some(&w.ea_admin), None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let cancelled = w.h.call(Method::POST, &uri(&pending), Some(&w.a_admin), None).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text());
    assert_eq!(cancelled.json()["status"], "cancelled");
    w.h.call(Method::POST, &uri(&pending), Some(&w.a_admin), None).await.assert_error(StatusCode::CONFLICT, "conflict");
    let due = w.h.store.entities.due_outbox(UnixMillis(i64::MAX), 100).await.unwrap();
    assert_eq!(due.iter().filter(|m| m.payload.contains("\"event\":\"cancelled\"")).count(), 2, "admin and channel");
    // At local midnight of 12 March in Tokyo a pending order has taken effect: no cancelling.
    let late = w.place(&w.a_admin, order(w.ea, 3, "2026-03-13")).await.json();
    w.h.clock.set(UnixMillis(ms("2026-03-12T15:00:00Z")));
    let again = w.h.login("a@example.com", "tenant-password").await.json()["token"].as_str().expect("token").to_owned();
    w.h.call(Method::POST, &uri(&late), Some(&again), None).await.assert_error(StatusCode::CONFLICT, "conflict");
    assert_eq!(w.h.store.entities.allowance(w.ea, w.h.clock.now()).await.unwrap(), 13);
}

#[tokio::test]
async fn bad_and_overflowing_orders_are_refused_whole() {
    let w = world().await;
    let mut bodies = Vec::new();
    for (field, value) in [
        ("max_devices", json!(0)),
        ("max_devices", json!(1_000_001)),
        ("max_devices", json!(4_294_967_296u64)),
        ("max_devices", json!(-1)),
        ("duration_months", json!(0)),
        ("duration_months", json!(121)),
        ("duration_months", json!(4_294_967_295u64)),
        ("amount", json!(1_000_000_000_001u64)),
        ("amount", json!(18_446_744_073_709_551_615u64)),
        ("amount", json!(1e30)),
        ("package", json!("")),
        ("package", json!("x".repeat(65))),
        ("package", json!("a\u{7}b")),
        ("effective_date", json!("2026-02-30")),
        ("effective_date", json!("2027-03-13")),
        ("effective_date", json!("11.03.2026")),
    ] {
        let mut body = order(w.ea, 1, "2026-03-20");
        body[field] = value;
        bodies.push(body);
    }
    let mut unknown = order(w.ea, 1, "2026-03-20");
    unknown["price"] = json!(1);
    bodies.push(unknown);
    for body in bodies {
        let reply = w.place(&w.platform, body.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}: {}", reply.text());
    }
    let listed = w.h.get("/api/v1/orders", &w.platform).await;
    assert!(item_ids(&listed).is_empty(), "nothing was placed");
}

#[tokio::test]
async fn searches_statements_and_exports_stay_in_scope() {
    let w = world().await;
    let ea = w.place(&w.a_admin, order(w.ea, 10, "2026-03-11")).await.json();
    let ea_pending = w.place(&w.a_admin, order(w.ea, 4, "2026-05-01")).await.json();
    w.h.clock.advance(std::time::Duration::from_secs(60));
    let ea1 = w.place(&w.a_admin, order(w.ea1, 5, "2026-03-10")).await.json();
    let eb = w.place(&w.platform, order(w.eb, 1, "2026-03-11")).await.json();
    let id = |o: &Value| o["id"].as_u64().expect("id");

    let ids = |uri: String, token: String| {
        let h = &w.h;
        async move { item_ids(&h.get(&uri, &token).await) }
    };
    let a = w.a_admin.clone();
    assert_eq!(ids("/api/v1/orders".into(), a.clone()).await, [id(&ea1), id(&ea_pending), id(&ea)]);
    assert_eq!(ids("/api/v1/orders".into(), w.ea_admin.clone()).await, [id(&ea_pending), id(&ea)]);
    assert_eq!(ids("/api/v1/orders".into(), w.platform.clone()).await.len(), 4);
    assert_eq!(ids("/api/v1/orders?status=pending".into(), a.clone()).await, [id(&ea_pending)]);
    assert_eq!(ids("/api/v1/orders?q=ea1".into(), a.clone()).await, [id(&ea1)]);
    assert_eq!(ids(format!("/api/v1/orders?order_id={}", id(&ea)), a.clone()).await, [id(&ea)]);
    assert!(ids(format!("/api/v1/orders?order_id={}", id(&eb)), a.clone()).await.is_empty());
    assert_eq!(ids(format!("/api/v1/orders?enterprise_id={}&limit=1", w.ea), a.clone()).await, [id(&ea_pending)]);
    let until = ms("2027-03-10T16:00:00Z");
    assert_eq!(ids(format!("/api/v1/orders?expires_to={until}"), a.clone()).await, [id(&ea1), id(&ea)]);
    w.h.get(&format!("/api/v1/orders?enterprise_id={}", w.eb), &a)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    w.h.get(&format!("/api/v1/orders/{}", id(&eb)), &a).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    w.h.get("/api/v1/orders?created_from=5&created_to=5", &a)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");

    // A statement of the first minute: EA's two orders, with totals of every match.
    let (from, to) = (ms(NOW), ms(NOW) + 60_000);
    let statement = w.h.get(&format!("/api/v1/statements?from={from}&to={to}&limit=1"), &a).await;
    assert_eq!(statement.status, StatusCode::OK, "{}", statement.text());
    let s = statement.json();
    assert_eq!(s["items"].as_array().expect("items").len(), 1, "one page");
    assert_eq!(s["totals"], json!({"orders": 2, "devices": 14, "device_months": 168, "amount": 24_000}));
    let all = w.h.get("/api/v1/statements", &w.platform).await.json();
    assert_eq!(all["totals"]["orders"], 4);

    // The exports: a header, one record per order, and the statement's totals line.
    let csv = w.h.get("/api/v1/orders/export?status=active", &a).await;
    assert_eq!(csv.status, StatusCode::OK, "{}", csv.text());
    let text = csv.text();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("order_id,order_time,enterprise_id,enterprise,"), "{text}");
    assert_eq!(lines.len(), 3, "EA's and EA1's active orders: {text}");
    assert!(lines[1].starts_with(&format!("{},", id(&ea1))) && lines[1].ends_with(",active,"), "{text}");
    let csv = w.h.get(&format!("/api/v1/statements/export?from={from}&to={to}"), &a).await.text();
    assert_eq!(csv.lines().last(), Some("totals,2 orders,,,,,14,168 device-months,,,,24000,,"), "{csv}");
}

#[tokio::test]
async fn licences_follow_the_allowance_and_unlicensed_devices_get_no_commands() {
    use fleetpulse_proto::Mac;
    use fleetpulse_proto::domain::DeviceKey;
    let w = world().await;
    let mut devices = Vec::new();
    for n in 0..3u32 {
        let new = fleetpulse_store::NewDevice {
            enterprise_id: w.ea,
            key: DeviceKey::Mac(Mac::parse(&format!("0015650a{n:04x}")).expect("mac")),
            serial: None,
            model: "T54W".into(),
            firmware: "1.0".into(),
            at: UnixMillis(ms(NOW)),
        };
        devices.push(w.h.store.entities.register_device(new).await.expect("device").device.id.0);
    }
    let licence = |id: u64, token: String| {
        let h = &w.h;
        async move {
            let r = h.get(&format!("/api/v1/devices/{id}"), &token).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            r.json()["status"]["licence_status"].as_str().expect("status").to_owned()
        }
    };
    assert_eq!(licence(devices[0], w.ea_admin.clone()).await, "unknown", "no order yet");
    // Two devices allowed from today in Tokyo: the two oldest are licensed.
    let placed = w.place(&w.a_admin, order(w.ea, 2, "2026-03-11")).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.text());
    assert_eq!(licence(devices[0], w.ea_admin.clone()).await, "licensed");
    assert_eq!(licence(devices[2], w.ea_admin.clone()).await, "unlicensed");
    let dashboard = w.h.get(&format!("/api/v1/dashboard?enterprise_id={}", w.ea), &w.a_admin).await;
    assert_eq!(dashboard.status, StatusCode::OK, "{}", dashboard.text());
    assert_eq!(dashboard.json()["licences"], json!({"metered": true, "allowance": 2, "licensed": 2, "unlicensed": 1}));
    let unlicensed = w.h.get("/api/v1/devices?licence=unlicensed", &w.ea_admin).await;
    assert_eq!(unlicensed.json()["total"], 1, "{}", unlicensed.text());
    assert_eq!(unlicensed.json()["items"][0]["id"], devices[2]);
    w.h.get("/api/v1/devices?licence=maybe", &w.ea_admin)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    // An unlicensed device keeps its place in the portal but gets no command; bulk commands
    // refuse it alone.
    let reboot = |id: u64| format!("/api/v1/devices/{id}/commands");
    let refused = w.h.call(Method::POST, &reboot(devices[2]), Some(&w.ea_admin), Some(json!({"kind": "reboot"}))).await;
    refused.assert_error(StatusCode::CONFLICT, "conflict");
    assert!(refused.text().contains("unlicensed"), "{}", refused.text());
    let queued = w.h.call(Method::POST, &reboot(devices[0]), Some(&w.ea_admin), Some(json!({"kind": "reboot"}))).await;
    assert_eq!(queued.status, StatusCode::CREATED, "{}", queued.text());
    let bulk = json!({"kind": "reboot", "device_ids": devices});
    let bulk = w.h.call(Method::POST, "/api/v1/commands", Some(&w.ea_admin), Some(bulk)).await;
    assert_eq!((bulk.status, &bulk.json()["queued"]), (StatusCode::OK, &json!(2)), "{}", bulk.text());
    assert_eq!(bulk.json()["results"][2]["error"]["code"], "conflict", "{}", bulk.text());
    // The order expires at local midnight a year on: nothing is licensed then, without anyone
    // touching the order.
    w.h.clock.set(UnixMillis(ms("2027-03-10T15:00:00Z")));
    let token = w.h.login("ea@example.com", "tenant-password").await.json()["token"].as_str().expect("t").to_owned();
    assert_eq!(licence(devices[0], token.clone()).await, "unlicensed");
    let all = w.h.get("/api/v1/devices?licence=unlicensed", &token).await;
    assert_eq!(all.json()["total"], 3, "{}", all.text());
}
