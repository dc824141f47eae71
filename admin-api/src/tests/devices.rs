//! The device list (DEV-1): filters, sorts and cursors as query parameters, scoped to the
//! caller's tenants; the device detail (DEV-3) and its CPU/memory history.

use axum::http::{Method, StatusCode};
use fleetpulse_proto::domain::{CallStatus, DeviceKey, DeviceStatus, ResourceSample, SipLine, SipState};
use fleetpulse_proto::{ChannelId, DeviceId, EnterpriseId, Mac, UnixMillis};
use fleetpulse_store::{DeviceReport, DeviceSnapshotUpdate, EventBatch, NewAccount, NewDevice, ResourceEvent, Role};
use serde_json::json;

use super::*;
use crate::hash_password;

pub(super) struct Fleet {
    pub(super) h: Harness,
    pub(super) platform: String,
    pub(super) channel_admin: String,
    pub(super) enterprise_admin: String,
    pub(super) a1: ChannelId,
    pub(super) b: ChannelId,
    pub(super) ea: EnterpriseId,
    pub(super) ea1: EnterpriseId,
    pub(super) eb: EnterpriseId,
    /// Devices: EA: T54W online (report 3000), VP59 offline; EA1: UVC86 online (report 1000);
    /// EB: T54W online (report 2000).
    pub(super) devices: Vec<DeviceId>,
}

