//! Enterprises, devices, alarms and stored sequences; request validation in the JSON error shape.

use axum::http::{Method, StatusCode, header};
use fleetpulse_proto::domain::{AlarmChange, AlarmChangeKind, DeviceKey, ResourceSample};
use fleetpulse_proto::{DeviceId, EnterpriseId, Mac, UnixMillis, alarm_types};
use fleetpulse_store::{AlarmEvent, EventBatch, NewDevice, ResourceEvent};
use serde_json::json;

use super::*;

async fn create_enterprise(h: &Harness, token: &str, name: &str) -> Value {
    let reply = h.call(Method::POST, "/api/v1/enterprises", Some(token), Some(json!({ "name": name }))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let body = reply.json();
    let location = reply.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).expect("location");
    assert_eq!(location, format!("/api/v1/enterprises/{}", body["id"]));
    body
}

async fn register(h: &Harness, enterprise: u64, key: DeviceKey) -> DeviceId {
    let serial = match &key {
        DeviceKey::Serial(sn) => sn.clone(),
        DeviceKey::Mac(_) => "SN-1".into(),
    };
    let new = NewDevice {
        enterprise_id: EnterpriseId(enterprise),
        key,
        serial: Some(serial),
        model: "T54W".into(),
        firmware: "1.0".into(),
        at: UnixMillis(1),
    };
    h.store.entities.register_device(new).await.expect("register").device.id
}

fn mac(s: &str) -> DeviceKey {
    DeviceKey::Mac(Mac::parse(s).expect("mac"))
}

#[tokio::test]
async fn enterprises_are_created_fetched_and_listed_by_pages() {
    let h = harness();
    let token = h.admin_token().await;
    let a = create_enterprise(&h, &token, "  Acme  ").await;
    assert_eq!(a["name"], "Acme");
    let credential = a["credential"].as_str().expect("credential");
    assert_eq!(credential.len(), 64);
    assert!(credential.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(a["id"].is_u64() && a["created_at"].is_i64(), "{a}");
    let b = create_enterprise(&h, &token, "Globex").await;
    let c = create_enterprise(&h, &token, "Initech").await;
    assert_ne!(a["credential"], b["credential"]);

    let fetched = h.get(&format!("/api/v1/enterprises/{}", a["id"]), &token).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.json(), a);

    let first = h.get("/api/v1/enterprises?limit=2", &token).await.json();
    assert_eq!(first["items"], json!([a, b]));
    assert_eq!(first["next_after"], b["id"]);
    let second = h.get(&format!("/api/v1/enterprises?limit=2&after={}", b["id"]), &token).await.json();
    assert_eq!(second, json!({ "items": [c], "next_after": null }));
    let all = h.get("/api/v1/enterprises", &token).await.json();
    assert_eq!(all, json!({ "items": [a, b, c], "next_after": null }));
}

