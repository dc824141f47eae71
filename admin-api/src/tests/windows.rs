//! Maintenance windows through the API: the lifecycle, validation against the enterprise's own
//! sites, groups, devices and tasks, 404s, and the window mark on an alarm's notifications.

use axum::http::{Method, StatusCode};
use fleetpulse_proto::{AlarmTypeCode, UnixMillis, WindowId};
use fleetpulse_store::{AlarmAuditEntry, AuditEvent, MessageAuditEntry, WindowMark, WindowMarkState};
use serde_json::json;

use super::*;

async fn enterprise(h: &Harness, token: &str, name: &str) -> u64 {
    let reply = h.call(Method::POST, "/api/v1/enterprises", Some(token), Some(json!({ "name": name }))).await;
    reply.json()["id"].as_u64().expect("id")
}

fn nightly() -> Value {
    json!({
        "name": " Nightly ",
        "alarm_types": [202, 109, 202],
        "timing": { "kind": "recurring", "weekdays": [3, 1, 3], "hour": 22, "minute": 30, "duration_minutes": 240 }
    })
}

#[tokio::test]
async fn windows_are_created_listed_replaced_and_deleted() {
    let h = harness();
    let token = h.admin_token().await;
    let e = enterprise(&h, &token, "Acme").await;
    let uri = format!("/api/v1/enterprises/{e}/maintenance-windows");
    let reply = h.call(Method::POST, &uri, Some(&token), Some(nightly())).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let created = reply.json();
    let id = created["id"].as_u64().expect("id");
    assert_eq!(
        created["settings"],
        json!({
            "name": "Nightly",
            "enabled": true,
            "scope": { "kind": "enterprise" },
            "alarm_types": [202, 109],
            "timing": { "kind": "recurring", "weekdays": [1, 3], "hour": 22, "minute": 30, "duration_minutes": 240 }
        })
    );
    let list = h.get(&uri, &token).await.json();
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));

    let once = json!({
        "name": "Move", "enabled": false, "scope": { "kind": "enterprise" },
        "timing": { "kind": "once", "start": 1_000, "end": 2_000 }
    });
    let replaced = h.call(Method::PUT, &format!("/api/v1/maintenance-windows/{id}"), Some(&token), Some(once)).await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text());
    let shown = h.get(&format!("/api/v1/maintenance-windows/{id}"), &token).await.json();
    assert_eq!(shown["settings"]["timing"], json!({ "kind": "once", "start": 1_000, "end": 2_000 }));
    assert_eq!(shown["settings"]["enabled"], false);

    let deleted = h.call(Method::DELETE, &format!("/api/v1/maintenance-windows/{id}"), Some(&token), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let uri = format!("/api/v1/maintenance-windows/{id}");
    h.get(&uri, &token).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    h.call(Method::DELETE, &uri, Some(&token), None).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    h.get("/api/v1/enterprises/999/maintenance-windows", &token).await.assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn invalid_windows_and_other_enterprises_objects_are_refused() {
    let h = harness();
    let token = h.admin_token().await;
    let e = enterprise(&h, &token, "Acme").await;
    let other = enterprise(&h, &token, "Other").await;
    let site =
        h.call(Method::POST, "/api/v1/sites", Some(&token), Some(json!({"enterprise_id": other, "name": "B"}))).await;
    let foreign_site = site.json()["id"].as_u64().expect("site");
    let group =
        h.call(Method::POST, "/api/v1/groups", Some(&token), Some(json!({"enterprise_id": other, "name": "G"}))).await;
    let foreign_group = group.json()["id"].as_u64().expect("group");
    let uri = format!("/api/v1/enterprises/{e}/maintenance-windows");
    let cases: Vec<(&str, Value)> = vec![
        ("name", json!("")),
        ("alarm_types", json!([999])),
        ("scope", json!({ "kind": "sites", "ids": [foreign_site] })),
        ("scope", json!({ "kind": "groups", "ids": [foreign_group] })),
        ("scope", json!({ "kind": "devices", "ids": [424242] })),
        ("scope", json!({ "kind": "devices", "ids": [] })),
        ("scope", json!({ "kind": "planet" })),
        ("timing", json!({ "kind": "once", "start": 5, "end": 5 })),
        ("timing", json!({ "kind": "once", "start": 0, "end": 32 * 86_400_000_i64 })),
        ("timing", json!({ "kind": "recurring", "weekdays": [0], "hour": 1, "minute": 0, "duration_minutes": 5 })),
        ("timing", json!({ "kind": "recurring", "weekdays": [], "hour": 24, "minute": 0, "duration_minutes": 5 })),
        ("timing", json!({ "kind": "recurring", "weekdays": [], "hour": 1, "minute": 0, "duration_minutes": 0 })),
        ("timing", json!({ "kind": "recurring", "weekdays": [], "hour": 1, "minute": 0, "duration_minutes": 10_081 })),
        ("timing", json!({ "kind": "while_task", "task_id": 77 })),
        ("unknown_field", json!(1)),
    ];
    for (field, value) in cases {
        let mut req = nightly();
        req[field] = value.clone();
        let reply = h.call(Method::POST, &uri, Some(&token), Some(req)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{field} = {value}: {}", reply.text());
        assert_eq!(reply.json()["error"]["code"], "invalid_request");
    }
    assert_eq!(h.get(&uri, &token).await.json()["items"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn an_alarms_notifications_show_the_window_that_held_it_back() {
    let h = harness();
    let token = h.admin_token().await;
    let e = fleetpulse_proto::EnterpriseId(enterprise(&h, &token, "Acme").await);
    let device = h.phone(e, "001565000001", "T54W").await;
    let alarm = h.raise(e, device, 202, "reboot").await;
    let uri = format!("/api/v1/alarms/{alarm}/notifications");
    let reply = h.get(&uri, &token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["window"], Value::Null);
    let mark = WindowMark {
        enterprise_id: e,
        device_id: device,
        code: AlarmTypeCode(202),
        first_at: UnixMillis(10),
        window_id: WindowId(4),
        window_name: "Rollout".into(),
        state: WindowMarkState::Suppressed,
        at: UnixMillis(10),
        until: None,
    };
    h.store.entities.record_window_mark(mark).await.expect("mark");
    let shown = h.get(&uri, &token).await.json();
    assert_eq!(shown["alarm"]["id"], alarm);
    assert_eq!(
        shown["window"],
        json!({
            "enterprise_id": e.0, "device_id": device.0, "code": 202, "first_at": 10, "window_id": 4,
            "window_name": "Rollout", "state": "suppressed", "at": 10, "until": null
        })
    );
    // The notification audit: the activation's entries and those of the message carrying it.
    assert_eq!(shown["entries"], json!([]));
    let planned = AlarmAuditEntry {
        enterprise_id: e,
        device_id: device,
        code: AlarmTypeCode(202),
        first_at: UnixMillis(10),
        at: UnixMillis(20),
        event: AuditEvent::Planned,
        receiver: Some("ops@example.com".into()),
        message_key: Some("k1".into()),
        detail: "firing notification by strategy 1, alone".into(),
    };
    h.store.entities.record_alarm_audit(vec![planned]).await.expect("audit");
    let sent = MessageAuditEntry {
        message_key: "k1".into(),
        receiver: "ops@example.com".into(),
        at: UnixMillis(30),
        event: AuditEvent::Sent,
        detail: "accepted: 250 OK; Message-ID <k1@fleetpulse>".into(),
    };
    h.store.entities.record_message_audit(vec![sent]).await.expect("audit");
    let shown = h.get(&uri, &token).await.json();
    let events: Vec<&str> =
        shown["entries"].as_array().expect("entries").iter().map(|e| e["event"].as_str().unwrap_or("")).collect();
    assert_eq!(events, ["planned", "sent"], "{shown}");
    assert_eq!(shown["entries"][1]["detail"], "accepted: 250 OK; Message-ID <k1@fleetpulse>");
    h.get("/api/v1/alarms/999999/notifications", &token).await.assert_error(StatusCode::NOT_FOUND, "not_found");
}
