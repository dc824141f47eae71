//! Site incidents through the API: a strategy's `site_incident` thresholds stored and checked,
//! the listing (its enterprise required for the platform), one incident with its members, and the
//! incidents an alarm is part of in its notification story.

use axum::http::{Method, StatusCode};
use fleetpulse_proto::{AlarmTypeCode, EnterpriseId, SiteId, StrategyId, UnixMillis};
use fleetpulse_store::{IncidentMember, IncidentUpdate};
use serde_json::json;

use super::*;

#[tokio::test]
async fn incident_thresholds_are_stored_on_a_strategy_and_checked() {
    let h = harness();
    let token = h.admin_token().await;
    let e = h.call(Method::POST, "/api/v1/enterprises", Some(&token), Some(json!({ "name": "Acme" }))).await;
    let e = e.json()["id"].as_u64().expect("id");
    let uri = format!("/api/v1/enterprises/{e}/alarm-strategies");
    let rule = json!({ "min_devices": 5, "min_fraction_pct": 25, "window_s": 120, "resolve_fraction_pct": 80 });
    let body = json!({ "name": "sites", "receivers": ["noc@example.com"], "site_incident": rule });
    let reply = h.call(Method::POST, &uri, Some(&token), Some(body.clone())).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert_eq!(reply.json()["settings"]["site_incident"], rule);
    let plain = json!({ "name": "plain", "receivers": ["noc@example.com"] });
    let reply = h.call(Method::POST, &uri, Some(&token), Some(plain)).await;
    assert_eq!(reply.json()["settings"].get("site_incident"), None, "off unless given");
    for (field, value) in [
        ("min_devices", json!(1)),
        ("min_fraction_pct", json!(101)),
        ("window_s", json!(0)),
        ("window_s", json!(3601)),
        ("resolve_fraction_pct", json!(0)),
        ("surprise", json!(1)),
    ] {
        let mut bad = body.clone();
        bad["name"] = json!(format!("bad {field}"));
        bad["site_incident"][field] = value.clone();
        let reply = h.call(Method::POST, &uri, Some(&token), Some(bad)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{field} = {value}: {}", reply.text());
    }
}

#[tokio::test]
async fn incidents_are_listed_and_shown_with_their_members_and_on_their_alarms() {
    let h = harness();
    let token = h.admin_token().await;
    let e = h.call(Method::POST, "/api/v1/enterprises", Some(&token), Some(json!({ "name": "Acme" }))).await;
    let e = EnterpriseId(e.json()["id"].as_u64().expect("id"));
    let device = h.phone(e, "001565000001", "T54W").await;
    let alarm = h.raise(e, device, 109, "offline").await;
    let update = |opened_at: i64| IncidentUpdate {
        enterprise_id: e,
        strategy_id: StrategyId(1),
        site_id: SiteId(7),
        site_name: "Berlin-3".into(),
        code: AlarmTypeCode(109),
        opened_at: UnixMillis(opened_at),
        at: UnixMillis(opened_at),
        site_devices: 40,
        affected: 12,
        back: 0,
        resolved_at: None,
        members: vec![IncidentMember { device_id: device, first_at: UnixMillis(10), back: false }],
    };
    let older = h.store.entities.record_incident(update(10)).await.expect("incident");
    let newer = h.store.entities.record_incident(update(20)).await.expect("incident");

    let reply = h.get("/api/v1/incidents", &token).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "the platform names the enterprise: {}", reply.text());
    let list = h.get(&format!("/api/v1/incidents?enterprise_id={e}&limit=1"), &token).await.json();
    assert_eq!(list["items"][0]["id"], newer.0, "{list}");
    assert_eq!(list["next_after"], newer.0, "{list}");
    let next = h.get(&format!("/api/v1/incidents?enterprise_id={e}&after={}", newer.0), &token).await.json();
    assert_eq!(next["items"][0]["id"], older.0, "{next}");
    let one = h.get(&format!("/api/v1/incidents/{}", older.0), &token).await.json();
    assert_eq!(
        (one["site_name"].as_str(), one["affected"].as_u64(), one["site_devices"].as_u64()),
        (Some("Berlin-3"), Some(12), Some(40))
    );
    assert_eq!(one["members"], json!([{ "device_id": device.0, "first_at": 10, "back": false }]), "{one}");
    h.get("/api/v1/incidents/999999", &token).await.assert_error(StatusCode::NOT_FOUND, "not_found");

    let story = h.get(&format!("/api/v1/alarms/{alarm}/notifications"), &token).await.json();
    assert_eq!(story["incidents"], json!([older.0, newer.0]), "{story}");
}
