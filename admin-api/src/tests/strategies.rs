//! Alarm strategies through the API: the whole lifecycle, validation, and 404s.

use axum::http::{Method, StatusCode};
use serde_json::json;

use super::*;

async fn enterprise(h: &Harness, token: &str) -> u64 {
    let reply = h.call(Method::POST, "/api/v1/enterprises", Some(token), Some(json!({ "name": "Acme" }))).await;
    reply.json()["id"].as_u64().expect("id")
}

fn body() -> Value {
    json!({
        "name": "  Night shift ",
        "alarm_types": [109, 105, 109],
        "severities": ["critical"],
        "receivers": ["noc@example.com", "NOC@example.com", "ops@example.com"],
        "thresholds": [{ "metric": "cpu", "above_percent": 90, "for_minutes": 10 }]
    })
}

#[tokio::test]
async fn strategies_are_created_listed_edited_toggled_and_deleted() {
    let h = harness();
    let token = h.admin_token().await;
    let e = enterprise(&h, &token).await;
    let reply =
        h.call(Method::POST, &format!("/api/v1/enterprises/{e}/alarm-strategies"), Some(&token), Some(body())).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let created = reply.json();
    let id = created["id"].as_u64().expect("id");
    let s = &created["settings"];
    assert_eq!(s["name"], "Night shift");
    assert_eq!(s["alarm_types"], json!([109, 105]), "deduplicated, order kept");
    assert_eq!(
        s["receivers"],
        json!([{"email": "noc@example.com"}, {"email": "ops@example.com"}]),
        "case-insensitive duplicates dropped; shown tagged"
    );
    assert_eq!((s["enabled"].clone(), s["group_wait_ms"].clone()), (json!(true), json!(10_000)));
    assert_eq!(s["thresholds"][0], json!({ "metric": "cpu", "above_centi_pct": 9000, "for_ms": 600_000 }));

    let list = h.get(&format!("/api/v1/enterprises/{e}/alarm-strategies"), &token).await.json();
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));

    let disabled = h.call(Method::POST, &format!("/api/v1/alarm-strategies/{id}/disable"), Some(&token), None).await;
    assert_eq!(disabled.json()["settings"]["enabled"], false);
    let enabled = h.call(Method::POST, &format!("/api/v1/alarm-strategies/{id}/enable"), Some(&token), None).await;
    assert_eq!(enabled.json()["settings"]["enabled"], true);

    let mut edit = body();
    edit["name"] = json!("Day shift");
    edit["repeat_interval_ms"] = json!(3_600_000);
    let replaced = h.call(Method::PUT, &format!("/api/v1/alarm-strategies/{id}"), Some(&token), Some(edit)).await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text());
    let shown = h.get(&format!("/api/v1/alarm-strategies/{id}"), &token).await.json();
    assert_eq!(
        (shown["settings"]["name"].clone(), shown["settings"]["repeat_interval_ms"].clone()),
        (json!("Day shift"), json!(3_600_000))
    );

    let deleted = h.call(Method::DELETE, &format!("/api/v1/alarm-strategies/{id}"), Some(&token), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    h.get(&format!("/api/v1/alarm-strategies/{id}"), &token).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    let again = h.call(Method::DELETE, &format!("/api/v1/alarm-strategies/{id}"), Some(&token), None).await;
    again.assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn invalid_strategies_are_rejected_with_a_reason() {
    let h = harness();
    let token = h.admin_token().await;
    let e = enterprise(&h, &token).await;
    let uri = format!("/api/v1/enterprises/{e}/alarm-strategies");
    let cases: Vec<(&str, Value)> = vec![
        ("name", json!("")),
        ("alarm_types", json!([999])),
        ("severities", json!(["fatal"])),
        ("receivers", json!([])),
        ("receivers", json!(["not-an-address"])),
        ("receivers", json!(["a@b.co\r\nBcc: evil@x.y"])),
        ("receivers", json!([{"email": "not-an-address"}])),
        ("receivers", json!([{"account": "x"}])),
        ("receivers", json!([{"account": 1, "email": "a@b.co"}])),
        ("receivers", json!([{"phone": "+1"}])),
        ("group_interval_ms", json!(0)),
        ("repeat_interval_ms", json!(1_000)),
        ("thresholds", json!([{ "metric": "cpu", "above_percent": 120, "for_minutes": 1 }])),
        ("thresholds", json!([{ "metric": "disk", "above_percent": 50, "for_minutes": 1 }])),
        ("unknown_field", json!(1)),
    ];
    for (field, value) in cases {
        let mut req = body();
        req[field] = value.clone();
        let reply = h.call(Method::POST, &uri, Some(&token), Some(req)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{field} = {value}: {}", reply.text());
        assert_eq!(reply.json()["error"]["code"], "invalid_request");
    }
    let list = h.get(&uri, &token).await.json();
    assert_eq!(list["items"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn strategies_of_unknown_enterprises_or_ids_are_404() {
    let h = harness();
    let token = h.admin_token().await;
    let reply = h.call(Method::POST, "/api/v1/enterprises/999/alarm-strategies", Some(&token), Some(body())).await;
    reply.assert_error(StatusCode::NOT_FOUND, "not_found");
    h.get("/api/v1/enterprises/999/alarm-strategies", &token).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    for (method, uri) in [
        (Method::GET, "/api/v1/alarm-strategies/77"),
        (Method::POST, "/api/v1/alarm-strategies/77/enable"),
        (Method::DELETE, "/api/v1/alarm-strategies/77"),
    ] {
        h.call(method, uri, Some(&token), None).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    let unauthenticated = h.call(Method::GET, "/api/v1/alarm-strategies/77", None, None).await;
    unauthenticated.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}