/// Creates an account of this role and tenant and logs it in: its bearer token.
pub(super) async fn token_of(
    h: &Harness,
    email: &str,
    role: Role,
    channel: Option<ChannelId>,
    enterprise: Option<EnterpriseId>,
) -> String {
    let new = NewAccount {
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

fn status(ip: &str, lines: &[SipState]) -> DeviceStatus {
    DeviceStatus {
        lines: lines
            .iter()
            .enumerate()
            .map(|(i, &state)| SipLine { line: i as u8 + 1, account: format!("20{i}"), state })
            .collect(),
        call_status: CallStatus::Idle,
        firmware: "2.0".into(),
        public_ip: Some(ip.parse().expect("ip")),
        private_ip: Some("10.0.0.1".parse().expect("ip")),
        uptime_s: 90,
        last_reboot: Some(UnixMillis(500)),
    }
}

pub(super) async fn fleet() -> Fleet {
    let h = harness();
    let platform = h.admin_token().await;
    let a = stored_channel(&h, "A", None).await;
    let a1 = stored_channel(&h, "A1", Some(a)).await;
    let b = stored_channel(&h, "B", None).await;
    let ea = stored_enterprise(&h, "EA", a).await;
    let ea1 = stored_enterprise(&h, "EA1", a1).await;
    let eb = stored_enterprise(&h, "EB", b).await;
    let s = &h.store.entities;
    let mut devices = Vec::new();
    for (i, (e, model)) in [(ea, "T54W"), (ea, "VP59"), (ea1, "UVC86"), (eb, "T54W")].into_iter().enumerate() {
        let new = NewDevice {
            enterprise_id: e,
            key: DeviceKey::Mac(Mac::parse(&format!("0015650000a{i}")).expect("mac")),
            serial: Some(format!("SN-{i}")),
            model: model.into(),
            firmware: "1.0".into(),
            at: UnixMillis(10 + i as i64),
        };
        devices.push(s.register_device(new).await.expect("device").device.id);
    }
    let report = |d: DeviceId, at, ip| DeviceSnapshotUpdate {
        device_id: d,
        online: Some(true),
        report: Some(DeviceReport {
            at: UnixMillis(at),
            status: status(ip, &[SipState::Registered, SipState::Unregistered]),
        }),
    };
    s.update_device_snapshots(vec![
        report(devices[0], 3_000, "203.0.113.1"),
        report(devices[2], 1_000, "198.51.100.3"),
        report(devices[3], 2_000, "203.0.113.4"),
    ])
    .await
    .expect("snapshots");
    let channel_admin = token_of(&h, "ca@example.com", Role::ChannelAdmin, Some(a), None).await;
    let enterprise_admin = token_of(&h, "ea@example.com", Role::EnterpriseAdmin, None, Some(ea)).await;
    Fleet { h, platform, channel_admin, enterprise_admin, a1, b, ea, ea1, eb, devices }
}

fn ids(reply: &Reply) -> Vec<u64> {
    item_ids(reply)
}

#[tokio::test]
async fn filters_sorts_and_cursors_are_query_parameters() {
    let f = fleet().await;
    let d: Vec<u64> = f.devices.iter().map(|d| d.0).collect();
    let get = |q: &str| {
        let uri = format!("/api/v1/devices{q}");
        let h = &f.h;
        let token = f.platform.clone();
        async move { h.get(&uri, &token).await }
    };
    assert_eq!(ids(&get("").await), d);
    assert_eq!(ids(&get("?online=true&model=T54W").await), [d[0], d[3]]);
    assert_eq!(ids(&get("?sort=last_report_at&order=desc").await), [d[0], d[3], d[2], d[1]]);
    assert_eq!(ids(&get("?device_type=usb").await), [d[2]]);
    assert_eq!(ids(&get("?sip_status=partial&public_ip=203.0.113.").await), [d[0], d[3]]);
    assert_eq!(ids(&get("?q=sn-1").await), [d[1]]);
    assert_eq!(ids(&get("?q=a2").await), [d[2]], "MAC substring");
    assert_eq!(ids(&get("?firmware=2.0&reported_from=1500&reported_to=2500").await), [d[3]]);
    assert_eq!(ids(&get(&format!("?enterprise_id={}&enterprise_id={}", f.ea1, f.eb)).await), [d[2], d[3]]);
    assert_eq!(ids(&get(&format!("?channel_id={}", f.a1)).await), [d[2]]);
    let first = get("?sort=model&limit=2").await.json();
    assert_eq!(first["total"], 4);
    let cursor = first["next_cursor"].as_str().expect("cursor").to_owned();
    assert_eq!(ids(&get(&format!("?sort=model&limit=2&cursor={cursor}")).await), [d[2], d[1]]);
    get(&format!("?sort=name&cursor={cursor}")).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    for bad in
        ["?sort=colour", "?order=sideways", "?online=maybe", "?limit=5000", "?nope=1", "?cursor=zz", "?model=a&model=b"]
    {
        get(bad).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
}

#[tokio::test]
async fn each_account_lists_the_devices_of_its_scope() {
    let f = fleet().await;
    let d: Vec<u64> = f.devices.iter().map(|d| d.0).collect();
    let h = &f.h;
    assert_eq!(ids(&h.get("/api/v1/devices", &f.channel_admin).await), [d[0], d[1], d[2]], "channel A's subtree");
    assert_eq!(ids(&h.get(&format!("/api/v1/devices?channel_id={}", f.a1), &f.channel_admin).await), [d[2]]);
    assert_eq!(ids(&h.get(&format!("/api/v1/devices?enterprise_id={}", f.ea1), &f.channel_admin).await), [d[2]]);
    let foreign = [
        format!("?enterprise_id={}", f.eb),
        format!("?channel_id={}", f.b),
        format!("?enterprise_id={}&enterprise_id={}", f.ea, f.eb),
    ];
    for q in &foreign {
        h.get(&format!("/api/v1/devices{q}"), &f.channel_admin).await.assert_error(StatusCode::NOT_FOUND, "not_found");
        h.get(&format!("/api/v1/devices{q}"), &f.enterprise_admin)
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    assert_eq!(ids(&h.get("/api/v1/devices", &f.enterprise_admin).await), [d[0], d[1]]);
    let online = h.get("/api/v1/devices?online=true", &f.enterprise_admin).await.json();
    assert_eq!(online["total"], 1);
}

#[tokio::test]
async fn the_detail_shows_the_status_model_and_the_resource_history() {
    let f = fleet().await;
    let d0 = f.devices[0];
    let detail = f.h.get(&format!("/api/v1/devices/{d0}"), &f.channel_admin).await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.text());
    let detail = detail.json();
    assert_eq!(detail["public_ip"], "203.0.113.1");
    assert_eq!(detail["firmware"], "2.0", "firmware follows the reports");
    let status = &detail["status"];
    assert_eq!(
        (&status["online"], &status["sip_status"], &status["call_status"]),
        (&json!(true), &json!("partial"), &json!("idle"))
    );
    assert_eq!(
        status["sip_registration"],
        json!([
            {"line": 1, "account": "200", "state": "registered"},
            {"line": 2, "account": "201", "state": "unregistered"}
        ])
    );
    assert_eq!(
        (&status["uptime_s"], &status["last_reboot"], &status["last_report_at"]),
        (&json!(90), &json!(500), &json!(3_000))
    );
    assert_eq!((&status["licence_status"], &status["last_provision"]), (&json!("unknown"), &Value::Null));

    let sample = |cpu| ResourceSample { cpu_centi_pct: cpu, mem_used_bytes: 10, mem_total_bytes: 20 };
    let resources = (1..=5u64)
        .map(|seq| ResourceEvent {
            device_id: d0,
            enterprise_id: f.ea,
            seq,
            at: UnixMillis(10_000 + seq as i64),
            sample: sample(seq as u16),
        })
        .collect();
    f.h.store
        .events
        .append(EventBatch { resources, delivery: vec![(d0, 5)], ..EventBatch::default() })
        .await
        .expect("append");
    let history =
        f.h.get(&format!("/api/v1/devices/{d0}/resources?from=10002&to=10005&limit=2"), &f.enterprise_admin).await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.text());
    assert_eq!(
        history.json(),
        json!({"items": [
            {"at": 10_004, "cpu_centi_pct": 4, "mem_used_bytes": 10, "mem_total_bytes": 20},
            {"at": 10_003, "cpu_centi_pct": 3, "mem_used_bytes": 10, "mem_total_bytes": 20}
        ]})
    );
    let recent = f.h.get(&format!("/api/v1/devices/{d0}/resources"), &f.platform).await.json();
    assert_eq!(recent["items"], json!([]), "the default window is the last 24 hours");
    for bad in ["from=5&to=5", "limit=0", "limit=1001", "from=x", "window=1"] {
        f.h.get(&format!("/api/v1/devices/{d0}/resources?{bad}"), &f.platform)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let foreign = f.devices[3];
    f.h.get(&format!("/api/v1/devices/{foreign}/resources"), &f.channel_admin)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    f.h.get("/api/v1/devices/999999/resources", &f.platform).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    let _ = f.ea1;
}

#[tokio::test]
async fn the_dashboard_counts_the_devices_of_the_scope() {
    let f = fleet().await;
    let dash = f.h.get("/api/v1/dashboard", &f.platform).await;
    assert_eq!(dash.status, StatusCode::OK, "{}", dash.text());
    let dash = dash.json();
    assert_eq!((&dash["total"], &dash["online"]), (&json!(4), &json!(3)));
    assert_eq!(
        dash["by_type"],
        json!([{"key": "phone", "total": 3, "online": 2}, {"key": "usb", "total": 1, "online": 1}])
    );
    assert_eq!(dash["by_model"][0], json!({"key": "T54W", "total": 2, "online": 2}));
    assert_eq!(dash["models_truncated"], false);
    let channel = f.h.get("/api/v1/dashboard", &f.channel_admin).await.json();
    assert_eq!((&channel["total"], &channel["online"]), (&json!(3), &json!(2)));
    let own = f.h.get("/api/v1/dashboard", &f.enterprise_admin).await.json();
    assert_eq!((&own["total"], &own["online"]), (&json!(2), &json!(1)));
    let one = f.h.get(&format!("/api/v1/dashboard?enterprise_id={}", f.ea1), &f.channel_admin).await.json();
    assert_eq!(one["total"], 1);
    f.h.get(&format!("/api/v1/dashboard?enterprise_id={}", f.eb), &f.channel_admin)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    for bad in ["?limit=3", "?sort=model", "?cursor=x", "?colour=red"] {
        f.h.get(&format!("/api/v1/dashboard{bad}"), &f.platform)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
}

#[tokio::test]
async fn labels_and_columns_belong_to_the_account() {
    let f = fleet().await;
    let h = &f.h;
    let post =
        async |token: &str, body: Value| h.call(Method::POST, "/api/v1/device-labels", Some(token), Some(body)).await;
    let saved =
        post(&f.channel_admin, json!({"name": "Online phones", "filter": "online=true&device_type=phone"})).await;
    assert_eq!(saved.status, StatusCode::CREATED, "{}", saved.text());
    let label = saved.json();
    assert_eq!((&label["name"], &label["filter"]), (&json!("Online phones"), &json!("online=true&device_type=phone")));
    post(&f.channel_admin, json!({"name": "Online phones", "filter": ""}))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    for bad in [
        json!({"name": "x", "filter": "sort=colour"}),
        json!({"name": "x", "filter": "limit=5"}),
        json!({"name": "", "filter": ""}),
        json!({"name": "x"}),
        json!({"name": "x", "filter": "", "extra": 1}),
    ] {
        post(&f.channel_admin, bad).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let foreign = json!({"name": "x", "filter": format!("enterprise_id={}", f.eb)});
    post(&f.channel_admin, foreign).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    let mine = h.get("/api/v1/device-labels", &f.channel_admin).await.json();
    assert_eq!(mine["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(h.get("/api/v1/device-labels", &f.enterprise_admin).await.json()["items"], json!([]));
    let uri = format!("/api/v1/device-labels/{}", label["id"]);
    h.call(Method::DELETE, &uri, Some(&f.enterprise_admin), None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(h.call(Method::DELETE, &uri, Some(&f.channel_admin), None).await.status, StatusCode::NO_CONTENT);
    h.call(Method::DELETE, &uri, Some(&f.channel_admin), None).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    for i in 0..50 {
        let reply = post(&f.platform, json!({"name": format!("l{i}"), "filter": "online=false"})).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    }
    post(&f.platform, json!({"name": "l50", "filter": ""}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");

    let columns = h.get("/api/v1/account/device-columns", &f.enterprise_admin).await.json();
    assert_eq!(
        columns["columns"].as_array().map(Vec::len),
        Some(crate::routes::device_labels::DEVICE_COLUMNS.len()),
        "every column until chosen"
    );
    let put = async |token: &str, body: Value| {
        h.call(Method::PUT, "/api/v1/account/device-columns", Some(token), Some(body)).await
    };
    let chosen = put(&f.enterprise_admin, json!({"columns": ["mac", "online", "last_report_at"]})).await;
    assert_eq!(chosen.status, StatusCode::OK, "{}", chosen.text());
    let read = h.get("/api/v1/account/device-columns", &f.enterprise_admin).await.json();
    assert_eq!(read, json!({"columns": ["mac", "online", "last_report_at"]}));
    assert_eq!(
        h.get("/api/v1/account/device-columns", &f.channel_admin).await.json()["columns"].as_array().map(Vec::len),
        Some(crate::routes::device_labels::DEVICE_COLUMNS.len())
    );
    for bad in
        [json!({"columns": ["mac", "colour"]}), json!({"columns": []}), json!({"columns": ["mac", "mac"]}), json!({})]
    {
        put(&f.enterprise_admin, bad).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
}