#[tokio::test]
async fn invalid_enterprise_names_are_rejected() {
    let h = harness();
    let token = h.admin_token().await;
    for name in ["", "   ", &"x".repeat(129)] {
        let reply = h.call(Method::POST, "/api/v1/enterprises", Some(&token), Some(json!({ "name": name }))).await;
        reply.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
}

#[tokio::test]
async fn unknown_resources_and_routes_are_json_404s() {
    let h = harness();
    let token = h.admin_token().await;
    // Unknown paths outside `/api` are the console's 404 page (`tests/console.rs`).
    for uri in
        ["/api/v1/enterprises/999", "/api/v1/devices/999", "/api/v1/enterprises/999/stored-sequences", "/api/nope"]
    {
        h.get(uri, &token).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    let wrong_method = h.call(Method::DELETE, "/api/v1/enterprises", Some(&token), None).await;
    wrong_method.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn malformed_queries_are_invalid_requests_and_malformed_paths_name_nothing() {
    let h = harness();
    let token = h.admin_token().await;
    // A path that does not parse names no object (issue 19): 404 like a missing one.
    for uri in ["/api/v1/enterprises/abc", "/api/v1/devices/-1"] {
        h.get(uri, &token).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    for uri in [
        "/api/v1/enterprises?limit=0",
        "/api/v1/enterprises?limit=1001",
        "/api/v1/enterprises?limit=many",
        "/api/v1/devices?enterprise_id=x",
        "/api/v1/alarms?after=-3",
        "/api/v1/enterprises/1/stored-sequences?limit=1001",
    ] {
        h.get(uri, &token).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
}

#[tokio::test]
async fn malformed_bodies_are_json_errors() {
    let h = harness_with(ApiConfig { max_body_bytes: 1024, ..ApiConfig::default() }, Registry::default());
    let token = h.admin_token().await;
    let post = |content_type: Option<&'static str>, body: String| {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri("/api/v1/enterprises")
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        req.body(Body::from(body)).expect("request")
    };
    let json_ct = Some("application/json");
    h.send(post(json_ct, "{\"name\": ".into())).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    h.send(post(json_ct, "{}".into())).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    h.send(post(json_ct, "{\"name\": 5}".into())).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    h.send(post(None, "{\"name\": \"a\"}".into()))
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    h.send(post(Some("text/plain"), "{\"name\": \"a\"}".into()))
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let huge = json!({ "name": "x".repeat(2000) }).to_string();
    h.send(post(json_ct, huge)).await.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let login = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("not json"))
        .expect("request");
    h.send(login).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let listed = h.get("/api/v1/enterprises", &token).await.json();
    assert_eq!(listed["items"], json!([]), "nothing was created");
}

#[tokio::test]
async fn devices_are_listed_with_their_snapshot_and_live_state() {
    let h = harness();
    let token = h.admin_token().await;
    let a = create_enterprise(&h, &token, "a").await["id"].as_u64().expect("id");
    let b = create_enterprise(&h, &token, "b").await["id"].as_u64().expect("id");
    let d1 = register(&h, a, mac("001565000001")).await;
    let d2 = register(&h, b, mac("001565000002")).await;
    let d3 = register(&h, a, DeviceKey::Serial("SN-3".into())).await;

    let one = h.get(&format!("/api/v1/devices/{d1}"), &token).await;
    assert_eq!(one.status, StatusCode::OK);
    let one = one.json();
    assert_eq!((&one["id"], &one["enterprise_id"], &one["mac"]), (&json!(d1.0), &json!(a), &json!("001565000001")));
    assert_eq!(
        (&one["model"], &one["device_type"], &one["enterprise_name"]),
        (&json!("T54W"), &json!("phone"), &json!("a"))
    );
    assert_eq!((&one["live"], &one["online"], &one["sip_status"]), (&Value::Null, &json!(false), &json!("unknown")));
    assert_eq!(one["status"]["licence_status"], "unknown");

    let all = h.get("/api/v1/devices", &token).await.json();
    let ids: Vec<_> = all["items"].as_array().expect("items").iter().map(|d| d["id"].clone()).collect();
    assert_eq!(ids, vec![json!(d1.0), json!(d2.0), json!(d3.0)]);
    assert_eq!((&all["total"], &all["next_cursor"]), (&json!(3), &Value::Null));
    let of_a = h.get(&format!("/api/v1/devices?enterprise_id={a}&limit=1"), &token).await.json();
    assert_eq!((&of_a["items"][0]["id"], &of_a["total"]), (&json!(d1.0), &json!(2)));
    let cursor = of_a["next_cursor"].as_str().expect("a cursor").to_owned();
    let rest = h.get(&format!("/api/v1/devices?enterprise_id={a}&limit=1&cursor={cursor}"), &token).await.json();
    assert_eq!(rest["items"][0]["id"], d3.0);
    assert_eq!(rest["items"][0]["mac"], Value::Null);
}

#[tokio::test]
async fn alarm_records_are_listed_with_filters() {
    let h = harness();
    let token = h.admin_token().await;
    let e = create_enterprise(&h, &token, "a").await["id"].as_u64().expect("id");
    let d1 = register(&h, e, mac("001565000001")).await;
    let d2 = register(&h, e, mac("001565000002")).await;
    let raise = |device, code| AlarmChange {
        device_id: device,
        enterprise_id: EnterpriseId(e),
        code,
        at: UnixMillis(10),
        kind: AlarmChangeKind::Raise { description: "gone".into() },
    };
    let batch = EventBatch {
        alarm_changes: vec![raise(d1, alarm_types::OFFLINE), raise(d2, alarm_types::OFFLINE)],
        ..EventBatch::default()
    };
    h.store.events.append(batch).await.expect("append");

    let all = h.get("/api/v1/alarms", &token).await.json();
    assert_eq!(all["items"].as_array().map(Vec::len), Some(2));
    let of_d2 = h.get(&format!("/api/v1/alarms?device_id={d2}"), &token).await.json();
    let record = &of_d2["items"][0];
    assert_eq!(of_d2["items"].as_array().map(Vec::len), Some(1));
    assert_eq!((record["device_id"].as_u64(), record["enterprise_id"].as_u64()), (Some(d2.0), Some(e)));
    assert_eq!(
        (&record["code"], &record["name"], &record["severity"]),
        (&json!(109), &json!("Offline"), &json!("critical"))
    );
    assert_eq!(
        (&record["status"], &record["count"], &record["description"]),
        (&json!("active"), &json!(1), &json!("gone"))
    );
    let page = h.get("/api/v1/alarms?limit=1", &token).await.json();
    assert_eq!(page["next_after"], page["items"][0]["id"]);
    let none = h.get(&format!("/api/v1/alarms?enterprise_id={}", e + 1), &token).await.json();
    assert_eq!(none, json!({ "items": [], "next_after": null }));

    for (query, expected) in [
        ("code=109", 2),
        ("code=105", 0),
        ("severity=critical", 2),
        ("severity=minor", 0),
        ("status=active", 2),
        ("status=cleared", 0),
        ("from=10&to=11", 2),
        ("from=11", 0),
    ] {
        let found = h.get(&format!("/api/v1/alarms?{query}"), &token).await.json();
        assert_eq!(found["items"].as_array().map(Vec::len), Some(expected), "{query}");
    }
    for bad in ["code=999", "severity=fatal", "status=open", "from=5&to=5", "colour=red"] {
        h.get(&format!("/api/v1/alarms?{bad}"), &token).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let id = record["id"].as_u64().expect("id");
    assert_eq!(h.get(&format!("/api/v1/alarms/{id}"), &token).await.json()["device_id"].as_u64(), Some(d2.0));
    h.get(&format!("/api/v1/alarms/{}", id + 100), &token).await.assert_error(StatusCode::NOT_FOUND, "not_found");

    // Lifecycle: acknowledge, then clear by hand, with who and when; each only once.
    let ack = h.call(Method::POST, &format!("/api/v1/alarms/{id}/acknowledge"), Some(&token), None).await;
    assert_eq!(ack.status, StatusCode::OK, "{}", ack.text());
    let shown = h.get(&format!("/api/v1/alarms/{id}"), &token).await.json();
    assert_eq!(shown["status"], "acknowledged");
    assert!(shown["acknowledged_by"].as_u64().is_some() && shown["acknowledged_at"].as_i64().is_some());
    let again = h.call(Method::POST, &format!("/api/v1/alarms/{id}/acknowledge"), Some(&token), None).await;
    again.assert_error(StatusCode::CONFLICT, "conflict");
    let acknowledged = h.get("/api/v1/alarms?status=acknowledged", &token).await.json();
    assert_eq!(acknowledged["items"].as_array().map(Vec::len), Some(1));
    let cleared = h.call(Method::POST, &format!("/api/v1/alarms/{id}/clear"), Some(&token), None).await;
    assert_eq!(cleared.json()["status"], "cleared");
    let shown = h.get(&format!("/api/v1/alarms/{id}"), &token).await.json();
    assert_eq!(
        (shown["status"].clone(), shown["cleared_by"].clone()),
        (json!("cleared"), shown["acknowledged_by"].clone())
    );
    let twice = h.call(Method::POST, &format!("/api/v1/alarms/{id}/clear"), Some(&token), None).await;
    twice.assert_error(StatusCode::CONFLICT, "conflict");
    let missing = h.call(Method::POST, &format!("/api/v1/alarms/{}/clear", id + 100), Some(&token), None).await;
    missing.assert_error(StatusCode::NOT_FOUND, "not_found");
    // No log was attached to this alarm.
    h.get(&format!("/api/v1/alarms/{id}/log"), &token).await.assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn alarm_logs_are_downloadable() {
    let h = harness();
    let token = h.admin_token().await;
    let e = create_enterprise(&h, &token, "logs").await["id"].as_u64().expect("id");
    let d = register(&h, e, mac("001565000009")).await;
    let crash = fleetpulse_proto::AlarmTypeCode(105);
    let event = |at, log: Vec<u8>| AlarmEvent {
        device_id: d,
        enterprise_id: EnterpriseId(e),
        seq: at as u64,
        at: UnixMillis(at),
        code: crash,
        clear: false,
        description: "segfault".into(),
        log: Some(log),
    };
    let raise = |at| AlarmChange {
        device_id: d,
        enterprise_id: EnterpriseId(e),
        code: crash,
        at: UnixMillis(at),
        kind: AlarmChangeKind::Raise { description: "segfault".into() },
    };
    let batch = EventBatch {
        alarms: vec![event(10, b"old\0log".to_vec()), event(20, b"new\xfflog".to_vec())],
        alarm_changes: vec![raise(10), raise(20)],
        ..EventBatch::default()
    };
    h.store.events.append(batch).await.expect("append");
    let id = h.get("/api/v1/alarms", &token).await.json()["items"][0]["id"].as_u64().expect("id");
    let reply = h.get(&format!("/api/v1/alarms/{id}/log"), &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, b"new\xfflog".to_vec(), "the newest log, bytes as sent");
    assert_eq!(
        reply.headers.get(header::CONTENT_DISPOSITION).and_then(|v| v.to_str().ok()),
        Some(format!("attachment; filename=\"alarm-{id}-20.log\"").as_str())
    );
}

#[tokio::test]
async fn stored_sequences_count_rows_and_ranges_per_device() {
    let h = harness();
    let token = h.admin_token().await;
    let e = create_enterprise(&h, &token, "a").await["id"].as_u64().expect("id");
    let other = create_enterprise(&h, &token, "b").await["id"].as_u64().expect("id");
    let d1 = register(&h, e, mac("001565000001")).await;
    let d2 = register(&h, e, DeviceKey::Serial("SN-2".into())).await;
    register(&h, other, mac("001565000003")).await;
    let resource = |seq| ResourceEvent {
        device_id: d1,
        enterprise_id: EnterpriseId(e),
        seq,
        at: UnixMillis(1),
        sample: ResourceSample { cpu_centi_pct: 1, mem_used_bytes: 1, mem_total_bytes: 2 },
    };
    let alarm = |seq| AlarmEvent {
        device_id: d1,
        enterprise_id: EnterpriseId(e),
        seq,
        at: UnixMillis(1),
        code: alarm_types::OFFLINE,
        clear: false,
        description: String::new(),
        log: None,
    };
    let batch = EventBatch {
        resources: vec![resource(1), resource(2), resource(3), resource(3)],
        alarms: vec![alarm(5), alarm(0)],
        delivery: vec![(d1, 5)],
        ..EventBatch::default()
    };
    h.store.events.append(batch).await.expect("append");

    let reply = h.get(&format!("/api/v1/enterprises/{e}/stored-sequences"), &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json(),
        json!({
            "devices": [
                { "device_id": d1.0, "mac": "001565000001", "serial": "SN-1", "rows": 5, "ranges": [[1, 3], [5, 5]] },
                { "device_id": d2.0, "mac": null, "serial": "SN-2", "rows": 0, "ranges": [] },
            ],
            "next_after": null,
        })
    );
    let first = h.get(&format!("/api/v1/enterprises/{e}/stored-sequences?limit=1"), &token).await.json();
    assert_eq!((first["devices"].as_array().map(Vec::len), &first["next_after"]), (Some(1), &json!(d1.0)));
    let second = h.get(&format!("/api/v1/enterprises/{e}/stored-sequences?limit=1&after={d1}"), &token).await.json();
    assert_eq!((&second["devices"][0]["device_id"], &second["next_after"]), (&json!(d2.0), &json!(d2.0)));
}
